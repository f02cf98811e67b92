"""TLS listeners (Gateway API TLSRoutes): connections routed by SNI, bytes spliced both ways.

Passthrough: the ClientHello is read, never answered, until its server_name is known; the
connection then goes to the route's backend, ClientHello first, and the TLS session is the
client's with the backend (the gateway never decrypts). Terminate: the listener's
certificates end TLS (``gateway.tls.ServerTls``, the SNI choosing the certificate) and the
plain bytes go to the backend, re-encrypted when a BackendTLSPolicy gives its Service TLS.
A port with listeners of both modes (TLSRouteModeMixed) peeks every ClientHello and ends TLS
itself, through memory BIOs (``_TlsEnd``), for the routes of its Terminate listeners.

A connection picks a service by the backendRefs' weights and an endpoint of it from the
service's EndpointTable, as a request does (health, ejections, both clusters); a connect that
fails or times out tells passive health and tries another endpoint, up to CONNECT_ATTEMPTS.
No route for the SNI, no valid backend or no endpoint left: the connection is closed and
counted (``gateway_tls_route_connections_total{result}``). Each connection is one access-log
line when it ends (``protocol`` "tls-passthrough" or "tls-terminate", its ``server_name``,
``result``, bytes each way and the upstream_host and upstream_cluster it went to).

These are long-lived byte streams, so a connection costs two asyncio protocols and, while
connecting, one Task: nothing here is on the HTTP request path.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import struct
import time
from typing import NamedTuple

from _speedups.reactor import open_connection
from gateway.config import GatewayListener, TlsRouteConfig

log = logging.getLogger("gateway.streams")

CONNECT_ATTEMPTS = 3
MAX_CLIENT_HELLO = 65536            # bytes read before giving up on finding the SNI
PENDING_LIMIT = 262144              # client bytes held while connecting, before reading pauses
# Connections by how they ended up (gateway_tls_route_connections_total{result}), this process
RESULTS = ("routed", "no_route", "no_backend", "upstream_failed", "bad_client_hello", "handshake_failed",
           "client_closed")
counts = [0] * len(RESULTS)
(ROUTED, NO_ROUTE, NO_BACKEND, UPSTREAM_FAILED, BAD_CLIENT_HELLO, HANDSHAKE_FAILED,
 CLIENT_CLOSED) = range(len(RESULTS))
KIND_CONNECT, KIND_CONNECT_TIMEOUT = "connect_failed", "connect_timeout"     # as passive health knows them


# -- the ClientHello's server name --------------------------------------------------------------

class NeedMore(Exception):
    """The bytes so far end before the ClientHello does."""


_U16 = struct.Struct("!H")


def client_hello_server_name(data: bytes) -> str | None:
    """The SNI host name of the ClientHello that ``data`` (a TLS connection's first bytes)
    starts with, lower case; None when it names none. NeedMore when ``data`` ends first,
    ValueError when it is not a TLS ClientHello."""
    hello = _handshake_message(data)
    pos = 2 + 32                                        # client_version, random
    pos = _skip(hello, pos, 1)                          # legacy_session_id
    pos = _skip(hello, pos, 2)                          # cipher_suites
    pos = _skip(hello, pos, 1)                          # legacy_compression_methods
    if pos == len(hello):
        return None                                     # no extensions at all
    end = pos + 2 + _u16(hello, pos)
    pos += 2
    if end > len(hello):
        raise ValueError("extensions run past the ClientHello")
    while pos + 4 <= end:
        kind, size = _u16(hello, pos), _u16(hello, pos + 2)
        pos += 4
        if kind == 0:                                   # server_name
            return _host_name(hello[pos:pos + size])
        pos += size
    return None


def _handshake_message(data: bytes) -> bytes:
    """The first handshake message, put together from as many records as it spans."""
    body = bytearray()
    pos = 0
    while True:
        if len(data) < pos + 5:
            raise NeedMore
        if data[pos] != 22 or data[pos + 1] != 3:      # handshake, TLS major version 3
            raise ValueError("not a TLS handshake record")
        size = _u16(data, pos + 3)
        if len(data) < pos + 5 + size:
            raise NeedMore
        body += data[pos + 5:pos + 5 + size]
        pos += 5 + size
        if len(body) >= 4:
            if body[0] != 1:
                raise ValueError("the first handshake message is not a ClientHello")
            length = int.from_bytes(body[1:4], "big")
            if len(body) >= 4 + length:
                return bytes(body[4:4 + length])


def _u16(data: bytes, pos: int) -> int:
    if pos + 2 > len(data):
        raise ValueError("truncated ClientHello")
    return _U16.unpack_from(data, pos)[0]


def _skip(data: bytes, pos: int, width: int) -> int:
    """Past a vector whose length takes ``width`` bytes."""
    if pos + width > len(data):
        raise ValueError("truncated ClientHello")
    size = data[pos] if width == 1 else _u16(data, pos)
    return pos + width + size


def _host_name(ext: bytes) -> str | None:
    pos, end = 2, min(len(ext), 2 + _u16(ext, 0))
    while pos + 3 <= end:
        kind, size = ext[pos], _u16(ext, pos + 1)
        if kind == 0:
            name = ext[pos + 3:pos + 3 + size]
            try:
                return name.decode("ascii").lower().rstrip(".") or None
            except UnicodeDecodeError:
                raise ValueError("server_name is not ASCII") from None
        pos += 3 + size
    return None


# -- routing by SNI --------------------------------------------------------------------------------

def _covers(pattern: str, host: str) -> bool:
    """Gateway API hostnames: exact, or "*.example.com" for any name under example.com."""
    return pattern == host or (pattern.startswith("*.") and host.endswith(pattern[1:])
                               and len(host) > len(pattern) - 1)


def _specificity(pattern: str | None) -> tuple:
    """Exact names first, then wildcards longest first, then "any"."""
    if pattern is None:
        return (2, 0)
    return (1, -len(pattern)) if pattern.startswith("*.") else (0, 0)


class StreamRoute(NamedTuple):
    """A TLSRoute on one listener, ready for connections: its services (the data plane's
    Service objects) and, when there are several or invalid backendRefs, the weighted split
    (an EndpointTable of indexes into ``services``; one past them: refused); ``terminate``:
    its listener ends TLS."""
    name: str
    services: tuple
    split: object | None
    terminate: bool = False


class StreamTable:
    """One TLS socket's routes: the listener whose hostname best matches the SNI, then the
    route hostname of that listener that best matches it (oldest route first on a tie)."""

    def __init__(self, listeners: list[tuple[GatewayListener, list[tuple[TlsRouteConfig, StreamRoute]]]]) -> None:
        self.listeners = sorted(((gl.hostname, self._entries(routes)) for gl, routes in listeners),
                                key=lambda item: _specificity(item[0]))
        modes = {gl.tls_mode for gl, _ in listeners}
        self.terminate = modes == {"Terminate"}     # the socket ends TLS (an SSL server)
        self.mixed = len(modes) > 1                 # a plain socket; Terminate routes end it here

    @staticmethod
    def _entries(routes) -> list[tuple[str | None, StreamRoute]]:
        entries = [(host, route) for rc, route in routes for host in (rc.hostnames or (None,))]
        # sorted() is stable: among equal hostnames the routes keep their order (oldest first)
        return sorted(entries, key=lambda entry: _specificity(entry[0]))

    def route(self, server_name: str | None) -> StreamRoute | None:
        for hostname, entries in self.listeners:
            if hostname is not None and (server_name is None or not _covers(hostname, server_name)):
                continue
            for pattern, route in entries:
                if pattern is None or (server_name is not None and _covers(pattern, server_name)):
                    return route
            return None         # the listener the SNI selects has no route for it
        return None


# -- connections -------------------------------------------------------------------------------------

class StreamPort:
    """What a TLS socket's connections read: its current table (a new config replaces it),
    the worker's context (timeouts, passive health), the idle timeout, and its open
    connections (for draining, and for one sweep that closes idle ones: no timer per
    connection, at most a tenth of the timeout late)."""

    def __init__(self, ctx, table: StreamTable, idle_timeout: float) -> None:
        self.ctx = ctx
        self.table = table
        self.idle_timeout = idle_timeout
        self.tls = None                 # a mixed port's Terminate listeners' ServerTls
        self.connections: set[ClientSide] = set()
        self._sweep: asyncio.TimerHandle | None = None

    def factory(self) -> "ClientSide":
        return ClientSide(self)

    def opened(self, conn: "ClientSide") -> None:
        self.connections.add(conn)
        if self._sweep is None:
            self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        interval = min(max(self.idle_timeout / 10, 0.05), 60.0)
        self._sweep = self.ctx.loop.call_later(interval, self._close_idle)

    def _close_idle(self) -> None:
        self._sweep = None
        quiet_since = time.monotonic() - self.idle_timeout
        for conn in [c for c in self.connections if c.active < quiet_since]:
            conn.close()
        if self.connections:
            self._schedule_sweep()

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None


class _Side(asyncio.Protocol):
    """One end of a spliced connection: its transport, and how it is closed."""

    transport: asyncio.Transport | None = None
    closed = False
    eof = False                 # the peer on this side said it has no more to send

    def half_close(self) -> None:
        """The other side has no more to say: tell this one (TLS has no half close: close)."""
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()

    def close_after_writes(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()          # what is buffered is still written


class ClientSide(_Side):
    """The client's connection: peek the SNI (passthrough) or take it from the handshake
    (terminate), connect a backend, then copy bytes both ways with flow control."""

    def __init__(self, port: StreamPort) -> None:
        self.port = port
        self.upstream: UpstreamSide | None = None
        self.buffer = bytearray()           # read before the backend connection is up
        self.server_name: str | None = None
        self.route: StreamRoute | None = None
        self.tried: list[int] = []          # endpoint indexes tried, in the service's table
        self.service = None
        self.deadline: asyncio.TimerHandle | None = None
        self.result: int | None = None      # ROUTED, or why it was refused
        self.started = self.active = time.monotonic()      # active: the last bytes either way
        self.bytes_received = 0             # from the client
        self.bytes_sent = 0                 # to the client
        self.tls_end: _TlsEnd | None = None     # TLS ended here on a mixed port
        self.connecting = False
        self.peer: str | None = None
        self.last_tried = None              # the endpoint of the latest connect

    # asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else None
        self.port.opened(self)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:          # terminated: the handshake is done, its SNI known
            sni = getattr(ssl_object, "gateway_sni", None)
            self.server_name = sni.decode() if sni else None
            self._route()
        else:
            self.deadline = asyncio.get_running_loop().call_later(
                self.port.ctx.header_timeout, self._client_hello_timed_out)

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self.active = time.monotonic()
        if self.tls_end is not None:
            data = self.tls_end.feed(data)
            if data is None:
                self._refuse(HANDSHAKE_FAILED, self.tls_end.error)
                return
            if self.tls_end.handshaken and not self.connecting:
                self._connect_now()
        if self.upstream is not None and self.upstream.transport is not None:
            if data:
                self.upstream.transport.write(data)
            return
        self.buffer += data
        if self.route is None and self.transport.get_extra_info("ssl_object") is None:
            self._peek()
        elif len(self.buffer) > PENDING_LIMIT:
            self.transport.pause_reading()  # resumed once connected

    def send(self, data: bytes) -> None:
        """The backend's bytes to the client (encrypted here on a mixed port's Terminate route)."""
        self.bytes_sent += len(data)
        self.active = time.monotonic()
        if self.tls_end is not None:
            self.tls_end.send(data)
        else:
            self.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.half_close()
            self._close_if_both_ended()
        elif self.route is None:            # the client gave up before its ClientHello ended
            self.close()
        # A plain transport stays open for the backend's last bytes; a TLS one cannot half-close.
        return self.transport.get_extra_info("ssl_object") is None

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.port.connections.discard(self)
        if self.deadline is not None:
            self.deadline.cancel()
        if self.upstream is not None:
            self.upstream.close_after_writes()
        if self.result is None:             # it went before anything was decided or connected
            self.result = CLIENT_CLOSED
            counts[CLIENT_CLOSED] += 1
        access_log = self.port.ctx.access_log
        if access_log is not None:
            access_log.log(self._log_entry())

    def _terminated(self) -> bool:
        return self.route.terminate if self.route is not None else self.port.table.terminate

    def _log_entry(self) -> dict:
        upstream = self.upstream.upstream if self.upstream is not None else self.last_tried
        return {"time": _now(), "client": self.peer,
                "protocol": "tls-terminate" if self._terminated() else "tls-passthrough",
                "server_name": self.server_name, "result": RESULTS[self.result],
                "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "duration_ms": round((time.monotonic() - self.started) * 1000, 3),
                "route": self.route.name if self.route is not None else None,
                "upstream_service": self.service.key if self.service is not None else None,
                "upstream_host": upstream.host if upstream is not None else None,
                "upstream_cluster": upstream.cluster if upstream is not None else None,
                "attempts": len(self.tried)}

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    # routing and connecting

    def _peek(self) -> None:
        try:
            self.server_name = client_hello_server_name(bytes(self.buffer))
        except NeedMore:
            if len(self.buffer) > MAX_CLIENT_HELLO:
                self._refuse(BAD_CLIENT_HELLO, "no ClientHello within the first 64 KiB")
            return
        except ValueError as exc:
            self._refuse(BAD_CLIENT_HELLO, str(exc))
            return
        self._route()

    def _route(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.route = self.port.table.route(self.server_name)
        if self.route is None:
            self._refuse(NO_ROUTE, "no TLSRoute serves this server name")
            return
        self.service = self._pick_service()
        if self.service is None:
            self._refuse(NO_BACKEND, "the route's backendRefs are not valid")
            return
        if self.route.terminate and self.port.table.mixed:
            self._end_tls_here()
            return
        self._connect_now()

    def _end_tls_here(self) -> None:
        """A mixed port's Terminate route: the handshake from the ClientHello already read; the
        backend is connected once it is done (a backend that speaks first must find it done)."""
        self.tls_end = _TlsEnd(self.port.tls.default, self.transport)
        self.deadline = self.port.ctx.loop.call_later(self.port.ctx.header_timeout, self._handshake_timed_out)
        hello = bytes(self.buffer)
        self.buffer.clear()
        self.bytes_received -= len(hello)       # counted again as data_received's
        self.data_received(hello)

    def _connect_now(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.connecting = True
        self._connect()

    def _pick_service(self):
        route = self.route
        if route.split is None:
            return route.services[0] if route.services else None
        i = route.split.pick()
        return route.services[i] if 0 <= i < len(route.services) else None

    def _connect(self) -> None:
        table = self.service.table
        i = table.pick(self.tried)
        if i < 0 or len(self.tried) >= CONNECT_ATTEMPTS:
            why = "no endpoint left to try" if i < 0 else f"{len(self.tried)} connects failed"
            self._refuse(UPSTREAM_FAILED if self.tried else NO_BACKEND, why)
            return
        self.tried.append(i)
        upstream = self.last_tried = table.endpoint(i)
        ctx = self.port.ctx
        side = UpstreamSide(self, upstream)
        reencrypt = self.route.terminate and upstream.ssl is not None      # BackendTLSPolicy
        open_connection(ctx.reactor, ctx.loop, upstream.ip, upstream.port, side, ctx.connect_timeout,
                        self._connected, side, upstream.ssl if reencrypt else None,
                        upstream.server_hostname)

    def _connected(self, side: "UpstreamSide", transport, exc: BaseException | None) -> None:
        timed_out = isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT
        self._connect_done(side, transport is not None, timed_out)

    def _connect_done(self, side: "UpstreamSide", made: bool, timed_out: bool) -> None:
        if not made:
            self._report(side.upstream, KIND_CONNECT_TIMEOUT if timed_out else KIND_CONNECT)
            if not self.closed:
                self._connect()
            return
        if self.closed:
            side.transport.close()
            return
        self.upstream = side
        self.result = ROUTED
        counts[ROUTED] += 1
        if side.upstream.report_success:        # ends a run of failures: passive health hears it
            side.upstream.report_success = False
            self._report(side.upstream, None)
        if self.buffer:
            side.transport.write(bytes(self.buffer))
            self.buffer.clear()
        self.transport.resume_reading()
        if self.eof:
            side.half_close()

    def _report(self, upstream, kind: str | None) -> None:
        if kind is not None:
            upstream.report_success = True
        handler = self.port.ctx.on_upstream_result
        if handler is not None:
            handler(self.service, upstream, kind)

    def _client_hello_timed_out(self) -> None:
        self.deadline = None
        self._refuse(BAD_CLIENT_HELLO, "no complete ClientHello in time")

    def _handshake_timed_out(self) -> None:
        self.deadline = None
        self._refuse(HANDSHAKE_FAILED, "no complete handshake in time")

    def _refuse(self, result: int, why: str) -> None:
        self.result = result
        counts[result] += 1
        log.debug("TLS connection refused", extra={"fields": {
            "result": RESULTS[result], "server_name": self.server_name, "reason": why}})
        self.close()

    # closing

    def half_close(self) -> None:
        if self.tls_end is not None:        # TLS has no half close (and not plain TCP's under it)
            self.close_after_writes()
        else:
            super().half_close()

    def _close_if_both_ended(self) -> None:
        """After the client's EOF: keep the transport while the backend still talks."""
        if self.upstream.eof:
            self.close()

    def close(self) -> None:
        self.close_after_writes()
        if self.upstream is not None:
            self.upstream.close_after_writes()


