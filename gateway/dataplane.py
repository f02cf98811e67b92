"""Turns config and endpoint changes into the objects the request path reads.

Built once per config change or delta, never per request, and only for the
services a delta names.  Objects are kept
by identity across changes: a Service keeps its EndpointTable (and so its
smooth-WRR state) and an endpoint keeps its Upstream (and so its pool of
keep-alive connections) as long as it stays in the snapshot.
"""
from __future__ import annotations

import bisect
import logging
import time
from typing import NamedTuple

from gateway.policy.auth import JwksFetcher, JwksKeys, authenticator
from gateway.config import Config, ExtAuthz, GatewayListener, HeaderFilter, JwtAuth, Limits, RouteConfig
from gateway.policy.ext_authz import ExtAuthorizer, ExtAuthzClient
from gateway.mirror import Mirror
from gateway.routing import precedence_key
from gateway.snapshot import Delta, Endpoints, EndpointSpec, Snapshot, with_pairs
from gateway.streams import StreamTable, build_tables
from gateway.wire import RouteKey, route_key

try:
    from _speedups.h2_upstream import H2Pool
    from _speedups.filters import BackendFilters, Cors, HeaderModifier, PathRewrite, Redirect, RouteFilters
    from _speedups.policy import IpFilter, RateLimit, RoutePolicy, SharedBuckets
    from _speedups.forwarded import TrustedProxies
    from _speedups.path import PathPolicy
    from _speedups.proxy import ProxyContext, Route, Service, Upstream
    from _speedups.router import RouteMatcher, Router
    from _speedups.service import SessionPolicy
    from _speedups.table import EndpointTable
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(
        f"the gateway's compiled modules are missing ({exc}); build them with "
        "`pip install .` or, in a checkout, `python setup.py build_ext --inplace`") from exc

__all__ = ["DataPlane", "PathPolicy", "ProxyContext", "TrustedProxies"]

log = logging.getLogger("gateway.dataplane")


def _hash_cookie(cookie) -> tuple[bytes | None, bytes | None]:
    """ring_hash's cookie name, and the attributes of the Set-Cookie that the gateway sends."""
    if cookie is None:
        return None, None
    attributes = f"; Path={cookie.path}"
    if cookie.ttl is not None:
        attributes += f"; Max-Age={int(cookie.ttl)}"
    return cookie.name.encode(), (attributes + "; HttpOnly").encode()


class _Backend(NamedTuple):
    """One weighted service of a route that splits traffic (an EndpointTable entry)."""

    key: str
    weight: int
    cluster: str


def _header_modifier(hf: HeaderFilter | None) -> HeaderModifier | None:
    return HeaderModifier(hf.set, hf.add, hf.remove) if hf else None


def _direct_reason(rc: RouteConfig) -> str | None:
    """Why the gateway answers a route itself, for the access log."""
    if rc.direct_reason is not None or rc.direct_status != 500:
        return rc.direct_reason
    return "no valid backend for this route rule"


def _path_rewrite(full_path: str | None, prefix: str | None, matched_prefix: str | None) -> PathRewrite | None:
    """A full-path replacement, or one of the route's matched prefix (none without one)."""
    if full_path is not None:
        return PathRewrite(full_path)
    if prefix is not None and matched_prefix is not None:
        return PathRewrite(prefix, matched_prefix)
    return None


def _redirect(r, matched_prefix: str | None) -> Redirect:
    return Redirect(r.status, r.scheme, r.host, r.port, _path_rewrite(r.full_path, r.prefix, matched_prefix))


def _backend_filters(f, matched_prefix: str | None) -> BackendFilters:
    """A backend's filters for the request path; a prefix rewrite replaces its route's match."""
    return BackendFilters(_header_modifier(f.request_headers), _header_modifier(f.response_headers),
                          _path_rewrite(f.rewrite_full_path, f.rewrite_prefix, matched_prefix), f.rewrite_host,
                          _redirect(f.redirect, matched_prefix) if f.redirect else None)


class _Placed(NamedTuple):
    """A route as its listener's Router holds it."""

    config: RouteConfig
    route: Route
    matcher: RouteMatcher
    order: tuple            # its place among the listener's routes (see _order)


def _order_of(placed: _Placed) -> tuple:
    return placed.order


