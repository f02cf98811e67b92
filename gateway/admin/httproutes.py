"""Console route changes as HTTPRoute objects (``gateway_api.console_gateway`` set).

The admin API (and so ``gateway route add|remove`` and the dashboard, which use it) takes the
same route body as the file's ``routes:`` entries; here it becomes an HTTPRoute attached to
the console Gateway, written with the official client to the first ``gateway_api`` cluster.
Every replica watching that cluster then serves it, and the writer answers once its own
table has it (bounded wait), so a client that reads its write back sees it.
"""
from __future__ import annotations

import asyncio
import time

from gateway.admin.http import HttpProblem
from gateway.config import ConfigError, CorsPolicy, HeaderFilter, RouteMatch
from gateway.config.loader import parse_route
from gateway.gatewayapi.translate import CORS_KEYS
from gateway.sources.discovery import GATEWAY_GROUP

APPLY_WAIT = 5.0        # seconds the writer waits to see its own change in its table


def httproute(body: dict, namespace: str, gateway: tuple[str, str], ports: dict[str, int]) -> dict:
    """The HTTPRoute for a file-style route body, checked as the file's routes are; 400
    naming each key it cannot have (ports aside: the only key a file route has not, as the
    file's services carry theirs)."""
    if not isinstance(body, dict):
        raise HttpProblem(400, "invalid route: nothing applied", errors=["the route must be an object"])
    route_port = body.get("port")
    backend_ports = [b.get("port") if isinstance(b, dict) else None for b in body.get("backends") or ()]
    plain = {k: v for k, v in body.items() if k != "port"}
    if "backends" in plain and isinstance(plain["backends"], list):
        plain["backends"] = [{k: v for k, v in b.items() if k != "port"} if isinstance(b, dict) else b
                             for b in plain["backends"]]
    try:
        rc = parse_route(plain)
    except ConfigError as err:
        raise HttpProblem(400, "invalid route: nothing applied", errors=err.errors) from None
    problems = [f"{key}: not supported for a console route (an HTTPRoute rule with a match and "
                f"backendRefs)" for key in plain if key not in _CONSOLE_KEYS]
    if len(rc.match.methods) > 1:
        problems.append("match.method: an HTTPRoute match has one method")
    if any(h.present is not None for h in rc.match.headers):
        problems.append("match.headers: an HTTPRoute matches a header's value (exact or regex), not its presence")
    refs = []
    for i, backend in enumerate(rc.backends):
        ns, name = backend.service.split("/")
        port = (backend_ports[i] if i < len(backend_ports) else None) or route_port or ports.get(backend.service)
        if port is None:
            problems.append(f"backends[{i}].port: required (the Service port number)")
            continue
        ref = {"name": name, "port": int(port), "weight": backend.weight}
        if ns != namespace:
            ref["namespace"] = ns
        if backend.filters is not None:
            ref["filters"] = _header_modifiers(backend.filters.request_headers, backend.filters.response_headers)
        refs.append(ref)
    if problems:
        raise HttpProblem(400, "invalid route: nothing applied", errors=problems)
    rule = {"matches": [_match(rc.match)], "backendRefs": refs}
    if rc.cors is not None:
        rule["filters"] = [{"type": "CORS", "cors": _cors(rc.cors)}]
    spec = {"parentRefs": [{"name": gateway[1], "namespace": gateway[0]}], "rules": [rule]}
    if rc.match.hosts:
        spec["hostnames"] = list(rc.match.hosts)
    return {"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "HTTPRoute",
            "metadata": {"name": rc.name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "gateway-console"}}, "spec": spec}


_CONSOLE_KEYS = ("name", "match", "service", "backends", "cors")


def _cors(policy: CorsPolicy) -> dict:
    """The HTTPRoute CORS filter for a route's ``cors`` (the same fields, HTTPCORSFilter's names)."""
    return {upstream: getattr(policy, ours) if not isinstance(getattr(policy, ours), tuple)
            else list(getattr(policy, ours)) for upstream, ours in CORS_KEYS.items()}