class UpstreamSide(_Side):
    """The backend's connection: its bytes go to the client."""

    def __init__(self, client: ClientSide, upstream) -> None:
        self.client = client
        self.upstream = upstream            # _speedups Upstream: ip, port, cluster, ssl

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.client.closed:
            self.client.send(data)

    def eof_received(self) -> bool:
        self.eof = True
        self.client.half_close()
        if self.client.eof:
            self.close_after_writes()
        return True

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.client.upstream is self:
            self.client.close_after_writes()

    def pause_writing(self) -> None:
        if not self.client.closed:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.client.closed:
            self.client.transport.resume_reading()


class _TlsEnd:
    """TLS ended on a connection whose first bytes were read before its mode was known (a port
    with Passthrough and Terminate listeners): the handshake and the records through memory
    BIOs, the listener's contexts (SNI picks the certificate) as an SSL server's."""

    def __init__(self, context: ssl.SSLContext, transport: asyncio.Transport) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.transport = transport
        self.handshaken = False
        self.error = ""

    def feed(self, data: bytes) -> bytes | None:
        """The application bytes ``data`` carried (b"" while the handshake goes on); None when
        the handshake failed (``error`` says why)."""
        self.incoming.write(data)
        plain = bytearray()
        try:
            if not self.handshaken:
                self.obj.do_handshake()
                self.handshaken = True
            while chunk := self.obj.read(65536):
                plain += chunk
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass                            # more to come; or the client's close_notify
        except ssl.SSLError as exc:
            self.error = f"TLS handshake failed: {exc.reason or exc}"
            return None
        finally:
            self._flush()
        return bytes(plain)

    def send(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    def _flush(self) -> None:
        out = self.outgoing.read()
        if out:
            self.transport.write(out)


def _now() -> str:
    """The access log's time format (UTC, milliseconds), as the request path writes it."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


# -- building the tables -------------------------------------------------------------------------------

def build_tables(listeners: tuple[GatewayListener, ...], routes: tuple[TlsRouteConfig, ...], services: dict,
                 split_table) -> dict[tuple[str, int], StreamTable]:
    """(address, port) of each TLS socket -> its StreamTable. ``services``: the data plane's
    Service objects by key; ``split_table(entries)``: an EndpointTable of (key, weight, cluster)."""
    modes = {gl.id: gl.tls_mode for gl in listeners}
    by_listener: dict[str, list] = {}
    for rc in routes:
        route = _stream_route(rc, services, split_table, modes.get(rc.listener) == "Terminate")
        by_listener.setdefault(rc.listener, []).append((rc, route))
    sockets: dict[tuple[str, int], list] = {}
    for gl in listeners:
        if gl.streams:
            sockets.setdefault((gl.address, gl.port), []).append((gl, by_listener.get(gl.id, [])))
    return {pair: StreamTable(served) for pair, served in sockets.items()}


def _stream_route(rc: TlsRouteConfig, services: dict, split_table, terminate: bool) -> StreamRoute:
    found = tuple(services[b.service] for b in rc.backends if b.service in services)
    split = None
    if len(found) > 1 or rc.invalid_weight:
        entries = [(b.service, b.weight, "") for b in rc.backends if b.service in services]
        split = split_table(entries + ([("", rc.invalid_weight, "")] if rc.invalid_weight else []))
    return StreamRoute(rc.name, found, split, terminate)
