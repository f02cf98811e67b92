"""Slow start: an endpoint that becomes healthy ramps its weight up over a window.

End to end: cluster A's two pods are frozen (SIGSTOP) until the active check takes them
out, then thawed; with a 3 s window the share of requests A gets is measured in 0.5 s
slices from its recovery on, with workers: 2, and must follow the ramp (min 10% of the
weight at once, linear to 100%), within priority levels and across them.  In the parts:
the ramp formula, which endpoints ramp, the table's in-place re-weighing, and the health
manager sending weight deltas only while something ramps.
"""
from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest

from gateway.config import ConfigError, HealthCheckConfig, ServiceConfig, SlowStart, parse_config
from gateway.health.manager import RAMP_SCALE, HealthManager
from gateway.health.state import EndpointHealth, plan_levels, slow_start_share
from gateway.snapshot import Delta, EndpointSpec
from support import AdminClient, GatewayProcess, start_with_admin, two_cluster_pods

from _speedups.table import EndpointTable

pytestmark = pytest.mark.timeout(120)

WINDOW = 3.0
SLICE = 0.5


# -- the ramp --------------------------------------------------------------------------------


def test_share_is_envoys_formula():
    ramp = SlowStart(window=10.0)
    assert [slow_start_share(ramp, t) for t in (0, 0.5, 1, 5, 9.9)] == pytest.approx([0.1, 0.1, 0.1, 0.5, 0.99])
    assert slow_start_share(ramp, 10) is None and slow_start_share(ramp, 11) is None
    eager = SlowStart(window=10.0, aggression=2.0, min_weight_percent=0)
    assert slow_start_share(eager, 2.5) == pytest.approx(0.5)          # (0.25) ** (1 / 2)
    assert slow_start_share(eager, 0) == 0.0


def test_config_parses_and_names_bad_keys():
    base = {"sources": [{"name": "a", "type": "static", "services": []}], "routes": []}

    def service(**extra):
        return parse_config({**base, "services": [{"name": "web", "port": 80, **extra}]}).services[0]

    assert service().slow_start is None
    assert service(slow_start={"window": "30s"}).slow_start == SlowStart(30.0)
    assert service(slow_start={"window": "2s", "aggression": 1.5, "min_weight_percent": 25}
                   ).slow_start == SlowStart(2.0, 1.5, 25.0)
    assert service(slow_start="off").slow_start is None
    for extra, error in [({"slow_start": {}}, "services[0].slow_start.window: required"),
                         ({"slow_start": {"window": "0s"}}, "services[0].slow_start.window: must be greater"),
                         ({"slow_start": {"window": "1s", "aggression": 0}},
                          "services[0].slow_start.aggression: must be a number"),
                         ({"slow_start": {"window": "1s", "min_weight_percent": 101}},
                          "services[0].slow_start.min_weight_percent: must be a number"),
                         ({"slow_start": {"window": "1s", "windw": 1}}, 'unknown key "windw"'),
                         ({"slow_start": {"window": "1s"}, "lb": {"policy": "ring_hash", "source_ip": True}},
                          "services[0].slow_start: not with lb policy ring_hash")]:
        with pytest.raises(ConfigError) as e:
            service(**extra)
        assert error in str(e.value), (extra, str(e.value))


CHECK = HealthCheckConfig(healthy_threshold=1, unhealthy_threshold=1)
RAMP = SlowStart(window=10.0)


def test_which_endpoints_ramp():
    # A service's first endpoints: healthy from the start, not a recovery.
    first = EndpointHealth(CHECK, None)
    assert first.ramp(0.0, RAMP) is None
    # ... but once they fail and recover, they ramp.
    first.record_probe(False, 1.0)
    assert first.ramp(1.0, RAMP) is None                    # unhealthy: not ramping
    first.record_probe(True, 2.0)
    assert first.ramp(7.0, RAMP) == pytest.approx(0.5)
    assert first.ramp(12.0, RAMP) is None and first.healthy_since is None
    # initially_healthy: false at the start: its first pass is no recovery either.
    cold = EndpointHealth(HealthCheckConfig(initially_healthy=False, healthy_threshold=1), None)
    cold.record_probe(True, 1.0)
    assert cold.ramp(1.0, RAMP) is None
    # A pod that joins a running service ramps from when it joined (or its first pass).
    joined = EndpointHealth(CHECK, None, joined=5.0)
    assert joined.ramp(5.0, RAMP) == pytest.approx(0.1)
    joined_cold = EndpointHealth(HealthCheckConfig(initially_healthy=False, healthy_threshold=1), None,
                                 joined=5.0)
    assert joined_cold.ramp(6.0, RAMP) is None
    joined_cold.record_probe(True, 6.0)
    assert joined_cold.ramp(8.0, RAMP) == pytest.approx(0.2)
    assert joined.ramp(5.0, None) is None                   # no slow_start configured


