"""Priority levels with Envoy-style spill-over, end to end and in their parts.

Cluster A (3 pods, priority 0) and cluster B (3 pods, priority 1) are static sources
over real backend processes; an active check every 200 ms decides health.  Pods of A
are stopped one by one; at each step the split of >= 3,000 requests must be the
issue's table (3/3 -> 100% A, 2/3 -> 93.3%, 1/3 -> 46.7%, 0/3 -> 0%) within 3 points,
with no failed request, and /services must say so per level.
"""
from __future__ import annotations

import time

import pytest

from gateway.config import ConfigError, parse_config
from gateway.health.state import level_loads, plan_levels
from support import AdminClient, GatewayProcess, start_backend, start_with_admin, two_cluster_pods

from _speedups.table import EndpointTable

pytestmark = pytest.mark.timeout(120)

REQUESTS = 3000
TOLERANCE = 0.03


# -- the load computation (Envoy's recalculatePerPriorityState) --------------------------------


@pytest.mark.parametrize("healthy_a, share_a", [(3, 1.0), (2, 0.9333), (1, 0.4667), (0, 0.0)])
def test_spill_table_of_the_issue(healthy_a, share_a):
    raw = [0] * healthy_a + [1] * (3 - healthy_a) + [0, 0, 0]
    flags, levels = plan_levels([0, 0, 0, 1, 1, 1], ["a"] * 3 + ["b"] * 3, raw, 0.5, 1.4)
    assert levels[0].load == pytest.approx(share_a, abs=1e-4)
    assert levels[1].load == pytest.approx(1 - share_a, abs=1e-4)
    assert flags == raw                 # B has capacity: no panic anywhere


def test_loads_are_normalized_when_all_levels_are_short():
    # 1/3 and 1/3 healthy: health 46.7% each, 93.3% together -> normalized to 50/50.
    assert level_loads([1.4 / 3, 1.4 / 3]) == pytest.approx([0.5, 0.5])
    assert level_loads([0.0, 0.0]) == [1.0, 0.0]


def test_panic_is_per_level_and_never_into_a_dead_cluster():
    # Level 0: clusters a (1 of 3 healthy) and c (0 of 1); level 1: b, 1 of 4 healthy.
    clusters = ["a", "a", "a", "c", "b", "b", "b", "b"]
    raw = [0, 1, 1, 1, 0, 1, 1, 1]
    flags, levels = plan_levels([0, 0, 0, 0, 1, 1, 1, 1], clusters, raw, 0.5, 1.4)
    assert [lv.panic for lv in levels] == [True, True]      # together 70% of capacity: short
    assert flags == [0, 0, 0, 1, 0, 0, 0, 0]                 # c (no healthy endpoint) stays out
    # Plenty in level 1: level 0 at 1/3 healthy is not in panic, it just spills.
    flags, levels = plan_levels([0, 0, 0, 1, 1, 1], ["a"] * 3 + ["b"] * 3, [0, 1, 1, 0, 0, 0], 0.5, 1.4)
    assert not any(lv.panic for lv in levels) and flags == [0, 1, 1, 0, 0, 0]
    # Nothing healthy: every endpoint is tried, all load to the best level.
    flags, levels = plan_levels([0, 1], ["a", "b"], [1, 1], 0.5, 1.4)
    assert flags == [0, 0] and [lv.load for lv in levels] == [1.0, 0.0]


# -- config ---------------------------------------------------------------------------------------


def _config(service: dict, sources=(("a", 0), ("b", 1), ("c", 0))) -> dict:
    return {"sources": [{"name": n, "type": "static", "priority": p,
                         "services": [{"name": "s", "endpoints": ["127.0.0.2:80"]}]} for n, p in sources],
            "services": [{"name": "s", "port": 80, **service}], "routes": []}


def test_prefer_and_priorities_resolve_per_service():
    svc = parse_config(_config({})).services[0]
    assert svc.priorities == (("a", 0), ("b", 1), ("c", 0)) and svc.overprovisioning_factor == 1.4
    svc = parse_config(_config({"prefer": ["b"]})).services[0]
    assert [svc.priority_of(n) for n in "abc"] == [1, 0, 1]     # the rest after b, by their own order
    svc = parse_config(_config({"priorities": {"c": 3}, "overprovisioning_factor": 2})).services[0]
    assert [svc.priority_of(n) for n in "abc"] == [0, 1, 3] and svc.overprovisioning_factor == 2.0
    assert parse_config(_config({}, (("a", 0), ("b", 0)))).services[0].priorities == ()


@pytest.mark.parametrize("service, error", [
    ({"prefer": ["nope"]}, 'services[0].prefer[0]: unknown source "nope"'),
    ({"prefer": ["a"], "priorities": {"a": 1}}, "services[0].prefer: use prefer or priorities, not both"),
    ({"priorities": {"a": -1}}, "services[0].priorities.a:"),
    ({"priorities": ["a"]}, "services[0].priorities: must be a mapping"),
    ({"overprovisioning_factor": 0.5}, "services[0].overprovisioning_factor: must be a number from 1"),
])
def test_bad_priority_settings_name_the_key(service, error):
    with pytest.raises(ConfigError) as e:
        parse_config(_config(service))
    assert any(m.startswith(error) for m in e.value.errors), e.value.errors


