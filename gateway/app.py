"""One gateway process: control plane (sources, registry) and the data plane it feeds.

Data flows one way: config -> sources -> registry -> health -> deltas -> data
plane, in this process (``workers: 1``) or in worker processes, by the same
messages.  Nothing on the request path waits for the control plane: the proxy
always serves from the last view applied.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import replace

from gateway.config import AccessLogConfig, Config, ConfigError, load_config
from gateway.dataplane import DataPlane, ProxyContext
from gateway.health import HealthManager
from gateway.health.manager import DEFAULT_DRAIN_OVER
from gateway.mcs import ExportStatus
from gateway.registry import Registry
from gateway.snapshot import Delta
from gateway.sources.base import Source
from gateway.sources.static import StaticSource
from gateway.stats import Stats
from gateway.supervisor import Supervisor, WorkerStartError
from gateway.tls import TicketKeys, set_ticket_keys
from gateway.wire import encode
from gateway.worker import STATS_INTERVAL, Worker

log = logging.getLogger("gateway")

INITIAL_SYNC_TIMEOUT = 10.0     # wait this long for sources before listening anyway
_NO_LOG = AccessLogConfig(path=None)    # the control plane's routing-only data plane serves nothing


def build_source(config, exported_only: bool = False) -> Source:
    """``exported_only``: ``multicluster.merge: exported`` (a kubernetes source serves only
    services its cluster exports with a ServiceExport)."""
    if config.type == "static":
        return StaticSource(config)
    if config.type == "kubernetes":
        from gateway.sources.kubernetes import KubernetesSource
        return KubernetesSource(config, exported_only)
    raise ValueError(f"unknown source type {config.type!r}")


def _file_ports(config: Config) -> frozenset[tuple[str, int]]:
    """The (address, port) pairs of the file's own listeners, which Gateways keep off."""
    pairs = {(config.listen.host, config.listen.port)}
    if config.tls is not None:
        pairs.add((config.tls.listen.host, config.tls.listen.port))
    return frozenset(pairs)


