"""EndpointHealth, effective_flags and HealthManager: the health state machine with explicit clocks.

No sleeping and no sockets: every transition is driven with explicit ``now`` values, so each
threshold is checked at exactly the result that crosses it (and not one before).  The panic
rule is then fed into a real compiled ``EndpointTable`` to check where picks land.
"""
from __future__ import annotations

import asyncio

import pytest

from _speedups.table import EndpointTable
from gateway.config import HealthCheckConfig, OutlierConfig, ServiceConfig
from gateway.health.manager import HealthManager
from gateway.health.state import (FLAG_ACTIVE_FAILED, FLAG_EJECTED, GATEWAY_ERRORS, KIND_5XX,
                                  EndpointHealth, effective_flags)
from gateway.snapshot import Delta, EndpointSpec

A = FLAG_ACTIVE_FAILED
E = FLAG_EJECTED


def active(healthy: int = 2, unhealthy: int = 3, initially_healthy: bool = True) -> EndpointHealth:
    check = HealthCheckConfig(healthy_threshold=healthy, unhealthy_threshold=unhealthy,
                              initially_healthy=initially_healthy)
    return EndpointHealth(check, None)


def passive(failures: int = 3, five: int = 0, base: float = 5.0, maximum: float = 60.0,
            check: HealthCheckConfig | None = None) -> EndpointHealth:
    return EndpointHealth(check, OutlierConfig(consecutive_failures=failures, consecutive_5xx=five,
                                               base_ejection_time=base, max_ejection_time=maximum))


# -- active checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("unhealthy", [1, 2, 3, 5])
def test_active_flips_exactly_at_unhealthy_threshold(unhealthy):
    h = active(unhealthy=unhealthy)
    assert h.flags == 0
    for i in range(1, unhealthy):
        assert h.record_probe(False, float(i), "refused") is False
        assert h.flags == 0, f"flagged after {i} of {unhealthy} failures"
    assert h.record_probe(False, float(unhealthy), "refused") is True
    assert h.flags == A
    assert h.last_error == "refused"
    # Further failures change nothing (and do not report a change again).
    assert h.record_probe(False, 99.0, "refused") is False
    assert h.flags == A


@pytest.mark.parametrize("healthy", [1, 2, 4])
def test_active_recovers_exactly_at_healthy_threshold(healthy):
    h = active(healthy=healthy, unhealthy=1)
    assert h.record_probe(False, 0.0, "timeout") is True
    for i in range(1, healthy):
        assert h.record_probe(True, float(i)) is False
        assert h.flags == A, f"healthy after {i} of {healthy} passes"
    assert h.record_probe(True, float(healthy)) is True
    assert h.flags == 0
    assert h.last_error is None
    assert h.record_probe(True, 50.0) is False


def test_an_interleaved_pass_resets_the_failure_count():
    h = active(unhealthy=3)
    h.record_probe(False, 1.0)
    h.record_probe(False, 2.0)
    h.record_probe(True, 3.0)               # the run of failures is broken
    h.record_probe(False, 4.0)
    assert h.record_probe(False, 5.0) is False
    assert h.flags == 0
    assert h.record_probe(False, 6.0) is True
    assert h.flags == A


def test_an_interleaved_failure_resets_the_pass_count():
    h = active(healthy=3, unhealthy=1)
    h.record_probe(False, 0.0)
    h.record_probe(True, 1.0)
    h.record_probe(True, 2.0)
    h.record_probe(False, 3.0)              # the run of passes is broken
    h.record_probe(True, 4.0)
    assert h.record_probe(True, 5.0) is False
    assert h.flags == A
    assert h.record_probe(True, 6.0) is True
    assert h.flags == 0


def test_initially_unhealthy_starts_flagged_until_healthy_threshold():
    h = active(healthy=2, initially_healthy=False)
    assert h.flags == A
    assert h.describe(0.0)["causes"] == ["active_check_failed"]
    assert h.record_probe(True, 1.0) is False
    assert h.flags == A
    assert h.record_probe(True, 2.0) is True
    assert h.flags == 0


def test_no_health_check_starts_healthy():
    assert EndpointHealth(None, None).flags == 0
    assert EndpointHealth(None, OutlierConfig()).flags == 0


# -- passive outlier detection -----------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(GATEWAY_ERRORS))
def test_ejected_exactly_at_consecutive_failures(kind):
    h = passive(failures=3)
    assert h.record_request(kind, 1.0) is False
    assert h.record_request(kind, 2.0) is False
    assert h.flags == 0
    assert h.record_request(kind, 3.0) is True
    assert h.flags == E
    assert h.ejections == 1
    assert h.ejected_until == 3.0 + 5.0
    assert h.last_error == kind
    # While ejected, more failures do not eject again (nor lengthen the ejection).
    for t in (3.1, 3.2, 3.3):
        assert h.record_request(kind, t) is False
    assert (h.ejections, h.ejected_until) == (1, 8.0)


