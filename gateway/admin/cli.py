"""``gateway status|sources|services|routes|explain`` and ``gateway source|service|route add|remove``.

Every command speaks to a running gateway's admin API (``--admin URL``, default
``$GATEWAY_ADMIN`` or http://127.0.0.1:9901), the same API the dashboard uses, so the
CLI and the console always agree.  Exit codes: 0 done; 1 the gateway refused (the
reasons are printed, key paths included); 2 the admin API could not be reached.
"""
from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

import orjson

DEFAULT_ADMIN = "http://127.0.0.1:9901"


class AdminError(Exception):
    def __init__(self, status: int, payload: dict) -> None:
        super().__init__(payload.get("error", f"HTTP {status}"))
        self.status = status
        self.payload = payload


class Unreachable(Exception):
    pass


def call(admin: str, method: str, path: str, body=None, if_match: str | None = None,
         timeout: float = 10.0):
    """One admin API request; the decoded JSON answer (AdminError for 4xx/5xx)."""
    url = admin.rstrip("/") + path
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if if_match:
        req.add_header("If-Match", f'"{if_match.strip(chr(34))}"')
    token = os.environ.get("GATEWAY_ADMIN_TOKEN")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = {"error": raw.decode(errors="replace").strip() or f"HTTP {err.code}"}
        raise AdminError(err.code, payload) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise Unreachable(f"cannot reach the admin API at {admin}: {reason}") from None
    return orjson.loads(raw) if raw else None


# --- formatting ----------------------------------------------------------------------------


