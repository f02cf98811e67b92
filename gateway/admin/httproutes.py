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
from gateway.config import is_dns_label
from gateway.sources.discovery import GATEWAY_GROUP

APPLY_WAIT = 5.0        # seconds the writer waits to see its own change in its table


def httproute(body: dict, namespace: str, gateway: tuple[str, str], ports: dict[str, int]) -> dict:
    """The HTTPRoute for a file-style route body; 400 naming the key for what it cannot say."""
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not is_dns_label(body["name"]):
        raise HttpProblem(400, "invalid route: nothing applied", errors=["name: must be a DNS label"])
    match = body.get("match") or {}
    path = match.get("path") or {"prefix": "/"}
    kinds = {"prefix": "PathPrefix", "segment_prefix": "PathPrefix", "exact": "Exact", "regex": "RegularExpression"}
    given = [k for k in kinds if k in path]
    if len(given) != 1:
        raise HttpProblem(400, "invalid route: nothing applied",
                          errors=["match.path: needs exactly one of prefix, segment_prefix, exact, regex"])
    m: dict = {"path": {"type": kinds[given[0]], "value": path[given[0]]}}
    methods = match.get("method")
    if methods:
        methods = [methods] if isinstance(methods, str) else methods
        if len(methods) != 1:
            raise HttpProblem(400, "invalid route: nothing applied",
                              errors=["match.method: an HTTPRoute match has one method"])
        m["method"] = methods[0].upper()
    headers = [{"type": "RegularExpression" if "regex" in h else "Exact", "name": h["name"],
                "value": h.get("regex", h.get("exact", ""))} for h in match.get("headers") or ()]
    if headers:
        m["headers"] = headers
    queries = [{"type": "RegularExpression" if "regex" in q else "Exact", "name": q["name"],
                "value": q.get("regex", q.get("exact", ""))} for q in match.get("query") or ()]
    if queries:
        m["queryParams"] = queries
    backends = body.get("backends") or ([{"service": body["service"]}] if body.get("service") else [])
    refs = []
    for i, b in enumerate(backends):
        ns, _, name = b["service"].rpartition("/")
        port = b.get("port") or body.get("port") or ports.get(f"{ns or namespace}/{name}")
        if port is None:
            raise HttpProblem(400, "invalid route: nothing applied",
                              errors=[f"backends[{i}].port: required (the Service port number)"])
        ref = {"name": name, "port": int(port), "weight": b.get("weight", 1)}
        if ns and ns != namespace:
            ref["namespace"] = ns
        refs.append(ref)
    if not refs:
        raise HttpProblem(400, "invalid route: nothing applied", errors=['needs "service" or "backends"'])
    hosts = match.get("host")
    spec = {"parentRefs": [{"name": gateway[1], "namespace": gateway[0]}],
            "rules": [{"matches": [m], "backendRefs": refs}]}
    if hosts:
        spec["hostnames"] = [hosts] if isinstance(hosts, str) else list(hosts)
    return {"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "HTTPRoute",
            "metadata": {"name": body["name"], "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "gateway-console"}}, "spec": spec}


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