class DataPlane:
    """Owns the routing table, services and upstreams of one worker."""

    def __init__(self, ctx: ProxyContext, buckets: SharedBuckets | None = None) -> None:
        self.ctx = ctx
        self.buckets = buckets                  # rate limits' (None: a data plane without them)
        self.jwks_fetchers: dict[tuple, JwksFetcher] = {}     # (url, CA file, refresh) -> its keys
        self.authz_clients: dict[tuple, ExtAuthzClient] = {}  # (url, CA file) -> its connections
        self.ratelimit_store = None             # the worker's RedisStore (global limits), or None
        self.services: dict[str, Service] = {}
        # (TLS pool: "" or the service, cluster, ip, port) -> Upstream
        self.upstreams: dict[tuple[str, str, str, int], Upstream] = {}
        self.max_idle_upstream = Limits().max_idle_upstream_connections     # idle connections per upstream
        # listener id ("": the file's listeners) -> its routes, by key and in their order
        self.placed: dict[str, dict[RouteKey, _Placed]] = {}
        self.ordered: dict[str, list[_Placed]] = {}
        self.route_order = "declared"
        self.routers: dict[str, Router] = {}            # listener id -> its routes' Router
        self.listeners: tuple[GatewayListener, ...] = ()
        # (address, port) of each Gateway listener socket -> the Router its connections use
        self.port_routers: dict[tuple[str, int], Router] = {}
        # (address, port) of each TLS listener socket -> its TLSRoutes (gateway.streams)
        self.stream_tables: dict[tuple[str, int], StreamTable] = {}
        self.snapshot_version = 0
        self.view: dict[str, Endpoints] = {}    # every service's endpoints, routed or not
        self.loads: dict[str, tuple] = {}       # multi-level services: (priority, basis points)
        self._users: dict[tuple, int] = {}      # upstream key -> services using it
        self._used_by: dict[str, list[tuple]] = {}
        self._pooled: set[Upstream] = set()     # upstreams that may hold idle connections
        self.upstream_tls: dict[str, tuple[object, str | None]] = {}   # service -> (SSLContext, SNI)
        self.upstream_tls_config: dict = {}
        self.protocols: dict[str, tuple[str, int]] = {}     # service -> (protocol, http2_connections)
        self.own_pool: set[str] = set()         # services with max_connections (see _set_members)
        self._decay: dict[str, float] = {}      # peak_ewma decay each service's table has

    # -- config: services and routes -------------------------------------

    def apply_config(self, config: Config) -> None:
        from gateway.tls import upstream_context
        if config.limits.max_idle_upstream_connections != self.max_idle_upstream:
            self.max_idle_upstream = config.limits.max_idle_upstream_connections
            for upstream in self.upstreams.values():
                upstream.max_idle = self.max_idle_upstream
        tls_before, own_before = self.upstream_tls_config, self.own_pool
        self.own_pool = {svc.key for svc in config.services if svc.circuit_breakers.max_connections}
        protocols_before, self.protocols = self.protocols, {
            svc.key: (svc.protocol, svc.http2_connections) for svc in config.services}
        self.upstream_tls_config = {svc.key: svc.endpoint_tls for svc in config.services
                                    if svc.endpoint_tls is not None}
        self.upstream_tls = {key: (upstream_context(tls, "h2" if self.protocols[key][0] == "h2"
                                                    else "http/1.1"), tls.sni)
                             for key, tls in self.upstream_tls_config.items()}
        fresh = []
        for svc in config.services:
            lb = svc.lb
            old = self.services.get(svc.key)
            if old is None or old.table.policy != lb.policy or self._decay.get(svc.key) != lb.decay:
                # A new policy is a new table (and so a new Service); requests in flight keep
                # the old one until they end.
                self.services[svc.key] = Service(svc.key, EndpointTable(policy=lb.policy,
                                                                        decay=lb.decay))
                self._decay[svc.key] = lb.decay
                fresh.append(svc.key)
            elif (tls_before.get(svc.key) != self.upstream_tls_config.get(svc.key)
                  or (svc.key in own_before) != (svc.key in self.own_pool)
                  or protocols_before.get(svc.key) != self.protocols[svc.key]):
                fresh.append(svc.key)       # its upstreams (and pool) follow the new settings
            service, limits = self.services[svc.key], svc.circuit_breakers
            service.hash_header = lb.header.lower().encode() if lb.header else None
            service.hash_source_ip = lb.source_ip
            service.hash_cookie, service.hash_cookie_attributes = _hash_cookie(lb.cookie)
            service.observe_latency = lb.policy == "peak_ewma"
            service.max_connections, service.max_pending = limits.max_connections, limits.max_pending
            service.max_requests, service.max_retries = limits.max_requests, limits.max_retries
            service.table.set_capacity(svc.capacity.max_in_flight_per_endpoint,
                                       svc.capacity.max_rate_per_endpoint)
            outlier = svc.outlier_detection
            service.outlier_statuses = frozenset(outlier.statuses if outlier else (502, 503, 504))
        # Every route anew (its services, or their settings, may have changed); a route
        # keeps its traffic counters by name.
        previous = {p.config.name: p.route for placed in self.placed.values() for p in placed.values()}
        self.route_order, self.listeners = config.route_order, config.listeners
        self.placed, self.routers = {}, {}
        for position, rc in enumerate(config.routes):
            self._place(rc, position, previous.get(rc.name))
        self.ordered = {listener: sorted(placed.values(), key=_order_of) for listener, placed in self.placed.items()}
        self._build_routers({"", *self.placed, *(listener.id for listener in config.listeners)})
        self.stream_tables = build_tables(config.listeners, config.tls_routes, self.services,
                                          lambda entries: EndpointTable([_Backend(*e) for e in entries]))
        for key in set(self.services) - {svc.key for svc in config.services}:
            self._retire_service(key)
        for key in fresh:                   # endpoints known before the service was routed
            if key in self.view:
                self._set_members(key, self.view[key])
        self._close_unused_clients(config.routes)

    def _close_unused_clients(self, routes) -> None:
        """JWKS fetchers and authorization services no route names any more."""
        used = {(j.jwks_url, j.jwks_ca_file, j.jwks_refresh) for rc in routes
                if rc.auth is not None and (j := rc.auth.jwt) is not None and j.jwks_url is not None}
        for key in set(self.jwks_fetchers) - used:
            self.jwks_fetchers.pop(key).close()
        used = {(a.url, a.ca_file) for rc in routes if rc.auth is not None and (a := rc.auth.ext_authz) is not None}
        for key in set(self.authz_clients) - used:
            self.authz_clients.pop(key).close()

    def apply_routes(self, upserts: list[RouteConfig], removed: list[RouteKey]) -> None:
        """Routes added, changed or removed, the rest of the config unchanged: only these
        routes are built, and only their listeners' Routers."""
        touched = set()
        for listener, name in removed:
            self._unorder(self.placed.get(listener, {}).pop((listener, name), None))
            touched.add(listener)
        for rc in upserts:
            before = self.placed.get(rc.listener, {}).get(route_key(rc))
            self._unorder(before)
            placed = self._place(rc, 0, before.route if before is not None else None)
            # In order by a binary search: at 2,000 routes, sorting them again was ~7 ms a change.
            bisect.insort(self.ordered.setdefault(rc.listener, []), placed, key=_order_of)
            touched.add(rc.listener)
        self._build_routers(touched)

    def _unorder(self, placed: _Placed | None) -> None:
        if placed is None:
            return
        ordered = self.ordered[placed.config.listener]
        i = bisect.bisect_left(ordered, placed.order, key=_order_of)
        while ordered[i] is not placed:         # equal orders (configs without ranks): next
            i += 1
        del ordered[i]

    def route_config(self, route: Route) -> RouteConfig | None:
        """The config ``route`` was built from (the admin API explains a match with it)."""
        for placed in self.placed.values():
            for p in placed.values():
                if p.route is route:
                    return p.config
        return None

    def _place(self, rc: RouteConfig, position: int, previous: Route | None) -> _Placed:
        route = self._route(rc, previous)
        placed = self.placed.setdefault(rc.listener, {})[route_key(rc)] = _Placed(
            rc, route, self._matcher(rc, route), self._order(rc, position))
        return placed

    def _order(self, rc: RouteConfig, position: int) -> tuple:
        """First match wins among a listener's routes in this order: the Gateway API's
        precedence when asked, then the rank the route's source gave it, then its position
        in the config (which only configs built without ranks need)."""
        if self.route_order == "precedence":
            return precedence_key(rc.match), rc.rank, position
        return rc.rank, position

    def _build_routers(self, listeners: set[str]) -> None:
        """The Routers of ``listeners``, and of the Gateway sockets where they are served."""
        for listener in listeners:
            self.routers[listener] = Router([p.matcher for p in self.ordered.get(listener, ())])
        self.ctx.set_router(self.routers.get("") or Router(()))
        shared: dict[tuple[str, int], list[GatewayListener]] = {}
        for gl in self.listeners:
            shared.setdefault((gl.address, gl.port), []).append(gl)
        # A socket's Router: its one listener's, or, when listeners share the port by
        # hostname, a choice among theirs (listener isolation).
        self.port_routers = {pair: self.port_routers[pair] if pair in self.port_routers
                             and not any(gl.id in listeners for gl in served)
                             else self._port_router(served)
                             for pair, served in shared.items()}

    def _port_router(self, served: list[GatewayListener]) -> Router:
        if len(served) == 1 and not served[0].hostname:
            return self.routers.get(served[0].id) or Router(())
        return Router.for_listeners([(gl.hostname, self.routers.get(gl.id) or Router(())) for gl in served])

    def _route(self, rc: RouteConfig, previous: Route | None) -> Route:
        services = tuple(self.services[b.service] for b in rc.backends)
        split = None
        if len(services) > 1 or rc.invalid_weight:
            # The share of invalid backendRefs is one more entry, after the services.
            invalid = [_Backend("", rc.invalid_weight, "")] if rc.invalid_weight else []
            split = EndpointTable([_Backend(b.service, b.weight, "") for b in rc.backends] + invalid)
        rewrite_to = rc.rewrite_prefix.encode() if rc.rewrite_prefix is not None else None
        prefix = rc.match.matched_prefix
        rewrite_from = prefix.encode() if rc.rewrite_prefix is not None and prefix else None
        retries = rc.retries
        route = Route(rc.name, services, split, rewrite_from, rewrite_to, rc.timeout or 0.0,
                      retries.attempts, retries.retry_statuses, retries.on_timeout,
                      retries.per_try_timeout or 0.0,
                      previous.traffic if previous is not None else None, self.ctx.touched,
                      retries.backoff, retries.idempotent)
        if rc.has_filters:
            route.filters = self._filters(rc)
        if rc.session is not None:
            s = rc.session
            route.session = SessionPolicy(s.name, s.type == "header", s.absolute_timeout or 0.0,
                                          s.idle_timeout or 0.0, s.permanent)
        if any(b.filters for b in rc.backends):
            route.backend_filters = tuple(_backend_filters(b.filters, rc.match.matched_prefix) if b.filters else None
                                          for b in rc.backends)
        return route

    def _filters(self, rc: RouteConfig) -> RouteFilters:
        """The route's filters, prepared for the request path (see _speedups/filters.pyx)."""
        redirect = _redirect(rc.redirect, rc.match.matched_prefix) if rc.redirect is not None else None
        rewrite_path = PathRewrite(rc.rewrite_full_path) if rc.rewrite_full_path is not None else None
        mirrors = tuple(Mirror(self.ctx.loop, self.services[m.service], m.fraction) for m in rc.mirrors)
        cors = None
        if rc.cors is not None:
            c = rc.cors
            cors = Cors(c.allow_origins, c.allow_methods, c.allow_headers, c.expose_headers,
                        c.allow_credentials, c.max_age)
        return RouteFilters(_header_modifier(rc.request_headers), _header_modifier(rc.response_headers),
                            redirect, rewrite_path, rc.rewrite_host, mirrors, rc.direct_status or 0,
                            _direct_reason(rc), cors, self._policy(rc) if rc.has_policy else None)

    def _policy(self, rc: RouteConfig) -> RoutePolicy:
        """The route's IP filter, authentication and rate limit (_speedups/policy.pyx)."""
        ip_filter = IpFilter(rc.ip_filter.allow, rc.ip_filter.deny) if rc.ip_filter is not None else None
        rate_limit = None
        if rc.rate_limit is not None:
            if self.buckets is None:
                self.buckets = SharedBuckets()
            r = rc.rate_limit
            store = self.ratelimit_store if r.scope == "global" else None
            rate_limit = RateLimit(self.buckets, rc.name, r.requests, r.per, r.bucket, r.key, store)
        auth = ext_authz = None
        if rc.auth is not None and rc.auth.ext_authz is not None:
            ext_authz = ExtAuthorizer(rc.name, rc.auth.ext_authz, self._authz_client(rc.auth.ext_authz))
        elif rc.auth is not None:
            auth = authenticator(rc.name, rc.auth, self._jwks(rc.auth.jwt), self.ctx.loop)
        return RoutePolicy(rc.name, ip_filter, auth, rate_limit, ext_authz)

    def _authz_client(self, cfg: ExtAuthz) -> ExtAuthzClient:
        """One client (keep-alive connections) per authorization service, shared by routes."""
        key = (cfg.url, cfg.ca_file)
        client = self.authz_clients.get(key)
        if client is None:
            client = self.authz_clients[key] = ExtAuthzClient(self.ctx.loop, *key)
        return client

    def _jwks(self, cfg: JwtAuth | None) -> JwksKeys | None:
        """A JWT method's keys: its file's, or the fetcher of its URL (one per URL, kept
        while a route names it; see apply_config)."""
        if cfg is None:
            return None
        if cfg.jwks_url is None:
            return JwksKeys(cfg.jwks)
        key = (cfg.jwks_url, cfg.jwks_ca_file, cfg.jwks_refresh)
        fetcher = self.jwks_fetchers.get(key)
        if fetcher is None:
            fetcher = self.jwks_fetchers[key] = JwksFetcher(self.ctx.loop, *key)
        return fetcher

    @staticmethod
    def _matcher(rc: RouteConfig, route: Route) -> RouteMatcher:
        m = rc.match
        if m.path_regex is not None:
            import re
            kind, value = "regex", re.compile(m.path_regex)
        elif m.path_exact is not None:
            kind, value = "exact", m.path_exact
        elif m.path_segment_prefix not in (None, "/"):
            kind, value = "segment_prefix", m.path_segment_prefix
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
        import re
        queries = [(q.name.encode(), "exact", q.exact.encode()) if q.exact is not None
                   else (q.name.encode(), "regex", re.compile(q.regex)) for q in m.queries]
        return RouteMatcher(route, kind, value, m.hosts, m.methods, headers, queries)

    # -- endpoints: the whole view, or deltas -----------------------------

    def apply_full(self, snapshot: Snapshot) -> None:
        """Make the view ``snapshot``'s (a worker's first state, or after a version gap)."""
        for key in [k for k in self.view if k not in snapshot.services]:
            self._set_members(key, None)
        for key, specs in snapshot.services.items():
            if self.view.get(key) != specs:
                self._set_members(key, specs)
        for key, loads in snapshot.loads.items():
            self._set_loads(key, loads)
        self.snapshot_version = snapshot.version

    def apply_delta(self, delta: Delta) -> bool:
        """Apply the next delta; False (nothing applied) when it is not the next version."""
        if delta.version != self.snapshot_version + 1:
            return False
        for key, specs in delta.services.items():
            self._set_members(key, specs)
        for key, pairs in delta.flags.items():
            self._set_flags(key, pairs)
        for key, loads in delta.loads.items():
            self._set_loads(key, loads)
        for key, pairs in delta.weights.items():
            self._set_weights(key, pairs)
        self.snapshot_version = delta.version
        return True

    def suspect(self, service_key: str, endpoint_key: tuple[str, str, int]) -> None:
        """Passive health wants the next success to this endpoint (see gateway.health.manager)."""
        for pool in ("", service_key):
            upstream = self.upstreams.get((pool, *endpoint_key))
            if upstream is not None:
                upstream.report_success = True

    def _set_members(self, key: str, specs: Endpoints | None) -> None:
        if specs is None:
            self.view.pop(key, None)
            self.loads.pop(key, None)
        else:
            self.view[key] = specs
        service = self.services.get(key)
        if service is None:
            return                          # not routed by this config (yet)
        tls = self.upstream_tls.get(key)
        # Plain connections to an endpoint are shared by every service that reaches it;
        # a service with TLS settings gets its own, so that its CA, SNI and verification
        # are never replaced by another service's, nor its pooled connections reused.
        # So does a service with max_connections: the connections it counts are then its own,
        # not pooled ones another service opened (nor its own lent to another service).
        # And HTTP/2 endpoints: their connections are not HTTP/1.1 ones.
        setting, connections = self.protocols.get(key, ("auto", 2))
        protocols = [spec.spoken_with(setting) for spec in specs or ()]
        pools = [key if tls is not None or key in self.own_pool or protocol != "http1" else ""
                 for protocol in protocols]
        serving_before = self._serving(service)
        upstreams = [self._upstream(pool, spec, tls, protocol, connections)
                     for pool, spec, protocol in zip(pools, specs or (), protocols)]
        priorities = [spec.priority for spec in specs or ()]
        service.table.update(upstreams, priorities if any(priorities) else None)
        if key in self.loads:
            service.table.set_loads(self.loads[key])
        for i, spec in enumerate(specs or ()):
            service.table.set_flags(i, spec.flags)
        self._redispatch(service, serving_before - self._serving(service))
        self._set_users(key, [(pool, *spec.key) for pool, spec in zip(pools, specs or ())])

    def _set_flags(self, key: str, pairs) -> None:
        self.view[key] = with_pairs(self.view[key], pairs, EndpointSpec.with_flags)
        service = self.services.get(key)
        if service is not None:
            table = service.table
            out = [table.endpoint(i) for i, flags in pairs if flags and table.flags(i) == 0]
            for i, flags in pairs:
                table.set_flags(i, flags)
            self._redispatch(service, out)

    def _set_weights(self, key: str, pairs) -> None:
        """Slow start re-weighs ramping endpoints: the table's weights in place, nothing rebuilt."""
        self.view[key] = with_pairs(self.view[key], pairs, EndpointSpec.with_weight)
        service = self.services.get(key)
        if service is not None:
            for i, weight in pairs:
                service.table.set_weight(i, weight)

    @staticmethod
    def _serving(service: Service) -> set[Upstream]:
        table = service.table
        return {table.endpoint(i) for i in range(len(table)) if table.flags(i) == 0}

    def _redispatch(self, service: Service, taken_out) -> None:
        """Requests waiting for an answer from endpoints just taken out go elsewhere now
        (see Exchange.redispatch_from in _speedups/exchange.pyx), after the table changed,
        so that they cannot pick the same endpoint again."""
        if taken_out:
            moved = self.ctx.redispatch(service, taken_out)
            if moved:
                log.info("re-dispatched requests from ejected endpoints", extra={"fields": {
                    "service": service.key, "requests": moved,
                    "endpoints": sorted(u.host for u in taken_out)}})

    def _set_loads(self, key: str, loads) -> None:
        self.loads[key] = loads
        service = self.services.get(key)
        if service is not None:
            service.table.set_loads(loads)

    def _set_users(self, service_key: str, keys: list[tuple]) -> None:
        """Count which services use each upstream; one no service uses is retired."""
        before = self._used_by.pop(service_key, ())
        if keys:
            self._used_by[service_key] = keys
        for key in keys:
            self._users[key] = self._users.get(key, 0) + 1
        for key in before:
            left = self._users[key] - 1
            if left:
                self._users[key] = left
            else:
                del self._users[key]
                self._retire_upstream(key)

    def _upstream(self, pool: str, spec: EndpointSpec, tls: tuple | None, protocol: str,
                  http2_connections: int) -> Upstream:
        upstream = self.upstreams.get((pool, *spec.key))
        if upstream is None:
            upstream = self.upstreams[(pool, *spec.key)] = Upstream(
                spec.key, spec.ip, spec.port, spec.weight, spec.cluster, self.ctx.touched, pool)
        upstream.weight = spec.weight
        upstream.max_idle = self.max_idle_upstream
        if tls is not None:
            upstream.ssl, upstream.server_hostname = tls[0], tls[1] or spec.ip
        http2 = protocol in ("h2c", "h2")
        if http2 != (upstream.streams is not None):
            upstream.close_idle(float("inf"))       # the other protocol's connections
            upstream.streams = H2Pool(upstream, http2_connections, protocol == "h2") if http2 else None
        elif http2:
            upstream.streams.max_connections = http2_connections
        return upstream

    def _retire_upstream(self, key: tuple) -> None:
        # In-flight requests finish on their connection; it is closed, not pooled, after.
        upstream = self.upstreams.pop(key)
        upstream.removed = True
        upstream.close_idle(float("inf"))
        self._pooled.discard(upstream)

    def _retire_service(self, key: str) -> None:
        service = self.services.pop(key)
        service.table.update([])
        self._set_users(key, [])

    def note_touched(self, touched: list) -> None:
        """The Upstreams and Routes a report took (``ctx.take_touched``): an Upstream gets
        pooled connections only by serving, which touches it, so these are the ones the
        idle sweep must look at."""
        for obj in touched:
            if isinstance(obj, Upstream):
                self._pooled.add(obj)

    def close_idle_upstreams(self, idle_timeout: float) -> None:
        """Close pooled connections unused for ``idle_timeout`` seconds (run periodically).

        Only upstreams that served since their pool was last empty: at 100,000 endpoints a
        sweep over all of them every second was 1% of a core per worker, doing nothing.
        """
        cutoff = time.monotonic() - idle_timeout
        for upstream in list(self._pooled):
            if not upstream.close_idle(cutoff):
                self._pooled.discard(upstream)

    def close_all_upstreams(self) -> None:
        for upstream in self.upstreams.values():
            upstream.close_idle(float("inf"))
