"""The cluster as a health domain (issue #26, point 3): per (service, cluster) state, automatic
drain of a cluster under 25% healthy (at most half of the clusters, never the last one), and
back with slow start; shown in /services, /sources, /metrics and logged as events.

End to end: zone A has five endpoints of which one is a real backend and four are ports
nothing listens on yet (TCP checks fail them: 1/5 = 20% healthy); zone B one backend.  Zone A
is drained: its last healthy pod gets no request.  Then pods start on the four ports, zone A
is back (healthy) and serves again.
"""
from __future__ import annotations

import time

import pytest

from gateway.devcluster.backend import BackendProcess
from gateway.health.domains import DEGRADED, DRAINED, HEALTHY, plan_drain
from support import free_port, start_backend, start_with_admin, static_source
from failoverload import Load


@pytest.mark.parametrize("clusters, raw, drained, states", [
    # 1/5 healthy in a of two clusters: drained.
    (["a"] * 5 + ["b"], [0, 1, 1, 1, 1, 0], {"a"}, {"a": DRAINED, "b": HEALTHY}),
    # 2/5 (40%): degraded, not drained.
    (["a"] * 5 + ["b"], [0, 0, 1, 1, 1, 0], set(), {"a": DEGRADED, "b": HEALTHY}),
    # Both under 25%: only half of the clusters (one), the worse; the other one serves.
    (["a"] * 5 + ["b"] * 4, [0, 1, 1, 1, 1, 0, 1, 1, 1], {"a"}, {"a": DRAINED, "b": DEGRADED}),
    # b dead counts as drained: a (20%) is the last cluster with a healthy endpoint: kept.
    (["a"] * 5 + ["b"], [0, 1, 1, 1, 1, 1], set(), {"a": DEGRADED, "b": DRAINED}),
    # Three clusters: at most one drained.
    (["a"] * 5 + ["b"] * 5 + ["c"], [0, 1, 1, 1, 1] + [0, 1, 1, 1, 1] + [0], {"a"},
     {"a": DRAINED, "b": DEGRADED, "c": HEALTHY}),
    # One cluster: never drained.
    (["a"] * 5, [0, 1, 1, 1, 1], set(), {"a": DEGRADED}),
])
def test_plan_drain(clusters, raw, drained, states):
    drain, got = plan_drain(clusters, raw)
    assert drain == drained
    assert {name: row["state"] for name, row in got.items()} == states


def test_a_cluster_under_25_percent_is_drained_and_comes_back(tmp_path):
    a0 = start_backend("127.0.0.24", "zone-a", "a-0")
    b0 = start_backend("127.0.0.25", "zone-b", "b-0")
    ports = [free_port("127.0.0.24") for _ in range(4)]
    later: list[BackendProcess] = []
    config = {
        "workers": 2,
        "sources": [static_source("zone-a", {"web": [a0.address] + [f"127.0.0.24:{p}" for p in ports]}),
                    static_source("zone-b", {"web": [b0.address]})],
        "services": [{"name": "web", "port": 8000,
                      "health_check": {"type": "tcp", "interval": "200ms", "timeout": "150ms",
                                       "jitter": "20ms", "healthy_threshold": 1, "unhealthy_threshold": 1},
                      "slow_start": {"window": "2s"}}],
        "routes": [{"name": "web", "match": {"path": {"prefix": "/"}}, "service": "web"}],
    }
    gw, admin = start_with_admin(config, tmp_path, "domain")
    try:
        svc = admin.wait("/services/default/web",
                         lambda s: s["cluster_states"].get("zone-a", {}).get("state") == DRAINED, timeout=20)
        assert svc["cluster_states"]["zone-b"]["state"] == HEALTHY
        a_row = next(e for e in svc["endpoints"] if e["address"] == a0.address)
        assert a_row["healthy"] and not a_row["serving"] and "drained" in a_row["reason"]
        sources = {s["name"]: s for s in admin.get("/sources")}
        assert sources["zone-a"]["health_domain"]["state"] == DRAINED
        status, _, metrics = admin.request("GET", "/metrics")
        assert ('gateway_cluster_state{service="default/web",cluster="zone-a",state="drained"} 1'
                in metrics.decode())

        load = Load(gw.host, gw.port, threads=2, max_requests=100).start()
        load.wait_count(200, timeout=30)
        samples = load.stop()
        assert all(s.cluster == "zone-b" and s.status == 200 for s in samples)

        later.extend(BackendProcess("127.0.0.24", p, "zone-a", f"a-{i + 1}").start() for i, p in enumerate(ports))
        admin.wait("/services/default/web",
                   lambda s: s["cluster_states"]["zone-a"]["state"] == HEALTHY, timeout=20)
        deadline = time.monotonic() + 20
        while True:                     # back, ramping: zone A answers again
            load = Load(gw.host, gw.port, threads=2, max_requests=50).start()
            load.wait_count(100, timeout=30)
            if any(s.cluster == "zone-a" for s in load.stop()):
                break
            assert time.monotonic() < deadline, "zone A never served again"
        out = gw.output()
        assert "cluster_drained" in out and "cluster_undrained" in out
    finally:
        gw.stop()
        for p in [a0, b0, *later]:
            p.stop()
