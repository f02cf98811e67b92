"""One state for N workers: the same traffic gives the same numbers with 1 and 2 workers.

Workers own their counters and report what moved; the control plane adds them up for
/services and /metrics.  Passive health is decided once, in the control plane, from what
every worker reports, so a threshold of N consecutive failures means N whatever the
worker count.  Real gateway and worker processes, real backends, a refused port.
"""
from __future__ import annotations

import concurrent.futures
import time
from collections import Counter

import pytest

from support import free_port, static_source
from test_workers import _scrape, _total, start_gateway

pytestmark = pytest.mark.timeout(90)

N = 60          # requests to each service


def _config(backend_a, backend_b, dead: str, workers: int, **extra) -> dict:
    cfg = {
        "workers": workers,
        "admin": f"127.0.0.1:{free_port()}",
        "timeouts": {"drain": "2s"},
        # One endpoint per service: which endpoint serves does not depend on how the
        # requests fell on the workers (each balances on its own).
        "sources": [static_source("zone-a", {"live": [backend_a.address], "dead": [dead]}),
                    static_source("zone-b", {"other": [backend_b.address]})],
        "services": [{"name": "live", "port": 8000}, {"name": "other", "port": 8000},
                     # No ejection: every request to it fails the same way with any worker count.
                     {"name": "dead", "port": 8000, "outlier_detection": "off"}],
        "routes": [{"name": "live", "match": {"path": {"prefix": "/live"}}, "service": "live"},
                   {"name": "other", "match": {"path": {"prefix": "/other"}}, "service": "other"},
                   {"name": "dead", "match": {"path": {"prefix": "/dead"}}, "service": "dead",
                    "retries": {"attempts": 1}}],
    }
    cfg.update(extra)
    return cfg


def _send_spread(g, path: str, n: int) -> Counter:
    """``n`` requests, each on a new connection (SO_REUSEPORT spreads them over workers);
    the statuses seen."""
    statuses: Counter = Counter()
    for i in range(n):
        with g.client() as c:
            statuses[c.request("GET", f"{path}/{i}").status] += 1
    return statuses


def _workers_that_served(g, n: int) -> set[str]:
    """Request ids start with a random per-process prefix: which processes answered."""
    return {e["request_id"].split("-")[0] for e in g.log.wait_count(n, timeout=10)}


def one_connection_per_worker(g, workers: int, attempts: int = 200) -> tuple[dict, int]:
    """Keep-alive clients, one accepted by each worker process, by the random prefix of
    the request ids that worker makes (asked on a path no route takes); and how many
    requests that took."""
    found: dict[str, object] = {}
    for asked in range(1, attempts + 1):
        c = g.client()
        prefix = c.request("GET", "/no-route-here").header("x-request-id").split("-")[0]
        if prefix in found:
            c.close()
        else:
            found[prefix] = c
        if len(found) == workers:
            return found, asked
    for c in found.values():
        c.close()
    raise AssertionError(f"{attempts} connections reached only {len(found)} of {workers} workers")


def _run(tmp_path, backend_a, backend_b, workers: int) -> tuple[dict, dict, set]:
    dead = f"127.0.0.1:{free_port()}"
    g, admin = start_gateway(tmp_path / f"w{workers}", _config(backend_a, backend_b, dead, workers))
    try:
        assert _send_spread(g, "/live", N) == {200: N}
        assert _send_spread(g, "/other", N) == {200: N}
        assert _send_spread(g, "/dead", N) == {503: N}
        served = _workers_that_served(g, 3 * N)
        # Workers report once a second: wait until every request is counted.
        admin.wait("/status", lambda s: s["stats"].get("requests") == 3 * N, timeout=5)
        services = {s["key"]: s for s in admin.get("/services")}
        metrics = _scrape(admin)
        return services, metrics, served
    finally:
        g.stop()


def _endpoint_rows(services: dict) -> dict:
    rows = {}
    for key, svc in services.items():
        for e in svc["endpoints"]:
            address = "dead" if key == "default/dead" else e["address"]
            rows[(key, e["cluster"], address)] = {f: e[f] for f in (
                "requests", "errors", "responses", "in_flight", "serving", "healthy")}
    return rows


METRICS = ("gateway_requests_total", "gateway_responses_total", "gateway_retries_total",
           "gateway_upstream_connect_failures_total", "gateway_requests_in_flight",
           "gateway_route_requests_total", "gateway_route_request_duration_seconds_count",
           "gateway_upstream_requests_total", "gateway_upstream_failures_total",
           "gateway_upstream_request_duration_seconds_count")


def _metric_totals(metrics: dict) -> dict:
    out = {}
    for name in METRICS:
        for labels, value in metrics.get(name, ()):
            labels = dict(labels)
            if "upstream_host" in labels and labels.get("service") == "default/dead":
                labels["upstream_host"] = "dead"    # a different refused port in each run
            out[(name, tuple(sorted(labels.items())))] = value
    return out


