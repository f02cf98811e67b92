"""External authorization over HTTP (``routes[].auth.ext_authz``), as Envoy's HTTP ext_authz:
each request of the route is first sent to an authorization service (its method, the
service URL's path followed by the request's path and query, the chosen headers, no body);
a 2xx answer lets the request go on, with chosen headers of the answer set on it; any other
answer is the client's answer (its status, its body, its WWW-Authenticate and Location).
When the service cannot answer (refused, reset, slower than ``timeout``), ``failure_mode``
decides: "closed" answers 403, "open" lets the request through.

One client per worker and service URL: keep-alive connections, one check at a time each,
opened as needed (up to MAX_CONNECTIONS); the answer is parsed with httptools.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from typing import Callable

import httptools

from _speedups.policy import Denial, Identity
from _speedups.stats import DENY_FORBIDDEN, DENY_UNAUTHENTICATED
from gateway.config import ExtAuthz

log = logging.getLogger("gateway.policy.ext_authz")

MAX_CONNECTIONS = 256           # per worker and service; more checks at once fail (failure_mode)
MAX_BODY = 4096                 # of a denial's body passed to the client
PASSED_TO_CLIENT = (b"www-authenticate", b"location", b"set-cookie")

Answer = Callable[[object], None]   # (status, [(lower name, value)], body) or None: no answer


class _Connection(asyncio.Protocol):
    def __init__(self, client: "ExtAuthzClient") -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.answer: Answer | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.done = False
        self.keep_alive = True
        self.request = b""
        self.uses = 0                   # checks sent on it: a reused one may have been closed meanwhile
        self.received = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, request: bytes, answer: Answer, timeout: float) -> None:
        self.answer, self.headers, self.body, self.done = answer, [], bytearray(), False
        self.request, self.received = request, False
        self.uses += 1
        self.parser = httptools.HttpResponseParser(self)
        self.timer = self.client.loop.call_later(timeout, self.fail, "no answer in time")
        self.transport.write(request)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        if len(self.body) < MAX_BODY:
            self.body += body[:MAX_BODY - len(self.body)]

    def on_message_complete(self) -> None:
        self.done = True

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(f"bad answer: {exc}")
            return
        if self.done and self.answer is not None:
            answer, self.answer = self.answer, None
            self.timer.cancel()
            self.keep_alive = self.parser.should_keep_alive()
            answer((self.parser.get_status_code(), self.headers, bytes(self.body)))
            self.client.release(self)

    def fail(self, why: str) -> None:
        if self.answer is not None:
            answer, self.answer = self.answer, None
            if self.timer is not None:
                self.timer.cancel()
            if self.uses > 1 and not self.received and why != "no answer in time":
                # A kept-alive connection the service closed while it was idle: not an answer;
                # the check goes again on a new connection.
                self.client.dial(self.request, answer, self.client.timeout_left(self.timer))
            else:
                self.client.error = why
                answer(None)
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc) -> None:
        self.keep_alive = False
        self.fail(str(exc) if exc else "closed by the service")
        self.client.forget(self)


class ExtAuthzClient:
    """Checks against one authorization service, from one worker."""

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str, ca_file: str | None) -> None:
        self.loop = loop
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/").encode()
        self.authority = parts.netloc.encode()
        self.tls = ssl.create_default_context(cafile=ca_file) if parts.scheme == "https" else None
        self.idle: list[_Connection] = []
        self.open: set[_Connection] = set()
        self.error: str | None = None

    def check(self, request_head: bytes, answer: Answer, timeout: float) -> None:
        """Send ``request_head`` (its path gets the URL's prefix) and call ``answer``."""
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.send(request_head, answer, timeout)
                return
        if len(self.open) >= MAX_CONNECTIONS:
            self.error = f"{MAX_CONNECTIONS} checks in flight already"
            answer(None)
            return
        self.dial(request_head, answer, timeout)

    def dial(self, request_head: bytes, answer: Answer, timeout: float) -> None:
        task = self.loop.create_task(self._dial(request_head, answer, timeout))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def timeout_left(self, timer: asyncio.TimerHandle | None) -> float:
        return max(0.01, timer.when() - self.loop.time()) if timer is not None else 0.01

    async def _dial(self, request_head: bytes, answer: Answer, timeout: float) -> None:
        conn = _Connection(self)
        try:
            await asyncio.wait_for(self.loop.create_connection(
                lambda: conn, self.host, self.port, ssl=self.tls,
                server_hostname=self.host if self.tls else None), timeout=timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self.error = f"connect: {exc or 'timed out'}"
            answer(None)
            return
        self.open.add(conn)
        conn.send(request_head, answer, timeout)

    def release(self, conn: _Connection) -> None:
        if conn.keep_alive:
            self.idle.append(conn)
        else:
            conn.transport.close()

    def forget(self, conn: _Connection) -> None:
        self.open.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        for conn in list(self.open):
            conn.transport.close()


class ExtAuthorizer:
    """A route's ext_authz: builds the check request, and reads its answer into a verdict
    (the Denial to answer, or the fields to set on the request)."""

    def __init__(self, route: str, cfg: ExtAuthz, client: ExtAuthzClient) -> None:
        self.route, self.cfg, self.client = route, cfg, client
        self.fail_open = cfg.failure_mode == "open"
        self.sent = tuple(name.encode() for name in cfg.headers)
        self.forwarded = frozenset(name.encode() for name in cfg.forward_headers)
        self.owned = self.forwarded     # set from the answer; a client's own copies are dropped
        self.unavailable = Denial(403, f"forbidden: the authorization service did not answer (route {route})",
                                  None, DENY_FORBIDDEN)

    def ask(self, head, client_ip: bytes, answer: Answer) -> None:
        lines = [b"%s %s%s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nX-Forwarded-For: %s\r\n"
                 % (head.method, self.client.prefix, head.target, self.client.authority, client_ip)]
        for name in self.sent:
            value = head.header(name)
            if value is not None:
                lines.append(name + b": " + value + b"\r\n")
        lines.append(b"\r\n")
        self.client.check(b"".join(lines), answer, self.cfg.timeout)

    def verdict(self, answer) -> Identity | Denial:
        """The fields to set (allowed; none when the service did not answer and failure_mode
        is open), or the Denial to answer."""
        if answer is None:
            return Identity() if self.fail_open else self.unavailable
        status, headers, body = answer
        if 200 <= status < 300:
            return Identity([(name, name, value) for name, value in headers if name in self.forwarded])
        shown = b"\r\n".join(name + b": " + value for name, value in headers if name in PASSED_TO_CLIENT)
        kind = DENY_UNAUTHENTICATED if status == 401 else DENY_FORBIDDEN
        return Denial(status, f"denied by the authorization service: {status} (route {self.route})",
                      shown or None, kind, body.decode("utf-8", "replace"))
