"""One gateway process: control plane (sources, registry) and the data plane it feeds.

Data flows one way: config -> sources -> registry -> snapshot -> data plane.
Nothing on the request path waits for the control plane: the proxy always
serves from the last snapshot applied.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time

from gateway.accesslog import AccessLog
from gateway.config import Config, ConfigError, load_config
from gateway.dataplane import DataPlane, ProxyContext
from gateway.health import HealthManager
from gateway.registry import Registry
from gateway.snapshot import Snapshot
from gateway.sources.base import Source
from gateway.sources.static import StaticSource

log = logging.getLogger("gateway")

MAINTENANCE_INTERVAL = 1.0      # seconds between pool clean-ups
INITIAL_SYNC_TIMEOUT = 10.0     # wait this long for sources before listening anyway
DRAIN_IDLE_GRACE = 1.0          # on shutdown, idle keep-alive connections close after this


def build_source(config) -> Source:
    if config.type == "static":
        return StaticSource(config)
    if config.type == "kubernetes":
        from gateway.sources.kubernetes import KubernetesSource
        return KubernetesSource(config)
    raise ValueError(f"unknown source type {config.type!r}")


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.started = time.time()
        self.ctx: ProxyContext | None = None
        self.dataplane: DataPlane | None = None
        self.registry: Registry | None = None
        self.health: HealthManager | None = None
        self.access_log: AccessLog | None = None
        self.server: asyncio.base_events.Server | None = None
        self._maintenance: asyncio.TimerHandle | None = None
        self.admin = None                 # gateway.admin.server.AdminServer
        self._stopped = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.access_log.path is not None:
            self.access_log = AccessLog(loop, cfg.access_log.path, cfg.access_log.buffer_bytes,
                                        cfg.access_log.flush_interval)
        t, lim = cfg.timeouts, cfg.limits
        self.ctx = ProxyContext(loop, connect_timeout=t.connect, response_timeout=t.response_header,
                                idle_timeout=t.downstream_idle, header_timeout=t.downstream_header,
                                body_idle_timeout=t.body_idle, max_head_size=lim.max_request_head,
                                max_headers=lim.max_headers, max_uri=lim.max_uri, max_body=lim.max_body,
                                max_response_head=lim.max_response_head,
                                max_connections=lim.max_connections,
                                max_requests_per_connection=lim.max_requests_per_connection,
                                access_log=self.access_log)
        self.dataplane = DataPlane(self.ctx)
        self.dataplane.apply_config(cfg)
        self.health = HealthManager(cfg.services, self._publish)
        self.health.start()
        self.ctx.on_upstream_result = self._upstream_result
        self.registry = Registry(cfg.services, [build_source(s) for s in cfg.sources],
                                 self.health.update)
        self.registry.start()
        # Warm up before taking traffic (as Envoy warms clusters): listening with no
        # endpoints yet would answer the first requests 503.
        waiting = await self.registry.wait_synced(INITIAL_SYNC_TIMEOUT)
        if waiting:
            log.warning("listening before these sources synced", extra={"fields": {"sources": waiting}})
        self.server = await loop.create_server(
            self.ctx.protocol_factory, cfg.listen.host, cfg.listen.port,
            reuse_port=True, backlog=4096)
        self.ctx.start_ticker()
        self._maintenance = loop.call_later(MAINTENANCE_INTERVAL, self._maintain)
        if cfg.admin is not None:
            from gateway.admin.server import AdminServer
            self.admin = AdminServer(self)
            await self.admin.start()
        log.info("listening", extra={"fields": {"listen": str(cfg.listen), "routes": len(cfg.routes),
                                                  "services": len(cfg.services),
                                                  "sources": len(cfg.sources)}})

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``listen: 127.0.0.1:0``)."""
        return self.server.sockets[0].getsockname()[1]

    def _publish(self, snapshot: Snapshot) -> None:
        self.dataplane.apply_snapshot(snapshot)
        log.info("snapshot applied", extra={"fields": {
            "version": snapshot.version,
            "endpoints": {k: [e.host + ("" if not e.flags else f" (flags {e.flags})") for e in v]
                          for k, v in snapshot.services.items()}}})

    def _upstream_result(self, service, upstream, kind) -> None:
        self.health.report(service.key, upstream.key, kind)

    def _maintain(self) -> None:
        self.dataplane.close_idle_upstreams(self.config.timeouts.upstream_idle)
        self._maintenance = asyncio.get_running_loop().call_later(MAINTENANCE_INTERVAL, self._maintain)

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Graceful: stop accepting, let in-flight requests finish, then close everything."""
        deadline = time.monotonic() + (self.config.timeouts.drain if drain_timeout is None else drain_timeout)
        if self.server is not None:
            self.server.close()
        ctx = self.ctx
        if ctx is not None:
            # Responses now say "Connection: close".  An idle keep-alive connection
            # gets a moment to send its next request (answered, then closed) before
            # it is closed: closing it at once races a client already sending.
            ctx.draining = True
            ctx.drain_idle_connections(DRAIN_IDLE_GRACE)
            while ctx.active_connections() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for conn in list(ctx.connections):
                conn.close()
            ctx.stop_ticker()
        if self._maintenance is not None:
            self._maintenance.cancel()
        if self.registry is not None:
            await self.registry.stop()
        if self.health is not None:
            await self.health.stop()
        if self.dataplane is not None:
            self.dataplane.close_all_upstreams()
        if self.admin is not None:
            await self.admin.stop()
        if self.access_log is not None:
            self.access_log.close()
        self._stopped.set()

    # -- reload -------------------------------------------------------------

    def reload(self, config: Config) -> None:
        """Apply a new valid config without dropping a request.

        Routes and services change in place (in-flight requests keep the objects
        they hold); health state of unchanged services is kept; unchanged sources
        keep watching, and new ones warm up before they are used; a new listen
        address is bound before the old one stops accepting.
        """
        old = self.config
        self.config = config
        self.dataplane.apply_config(config)
        if config.services != old.services:
            self.health.replace_services(config.services)
        if config.sources != old.sources:
            asyncio.ensure_future(self._replace_sources(config))
        else:
            self.registry.replace_services(config.services)
        if config.listen != old.listen:
            asyncio.ensure_future(self._rebind(config))
        log.info("config reloaded", extra={"fields": {"routes": len(config.routes),
                                                        "services": len(config.services),
                                                        "sources": len(config.sources)}})

    async def _replace_sources(self, config: Config) -> None:
        old = self.registry
        kept = {s.config: s for s in old.sources if s.config in config.sources}
        sources = [kept.get(sc) or build_source(sc) for sc in config.sources]
        fresh = Registry(config.services, sources, self.health.update)
        fresh.version = old.version
        new_sources = [s for s in sources if s not in kept.values()]
        for source in new_sources:
            source.start(fresh.changed)
        waiting = await fresh.wait_synced(INITIAL_SYNC_TIMEOUT, new_sources)
        if waiting:
            log.warning("using new sources before they synced", extra={"fields": {"sources": waiting}})
        for source in kept.values():
            source.rebind(fresh.changed)
        self.registry = fresh
        fresh.rebuild()
        await asyncio.gather(*(s.stop() for s in old.sources if s not in kept.values()))

    async def _rebind(self, config: Config) -> None:
        old = self.server
        self.server = await asyncio.get_running_loop().create_server(
            self.ctx.protocol_factory, config.listen.host, config.listen.port,
            reuse_port=True, backlog=4096)
        old.close()                         # open connections keep being served
        log.info("listening on a new address", extra={"fields": {"listen": str(config.listen)}})

    def reload_from_file(self) -> bool:
        try:
            config = load_config(self.config.path)
        except ConfigError as err:
            log.error("reload refused: config invalid; keeping the running config",
                      extra={"fields": {"errors": err.errors}})
            return False
        self.reload(config)
        return True

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


async def serve(config: Config) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the config file."""
    gateway = Gateway(config)
    loop = asyncio.get_running_loop()
    try:
        await gateway.start()
    except OSError as exc:
        log.error("cannot listen", extra={"fields": {"listen": str(config.listen), "error": str(exc)}})
        return 2
    stopping = []

    def on_stop(signame: str) -> None:
        if not stopping:
            stopping.append(signame)
            log.info("draining", extra={"fields": {"signal": signame}})
            asyncio.ensure_future(gateway.stop())

    loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
    if config.path:
        loop.add_signal_handler(signal.SIGHUP, gateway.reload_from_file)
    await gateway.wait_stopped()
    log.info("stopped")
    return 0

