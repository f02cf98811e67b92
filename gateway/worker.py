"""The data plane of one process, and the worker process that runs one.

``Worker`` owns what the request path needs in a process: the proxy context,
the data plane objects, the access log and the SO_REUSEPORT listener.  With
``workers: 1`` the gateway runs one in its own process next to the control
plane; with more, the supervisor starts worker processes (``spawn_command``)
that each run one and talk to the control plane over a socket pair:

    control plane -> worker   config (the validated data-plane spec), routes (only
                              routes changed), full (the whole endpoint view),
                              delta, suspect, drain, reopen (the access log)
    worker -> control plane   ready, ack (view version), resync (a version gap:
                              send the whole view), report (passive health),
                              stats (what moved, every second)

The messages and their codec are gateway.wire's; the config spec is the validated
config's data-plane part, which carries no file paths to read again (a worker
never parses or validates the config file).  A worker never waits for the control
plane on the request path: it serves from the last view it got.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import replace

from _speedups.context import Port
from _speedups.policy import SharedBuckets
from _speedups.reactor import Reactor
from _speedups.stats import BackendStats
from gateway.accesslog import AccessLog, replace_access_log
from gateway.config import Address, Config, GatewayListener, RouteConfig, TlsListener
from gateway.config.model import CLEARTEXT
from gateway.dataplane import DataPlane, PathPolicy, ProxyContext, TrustedProxies, Upstream
from gateway.listeners import ReactorServer, bind_listeners
from gateway.snapshot import Delta, Snapshot
from gateway import streams
from gateway.streams import StreamPort
from gateway.tls import ServerTls, certificates_only_differ, set_ticket_keys, tls_refusals
from gateway.policy.redis_store import RedisStore
from gateway.tracing import SpanExporter, apply_tracing
from gateway.wire import MESSAGE_LIMIT, RouteKey, decode_routes, decode_spec, encode, read_message, route_changes

log = logging.getLogger("gateway.worker")

MAINTENANCE_INTERVAL = 1.0      # seconds between pool clean-ups
HANDSHAKE_GRACE = 0.05          # on shutdown, how long handshakes under way get to complete
DRAIN_IDLE_GRACE = 1.0          # on shutdown, idle keep-alive connections close after this
STATS_INTERVAL = 1.0


def spawn_command() -> list[str]:
    """How to start a worker so that it runs the code this process runs.

    ``python -m gateway.worker`` puts the current directory first on ``sys.path``: started
    from a checkout, a worker imported the uncompiled sources there instead of the
    installed wheel, and died.  ``-P`` keeps the current directory out; the directories
    this process imported ``gateway`` and ``_speedups`` from go first instead.
    """
    import _speedups
    import gateway
    roots = list(dict.fromkeys(os.path.dirname(os.path.dirname(os.path.abspath(m.__file__)))
                               for m in (gateway, _speedups)))
    boot = (f"import sys; sys.path[:0] = {roots!r}; "
            "from gateway.worker import main; sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-P", "-c", boot]


class GatewayPort:
    """The socket of one Gateway (address, port), shared by its listeners there; its
    connections route with ``port.router``, which each new config replaces, or, on a TLS
    listener's socket (TLSRoutes), with ``stream.table`` (gateway.streams)."""

    def __init__(self, tls: bool, stream: StreamPort | None = None) -> None:
        self.port = Port()
        self.tls_listener: TlsListener | None = None      # HTTPS: what ``tls`` was made from
        self.tls: ServerTls | None = None
        self.server = None                                 # ReactorServer, or asyncio.Server for streams
        self.factory = None                                # its protocol factory
        self.is_tls = tls
        self.stream = stream


def _gateway_sockets(listeners: tuple[GatewayListener, ...],
                     min_version: str) -> dict[tuple[str, int], TlsListener | None]:
    """Each (address, port) of the Gateways' listeners: its TLS settings (every certificate
    of its HTTPS listeners), or None for plain HTTP."""
    out: dict[tuple[str, int], TlsListener | None] = {}
    for listener in listeners:
        pair = (listener.address, listener.port)
        if not listener.tls:
            out.setdefault(pair, None)
            continue
        before = out.get(pair)
        certificates = (before.certificates if before else ()) + listener.certificates
        # Client validation is per port (the Gateway's spec.tls.frontend): the same on each.
        out[pair] = TlsListener(Address(*pair), certificates, min_version, listener.client_validation)
    return out