def test_bad_source_priority_names_the_key():
    cfg = _config({})
    cfg["sources"][0]["priority"] = "high"
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    assert any(m.startswith("sources[0].priority:") for m in e.value.errors), e.value.errors


# -- the compiled level step ----------------------------------------------------------------------


class _Ep:
    def __init__(self, key, cluster, weight=1):
        self.key, self.cluster, self.weight = key, cluster, weight


@pytest.mark.parametrize("edf_threshold", [64, 0])      # smooth WRR and EDF within a level
def test_table_splits_by_level_load_and_falls_through_on_exclude(edf_threshold):
    t = EndpointTable([_Ep(i, "a" if i < 3 else "b") for i in range(6)], edf_threshold=edf_threshold)
    t.update(t.endpoints, [0, 0, 0, 1, 1, 1])
    t.set_loads([(0, 9334), (1, 666)])
    assert t.levels == ((0, 9334), (1, 666))
    picks = [t.pick() for _ in range(10_000)]
    assert sum(1 for i in picks if i < 3) == 9334       # exact: smooth WRR over the levels
    assert {picks.count(i) for i in range(3)} <= {3111, 3112}
    # Level 1 has no load; a retry that excludes all of level 0 still gets an endpoint.
    t.set_loads([(0, 10_000)])
    assert {t.pick([0, 1, 2]) for _ in range(30)} == {3, 4, 5}
    # Loads survive an update that keeps the levels; a dropped level goes.
    t.update(t.endpoints[:5], [0, 0, 0, 1, 1])
    assert t.levels == ((0, 10_000), (1, 0))
    t.update(t.endpoints[:3], [0, 0, 0])
    assert t.levels == ()


def test_table_rejects_mismatched_priorities():
    t = EndpointTable([_Ep(i, "a") for i in range(2)])
    with pytest.raises(ValueError):
        t.update(t.endpoints, [0])
    assert len(t) == 2


# -- end to end -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pods():
    yield from two_cluster_pods(3)


def _gateway(tmp_path, pods, service_extra: dict) -> tuple[GatewayProcess, AdminClient]:
    by_cluster = {"a": [p.address for p in pods[0::2]], "b": [p.address for p in pods[1::2]]}
    config = {
        "sources": [{"name": f"cluster-{c}", "type": "static", "priority": 0 if c == "a" else 1,
                     "services": [{"name": "web", "endpoints": eps}]} for c, eps in by_cluster.items()],
        "services": [{"name": "web", "port": 8000, **service_extra,
                      "health_check": {"path": "/healthz", "interval": "200ms", "timeout": "150ms",
                                       "jitter": "10ms", "unhealthy_threshold": 1}}],
        "routes": [{"name": "web", "match": {"path": {"prefix": "/"}}, "service": "web",
                    "retries": {"attempts": 3}}],
    }
    return start_with_admin(config, tmp_path, "priority")


def _share_of_a(gw: GatewayProcess, n: int) -> float:
    on_a = 0
    with gw.client() as c:
        for _ in range(n):
            r = c.request("GET", "/x")
            assert r.status == 200, (r.status, r.body[:200])
            on_a += r.json()["cluster"] == "a"
    return on_a / n


def _levels(admin: AdminClient) -> list[dict]:
    return admin.get("/services/default/web")["levels"]


def test_spill_over_as_cluster_a_loses_pods(tmp_path, pods):
    from gateway.devcluster.backend import BackendProcess
    gw, admin = _gateway(tmp_path, pods, {})
    stopped: list[BackendProcess] = []
    measured = []
    try:
        admin.wait("/services/default/web", lambda s: len(s["levels"]) == 2)
        for healthy_a, expected in [(3, 1.0), (2, 0.9333), (1, 0.4667), (0, 0.0)]:
            if healthy_a < 3:
                pod = pods[2 * (2 - healthy_a)]     # a-0, then a-1, then a-2
                pod.stop()
                stopped.append(pod)
                admin.wait("/services/default/web",
                           lambda s: s["levels"][0]["healthy"] == healthy_a, timeout=10)
            share = _share_of_a(gw, REQUESTS)
            measured.append((healthy_a, share))
            assert share == pytest.approx(expected, abs=TOLERANCE), measured
            levels = _levels(admin)
            assert levels[0]["load_pct"] == pytest.approx(expected * 100, abs=0.1)
            assert levels[0]["why"] and levels[1]["why"]
        explained = admin.get("/debug/route?path=/x")["backends"][0]["levels"]
        assert [lv["share"] for lv in explained] == [0.0, 1.0]
        print("\nspill table (healthy pods of A -> share of requests on A):",
              ", ".join(f"{h}/3: {s:.1%}" for h, s in measured))
    finally:
        gw.stop()
        for pod in stopped:         # the module's other tests want all six pods
            pods[pods.index(pod)] = start_backend(pod.host, pod.cluster, pod.pod)


def test_prefer_overrides_the_source_priority(tmp_path, pods):
    gw, admin = _gateway(tmp_path, pods, {"prefer": ["cluster-b"]})
    try:
        admin.wait("/services/default/web",
                   lambda s: len(s["levels"]) == 2 and s["levels"][0]["clusters"] == ["cluster-b"])
        assert _share_of_a(gw, 300) == 0.0
    finally:
        gw.stop()