def test_a_success_in_between_resets_the_failure_count():
    h = passive(failures=3)
    h.record_request("connect_failed", 1.0)
    h.record_request("upstream_reset", 2.0)
    assert h.record_request(None, 2.5) is False          # success after failures
    h.record_request("connect_failed", 3.0)
    assert h.record_request("connect_timeout", 4.0) is False
    assert h.flags == 0
    assert h.record_request("upstream_timeout", 5.0) is True
    assert h.flags == E


def test_5xx_not_counted_when_consecutive_5xx_is_zero():
    h = passive(failures=2, five=0)
    for i in range(50):
        assert h.record_request(KIND_5XX, float(i)) is False
    assert h.flags == 0
    # 5xx answers do not count towards the gateway-error threshold either.
    assert h.record_request("connect_failed", 60.0) is False
    assert h.flags == 0


def test_5xx_counted_when_consecutive_5xx_is_set():
    h = passive(failures=100, five=3)
    assert h.record_request(KIND_5XX, 1.0) is False
    assert h.record_request(KIND_5XX, 2.0) is False
    assert h.flags == 0
    assert h.record_request(KIND_5XX, 3.0) is True
    assert h.flags == E
    h2 = passive(failures=100, five=2)
    h2.record_request(KIND_5XX, 1.0)
    h2.record_request(None, 1.5)
    assert h2.record_request(KIND_5XX, 2.0) is False
    assert h2.record_request(KIND_5XX, 3.0) is True


def test_unknown_kinds_and_no_outlier_config_are_ignored():
    h = passive(failures=1)
    assert h.record_request("something_else", 1.0) is False
    assert h.flags == 0
    h = EndpointHealth(None, None)
    for i in range(10):
        assert h.record_request("connect_failed", float(i)) is False
    assert h.flags == 0


def eject(h: EndpointHealth, now: float, failures: int = 1) -> None:
    for _ in range(failures - 1):
        assert h.record_request("connect_failed", now) is False
    assert h.record_request("connect_failed", now) is True


def test_ejection_times_grow_base_times_n_up_to_max():
    h = passive(failures=1, base=5.0, maximum=18.0)
    now = 0.0
    durations = []
    for _ in range(6):
        eject(h, now)
        durations.append(h.ejected_until - now)
        # Ends at its deadline; the next failure comes soon after (well within max_ejection_time).
        now = h.ejected_until
        assert h.expire(now) is True
        now += 1.0
    assert durations == [5.0, 10.0, 15.0, 18.0, 18.0, 18.0]
    assert h.ejections == 6


def test_expire_ends_the_ejection_exactly_at_the_deadline():
    h = passive(failures=1, base=5.0)
    eject(h, 100.0)
    assert h.expire(100.0) is False
    assert h.expire(104.999) is False
    assert h.flags == E
    assert h.describe(102.0)["ejected_for_s"] == 3.0
    assert h.expire(105.0) is True
    assert h.flags == 0
    assert h.last_ejection_end == 105.0
    assert h.expire(105.0) is False
    assert h.expire(200.0) is False


def test_ejection_count_resets_after_a_clean_max_ejection_time():
    h = passive(failures=1, base=5.0, maximum=30.0)
    eject(h, 0.0)
    h.expire(5.0)
    eject(h, 5.0 + 30.0)                    # exactly max later: not yet "a clean max" -> grows
    assert h.ejected_until - 35.0 == 10.0
    h.expire(45.0)
    eject(h, 45.0 + 30.001)                 # more than max later: starts afresh
    assert h.ejections == 1
    assert h.ejected_until - 75.001 == pytest.approx(5.0)


def test_passing_active_checks_end_an_ejection_early():
    check = HealthCheckConfig(healthy_threshold=2, unhealthy_threshold=2)
    h = passive(failures=3, base=30.0, check=check)
    eject(h, 10.0, failures=3)              # passive: connect failures
    h.record_probe(False, 10.5, "refused")
    h.record_probe(False, 11.0, "refused")  # active: unhealthy too
    assert h.flags == A | E
    assert set(h.describe(11.0)["causes"]) == {"active_check_failed", "ejected"}
    assert h.record_probe(True, 12.0) is False
    assert h.flags == A | E
    assert h.record_probe(True, 12.5) is True
    assert h.flags == 0, "passing active checks should end the ejection without waiting 30 s"
    assert h.expire(40.0) is False          # nothing left to expire