def table(headers: list[str], rows: list[list], indent: str = "") -> str:
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [indent + "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in cells:
        lines.append(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _age(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _match_text(m: dict) -> str:
    (kind, value), = m["path"].items()
    text = {"prefix": f"{value}*", "exact": value, "regex": f"~{value}"}[kind]
    if m["hosts"]:
        text = ",".join(m["hosts"]) + text
    if m["methods"]:
        text = ",".join(m["methods"]) + " " + text
    for h in m["headers"]:
        text += f" [{h['name']}" + (f"={h['exact']}" if "exact" in h else f"~{h['regex']}" if "regex" in h
                                   else "" if h.get("present") else " absent") + "]"
    return text


def print_status(s: dict) -> None:
    up = s["uptime_s"]
    print(f"gateway {s['version']}  pid {s['pid']}  up {up:.0f}s  {'ready' if s['ready'] else 'NOT READY'}")
    tls = f"   https {s['tls_listen']}" if s.get("tls_listen") else ""
    print(f"listen    {s['listen']}{tls}   admin {s['admin']}")
    c = s["config"]
    print(f"config    {c['path']}  version {c['version']}  "
          f"({c['sources']} sources, {c['services']} services, {c['routes']} routes)")
    snap = s["snapshot"]
    workers = ", ".join(f"pid {w['pid']}: v{w['snapshot_version']}" for w in s["workers"])
    print(f"snapshot  v{snap['version']}  (workers: {workers})")
    st = s["stats"]
    print(f"traffic   {st.get('requests', 0)} requests, {s['connections']} open connections, "
          f"{s['requests_in_flight']} in flight, {st.get('retries', 0)} retries, "
          f"{st.get('connect_failures', 0)} connect failures")


def print_sources(sources: list[dict]) -> None:
    rows = [[s["name"], s["type"], s["weight"], s["state"], s["services"], s["endpoints"],
             _age(s["last_event_age_s"]), s["kubeconfig"] or ("in-cluster" if s["in_cluster"] else None),
             s["error"]] for s in sources]
    print(table(["NAME", "TYPE", "WEIGHT", "STATE", "SERVICES", "ENDPOINTS", "LAST EVENT",
                 "KUBECONFIG", "ERROR"], rows))


def print_services(services: list[dict]) -> None:
    for i, svc in enumerate(services):
        if i:
            print()
        panic = "  PANIC ROUTING" if svc["panic"] else ""
        print(f"{svc['key']}  port {svc['port']}  serving {svc['serving']}/{len(svc['endpoints'])}{panic}")
        _print_levels(svc["levels"], "  ")
        rows = []
        for e in sorted(svc["endpoints"], key=lambda e: (e["cluster"], e["address"])):
            health = "healthy" if e["healthy"] else ",".join(e["causes"])
            rows.append([e["cluster"], e["address"], e["weight"], health,
                         "yes" if e["serving"] else "no", _pct(e["share"]), e["requests"], e["errors"],
                         e["idle_connections"], e["reason"]])
        for c in svc["clusters"]:
            if not c["endpoints"]:
                rows.append([c["cluster"], None, None, None, "no", _pct(0), None, None, None, c["reason"]])
        print(table(["CLUSTER", "ADDRESS", "WEIGHT", "HEALTH", "SERVING", "SHARE", "REQUESTS",
                     "ERRORS", "IDLE", "REASON"], rows, indent="  "))


def _print_levels(levels: list[dict], indent: str) -> None:
    """Priority levels, only for a service that has more than one."""
    if len(levels) < 2:
        return
    for lv in levels:
        print(f"{indent}priority {lv['priority']} ({', '.join(lv['clusters'])})  "
              f"{lv['healthy']}/{lv['endpoints']} healthy  load {lv['load_pct']}%"
              + ("  PANIC" if lv["panic"] else "") + f"  -- {lv['why']}")


def print_routes(routes: list[dict]) -> None:
    rows = []
    for r in routes:
        backends = ", ".join(b["service"] + (f" ({b['weight']})" if len(r["backends"]) > 1 else "")
                             for b in r["backends"])
        resp = r["responses"]
        rows.append([r["name"], _match_text(r["match"]), backends, r["requests"], resp.get("2xx", 0),
                     resp.get("4xx", 0), resp.get("5xx", 0)])
    print(table(["NAME", "MATCH", "SERVICE", "REQUESTS", "2XX", "4XX", "5XX"], rows))


def print_explain(x: dict) -> None:
    req = x["request"]
    print(f"{req['method']} {req['path']}" + (f"  host {req['host']}" if req["host"] else ""))
    if x["route"] is None:
        print(f"  no route: {x['reason']}")
        return
    r = x["route"]
    print(f"  route    {r['name']} (#{r['index']}: {_match_text(r['match'])})")
    if x["upstream_path"] != req["path"]:
        print(f"  upstream path {x['upstream_path']}")
    for b in x["backends"]:
        panic = "  PANIC ROUTING" if b["panic"] else ""
        print(f"  service  {b['service']}  share {_pct(b['share'])}{panic}"
              + (f"  -- {b['reason']}" if b["reason"] else ""))
        _print_levels(b["levels"], "    ")
        for c in b["clusters"]:
            print(f"    cluster {c['cluster']} ({c['source_state']})  share {_pct(c['share'])}"
                  + (f"  -- {c['reason']}" if c["reason"] else ""))
            for e in c["endpoints"]:
                print(f"      {e['address']:<22} weight {e['weight']:<5} share {_pct(e['share']):>6}"
                      + (f"  -- {e['reason']}" if e["reason"] else ""))
    print(f"  answer   {'proxied' if x['status'] == 200 else str(x['status'])}")


# --- commands ------------------------------------------------------------------------------


def _get(args, path: str, printer) -> int:
    data = call(args.admin, "GET", path)
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        printer(data)
    return 0


def cmd_status(args) -> int:
    return _get(args, "/status", print_status)


def cmd_reload(args) -> int:
    """Re-read the config file, as SIGHUP does; an invalid file is refused with its key paths."""
    data = call(args.admin, "POST", "/reload")
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() if args.json
          else f"reloaded: config version {data.get('version', '?')}")
    return 0


def cmd_sources(args) -> int:
    return _get(args, "/sources", print_sources)


def cmd_services(args) -> int:
    if args.service:
        return _get(args, f"/services/{_service_key(args.service)}", lambda s: print_services([s]))
    return _get(args, "/services", print_services)


def cmd_routes(args) -> int:
    return _get(args, "/routes", print_routes)


def print_tls_routes(routes: list[dict]) -> None:
    rows = [[r["name"], r["mode"] or "-", r["address"] or "-", ", ".join(r["hostnames"]) or "*",
             ", ".join(b["service"] + (f" ({b['weight']})" if len(r["backends"]) > 1 else "") for b in r["backends"])
             or "-"] for r in routes]
    print(table(["NAME", "MODE", "ADDRESS", "HOSTNAMES", "SERVICE"], rows))


def cmd_tls_routes(args) -> int:
    return _get(args, "/tls-routes", print_tls_routes)


def cmd_explain(args) -> int:
    query = [("path", args.path), ("method", args.method)]
    if args.host:
        query.append(("host", args.host))
    query += [("header", h) for h in args.header]
    return _get(args, "/debug/route?" + urllib.parse.urlencode(query), print_explain)


def _service_key(text: str) -> str:
    ns, _, name = text.rpartition("/")
    return f"{ns or 'default'}/{name}"


def _change(args, method: str, path: str, body=None) -> int:
    answer = call(args.admin, method, path, body, if_match=args.if_match)
    if args.json:
        sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        what = {"POST": "added", "PUT": "replaced", "DELETE": "removed"}[method]
        if "httproute" in answer:       # gateway_api.console_gateway: the route lives in the cluster
            print(f"{what} as HTTPRoute {answer['httproute']} (served by every replica watching the cluster)")
        else:
            print(f"{what}; config version {answer['version']} (applied and written to the config file)")
    return 0


def cmd_source_add(args) -> int:
    body: dict = {"name": args.name, "type": args.type}
    if args.weight is not None:
        body["weight"] = args.weight
    if args.type == "kubernetes":
        if args.in_cluster:
            body["in_cluster"] = True
        if args.kubeconfig:
            # The gateway may run elsewhere than this shell: send an absolute path.
            body["kubeconfig"] = os.path.abspath(os.path.expanduser(args.kubeconfig))
        if args.context:
            body["context"] = args.context
        if args.namespace:
            body["namespaces"] = args.namespace
    else:
        if not args.service:
            print("gateway: a static source needs --service ns/name and --endpoint ip:port", file=sys.stderr)
            return 1
        ns, name = _service_key(args.service).split("/")
        body["services"] = [{"name": name, "namespace": ns, "endpoints": args.endpoint}]
    return _change(args, "POST", "/sources", body)


def cmd_source_remove(args) -> int:
    return _change(args, "DELETE", f"/sources/{args.name}")


def cmd_source_drain(args) -> int:
    """``gateway source drain NAME --over 30s`` (and ``undrain``): gradual, persisted."""
    action = "drain" if args.action == "drain" else "undrain"
    answer = call(args.admin, "POST", f"/sources/{args.name}/{action}", {"over": args.over},
                  if_match=args.if_match)
    if args.json:
        sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        what = "draining" if action == "drain" else "coming back"
        print(f"source {args.name} {what} over {args.over}; config version {answer['version']} "
              "(written to the config file)")
    return 0


def cmd_service_add(args) -> int:
    ns, name = _service_key(args.service).split("/")
    port = int(args.port) if args.port.isdigit() else args.port
    body: dict = {"name": name, "namespace": ns, "port": port}
    if args.source:
        body["sources"] = args.source
    if args.health_path:
        body["health_check"] = {"type": "http", "path": args.health_path}
    return _change(args, "POST", "/services", body)


def cmd_service_remove(args) -> int:
    return _change(args, "DELETE", f"/services/{_service_key(args.service)}")


def cmd_route_add(args) -> int:
    match: dict = {}
    path = ({"prefix": args.prefix} if args.prefix else {"exact": args.exact} if args.exact
            else {"regex": args.regex} if args.regex else None)
    if path:
        match["path"] = path
    if args.host:
        match["host"] = args.host
    if args.method:
        match["method"] = args.method
    body: dict = {"name": args.name, "match": match, "service": _service_key(args.service)}
    if args.rewrite:
        body["rewrite"] = {"prefix": args.rewrite}
    if args.timeout:
        body["timeout"] = args.timeout
    return _change(args, "POST", "/routes" + (f"?at={args.at}" if args.at is not None else ""), body)


def cmd_route_remove(args) -> int:
    return _change(args, "DELETE", f"/routes/{args.name}")


def run(func, args) -> int:
    try:
        return func(args)
    except Unreachable as err:
        print(f"gateway: {err}", file=sys.stderr)
        return 2
    except AdminError as err:
        print(f"gateway: refused ({err.status}): {err}", file=sys.stderr)
        for line in err.payload.get("errors", ()):
            print(f"  {line}", file=sys.stderr)
        if "version" in err.payload:
            print(f"  current config version: {err.payload['version']}", file=sys.stderr)
        return 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin", default=os.environ.get("GATEWAY_ADMIN", DEFAULT_ADMIN),
                        help="admin API URL (default: $GATEWAY_ADMIN or %(default)s)")
    common.add_argument("--json", action="store_true", help="print the API's JSON answer")
    changing = argparse.ArgumentParser(add_help=False, parents=[common])
    changing.add_argument("--if-match", metavar="VERSION",
                          help="refuse (409) unless the running config has this version")

    def command(parser, name: str, func, helptext: str, parents=(common,)):
        p = parser.add_parser(name, help=helptext, parents=list(parents))
        p.set_defaults(func=lambda args, f=func: run(f, args))
        return p

    command(sub, "status", cmd_status, "the running gateway: version, uptime, config, snapshot")
    command(sub, "reload", cmd_reload, "re-read the config file (like SIGHUP)")
    command(sub, "sources", cmd_sources, "sources (clusters) and their sync state")
    p = command(sub, "services", cmd_services, "merged services: each cluster's endpoints and health")
    p.add_argument("service", nargs="?", help="only this service (ns/name)")
    command(sub, "routes", cmd_routes, "routes, their match and request counts")
    command(sub, "tls-routes", cmd_tls_routes, "TLSRoutes: their TLS listener, mode, hostnames and services")
    p = command(sub, "explain", cmd_explain, "which route, service and endpoints a request would get")
    p.add_argument("path", help="request path, e.g. /test")
    p.add_argument("--host", help="Host header")
    p.add_argument("--method", default="GET")
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")

    src = sub.add_parser("source", help="add, remove, drain or undrain a source").add_subparsers(dest="action", required=True)
    p = command(src, "add", cmd_source_add, "add a source", (changing,))
    p.add_argument("--name", required=True)
    p.add_argument("--type", choices=["kubernetes", "static"], default="kubernetes")
    p.add_argument("--weight", type=int)
    p.add_argument("--kubeconfig", help="kubernetes: path to the kubeconfig (sent as an absolute path)")
    p.add_argument("--context", help="kubernetes: the kubeconfig context")
    p.add_argument("--namespace", action="append", help="kubernetes: watch only these namespaces")
    p.add_argument("--in-cluster", action="store_true", help="kubernetes: the cluster the gateway runs in")
    p.add_argument("--service", help="static: the service (ns/name) of --endpoint")
    p.add_argument("--endpoint", action="append", default=[], help="static: ip:port (repeat)")
    p = command(src, "remove", cmd_source_remove, "remove a source", (changing,))
    p.add_argument("name")
    for action, helptext in (("drain", "move new requests away from a source gradually (in-flight ones finish)"),
                             ("undrain", "bring a drained source back, ramping up")):
        p = command(src, action, cmd_source_drain, helptext, (changing,))
        p.add_argument("name")
        p.add_argument("--over", default="30s", help="how long the move takes (default %(default)s)")

    svc = sub.add_parser("service", help="add or remove a service").add_subparsers(dest="action", required=True)
    p = command(svc, "add", cmd_service_add, "add a service", (changing,))
    p.add_argument("service", help="ns/name (or name, in namespace default)")
    p.add_argument("--port", required=True, help="Service port number or name")
    p.add_argument("--source", action="append", help="only from these sources (default: all)")
    p.add_argument("--health-path", help="active HTTP health check on this path")
    p = command(svc, "remove", cmd_service_remove, "remove a service", (changing,))
    p.add_argument("service")

    rt = sub.add_parser("route", help="add or remove a route").add_subparsers(dest="action", required=True)
    p = command(rt, "add", cmd_route_add, "add a route", (changing,))
    p.add_argument("name")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prefix")
    group.add_argument("--exact")
    group.add_argument("--regex")
    p.add_argument("--service", required=True, help="ns/name")
    p.add_argument("--host", action="append", help="match this Host (exact or *.domain; repeat)")
    p.add_argument("--method", action="append", help="match this method (repeat)")
    p.add_argument("--rewrite", metavar="PREFIX", help="replace the matched prefix with this")
    p.add_argument("--timeout", help='whole-request timeout, e.g. "15s"')
    p.add_argument("--at", type=int, help="insert at this position (routes match in order)")
    p = command(rt, "remove", cmd_route_remove, "remove a route", (changing,))
    p.add_argument("name")