class Gateway:
    """The control plane of a gateway, and its data plane: in this process (``workers: 1``)
    or in worker processes (``workers: N``), whose counters ``stats`` adds up."""

    def __init__(self, config: Config, log_level: str = "info") -> None:
        # file_config: what the file (or the admin API) says; config: what runs, which with
        # gateway_api adds the routes and services of the cluster's HTTPRoutes.
        self.file_config = config
        self.config = config
        self.gatewayapi = None                  # gateway.gatewayapi.controller.GatewayApiController
        self.export_status = ExportStatus()     # ServiceExport conditions (merge: exported)
        self._started = False
        self.log_level = log_level
        self.started = time.time()
        self.exit_code = 0
        self.stats = Stats()
        # With workers: N, a data plane that only routes (for /debug/route): it gets the
        # config, never endpoints, and serves nothing.  Gateway API route changes reach it
        # when it is next read (_routing_behind), not per change: at 2,000 routes building
        # its Router on every change cost ~8 ms of the control plane's CPU, for no reader.
        self.worker: Worker | None = None
        self._routing_behind = False
        self.supervisor: Supervisor | None = None
        self.registry: Registry | None = None
        self.health: HealthManager | None = None
        self.admin = None                       # gateway.admin.server.AdminServer
        self._stats_timer: asyncio.TimerHandle | None = None
        self.ticket_keys = TicketKeys()         # every worker's and listener's session tickets
        self._ticket_timer: asyncio.TimerHandle | None = None
        self._stopped = asyncio.Event()

    # The admin views read these, in either mode.
    @property
    def ctx(self) -> ProxyContext | None:
        self._catch_up_routing()
        return self.worker.ctx if self.worker else None

    @property
    def dataplane(self) -> DataPlane | None:
        self._catch_up_routing()
        return self.worker.dataplane if self.worker else None

    def _catch_up_routing(self) -> None:
        if self._routing_behind:
            self._routing_behind = False
            self.worker.apply_config(self._routing_config(self.config), routes_only=True)

    @property
    def access_log(self):
        return self.worker.access_log if self.worker else None

    @property
    def server(self):
        return self.worker.server if self.worker else None

    @property
    def multi_worker(self) -> bool:
        return self.config.workers > 1

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        if self.file_config.gateway_api is not None:
            await self._start_gatewayapi()
        cfg = self.config = self._effective()
        self.worker = Worker(cfg if not self.multi_worker else self._routing_config(cfg))
        buckets = self.worker.buckets       # rate limits: the workers share the replica's
        self.worker.build()
        self.health = HealthManager(cfg.services, self._publish, self._suspect,
                                    lambda key, endpoints: self.refresh_stats().outcomes(key, endpoints))
        self.health.start()
        self.health.sync_drains(cfg.sources, 0.0)       # sources[].drained: drained from the start
        exported = cfg.multicluster.merge == "exported"
        self.registry = Registry(cfg.services, [build_source(s, exported) for s in cfg.sources],
                                 self.health.update, self.export_status.merged if exported else None)
        self.registry.start()
        # Warm up before taking traffic (as Envoy warms clusters): listening with no
        # endpoints yet would answer the first requests 503.
        waiting = await self.registry.wait_synced(INITIAL_SYNC_TIMEOUT)
        if waiting:
            log.warning("listening before these sources synced", extra={"fields": {"sources": waiting}})
        set_ticket_keys(self.ticket_keys.keys)
        self._ticket_timer = asyncio.get_running_loop().call_later(TicketKeys.ROTATION, self._rotate_ticket_keys)
        if self.multi_worker:
            self.supervisor = Supervisor(cfg.workers, cfg, self.log_level, on_report=self.health.report,
                                         stats=self.stats, snapshot=self.health.snapshot,
                                         on_fatal=self._fatal, buckets_fd=buckets.fd,
                                         ticket_keys=self.ticket_keys)
            await self.supervisor.start()
        else:
            self.ctx.on_upstream_result = self._upstream_result
            await self.worker.listen()
            self._stats_timer = asyncio.get_running_loop().call_later(STATS_INTERVAL, self._collect_stats)
        if cfg.admin is not None:
            from gateway.admin.server import AdminServer
            self.admin = AdminServer(self)
            await self.admin.start()
        self._started = True
        log.info("listening", extra={"fields": {"listen": str(cfg.listen), "workers": cfg.workers,
                                                  **({"tls_listen": str(cfg.tls.listen)} if cfg.tls else {}),
                                                  "routes": len(cfg.routes),
                                                  "services": len(cfg.services),
                                                  "sources": len(cfg.sources)}})
        if self._effective() != cfg:        # Gateway API changes that came while starting
            self._apply(self._effective())

    # -- routes from Kubernetes ----------------------------------------------

    async def _start_gatewayapi(self) -> None:
        from gateway.gatewayapi.controller import GatewayApiController
        cfg = self.file_config
        self.gatewayapi = GatewayApiController(cfg.gateway_api, cfg.sources, self._routes_changed,
                                               _file_ports(cfg), global_limits=cfg.redis is not None)
        self.gatewayapi.start({s.key: s for s in cfg.services})
        waiting = await self.gatewayapi.wait_synced(INITIAL_SYNC_TIMEOUT)
        if waiting:
            log.warning("listening before these Gateway API watches synced",
                        extra={"fields": {"watches": waiting}})

    def _effective(self) -> Config:
        """The file's config plus the Gateways' listeners and the routes (and the services
        they name) of the HTTPRoutes."""
        file = self.file_config
        t = self.gatewayapi.translation if self.gatewayapi is not None else None
        if t is None:
            return file
        known = {s.key for s in file.services}
        services = file.services + tuple(s for s in t.services if s.key not in known)
        # One order for both: the spec's precedence across every route of a listener, the
        # file's routes before the HTTPRoutes' on a tie (their ranks: (0, ...) and (1, ...)).
        file_routes = tuple(rc if rc.rank else replace(rc, rank=(0, i)) for i, rc in enumerate(file.routes))
        return replace(file, routes=file_routes + tuple(t.routes), services=services,
                       route_order="precedence", listeners=t.listeners, tls_routes=t.tls_routes)

    @staticmethod
    def _routing_config(config: Config) -> Config:
        """The control plane's routing-only copy serves nothing: it neither logs, traces nor
        asks Redis."""
        return replace(config, access_log=_NO_LOG, tracing=None, redis=None)

    def _routes_changed(self, translation) -> None:
        if not self._started:
            return                      # start() reads the translation itself
        self._apply(self._effective(), routes_only=True)
        log.info("routes from the Gateway API applied", extra={"fields": {"routes": len(translation.routes)}})

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``listen: 127.0.0.1:0`` and one worker)."""
        return self.worker.port if self.worker.server else self.config.listen.port

    @property
    def view_version(self) -> int:
        """The version of the endpoint view the control plane publishes."""
        return self.health.version if self.health is not None else 0

    def _publish(self, delta: Delta) -> None:
        if self.supervisor is not None:
            self.supervisor.publish(delta)
        elif not self.multi_worker and not self.worker.apply_delta(delta):
            self.worker.apply_full(self.health.snapshot())
        # The services this delta changed, as they are now (not the whole view: at 1,000
        # services a line per change would otherwise carry every endpoint).
        current = self.health.current
        if not (delta.services or delta.flags):
            return          # loads or slow-start weights only: a few a second while ramping
        log.info("endpoints changed", extra={"fields": {
            "version": delta.version,
            "endpoints": {key: None if key not in current else
                          [e.host + ("" if not e.flags else f" (flags {e.flags})") for e in current[key]]
                          for key in (*delta.services, *delta.flags)}}})

    def _suspect(self, service_key: str, endpoint_key: tuple) -> None:
        if self.supervisor is not None:
            self.supervisor.suspect(service_key, endpoint_key)
        elif not self.multi_worker:
            self.dataplane.suspect(service_key, endpoint_key)

    def _upstream_result(self, service, upstream, kind) -> None:
        self.health.report(service.key, upstream.key, kind)

    def refresh_stats(self) -> Stats:
        """The counters, current (the in-process worker reports when asked; workers every second)."""
        if not self.multi_worker and self.worker is not None and self.worker.ctx is not None:
            self.stats.receive(0, self.worker.report())
        return self.stats

    def _collect_stats(self) -> None:
        self.refresh_stats()
        self._stats_timer = asyncio.get_running_loop().call_later(STATS_INTERVAL, self._collect_stats)

    def _rotate_ticket_keys(self) -> None:
        self.ticket_keys.rotate()
        set_ticket_keys(self.ticket_keys.keys)
        if self.supervisor is not None:
            self.supervisor.broadcast(encode(self.ticket_keys.message()))
        log.info("session ticket keys rotated", extra={"fields": {"keys": len(self.ticket_keys.keys)}})
        self._ticket_timer = asyncio.get_running_loop().call_later(TicketKeys.ROTATION, self._rotate_ticket_keys)

    def _fatal(self, message: str) -> None:
        """The data plane cannot run: stop, and exit non-zero."""
        print(f"gateway: {message}", file=sys.stderr)
        self.exit_code = 1
        asyncio.ensure_future(self.stop(0))

    def worker_status(self) -> list[dict]:
        if self.supervisor is None:
            return [{"id": 0, "pid": os.getpid(), "ready": self.server is not None,
                     "snapshot_version": self.dataplane.snapshot_version if self.dataplane else 0,
                     "connections": self.ctx.active_connections() if self.ctx else 0}]
        return self.supervisor.status()

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Graceful: stop accepting, let in-flight requests finish, then close everything."""
        timeout = self.config.timeouts.drain if drain_timeout is None else drain_timeout
        if self._stats_timer is not None:
            self._stats_timer.cancel()
        if self._ticket_timer is not None:
            self._ticket_timer.cancel()
        if self.supervisor is not None:
            await self.supervisor.stop(timeout)
        if self.worker is not None:
            await self.worker.drain(timeout)
        if self.registry is not None:
            await self.registry.stop()
        if self.health is not None:
            await self.health.stop()
        if self.gatewayapi is not None:
            await self.gatewayapi.stop()
        if self.admin is not None:
            await self.admin.stop()
        self._stopped.set()

    # -- reload -------------------------------------------------------------

    def reload(self, config: Config) -> None:
        """Apply a new valid config from the file (or the admin API), with the routes from
        Kubernetes added (see _effective)."""
        self.file_config = config
        if self.gatewayapi is not None:
            self.gatewayapi.set_file({s.key: s for s in config.services}, _file_ports(config),
                                     global_limits=config.redis is not None)
        self._apply(self._effective())

    def _apply(self, config: Config, routes_only: bool = False) -> None:
        """Apply a new valid config without dropping a request.

        Routes and services change in place (in-flight requests keep the objects
        they hold); health state of unchanged services is kept; unchanged sources
        keep watching, and new ones warm up before they are used; a new listen
        address is bound before the old one stops accepting.  ``routes_only``: the
        Gateway API's routes changed, so when nothing else did, workers get only those
        routes; a reload (the file, SIGHUP) is always whole: it also re-reads certificates.
        """
        old = self.config
        if config.workers != old.workers:
            log.warning("a new worker count takes effect at restart",
                        extra={"fields": {"workers": old.workers, "configured": config.workers}})
            config = replace(config, workers=old.workers)
        self.config = config
        if self.supervisor is not None:
            if routes_only:
                self._routing_behind = True
            else:
                self._routing_behind = False
                self.worker.apply_config(self._routing_config(config))
            self.supervisor.reload(config, routes_only)
        else:
            self.worker.apply_config(config, routes_only)
        if config.services != old.services:
            self.health.replace_services(config.services)
        # sources[].drained is not part of a source's identity (its watch stays): follow it here.
        self.health.sync_drains(config.sources, DEFAULT_DRAIN_OVER)
        if (config.sources, config.multicluster) != (old.sources, old.multicluster):
            asyncio.ensure_future(self._replace_sources(config))
        else:
            self.registry.replace_services(config.services)
        if (config.admin, config.admin_options) != (old.admin, old.admin_options) or self.admin is None:
            from gateway.admin.server import follow_reload
            asyncio.ensure_future(follow_reload(self))      # admin: follows a reload too
        log.info("config reloaded", extra={"fields": {"routes": len(config.routes),
                                                        "services": len(config.services),
                                                        "sources": len(config.sources)}})

    async def _replace_sources(self, config: Config) -> None:
        old = self.registry
        exported = config.multicluster.merge == "exported"
        kept = {s.config: s for s in old.sources if s.config in config.sources
                and getattr(s, "exported_only", False) == (exported and s.config.type == "kubernetes")}
        sources = [kept.get(sc) or build_source(sc, exported) for sc in config.sources]
        fresh = Registry(config.services, sources, self.health.update,
                         self.export_status.merged if exported else None)
        fresh.version = old.version
        fresh.merged = dict(old.merged)         # publish only what the new sources change
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

    def reload_from_file(self) -> bool:
        try:
            config = load_config(self.config.path)
        except ConfigError as err:
            log.error("reload refused: config invalid; keeping the running config",
                      extra={"fields": {"errors": err.errors}})
            return False
        self.reload(config)
        return True

    def reopen_logs(self) -> None:
        """SIGUSR1 (or POST /logs/reopen): reopen the access log file, which logrotate moved."""
        if self.supervisor is not None:
            self.supervisor.reopen_logs()
        elif self.access_log is not None:
            self.access_log.reopen()
        log.info("reopening the access log", extra={"fields": {"path": self.config.access_log.path}})

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


