"""Gateway API objects -> route configs, services and the statuses the spec asks for.

Pure: no I/O, the same objects give the same answer (so two replicas write the same
status, and a status write that changes nothing is never made). Objects are the dicts the
API serves. The spec version followed is gateway.networking.k8s.io v1 (Gateway API v1.1+,
standard channel); what is left out is listed in the README ("Gateway API support").
"""
from __future__ import annotations

import bisect
import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from gateway.config import (BackendFilters, Certificate, ClientValidation, CorsPolicy, GatewayListener, HeaderFilter,
                            HeaderMatch, MirrorConfig, QueryMatch, Redirect, RetryPolicy, RouteConfig, RouteMatch,
                            ServiceConfig, SessionPersistence, TlsRouteConfig, WeightedBackend, regex_problem)
from gateway.config.validate import section
from gateway.gatewayapi.backend_tls import BackendTls
from gateway.gatewayapi.ca_refs import resolve_ca_refs
from gateway.gatewayapi.conditions import condition
from gateway.gatewayapi.policies import PolicyIndex, PolicyMemo
from gateway.sources.discovery import GATEWAY_GROUP, MCS_GROUP  # noqa: F401  (re-exported)
from gateway.units import parse_duration

_FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade",
                              "keep-alive", "te", "trailer", "proxy-connection"})
_SUPPORTED_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite",
                      "RequestMirror", "CORS")
_GRPC_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror")
# HTTPCORSFilter's fields, as a file route's ``cors`` names them (one model and validator).
CORS_KEYS = {"allowOrigins": "allow_origins", "allowMethods": "allow_methods", "allowHeaders": "allow_headers",
              "exposeHeaders": "expose_headers", "allowCredentials": "allow_credentials", "maxAge": "max_age"}

Key = tuple[str, str]       # (namespace, name); namespace "" for cluster-scoped kinds


@dataclass
class World:
    """Everything the translation reads, as the watches last saw it."""
    controller_name: str
    classes: dict[str, dict] = field(default_factory=dict)
    gateways: dict[Key, dict] = field(default_factory=dict)
    routes: dict[Key, dict] = field(default_factory=dict)
    grpc_routes: dict[Key, dict] = field(default_factory=dict)         # GRPCRoutes
    tls_routes: dict[Key, dict] = field(default_factory=dict)          # TLSRoutes
    listener_sets: dict[Key, dict] = field(default_factory=dict)       # ListenerSets
    grants: dict[Key, dict] = field(default_factory=dict)
    services: dict[Key, list[dict]] = field(default_factory=dict)       # ports, per existing Service
    imports: dict[Key, dict] = field(default_factory=dict)              # ServiceImports
    namespaces: dict[str, dict] = field(default_factory=dict)           # labels
    secrets: dict[Key, "TlsSecret"] = field(default_factory=dict)       # TLS Secrets, read (controller)
    ca_maps: dict[Key, "CaBundle"] = field(default_factory=dict)        # ConfigMaps' ca.crt, read (controller)
    backend_tls_policies: dict[Key, dict] = field(default_factory=dict)  # gatewayapi.backend_tls
    security_policies: dict[Key, dict] = field(default_factory=dict)    # gatewayapi.policies
    rate_limit_policies: dict[Key, dict] = field(default_factory=dict)
    credentials: dict[Key, dict[str, str]] = field(default_factory=dict)   # Opaque Secrets' data, decoded
    global_limits: bool = False         # the file has a "redis" section: global rate limits can be kept
    # Changes whenever anything but an HTTPRoute changed: a route's translation, which reads
    # only the route and the rest, is kept while the route and this stay the same.
    version: int = 0


class RouteMemo:
    """The HTTPRoutes' last translations, and what a translation sums up from them, kept
    across translations: while nothing but HTTPRoutes changed, a route change costs that
    route (at 2,000 routes, going over all of them was most of a change's CPU), and the
    configs of unchanged routes stay the same objects, so the data plane tells what changed
    by identity."""

    def __init__(self, context: tuple = ()) -> None:
        self.context = context              # what a route's translation reads besides the route
        self.entries: dict[Key, tuple[dict, _RouteResult, tuple]] = {}      # (route, result, order)
        # (order, key, configs) in the spec's order (orders are unique: never compares keys)
        self.ordered: list[tuple[tuple, Key, tuple[RouteConfig, ...]]] = []
        self.attached: dict[str, int] = {}                                  # listener id -> routes
        self.route_status: dict[Key, list[dict]] = {}
        self.service_ports: dict[str, int] = {}

    def update(self, world: World, gateways: dict[Key, "_Gateway"], context: tuple,
               edges: PolicyIndex) -> set[Key] | None:
        """Translate the routes that changed since the last update: the keys of those (and
        of the routes gone), or None when every route was translated again (``context``
        changed)."""
        if context != self.context:
            self.__init__(context)
            for key, route in world.routes.items():
                self._put(key, route, _translate_route(world, route, gateways, edges))
            self._sum_service_ports()
            return None
        entries = self.entries
        changed = {key for key, route in world.routes.items()
                   if (entry := entries.get(key)) is None or entry[0] is not route}
        if len(entries) + sum(key not in entries for key in changed) > len(world.routes):
            changed |= {key for key in entries if key not in world.routes}
        services_moved = False
        for key in changed:
            before_order = self.entries[key][2] if key in self.entries else None
            before = self._drop(key)
            route = world.routes.get(key)
            after = _translate_route(world, route, gateways, edges) if route is not None else None
            if after is not None:
                self._put(key, route, after)
            # The first route in order naming a Service gives its port: a route that names one
            # and moved in the order (recreated, say) may change it as much as new ports do.
            ports = _service_ports(after)
            services_moved |= _service_ports(before) != ports or bool(
                ports and before_order != (self.entries[key][2] if key in self.entries else None))
        if services_moved:
            self._sum_service_ports()
        return changed

    def carry(self, key: Key, before: dict, route: dict) -> None:
        """``route`` is ``before`` with another status: its translation stands."""
        entry = self.entries.get(key)
        if entry is not None and entry[0] is before:
            self.entries[key] = (route, *entry[1:])

    def routes(self) -> list[RouteConfig]:
        return [rc for _, _, configs in self.ordered for rc in configs]

    def _put(self, key: Key, route: dict, result: "_RouteResult") -> None:
        order = _route_order(route)
        self.entries[key] = (route, result, order)
        bisect.insort(self.ordered, (order, key, result.configs))
        if result.parents is not None:
            self.route_status[key] = result.parents
            for listener_id in result.attached:
                self.attached[listener_id] = self.attached.get(listener_id, 0) + 1

    def _drop(self, key: Key) -> "_RouteResult | None":
        entry = self.entries.pop(key, None)
        if entry is None:
            return None
        _, result, order = entry
        del self.ordered[bisect.bisect_left(self.ordered, (order,))]
        if self.route_status.pop(key, None) is not None:
            for listener_id in result.attached:
                self.attached[listener_id] -= 1
        return result

    def _sum_service_ports(self) -> None:
        """Each Service's port as the first route (in order) naming it gives it."""
        ports: dict[str, int] = {}
        for _, key, _ in self.ordered:
            for service, port in _service_ports(self.entries[key][1]):
                ports.setdefault(service, port)
        self.service_ports = ports


@dataclass(frozen=True)
class TlsSecret:
    """A Secret as a listener's certificateRef sees it: its PEM pair, or why it cannot serve."""
    cert: str = ""
    key: str = field(default="", repr=False)
    problem: str | None = None          # None: a kubernetes.io/tls Secret whose pair loads


@dataclass(frozen=True)
class CaBundle:
    """A ConfigMap as a caCertificateRef (a Gateway's client validation, a BackendTLSPolicy)
    sees it: its ``ca.crt``, or why it cannot be trusted."""
    ca: str = ""
    problem: str | None = None          # None: a ca.crt that loads as PEM CA certificates


@dataclass(frozen=True)
class Addressing:
    """Where Gateways may be served: what the translation needs to give each one an address.

    ``pool``: the addresses in order (an unspecified one, 0.0.0.0 or ::, is every address);
    ``taken``: (address, port) pairs the file's own listeners hold; ``advertised``: the
    address written to status for a pool entry that is not one itself (0.0.0.0 -> the pod's
    IP); ``unbindable``: (address, port) -> why the last attempt to bind it failed."""
    pool: tuple[str, ...] = ("0.0.0.0",)
    taken: frozenset = frozenset()
    advertised: dict = field(default_factory=dict)
    unbindable: dict = field(default_factory=dict)


