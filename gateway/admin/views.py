"""What the console shows of a running gateway, as JSON-able dicts.

This is the only module that reads the gateway's internals (its config, registry and
sources, health manager, and the counters the workers report, ``gateway.stats``).  The
admin HTTP handlers, the Prometheus text, the dashboard and the CLI (through the HTTP
API) see the gateway only through these functions, and see the same numbers whether
one process or N workers serve.

Nothing here mutates the gateway, and nothing here is on the request path.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Any, NamedTuple

from gateway import __version__
from gateway.config import Address, Config, RouteConfig, ServiceConfig
from gateway.health import domains
from gateway.sources.base import ServiceKey, SourceState
from gateway.stats import DENIAL_NAMES

# --- helpers -----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A config object as JSON-able data: dataclasses as dicts, addresses as "host:port"."""
    if isinstance(value, Address):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _source_states(gw) -> dict[str, str]:
    registry = gw.registry
    return {} if registry is None else {s.name: s.state.value for s in registry.sources}


def _host(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _upstreams_by_address(gw) -> dict[tuple[str, str], dict]:
    """(cluster, "ip:port") -> the endpoint's counters, added up over every worker."""
    return {(c, _host(ip, port)): counts
            for (c, ip, port), counts in gw.refresh_stats().upstreams().items()}


def _round(x: float) -> float:
    return round(x, 4)


# --- status and readiness ----------------------------------------------------------------


def config_version(gw) -> str:
    """A short hash of the running config: changes whenever the config does (the ETag)."""
    return hashlib.sha256(repr(gw.config).encode()).hexdigest()[:16]


def config_path(gw) -> str | None:
    return gw.config.path


def readiness(gw) -> tuple[bool, dict]:
    """Ready: listening for clients, not draining, and every source has had a first view.

    A source that failed for good ("error") does not hold readiness back: waiting would not
    help, and the other sources may serve; it shows in ``sources`` instead.
    """
    if gw.supervisor is not None:
        listening = all(w["ready"] for w in gw.worker_status())
    else:
        listening = gw.server is not None and bool(gw.server.sockets)
    draining = bool(gw.supervisor.stopping) if gw.supervisor is not None else (
        gw.ctx is not None and bool(gw.ctx.draining))
    starting = [s.name for s in (gw.registry.sources if gw.registry else ())
                if s.state == SourceState.STARTING]
    ready = listening and not draining and not starting
    return ready, {"ready": ready, "listening": listening, "draining": draining,
                   "sources_not_synced": starting}


def status(gw) -> dict:
    cfg: Config = gw.config
    health, registry = gw.health, gw.registry
    stats = gw.refresh_stats()
    ready, _ = readiness(gw)
    return {
        "version": __version__,
        "pid": os.getpid(),
        "started": gw.started,
        "uptime_s": round(time.time() - gw.started, 3),
        "ready": ready,
        "listen": str(cfg.listen),
        "port": gw.port if gw.server is not None or gw.supervisor is not None else None,
        "tls_listen": str(cfg.tls.listen) if cfg.tls is not None else None,     # the file's HTTPS listener
        "admin": str(cfg.admin) if cfg.admin is not None else None,
        "config": {"path": cfg.path, "version": config_version(gw),
                   "sources": len(cfg.sources), "services": len(cfg.services),
                   "routes": len(cfg.routes)},
        "snapshot": {"version": gw.view_version,
                     "registry_version": registry.version if registry is not None else 0,
                     "health_version": health.version if health is not None else 0},
        # One entry per process serving requests, with the snapshot version it runs.
        "workers": gw.worker_status(),
        "worker_restarts": gw.supervisor.restarts if gw.supervisor is not None else 0,
        "connections": stats.connections(),
        "requests_in_flight": stats.in_flight(),
        "stats": stats.counters(),
        # Routes from Kubernetes, and which replica writes their status (leader election).
        "gateway_api": gw.gatewayapi.status() if gw.gatewayapi is not None else None,
        # Global rate limits' Redis, as the workers see it (None: no redis section).
        "ratelimit_store": stats.ratelimit_store(),
    }


# --- sources -------------------------------------------------------------------------------


def sources(gw) -> list[dict]:
    configs = {s.name: s for s in gw.config.sources}
    services = gw.config.services
    now = time.time()
    out = []
    for source in (gw.registry.sources if gw.registry else ()):
        info = source.status()
        cfg = configs.get(source.name)
        has = endpoints = 0
        for svc in services:
            if svc.sources and source.name not in svc.sources:
                continue
            eps = source.endpoints(ServiceKey(svc.namespace, svc.name), svc.port)
            if eps is not None:
                has += 1
                endpoints += sum(1 for e in eps if e.ready)
        last = info.get("last_event")
        out.append({
            "name": source.name,
            "type": source.kind,
            "weight": source.weight,
            "state": source.state.value,
            "error": source.error,
            "last_event": last,
            "last_event_age_s": round(now - last, 3) if last else None,
            "events": info.get("events"),
            "api": info.get("api"),
            # Paths only: a kubeconfig's credentials are never read into the answer.
            "kubeconfig": cfg.kubeconfig if cfg else None,
            "context": cfg.context if cfg else None,
            "in_cluster": cfg.in_cluster if cfg else False,
            "namespaces": list(cfg.namespaces) if cfg else [],
            "services_known": info.get("services"),
            "services": has,            # configured services this source has
            "endpoints": endpoints,     # their ready endpoints here
            "health_domain": source_domain(gw, source.name),
            # Operator drain (gateway source drain / POST /sources/{name}/drain): set in the config.
            "drained": bool(cfg.drained) if cfg else False,
        })
    return out


# --- the cluster as a health domain ------------------------------------------------------


def cluster_states(gw, svc_key: str) -> dict[str, dict]:
    """{cluster: {state, endpoints, healthy}} for one service (gateway/health/domains.py); a
    cluster whose source lost its API server shows control-plane-lost while it still serves."""
    if gw.health is None:
        return {}
    sources = _source_states(gw)
    out = {}
    for name, info in gw.health.domains.get(svc_key, {}).items():
        row = dict(info)
        if sources.get(name) == SourceState.STALE.value and row["state"] != domains.DRAINED:
            row["state"] = domains.CONTROL_PLANE_LOST
        out[name] = row
    return out


def source_domain(gw, source: str) -> dict:
    """A source's health-domain state over its services: the worst of them, and each one."""
    per = {}
    for svc in gw.config.services:
        row = cluster_states(gw, svc.key).get(source)
        if row is not None:
            per[svc.key] = row["state"]
    order = (domains.DRAINED, domains.DRAINING, domains.CONTROL_PLANE_LOST, domains.DEGRADED, domains.HEALTHY)
    worst = next((state for state in order if state in per.values()), None)
    return {"state": worst, "services": per}


# --- services and endpoints --------------------------------------------------------------


def _endpoint_reason(ep: dict, source_state: str | None) -> str | None:
    """Why an endpoint gets no new requests (None when it gets some)."""
    if ep["serving"]:
        return None
    why = []
    for cause in ep["causes"]:
        if cause == "ejected":
            left = ep.get("ejected_for_s")
            why.append(f"ejected by outlier detection (ejection #{ep.get('ejections')}"
                       + (f", {left:.1f}s left" if left else "") + ")")
        elif cause == "active_check_failed":
            err = ep.get("last_error")
            why.append("failing active health checks" + (f" ({err})" if err else ""))
        else:
            why.append(cause)
    if source_state == SourceState.STALE.value:
        why.append("its source is stale (API unreachable; last known endpoints kept)")
    return "; ".join(why) or "not serving"


def _service_endpoints(gw, svc: ServiceConfig) -> list[dict]:
    health = gw.health
    states = _source_states(gw)
    upstreams = _upstreams_by_address(gw)
    described = health.describe(svc.key) if health is not None else []
    # An endpoint's share: its level's load, split by weight over the level's serving endpoints.
    loads = {lv.priority: lv.load for lv in health.levels.get(svc.key, ())} if health else {}
    serving_weight: dict[int, int] = {}
    for ep in described:
        if ep["serving"]:
            level = svc.priority_of(ep["cluster"])
            serving_weight[level] = serving_weight.get(level, 0) + ep["effective_weight"]
    out = []
    for ep in described:
        level = svc.priority_of(ep["cluster"])
        level_weight = serving_weight.get(level, 0)
        up = upstreams.get((ep["cluster"], ep["address"]))
        traffic = up["traffic"] if up is not None else None
        source_state = states.get(ep["cluster"])
        row = {
            "address": ep["address"],
            "cluster": ep["cluster"],
            "weight": ep["weight"],
            "healthy": ep["healthy"],
            "causes": ep["causes"],
            "serving": ep["serving"],
            "priority": level,
            # The table's weight: the weight, ramped in slow start (x RAMP_SCALE then).
            "effective_weight": ep["effective_weight"],
            "share": (_round(loads.get(level, 1.0) * ep["effective_weight"] / level_weight)
                      if ep["serving"] and level_weight else 0.0),
            "ejected_for_s": ep.get("ejected_for_s"),
            "ejections": ep.get("ejections", 0),
            "last_error": ep.get("last_error"),
            **({"slow_start": ep["slow_start"]} if "slow_start" in ep else {}),
            "source_state": source_state,
            "requests": up["requests"] if up is not None else 0,
            "errors": up["failures"] if up is not None else 0,
            "responses": traffic["responses"] if traffic else {},
            "in_flight": up["in_flight"] if up is not None else 0,
            "idle_connections": up["idle"] if up is not None else 0,
        }
        row["reason"] = _endpoint_reason(row, source_state)
        if not row["serving"] and not row["causes"] and health is not None \
                and ep["cluster"] in health.drained.get(svc.key, ()):
            row["reason"] = "its cluster is drained for this service (under 25% of it healthy)"
        if row["serving"] and row["causes"]:
            row["reason"] = "panic routing: serving although " + ", ".join(row["causes"])
        out.append(row)
    return out


def _cluster_summary(gw, svc: ServiceConfig, endpoints: list[dict]) -> list[dict]:
    """Per source that may have the service: its endpoints, share, and why it has none."""
    states = _source_states(gw)
    key = ServiceKey(svc.namespace, svc.name)
    out = []
    for source in (gw.registry.sources if gw.registry else ()):
        if svc.sources and source.name not in svc.sources:
            continue
        mine = [e for e in endpoints if e["cluster"] == source.name]
        share = _round(sum(e["share"] for e in mine))
        reason = None
        if not mine:
            listed = source.endpoints(key, svc.port)
            if listed is None:
                reason = f"{svc.key} not found in this source"
            elif not any(e.ready for e in listed):
                reason = f"no ready endpoints for {svc.key} ({len(listed)} listed, none ready)"
            else:
                reason = "its addresses are already served through an earlier source"
            if states.get(source.name) not in (None, SourceState.SYNCED.value):
                reason += f"; source {states[source.name]}"
        elif share == 0:
            reason = "no endpoint serving: " + "; ".join(sorted({e["reason"] for e in mine if e["reason"]}))
        out.append({"cluster": source.name, "priority": svc.priority_of(source.name),
                    "source_state": states.get(source.name),
                    "endpoints": len(mine), "serving": sum(1 for e in mine if e["serving"]),
                    "share": share, "reason": reason})
    return out


def _service(gw, svc: ServiceConfig) -> dict:
    endpoints = _service_endpoints(gw, svc)
    check = svc.health_check
    return {
        "key": svc.key,
        "namespace": svc.namespace,
        "name": svc.name,
        "port": svc.port,
        "protocol": svc.protocol,
        "protocols_spoken": _protocols_spoken(gw, svc),
        "sources": list(svc.sources) or [s.name for s in gw.config.sources],
        "panic": bool(gw.health.panic.get(svc.key, False)) if gw.health is not None else False,
        "panic_threshold": svc.panic_threshold,
        "health_check": ({"type": check.type, "path": check.path, "interval_s": check.interval}
                         if check is not None else None),
        "outlier_detection": svc.outlier_detection is not None,
        "endpoints": endpoints,
        "serving": sum(1 for e in endpoints if e["serving"]),
        "clusters": _cluster_summary(gw, svc, endpoints),
        "overprovisioning_factor": svc.overprovisioning_factor,
        "circuit_breakers": _plain(svc.circuit_breakers),
        "capacity": _plain(svc.capacity),
        "slow_start": _plain(svc.slow_start) if svc.slow_start is not None else None,
        # Priority levels, best first: each one's healthy capacity, share of requests and why.
        "levels": [lv.describe() for lv in gw.health.levels.get(svc.key, ())] if gw.health else [],
        # Each cluster as a health domain: healthy, degraded, drained, control-plane-lost.
        "cluster_states": cluster_states(gw, svc.key),
        **({"port_conflict": conflict} if (conflict := port_conflict(gw, svc)) else {}),
    }


def _protocols_spoken(gw, svc: ServiceConfig) -> list[str]:
    """What its endpoints are spoken to with: the setting, or with auto each one's appProtocol."""
    if svc.protocol != "auto":
        return [svc.protocol]
    merged = gw.registry.merged.get(svc.key, ()) if gw.registry is not None else ()
    return sorted({spec.spoken_with(svc.protocol) for spec in merged})


def port_conflict(gw, svc: ServiceConfig) -> dict | None:
    """Clusters whose Service of this name declares other ports: {cluster: {name: port}}."""
    if gw.registry is None:
        return None
    from gateway.mcs import declared_ports, ports_conflict
    declared = declared_ports(gw.registry.sources, svc.namespace, svc.name)
    return declared if ports_conflict(declared) else None


def services(gw) -> list[dict]:
    return [_service(gw, svc) for svc in gw.config.services]


def service(gw, key: str) -> dict | None:
    for svc in gw.config.services:
        if svc.key == key:
            return _service(gw, svc)
    return None


# --- routes ------------------------------------------------------------------------------


def _match(rc: RouteConfig) -> dict:
    m = rc.match
    path = ({"exact": m.path_exact} if m.path_exact is not None else
            {"regex": m.path_regex} if m.path_regex is not None else
            {"segment_prefix": m.path_segment_prefix} if m.path_segment_prefix is not None else
            {"prefix": m.path_prefix or "/"})
    match = {"path": path, "hosts": list(m.hosts), "methods": list(m.methods),
             "headers": [{k: v for k, v in dataclasses.asdict(h).items() if v is not None}
                         for h in m.headers]}
    if m.queries:
        match["query"] = [{k: v for k, v in dataclasses.asdict(q).items() if v is not None} for q in m.queries]
    return match


def _filters(rc: RouteConfig) -> dict:
    """The route's filters, only those it has."""
    out = {}
    for key in ("request_headers", "response_headers", "redirect"):
        value = getattr(rc, key)
        if value is not None:
            out[key] = _plain(value)
    if rc.rewrite_full_path is not None:
        out["rewrite_full_path"] = rc.rewrite_full_path
    if rc.rewrite_host is not None:
        out["rewrite_host"] = rc.rewrite_host
    if rc.mirrors:
        out["mirrors"] = [m.service if m.fraction == 1 else {"service": m.service, "percent": m.fraction * 100}
                          for m in rc.mirrors]
    if rc.direct_status is not None:
        out["direct_status"] = rc.direct_status
    return out


def _route_traffic(gw) -> dict[str, dict]:
    return gw.refresh_stats().routes()


def _route(rc: RouteConfig, index: int, traffic: dict | None) -> dict:
    return {
        "name": rc.name,
        "index": index,
        "match": _match(rc),
        "backends": [{"service": b.service, "weight": b.weight} for b in rc.backends],
        "rewrite_prefix": rc.rewrite_prefix,
        **({"filters": _filters(rc)} if rc.has_filters else {}),
        "timeout_s": rc.timeout,
        "retries": _plain(rc.retries),
        "requests": traffic["requests"] if traffic else 0,
        "responses": traffic["responses"] if traffic else {},
        **({"policy": _policy(rc), "denied": traffic["denied"] if traffic else dict.fromkeys(DENIAL_NAMES, 0)}
           if rc.has_policy else {}),
    }


def _policy(rc: RouteConfig) -> dict:
    """The route's edge policy as the console shows it: what applies and which Kubernetes
    policies it comes from, never a credential (no password hash, key digest or JWKS)."""
    out: dict = {"from": list(rc.policy_sources)} if rc.policy_sources else {}
    if rc.ip_filter is not None:
        out["ip_filter"] = {"allow": list(rc.ip_filter.allow), "deny": list(rc.ip_filter.deny)}
    if rc.rate_limit is not None:
        r = rc.rate_limit
        out["rate_limit"] = {"requests": r.requests, "per_s": r.per, "burst": r.bucket, "key": r.key}
    if rc.auth is not None:
        a = rc.auth
        method = next(m for m in ("basic", "api_key", "jwt", "ext_authz") if getattr(a, m) is not None)
        auth = {"method": method, "required": a.required}
        if a.basic:
            auth.update(realm=a.basic.realm, users=len(a.basic.users))
        elif a.api_key:
            auth.update(header=a.api_key.header, query=a.api_key.query, keys=len(a.api_key.keys))
        elif a.ext_authz:
            auth.update(url=a.ext_authz.url, failure_mode=a.ext_authz.failure_mode, timeout_s=a.ext_authz.timeout)
        else:
            auth.update(jwks_url=a.jwt.jwks_url, issuer=a.jwt.issuer, audiences=list(a.jwt.audiences),
                        claims_to_headers={c.claim: c.header for c in a.jwt.claims_to_headers})
        out["auth"] = auth
    return out


def routes(gw) -> list[dict]:
    traffic = _route_traffic(gw)
    return [_route(rc, i, traffic.get(rc.name)) for i, rc in enumerate(gw.config.routes)]


def tls_routes(gw) -> list[dict]:
    """The TLSRoutes the TLS listeners serve (their traffic: the access log and
    gateway_tls_route_connections_total; a connection is not a request)."""
    listeners = {gl.id: gl for gl in gw.config.listeners}
    out = []
    for rc in gw.config.tls_routes:
        gl = listeners.get(rc.listener)
        out.append({"name": rc.name, "listener": rc.listener, "mode": gl.tls_mode if gl else None,
                    "address": f"{gl.address}:{gl.port}" if gl else None, "hostnames": list(rc.hostnames),
                    "backends": [{"service": b.service, "weight": b.weight} for b in rc.backends],
                    "invalid_weight": rc.invalid_weight})
    return out


def route(gw, name: str) -> dict | None:
    for i, rc in enumerate(gw.config.routes):
        if rc.name == name:
            return _route(rc, i, _route_traffic(gw).get(name))
    return None


def config(gw) -> dict:
    """The running config (paths to kubeconfigs, never their contents; never the admin token)."""
    plain = _plain(gw.config)
    del plain["document"]                   # the raw YAML the above was parsed from
    del plain["admin_token"]
    options = plain.pop("admin_options", {})
    plain["admin_auth"] = "bearer" if gw.config.admin_token else "none"
    # Which scopes have a token, never the tokens themselves.
    plain["admin_scopes"] = [scope for scope, token in (
        ("write", gw.config.admin_token), ("read", gw.config.admin_options.read_token),
        ("metrics", gw.config.admin_options.metrics_token)) if token]
    plain["admin_session_ttl"] = options.get("session_ttl")
    plain["admin_tls"] = options.get("tls")
    if gw.config.tls is not None:           # a Secret's PEM key never leaves the process
        plain["tls"]["certificates"] = [_certificate(c) for c in gw.config.tls.certificates]
    for shown, listener in zip(plain["listeners"], gw.config.listeners):
        shown["certificates"] = [_certificate(c) for c in listener.certificates]
    for shown, svc in zip(plain["services"], gw.config.services):
        if svc.tls is not None and svc.tls.client_certificate is not None:
            shown["tls"]["client_certificate"] = _certificate(svc.tls.client_certificate)
    for shown, rc in zip(plain["routes"], gw.config.routes):
        if rc.auth is not None:             # no password hash or key digest leaves the process
            shown["auth"] = _policy(rc)["auth"]
    return plain


def _certificate(c) -> dict:
    return {"from": c.origin, "names": list(c.names)} if c.pem else {"cert": c.cert, "key": c.key}


# --- which route, which service, which endpoint ------------------------------------------


def explain(gw, method: str, host: str | None, path: str,
            headers: list[tuple[str, str]] = ()) -> dict:
    """Run the data plane's own router on a synthetic request; each backend's share.

    Raises ValueError (with the parser's reason) when the request could not be sent at all.
    """
    from _speedups.http import HttpError, find_head_end, parse_request

    # Without a host, an HTTP/1.0 request (no Host header needed) matches host-less routes only.
    lines = [f"{method} {path} HTTP/1.1" if host else f"{method} {path} HTTP/1.0"]
    if host:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    try:
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        head = parse_request(data, find_head_end(data, 0))
    except (HttpError, UnicodeEncodeError) as exc:
        raise ValueError(f"not a valid request: {exc}") from None
    answer: dict = {"request": {"method": method, "host": host, "path": path,
                                "headers": [list(h) for h in headers]}}
    # The data plane routes on the normalized path (http.path): so does the explanation.
    policy = gw.ctx.path_policy
    status, normalized = policy(head.path)
    query = head.target[len(head.path):]
    if status == 400:
        answer.update(route=None, status=400, reason=f"{normalized} (the gateway answers 400)")
        return answer
    if status == 307:
        location = (normalized + query).decode("latin-1")
        answer.update(route=None, status=307, location=location,
                      reason=f"escaped slash: the gateway redirects to {location}")
        return answer
    normalized_target = path
    if normalized is not head.path:
        normalized_target = answer["normalized_path"] = (normalized + query).decode("latin-1")
        head.path = normalized
    matched = gw.ctx.router.match(head)
    if matched is None:
        answer.update(route=None, status=404, reason="no route matches (the gateway answers 404)")
        return answer
    rc = gw.dataplane.route_config(matched)
    answer["route"] = _route(rc, gw.config.routes.index(rc), _route_traffic(gw).get(rc.name))
    # As _speedups/exchange.pyx sends it: a rewrite applies to the normalized path.
    prefix = rc.match.matched_prefix
    rewrites = rc.rewrite_prefix is not None and prefix
    target = path if policy.forward_original and not rewrites else normalized_target
    if rewrites:
        target = rc.rewrite_prefix + target[len(prefix):]
        if target.startswith("//"):
            target = target[1:]
    if rc.rewrite_full_path is not None:
        query = target.partition("?")[2]
        target = rc.rewrite_full_path + ("?" + query if query else "")
    answer["upstream_path"] = target
    if rc.redirect is not None or rc.direct_status is not None:
        answer.update(backends=[], status=rc.redirect.status if rc.redirect else rc.direct_status)
        return answer
    total = sum(b.weight for b in rc.backends)
    backends = []
    configs = {s.key: s for s in gw.config.services}
    for b in rc.backends:
        svc = _service(gw, configs[b.service])
        share = b.weight / total
        for e in svc["endpoints"]:
            e["share"] = _round(e["share"] * share)
        for level in svc["levels"]:
            level["share"] = _round(level["load_pct"] / 100 * share)
        for c in svc["clusters"]:
            c["share"] = _round(c["share"] * share)
            c["endpoints"] = [e for e in svc["endpoints"] if e["cluster"] == c["cluster"]]
        reason = None
        if not svc["serving"]:
            reason = ("no endpoint serves: requests picked for this service get 503"
                      if svc["endpoints"] else "no endpoints at all: requests get 503")
        backends.append({"service": b.service, "weight": b.weight, "share": _round(share),
                         "panic": svc["panic"], "serving": svc["serving"], "reason": reason,
                         "clusters": svc["clusters"], "levels": svc["levels"]})
    answer["backends"] = backends
    answer["status"] = 200 if any(b["serving"] for b in backends) else 503
    return answer


# --- traffic samples and metrics ---------------------------------------------------------


def traffic_answered(gw) -> dict[str, tuple[str, int]]:
    """"ip:port" -> (cluster, requests answered since the last call): sampled each second
    for /traffic; it costs what changed, not the number of endpoints."""
    return {_host(ip, port): (cluster, n)
            for (cluster, ip, port), n in gw.refresh_stats().take_answered().items()}


class Family(NamedTuple):
    """One Prometheus metric family: samples are (name suffix, labels, value), or with a
    fourth item, an exemplar (trace id, value, wall time) that only OpenMetrics shows."""

    name: str
    type: str
    help: str
    samples: list[tuple]


STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def _histogram(fam: Family, labels: dict, traffic: dict, exemplars: dict | None = None) -> None:
    """``exemplars``: by bucket index, the traced request each bucket links to."""
    from _speedups.proxy import LATENCY_BOUNDS
    cumulative = 0
    for i, (bound, n) in enumerate(zip((*LATENCY_BOUNDS, float("inf")), traffic["latency_buckets"])):
        cumulative += n
        sample = ("_bucket", {**labels, "le": "+Inf" if bound == float("inf") else repr(bound)}, cumulative)
        if exemplars and i in exemplars:
            sample += (exemplars[i],)
        fam.samples.append(sample)
    fam.samples.append(("_sum", labels, traffic["latency_sum"]))
    fam.samples.append(("_count", labels, traffic["requests"]))


def _by_class(fam: Family, labels: dict, traffic: dict) -> None:
    for cls in STATUS_CLASSES:
        fam.samples.append(("", {**labels, "status_class": cls}, traffic["responses"][cls]))
    # Requests that ended with no response status (the client left first).
    fam.samples.append(("", {**labels, "status_class": "none"}, traffic["errors_no_status"]))


def metric_families(gw) -> list[Family]:
    health, cfg = gw.health, gw.config
    totals = gw.refresh_stats()
    stats = totals.counters()
    now = time.time()
    fams: list[Family] = []

    def family(name: str, kind: str, text: str) -> Family:
        fam = Family(name, kind, text, [])
        fams.append(fam)
        return fam

    family("gateway_info", "gauge", "Build and config of this gateway.").samples.append(
        ("", {"version": __version__, "config_version": config_version(gw)}, 1))
    family("gateway_start_time_seconds", "gauge", "Start time, seconds since the epoch.").samples.append(
        ("", {}, gw.started))
    family("gateway_snapshot_version", "gauge", "Version of the snapshot the data plane serves.").samples.append(
        ("", {}, gw.view_version))
    family("gateway_downstream_connections", "gauge", "Open client connections.").samples.append(
        ("", {}, totals.connections()))
    family("gateway_requests_in_flight", "gauge", "Requests being proxied now.").samples.append(
        ("", {}, totals.in_flight()))
    family("gateway_requests_total", "counter",
           "Requests read from clients (routed or not).").samples.append(("", {}, stats.get("requests", 0)))
    fam = family("gateway_responses_total", "counter", "Responses sent to clients by status class.")
    for cls in ("2xx", "3xx", "4xx", "5xx"):
        fam.samples.append(("", {"status_class": cls}, stats.get(f"responses_{cls}", 0)))
    family("gateway_retries_total", "counter",
           "Requests sent again to another endpoint.").samples.append(("", {}, stats.get("retries", 0)))
    family("gateway_redispatched_total", "counter",
           "Requests sent to another endpoint at once because theirs was ejected while they "
           "waited for its answer.").samples.append(("", {}, stats.get("redispatched", 0)))
    fam = family("gateway_circuit_breaker_overflows_total", "counter",
                 "Requests answered 503 because a service's circuit breaker was at its limit.")
    for limit in ("max_connections", "max_pending", "max_requests", "max_retries"):
        fam.samples.append(("", {"limit": limit}, stats.get(f"overflow_{limit}", 0)))
    family("gateway_upstream_connects_total", "counter",
           "Upstream connections opened.").samples.append(("", {}, stats.get("upstream_connects", 0)))
    family("gateway_upstream_connect_failures_total", "counter",
           "Upstream connections refused or timed out.").samples.append(
        ("", {}, stats.get("connect_failures", 0)))

    # Per route.
    route_req = family("gateway_route_requests_total", "counter",
                       "Requests answered per route, by response status class.")
    route_lat = family("gateway_route_request_duration_seconds", "histogram",
                       "Request duration per route (first byte in to last byte out).")
    route_denied = family("gateway_route_denied_total", "counter",
                          "Requests the route's edge policy answered itself (429 rate_limited, "
                          "401 unauthenticated, 403 forbidden).")
    route_traffic = totals.routes()
    for rc in cfg.routes:
        t = route_traffic.get(rc.name)
        if t is not None:
            _by_class(route_req, {"route": rc.name}, t)
            _histogram(route_lat, {"route": rc.name}, t)
            if rc.has_policy:
                for reason, n in t["denied"].items():
                    route_denied.samples.append(("", {"route": rc.name, "reason": reason}, n))

    # Per upstream endpoint (those the current view has).
    owner: dict[tuple, str] = {}
    for key, endpoints in (health.current.items() if health is not None else ()):
        for ep in endpoints:
            owner.setdefault(ep.key, key)
    up_req = family("gateway_upstream_requests_total", "counter",
                    "Requests answered through each upstream endpoint, by response status class.")
    up_lat = family("gateway_upstream_request_duration_seconds", "histogram",
                    "Request duration per upstream endpoint.")
    up_fail = family("gateway_upstream_failures_total", "counter",
                     "Failed tries per upstream endpoint (connect failures, resets, timeouts).")
    up_idle = family("gateway_upstream_idle_connections", "gauge",
                     "Pooled keep-alive connections per upstream endpoint.")
    for key, up in totals.upstreams().items():
        if key not in owner:
            continue
        labels = {"service": owner[key], "upstream_cluster": key[0], "upstream_host": _host(*key[1:])}
        t = up["traffic"]
        _by_class(up_req, labels, t)
        _histogram(up_lat, labels, t)
        up_fail.samples.append(("", labels, up["failures"]))
        up_idle.samples.append(("", labels, up["idle"]))

    # Per route, service and cluster (the cluster that answered the request's last attempt;
    # "" when none was tried).  The duration's buckets carry exemplars (a sampled request's
    # trace id), shown when the scraper asks for OpenMetrics.
    backend_lat = family("gateway_request_duration_seconds", "histogram",
                         "Request duration by route, service and the cluster that answered.")
    connect_lat = family("gateway_upstream_connect_duration_seconds", "histogram",
                         "Time to open an upstream connection (new connections only).")
    response_lat = family("gateway_upstream_response_duration_seconds", "histogram",
                          "Upstream response time: request sent to response head.")
    attempt_fail = family("gateway_upstream_attempt_failures_total", "counter",
                          "Failed upstream attempts by cause (the cluster that failed).")
    retry_cause = family("gateway_retries_by_cause_total", "counter",
                         "Retries and re-dispatches by the cause of the failed attempt before "
                         "them (the cluster that failed).")
    for (route, service, cluster), b in sorted(totals.backends().items()):
        labels = {"route": route, "service": service, "cluster": cluster}
        for fam, h in ((backend_lat, b["duration"]), (connect_lat, b["connect"]),
                       (response_lat, b["response"])):
            _histogram(fam, labels, {"latency_buckets": h["buckets"], "latency_sum": h["sum"],
                                     "requests": h["count"]}, h.get("exemplars"))
        for cause, n in b["failures"].items():
            attempt_fail.samples.append(("", {**labels, "cause": cause}, n))
        for cause, n in b["retries"].items():
            retry_cause.samples.append(("", {**labels, "cause": cause}, n))
    ejections_total = family("gateway_endpoint_ejections_total", "counter",
                             "Outlier ejections by service, cluster and cause.")
    for (service, cluster, cause), n in sorted(health.ejections_total.items() if health is not None else ()):
        ejections_total.samples.append(("", {"service": service, "cluster": cluster, "cause": cause}, n))
    drains_total = family("gateway_cluster_drains_total", "counter",
                          "Clusters drained, by cause: healthy_share (a service's, automatic) or operator "
                          "(a whole source: service is empty).")
    for (service, cluster, cause), n in sorted(health.drains_total.items() if health is not None else ()):
        drains_total.samples.append(("", {"service": service, "cluster": cluster, "cause": cause}, n))

    # Tracing (per worker queue and exporter, summed).
    if cfg.tracing is not None:
        tr = totals.tracing()
        family("gateway_tracing_requests_recorded_total", "counter",
               "Requests whose spans were queued for export (sampled, 5xx, or a failed attempt)."
               ).samples.append(("", {}, tr["recorded"]))
        dropped = family("gateway_tracing_requests_dropped_total", "counter",
                         "Requests whose spans were dropped: the queue was full, or the export failed.")
        dropped.samples.append(("", {"reason": "queue_full"}, tr["dropped_queue_full"]))
        dropped.samples.append(("", {"reason": "export_failed"}, tr["dropped_export_failed"]))
        family("gateway_tracing_spans_exported_total", "counter",
               "Spans the collector accepted.").samples.append(("", {}, tr["spans_exported"]))
        family("gateway_tracing_export_failures_total", "counter",
               "Export requests that failed (collector down, slow or refusing).").samples.append(
            ("", {}, tr["export_failures"]))

    # The access log's OTLP export (per worker exporter, summed).
    if cfg.access_log.otlp_endpoint is not None:
        ol = totals.otlp_logs()
        records = family("gateway_accesslog_otlp_records_total", "counter",
                         "Access-log lines sent as OTLP log records, by outcome (dropped: the queue "
                         "was full or the export failed).")
        records.samples.append(("", {"outcome": "exported"}, ol["exported"]))
        records.samples.append(("", {"outcome": "dropped"}, ol["dropped"]))
        family("gateway_accesslog_otlp_export_failures_total", "counter",
               "Access-log export requests that failed (collector down, slow or refusing).").samples.append(
            ("", {}, ol["export_failures"]))

    # Mutual TLS: handshakes refused for their client certificate (per worker, summed).
    if (cfg.tls is not None and cfg.tls.client_validation is not None) or \
            any(listener.client_validation is not None for listener in cfg.listeners):
        refused = family("gateway_tls_handshakes_refused_total", "counter",
                         "TLS handshakes refused on listeners that ask for client certificates, by "
                         "reason (certificate_rejected: it did not verify; no_certificate: none given).")
        for reason, count in totals.tls_refusals().items():
            refused.samples.append(("", {"reason": reason}, count))

    # TLS listeners (TLSRoutes): connections by how they ended up (per worker, summed).
    if any(listener.streams for listener in cfg.listeners):
        streams = family("gateway_tls_route_connections_total", "counter",
                         "Connections to TLS listeners (TLSRoutes), by result: routed to a backend, or "
                         "closed for no route for the SNI, no valid backend, failed connects, a bad ClientHello or "
                         "a failed handshake (a port that terminates some routes and passes others through).")
        for result, count in totals.tls_route_connections().items():
            streams.samples.append(("", {"result": result}, count))

    # Global rate limits' store (per worker connection, summed).
    store = totals.ratelimit_store()
    if store is not None:
        family("gateway_ratelimit_store_connected_workers", "gauge",
               "Workers whose connection to the global limits' Redis is up.").samples.append(
            ("", {"failure_mode": store["failure_mode"]}, store["workers_connected"]))
        family("gateway_ratelimit_store_checks_total", "counter",
               "Requests under a global limit asked of Redis.").samples.append(("", {}, store["checks"]))
        failed = family("gateway_ratelimit_store_failures_total", "counter",
                        "Global-limit checks Redis did not answer, by what the failure mode did "
                        "(open: let through, closed: answered 503).")
        failed.samples.append(("", {"action": "let_through"}, store["failed_open"]))
        failed.samples.append(("", {"action": "refused"}, store["failed_closed"]))

    # Endpoint health.
    serving = family("gateway_endpoint_serving", "gauge",
                     "1 when the endpoint receives new requests, 0 when not.")
    healthy = family("gateway_endpoint_healthy", "gauge", "1 when no health flag is set.")
    ejected = family("gateway_endpoint_ejected", "gauge", "1 while ejected by outlier detection.")
    ejections = family("gateway_endpoint_ejections", "gauge",
                       "Ejections in the endpoint's current streak (passive outlier detection).")
    panic = family("gateway_service_panic", "gauge", "1 while the service is in panic routing.")
    for svc in cfg.services:
        for ep in (health.describe(svc.key) if health is not None else ()):
            labels = {"service": svc.key, "upstream_cluster": ep["cluster"], "upstream_host": ep["address"]}
            serving.samples.append(("", labels, 1 if ep["serving"] else 0))
            healthy.samples.append(("", labels, 1 if ep["healthy"] else 0))
            ejected.samples.append(("", labels, 1 if "ejected" in ep["causes"] else 0))
            ejections.samples.append(("", labels, ep.get("ejections", 0)))
        panic.samples.append(("", {"service": svc.key},
                              1 if health is not None and health.panic.get(svc.key) else 0))

    cluster_state = family("gateway_cluster_state", "gauge",
                           "1 for the state each cluster is in for a service (health domain).")
    for svc in cfg.services:
        for name, row in cluster_states(gw, svc.key).items():
            for st in (domains.HEALTHY, domains.DEGRADED, domains.CONTROL_PLANE_LOST,
                       domains.DRAINING, domains.DRAINED):
                cluster_state.samples.append(("", {"service": svc.key, "cluster": name, "state": st},
                                              1 if row["state"] == st else 0))

    # Sources.
    state = family("gateway_source_state", "gauge", "1 for the state each source is in.")
    age = family("gateway_source_last_event_age_seconds", "gauge",
                 "Seconds since a source last saw a change (watch event or list).")
    for source in (gw.registry.sources if gw.registry else ()):
        for s in SourceState:
            state.samples.append(("", {"source": source.name, "type": source.kind, "state": s.value},
                                  1 if source.state == s else 0))
        last = source.status().get("last_event")
        if last:
            age.samples.append(("", {"source": source.name}, round(now - last, 3)))

    # Gateway API: which replica writes status.
    if gw.gatewayapi is not None:
        api = gw.gatewayapi.status()
        election = api["leader_election"] or {}
        family("gateway_gatewayapi_status_writer", "gauge",
               "1 when this replica writes Gateway API status (the Lease's holder, or leader "
               "election off).").samples.append(("", {}, 1 if api["writes_status"] else 0))
        family("gateway_gatewayapi_status_writes_total", "counter",
               "Gateway API status writes this replica made.").samples.append(("", {}, api["status_writes"]))
        family("gateway_gatewayapi_leader_changes_total", "counter",
               "Status writers this replica has seen take the Lease.").samples.append(
            ("", {}, election.get("leader_changes", 0)))
    return fams