def test_one_and_two_workers_report_the_same_totals(tmp_path, backend_a, backend_b):
    one = _run(tmp_path, backend_a, backend_b, workers=1)
    two = _run(tmp_path, backend_a, backend_b, workers=2)
    assert len(two[2]) == 2, f"both workers must have served: {two[2]}"
    rows1, rows2 = _endpoint_rows(one[0]), _endpoint_rows(two[0])
    assert rows1 == rows2
    dead = rows2[("default/dead", "zone-a", "dead")]
    assert dead["requests"] == N and dead["errors"] == N, dead
    assert [r["requests"] for k, r in rows2.items() if k[0] != "default/dead"] == [N, N]
    m1, m2 = _metric_totals(one[1]), _metric_totals(two[1])
    assert m1 == m2
    assert _total(two[1], "gateway_upstream_failures_total") == N
    assert _total(two[1], "gateway_upstream_connect_failures_total") == N
    assert _total(two[1], "gateway_responses_total", status_class="5xx") == N
    assert _total(two[1], "gateway_requests_in_flight") == 0


def test_passive_ejection_counts_failures_across_workers(tmp_path, backend_a, backend_b):
    """consecutive_failures: 4 with 2 workers: ejected after the 4th failure in total, though
    neither worker alone saw 4 (a per-worker count would need up to 7)."""
    dead = f"127.0.0.1:{free_port()}"
    cfg = _config(backend_a, backend_b, dead, workers=2)
    cfg["services"][0]["outlier_detection"] = {"consecutive_failures": 4, "base_ejection_time": "30s"}
    cfg["sources"] = [static_source("zone-a", {"live": [backend_a.address, dead]}),
                      static_source("zone-b", {"live": [backend_b.address]})]
    g, admin = start_gateway(tmp_path, cfg)
    try:
        def dead_row() -> dict:
            svc = admin.get("/services/default/live")
            return next(e for e in svc["endpoints"] if e["address"] == dead)

        # One keep-alive connection accepted by each worker (which worker accepts is the
        # kernel's choice: found by the worker's request-id prefix on an unrouted path), then
        # requests alternate over them, so both workers see the dead endpoint fail.
        by_worker, probes = one_connection_per_worker(g, 2)
        conns = list(by_worker.values())
        statuses = Counter()
        try:
            for i in range(40):
                statuses[conns[i % 2].request("GET", f"/live/{i}").status] += 1
                time.sleep(0.02)            # each report reaches the control plane first
                if "ejected" in dead_row()["causes"]:
                    break
        finally:
            for c in conns:
                c.close()
        assert statuses == {200: sum(statuses.values())}, "retries hide every failure"
        assert "ejected" in dead_row()["causes"]
        served = g.log.wait_count(probes + sum(statuses.values()))
        assert {e["request_id"].split("-")[0] for e in served if e["path"].startswith("/live/")} == \
            set(by_worker)                  # both workers saw the failures
        # The ejection was a delta: every worker acknowledged it, and /status says how fast.
        delays = [w["apply_ms"] for w in admin.get("/status")["workers"]]
        assert all(d and d["samples"] >= 1 and 0 < d["max"] < 1000 for d in delays), delays
        # Stats arrive once a second: the failures counted on the dead endpoint are exactly 4.
        admin.wait("/services/default/live", lambda s: sum(
            e["errors"] for e in s["endpoints"] if e["address"] == dead) >= 4, timeout=5)
        assert dead_row()["errors"] == 4, dead_row()
        # Ejected everywhere: more traffic never reaches it.
        _send_spread(g, "/live", 20)
        time.sleep(1.5)
        assert dead_row()["errors"] == 4
    finally:
        g.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_idle_upstream_connections_are_closed_and_shown(tmp_path, backend_a, backend_b, workers):
    """Pooled connections close after timeouts.upstream_idle; /services shows the pool grow and
    empty (the sweep looks only at upstreams that served, and reports what it closed)."""
    dead = f"127.0.0.1:{free_port()}"
    cfg = _config(backend_a, backend_b, dead, workers, timeouts={"drain": "2s", "upstream_idle": "1s"})
    g, admin = start_gateway(tmp_path, cfg)
    try:
        def idle() -> int:
            svc = admin.get("/services/default/live")
            return sum(e["idle_connections"] for e in svc["endpoints"])

        with g.client() as c:
            assert [c.request("GET", f"/live/{i}").status for i in range(5)] == [200] * 5
        admin.wait("/services/default/live", lambda s: idle() >= 1, timeout=5)
        admin.wait("/services/default/live", lambda s: idle() == 0, timeout=6)
    finally:
        g.stop()


@pytest.mark.parametrize("limit", [None, 2])
def test_idle_upstream_connections_are_kept_up_to_the_limit(tmp_path, backend_a, limit):
    """``limits.max_idle_upstream_connections``: after 10 requests in flight at once to one
    endpoint, each worker keeps that many of their connections (default 1,024: all 10), no more."""
    cfg = {"workers": 2, "admin": f"127.0.0.1:{free_port()}", "timeouts": {"drain": "2s"},
           "sources": [static_source("zone-a", {"live": [backend_a.address]})],
           "services": [{"name": "live", "port": 8000}],
           "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "live"}]}
    if limit is not None:
        cfg["limits"] = {"max_idle_upstream_connections": limit}
    g, admin = start_gateway(tmp_path, cfg)
    try:
        def in_flight(i: int) -> int:
            with g.client() as c:
                return c.request("GET", "/delay/1").status
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            assert list(pool.map(in_flight, range(10))) == [200] * 10

        def idle(svc: dict) -> int:
            return sum(e["idle_connections"] for e in svc["endpoints"])
        if limit is None:
            admin.wait("/services/default/live", lambda s: idle(s) == 10, timeout=5)
        else:
            admin.wait("/services/default/live", lambda s: idle(s) >= 1, timeout=5)
            assert idle(admin.get("/services/default/live")) <= 2 * limit
    finally:
        g.stop()