def test_a_ramping_level_takes_back_its_load_as_it_ramps():
    # Level 0 (a, 3 pods) back from an outage at 10%, 50%, 100% of its weight; level 1 healthy.
    prios, clusters, raw = [0, 0, 0, 1, 1, 1], ["a"] * 3 + ["b"] * 3, [0] * 6
    for ramp, load_a in [(0.1, 0.14), (0.5, 0.7), (0.75, 1.0), (1.0, 1.0)]:
        _, levels = plan_levels(prios, clusters, raw, 0.5, 1.4, [ramp] * 3 + [1.0] * 3)
        assert levels[0].load == pytest.approx(load_a), ramp
        assert levels[0].healthy == 3


class _Ep:
    def __init__(self, key, weight, cluster="c"):
        self.key, self.weight, self.cluster = key, weight, cluster


@pytest.mark.parametrize("edf_threshold", [64, 0])
def test_set_weight_changes_shares_in_place(edf_threshold):
    table = EndpointTable([_Ep(i, 100) for i in range(4)], edf_threshold=edf_threshold)
    generation = table.generation
    table.set_weight(0, 10)
    picks = Counter(table.pick() for _ in range(3100))
    assert picks[0] == pytest.approx(100, abs=2)
    assert all(picks[i] == pytest.approx(1000, abs=2) for i in (1, 2, 3))
    table.set_weight(0, 100)
    picks = Counter(table.pick() for _ in range(4000))
    assert all(picks[i] == pytest.approx(1000, abs=2) for i in range(4))
    assert table.generation == generation
    with pytest.raises(ValueError):
        table.set_weight(0, 0)
    with pytest.raises(IndexError):
        table.set_weight(9, 1)


def test_set_weight_refuses_ring_hash():
    table = EndpointTable([_Ep(1, 1), _Ep(2, 1)], policy="ring_hash")
    with pytest.raises(ValueError):
        table.set_weight(0, 5)


def test_manager_sends_weight_deltas_only_while_ramping():
    deltas: list[Delta] = []
    config = ServiceConfig("default", "web", 80, health_check=None, outlier_detection=None,
                           slow_start=SlowStart(window=0.6))
    eps = (EndpointSpec("a", "127.0.0.2", 80, 100), EndpointSpec("b", "127.0.0.3", 80, 100))

    async def run() -> None:
        manager = HealthManager((config,), deltas.append)
        manager.start()
        manager.update({config.key: eps[:1]})
        assert deltas[-1].services[config.key][0].weight == 100 * RAMP_SCALE   # the first: no ramp
        assert not manager.ramping
        manager.update({config.key: eps})                   # a new pod joins: it ramps
        assert deltas[-1].services[config.key][1].weight == 10 * RAMP_SCALE
        assert manager.describe(config.key)[1]["slow_start"]["ramping"]
        await asyncio.sleep(1.0)
        assert not manager.ramping
        count = len(deltas)
        await asyncio.sleep(0.3)
        assert len(deltas) == count                         # nothing ramps: no deltas
        await manager.stop()

    asyncio.run(run())
    steps = [d.weights[config.key] for d in deltas if d.weights]
    assert 3 <= len(steps) <= 8, steps                      # window / 10, at least 100 ms apart
    ramp = [pairs[0][1] for pairs in steps]
    assert all(pairs[0][0] == 1 for pairs in steps)         # only the ramping endpoint
    assert ramp == sorted(ramp) and ramp[-1] == 100 * RAMP_SCALE, ramp
    assert all(not d.services and not d.flags for d in deltas[2:])


# -- end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pods():
    yield from two_cluster_pods(2)


