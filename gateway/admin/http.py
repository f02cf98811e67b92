"""A small HTTP/1.1 server on asyncio streams, for the admin API (not the request path).

Enough of RFC 9112 for a console and for curl, Prometheus and kubelet probes: keep-alive,
Content-Length request bodies (no chunked uploads: every client of this API sends JSON of
known size), bounded heads and bodies, an idle timeout, and nothing else.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

log = logging.getLogger("gateway.admin")

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
IDLE_TIMEOUT = 30.0             # keep-alive connection with no request
READ_TIMEOUT = 10.0             # a started request's head or body

REASONS = {200: "OK", 201: "Created", 204: "No Content", 303: "See Other", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
           413: "Content Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}


class HttpProblem(Exception):
    """Answer ``status`` with a JSON body ``{"error": message, ...extra}``."""

    def __init__(self, status: int, message: str, **extra) -> None:
        super().__init__(message)
        self.status = status
        self.payload = {"error": message, **extra}


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]             # lower-case names; repeated headers joined with ", "
    body: bytes = b""
    principal: object = None            # who sent it (gateway.admin.auth.Principal)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self):
        if not self.body:
            raise HttpProblem(400, "a JSON body is required")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise HttpProblem(400, f"the body is not valid JSON: {exc}") from None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(data, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n",
                    "application/json", headers or [])


Handler = Callable[[Request], Awaitable[Response]]


class HttpServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int, ssl=None) -> None:
        self.server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD, ssl=ssl,
                                                 ssl_handshake_timeout=READ_TIMEOUT if ssl else None)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    @property
    def address(self) -> tuple[str, int]:
        return self.server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self._writers):
            writer.close()
        if self.server is not None:
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            keep_alive = True
            while keep_alive:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self._write(writer, json_response({"error": "request head too large"}, 431), False)
                    return
                try:
                    request, keep_alive = self._parse(head)
                    length = request.headers.get("content-length")
                    if length:
                        request.body = await asyncio.wait_for(reader.readexactly(int(length)), READ_TIMEOUT)
                except HttpProblem as exc:
                    await self._write(writer, json_response(exc.payload, exc.status), False)
                    return
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                try:
                    response = await self.handler(request)
                except HttpProblem as exc:
                    response = json_response(exc.payload, exc.status)
                except Exception as exc:       # a bug in a handler must not kill the server
                    log.exception("admin handler failed", extra={"fields": {"path": request.path}})
                    response = json_response({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)
                await self._write(writer, response, keep_alive, head_only=request.method == "HEAD")
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    def _parse(head: bytes) -> tuple[Request, bool]:
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:      # pragma: no cover - latin-1 decodes anything
            raise HttpProblem(400, "bad request head") from None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
            raise HttpProblem(400, "bad request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise HttpProblem(400, "bad header line")
            name = name.lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if "transfer-encoding" in headers:
            raise HttpProblem(411, "send the body with Content-Length")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise HttpProblem(400, "bad Content-Length")
            if int(length) > MAX_BODY:
                raise HttpProblem(413, f"body larger than {MAX_BODY} bytes")
        connection = headers.get("connection", "").lower()
        keep_alive = ("close" not in connection) if version == "HTTP/1.1" else ("keep-alive" in connection)
        split = urlsplit(target)
        return Request(method, target, unquote(split.path), parse_qs(split.query), headers), keep_alive

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, response: Response, keep_alive: bool,
                     head_only: bool = False) -> None:
        lines = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
                 f"Content-Type: {response.content_type}",
                 f"Content-Length: {len(response.body)}",
                 "Cache-Control: no-store"]
        lines += [f"{k}: {v}" for k, v in response.headers]
        if not keep_alive:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(response.body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