@dataclass
class Translation:
    routes: list[RouteConfig]
    services: list[ServiceConfig]
    class_status: dict[str, dict]
    gateway_status: dict[Key, dict]
    route_status: dict[Key, list[dict]]         # our status.parents entries per HTTPRoute
    listeners: tuple[GatewayListener, ...] = ()  # what the data plane serves, per Gateway listener
    # The HTTPRoutes translated again since the previous translation (with the memo): their
    # configs and status may have changed, no other route's did.  None: any may have.
    changed: set[Key] | None = None
    # (world store, key) -> status of each SecurityPolicy/RateLimitPolicy naming a target of ours
    policy_status: dict[tuple[str, Key], dict] = field(default_factory=dict)
    grpc_route_status: dict[Key, list[dict]] = field(default_factory=dict)     # as route_status
    ca_maps_read: frozenset[Key] = frozenset()      # the ConfigMaps client validations and BackendTLSPolicies name
    tls_routes: tuple[TlsRouteConfig, ...] = ()     # what TLS listeners serve
    tls_route_status: dict[Key, list[dict]] = field(default_factory=dict)      # as route_status
    listener_set_status: dict[Key, dict] = field(default_factory=dict)         # of ListenerSets naming ours


def _key(obj: dict) -> Key:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _generation(obj: dict) -> int:
    return obj["metadata"].get("generation", 1)


# -- hostnames ----------------------------------------------------------------------------


def _covers(wildcard: str, host: str) -> bool:
    """"*.example.com" covers "a.example.com", "a.b.example.com" and "*.a.example.com", not "example.com"."""
    return wildcard.startswith("*.") and host.endswith(wildcard[1:]) and len(host) > len(wildcard) - 1


def intersect_hostnames(listener: str | None, route: list[str]) -> list[str] | None:
    """The hostnames a route serves on a listener: None for any host, [] for none at all."""
    route = [h.lower() for h in route]
    if not listener:
        return route or None
    listener = listener.lower()
    if not route:
        return [listener]
    out = []
    for host in route:
        if host == listener or _covers(listener, host):
            out.append(host)
        elif _covers(host, listener):
            out.append(listener)
    return out


# -- listeners and parents ----------------------------------------------------------------


def _listener_allows(listener: dict, gateway_ns: str, route_ns: str, world: World) -> bool:
    """The listener's allowedRoutes.namespaces admit a route of ``route_ns`` (kinds: _Listener)."""
    return _namespaces_admit((listener.get("allowedRoutes") or {}).get("namespaces") or {}, "Same",
                             gateway_ns, route_ns, world)