def _header_modifiers(request: HeaderFilter | None, response: HeaderFilter | None) -> list[dict]:
    """A backend's request_headers / response_headers as backendRef header modifier filters."""
    def modifier(f: HeaderFilter) -> dict:
        return {"set": [{"name": n, "value": v} for n, v in f.set], "add": [{"name": n, "value": v} for n, v in f.add],
                "remove": list(f.remove)}
    filters = []
    if request is not None:
        filters.append({"type": "RequestHeaderModifier", "requestHeaderModifier": modifier(request)})
    if response is not None:
        filters.append({"type": "ResponseHeaderModifier", "responseHeaderModifier": modifier(response)})
    return filters


def _match(m: RouteMatch) -> dict:
    """An HTTPRoute match for a file route's match (HTTPRouteMatch's words)."""
    if m.path_exact is not None:
        path = {"type": "Exact", "value": m.path_exact}
    elif m.path_regex is not None:
        path = {"type": "RegularExpression", "value": m.path_regex}
    else:
        path = {"type": "PathPrefix", "value": m.path_segment_prefix or m.path_prefix or "/"}
    out: dict = {"path": path}
    if m.methods:
        out["method"] = m.methods[0]
    if m.headers:
        out["headers"] = [{"type": "RegularExpression" if h.regex is not None else "Exact", "name": h.name,
                           "value": h.regex if h.regex is not None else h.exact} for h in m.headers]
    if m.queries:
        out["queryParams"] = [{"type": "RegularExpression" if q.regex is not None else "Exact", "name": q.name,
                               "value": q.regex if q.regex is not None else q.exact} for q in m.queries]
    return out


def _prefix(namespace: str, name: str) -> str:
    return f"{namespace}.{name}."


async def change(gw, op: str, ident: str | None, body) -> dict:
    """Create, replace or delete the console's HTTPRoute; answer when our table shows it."""
    from kubernetes.client.rest import ApiException
    settings = gw.file_config.gateway_api
    gateway = tuple(settings.console_gateway.split("/", 1))
    namespace = gateway[0]
    controller = gw.gatewayapi
    api = controller.api(settings.sources[0])
    if api is None:
        raise HttpProblem(503, f"not connected to cluster {settings.sources[0]} yet")
    from kubernetes import client
    custom = client.CustomObjectsApi(api)
    ports = {s.key: s.port for s in gw.config.services if isinstance(s.port, int)}
    loop = asyncio.get_running_loop()
    name = ident if op != "add" else (body or {}).get("name")
    try:
        if op == "remove":
            await loop.run_in_executor(None, lambda: custom.delete_namespaced_custom_object(
                GATEWAY_GROUP, "v1", namespace, "httproutes", name))
        else:
            obj = httproute(body if op == "add" else {**body, "name": ident}, namespace, gateway, ports)
            if op == "add":
                await loop.run_in_executor(None, lambda: custom.create_namespaced_custom_object(
                    GATEWAY_GROUP, "v1", namespace, "httproutes", obj))
            else:
                current = await loop.run_in_executor(None, lambda: custom.get_namespaced_custom_object(
                    GATEWAY_GROUP, "v1", namespace, "httproutes", name))
                obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                await loop.run_in_executor(None, lambda: custom.replace_namespaced_custom_object(
                    GATEWAY_GROUP, "v1", namespace, "httproutes", name, obj))
    except ApiException as exc:
        status = {404: 404, 409: 409, 422: 400}.get(exc.status, 502)
        raise HttpProblem(status, f"HTTPRoute {namespace}/{name}: the API server answered "
                                  f"{exc.status} {exc.reason}") from None
    await _until_applied(gw, _prefix(namespace, name), present=op != "remove")
    return {"ok": True, "op": op, "route": name, "httproute": f"{namespace}/{name}"}


async def _until_applied(gw, prefix: str, present: bool) -> None:
    deadline = time.monotonic() + APPLY_WAIT
    while time.monotonic() < deadline:
        if any(r.name.startswith(prefix) for r in gw.config.routes) == present:
            return
        await asyncio.sleep(0.01)