class Worker:
    """Listener + proxy context + data plane + access log of one process."""

    def __init__(self, config: Config, buckets: SharedBuckets | None = None) -> None:
        self.config = config
        # Rate-limit buckets: the replica's, shared with its other workers (None: this
        # process is the replica's only data plane, and gets its own).
        self.buckets = buckets if buckets is not None else SharedBuckets()
        self.ctx: ProxyContext | None = None
        self.dataplane: DataPlane | None = None
        self.access_log: AccessLog | None = None
        self.reactor: Reactor | None = None            # HTTP(S) clients, plain upstream connections
        self.server: ReactorServer | None = None
        self.tls: ServerTls | None = None
        self.tls_server: ReactorServer | None = None
        self.gateway_ports: dict[tuple[str, int], GatewayPort] = {}
        self._gateway_changes = asyncio.Lock()         # one config's sockets at a time
        self._maintenance: asyncio.TimerHandle | None = None
        self.tracing: SpanExporter | None = None       # tracing on: its exporter thread
        self._otlp_logs_before = [0, 0, 0]             # access-log exporters replaced by reloads
        self.ratelimit_store: RedisStore | None = None  # global rate limits: this worker's Redis connection

    def build(self) -> None:
        """Everything but the listener (the control plane of a multi-worker gateway stops here)."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.access_log.path is not None:
            if cfg.access_log.path not in ("stdout", "stderr"):
                # Fail here, at start, with the reason: the writer thread opens the file
                # later, and its failure would only lose every line, silently.
                open(cfg.access_log.path, "ab").close()
            self.access_log = AccessLog(loop, cfg.access_log.path, cfg.access_log.buffer_bytes,
                                        cfg.access_log.flush_interval, otlp_endpoint=cfg.access_log.otlp_endpoint)
        self.ctx = ProxyContext(loop, cfg.limits, cfg.timeouts, access_log=self.access_log)
        # One epoll set for the plain port's clients and every plain upstream connection.
        self.reactor = self.ctx.reactor = Reactor(loop)
        self.tracing = apply_tracing(self.ctx, None, cfg.tracing)
        self._apply_settings(cfg)
        self.dataplane = DataPlane(self.ctx, self.buckets)
        self._apply_store(cfg, None)
        self.dataplane.apply_config(cfg)

    async def listen(self, sock: socket.socket | None = None) -> None:
        """Serve on ``sock`` (a listening socket the supervisor holds) or bind the config's address."""
        self.server = self._bind(self.config, sock)
        if self.config.tls is not None:
            await self._bind_tls(self.config)
        await self._serve_gateways(self.config)
        self._maintenance = asyncio.get_running_loop().call_later(MAINTENANCE_INTERVAL, self._maintain)

    def _apply_settings(self, cfg: Config) -> None:
        ctx = self.ctx
        ctx.configure(cfg.limits, cfg.timeouts)
        path = cfg.http.path
        ctx.path_policy = PathPolicy(path.normalize, path.merge_slashes, path.escaped_slashes,
                                     path.forward == "original")
        ctx.cleartext = CLEARTEXT.index(cfg.http.cleartext)
        trusted = cfg.http.trusted_proxies
        ctx.trusted_proxies = (None if trusted is None
                               else TrustedProxies(trusted.cidrs, trusted.hops))   # parsed once here

    def _bind(self, cfg: Config, sock: socket.socket | None = None) -> ReactorServer:
        """Serve ``sock`` (the supervisor's) or sockets bound to the config's address."""
        socks = [sock] if sock is not None else bind_listeners(cfg.listen)
        return ReactorServer(self.reactor, socks, self.ctx.protocol_factory)

    async def _bind_tls(self, cfg: Config) -> None:
        old = self.tls_server
        self.tls = ServerTls(cfg.tls)
        self.tls_server = ReactorServer(self.reactor, bind_listeners(cfg.tls.listen), self.ctx.tls_protocol_factory,
                                        self.tls.default, cfg.timeouts.downstream_header)
        if old is not None:
            old.close()

    def _maintain(self) -> None:
        self.dataplane.close_idle_upstreams(self.config.timeouts.upstream_idle)
        if self.tls is not None:
            self.tls.reload_if_changed()    # renewed certificate files apply without a restart
        self._maintenance = asyncio.get_running_loop().call_later(MAINTENANCE_INTERVAL, self._maintain)

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    def apply_config(self, config: Config, routes_only: bool = False) -> None:
        """Routes, services, timeouts and limits change in place; a new address is bound first.
        ``routes_only`` (Gateway API route changes): when only routes changed, only they are
        built again (see apply_routes); otherwise, and always on a reload, all of it is."""
        old = self.config
        if routes_only and replace(config, routes=()) == replace(old, routes=()):
            self.apply_routes(*route_changes(old.routes, config.routes), routes=config.routes)
            return
        self.config = config
        self._apply_settings(config)
        self._apply_store(config, old)
        self.dataplane.apply_config(config)
        if config.tracing != old.tracing:
            self.tracing = apply_tracing(self.ctx, self.tracing, config.tracing)
        if config.access_log != old.access_log:
            if self.access_log is not None and self.access_log.exporter is not None:
                self._otlp_logs_before = [a + b for a, b in zip(self._otlp_logs_before,
                                                                self.access_log.exporter.counters())]
            self.access_log = replace_access_log(self.ctx, self.access_log, config.access_log,
                                                 asyncio.get_running_loop())
        if self.server is not None and config.listen != old.listen:
            asyncio.ensure_future(self._rebind(config))
        if self.server is not None:
            if config.tls != old.tls:
                if config.tls is None:
                    self.tls_server.close()
                    self.tls_server = self.tls = None
                elif self.tls is not None and certificates_only_differ(old.tls, config.tls):
                    self.tls.replace_certificates(config.tls)   # no rebind: a Secret rotated
                else:
                    asyncio.ensure_future(self._bind_tls(config))
            elif self.tls is not None:
                self.tls.reload()           # a reload also picks up renewed certificates
            asyncio.ensure_future(self._serve_gateways(config))

    def apply_routes(self, upserts: list[RouteConfig], removed: list[RouteKey],
                     routes: tuple[RouteConfig, ...] | None = None) -> None:
        """Only routes changed: these are built, and the Routers of their listeners.
        ``routes``: the whole new list when the caller has it (the control plane's worker,
        whose config the admin API reads); a worker process keeps its first list, which
        nothing there reads again."""
        if routes is not None:
            self.config = replace(self.config, routes=routes)
        self.dataplane.apply_routes(upserts, removed)
        for pair, gp in self.gateway_ports.items():
            gp.port.router = self.dataplane.port_routers.get(pair) or gp.port.router

    async def _serve_gateways(self, config: Config) -> None:
        """A socket per Gateway (address, port): new ones bound, gone ones drained, the
        others given their new routes (and certificates) in place."""
        async with self._gateway_changes:
            await self._serve_gateways_now(config)

    async def _serve_gateways_now(self, config: Config) -> None:
        min_version = config.tls.min_version if config.tls is not None else "1.2"
        wanted = _gateway_sockets(config.listeners, min_version)
        tables = self.dataplane.stream_tables
        for pair in [p for p, gp in self.gateway_ports.items()
                     if p not in wanted or gp.is_tls != (wanted[p] is not None)
                     or (gp.stream is not None) != (p in tables)
                     or (gp.stream is not None and gp.stream.table.mixed != tables[p].mixed)
                     or (gp.tls_listener and not certificates_only_differ(gp.tls_listener, wanted[p]))]:
            gone = self.gateway_ports.pop(pair)
            if gone.server is not None:
                asyncio.ensure_future(self._close_listener(gone.server, gone.factory))
            if gone.stream is not None:
                gone.stream.close_all()     # a TLS socket no more: its streams end with it
        for pair, tls in wanted.items():
            gp = self.gateway_ports.get(pair)
            if gp is None:
                stream = StreamPort(self.ctx, tables[pair], config.timeouts.stream_idle) if pair in tables else None
                gp = self.gateway_ports[pair] = GatewayPort(tls is not None, stream)
            gp.port.router = self.dataplane.port_routers.get(pair) or gp.port.router
            if gp.stream is not None:
                gp.stream.table, gp.stream.idle_timeout = tables[pair], config.timeouts.stream_idle
            if gp.server is None:
                await self._open_gateway_port(pair, gp, tls)
            elif tls is not None and tls != gp.tls_listener:
                gp.tls.replace_certificates(tls)     # no rebind: a Secret rotated
                gp.tls_listener = tls

    async def _open_gateway_port(self, pair: tuple[str, int], gp: GatewayPort, tls: TlsListener | None) -> None:
        if gp.stream is not None:
            factory = gp.factory = gp.stream.factory
        else:
            factory = gp.factory = self.ctx.port_factory(gp.port, tls is not None)
        try:
            if tls is None and gp.stream is None:
                gp.server = ReactorServer(self.reactor, bind_listeners(Address(*pair)), factory)
                return
            if tls is not None:
                # HTTPS offers h2 and http/1.1; a TLS listener's streams are not HTTP: no ALPN
                gp.tls, gp.tls_listener = ServerTls(tls, alpn=gp.stream is None), tls
            if gp.stream is not None and (tls is None or gp.stream.table.mixed):
                # Passthrough (the bytes are not ours to decrypt), or Passthrough and Terminate
                # listeners on one port: each ClientHello is read first (gateway.streams).
                gp.stream.tls = gp.tls
                gp.server = await asyncio.get_running_loop().create_server(
                    factory, pair[0], pair[1], reuse_port=True, backlog=4096)
                return
            gp.server = ReactorServer(self.reactor, bind_listeners(Address(*pair)), factory, gp.tls.default,
                                      self.config.timeouts.downstream_header)
        except OSError as exc:      # the control plane holds the port: this is rare (a race)
            log.error("cannot listen for a Gateway", extra={"fields": {
                "address": str(Address(*pair)), "error": exc.strerror or str(exc)}})
            self.gateway_ports.pop(pair, None)

    async def _rebind(self, config: Config) -> None:
        old = self.server
        self.server = self._bind(config)
        await self._close_listener(old)     # open connections keep being served
        log.info("listening on a new address", extra={"fields": {"listen": str(config.listen)}})

    def apply_full(self, snapshot: Snapshot) -> None:
        self.dataplane.apply_full(snapshot)

    def apply_delta(self, delta: Delta) -> bool:
        return self.dataplane.apply_delta(delta)

    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), close everything.

        Responses now say "Connection: close".  An idle keep-alive connection
        gets a moment to send its next request (answered, then closed) before it
        is closed: closing it at once races a client that is already sending.
        """
        deadline = time.monotonic() + timeout
        ctx = self.ctx
        if ctx is not None:
            ctx.draining = True         # what the listeners still hand over is answered with close
        if self.server is not None:
            await self._close_listener(self.server)
        if self.tls_server is not None:
            await self._close_listener(self.tls_server)
        for gp in list(self.gateway_ports.values()):
            if gp.server is not None:
                await self._close_listener(gp.server, gp.factory)
        streams = [gp.stream for gp in self.gateway_ports.values() if gp.stream is not None]
        if ctx is not None:
            ctx.drain_connections(DRAIN_IDLE_GRACE)
            while ((ctx.active_connections() or any(s.connections for s in streams))
                   and time.monotonic() < deadline):
                await asyncio.sleep(0.05)
            for conn in list(ctx.connections):
                conn.close()
            for stream in streams:
                stream.close_all()
            ctx.stop_timers()
        if self._maintenance is not None:
            self._maintenance.cancel()
        if self.dataplane is not None:
            self.dataplane.close_all_upstreams()
        if self.access_log is not None:
            self.access_log.close()
        if self.tracing is not None:
            self.tracing.close()            # what is queued goes out (bounded by its timeout)
        if self.ratelimit_store is not None:
            self.ratelimit_store.close()
        if self.reactor is not None:
            self.reactor.close()

    async def _close_listener(self, server, factory=None) -> None:
        """Stop listening without resetting connections the kernel has already accepted.

        Closing a listening socket resets the connections waiting in its accept queue
        (SO_REUSEPORT does not hand them to another worker), and their clients have
        written requests by then.  So first make the socket refuse new handshakes (a
        socket filter that drops SYNs: the client retries a second later, to another
        worker or refused), give handshakes under way a moment to complete, then accept
        what is queued and serve it, then close.  Dropping every packet instead would
        drop the last ACK of a handshake under way, and its client, which already
        counts as connected, would be reset.  (``factory``: a port of ``gateway.streams``, on
        the loop's own server.)
        """
        loop = asyncio.get_running_loop()
        listeners = [socket.socket(fileno=os.dup(pseudo.fileno())) for pseudo in server.sockets]
        for listener in listeners:
            try:
                _refuse_handshakes(listener)
            except OSError:
                pass
        # Handshakes that got their SYN-ACK before the filter finish meanwhile (and
        # the server accepts them as usual).
        await asyncio.sleep(HANDSHAKE_GRACE)
        accepted = []
        for listener in listeners:
            try:
                listener.setblocking(False)
                while len(accepted) < 4096:
                    conn, _ = listener.accept()
                    accepted.append(conn)
            except OSError:         # BlockingIOError: the queue is empty
                pass
            finally:
                listener.close()
        server.close()

        async def adopt(conn: socket.socket) -> None:
            try:
                # A child made after the filter went on would inherit it: take it off.
                conn.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)
            except OSError:
                pass
            if isinstance(server, ReactorServer):
                server.adopt(conn)      # the reactor serves it as one it accepted (TLS: handshake and all)
                return
            conn.setblocking(False)
            try:
                await loop.connect_accepted_socket(factory, conn)
            except OSError:         # reset meanwhile
                conn.close()

        await asyncio.gather(*(adopt(conn) for conn in accepted))

    def report(self) -> dict:
        """What moved since the last report, for gateway.stats (which adds up every worker's)."""
        ctx = self.ctx
        upstreams, routes, backends, exemplars = [], {}, [], []
        touched = ctx.take_touched()
        self.dataplane.note_touched(touched)
        for obj in touched:
            if isinstance(obj, Upstream):
                upstreams.append([obj.pool, *obj.key, *obj.counters()])
            elif isinstance(obj, BackendStats):
                backends.append([*obj.key, *obj.counters()])
                exemplars.extend([*obj.key, *e] for e in obj.take_exemplars())
            else:
                routes[obj.name] = obj.counters()
        return {"counters": ctx.counter_list(), "connections": ctx.active_connections(),
                "in_flight": ctx.requests_in_flight, "snapshot": self.dataplane.snapshot_version,
                "upstreams": upstreams, "routes": routes, "backends": backends, "exemplars": exemplars,
                "tracing": self.tracing.counters() if self.tracing is not None else None,
                "otlp_logs": self._otlp_log_counters(), "tls_refusals": list(tls_refusals),
                "tls_route_connections": list(streams.counts),
                "ratelimit_store": self.ratelimit_store.status() if self.ratelimit_store is not None else None}

    def _otlp_log_counters(self) -> list[int] | None:
        """The access log's OTLP export, counted since start (an exporter a reload replaced
        is folded into ``_otlp_logs_before``)."""
        exporter = self.access_log.exporter if self.access_log is not None else None
        if exporter is None and not any(self._otlp_logs_before):
            return None
        counts = exporter.counters() if exporter is not None else [0, 0, 0]
        return [a + b for a, b in zip(counts, self._otlp_logs_before)]

    def _apply_store(self, config: Config, old: Config | None) -> None:
        """The global limits' Redis connection: opened, replaced or closed with ``redis``."""
        if old is not None and config.redis == old.redis:
            return
        if self.ratelimit_store is not None:
            self.ratelimit_store.close()
        self.ratelimit_store = (RedisStore(asyncio.get_running_loop(), config.redis)
                                if config.redis is not None else None)
        self.dataplane.ratelimit_store = self.ratelimit_store


_SO_ATTACH_FILTER = 26
_SO_DETACH_FILTER = 27


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _refuse_handshakes(sock: socket.socket) -> None:
    """Attach a classic BPF program that drops a TCP SYN (SYN set, ACK clear) and keeps the rest.

    A socket filter on a TCP socket sees the packet from its TCP header (flags at
    byte 13).  New handshakes stop here; the final ACK of one already under way still
    gets through, so it completes into the accept queue instead of being reset.
    """
    insns = (_SockFilter * 5)(
        _SockFilter(0x30, 0, 0, 13),            # ldb [13]          the TCP flags
        _SockFilter(0x54, 0, 0, 0x12),          # and #(SYN|ACK)
        _SockFilter(0x15, 0, 1, 0x02),          # jeq #SYN: next, else skip one
        _SockFilter(0x06, 0, 0, 0),             # ret #0            drop
        _SockFilter(0x06, 0, 0, 0xFFFFFFFF))    # ret #-1           keep the whole packet
    prog = _SockFprog(len(insns), ctypes.cast(insns, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(prog))


# -- the worker process -----------------------------------------------------------


class _Channel:
    """Frames to and from the control plane over the socket pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, message: dict) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(message))

    async def receive(self) -> dict | None:
        return await read_message(self.reader)


async def run_worker(fd: int, worker_id: int, listen_fd: int | None = None,
                     buckets_fd: int | None = None) -> int:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock, limit=MESSAGE_LIMIT)
    channel = _Channel(reader, writer)
    loop = asyncio.get_running_loop()
    worker: Worker | None = None
    stats_timer = None
    resyncing = False

    def report(service, upstream, kind) -> None:
        channel.send({"t": "report", "s": service.key, "e": list(upstream.key), "k": kind})

    def send_stats() -> None:
        nonlocal stats_timer
        channel.send({"t": "stats", **worker.report()})
        stats_timer = loop.call_later(STATS_INTERVAL, send_stats)

    while (message := await channel.receive()) is not None:
        kind = message["t"]
        if kind == "config":
            config = decode_spec(message)
            if worker is None:
                worker = Worker(config, SharedBuckets(buckets_fd) if buckets_fd is not None else None)
                worker.build()
                worker.ctx.on_upstream_result = report
            else:
                worker.apply_config(config)
        elif kind == "routes":
            worker.apply_routes(*decode_routes(message))
        elif kind == "delta":
            if resyncing:
                continue                    # the whole view is on its way
            if worker.apply_delta(Delta.from_wire(message)):
                channel.send({"t": "ack", "v": message["v"]})
            else:
                resyncing = True
                channel.send({"t": "resync", "have": worker.dataplane.snapshot_version})
        elif kind == "full":
            resyncing = False
            worker.apply_full(Snapshot.from_wire(message))
            channel.send({"t": "ack", "v": message["v"]})
            if worker.server is None:       # first view: now it can serve
                await worker.listen(socket.socket(fileno=listen_fd) if listen_fd is not None else None)
                channel.send({"t": "ready", "pid": os.getpid(), "id": worker_id})
                send_stats()
        elif kind == "suspect":
            worker.dataplane.suspect(message["s"], tuple(message["e"]))
        elif kind == "ticket_keys":         # the replica's session ticket keys (gateway.tls.TicketKeys)
            set_ticket_keys([bytes.fromhex(key) for key in message["keys"]])
        elif kind == "reopen":             # SIGUSR1 to the main process: logrotate moved the file
            if worker is not None and worker.access_log is not None:
                worker.access_log.reopen()
        elif kind == "drain":
            if stats_timer is not None:
                stats_timer.cancel()
            if worker is not None:
                await worker.drain(message["timeout"])
                channel.send({"t": "stats", **worker.report()})
            channel.send({"t": "drained"})
            await writer.drain()
            return 0
    # The control plane went away without a word: drain and leave.
    if worker is not None:
        await worker.drain(worker.config.timeouts.drain)
    return 0


def main(argv: list[str] | None = None) -> int:
    # The control plane decides when to stop and reload: signals to the process group
    # (Ctrl-C at a terminal, a hangup) must not kill a worker, from its first instant.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    parser = argparse.ArgumentParser(prog="gateway-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--id", type=int, default=0)
    parser.add_argument("--listen-fd", type=int, default=None,
                        help="a listening socket to serve on (held by the supervisor)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--buckets-fd", type=int, default=None,
                        help="the replica's rate-limit buckets (a memfd the supervisor holds)")
    args = parser.parse_args(argv)
    from gateway.logs import setup_logging
    setup_logging(args.log_level)
    import uvloop
    return uvloop.run(run_worker(args.fd, args.id, args.listen_fd, args.buckets_fd))


if __name__ == "__main__":
    sys.exit(main())
