"""The admin API against a real gateway process: reads, route explanation, Prometheus metrics,
and changes (validated, applied without a restart, written back, guarded by If-Match).

Two static sources ("zone-a", "zone-b") stand for two clusters: the API shows the same thing
whatever the kind of source, and static ones start instantly.  zone-b also lists an address
where nothing listens, so that one endpoint fails its health checks.
"""
from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
import yaml

from support import AdminClient as Admin, GatewayProcess, free_port

pytestmark = pytest.mark.timeout(60)


def endpoint(services: list[dict], address: str) -> dict:
    return next(e for s in services for e in s["endpoints"] if e["address"] == address)


@pytest.fixture(scope="module")
def dead_address():
    return f"127.0.0.3:{free_port('127.0.0.3')}"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, backend_a, backend_b, dead_address):
    config = {
        "admin": f"127.0.0.1:{free_port()}",
        "sources": [
            {"name": "zone-a", "type": "static",
             "services": [{"name": "httpbin", "endpoints": [backend_a.address]}]},
            {"name": "zone-b", "type": "static",
             "services": [{"name": "httpbin", "endpoints": [backend_b.address, dead_address]}]},
        ],
        "services": [{"name": "httpbin", "port": 8000,
                      "health_check": {"path": "/healthz", "interval": "200ms", "timeout": "100ms",
                                       "jitter": "10ms", "unhealthy_threshold": 1}}],
        "routes": [{"name": "test", "match": {"path": {"prefix": "/test"}}, "service": "httpbin",
                    "retries": {"attempts": 3}}],
    }
    g = GatewayProcess(config, tmp_path_factory.mktemp("admin"), "admin").start()
    g.admin = Admin(int(config["admin"].rsplit(":", 1)[1]))
    try:
        # Listening for clients comes first, the admin port right after it.
        deadline = time.monotonic() + 10
        while True:
            try:
                g.admin.request("GET", "/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, g.output()[-2000:]
                time.sleep(0.05)
        # The dead endpoint has failed its first check: traffic splits over the two live ones.
        g.admin.wait("/services", lambda s: not endpoint(s, dead_address)["serving"])
        yield g
    finally:
        g.stop()


def send(g: GatewayProcess, n: int, path: str = "/test/x") -> list[dict]:
    out = []
    with g.client() as c:
        for _ in range(n):
            r = c.request("GET", path)
            assert r.status == 200, (r.status, r.body[:200])
            out.append(r.json())
    return out


# -- reads ---------------------------------------------------------------------------------------


def test_healthz_ready_status(gw):
    assert gw.admin.request("GET", "/healthz")[0] == 200
    status, _, ready = gw.admin.request("GET", "/ready")
    assert status == 200 and ready["ready"] and ready["sources_not_synced"] == []
    status, headers, s = gw.admin.request("GET", "/status")
    assert status == 200
    assert s["version"] and s["uptime_s"] > 0 and s["pid"] == gw.pid
    assert s["config"]["path"] == str(gw.config_path)
    assert headers["etag"] == f'"{s["config"]["version"]}"'
    assert s["snapshot"]["version"] >= 1
    assert [(w["pid"], w["snapshot_version"], w["ready"]) for w in s["workers"]] == [
        (gw.pid, s["snapshot"]["version"], True)]


def test_sources(gw):
    sources = {s["name"]: s for s in gw.admin.get("/sources")}
    assert set(sources) == {"zone-a", "zone-b"}
    for name, count in (("zone-a", 1), ("zone-b", 2)):
        s = sources[name]
        assert (s["type"], s["state"], s["error"], s["services"], s["endpoints"]) == \
            ("static", "synced", None, 1, count)


def test_services_endpoints_health_and_counters(gw, backend_a, backend_b, dead_address):
    send(gw, 10)
    services = gw.admin.get("/services")
    assert [s["key"] for s in services] == ["default/httpbin"]
    svc = services[0]
    assert svc["serving"] == 2 and not svc["panic"]
    a, b, dead = (endpoint(services, x) for x in (backend_a.address, backend_b.address, dead_address))
    assert (a["cluster"], b["cluster"], dead["cluster"]) == ("zone-a", "zone-b", "zone-b")
    for ep in (a, b):
        assert ep["healthy"] and ep["serving"] and ep["causes"] == [] and ep["share"] == 0.5
        assert ep["reason"] is None and ep["source_state"] == "synced"
    assert a["requests"] + b["requests"] >= 10
    assert a["idle_connections"] + b["idle_connections"] >= 1     # pooled keep-alive connections
    assert not dead["healthy"] and not dead["serving"] and dead["share"] == 0
    assert dead["causes"] == ["active_check_failed"]
    assert "failing active health checks" in dead["reason"]
    clusters = {c["cluster"]: c for c in svc["clusters"]}
    assert (clusters["zone-a"]["share"], clusters["zone-b"]["share"]) == (0.5, 0.5)
    assert (clusters["zone-b"]["endpoints"], clusters["zone-b"]["serving"]) == (2, 1)

    one = gw.admin.get("/services/default/httpbin")
    assert one["key"] == "default/httpbin" and len(one["endpoints"]) == 3
    status, _, body = gw.admin.request("GET", "/services/default/nope")
    assert status == 404 and "default/nope" in body["error"]


def test_routes_and_config(gw):
    routes = gw.admin.get("/routes")
    assert [r["name"] for r in routes] == ["test"]
    assert routes[0]["match"]["path"] == {"prefix": "/test"}
    assert routes[0]["backends"] == [{"service": "default/httpbin", "weight": 1}]
    config = gw.admin.get("/config")
    assert config["path"] == str(gw.config_path)
    assert [s["name"] for s in config["sources"]] == ["zone-a", "zone-b"]
    assert config["routes"][0]["match"]["path_prefix"] == "/test"


def test_explain_route_and_shares(gw, backend_a, backend_b, dead_address):
    x = gw.admin.get("/debug/route?path=/test/abc&host=example.com&method=GET")
    assert x["route"]["name"] == "test" and x["status"] == 200
    (backend,) = x["backends"]
    assert backend["service"] == "default/httpbin" and backend["share"] == 1.0
    shares = {e["address"]: (e["share"], e["reason"]) for c in backend["clusters"] for e in c["endpoints"]}
    assert shares[backend_a.address] == (0.5, None)
    assert shares[backend_b.address] == (0.5, None)
    assert shares[dead_address][0] == 0 and "active health checks" in shares[dead_address][1]

    # The explanation routes on the normalized path, as the data plane does.
    x = gw.admin.get("/debug/route?" + urlencode({"path": "/elsewhere/%2e%2e/test/x?q=..", "host": "a.b"}))
    assert x["route"]["name"] == "test" and x["normalized_path"] == "/test/x?q=.."
    assert x["upstream_path"] == "/test/x?q=.."
    x = gw.admin.get("/debug/route?" + urlencode({"path": "/test/..%2fx"}))
    assert x["route"] is None and x["status"] == 400 and "escaped slash" in x["reason"]

    miss = gw.admin.get("/debug/route?path=/elsewhere")
    assert miss["route"] is None and miss["status"] == 404
    status, _, body = gw.admin.request("GET", "/debug/route?path=no-slash")
    assert status == 400 and "not a valid request" in body["error"]


def test_not_found_and_method_not_allowed(gw):
    assert gw.admin.request("GET", "/nothing-here")[0] == 404
    status, _, body = gw.admin.request("PATCH", "/routes")
    assert status == 405 and set(body["allowed"]) == {"GET", "POST"}


# -- metrics -------------------------------------------------------------------------------------


def _scrape(gw) -> dict:
    from prometheus_client.parser import text_string_to_metric_families
    status, headers, text = gw.admin.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def _total(samples: dict, name: str, **match) -> float:
    return sum(v for labels, v in samples.get(name, ()) if all(labels.get(k) == x for k, x in match.items()))


def test_metrics_parse_and_count_every_request(gw, backend_a, backend_b, dead_address):
    before = _scrape(gw)
    n = 37
    served = send(gw, n)
    after = _scrape(gw)

    def delta(name: str, **match) -> float:
        return _total(after, name, **match) - _total(before, name, **match)

    assert delta("gateway_requests_total") == n
    assert delta("gateway_responses_total", status_class="2xx") == n
    assert delta("gateway_route_requests_total", route="test") == n
    assert delta("gateway_route_requests_total", route="test", status_class="2xx") == n
    assert delta("gateway_route_request_duration_seconds_count", route="test") == n
    assert delta("gateway_route_request_duration_seconds_bucket", route="test", le="+Inf") == n
    assert delta("gateway_upstream_requests_total") == n
    by_host = {a: delta("gateway_upstream_requests_total", upstream_host=a)
               for a in (backend_a.address, backend_b.address)}
    assert by_host == {a: sum(1 for r in served if r["address"] == a) for a in by_host}
    assert delta("gateway_upstream_requests_total", upstream_cluster="zone-a", service="default/httpbin") \
        == by_host[backend_a.address]

    serving = {labels["upstream_host"]: v for labels, v in after["gateway_endpoint_serving"]}
    assert serving == {backend_a.address: 1, backend_b.address: 1, dead_address: 0}
    states = {(l["source"], l["state"]): v for l, v in after["gateway_source_state"]}
    assert states[("zone-a", "synced")] == 1 and states[("zone-a", "stale")] == 0
    assert after["gateway_snapshot_version"][0][1] >= 1
    for name in ("gateway_retries_total", "gateway_upstream_connect_failures_total",
                 "gateway_endpoint_ejections"):
        assert name in after, name


# -- changes -------------------------------------------------------------------------------------


def _file(gw) -> dict:
    return yaml.safe_load(gw.config_path.read_text())


def test_add_route_serves_at_once_and_survives_restart(gw):
    version = gw.admin.request("GET", "/config")[1]["etag"]
    with gw.client() as c:                      # a keep-alive client across the change
        assert c.request("GET", "/test/1").status == 200
        assert c.request("GET", "/extra/1").status == 404
        status, headers, body = gw.admin.request(
            "POST", "/routes", {"name": "extra", "match": {"path": {"prefix": "/extra"}},
                                "service": "default/httpbin", "rewrite": {"prefix": "/anything"}},
            {"If-Match": version})
        assert status == 201, body
        assert headers["etag"] != version and body["route"] == "extra"
        r = c.request("GET", "/extra/1")        # same connection, no restart
        assert r.status == 200 and r.json()["path"] == "/anything/1"
        assert c.request("GET", "/test/2").status == 200
    assert [r["name"] for r in _file(gw)["routes"]] == ["test", "extra"]
    assert not list(gw.config_path.parent.glob(".gateway-*"))      # no temporary file left

    gw.stop()
    gw.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            routes = gw.admin.get("/routes")
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert [r["name"] for r in routes] == ["test", "extra"]
    with gw.client() as c:
        assert c.request("GET", "/extra/2").status == 200


def test_invalid_change_is_refused_with_key_path_and_changes_nothing(gw):
    text = gw.config_path.read_text()
    version = gw.admin.get("/status")["config"]["version"]
    routes = [r["name"] for r in gw.admin.get("/routes")]

    status, _, body = gw.admin.request("POST", "/routes", {
        "name": "broken", "match": {"path": {"prefix": "no-slash"}}, "service": "default/nope"})
    assert status == 400
    n = len(routes)
    assert f'routes[{n}].match.path.prefix: must start with "/"' in body["errors"]
    assert f'routes[{n}].service: unknown service "default/nope" (not in services)' in body["errors"]

    status, _, body = gw.admin.request("DELETE", "/services/default/httpbin")
    assert status == 400
    assert any(e.startswith("routes[0].service: unknown service") for e in body["errors"])

    status, _, body = gw.admin.request("POST", "/sources", {"name": "zone-c", "type": "kubernetes",
                                                              "kubeconfig": "/nonexistent/kubeconfig"})
    assert status == 400 and body["errors"] == ["sources[2].kubeconfig: file not found: /nonexistent/kubeconfig"]

    status, _, body = gw.admin.request("POST", "/routes", {"name": "test", "service": "httpbin"})
    assert status == 409 and "already exists" in body["error"]
    assert gw.admin.request("DELETE", "/routes/nope")[0] == 404
    status, _, body = gw.admin.request("POST", "/routes", body=None, headers={"Content-Type": "application/json"})
    assert status == 400

    assert gw.config_path.read_text() == text
    assert gw.admin.get("/status")["config"]["version"] == version
    assert [r["name"] for r in gw.admin.get("/routes")] == routes


def test_stale_if_match_is_409(gw):
    v1 = gw.admin.request("GET", "/routes")[1]["etag"]
    status, headers, _ = gw.admin.request("POST", "/routes", {
        "name": "one", "match": {"path": {"exact": "/one"}}, "service": "httpbin"}, {"If-Match": v1})
    assert status == 201
    v2 = headers["etag"]
    text = gw.config_path.read_text()
    status, _, body = gw.admin.request("DELETE", "/routes/one", headers={"If-Match": v1})
    assert status == 409 and f'"{body["version"]}"' == v2
    assert gw.config_path.read_text() == text
    status, headers, _ = gw.admin.request("DELETE", "/routes/one", headers={"If-Match": v2})
    assert status == 200 and "one" not in [r["name"] for r in _file(gw)["routes"]]


def test_replace_and_remove_service_and_source(gw, backend_a):
    # PUT replaces: zone-a now lists its endpoint twice as heavy.
    status, _, body = gw.admin.request("PUT", "/sources/zone-a", {
        "type": "static", "weight": 200,
        "services": [{"name": "httpbin", "endpoints": [backend_a.address]}]})
    assert status == 200, body
    gw.admin.wait("/services", lambda s: endpoint(s, backend_a.address)["weight"] == 200)
    assert _file(gw)["sources"][0] == {"name": "zone-a", "type": "static", "weight": 200,
                                       "services": [{"name": "httpbin", "endpoints": [backend_a.address]}]}
    # A new service, then gone again.
    status, _, _ = gw.admin.request("POST", "/services", {"name": "other", "namespace": "apps", "port": 8000})
    assert status == 201
    assert "apps/other" in [s["key"] for s in gw.admin.get("/services")]
    assert gw.admin.request("DELETE", "/services/apps/other")[0] == 200
    assert "apps/other" not in [s["key"] for s in gw.admin.get("/services")]