def test_an_ejection_ended_by_active_checks_counts_as_ended_for_the_reset():
    """After an ejection ended early by active checks and a clean max_ejection_time, the
    next ejection starts again at base_ejection_time (as after one that expired)."""
    check = HealthCheckConfig(healthy_threshold=1, unhealthy_threshold=1)
    h = passive(failures=1, base=5.0, maximum=20.0, check=check)
    eject(h, 0.0)
    h.record_probe(False, 0.5)
    h.record_probe(True, 2.0)               # ends the ejection at t=2
    assert h.flags == 0
    eject(h, 2.0 + 20.0 + 1.0)              # a clean max_ejection_time later
    assert h.ejections == 1
    assert h.ejected_until - 23.0 == 5.0


# -- effective flags: cluster-aware panic routing ------------------------------------------------


def shape(n_a: int, n_b: int) -> list[str]:
    return ["a"] * n_a + ["b"] * n_b


@pytest.mark.parametrize("threshold", [0.5, 0.9, 1.0])
@pytest.mark.parametrize("n_a,n_b", [(1, 1), (3, 1), (3, 3)])
def test_a_failing_cluster_stays_out_in_and_out_of_panic(n_a, n_b, threshold):
    clusters = shape(n_a, n_b)
    for cause in (A, E, A | E):
        raw = [cause] * n_a + [0] * n_b
        flags, panic = effective_flags(clusters, raw, threshold)
        assert flags[:n_a] == [cause] * n_a, "every endpoint of the dead cluster stays flagged"
        assert flags[n_a:] == [0] * n_b
        assert panic == (n_b / (n_a + n_b) < threshold)
    # The 3+1 case is the one where Envoy's rule would panic back into the dead cluster.
    if (n_a, n_b) == (3, 1) and threshold == 0.5:
        assert panic


def test_panic_restores_a_partially_healthy_cluster_not_a_dead_one():
    clusters = shape(3, 3)
    raw = [A, E, A, 0, A, A | E]              # 1 of 6 healthy, in cluster b
    flags, panic = effective_flags(clusters, raw, 0.5)
    assert panic
    assert flags == [A, E, A, 0, 0, 0]
    # Three clusters: the partially healthy one is restored, the two dead ones stay out.
    clusters = ["a", "a", "b", "b", "c", "c", "c", "c"]
    raw = [A, A, E, E, 0, A, A, A]
    flags, panic = effective_flags(clusters, raw, 0.5)
    assert panic
    assert flags == [A, A, E, E, 0, 0, 0, 0]


@pytest.mark.parametrize("n_a,n_b", [(1, 1), (3, 1), (3, 3), (0, 2)])
def test_nothing_healthy_anywhere_restores_everything(n_a, n_b):
    raw = [A] * n_a + [E] * n_b
    flags, panic = effective_flags(shape(n_a, n_b), raw, 0.5)
    assert panic
    assert flags == [0] * (n_a + n_b)


def test_exactly_at_the_threshold_is_not_panic():
    raw = [A, A, 0, 0]
    flags, panic = effective_flags(shape(2, 2), raw, 0.5)
    assert (flags, panic) == (raw, False)
    raw = [A, 0, 0, 0]
    assert effective_flags(shape(3, 1), raw, 0.75) == (raw, False)
    assert effective_flags(shape(3, 1), raw, 0.76)[1] is True
    # Shares that are not exact in binary: 7 of 100 at 0.07 and 7 of 25 at 0.28 are exactly
    # at the threshold too (0.07 * 100 == 7.000000000000001 in floating point).
    for threshold, total, healthy in [(0.07, 100, 7), (0.28, 25, 7), (0.7, 10, 7), (0.1, 30, 3)]:
        raw = [A] * (total - healthy) + [0] * healthy
        clusters = ["a"] * (total - healthy) + ["b"] * healthy
        assert effective_flags(clusters, raw, threshold) == (raw, False), (threshold, total, healthy)
        raw2 = [A] + raw[:-1]               # one healthy endpoint fewer: below the threshold
        assert effective_flags(clusters, raw2, threshold)[1] is True


def test_empty_service_and_zero_threshold():
    assert effective_flags([], [], 0.5) == ([], False)
    raw = [A, 0]
    assert effective_flags(["a", "b"], raw, 0.0) == (raw, False)
    assert effective_flags(["a", "b"], [A, E], 0.0) == ([0, 0], True)


# -- the flags in a real endpoint table -----------------------------------------------------------


def specs(n_a: int, n_b: int) -> list[EndpointSpec]:
    return ([EndpointSpec("cluster-a", f"127.0.0.{2 + 2 * i}", 8000, 1) for i in range(n_a)]
            + [EndpointSpec("cluster-b", f"127.0.0.{3 + 2 * i}", 8000, 1) for i in range(n_b)])


