"""Turns config and snapshots into the objects the request path reads.

Built once per config or snapshot change, never per request.  Objects are kept
by identity across changes: a Service keeps its EndpointTable (and so its
smooth-WRR state) and an endpoint keeps its Upstream (and so its pool of
keep-alive connections) as long as it stays in the snapshot.
"""
from __future__ import annotations

import logging
import time
from typing import NamedTuple

from gateway.config import Config, RouteConfig
from gateway.snapshot import EndpointSpec, Snapshot

try:
    from _speedups.forwarded import TrustedProxies
    from _speedups.path import PathPolicy
    from _speedups.proxy import ProxyContext, Route, Service, Upstream
    from _speedups.router import RouteMatcher, Router
    from _speedups.table import EndpointTable
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(
        f"the gateway's compiled modules are missing ({exc}); build them with "
        "`pip install .` or, in a checkout, `python setup.py build_ext --inplace`") from exc

__all__ = ["DataPlane", "PathPolicy", "ProxyContext", "TrustedProxies"]

log = logging.getLogger("gateway.dataplane")


class _Backend(NamedTuple):
    """One weighted service of a route that splits traffic (an EndpointTable entry)."""

    key: str
    weight: int
    cluster: str


class DataPlane:
    """Owns the routing table, services and upstreams of one worker."""

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.services: dict[str, Service] = {}
        # (TLS pool: "" or the service, cluster, ip, port) -> Upstream
        self.upstreams: dict[tuple[str, str, str, int], Upstream] = {}
        self.routes: list[Route] = []
        self.snapshot_version = 0
        self.upstream_tls: dict[str, tuple[object, str | None]] = {}   # service -> (SSLContext, SNI)

    # -- config: services and routes -------------------------------------

    def apply_config(self, config: Config) -> None:
        from gateway.tls import upstream_context
        self.upstream_tls = {svc.key: (upstream_context(svc.tls), svc.tls.sni)
                             for svc in config.services if svc.tls is not None}
        for svc in config.services:
            if svc.key not in self.services:
                self.services[svc.key] = Service(svc.key, EndpointTable())
        previous = {route.name: route for route in self.routes}
        routes = [self._route(rc, previous.get(rc.name)) for rc in config.routes]
        matchers = [self._matcher(i, rc, route) for i, (rc, route) in enumerate(zip(config.routes, routes))]
        self.routes = routes
        self.ctx.set_router(Router(matchers))
        for key in set(self.services) - {svc.key for svc in config.services}:
            self._retire_service(key)

    def _route(self, rc: RouteConfig, previous: Route | None) -> Route:
        services = tuple(self.services[b.service] for b in rc.backends)
        split = None
        if len(services) > 1:
            split = EndpointTable([_Backend(b.service, b.weight, "") for b in rc.backends])
        prefix = rc.match.path_prefix
        rewrite_from = prefix.encode() if rc.rewrite_prefix is not None and prefix else None
        rewrite_to = rc.rewrite_prefix.encode() if rc.rewrite_prefix is not None else None
        retries = rc.retries
        return Route(rc.name, services, split, rewrite_from, rewrite_to, rc.timeout or 0.0,
                     retries.attempts, retries.on_5xx, retries.on_timeout,
                     retries.per_try_timeout or 0.0,
                     previous.traffic if previous is not None else None)

    @staticmethod
    def _matcher(index: int, rc: RouteConfig, route: Route) -> RouteMatcher:
        m = rc.match
        if m.path_regex is not None:
            import re
            kind, value = "regex", re.compile(m.path_regex)
        elif m.path_exact is not None:
            kind, value = "exact", m.path_exact
        elif m.path_prefix not in (None, "/"):
            kind, value = "prefix", m.path_prefix
        else:
            kind, value = "any", None
        headers = []
        for h in m.headers:
            name = h.name.lower().encode()
            if h.present is not None:
                headers.append((name, "present" if h.present else "absent", None))
            elif h.exact is not None:
                headers.append((name, "exact", h.exact.encode()))
            else:
                import re
                headers.append((name, "regex", re.compile(h.regex)))
        return RouteMatcher(index, route, kind, value, m.hosts, m.methods, headers)

    # -- snapshots: endpoints ---------------------------------------------

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        seen: set[tuple] = set()
        for key, specs in snapshot.services.items():
            service = self.services.get(key)
            if service is None:
                continue                    # not routed by this config
            tls = self.upstream_tls.get(key)
            # Plain connections to an endpoint are shared by every service that reaches it;
            # a service with TLS settings gets its own, so that its CA, SNI and verification
            # are never replaced by another service's, nor its pooled connections reused.
            pool = key if tls is not None else ""
            upstreams = [self._upstream(pool, spec, tls) for spec in specs]
            seen.update((pool, *spec.key) for spec in specs)
            service.table.update(upstreams)
            for i, spec in enumerate(specs):
                service.table.set_flags(i, spec.flags)
        for key in set(self.upstreams) - seen:
            self._retire_upstream(key)
        self.snapshot_version = snapshot.version

    def _upstream(self, pool: str, spec: EndpointSpec, tls: tuple | None) -> Upstream:
        upstream = self.upstreams.get((pool, *spec.key))
        if upstream is None:
            upstream = self.upstreams[(pool, *spec.key)] = Upstream(spec.key, spec.ip, spec.port,
                                                                    spec.weight, spec.cluster)
        upstream.weight = spec.weight
        if tls is not None:
            upstream.ssl, upstream.server_hostname = tls[0], tls[1] or spec.ip
        return upstream

    def _retire_upstream(self, key: tuple) -> None:
        # In-flight requests finish on their connection; it is closed, not pooled, after.
        upstream = self.upstreams.pop(key)
        upstream.removed = True
        upstream.close_idle(float("inf"))

    def _retire_service(self, key: str) -> None:
        service = self.services.pop(key)
        service.table.update([])

    def close_idle_upstreams(self, idle_timeout: float) -> None:
        """Close pooled connections unused for ``idle_timeout`` seconds (run periodically)."""
        cutoff = time.monotonic() - idle_timeout
        for upstream in self.upstreams.values():
            upstream.close_idle(cutoff)

    def close_all_upstreams(self) -> None:
        for upstream in self.upstreams.values():
            upstream.close_idle(float("inf"))
