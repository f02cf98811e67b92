"""The admin server: JSON API, Prometheus metrics, the dashboard, and config changes.

Handlers are thin: they read the gateway only through ``gateway.admin.views`` and change
it only through ``gateway.reload(config)`` after the change was validated and written to
the config file (``gateway.admin.changes``).

    GET  /status /sources /services /services/{ns}/{name} /routes /routes/{name}
         /config /ready /healthz /metrics /traffic /debug/route?path=&host=&method=
    POST /sources /services /routes          (add; ?at=N inserts a route at index N)
    PUT, DELETE /sources/{name} /services/{ns}/{name} /routes/{name}
    POST /reload                             (re-read the config file, like SIGHUP)
    POST /logs/reopen                        (reopen the access log file, like SIGUSR1)
    GET  /  /static/{file}                   (the dashboard)

Changes are serialized by one lock.  Every answer about the config carries its version
as ``ETag``; a change sent with ``If-Match`` naming another version gets 409.
"""
from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import re
import time
from importlib import resources
from typing import Awaitable, Callable

from gateway.admin import changes, metrics, views
from gateway.admin.http import HttpProblem, HttpServer, Request, Response, json_response
from gateway.config import ConfigError, load_config, parse_config

log = logging.getLogger("gateway.admin")

TRAFFIC_INTERVAL = 1.0          # seconds between samples of the traffic counters
TRAFFIC_SAMPLES = 600           # ten minutes of them

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


class TrafficSampler:
    """Counters of requests per upstream, sampled once a second into a ring buffer."""

    def __init__(self, read: Callable[[], dict[str, tuple[str, int]]], size: int = TRAFFIC_SAMPLES) -> None:
        self.read = read
        self.samples: collections.deque = collections.deque(maxlen=size)
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self.samples.append((time.time(), self.read()))
        self._timer = asyncio.get_running_loop().call_later(TRAFFIC_INTERVAL, self._tick)

    def series(self, seconds: float = 300.0) -> dict:
        """Requests per second between consecutive samples, per upstream_host and upstream_cluster."""
        samples = list(self.samples)
        if samples:
            cutoff = samples[-1][0] - seconds
            while len(samples) > 2 and samples[1][0] < cutoff:
                samples.pop(0)
        times: list[float] = []
        hosts: dict[str, dict] = {}
        clusters: dict[str, list[float]] = {}
        for n, ((t0, before), (t1, after)) in enumerate(zip(samples, samples[1:])):
            dt = max(t1 - t0, 1e-6)
            times.append(round(t1, 3))
            per_cluster: dict[str, float] = collections.defaultdict(float)
            for host, (cluster, count) in after.items():
                prev = before.get(host, (cluster, 0))[1]
                delta = count - prev if count >= prev else count   # a new Upstream counts from 0
                per_cluster[cluster] += delta
                series = hosts.setdefault(host, {"cluster": cluster, "rates": [0.0] * n})
                series["rates"].append(round(delta / dt, 3))
            for series in hosts.values():
                if len(series["rates"]) < n + 1:        # gone from the snapshot
                    series["rates"].append(0.0)
            for cluster in per_cluster.keys() | clusters.keys():
                clusters.setdefault(cluster, [0.0] * n).append(round(per_cluster.get(cluster, 0.0) / dt, 3))
        return {"interval_s": TRAFFIC_INTERVAL, "times": times, "hosts": hosts, "clusters": clusters}


Route = tuple[str, "re.Pattern[str]", Callable[..., Awaitable[Response]]]


class AdminServer:
    def __init__(self, gateway) -> None:
        self.gateway = gateway
        self.http = HttpServer(self.handle)
        self.traffic = TrafficSampler(lambda: views.traffic_counters(gateway))
        self._lock = asyncio.Lock()
        self._routes: list[Route] = []
        seg = r"([^/]+)"
        for method, pattern, handler in [
            ("GET", "/", self.index),
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
            ("DELETE", f"/sources/{seg}", self.remove("sources")),
            ("GET", "/services", self.services),
            ("GET", f"/services/{seg}/{seg}", self.service),
            ("POST", "/services", self.add("services")),
            ("PUT", f"/services/{seg}/{seg}", self.replace("services")),
            ("DELETE", f"/services/{seg}/{seg}", self.remove("services")),
            ("GET", "/routes", self.routes),
            ("GET", f"/routes/{seg}", self.route),
            ("POST", "/routes", self.add("routes")),
            ("PUT", f"/routes/{seg}", self.replace("routes")),
            ("DELETE", f"/routes/{seg}", self.remove("routes")),
        ]:
            self._routes.append((method, re.compile(pattern + r"/?\Z" if pattern != "/" else r"/\Z"), handler))

    async def start(self) -> None:
        address = self.gateway.config.admin
        await self.http.start(address.host, address.port)
        self.traffic.start()
        host, port = self.http.address
        log.info("admin listening", extra={"fields": {"admin": f"{host}:{port}",
                                                       "dashboard": f"http://{host}:{port}/"}})

    @property
    def port(self) -> int:
        return self.http.address[1]

    async def stop(self) -> None:
        self.traffic.stop()
        await self.http.close()

    async def handle(self, req: Request) -> Response:
        self._authorize(req)
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

    def _authorize(self, req: Request) -> None:
        """With a token configured, every request but the probes must carry it."""
        token = self.gateway.config.admin_token
        if token is None or req.path in ("/healthz", "/ready"):
            return
        sent = req.headers.get("authorization", "")
        expected = f"Bearer {token}"
        if not hmac.compare_digest(sent.encode(), expected.encode()):   # constant time
            raise HttpProblem(401, "a bearer token is required (Authorization: Bearer ...)")

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

    async def route(self, req: Request, name: str) -> Response:
        found = views.route(self.gateway, name)
        if found is None:
            raise HttpProblem(404, f"no route {name}")
        return json_response(found, headers=self._etag())

    async def metrics(self, req: Request) -> Response:
        return Response(200, metrics.render(views.metric_families(self.gateway)), metrics.CONTENT_TYPE)

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

    async def static(self, req: Request, name: str) -> Response:
        suffix = name[name.rfind("."):] if "." in name else ""
        if suffix not in STATIC_TYPES or "/" in name or name.startswith("."):
            raise HttpProblem(404, f"no file {name}")
        try:
            body = resources.files("gateway.admin").joinpath("static", name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise HttpProblem(404, f"no file {name}") from None
        return Response(200, body, STATIC_TYPES[suffix])

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
            changes.write_atomic(path, new_raw)
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