def _namespaces_admit(namespaces: dict, default: str, own_ns: str, other_ns: str, world: World) -> bool:
    """A ``namespaces: {from, selector}`` (allowedRoutes', allowedListeners') admits an object of
    ``other_ns`` on an object of ``own_ns``."""
    source = namespaces.get("from", default)
    if source == "All":
        return True
    if source == "None":
        return False
    if source == "Same":
        return other_ns == own_ns
    selector = namespaces.get("selector") or {}
    labels = world.namespaces.get(other_ns, {})
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or ():
        present, value = expr.get("key") in labels, labels.get(expr.get("key"))
        op, values = expr.get("operator"), expr.get("values") or []
        if (op == "In" and value not in values) or (op == "NotIn" and value in values) or \
                (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


# -- backendRefs --------------------------------------------------------------------------


def _granted(world: World, route_ns: str, target_ns: str, group: str, kind: str, name: str,
             from_kind: str = "HTTPRoute") -> bool:
    """A ReferenceGrant in ``target_ns`` lets ``from_kind`` objects of ``route_ns`` refer to the object."""
    for (ns, _), grant in world.grants.items():
        if ns != target_ns:
            continue
        spec = grant.get("spec") or {}
        if not any(f.get("group") == GATEWAY_GROUP and f.get("kind") == from_kind
                   and f.get("namespace") == route_ns for f in spec.get("from") or ()):
            continue
        if any(t.get("group", "") == group and t.get("kind") == kind and t.get("name") in (None, "", name)
               for t in spec.get("to") or ()):
            return True
    return False


@dataclass
class _Ref:
    key: str | None             # "namespace/name" of the service, None when unresolved
    port: int | None
    weight: int
    problem: tuple[str, str] | None     # (reason, message) for ResolvedRefs=False


def resolve_backend(world: World, route_ns: str, ref: dict, route_kind: str = "HTTPRoute") -> _Ref:
    group, kind = ref.get("group", ""), ref.get("kind", "Service")
    name, ns = ref.get("name", ""), ref.get("namespace") or route_ns
    weight = ref.get("weight", 1)
    port = ref.get("port")
    if (group, kind) not in (("", "Service"), (MCS_GROUP, "ServiceImport")):
        return _Ref(None, None, weight, ("InvalidKind", f"backendRef {group}/{kind} {name!r}: "
                                                      f"only Service and ServiceImport are supported"))
    if ns != route_ns and not _granted(world, route_ns, ns, group, kind, name, from_kind=route_kind):
        return _Ref(None, None, weight, ("RefNotPermitted", f"backendRef {kind} {ns}/{name}: no "
                                                           f"ReferenceGrant in {ns} allows it"))
    if kind == "ServiceImport":
        found = (ns, name) in world.imports or (ns, name) in world.services
    else:
        found = (ns, name) in world.services
    if not found:
        return _Ref(None, None, weight, ("BackendNotFound", f"{kind} {ns}/{name} not found in any "
                                                           f"associated cluster"))
    if port is None:
        return _Ref(None, None, weight, ("BackendNotFound", f"backendRef {kind} {ns}/{name}: port is required"))
    return _Ref(service_key(world, ns, name, int(port)), int(port), weight, None)


def service_key(world: World, ns: str, name: str, port: int) -> str:
    """A backendRef's service: "namespace/name" for the Service's first port (or a port it does
    not list), "namespace/name:port" for another, a service of its own (ServiceConfig.port_in_key):
    two routes to two ports of one Service reach each its port."""
    ports = [p.get("port") for p in world.services.get((ns, name)) or ()]
    return f"{ns}/{name}:{port}" if ports and port != ports[0] and port in ports else f"{ns}/{name}"


# -- rules --------------------------------------------------------------------------------


def _match(m: dict, hosts: tuple[str, ...]) -> RouteMatch | None:
    path = m.get("path") or {"type": "PathPrefix", "value": "/"}
    kind, value = path.get("type", "PathPrefix"), path.get("value", "/")
    kw: dict = {}
    if kind == "Exact":
        kw["path_exact"] = value
    elif kind == "RegularExpression":
        if regex_problem(value):
            return None
        kw["path_regex"] = value
    else:
        kw["path_segment_prefix"] = value.rstrip("/") or "/"
    headers = []
    seen = set()
    for h in m.get("headers") or ():
        name = h["name"].lower()
        if name in seen:        # the spec: only the first of equivalent names counts
            continue
        seen.add(name)
        if h.get("type") == "RegularExpression" and regex_problem(h.get("value", "")):
            return None
        headers.append(HeaderMatch(name=name, regex=h["value"]) if h.get("type") == "RegularExpression"
                       else HeaderMatch(name=name, exact=h.get("value", "")))
    queries = []
    seen = set()
    for q in m.get("queryParams") or ():
        if q["name"] in seen:
            continue
        seen.add(q["name"])
        if q.get("type") == "RegularExpression" and regex_problem(q.get("value", "")):
            return None
        queries.append(QueryMatch(name=q["name"], regex=q["value"]) if q.get("type") == "RegularExpression"
                       else QueryMatch(name=q["name"], exact=q.get("value", "")))
    return RouteMatch(**kw, hosts=hosts, methods=(m["method"],) if m.get("method") else (),
                      headers=tuple(headers), queries=tuple(queries))


def _mirror_fraction(spec: dict) -> float:
    """RequestMirror ``percent`` (0..100) or ``fraction`` ({numerator, denominator: 100}); all
    requests when neither is given (GEP-3171)."""
    if spec.get("percent") is not None:
        return min(max(float(spec["percent"]), 0.0), 100.0) / 100
    fraction = spec.get("fraction")
    if fraction:
        denominator = fraction.get("denominator", 100) or 100
        return min(max(fraction.get("numerator", 0) / denominator, 0.0), 1.0)
    return 1.0


def _header_filter(spec: dict | None) -> HeaderFilter | None:
    if not spec:
        return None
    def pairs(items):
        return tuple((h["name"], h.get("value", "")) for h in items or ()
                     if h["name"].lower() not in _FRAMING_HEADERS)
    return HeaderFilter(set=pairs(spec.get("set")), add=pairs(spec.get("add")),
                        remove=tuple(n.lower() for n in spec.get("remove") or () if n.lower() not in _FRAMING_HEADERS))


def _duration(text: str | None) -> float | None:
    if not text:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError:
        return None
    return seconds or None          # "0s": no timeout


def _retry(spec: dict | None, backend_timeout: float | None) -> RetryPolicy:
    if not spec:
        return RetryPolicy(per_try_timeout=backend_timeout)
    codes = tuple(sorted({c for c in spec.get("codes") or () if isinstance(c, int) and 400 <= c <= 599}))
    # attempts counts retries (HTTPRouteRetry, GEP-1731); RetryPolicy counts tries.
    attempts = min(10, 1 + int(spec.get("attempts", 1)))
    # GEP-1731: backoff is the minimum wait between attempts.
    # GEP-1731: the listed codes are the ones retried (not the file's default 502/503/504).
    # A try that outlives timeouts.backendRequest is retried too (HTTPRouteRetryWithTimeouts).
    return RetryPolicy(attempts=attempts, statuses=codes, on_5xx=False, backoff=_duration(spec.get("backoff")) or 0.0,
                       per_try_timeout=backend_timeout, on_timeout=True)


@dataclass
class _Rule:
    configs: list[RouteConfig]
    problems: list[tuple[str, str]]      # ResolvedRefs problems
    unsupported: str | None              # an Accepted=False UnsupportedValue message
    services: dict[str, int]             # service key -> port


def translate_rule(world: World, route: dict, index: int, rule: dict, hosts: tuple[str, ...],
                   kind: str = "HTTPRoute") -> _Rule:
    """One rule of an HTTPRoute, or of a GRPCRoute whose matches ``_grpc_rule`` made HTTP ones."""
    ns, name = _key(route)
    supported = _SUPPORTED_FILTERS if kind == "HTTPRoute" else _GRPC_FILTERS
    problems: list[tuple[str, str]] = []
    services: dict[str, int] = {}
    unsupported = None
    request_headers = response_headers = redirect = None
    rewrite: dict = {}
    mirrors = []
    cors = None
    for f in rule.get("filters") or ():
        filter_type = f.get("type")
        if filter_type not in supported:
            unsupported = f"rules[{index}]: filter type {filter_type!r} is not supported"
        elif filter_type == "RequestHeaderModifier":
            request_headers = _header_filter(f.get("requestHeaderModifier"))
        elif filter_type == "ResponseHeaderModifier":
            response_headers = _header_filter(f.get("responseHeaderModifier"))
        elif filter_type == "RequestRedirect":
            redirect = f.get("requestRedirect") or {}
        elif filter_type == "URLRewrite":
            rewrite = f.get("urlRewrite") or {}
        elif filter_type == "CORS":
            cors, problem = _cors(f.get("cors") or {}, f"rules[{index}].filters.cors")
            unsupported = unsupported or problem
        elif filter_type == "RequestMirror":
            spec = f.get("requestMirror") or {}
            ref = resolve_backend(world, ns, spec.get("backendRef") or {}, kind)
            if ref.problem:
                problems.append(ref.problem)
            else:
                mirrors.append(MirrorConfig(ref.key, _mirror_fraction(spec)))
                services.setdefault(ref.key, ref.port)
    backends = []
    invalid_weight = 0
    if redirect is None:
        for j, ref_spec in enumerate(rule.get("backendRefs") or ()):
            ref = resolve_backend(world, ns, ref_spec, kind)
            filters, problem = _backend_filters(ref_spec.get("filters") or (), f"rules[{index}].backendRefs[{j}]")
            unsupported = unsupported or problem
            if ref.problem:
                problems.append(ref.problem)
                invalid_weight += max(ref.weight, 0)
            elif ref.weight > 0:
                backends.append(WeightedBackend(ref.key, ref.weight, filters))
                services.setdefault(ref.key, ref.port)
    timeouts = rule.get("timeouts") or {}
    retries = _retry(rule.get("retry"), _duration(timeouts.get("backendRequest")))
    session, problem = _session(rule.get("sessionPersistence"), f"rules[{index}].sessionPersistence")
    unsupported = unsupported or problem
    configs = []
    for j, m in enumerate(rule.get("matches") or [{}]):
        match = _match(m, hosts)
        if match is None:
            unsupported = f"rules[{index}].matches[{j}]: invalid regular expression"
            continue
        kw: dict = {}
        if redirect is not None:
            kw["redirect"] = _redirect(redirect, match)
        elif not backends:
            kw["direct_status"] = 500   # the spec: no valid backend -> 500 for this rule's requests
        elif invalid_weight:
            kw["invalid_weight"] = invalid_weight   # ... and 500 for an invalid backend's share
        path = rewrite.get("path") or {}
        if path.get("type") == "ReplaceFullPath":
            kw["rewrite_full_path"] = path.get("replaceFullPath", "/")
        elif path.get("type") == "ReplacePrefixMatch" and match.matched_prefix is not None:
            kw["rewrite_prefix"] = path.get("replacePrefixMatch", "/")
        if rewrite.get("hostname"):
            kw["rewrite_host"] = rewrite["hostname"].lower()
        configs.append(RouteConfig(
            name=f"{'' if kind == 'HTTPRoute' else 'grpcroute:'}{ns}.{name}.{index}.{j}", match=match,
            backends=tuple(backends),
            timeout=_duration(timeouts.get("request")), retries=retries,
            request_headers=request_headers, response_headers=response_headers,
            mirrors=tuple(mirrors), cors=cors, session=session, **kw))
    return _Rule(configs, problems, unsupported, services)


def _session(spec: dict | None, path: str) -> tuple[SessionPersistence | None, str | None]:
    """A rule's sessionPersistence (GEP-1619), checked as a file route's ``session_persistence``
    is; (policy or None, the first problem)."""
    if not spec:
        return None, None
    lifetime = (spec.get("cookieConfig") or {}).get("lifetimeType", "Session")
    if lifetime not in ("Session", "Permanent"):
        return None, f"{path}.cookieConfig.lifetimeType: {lifetime!r} is not Session or Permanent"
    if lifetime == "Permanent" and not spec.get("absoluteTimeout"):
        return None, f"{path}.cookieConfig.lifetimeType Permanent needs an absoluteTimeout (the cookie's Max-Age)"
    fields = {"name": spec.get("sessionName"), "type": (spec.get("type") or "Cookie").lower(),
              "absolute_timeout": spec.get("absoluteTimeout"), "idle_timeout": spec.get("idleTimeout"),
              "permanent": lifetime == "Permanent"}
    errs: list[str] = []
    policy = section(SessionPersistence, {k: v for k, v in fields.items() if v is not None}, path, errs)
    if not errs:
        return policy, None
    spelled = {"name": "sessionName", "type": "type", "absolute_timeout": "absoluteTimeout",
               "idle_timeout": "idleTimeout"}
    return None, re.sub(rf"^{re.escape(path)}\.(\w+)", lambda m: f"{path}.{spelled.get(m[1], m[1])}", errs[0])


def _backend_filters(filters, path: str) -> tuple[BackendFilters | None, str | None]:
    """A backendRef's filters, or the first one not supported there (mirrors, ExtensionRef)."""
    kw: dict = {}
    for f in filters:
        kind = f.get("type")
        if kind == "RequestHeaderModifier":
            kw["request_headers"] = _header_filter(f.get("requestHeaderModifier"))
        elif kind == "ResponseHeaderModifier":
            kw["response_headers"] = _header_filter(f.get("responseHeaderModifier"))
        elif kind == "URLRewrite":
            spec = f.get("urlRewrite") or {}
            rewrite = spec.get("path") or {}
            if rewrite.get("type") == "ReplaceFullPath":
                kw["rewrite_full_path"] = rewrite.get("replaceFullPath", "/")
            elif rewrite.get("type") == "ReplacePrefixMatch":
                kw["rewrite_prefix"] = rewrite.get("replacePrefixMatch", "/")
            if spec.get("hostname"):
                kw["rewrite_host"] = spec["hostname"].lower()
        elif kind == "RequestRedirect":
            kw["redirect"] = _redirect(f.get("requestRedirect") or {}, None)   # the data plane: per match
        else:
            return None, f"{path}: filter type {kind!r} is not supported on a backendRef"
    return (BackendFilters(**kw) if kw else None), None


def _cors(spec: dict, path: str) -> tuple[CorsPolicy | None, str | None]:
    """An HTTPRoute CORS filter, checked as a file route's ``cors`` is; (policy, None) or
    (None, the first problem)."""
    errs: list[str] = []
    policy = section(CorsPolicy, {CORS_KEYS.get(k, k): v for k, v in spec.items()}, path, errs)
    return (policy, None) if not errs else (None, errs[0])


def _redirect(spec: dict, match: RouteMatch | None) -> Redirect:
    """``match``: the prefix replaced is its matched prefix (none: a prefix replacement is dropped)."""
    path = spec.get("path") or {}
    full = path.get("replaceFullPath") if path.get("type") == "ReplaceFullPath" else None
    prefix = path.get("replacePrefixMatch") if path.get("type") == "ReplacePrefixMatch" else None
    if prefix is not None and match is not None and match.matched_prefix is None:
        prefix = None
    return Redirect(scheme=spec.get("scheme"), host=(spec.get("hostname") or "").lower() or None,
                    port=spec.get("port"), full_path=full, prefix=prefix,
                    status=spec.get("statusCode", 302))


# -- Gateways: listeners and addresses ------------------------------------------------------

ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")       # what HTTP and HTTPS listeners take
# The route kinds each listener protocol takes (TLS: TLSRoutes, Passthrough or Terminate)
_PROTOCOL_KINDS = {"HTTP": ROUTE_KINDS, "HTTPS": ROUTE_KINDS, "TLS": ("TLSRoute",)}
TLS_MODES = ("Passthrough", "Terminate")
UNSPECIFIED = frozenset({"", "0.0.0.0", "::"})      # a socket bound there takes every address


@dataclass
class _Listener:
    """One listener of one of our Gateways, as validated."""
    spec: dict
    id: str                                     # "namespace/gateway/listener"
    kinds: list[dict]                           # status.supportedKinds
    invalid_kinds: str | None = None            # ResolvedRefs=False InvalidRouteKinds message
    problem: tuple[str, str] | None = None      # Accepted=False (reason, message)
    conflict: tuple[str, str] | None = None     # Conflicted=True (reason, message)
    certificates: list[Certificate] = field(default_factory=list)
    cert_problem: tuple[str, str] | None = None
    client_validation: ClientValidation | None = None   # HTTPS: the Gateway's spec.tls.frontend for its port
    ca_problem: tuple[str, str] | None = None           # ResolvedRefs=False (reason, message)
    not_served: str | None = None               # Programmed=False message
    attached: int = 0
    gateway: Key = ("", "")
    owner: Key | None = None                    # its ListenerSet; None: the Gateway's own

    @property
    def namespace(self) -> str:
        """Where "Same" namespace means (allowedRoutes) and refs default to: its owner's."""
        return (self.owner or self.gateway)[0]

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def port(self) -> int:
        return self.spec.get("port")

    @property
    def protocol(self) -> str:
        return self.spec.get("protocol")

    @property
    def tls_mode(self) -> str | None:
        """A TLS listener's mode (Terminate when not given), None for HTTP and HTTPS."""
        if self.protocol != "TLS":
            return None
        return (self.spec.get("tls") or {}).get("mode") or "Terminate"

    @property
    def terminates_tls(self) -> bool:
        return self.protocol == "HTTPS" or self.tls_mode == "Terminate"

    @property
    def valid(self) -> bool:
        return self.problem is None and self.conflict is None

    def attachable(self, kind: str = "HTTPRoute") -> bool:
        return self.valid and any(k["kind"] == kind for k in self.kinds)


@dataclass
class _ListenerSet:
    """A ListenerSet whose parentRef is one of our Gateways."""
    key: Key
    obj: dict
    gateway: Key
    listeners: list[_Listener] = field(default_factory=list)
    problem: tuple[str, str] | None = None          # Accepted=False (reason, message)


@dataclass
class _Gateway:
    key: Key
    obj: dict
    listeners: list[_Listener]          # its own, then those of the ListenerSets it takes
    problem: tuple[str, str] | None = None              # Accepted=False
    address: str | None = None
    address_problem: tuple[str, str] | None = None      # Programmed=False
    # spec.tls.backend.clientCertificateRef: what it presents to TLS backends, or why it cannot
    # (ResolvedRefs=False); both None when the Gateway names none.
    backend_certificate: Certificate | None = None
    backend_certificate_problem: tuple[str, str] | None = None
    listener_sets: list[_ListenerSet] = field(default_factory=list)     # naming it, oldest first

    @property
    def own_listeners(self) -> list[_Listener]:
        return [l for l in self.listeners if l.owner is None]


def _route_kinds(spec: dict) -> tuple[list[dict], str | None]:
    """supportedKinds from allowedRoutes.kinds (every kind the protocol takes when none are
    named), and the message for the kinds that cannot be served."""
    takes = _PROTOCOL_KINDS[spec.get("protocol")]
    asked = (spec.get("allowedRoutes") or {}).get("kinds")
    if not asked:
        return [{"group": GATEWAY_GROUP, "kind": kind} for kind in takes], None
    kinds, invalid = [], []
    for k in asked:
        if k.get("kind") in takes and k.get("group", GATEWAY_GROUP) == GATEWAY_GROUP:
            kind = {"group": GATEWAY_GROUP, "kind": k["kind"]}
            if kind not in kinds:
                kinds.append(kind)
        else:
            invalid.append(f"{k.get('group', GATEWAY_GROUP)}/{k.get('kind')}")
    return kinds, (f"route kinds not supported: {', '.join(invalid)}" if invalid else None)


class _PortClaims:
    """What the listeners planned so far hold, across a Gateway and its ListenerSets (the
    Gateway's listeners first, then each ListenerSet's, oldest first: GEP-1713's precedence):
    the first listener on a port decides its protocol, a (port, hostname) is had once."""

    def __init__(self) -> None:
        self.protocols: dict[int, str] = {}
        self.hostnames: set[tuple[int, str]] = set()

    def conflict(self, port: int, protocol: str, hostname: str) -> tuple[str, str] | None:
        if self.protocols.setdefault(port, protocol) != protocol:
            return "ProtocolConflict", f"port {port} is served as {self.protocols[port]}"
        if (port, hostname) in self.hostnames:
            return "HostnameConflict", f"another listener on port {port} has hostname {hostname or '(none)'}"
        self.hostnames.add((port, hostname))
        return None


def _plan_listeners(world: World, gkey: Key, gateway: dict, claims: _PortClaims,
                    owner: dict | None = None) -> list[_Listener]:
    """The listeners of the Gateway, or of ``owner`` (a ListenerSet taken by it)."""
    source = owner if owner is not None else gateway
    owner_key = _key(owner) if owner is not None else None
    prefix = f"{gkey[0]}/{gkey[1]}/" + (f"{owner_key[0]}/{owner_key[1]}/" if owner_key else "")
    out: list[_Listener] = []
    for spec in (source.get("spec") or {}).get("listeners") or ():
        listener = _Listener(spec, prefix + spec["name"], [], gateway=gkey, owner=owner_key)
        out.append(listener)
        protocol = spec.get("protocol")
        port, hostname = spec.get("port"), (spec.get("hostname") or "").lower()
        if protocol not in _PROTOCOL_KINDS:
            # Another protocol on a port a listener holds conflicts with it; alone, it is unsupported.
            if claims.protocols.get(port, protocol) != protocol:
                listener.conflict = ("ProtocolConflict", f"port {port} is served as {claims.protocols[port]}")
            else:
                listener.problem = ("UnsupportedProtocol", f"protocol {protocol} is not supported "
                                                           f"(HTTP, HTTPS and TLS are)")
            listener.invalid_kinds = f"protocol {protocol} takes no route kind this gateway serves"
            continue
        if listener.tls_mode not in (None, *TLS_MODES):
            listener.problem = ("UnsupportedValue", f"tls.mode {listener.tls_mode!r} is not supported "
                                                    f"(Passthrough and Terminate are)")
            continue
        listener.kinds, listener.invalid_kinds = _route_kinds(spec)
        listener.conflict = claims.conflict(port, protocol, hostname)      # a conflicted one is not served
        if listener.terminates_tls:
            listener.certificates, listener.cert_problem = _listener_certificates(
                world, listener.namespace, spec, "ListenerSet" if owner is not None else "Gateway")
            _plan_client_validation(world, gkey, gateway, listener)
    return out


def frontend_validation(gateway: dict, port: int) -> dict | None:
    """The Gateway's ``spec.tls.frontend`` validation for a port: its ``perPort`` entry's,
    else the default's (None: no client certificates)."""
    frontend = ((gateway.get("spec") or {}).get("tls") or {}).get("frontend") or {}
    for entry in frontend.get("perPort") or ():
        if entry.get("port") == port:
            return (entry.get("tls") or {}).get("validation")
    return (frontend.get("default") or {}).get("validation")


def _plan_client_validation(world: World, gkey: Key, gateway: dict, listener: _Listener) -> None:
    """An HTTPS listener's client certificate validation from its caCertificateRefs: the CAs of
    the valid ones; a bad one is ResolvedRefs=False, all bad is Accepted=False
    ``NoValidCACertificate`` (the listener is not served rather than served without it)."""
    validation = frontend_validation(gateway, listener.port)
    if not validation:
        return
    bundles, problems = resolve_ca_refs(
        world.ca_maps, gkey[0], validation.get("caCertificateRefs"), "InvalidCACertificateKind",
        permitted=lambda ns, name: _granted(world, gkey[0], ns, "", "ConfigMap", name, from_kind="Gateway"))
    listener.ca_problem = problems[0] if problems else None
    if not bundles:
        listener.problem = ("NoValidCACertificate", f"no caCertificateRef of port {listener.port}'s client "
                                                    f"validation is valid: {problems[0][1]}")
        return
    listener.client_validation = ClientValidation(
        "".join(ca for _, ca in bundles), insecure_fallback=validation.get("mode") == "AllowInsecureFallback",
        origin=", ".join(origin for origin, _ in bundles))


def _ca_maps_named(gateways: dict[Key, "_Gateway"]) -> frozenset[Key]:
    """The ConfigMaps our Gateways' client validations name (a change to another one is not
    translated)."""
    named = set()
    for (ns, _), gw in gateways.items():
        frontend = ((gw.obj.get("spec") or {}).get("tls") or {}).get("frontend") or {}
        configs = [frontend.get("default") or {}, *((e.get("tls") or {}) for e in frontend.get("perPort") or ())]
        for config in configs:
            for ref in (config.get("validation") or {}).get("caCertificateRefs") or ():
                named.add((ref.get("namespace") or ns, ref.get("name", "")))
    return frozenset(named)


def _plan_gateway(world: World, gkey: Key, gateway: dict, listener_sets: list[dict]) -> _Gateway:
    """``listener_sets``: those whose parentRef names this Gateway, oldest first."""
    spec = gateway.get("spec") or {}
    claims = _PortClaims()
    planned = _Gateway(gkey, gateway, _plan_listeners(world, gkey, gateway, claims))
    ref = ((spec.get("tls") or {}).get("backend") or {}).get("clientCertificateRef")
    if ref:
        planned.backend_certificate, planned.backend_certificate_problem = _backend_certificate(world, gkey, ref)
    params = (spec.get("infrastructure") or {}).get("parametersRef")
    bad_types = [a.get("type") for a in spec.get("addresses") or () if a.get("type", "IPAddress") != "IPAddress"]
    bad_values = [a.get("value") for a in spec.get("addresses") or ()
                  if a.get("type", "IPAddress") == "IPAddress" and a.get("value") and not _is_ip(a["value"])]
    if params:
        planned.problem = ("InvalidParameters", f"infrastructure.parametersRef {params.get('group')}/"
                                                f"{params.get('kind')} {params.get('name')!r}: this gateway "
                                                f"takes no parameters")
    elif bad_types:
        planned.problem = ("UnsupportedAddress", f"address type {bad_types[0]!r} is not supported (IPAddress is)")
    elif bad_values:
        planned.problem = ("UnsupportedAddress", f"{bad_values[0]!r} is not an IP address")
    elif not any(l.valid for l in planned.listeners):
        planned.problem = ("ListenersNotValid", "no listener is valid")
    for obj in listener_sets:
        planned.listener_sets.append(_plan_listener_set(world, planned, obj, claims))
    return planned


def _plan_listener_set(world: World, gw: _Gateway, obj: dict, claims: _PortClaims) -> _ListenerSet:
    """A ListenerSet naming ``gw``: its listeners join the Gateway's (its address, after the
    Gateway's own and older ListenerSets') if ``spec.allowedListeners`` admits it (default: none)."""
    planned = _ListenerSet(_key(obj), obj, gw.key)
    allowed = ((gw.obj.get("spec") or {}).get("allowedListeners") or {}).get("namespaces") or {}
    if gw.problem is not None:
        planned.problem = ("ParentNotAccepted", f"the Gateway is not accepted: {gw.problem[1]}")
    elif not _namespaces_admit(allowed, "None", gw.key[0], planned.key[0], world):
        planned.problem = ("NotAllowed", f"Gateway {gw.key[0]}/{gw.key[1]}'s allowedListeners do not admit "
                                         f"ListenerSets of namespace {planned.key[0]}")
    else:
        planned.listeners = _plan_listeners(world, gw.key, gw.obj, claims, owner=obj)
        gw.listeners += planned.listeners
        if not any(l.valid and not (l.terminates_tls and not l.certificates) for l in planned.listeners):
            planned.problem = ("ListenersNotValid", "no listener is valid")
    return planned


def _listener_sets_by_gateway(world: World, gateways: dict[Key, dict]) -> dict[Key, list[dict]]:
    """The ListenerSets whose parentRef is one of ``gateways``, per Gateway, oldest first."""
    out: dict[Key, list[dict]] = {}
    for key, obj in sorted(world.listener_sets.items(), key=lambda item: _route_order(item[1])):
        ref = (obj.get("spec") or {}).get("parentRef") or {}
        if ref.get("group", GATEWAY_GROUP) != GATEWAY_GROUP or ref.get("kind", "Gateway") != "Gateway":
            continue
        gkey = (ref.get("namespace") or key[0], ref.get("name", ""))
        if gkey in gateways:
            out.setdefault(gkey, []).append(obj)
    return out


def _backend_certificate(world: World, gkey: Key, ref: dict) -> tuple[Certificate | None, tuple[str, str] | None]:
    """The Gateway's client certificate for TLS backends (a kubernetes.io/tls Secret)."""
    ns, name = ref.get("namespace") or gkey[0], ref.get("name", "")
    if (ref.get("group") or "", ref.get("kind") or "Secret") != ("", "Secret"):
        return None, ("InvalidClientCertificateRef", f"clientCertificateRef {ref.get('group')}/{ref.get('kind')} "
                                                     f"{name!r}: only core Secrets are supported")
    if ns != gkey[0] and not _granted(world, gkey[0], ns, "", "Secret", name, from_kind="Gateway"):
        return None, ("RefNotPermitted", f"clientCertificateRef Secret {ns}/{name}: no ReferenceGrant in {ns} allows it")
    secret = world.secrets.get((ns, name))
    if secret is None or secret.problem:
        why = "not found" if secret is None else secret.problem
        return None, ("InvalidClientCertificateRef", f"clientCertificateRef Secret {ns}/{name}: {why}")
    return Certificate(secret.cert, secret.key, pem=True, origin=f"Secret {ns}/{name}"), None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _gateway_order(gateway: _Gateway) -> tuple:
    return gateway.obj["metadata"].get("creationTimestamp", ""), f"{gateway.key[0]}/{gateway.key[1]}"


def _assign_addresses(gateways: list[_Gateway], addressing: Addressing) -> None:
    """One address for each accepted Gateway: a ``spec.addresses`` value (it must be in the
    pool), else the address its status already shows (so a Gateway keeps its address when
    an older one goes, and across restarts), else the first pool address where all its
    listener ports are free; oldest Gateway first in each of the two rounds.  An
    unspecified address (0.0.0.0) overlaps every other on the same port."""
    used: set[tuple[str, int]] = set(addressing.taken)
    pool = addressing.pool
    by_advertised = {v: k for k, v in addressing.advertised.items()}

    def claim(gw: _Gateway, ports: set[int], candidates) -> bool:
        for address in candidates:
            if all(not any(p == port and (a == address or a in UNSPECIFIED or address in UNSPECIFIED)
                           for a, p in used) for port in ports):
                gw.address = address
                used.update((address, port) for port in ports)
                return True
        return False

    waiting = []
    for gw in sorted(gateways, key=_gateway_order):
        ports = {l.port for l in gw.listeners if l.valid}
        if gw.problem is not None or not ports:
            continue
        wanted = [a["value"] for a in (gw.obj.get("spec") or {}).get("addresses") or () if a.get("value")]
        if wanted:
            unusable = [v for v in wanted if v not in pool]
            if unusable:
                gw.address_problem = ("AddressNotUsable", f"{unusable[0]} is not one of gateway_api.addresses")
            elif not claim(gw, ports, wanted):
                gw.address_problem = ("AddressNotAssigned", f"ports {sorted(ports)} are taken on {', '.join(wanted)}")
            continue
        shown = [by_advertised.get(a.get("value"), a.get("value"))
                 for a in (gw.obj.get("status") or {}).get("addresses") or ()]
        if not claim(gw, ports, [a for a in shown if a in pool]):
            waiting.append((gw, ports))
    for gw, ports in waiting:
        if not claim(gw, ports, pool):
            gw.address_problem = ("AddressNotAssigned", f"no address of gateway_api.addresses has ports "
                                                        f"{sorted(ports)} free")


# -- routes on listeners -------------------------------------------------------------------


def _our_gateways(world: World) -> tuple[set[str], dict[Key, dict]]:
    classes = {name for name, gc in world.classes.items()
               if (gc.get("spec") or {}).get("controllerName") == world.controller_name}
    gateways = {key: gw for key, gw in world.gateways.items()
                if (gw.get("spec") or {}).get("gatewayClassName") in classes}
    return classes, gateways


def _route_order(route: dict) -> tuple:
    """The spec's tie-break: oldest first, then "namespace/name" alphabetically."""
    ns, name = _key(route)
    return route["metadata"].get("creationTimestamp", ""), f"{ns}/{name}"


def _attach(world: World, candidates: list[_Listener], route_ns: str, ref: dict, spec: dict,
            kind: str) -> tuple[bool, str, str, list[tuple[_Listener, list[str] | None]]]:
    """(accepted, reason, message, [(listener, its hostnames or None for any)]) for one
    parentRef of a ``kind`` route to our Gateway or ListenerSet (``candidates``: its own
    listeners): the listeners that sectionName and port select, that take the kind and allow
    the route, and whose hostname intersects the route's."""
    selected = [l for l in candidates if l.valid and l.kinds
                and ref.get("sectionName") in (None, l.name) and ref.get("port") in (None, l.port)]
    if not selected:
        return False, "NoMatchingParent", "no listener matches sectionName/port", []
    listeners = [l for l in selected if l.attachable(kind)]
    if not listeners:
        return False, "NotAllowedByListeners", f"the listeners' allowedRoutes.kinds do not take {kind}", []
    allowed = [l for l in listeners if _listener_allows(l.spec, l.namespace, route_ns, world)]
    if not allowed:
        return False, "NotAllowedByListeners", "the listeners' allowedRoutes do not allow this route", []
    served = []
    for listener in allowed:
        hosts = intersect_hostnames(listener.spec.get("hostname"), spec.get("hostnames") or [])
        if hosts != []:
            served.append((listener, hosts))
    if not served:
        return False, "NoMatchingListenerHostname", "no hostname intersects the listeners' hostnames", []
    return True, "Accepted", "accepted", served


def _is_served(gw: _Gateway, listener: _Listener, addressing: Addressing) -> str | None:
    """Why the listener has no socket, or None when it is served."""
    if gw.problem is not None:
        return f"the Gateway is not accepted: {gw.problem[1]}"
    if not listener.valid:
        return (listener.problem or listener.conflict)[1]
    if gw.address is None:
        return gw.address_problem[1] if gw.address_problem else "no address"
    why = addressing.unbindable.get((gw.address, listener.port))
    if why:
        return f"cannot listen on {gw.address}:{listener.port}: {why}"
    if listener.terminates_tls and not listener.certificates:
        return listener.cert_problem[1] if listener.cert_problem else "no certificateRefs"
    return None


def translate(world: World, file_services: dict[str, ServiceConfig] | None = None,
              addressing: Addressing = Addressing(), memo: RouteMemo | None = None,
              policy_memo: PolicyMemo | None = None) -> Translation:
    file_services = file_services or {}
    classes, ours = _our_gateways(world)
    sets = _listener_sets_by_gateway(world, ours) if world.listener_sets else {}
    gateways = {key: _plan_gateway(world, key, obj, sets.get(key, [])) for key, obj in ours.items()}
    _assign_addresses(list(gateways.values()), addressing)
    for gw in gateways.values():
        for listener in gw.listeners:
            listener.not_served = _is_served(gw, listener, addressing)
    by_id = {l.id: l for gw in gateways.values() for l in gw.listeners}
    # What a route's translation reads besides the route: the other objects and the listeners.
    context = (world.version, tuple((l.id, l.not_served, l.attachable()) for l in by_id.values()))
    memo = memo if memo is not None else RouteMemo()
    edges = PolicyIndex((policy_memo if policy_memo is not None else PolicyMemo()).policies(world))
    changed = memo.update(world, gateways, context, edges)
    for listener_id, count in memo.attached.items():
        by_id[listener_id].attached = count
    # GRPCRoutes: few beside HTTPRoutes, translated whole each time (a change bumps the version).
    grpc = {key: result for key, route in world.grpc_routes.items()
            if (result := _translate_route(world, route, gateways, edges, "GRPCRoute")).parents is not None}
    service_ports = dict(memo.service_ports)
    for result in sorted(grpc.values(), key=lambda r: r.configs[0].rank if r.configs else ()):
        for listener_id in result.attached:
            by_id[listener_id].attached += 1
        for service, port in result.service_ports:
            service_ports.setdefault(service, port)
    tls = {key: result for key, route in world.tls_routes.items()
           if (result := _translate_tls_route(world, route, gateways)).parents is not None}
    for key in sorted(tls, key=lambda key: _route_order(world.tls_routes[key])):
        for listener_id in tls[key].attached:
            by_id[listener_id].attached += 1
        for service, port in tls[key].service_ports:
            service_ports.setdefault(service, port)
    tls_routes = tuple(sorted((c for result in tls.values() for c in result.configs), key=lambda c: c.rank))
    conflicts = _KindConflicts(world, by_id, memo, grpc) if grpc else None
    route_status = dict(memo.route_status)
    grpc_status = {key: result.parents for key, result in grpc.items()}
    if conflicts:
        conflicts.apply(route_status, grpc_status, gen_of=lambda kind, key: _generation(
            (world.routes if kind == "HTTPRoute" else world.grpc_routes)[key]))
        if changed is not None:
            changed |= {key for kind, key, _ in conflicts.losers if kind == "HTTPRoute"}
    backend_tls = BackendTls(world)
    gateway_status = {key: _gateway_status(gateways[key], addressing) for key in sorted(gateways)}
    listener_set_status = {ls.key: _listener_set_status(ls, gateways[ls.gateway]) for gw in gateways.values()
                           for ls in gw.listener_sets}
    listeners = tuple(GatewayListener(l.id, gw.address, l.port, l.terminates_tls,
                                      (l.spec.get("hostname") or "").lower() or None, tuple(l.certificates),
                                      l.client_validation, l.tls_mode)
                      for gw in sorted(gateways.values(), key=_gateway_order) for l in gw.listeners
                      if l.not_served is None)
    routes = memo.routes() + [rc for result in grpc.values() for rc in result.configs]
    if conflicts:
        routes = [rc for rc in routes if id(rc) not in conflicts.dropped]
    reached = _gateways_reaching([*routes, *tls_routes]) if world.backend_tls_policies else {}
    # Services only GRPCRoutes send to: HTTP/2 (one shared with an HTTPRoute keeps its appProtocol).
    grpc_only = ({b.service for result in grpc.values() for rc in result.configs for b in rc.backends}
                 - set(memo.service_ports))
    services = [_service(key, port, file_services, backend_tls, _client_certificate(key, reached, gateways),
                         key in grpc_only)
                for key, port in service_ports.items()]
    policy_status = edges.status(world, gateways, memo.route_status, world.controller_name)
    if world.backend_tls_policies:
        policy_status.update(backend_tls.status(reached, world.controller_name))
    return Translation(routes, services, _class_status(world, classes), gateway_status,
                       route_status, listeners, changed, policy_status, grpc_status,
                       _ca_maps_named(gateways) | backend_tls.ca_maps_named(), tls_routes,
                       {key: result.parents for key, result in tls.items()}, listener_set_status)


def _client_certificate(key: str, reached: dict[str, set[Key]], gateways: dict[Key, _Gateway]) -> Certificate | None:
    """The backend client certificate of the oldest Gateway with one whose routes reach the
    service (the data plane keeps one TLS setting per service: Gateways that reach the same
    Service with different certificates get the oldest's)."""
    reaching = sorted((gateways[g] for g in reached.get(key.partition(":")[0], ()) if g in gateways),
                      key=_gateway_order)
    return next((gw.backend_certificate for gw in reaching if gw.backend_certificate is not None), None)


def _service(key: str, port: int, file_services: dict[str, ServiceConfig], backend_tls: BackendTls,
             client_certificate: Certificate | None = None, grpc: bool = False) -> ServiceConfig:
    """A backendRef's service (``service_key``): the file's settings where it declares the
    Service (another port of it: the same, on that port), with the BackendTLSPolicy's TLS (and
    the reaching Gateway's client certificate) unless the file sets ``tls`` itself. ``grpc``: only
    GRPCRoutes send to it, so it is spoken to in HTTP/2 (h2 with TLS, else h2c) whatever the
    Service port's appProtocol, unless the file sets ``protocol``."""
    base, _, other_port = key.partition(":")
    ns, name = base.split("/", 1)
    declared = file_services.get(base)
    if other_port:
        service = (replace(declared, port=port, port_in_key=True) if declared
                   else ServiceConfig(namespace=ns, name=name, port=port, port_in_key=True))
    else:
        service = declared or ServiceConfig(namespace=ns, name=name, port=port)
    tls = backend_tls.tls_for(ns, name, port)
    if tls is not None and service.tls is None:
        service = replace(service, tls=replace(tls, client_certificate=client_certificate) if client_certificate else tls)
    if grpc and service.protocol == "auto":
        service = replace(service, protocol="h2" if service.tls is not None else "h2c")
    return service


def _gateways_reaching(routes: list[RouteConfig | TlsRouteConfig]) -> dict[str, set[Key]]:
    """"namespace/name" of a Service -> the Gateways whose routes send it requests (or mirror
    them to it), or TLS connections, on any of its ports."""
    reached: dict[str, set[Key]] = {}
    for rc in routes:
        ns, gateway, _ = rc.listener.split("/", 2)
        for service in [b.service for b in rc.backends] + [m.service for m in getattr(rc, "mirrors", ())]:
            reached.setdefault(service.partition(":")[0], set()).add((ns, gateway))
    return reached


@dataclass(frozen=True)
class _RouteResult:
    """One route translated: None parents when it names no Gateway of ours."""
    parents: list[dict] | None
    configs: tuple = ()         # RouteConfigs or TlsRouteConfigs served (none while a rule is unsupported)
    service_ports: tuple[tuple[str, int], ...] = ()
    attached: tuple[str, ...] = ()                      # a listener id per attachment


class _Parents(NamedTuple):
    """A route's parentRefs to our Gateways: their status entries (Accepted so far), the
    served listeners it attached to with its hostnames there, a listener id per attachment."""
    entries: list[dict]
    targets: list[tuple[_Listener, list[str] | None]]
    attached: list[str]


def _parents(world: World, route: dict, gateways: dict[Key, _Gateway], kind: str) -> _Parents:
    ns, _ = _key(route)
    spec = route.get("spec") or {}
    gen = _generation(route)
    parents, targets, attached = [], [], []
    for ref in spec.get("parentRefs") or ():
        parent_kind = ref.get("kind", "Gateway")
        if ref.get("group", GATEWAY_GROUP) != GATEWAY_GROUP or parent_kind not in ("Gateway", "ListenerSet"):
            continue
        key = (ref.get("namespace") or ns, ref["name"])
        if parent_kind == "Gateway":
            gw = gateways.get(key)
            candidates = gw.own_listeners if gw is not None else None
            unaccepted = None
        else:
            listener_set = _listener_set(gateways, key)
            candidates = listener_set.listeners if listener_set is not None else None
            unaccepted = listener_set.problem if listener_set is not None else None
        if candidates is None:
            continue        # not a parent of ours: its controller writes this parent's status
        if unaccepted is not None:
            accepted, reason, message, served = False, "NoMatchingParent", f"the ListenerSet is not accepted: " \
                                                                           f"{unaccepted[1]}", []
        else:
            accepted, reason, message, served = _attach(world, candidates, ns, ref, spec, kind)
        attached += [l.id for l, _ in served]
        targets += [(l, hosts) for l, hosts in served
                    if l.not_served is None and all(l is not t for t, _ in targets)]
        parents.append({"parentRef": _parent_ref(ref, key, parent_kind), "controllerName": world.controller_name,
                        "conditions": [condition("Accepted", accepted, reason, message, gen)]})
    return _Parents(parents, targets, attached)


def _listener_set(gateways: dict[Key, _Gateway], key: Key) -> _ListenerSet | None:
    """Our ListenerSet ``key`` (one whose parentRef is one of our Gateways), or None."""
    return next((ls for gw in gateways.values() for ls in gw.listener_sets if ls.key == key), None)


def _resolved_refs(problems: list[tuple[str, str]], gen: int) -> dict:
    return condition("ResolvedRefs", not problems, problems[0][0] if problems else "ResolvedRefs",
                     problems[0][1] if problems else "all references resolved", gen)


def _translate_route(world: World, route: dict, gateways: dict[Key, _Gateway], edges: PolicyIndex,
                     kind: str = "HTTPRoute") -> _RouteResult:
    ns, route_name = _key(route)
    spec = route.get("spec") or {}
    rules = spec.get("rules") or [{}]
    if kind == "GRPCRoute":
        rules = [_grpc_rule(rule) for rule in rules]
    gen = _generation(route)
    parents, targets, attached = _parents(world, route, gateways, kind)
    if not parents:
        return _RouteResult(None)
    problems, unsupported, configs = [], None, []
    service_ports: dict[str, int] = {}
    order = (1, *_route_order(route))
    if kind == "GRPCRoute":         # the same shape as an HTTPRoute's, never equal to one
        order = (*order[:2], order[2] + "#grpc")
    for i, rule in enumerate(rules):
        result = translate_rule(world, route, i, rule, (), kind)
        problems += result.problems
        unsupported = unsupported or result.unsupported
        for key, port in result.services.items():
            service_ports.setdefault(key, port)
        for t, (listener, hosts) in enumerate(targets):
            edge = edges.edge(listener.gateway, listener.name, (ns, route_name), rule.get("name")).fields()
            configs += [replace(c, listener=listener.id, rank=(*order, i, t, j), **edge) for j, c in
                        enumerate(translate_rule(world, route, i, rule, tuple(sorted(hosts or ())), kind).configs)]
    resolved = _resolved_refs(problems, gen)
    for parent in parents:
        accepted = parent["conditions"][0]
        if unsupported and accepted["status"] == "True":
            parent["conditions"][0] = condition("Accepted", False, "UnsupportedValue", unsupported, gen)
        parent["conditions"].append(resolved)
    return _RouteResult(parents, () if unsupported else tuple(configs), tuple(service_ports.items()),
                        tuple(attached))


def _translate_tls_route(world: World, route: dict, gateways: dict[Key, _Gateway]) -> _RouteResult:
    """A TLSRoute: on each TLS listener it attaches to, its hostnames there and the union of
    its rules' backendRefs (a TLSRoute matches nothing but the SNI)."""
    ns, name = _key(route)
    gen = _generation(route)
    parents, targets, attached = _parents(world, route, gateways, "TLSRoute")
    if not parents:
        return _RouteResult(None)
    backends, problems, invalid_weight, services = [], [], 0, {}
    for rule in (route.get("spec") or {}).get("rules") or ():
        for ref_spec in rule.get("backendRefs") or ():
            ref = resolve_backend(world, ns, ref_spec, "TLSRoute")
            if ref.problem:
                problems.append(ref.problem)
                invalid_weight += max(ref.weight, 0)
            elif ref.weight > 0:
                backends.append(WeightedBackend(ref.key, ref.weight))
                services.setdefault(ref.key, ref.port)
    resolved = _resolved_refs(problems, gen)
    for parent in parents:
        parent["conditions"].append(resolved)
    configs = tuple(TlsRouteConfig(f"{ns}/{name}", listener.id, tuple(sorted(hosts or ())), tuple(backends),
                                   invalid_weight, _route_order(route))
                    for listener, hosts in targets)
    return _RouteResult(parents, configs, tuple(services.items()), tuple(attached))


class _KindConflicts:
    """An HTTPRoute and a GRPCRoute on one listener whose hostnames intersect: the spec accepts
    exactly one, the older (then the first by "namespace/name"); the other loses that listener
    (its configs there are dropped, its parent for that Gateway is not accepted)."""

    def __init__(self, world: World, by_id: dict, memo: RouteMemo, grpc: dict) -> None:
        self.losers: dict[tuple[str, Key, str], str] = {}   # (kind, key, listener id) -> why
        self.dropped: set[int] = set()                      # ids of the configs no longer served
        self.by_id = by_id
        grpc_on: dict[str, list] = {}
        for key, result in grpc.items():
            for listener_id in set(result.attached):
                grpc_on.setdefault(listener_id, []).append(("GRPCRoute", key, world.grpc_routes[key], result))
        if not grpc_on:
            return
        for key, (route, result, _) in memo.entries.items():
            if result.parents is None:
                continue
            for listener_id in set(result.attached) & grpc_on.keys():
                for other in grpc_on[listener_id]:
                    self._settle(listener_id, ("HTTPRoute", key, route, result), other)

    def __bool__(self) -> bool:
        return bool(self.losers)

    def _settle(self, listener_id: str, a: tuple, b: tuple) -> None:
        hostname = self.by_id[listener_id].spec.get("hostname")
        hosts = [intersect_hostnames(hostname, (route.get("spec") or {}).get("hostnames") or [])
                 for _, _, route, _ in (a, b)]
        if not _hosts_overlap(*hosts):
            return
        winner, loser = sorted((a, b), key=lambda r: _route_order(r[2]))
        kind, key, _, result = loser
        if (kind, key, listener_id) in self.losers:
            return
        self.losers[(kind, key, listener_id)] = (f"{winner[0]} {winner[1][0]}/{winner[1][1]}, older, serves "
                                                 f"hostnames of this route on listener {self.by_id[listener_id].name}")
        self.dropped |= {id(rc) for rc in result.configs if rc.listener == listener_id}
        self.by_id[listener_id].attached -= 1

    def apply(self, route_status: dict, grpc_status: dict, gen_of) -> None:
        """The losers' parent entries for the listeners' Gateways: Accepted=False."""
        for (kind, key, listener_id), why in self.losers.items():
            statuses = route_status if kind == "HTTPRoute" else grpc_status
            listener = self.by_id[listener_id]
            # the parentRef that attached the route there: the listener's Gateway or ListenerSet
            attached_by = ("ListenerSet", *listener.owner) if listener.owner else ("Gateway", *listener.gateway)
            parents = []
            for parent in statuses[key]:
                ref = parent["parentRef"]
                if (ref["kind"], ref["namespace"], ref["name"]) == attached_by and \
                        ref.get("sectionName") in (None, listener.name):
                    conditions = [condition("Accepted", False, "HostnameConflict", why, gen_of(kind, key))
                                  if c["type"] == "Accepted" else c
                                  for c in parent["conditions"]]
                    parent = {**parent, "conditions": conditions}
                parents.append(parent)
            statuses[key] = parents


def _hosts_overlap(a: list[str] | None, b: list[str] | None) -> bool:
    """Two routes' hostnames on one listener (None: any) have a host in common."""
    if a is None or b is None:
        return True
    return any(x == y or _covers(x, y) or _covers(y, x) for x in a for y in b)


def _grpc_rule(rule: dict) -> dict:
    """A GRPCRoute rule as the HTTPRoute rule it routes like: a method match is a match on the
    request path ``/<service>/<method>``; headers match alike."""
    return {**rule, "matches": [_grpc_match(m) for m in rule.get("matches") or [{}]]}


def _grpc_match(m: dict) -> dict:
    method = m.get("method") or {}
    service, name = method.get("service"), method.get("method")
    if method.get("type", "Exact") == "RegularExpression":
        path = {"type": "RegularExpression", "value": f"/{service or '[^/]+'}/{name or '[^/]+'}"}
    elif service and name:
        path = {"type": "Exact", "value": f"/{service}/{name}"}
    elif service:
        path = {"type": "PathPrefix", "value": f"/{service}"}
    elif name:
        path = {"type": "RegularExpression", "value": f"/[^/]+/{re.escape(name)}"}
    else:
        path = {"type": "PathPrefix", "value": "/"}
    return {"path": path, "headers": m.get("headers") or []}


def _service_ports(result: _RouteResult | None) -> tuple[tuple[str, int], ...]:
    return result.service_ports if result is not None and result.parents is not None else ()


def _parent_ref(ref: dict, key: Key, kind: str = "Gateway") -> dict:
    out = {"group": GATEWAY_GROUP, "kind": kind, "namespace": key[0], "name": key[1]}
    for optional in ("sectionName", "port"):
        if ref.get(optional) is not None:
            out[optional] = ref[optional]
    return out


# -- status --------------------------------------------------------------------------------


def _class_status(world: World, classes: set[str]) -> dict[str, dict]:
    return {name: {"conditions": [condition("Accepted", True, "Accepted", "handled by this gateway",
                                            _generation(world.classes[name]))]}
            for name in classes}


def _listener_certificates(world: World, own_ns: str, listener: dict,
                           from_kind: str = "Gateway") -> tuple[list[Certificate], tuple[str, str] | None]:
    """An HTTPS listener's certificateRefs (relative to ``own_ns``, that of the Gateway or
    ListenerSet, ``from_kind``, declaring it): the certificates that serve (SNI: the listener's
    hostname, else the certificate's names) and the first problem as (reason, message)."""
    certs, problem = [], None
    hostname = (listener.get("hostname") or "").lower()
    for ref in ((listener.get("tls") or {}).get("certificateRefs") or ()):
        ns, name = ref.get("namespace") or own_ns, ref.get("name", "")
        if (ref.get("group") or "", ref.get("kind") or "Secret") != ("", "Secret"):
            found = None, ("InvalidCertificateRef", f"certificateRef {ref.get('group')}/{ref.get('kind')} "
                                                    f"{name!r}: only core Secrets are supported")
        elif ns != own_ns and not _granted(world, own_ns, ns, "", "Secret", name, from_kind=from_kind):
            found = None, ("RefNotPermitted", f"certificateRef Secret {ns}/{name}: no ReferenceGrant in "
                                              f"{ns} allows it")
        elif (secret := world.secrets.get((ns, name))) is None:
            found = None, ("InvalidCertificateRef", f"Secret {ns}/{name} not found")
        elif secret.problem:
            found = None, ("InvalidCertificateRef", f"Secret {ns}/{name}: {secret.problem}")
        else:
            found = Certificate(secret.cert, secret.key, pem=True, names=(hostname,) if hostname else (),
                                origin=f"Secret {ns}/{name}"), None
        if found[0] is not None:
            certs.append(found[0])
        problem = problem or found[1]
    return certs, problem


def _listener_status(listener: _Listener, gen: int) -> dict:
    accepted = listener.problem or (("Accepted", "") if listener.conflict is None else listener.conflict)
    resolved = (("InvalidRouteKinds", listener.invalid_kinds) if listener.invalid_kinds
                else listener.cert_problem or listener.ca_problem or ("ResolvedRefs", ""))
    conflicted = listener.conflict or ("NoConflicts", "")
    programmed = listener.not_served is None
    return {"name": listener.name, "attachedRoutes": listener.attached, "supportedKinds": listener.kinds,
            "conditions": [
                condition("Accepted", accepted[0] == "Accepted", *accepted, gen),
                condition("ResolvedRefs", resolved[0] == "ResolvedRefs", *resolved, gen),
                condition("Conflicted", listener.conflict is not None, *conflicted, gen),
                condition("Programmed", programmed, "Programmed" if programmed else
                          listener.conflict[0] if listener.conflict else "Invalid", listener.not_served or "", gen)]}


def _gateway_status(gw: _Gateway, addressing: Addressing) -> dict:
    gen = _generation(gw.obj)
    own = gw.own_listeners
    valid = [l for l in own if l.valid]
    if gw.problem is not None:
        accepted = (False, *gw.problem)
    elif len(valid) < len(own):
        accepted = (True, "ListenersNotValid", "some listeners are not valid")
    else:
        accepted = (True, "Accepted", "")
    serving = any(l.not_served is None for l in gw.listeners)
    if not accepted[0]:
        programmed = (False, "Invalid", "the Gateway is not accepted")
    elif gw.address is None:
        programmed = (False, *(gw.address_problem or ("AddressNotAssigned", "no address")))
    elif not serving:
        programmed = (False, "Invalid", "no listener can be served")
    else:
        programmed = (True, "Programmed", "")
    conditions = [condition("Accepted", *accepted, gen), condition("Programmed", *programmed, gen)]
    if gw.backend_certificate is not None or gw.backend_certificate_problem is not None:
        resolved = gw.backend_certificate_problem or ("ResolvedRefs", "the backend client certificate is loaded")
        conditions.append(condition("ResolvedRefs", gw.backend_certificate_problem is None, *resolved, gen))
    insecure = [str(l.port) for l in gw.listeners if l.client_validation and l.client_validation.insecure_fallback]
    if insecure:        # removed again once every port is back to AllowValidOnly
        conditions.append(condition("InsecureFrontendValidationMode", True, "ConfigurationChanged",
                                    f"client certificates are asked for, not required, on port(s) "
                                    f"{', '.join(sorted(set(insecure)))} (AllowInsecureFallback)", gen))
    status = {"conditions": conditions,
              "listeners": [_listener_status(l, gen) for l in own]}
    shown = addressing.advertised.get(gw.address, gw.address) if gw.address is not None else None
    if shown and shown not in UNSPECIFIED:
        status["addresses"] = [{"type": "IPAddress", "value": shown}]
    if (gw.obj.get("spec") or {}).get("allowedListeners"):     # a Gateway that takes ListenerSets
        status["attachedListenerSets"] = sum(ls.problem is None for ls in gw.listener_sets)
    return status


def _listener_set_status(ls: _ListenerSet, gw: _Gateway) -> dict:
    """A ListenerSet's status: Accepted and Programmed (the same reason when not accepted), and
    its listeners' as a Gateway's listeners' status."""
    gen = _generation(ls.obj)
    if ls.problem is not None:
        accepted = programmed = (False, *ls.problem)
    else:
        accepted = (True, "Accepted", f"attached to Gateway {gw.key[0]}/{gw.key[1]}")
        served = any(l.not_served is None for l in ls.listeners)
        programmed = (True, "Programmed", "") if served else (False, "Invalid", "no listener can be served")
    return {"conditions": [condition("Accepted", *accepted, gen), condition("Programmed", *programmed, gen)],
            "listeners": [_listener_status(l, gen) for l in ls.listeners]}
