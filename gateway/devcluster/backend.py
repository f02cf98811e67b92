"""httpbin-like HTTP/1.1 backends: the "pods" of the local clusters.

Each backend listens on its own loopback address (127.0.0.x: Linux routes all of 127/8 to ``lo``)
and says who it is in every answer, so a test can see which cluster and pod served a request.

Endpoints (any method unless noted)::

    /status/<code>     answer <code> (identity JSON body unless 204/304)
    /delay/<seconds>   answer after <seconds> (float) without blocking the loop
    /bytes/<n>         n bytes, Content-Length, written 64 KiB at a time under flow control
    /stream/<n>        n bytes, Transfer-Encoding: chunked, 16 KiB chunks under flow control
    /echo              the request body streamed back (same framing: Content-Length or chunked)
    /upload            consume the body, answer {"received": n, "sha256": hex}; with
                       ?rate=<bytes/s> no faster than that (an upstream that reads slowly)
    /close             answer with Connection: close, then close
    /headers           {"headers": {...}}
    /_backend/stats    request counters (not counted themselves); /_backend/reset zeroes them
    /_backend/fault    a gray failure from now on, for every path but /_backend/*:
                       ?status=503&share=0.3 answers 503 to 30% of requests (counted, not drawn:
                       every 10 requests exactly 3), &delay=0.3 answers 300 ms late; no query: off
    anything else      200 {"cluster", "pod", "address", "method", "path", "query", "headers"}

``python -m gateway.devcluster.echo_basic ... --namespace NS`` runs one that answers instead
as the Gateway API conformance suite's echo server, echo-basic: a pod of that namespace.

Body bytes of /bytes and /stream are deterministic: byte ``i`` is ``i % 256``.

One connection serves its requests strictly in order (HTTP/1.1 pipelining); a request that
needs no body is answered once its body has been read and discarded. Bodies are never held
whole: reading pauses when 1 MiB is queued unread, writing waits for ``resume_writing``.

Run one with ``python -m gateway.devcluster.backend --host 127.0.0.2 --port 8000 --cluster a
--pod httpbin-a-0``; it prints ``READY http://127.0.0.2:8000 cluster=a pod=httpbin-a-0 pid=N``.
With ``--tls-cert F --tls-key F`` it serves HTTPS (``--tls-client-ca F``: a client certificate
is asked for and verified if given, as echo-basic's TLS_CLIENT_CACERTS does); the server name
each client asked for is kept on its connection's SSL object (``requested_server_name``).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import ssl
import os
import signal
import subprocess
from collections import Counter, deque
from http import HTTPStatus
from typing import Awaitable, Callable

import orjson

from . import _process

try:
    import httptools
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gateway.devcluster.backend needs httptools: pip install 'gateway[test]'") from exc

CHUNK = 64 * 1024
STREAM_CHUNK = 16 * 1024
# 64 KiB where byte i is i % 256; 65536 and 16384 are multiples of 256, so every chunk continues
# the sequence and clients can verify any offset.
_PATTERN = bytes(range(256)) * (CHUNK // 256)
_STREAM_FRAME = b"%x\r\n" % STREAM_CHUNK + _PATTERN[:STREAM_CHUNK] + b"\r\n"

# Request bodies: pause reading above HIGH bytes queued unread, resume below LOW.
_BODY_HIGH = 1 << 20
_BODY_LOW = 256 << 10
# Transport write buffer: pause_writing() above this. A few chunks in flight keep the socket busy.
_WRITE_HIGH = 4 * CHUNK

_REASONS = {status.value: status.phrase for status in HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})


def path_prefix(path: str) -> str:
    """The counter key of a path: "/" plus its first segment ("/status/503" -> "/status")."""
    first = path.split("/", 2)[1] if path.startswith("/") else path
    return "/" + first


class BackendStats:
    """Requests served, in total and per path prefix, readable in-process and over HTTP."""

    __slots__ = ("total", "by_prefix")

    def __init__(self) -> None:
        self.total = 0
        self.by_prefix: Counter[str] = Counter()

    def record(self, path: str) -> None:
        self.total += 1
        self.by_prefix[path_prefix(path)] += 1

    def reset(self) -> None:
        self.total = 0
        self.by_prefix.clear()

    def as_dict(self) -> dict:
        return {"requests": self.total, "paths": dict(self.by_prefix)}


class Fault:
    """An injected gray failure (/_backend/fault): ``share`` of the requests answered
    ``status`` (spread evenly by a counter, so a test's figures are exact), each request
    answered ``delay`` seconds late."""

    __slots__ = ("status", "share", "delay", "seen")

    def __init__(self, status: int = 503, share: float = 0.0, delay: float = 0.0) -> None:
        self.status = status
        self.share = share
        self.delay = delay
        self.seen = 0

    def fails_next(self) -> bool:
        self.seen += 1
        return int(self.seen * self.share) > int((self.seen - 1) * self.share)


class Backend:
    """A listening backend: identity, counters, open connections."""

    def __init__(self, host: str, port: int, cluster: str, pod: str, routes: "Routes | None" = None,
                 tls: "ssl.SSLContext | None" = None) -> None:
        self.host = host
        self.tls = tls
        self.port = port
        self.cluster = cluster
        self.pod = pod
        # What answers which path: this module's httpbin-like table, or echo-basic's.
        self.routes = routes or Routes(_ROUTES, _anything)
        self.stats = BackendStats()
        self.fault: Fault | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    async def start(self) -> "Backend":
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True, backlog=1024, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        """Stop listening and close every connection (pending writes are flushed first)."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.serve_forever()


async def start_backend(host: str, port: int, cluster: str, pod: str,
                        routes: "Routes | None" = None, tls: "ssl.SSLContext | None" = None) -> Backend:
    """Start a backend on the running loop and return it once it listens (``port`` 0: any)."""
    return await Backend(host, port, cluster, pod, routes, tls).start()


def server_tls(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """An HTTPS backend's context: the pair, and with ``client_ca`` a client certificate asked
    for and verified when one comes (Go's VerifyClientCertIfGiven)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL

    def remember(sslobj, server_name, _context) -> None:
        sslobj.requested_server_name = server_name or ""
    context.sni_callback = remember
    return context


async def run_backend(host: str, port: int, cluster: str, pod: str) -> None:
    """Serve a backend until cancelled."""
    backend = await start_backend(host, port, cluster, pod)
    try:
        await backend.serve_forever()
    finally:
        backend.close()


class _Request:
    __slots__ = ("method", "path", "query", "headers", "keep_alive", "content_length", "chunked",
                 "expect_continue", "handler", "wants_body", "complete", "chunks", "buffered",
                 "waiter", "target", "fields")

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str],
                 keep_alive: bool, routes: "Routes", target: str = "",
                 fields: list[tuple[str, str]] = ()) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.target = target            # the request-target as sent ("/a?b=c")
        self.fields = fields            # the header fields as sent, repeated names apart
        self.keep_alive = keep_alive
        lowered = {name.lower(): value for name, value in headers.items()}
        length = lowered.get("content-length")
        self.content_length = int(length) if length is not None else None
        self.chunked = "chunked" in lowered.get("transfer-encoding", "").lower()
        self.expect_continue = lowered.get("expect", "").lower() == "100-continue"
        self.handler, self.wants_body = routes.find(path)
        self.complete = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.waiter: asyncio.Future | None = None

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One client connection: parse requests, answer them one at a time in order."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        # Parsing side: the request whose bytes are arriving.
        self._url = b""
        self._header_list: list[tuple[str, str]] = []
        self._parsing: _Request | None = None
        # Answering side: requests in arrival order; the head one is being answered.
        self._queue: deque[_Request] = deque()
        self._task: asyncio.Task | None = None
        self._closing = False
        self._read_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future | None = None
        # An upgraded connection (a handler that ``takes_upgrade`` switched it): its bytes go
        # to ``upgraded``, not to the HTTP parser.
        self.upgraded: Callable[[bytes], None] | None = None
        self._upgrade_rest = b""
        self._lost: asyncio.Future | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=_WRITE_HIGH)
        self.backend._connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.upgraded is not None:
            self.upgraded(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self._queue and getattr(self._queue[-1].handler, "takes_upgrade", False):
                self._upgrade_rest = data[exc.args[0]:]     # its handler switches the protocol
            else:
                self._fail(400, "upgrade not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, f"bad request: {exc}")

    def connection_lost(self, exc) -> None:
        self._closing = True
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self.backend._connections.discard(self)
        if self._task is not None:
            self._task.cancel()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionResetError("client went away"))
        for req in self._queue:
            req.wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._header_list = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_list.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        url = httptools.parse_url(self._url)
        headers: dict[str, str] = {}
        for name, value in self._header_list:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        path = url.path.decode("latin-1")
        req = _Request(self.parser.get_method().decode("ascii"), path,
                       (url.query or b"").decode("latin-1"), headers, self.parser.should_keep_alive(),
                       self.backend.routes, self._url.decode("latin-1"), self._header_list)
        if not path.startswith("/_backend/"):
            self.backend.stats.record(path)
            fault = self.backend.fault
            if fault is not None:
                req.handler = _faulty(req.handler, fault.status if fault.fails_next() else 0, fault.delay)
        self._parsing = req
        self._queue.append(req)
        self._maybe_start()

    def on_body(self, body: bytes) -> None:
        req = self._parsing
        if req is None or not req.wants_body:
            return  # discarded: the handler does not read bodies
        req.chunks.append(body)
        req.buffered += len(body)
        req.wake()
        if req.buffered > _BODY_HIGH and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        req = self._parsing
        self._parsing = None
        if req is not None:
            req.complete = True
            req.wake()
        self._maybe_start()

    # -- answering --------------------------------------------------------------------------

    def _maybe_start(self) -> None:
        """Answer queued requests in order: sync handlers inline, async ones in a task."""
        while self._task is None and self._queue and not self._closing:
            req = self._queue[0]
            if req.expect_continue and not req.complete:
                req.expect_continue = False
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if asyncio.iscoroutinefunction(req.handler):
                self._task = self.loop.create_task(self._run(req))
                return
            if not req.complete:
                return  # answer once the body is consumed, as most servers do
            self._queue.popleft()
            status, body, extra = req.handler(self, req)
            self.send(req, status, body, extra)
            self._finish(req, close="Connection" in dict(extra))

    async def _run(self, req: _Request) -> None:
        try:
            await req.handler(self, req)
        except (ConnectionError, asyncio.CancelledError):
            return  # the client went away mid-answer
        except Exception:
            self.close()  # the head may be out already: closing is the only safe answer
            raise
        finally:
            self._task = None
        self._queue.popleft()
        self._finish(req)

    def _finish(self, req: _Request, close: bool = False) -> None:
        if close or not req.keep_alive:
            self.close()
        elif self._task is None:
            self._maybe_start()

    async def switch_protocol(self, feed: Callable[[bytes], None]) -> None:
        """After an upgrade's 101: the connection's bytes go to ``feed`` until it closes."""
        self.upgraded = feed
        rest, self._upgrade_rest = self._upgrade_rest, b""
        if rest:
            feed(rest)
        self._lost = self.loop.create_future()
        await self._lost

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, status: int, message: str) -> None:
        if not self._closing:
            body = orjson.dumps({"error": message})
            self.transport.write(self.head(status, [("Content-Type", "application/json"),
                                                    ("Content-Length", str(len(body))),
                                                    ("Connection", "close")]) + body)
        self.close()

    def head(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
                 "Server: devcluster-backend"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send(self, req: _Request, status: int, body: bytes,
             extra: list[tuple[str, str]] = (), content_type: str | None = "application/json") -> None:
        """Write a complete response with a known body (``content_type`` None: no such field)."""
        headers = list(extra)
        if status not in _NO_BODY_STATUSES:
            if content_type is not None:
                headers.append(("Content-Type", content_type))
            headers.append(("Content-Length", str(len(body))))
        if not req.keep_alive and ("Connection", "close") not in headers:
            headers.append(("Connection", "close"))
        data = self.head(status, headers)
        if req.method != "HEAD" and status not in _NO_BODY_STATUSES:
            data += body
        self.transport.write(data)

    def start_response(self, req: _Request, status: int, headers: list[tuple[str, str]]) -> None:
        """Write only the head of a streamed response."""
        if not req.keep_alive:
            headers = headers + [("Connection", "close")]
        self.transport.write(self.head(status, headers))

    async def drain(self) -> None:
        """Wait until the transport wants more (the client reads as fast as we write)."""
        if self._closing and self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        if self._write_paused:
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter

    async def read_body(self, req: _Request) -> bytes:
        """The next piece of ``req``'s body, b"" at its end."""
        while not req.chunks:
            if req.complete:
                return b""
            if self._closing:
                raise ConnectionResetError("connection closed")
            req.waiter = self.loop.create_future()
            await req.waiter
        chunk = req.chunks.popleft()
        req.buffered -= len(chunk)
        if self._read_paused and req.buffered <= _BODY_LOW:
            self._read_paused = False
            self.transport.resume_reading()
        return chunk

    def identity(self, req: _Request) -> dict:
        backend = self.backend
        return {"cluster": backend.cluster, "pod": backend.pod, "address": backend.address,
                "method": req.method, "path": req.path, "query": req.query, "headers": req.headers}


# -- handlers: sync ones return (status, body, extra headers); async ones write themselves ----

Response = tuple[int, bytes, list[tuple[str, str]]]


def _anything(conn: _Connection, req: _Request) -> Response:
    return 200, orjson.dumps(conn.identity(req)), []


def _headers(conn: _Connection, req: _Request) -> Response:
    return 200, orjson.dumps({"headers": req.headers}), []


def _status(conn: _Connection, req: _Request) -> Response:
    code = _int_arg(req.path)
    if code is None or not 200 <= code <= 599:
        return _bad_argument(req.path)
    return code, orjson.dumps(conn.identity(req)), []


def _close(conn: _Connection, req: _Request) -> Response:
    return 200, orjson.dumps(conn.identity(req)), [("Connection", "close")]


def _stats(conn: _Connection, req: _Request) -> Response:
    return 200, orjson.dumps(conn.backend.stats.as_dict()), []


def _reset(conn: _Connection, req: _Request) -> Response:
    conn.backend.stats.reset()
    return _stats(conn, req)


def _set_fault(conn: _Connection, req: _Request) -> Response:
    status = _query_float(req.query, "status")
    share = _query_float(req.query, "share")
    delay = _query_float(req.query, "delay")
    if status is None and delay is None:
        conn.backend.fault = None
        return 200, b'{"fault": null}', []
    fault = Fault(int(status or 503), min(max(share or 0.0, 0.0), 1.0), max(delay or 0.0, 0.0))
    conn.backend.fault = fault
    return 200, orjson.dumps({"fault": {"status": fault.status, "share": fault.share,
                                        "delay": fault.delay}}), []


def _faulty(handler: Handler, status: int, delay: float) -> Handler:
    """``handler`` behind a fault: answered ``status`` instead (0: not), ``delay`` s late."""
    async def faulty(conn: _Connection, req: _Request) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if status:
            await _wait_body_end(conn, req)
            conn.send(req, status, orjson.dumps(conn.identity(req)), [])
            return
        answer = handler(conn, req)
        if asyncio.iscoroutine(answer):
            await answer
        else:
            await _wait_body_end(conn, req)
            conn.send(req, *answer)
    return faulty


async def _delay(conn: _Connection, req: _Request) -> None:
    seconds = _float_arg(req.path)
    if seconds is None or seconds < 0:
        status, body, extra = _bad_argument(req.path)
    else:
        await asyncio.sleep(seconds)
        status, body, extra = 200, orjson.dumps(conn.identity(req)), []
    await _wait_body_end(conn, req)
    conn.send(req, status, body, extra)


async def _bytes(conn: _Connection, req: _Request) -> None:
    size = _int_arg(req.path)
    if size is None or size < 0:
        conn.send(req, *_bad_argument(req.path))
        return
    conn.start_response(req, 200, [("Content-Type", "application/octet-stream"),
                                   ("Content-Length", str(size))])
    if req.method == "HEAD":
        return
    remaining = size
    while remaining:
        n = min(remaining, CHUNK)
        conn.transport.write(_fresh(_PATTERN, n))
        remaining -= n
        await conn.drain()


async def _stream(conn: _Connection, req: _Request) -> None:
    size = _int_arg(req.path)
    if size is None or size < 0:
        conn.send(req, *_bad_argument(req.path))
        return
    conn.start_response(req, 200, [("Content-Type", "application/octet-stream"),
                                   ("Transfer-Encoding", "chunked")])
    if req.method == "HEAD":
        return
    remaining = size
    while remaining >= STREAM_CHUNK:
        conn.transport.write(_fresh(_STREAM_FRAME, len(_STREAM_FRAME)))
        remaining -= STREAM_CHUNK
        await conn.drain()
    if remaining:
        conn.transport.write(b"%x\r\n" % remaining + _PATTERN[:remaining] + b"\r\n")
    conn.transport.write(b"0\r\n\r\n")


async def _echo(conn: _Connection, req: _Request) -> None:
    content_type = next((v for k, v in req.headers.items() if k.lower() == "content-type"),
                        "application/octet-stream")
    chunked = req.content_length is None and req.chunked
    framing = (("Transfer-Encoding", "chunked") if chunked
               else ("Content-Length", str(req.content_length or 0)))
    conn.start_response(req, 200, [("Content-Type", content_type), framing])
    while chunk := await conn.read_body(req):
        if req.method == "HEAD":
            continue
        conn.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        await conn.drain()
    if chunked and req.method != "HEAD":
        conn.transport.write(b"0\r\n\r\n")


async def _upload(conn: _Connection, req: _Request) -> None:
    digest = hashlib.sha256()
    received = 0
    rate = _query_float(req.query, "rate")
    start = conn.loop.time()
    while chunk := await conn.read_body(req):
        digest.update(chunk)
        received += len(chunk)
        if rate:
            await asyncio.sleep(max(0.0, received / rate - (conn.loop.time() - start)))
    body = {"received": received, "sha256": digest.hexdigest(),
            "cluster": conn.backend.cluster, "pod": conn.backend.pod}
    conn.send(req, 200, orjson.dumps(body))


def _fresh(data: bytes, n: int) -> bytes:
    """A new copy of ``data[:n]``, as a handler producing real data would write.

    uvloop queues a reference, not a copy, of each bytes object written: writing one shared
    buffer over and over would hide a missing flow control from any memory measurement.
    Copying 64 KiB costs a few microseconds.
    """
    return bytes(memoryview(data)[:n])


async def _wait_body_end(conn: _Connection, req: _Request) -> None:
    while not req.complete and not conn._closing:
        req.waiter = conn.loop.create_future()
        await req.waiter


def _bad_argument(path: str) -> Response:
    return 400, orjson.dumps({"error": f"bad argument in {path}"}), []


def _query_float(query: str, name: str) -> float | None:
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == name:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _int_arg(path: str) -> int | None:
    try:
        return int(path.split("/")[2])
    except (IndexError, ValueError):
        return None


def _float_arg(path: str) -> float | None:
    try:
        return float(path.split("/")[2])
    except (IndexError, ValueError):
        return None


Handler = Callable[[_Connection, _Request], "Response | Awaitable[None]"]

# (prefix, handler, wants_body); the first match wins, exact paths end without "/".
_ROUTES: tuple[tuple[str, Handler, bool], ...] = (
    ("/status/", _status, False),
    ("/delay/", _delay, False),
    ("/bytes/", _bytes, False),
    ("/stream/", _stream, False),
    ("/echo", _echo, True),
    ("/upload", _upload, True),
    ("/close", _close, False),
    ("/headers", _headers, False),
    ("/_backend/stats", _stats, False),
    ("/_backend/reset", _reset, False),
    ("/_backend/fault", _set_fault, False),
)


class Routes:
    """A route table: (prefix, handler, wants_body) entries, the first match wins (a prefix
    ending in "/" takes its subtree, any other only itself), else ``default``."""

    __slots__ = ("table", "default")

    def __init__(self, table: tuple[tuple[str, Handler, bool], ...], default: Handler) -> None:
        self.table = table
        self.default = default

    def find(self, path: str) -> tuple[Handler, bool]:
        for prefix, handler, wants_body in self.table:
            if path.startswith(prefix) and (prefix.endswith("/") or len(path) == len(prefix)):
                return handler, wants_body
        return self.default, False


# -- running it in a process ---------------------------------------------------------------


class BackendProcess:
    """A backend in its own process, so a test can SIGKILL or SIGSTOP it.

    ``port`` 0 lets the child pick one; ``port`` holds the real one after ``start()``.
    """

    module = "gateway.devcluster.backend"       # what the child runs (python -m)

    def __init__(self, host: str, port: int, cluster: str, pod: str, netns: str | None = None,
                 tls: tuple[str, str, str | None] | None = None) -> None:
        self.host = host
        self.port = port
        self.cluster = cluster
        self.pod = pod
        self.netns = netns              # run inside this network namespace (ip netns exec)
        self.tls = tls                  # (certificate file, key file, client CA file or None): HTTPS
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> "BackendProcess":
        args = ["--host", self.host, "--port", str(self.port),
                "--cluster", self.cluster, "--pod", self.pod, *self.options()]
        if self.tls is not None:
            cert, key, client_ca = self.tls
            args += ["--tls-cert", cert, "--tls-key", key, *(["--tls-client-ca", client_ca] if client_ca else [])]
        if self._proc is not None:
            _process.stop(self._proc)     # reap a previous (killed) process and close its pipe
        prefix = ("ip", "netns", "exec", self.netns) if self.netns else ()
        self._proc, line = _process.spawn(self.module, args, timeout, prefix)
        self.port = int(line.split()[0].rsplit(":", 1)[1])
        return self

    def options(self) -> list[str]:
        """More command-line options of the child (a subclass's)."""
        return []

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def send_signal(self, sig: int) -> None:
        """Deliver ``sig``; SIGKILL/SIGTERM/SIGINT also wait for (reap) the process."""
        if not self.running:
            return
        self._proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            if sig != signal.SIGKILL:
                self._proc.send_signal(signal.SIGCONT)
            self._proc.wait(timeout=10)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.send_signal(sig)

    def freeze(self) -> None:
        """SIGSTOP: the socket still accepts (kernel backlog) but nothing answers."""
        self.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 5.0) -> None:
        if self._proc is not None:
            _process.stop(self._proc, timeout)

    def stats(self, timeout: float = 5.0) -> dict:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", "/_backend/stats")
            return orjson.loads(conn.getresponse().read())
        finally:
            conn.close()

    def __enter__(self) -> "BackendProcess":
        return self.start() if self._proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


async def _serve(args: argparse.Namespace, routes: "Routes | None") -> None:
    loop = asyncio.get_running_loop()
    tls = server_tls(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    backend = await start_backend(args.host, args.port, args.cluster, args.pod, routes, tls)
    done = _process.stop_requested(loop, args.parent_pid)
    _process.announce(f"{backend.url} cluster={backend.cluster} pod={backend.pod} pid={os.getpid()}")
    await done.wait()
    backend.close()


def main(argv: list[str] | None = None, *, description: str = __doc__.split("\n", 1)[0],
         more_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
         routes: Callable[[argparse.Namespace], "Routes"] | None = None) -> None:
    """A backend process; a mode (echo_basic) adds its options and its route table."""
    import uvloop

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--pod", required=True)
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM file)")
    parser.add_argument("--tls-key", help="... and this key")
    parser.add_argument("--tls-client-ca", help="verify client certificates given against these CAs")
    if more_arguments is not None:
        more_arguments(parser)
    args = parser.parse_args(argv)
    uvloop.run(_serve(args, routes(args) if routes is not None else None))


if __name__ == "__main__":
    main()
