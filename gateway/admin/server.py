"""The admin server: JSON API, Prometheus metrics, the dashboard, and config changes.

Handlers are thin: they read the gateway only through ``gateway.admin.views`` and change
it only through ``gateway.reload(config)`` after the change was validated and written to
the config file (``gateway.admin.changes``).

    GET  /status /sources /services /services/{ns}/{name} /routes /routes/{name} /tls-routes
         /config /ready /healthz /metrics /traffic /debug/route?path=&host=&method=
    POST /sources /services /routes          (add; ?at=N inserts a route at index N)
    PUT, DELETE /sources/{name} /services/{ns}/{name} /routes/{name}
    POST /reload                             (re-read the config file, like SIGHUP)
    POST /logs/reopen                        (reopen the access log file, like SIGUSR1)
    GET  /  /static/{file}                   (the dashboard)
    GET, POST /login   GET /session   POST /logout   (dashboard sign-in: gateway.admin.auth)

Changes are serialized by one lock.  Every answer about the config carries its version
as ``ETag``; a change sent with ``If-Match`` naming another version gets 409.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import re
import ssl
import time
from importlib import resources
from typing import Awaitable, Callable

from gateway.admin import auth, changes, metrics, views
from gateway.admin.http import HttpProblem, HttpServer, Request, Response, json_response
from gateway.config import ConfigError, load_config, parse_config
from gateway.health.manager import DEFAULT_DRAIN_OVER
from gateway.units import parse_duration

log = logging.getLogger("gateway.admin")

TRAFFIC_INTERVAL = 1.0          # seconds between samples of the traffic counters
TRAFFIC_SAMPLES = 600           # ten minutes of them
REBIND_GRACE = 1.0              # after a rebind, connections to the old address get this long
# The dashboard's pages run only their own scripts and cannot be framed (clickjacking).
PAGE_HEADERS = [("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
                ("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff"),
                ("Referrer-Policy", "no-referrer")]

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


class TrafficSampler:
    """Requests answered per upstream, taken once a second into a ring buffer.

    Each sample holds only the endpoints that answered in its second, so an idle
    gateway with thousands of endpoints samples nothing and keeps nothing.
    """

    def __init__(self, read: Callable[[], dict[str, tuple[str, int]]], size: int = TRAFFIC_SAMPLES) -> None:
        self.read = read
        self.samples: collections.deque = collections.deque(maxlen=size)
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.read()                         # what came before the first sample is not a rate
        self._last = time.time()
        self._timer = asyncio.get_running_loop().call_later(TRAFFIC_INTERVAL, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        now = time.time()
        self.samples.append((self._last, now, self.read()))
        self._last = now
        self._timer = asyncio.get_running_loop().call_later(TRAFFIC_INTERVAL, self._tick)

    def series(self, seconds: float = 300.0) -> dict:
        """Requests per second in each sample, per upstream_host and upstream_cluster."""
        samples = list(self.samples)
        if samples:
            cutoff = samples[-1][1] - seconds
            samples = [s for s in samples if s[1] >= cutoff]
        times: list[float] = []
        hosts: dict[str, dict] = {}
        clusters: dict[str, list[float]] = {}
        for n, (t0, t1, answered) in enumerate(samples):
            dt = max(t1 - t0, 1e-6)
            times.append(round(t1, 3))
            per_cluster: dict[str, float] = collections.defaultdict(float)
            for host, (cluster, count) in answered.items():
                per_cluster[cluster] += count
                series = hosts.setdefault(host, {"cluster": cluster, "rates": [0.0] * n})
                series["rates"].append(round(count / dt, 3))
            for series in hosts.values():
                if len(series["rates"]) < n + 1:        # nothing answered in this second
                    series["rates"].append(0.0)
            for cluster in per_cluster.keys() | clusters.keys():
                clusters.setdefault(cluster, [0.0] * n).append(round(per_cluster.get(cluster, 0.0) / dt, 3))
        return {"interval_s": TRAFFIC_INTERVAL, "times": times, "hosts": hosts, "clusters": clusters}


Route = tuple[str, "re.Pattern[str]", Callable[..., Awaitable[Response]]]


async def follow_reload(gateway) -> None:
    """The ``admin:`` settings of a reloaded config apply without a restart: the admin API
    starts, stops, or moves to its new address or certificate; new tokens apply at once."""
    cfg = gateway.config
    try:
        if cfg.admin is None:
            if gateway.admin is not None:
                admin, gateway.admin = gateway.admin, None
                await admin.stop()
                log.info("admin API stopped (admin: off)")
        elif gateway.admin is None:
            admin = AdminServer(gateway)
            await admin.start()
            gateway.admin = admin
        else:
            await gateway.admin.follow_config()
    except (OSError, ssl.SSLError) as exc:
        log.error("admin: cannot apply the new admin settings",
                  extra={"fields": {"admin": str(cfg.admin), "error": str(exc)}})


class AdminServer:
    def __init__(self, gateway) -> None:
        self.gateway = gateway
        self.http = HttpServer(self.handle)
        self.auth = auth.Authenticator()
        self.bound: tuple = ()              # (Address, TLS certificate) the server listens with
        self.traffic = TrafficSampler(lambda: views.traffic_answered(gateway))
        self._lock = asyncio.Lock()
        self._routes: list[Route] = []
        seg = r"([^/]+)"
        for method, pattern, handler in [
            ("GET", "/", self.index),
            ("GET", "/login", self.login_page),
            ("POST", "/login", self.login),
            ("POST", "/logout", self.logout),
            ("GET", "/session", self.session),
            ("GET", f"/static/{seg}", self.static),
            ("GET", "/healthz", self.healthz),
            ("GET", "/ready", self.ready),
            ("GET", "/status", self.status),
            ("GET", "/config", self.config),
            ("GET", "/metrics", self.metrics),
            ("GET", "/traffic", self.traffic_series),
            ("GET", "/debug/route", self.explain),
            ("POST", "/reload", self.reload),
            ("POST", "/logs/reopen", self.reopen_logs),
            ("GET", "/sources", self.sources),
            ("POST", "/sources", self.add("sources")),
            ("PUT", f"/sources/{seg}", self.replace("sources")),
            ("POST", f"/sources/{seg}/drain", self.drain(True)),
            ("POST", f"/sources/{seg}/undrain", self.drain(False)),
            ("DELETE", f"/sources/{seg}", self.remove("sources")),
            ("GET", "/services", self.services),
            ("GET", f"/services/{seg}/{seg}", self.service),
            ("POST", "/services", self.add("services")),
            ("PUT", f"/services/{seg}/{seg}", self.replace("services")),
            ("DELETE", f"/services/{seg}/{seg}", self.remove("services")),
            ("GET", "/routes", self.routes),
            ("GET", "/tls-routes", self.tls_routes),
            ("GET", f"/routes/{seg}", self.route),
            ("POST", "/routes", self.add("routes")),
            ("PUT", f"/routes/{seg}", self.replace("routes")),
            ("DELETE", f"/routes/{seg}", self.remove("routes")),
        ]:
            self._routes.append((method, re.compile(pattern + r"/?\Z" if pattern != "/" else r"/\Z"), handler))

    async def start(self) -> None:
        await self._listen(self.http)
        self.traffic.start()

    async def _listen(self, http: HttpServer) -> None:
        cfg = self.gateway.config
        address, cert = cfg.admin, cfg.admin_options.tls
        context = None
        if cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(cert.cert, cert.key)
        await http.start(address.host, address.port, ssl=context)
        self.bound = (address, cert)
        host, port = http.address
        scheme = "https" if cert is not None else "http"
        log.info("admin listening", extra={"fields": {"admin": f"{host}:{port}",
                                                       "dashboard": f"{scheme}://{host}:{port}/"}})

    @property
    def secure(self) -> bool:
        return self.bound[1] is not None if self.bound else False

    @property
    def port(self) -> int:
        return self.http.address[1]

    async def stop(self) -> None:
        self.traffic.stop()
        await self.http.close()

    async def follow_config(self) -> None:
        """After a reload: listen on the new address (or with the new certificate) first, then
        let the old listener go; sessions are kept (tokens are read per request, and a session
        whose token changed ends by itself).  If the new address cannot be bound the old
        one keeps serving, and the error is logged."""
        cfg = self.gateway.config
        if (cfg.admin, cfg.admin_options.tls) == self.bound:
            return
        fresh = HttpServer(self.handle)
        try:
            await self._listen(fresh)
        except (OSError, ssl.SSLError) as exc:
            log.error("admin: cannot listen on the new address; still on the old one",
                      extra={"fields": {"admin": str(cfg.admin), "error": str(exc)}})
            return
        old, self.http = self.http, fresh
        # Stop accepting at once; a request in progress (the POST /reload that got us here)
        # still gets its answer before the old connections are closed.
        old.stop_accepting()
        asyncio.get_running_loop().call_later(REBIND_GRACE, lambda: asyncio.ensure_future(old.close()))

    async def handle(self, req: Request) -> Response:
        try:
            principal = self.auth.authenticate(req, self.gateway.config, self.secure)
        except auth.Unauthenticated:
            # A browser opening a page is sent to the login page; an API client gets the 401.
            if req.method == "GET" and "text/html" in req.headers.get("accept", "") and req.path == "/":
                return Response(303, b"", "text/plain", [("Location", "/login")])
            raise
        self.auth.authorize(req, principal)
        req.principal = principal
        allowed = []
        for method, pattern, handler in self._routes:
            m = pattern.match(req.path)
            if m is None:
                continue
            if method == req.method or (method == "GET" and req.method == "HEAD"):
                return await handler(req, *m.groups())
            allowed.append(method)
        if allowed:
            raise HttpProblem(405, f"{req.method} not allowed on {req.path}", allowed=allowed)
        raise HttpProblem(404, f"nothing at {req.path}")

    def _etag(self) -> list[tuple[str, str]]:
        return [("ETag", f'"{views.config_version(self.gateway)}"')]

    # -- reads --------------------------------------------------------------------------

    async def healthz(self, req: Request) -> Response:
        return json_response({"ok": True})

    async def ready(self, req: Request) -> Response:
        ready, detail = views.readiness(self.gateway)
        return json_response(detail, 200 if ready else 503)

    async def status(self, req: Request) -> Response:
        return json_response(views.status(self.gateway), headers=self._etag())

    async def config(self, req: Request) -> Response:
        return json_response(views.config(self.gateway), headers=self._etag())

    async def sources(self, req: Request) -> Response:
        return json_response(views.sources(self.gateway), headers=self._etag())

    async def services(self, req: Request) -> Response:
        return json_response(views.services(self.gateway), headers=self._etag())

    async def service(self, req: Request, namespace: str, name: str) -> Response:
        found = views.service(self.gateway, f"{namespace}/{name}")
        if found is None:
            raise HttpProblem(404, f"no service {namespace}/{name}")
        return json_response(found, headers=self._etag())

    async def routes(self, req: Request) -> Response:
        return json_response(views.routes(self.gateway), headers=self._etag())

    async def tls_routes(self, req: Request) -> Response:
        return json_response(views.tls_routes(self.gateway), headers=self._etag())

    async def route(self, req: Request, name: str) -> Response:
        found = views.route(self.gateway, name)
        if found is None:
            raise HttpProblem(404, f"no route {name}")
        return json_response(found, headers=self._etag())

    async def metrics(self, req: Request) -> Response:
        families = views.metric_families(self.gateway)
        if metrics.wants_openmetrics(req.headers.get("accept")):
            return Response(200, metrics.render_openmetrics(families), metrics.OPENMETRICS_CONTENT_TYPE)
        return Response(200, metrics.render(families), metrics.CONTENT_TYPE)

    async def traffic_series(self, req: Request) -> Response:
        try:
            seconds = float(req.arg("seconds", "300"))
        except ValueError:
            raise HttpProblem(400, "seconds must be a number") from None
        return json_response(self.traffic.series(seconds))

    async def explain(self, req: Request) -> Response:
        path = req.arg("path")
        if not path:
            raise HttpProblem(400, "path is required, e.g. /debug/route?path=/test&host=example.com")
        headers = []
        for h in req.query.get("header", []):
            name, sep, value = h.partition(":")
            if not sep:
                raise HttpProblem(400, f"header must be name:value, got {h!r}")
            headers.append((name.strip(), value.strip()))
        try:
            answer = views.explain(self.gateway, (req.arg("method") or "GET").upper(),
                                   req.arg("host"), path, headers)
        except ValueError as exc:
            raise HttpProblem(400, str(exc)) from None
        return json_response(answer)

    # -- the dashboard ------------------------------------------------------------------

    async def index(self, req: Request) -> Response:
        return await self.static(req, "index.html")

    # -- signing in (see gateway.admin.auth) --------------------------------------------

    async def login_page(self, req: Request) -> Response:
        if self.gateway.config.admin_token is None:     # nothing to sign in to
            return Response(303, b"", "text/plain", [("Location", "/")])
        return await self.static(req, "login.html")

    async def login(self, req: Request) -> Response:
        """``{"token": "..."}`` -> a session cookie for the token's scope."""
        cfg = self.gateway.config
        if cfg.admin_token is None:
            raise HttpProblem(409, "the admin API has no token: there is nothing to sign in to")
        # Login CSRF: another site's page must not sign this browser in (to a session it chose).
        self.auth.check_origin(req, self.secure)
        body = req.json()
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token.strip():
            raise HttpProblem(400, 'send {"token": "..."}')
        scope = auth.match_token(cfg, token.strip())
        if scope is None or scope == auth.METRICS:
            log.warning("admin sign-in refused: wrong token")
            raise HttpProblem(401, "wrong token" if scope is None else
                              "the metrics token reads /metrics only: sign in with the write or read token")
        ttl = cfg.admin_options.session_ttl
        session_id, session = self.auth.sessions.create(scope, token.strip(), ttl)
        log.info("admin sign-in", extra={"fields": {"scope": scope, "sessions": len(self.auth.sessions)}})
        return json_response({"ok": True, "scope": scope, "expires_in_s": ttl},
                             headers=[("Set-Cookie", auth.session_cookie(session_id, ttl, self.secure))])

    async def logout(self, req: Request) -> Response:
        session_id = auth.cookie_value(req)
        if session_id:
            self.auth.sessions.drop(session_id)
        return json_response({"ok": True}, headers=[("Set-Cookie", auth.cleared_cookie(self.secure))])

    async def session(self, req: Request) -> Response:
        """Who the dashboard is: scope, and the CSRF token its changes must send back."""
        p: auth.Principal = req.principal
        answer = {"scope": p.scope, "via": p.via, "csrf_token": None, "expires_in_s": None}
        if p.session is not None:
            answer["csrf_token"] = p.session.csrf
            answer["expires_in_s"] = round(p.session.expires - time.monotonic())
        return json_response(answer)

    async def static(self, req: Request, name: str) -> Response:
        suffix = name[name.rfind("."):] if "." in name else ""
        if suffix not in STATIC_TYPES or "/" in name or name.startswith("."):
            raise HttpProblem(404, f"no file {name}")
        try:
            body = resources.files("gateway.admin").joinpath("static", name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise HttpProblem(404, f"no file {name}") from None
        return Response(200, body, STATIC_TYPES[suffix], list(PAGE_HEADERS))

    # -- changes ------------------------------------------------------------------------

    def add(self, section: str):
        async def handler(req: Request) -> Response:
            at = req.arg("at")
            if at is not None and not at.lstrip("-").isdigit():
                raise HttpProblem(400, "at must be an index")
            return await self._change(req, section, "add", None, req.json(),
                                      int(at) if at is not None else None)
        return handler

    def replace(self, section: str):
        async def handler(req: Request, *ident: str) -> Response:
            return await self._change(req, section, "replace", "/".join(ident), req.json())
        return handler

    def drain(self, drained: bool):
        """POST /sources/{name}/drain (or /undrain) {"over": "30s"}: move new requests away from
        the source gradually (back: ramp up), and write ``drained: true`` (or remove it) on the
        source in the config file, so that a restart keeps it; the source's watch stays."""
        async def handler(req: Request, name: str) -> Response:
            body = req.json() if req.body else {}
            over_text = body.get("over", f"{DEFAULT_DRAIN_OVER:g}s") if isinstance(body, dict) else None
            try:
                over = parse_duration(str(over_text)) if over_text is not None else -1.0
            except ValueError:
                over = -1.0
            if over < 0:
                raise HttpProblem(400, "invalid drain", errors=[f"over: must be a duration such as 30s, got {over_text!r}"])
            gw = self.gateway
            path = views.config_path(gw)
            if path is None:
                raise HttpProblem(409, "the gateway runs without a config file: nothing to change")
            entry = next((e for e in changes.read_raw(path).get("sources") or []
                          if changes.identity("sources", e) == name), None)
            if entry is None:
                raise HttpProblem(404, f"no source {name!r} in the config")
            item = {k: v for k, v in entry.items() if k != "drained"}
            if drained:
                item["drained"] = True
            was = next((s.drained for s in gw.config.sources if s.name == name), False)
            gw.health.drain_source(name, drained, over)     # before the reload: it keeps `over`
            try:
                answer = await self._change(req, "sources", "replace", name, item)
            except BaseException:
                gw.health.drain_source(name, was, 0.0)
                raise
            log.info("source drain changed through the admin API", extra={"fields": {
                "source": name, "drained": drained, "over_s": over}})
            return answer
        return handler

    def remove(self, section: str):
        async def handler(req: Request, *ident: str) -> Response:
            return await self._change(req, section, "remove", "/".join(ident))
        return handler

    def _check_version(self, req: Request) -> None:
        wanted = req.headers.get("if-match")
        if wanted is None or wanted.strip() == "*":
            return
        current = views.config_version(self.gateway)
        tags = {t.strip().removeprefix("W/").strip('"') for t in wanted.split(",")}
        if current not in tags:
            raise HttpProblem(409, "the config changed since you read it (If-Match does not match); "
                                   "read it again and retry", version=current)

    async def _change(self, req: Request, section: str, op: str, ident: str | None, item=None,
                      at: int | None = None) -> Response:
        gw = self.gateway
        api_settings = gw.file_config.gateway_api
        if section == "routes" and api_settings is not None and api_settings.console_gateway:
            # Routes live in the cluster: every replica watching it gets the change.
            from gateway.admin import httproutes
            async with self._lock:
                answer = await httproutes.change(gw, op, ident, item)
            log.info("route changed through the admin API as an HTTPRoute", extra={"fields": answer})
            return json_response(answer, 201 if op == "add" else 200, headers=self._etag())
        async with self._lock:
            self._check_version(req)
            path = views.config_path(gw)
            if path is None:
                raise HttpProblem(409, "the gateway runs without a config file: nothing to change")
            raw = changes.read_raw(path)
            new_raw = changes.edit(raw, section, op, ident, item, at)
            try:
                config = parse_config(new_raw, path=path)
            except ConfigError as err:
                raise HttpProblem(400, "invalid change: nothing applied", errors=err.errors) from None
            changes.check_writable(path)
            changes.write_atomic(path, changes.edited_text(path, section, op, ident, item, at))
            gw.reload(config)
            name = ident or changes.identity(section, item)
            log.info("config changed through the admin API", extra={"fields": {
                "section": section, "op": op, "name": name, "version": views.config_version(gw)}})
            return json_response({"ok": True, "op": op, section[:-1]: name,
                                  "version": views.config_version(gw)},
                                 201 if op == "add" else 200, headers=self._etag())

    async def reopen_logs(self, req: Request) -> Response:
        self.gateway.reopen_logs()
        return json_response({"ok": True, "path": self.gateway.config.access_log.path})

    async def reload(self, req: Request) -> Response:
        gw = self.gateway
        async with self._lock:
            self._check_version(req)
            path = views.config_path(gw)
            if path is None:
                raise HttpProblem(409, "the gateway runs without a config file")
            try:
                config = load_config(path)
            except ConfigError as err:
                raise HttpProblem(400, "the config file is invalid: the running config is kept",
                                  errors=err.errors) from None
            gw.reload(config)
            return json_response({"ok": True, "version": views.config_version(gw)}, headers=self._etag())