def _gateway(tmp_path, pods, priority_b: int) -> tuple[GatewayProcess, AdminClient]:
    by_cluster = {"a": [p.address for p in pods[0::2]], "b": [p.address for p in pods[1::2]]}
    config = {
        "workers": 2,
        # a few keep-alive connections carry every request, over 10,000 each when it runs fast
        "limits": {"max_requests_per_connection": 1_000_000},
        "sources": [{"name": f"cluster-{c}", "type": "static", "priority": 0 if c == "a" else priority_b,
                     "services": [{"name": "web", "endpoints": eps}]} for c, eps in by_cluster.items()],
        # round_robin: the shares asserted are the weights' (smooth WRR follows them exactly;
        # least_request, the default, adds the in-flight counts to the choice).
        "services": [{"name": "web", "port": 8000, "slow_start": {"window": f"{WINDOW}s"},
                      "lb": {"policy": "round_robin"},
                      "health_check": {"path": "/healthz", "interval": "100ms", "timeout": "80ms",
                                       "jitter": "10ms", "unhealthy_threshold": 1,
                                       "healthy_threshold": 1}}],
        "routes": [{"name": "web", "match": {"path": {"prefix": "/"}}, "service": "web",
                    "retries": {"attempts": 3}}],
    }
    return start_with_admin(config, tmp_path, "slowstart")


def _recover_a(gw, admin, pods) -> float:
    """Freeze A's pods until the check takes them out, thaw them; when their ramp started."""
    admin.wait("/services/default/web", lambda s: s["serving"] == 4, timeout=10)
    for pod in pods[0::2]:
        pod.send_signal(signal.SIGSTOP)
    admin.wait("/services/default/web", lambda s: s["serving"] == 2, timeout=10)
    for pod in pods[0::2]:
        pod.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        eps = [e for e in admin.get("/services/default/web")["endpoints"] if e["cluster"] == "cluster-a"]
        if all(e["serving"] and e["slow_start"]["ramping"] for e in eps):
            # progress_pct is as of now: the ramp began that much of the window ago.
            return time.monotonic() - min(e["slow_start"]["progress_pct"] for e in eps) / 100 * WINDOW
        time.sleep(0.02)
    raise AssertionError(f"A's pods did not start ramping: {eps}")


def _shares_by_slice(gw, since: float, seconds: float) -> list[tuple[float, float, int]]:
    """(slice midpoint after ``since``, share of cluster A, requests) per SLICE, from as many
    requests as a few keep-alive connections (spread over the workers) get through."""
    slices: dict[int, Counter] = {}
    end = since + seconds
    clients = [gw.client() for _ in range(4)]
    try:
        n = 0
        while (now := time.monotonic()) < end:
            r = clients[n % len(clients)].request("GET", "/x")
            assert r.status == 200, (r.status, r.body[:200])
            slices.setdefault(int((now - since) / SLICE), Counter())[r.json()["cluster"]] += 1
            n += 1
    finally:
        for c in clients:
            c.close()
    return [((k + 0.5) * SLICE, c["a"] / sum(c.values()), sum(c.values())) for k, c in sorted(slices.items())
            if k >= 0]


def _mean_share_a(ramp_to_share, t: float) -> float:
    """The expected share of A over the slice around ``t`` (the ramp moves within a slice)."""
    points = [t - SLICE / 2 + SLICE * (i + 0.5) / 10 for i in range(10)]
    return sum(ramp_to_share(slow_start_share(SlowStart(WINDOW), p) or 1.0) for p in points) / len(points)


@pytest.mark.parametrize("levels", [False, True], ids=["one_level", "a_preferred"])
def test_recovered_cluster_ramps_its_share(tmp_path, pods, levels):
    gw, admin = _gateway(tmp_path, pods, 1 if levels else 0)
    try:
        started = _recover_a(gw, admin, pods)
        measured = _shares_by_slice(gw, started, WINDOW + 1.0)
        # Two pods each: in one level A has 2f of 2f + 2 weight; preferred, A's level load is
        # min(1, f x 1.4) (overprovisioning factor): its share.
        share = (lambda f: min(1.0, 1.4 * f)) if levels else (lambda f: f / (1 + f))
        print(f"\nslow start ({'A preferred' if levels else 'one level'}), share of A per "
              f"{SLICE}s: " + ", ".join(f"{t:.2f}s {s:.1%} ({n})" for t, s, n in measured))
        for t, got, n in measured:
            assert n >= 30, measured
            # Weights change in steps (every window / 10) and the ramp's start is known to
            # about a probe interval: 8 points of tolerance.
            assert got == pytest.approx(_mean_share_a(share, t), abs=0.08), (t, measured)
        assert measured[0][1] < 0.25 and measured[-1][1] > (0.45 if not levels else 0.97), measured
        eps = admin.get("/services/default/web")["endpoints"]
        assert all(not e["slow_start"]["ramping"] and e["slow_start"]["weight_pct"] == 100.0
                   for e in eps), eps
    finally:
        gw.stop()