@pytest.mark.parametrize("n_a,n_b", [(1, 1), (3, 1), (3, 3)])
def test_table_with_cluster_a_failing_sends_every_pick_to_b(n_a, n_b):
    endpoints = specs(n_a, n_b)
    table = EndpointTable(endpoints)
    assert [table.pick() for _ in range(2 * (n_a + n_b))].count(-1) == 0
    raw = [A] * n_a + [0] * n_b
    flags, _ = effective_flags([e.cluster for e in endpoints], raw, 0.5)
    for i, f in enumerate(flags):
        table.set_flags(i, f)
    picks = [table.pick() for _ in range(1000)]
    assert all(table.endpoint(i).cluster == "cluster-b" for i in picks), "a pick landed on cluster A"
    # Spread evenly over B's endpoints.
    for i in range(n_a, n_a + n_b):
        assert picks.count(i) == 1000 // n_b or abs(picks.count(i) - 1000 / n_b) <= 1
    # A retry that excludes the B endpoint it tried still never goes to A while B has another.
    if n_b > 1:
        assert all(table.pick((n_a,)) >= n_a for _ in range(100))
    # Cluster A back: the split returns to the endpoint ratio.
    for i in range(n_a):
        table.set_flags(i, 0)
    picks = [table.pick() for _ in range(1000)]
    share_a = sum(1 for i in picks if table.endpoint(i).cluster == "cluster-a") / 1000
    assert share_a == pytest.approx(n_a / (n_a + n_b), abs=0.01)


def test_table_in_total_outage_panics_over_every_endpoint():
    endpoints = specs(3, 1)
    table = EndpointTable(endpoints)
    flags, panic = effective_flags([e.cluster for e in endpoints], [A, A, E, A], 0.5)
    assert panic
    for i, f in enumerate(flags):
        table.set_flags(i, f)
    assert sorted({table.pick() for _ in range(100)}) == [0, 1, 2, 3]


# -- the manager: states per endpoint, republished with effective flags ---------------------------


def test_manager_publishes_ejections_with_cluster_aware_flags():
    asyncio.run(_manager_publishes_ejections())


async def _manager_publishes_ejections():
    service = ServiceConfig("default", "httpbin", "http", health_check=None,
                            outlier_detection=OutlierConfig(consecutive_failures=2, base_ejection_time=5.0))
    published: list[Delta] = []
    suspects: list[tuple] = []
    manager = HealthManager((service,), published.append, lambda s, e: suspects.append((s, e)))
    endpoints = tuple(specs(3, 1))
    manager.update({"default/httpbin": endpoints})
    assert [e.flags for e in published[-1].services["default/httpbin"]] == [0, 0, 0, 0]
    versions = len(published)
    for ep in endpoints[:3]:
        manager.report("default/httpbin", ep.key, "connect_failed")
    await asyncio.sleep(0)
    assert len(published) == versions, "one failure each is below the threshold: nothing to publish"
    assert suspects == [("default/httpbin", ep.key) for ep in endpoints[:3]], \
        "the first failure of a run asks every worker for the next success"
    for ep in endpoints[:3]:
        manager.report("default/httpbin", ep.key, "connect_failed")
    await asyncio.sleep(0)
    assert len(published) == versions + 1, "three ejections in one loop iteration: one delta"
    delta = published[-1]
    assert delta.version == published[-2].version + 1
    assert not delta.services, "health only: no membership"
    assert delta.flags == {"default/httpbin": ((0, E), (1, E), (2, E))}
    flags = [e.flags for e in manager.snapshot().services["default/httpbin"]]
    assert flags == [E, E, E, 0]
    assert manager.panic["default/httpbin"] is True
    described = manager.describe("default/httpbin")
    assert [d["serving"] for d in described] == [False, False, False, True]
    # The same membership again (a slice update that changed nothing here) keeps the state.
    manager.update({"default/httpbin": endpoints})
    assert [e.flags for e in manager.snapshot().services["default/httpbin"]] == [E, E, E, 0]
    # An unknown endpoint or service is ignored.
    manager.report("default/httpbin", ("cluster-c", "127.0.0.9", 1), "connect_failed")
    manager.report("default/other", endpoints[0].key, "connect_failed")
    # A success from any worker ends a run: a failure after it starts counting again.
    manager.report("default/httpbin", endpoints[3].key, "connect_failed")
    manager.report("default/httpbin", endpoints[3].key, None)
    manager.report("default/httpbin", endpoints[3].key, "connect_failed")
    await asyncio.sleep(0)
    assert [e.flags for e in manager.snapshot().services["default/httpbin"]] == [E, E, E, 0]
    # The service leaves the config's view: published as None.
    manager.update({"default/httpbin": None})
    assert published[-1].services == {"default/httpbin": None}
    assert manager.snapshot().services == {}
    await manager.stop()