async def serve(config: Config, log_level: str = "info") -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the config file;
    SIGUSR1 reopens the access log.

    The handlers are in place before anything starts: a signal during the start
    (which waits for sources and workers) is held and acted on once it is done.
    """
    gateway = Gateway(config, log_level)
    loop = asyncio.get_running_loop()
    stopping: list[str] = []
    started = False
    reload_pending = False

    def on_stop(signame: str) -> None:
        if not stopping:
            stopping.append(signame)
            log.info("draining", extra={"fields": {"signal": signame}})
            if started:
                asyncio.ensure_future(gateway.stop())
            else:
                starting.cancel()           # nothing is served yet: stop waiting for it

    def on_reload() -> None:
        nonlocal reload_pending
        if not config.path:
            log.warning("SIGHUP: no config file to reload")
        elif started:
            gateway.reload_from_file()
        else:
            reload_pending = True

    loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    loop.add_signal_handler(signal.SIGUSR1, gateway.reopen_logs)
    starting = asyncio.ensure_future(gateway.start())
    try:
        await starting
    except asyncio.CancelledError:
        await gateway.stop(0)
        log.info("stopped before it started")
        return 0
    except OSError as exc:
        log.error("cannot start", extra={"fields": {"listen": str(config.listen), "error": str(exc)}})
        await gateway.stop(0)
        return 2
    except WorkerStartError as exc:
        print(f"gateway: not started: {exc}", file=sys.stderr)
        await gateway.stop(0)
        return 1
    started = True
    if reload_pending:
        gateway.reload_from_file()
    await gateway.wait_stopped()
    log.info("stopped")
    return gateway.exit_code
