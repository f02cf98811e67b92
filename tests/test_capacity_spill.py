"""Capacity spill-over (issue #26, point 4): ``services[].capacity.max_in_flight_per_endpoint``.

An endpoint with that many requests in flight is full; when every endpoint of the priority
level a request would go to is full, the request goes to the next level with room (the next
cluster) instead of queueing, and comes back as soon as there is room.  The table (every
policy, smooth WRR and EDF), the config's errors, then real processes: ``workers: 2``, a
slow cluster A (300 ms) at level 0 with a limit of 2 per worker, a fast B at level 1,
8 concurrent keep-alive clients: B takes the excess and none fails; without the limit, all
go to A.
"""
from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass

import pytest

from _speedups.table import POLICIES, EndpointTable
from failoverload import Load, failures
from gateway.config import ConfigError, parse_config
from support import start_backend, start_with_admin, static_source


@dataclass(frozen=True)
class Ep:
    key: str
    weight: int
    cluster: str


def _table(policy: str, edf_threshold: int, cap: int) -> tuple[EndpointTable, list[Ep]]:
    eps = [Ep("a1", 1, "a"), Ep("a2", 1, "a"), Ep("b1", 1, "b"), Ep("b2", 1, "b"), Ep("c1", 1, "c")]
    t = EndpointTable(policy=policy, edf_threshold=edf_threshold)
    t.update(eps, [0, 0, 1, 1, 2])
    t.set_loads([(0, 10_000)])
    t.set_capacity(cap)
    return t, eps


@pytest.mark.parametrize("edf_threshold", [64, 0], ids=["wrr", "edf"])
@pytest.mark.parametrize("policy", [p for p in POLICIES if p != "ring_hash"] + ["ring_hash"])
def test_full_level_spills_to_the_next_and_comes_back(policy, edf_threshold):
    t, eps = _table(policy, edf_threshold, 2)
    assert t.capacity == 2
    held = []

    def take() -> str:
        i = t.pick()
        assert i >= 0
        t.acquire(i)
        held.append(i)
        return eps[i].cluster

    assert sorted(take() for _ in range(4)) == ["a"] * 4        # A: 2 endpoints x 2
    assert sorted(take() for _ in range(4)) == ["b"] * 4        # A full: B
    assert take() == "c"                                        # A and B full: C
    assert take() == "c"
    # Full everywhere: as without a limit (level 0 has the load), never -1.
    assert take() == "a"
    # Room again in A (one released below its limit): the next request goes back there.
    a_held = [i for i in held if eps[i].cluster == "a"]
    for i in a_held:
        t.release(i)
    assert take() == "a"
    # A retry that excludes A's endpoints goes on to the next level with room.
    t.release(held[4])  # one of B's
    assert eps[t.pick(tuple(i for i, e in enumerate(eps) if e.cluster == "a"))].cluster == "b"
    # The marks never outlive a pick.
    assert all(t.flags(i) == 0 for i in range(len(eps)))


@pytest.mark.parametrize("policy", list(POLICIES))
def test_no_limit_or_one_level_means_no_spill(policy):
    t, eps = _table(policy, 64, 0)
    for _ in range(20):
        i = t.pick()
        t.acquire(i)
        assert eps[i].cluster == "a"
    one = EndpointTable([Ep("x", 1, "a"), Ep("y", 1, "b")], policy=policy)
    one.set_capacity(1)
    for _ in range(6):
        i = one.pick()
        assert i >= 0
        one.acquire(i)


def test_flagged_endpoints_are_not_room_and_limit_survives_update():
    t, eps = _table("round_robin", 64, 1)
    t.add_flag(0, 1)                    # a1 failed its checks: A's room is a2 only
    i = t.pick()
    assert eps[i].key == "a2"
    t.acquire(i)
    assert eps[t.pick()].cluster == "b"
    t.update(eps, [0, 0, 1, 1, 2])      # a new snapshot keeps the limit and the in-flight counts
    assert t.capacity == 1
    assert eps[t.pick()].cluster == "b"
    with pytest.raises(ValueError):
        t.set_capacity(-1)
    with pytest.raises(ValueError):
        t.set_flags(0, 1 << 29)         # the capacity mark is not a health flag


def test_rate_limit_spills_and_refills():
    t, eps = _table("round_robin", 64, 0)
    t.set_capacity(0, 10.0)             # 10 requests/s per endpoint, a bucket of 1
    assert (t.capacity, t.max_rate) == (0, 10.0)
    # A tight loop (well under 100 ms): A's two endpoints take one request each, then B's, C's.
    got = [eps[t.pick()].cluster for _ in range(5)]
    assert got == ["a", "a", "b", "b", "c"], got
    # Every bucket empty: as without a limit (level 0), and no debt is kept.
    assert eps[t.pick()].cluster == "a"
    # A refills at 10/s: within a bounded wait, a pick goes back to A.
    deadline = time.monotonic() + 5
    while eps[t.pick()].cluster != "a":
        assert time.monotonic() < deadline, "A's bucket never refilled"
        time.sleep(0.01)
    with pytest.raises(ValueError):
        t.set_capacity(0, -1.0)


SOURCES = [{"name": n, "type": "static", "services": []} for n in ("zone-a", "zone-b")]


def test_config_capacity_default_off_and_errors_name_the_key():
    cfg = parse_config({"sources": SOURCES, "services": [{"name": "w", "port": 80}]})
    assert cfg.services[0].capacity.max_in_flight_per_endpoint == 0
    cfg = parse_config({"sources": SOURCES, "services": [
        {"name": "w", "port": 80, "failover": ["zone-b"], "capacity": {"max_in_flight_per_endpoint": 8}}]})
    assert cfg.services[0].capacity.max_in_flight_per_endpoint == 8
    assert cfg.services[0].capacity.max_rate_per_endpoint == 0.0
    cfg = parse_config({"sources": SOURCES, "services": [
        {"name": "w", "port": 80, "failover": ["zone-b"], "capacity": {"max_rate_per_endpoint": 250}}]})
    assert cfg.services[0].capacity.max_rate_per_endpoint == 250.0
    for bad, error in [({"max_in_flight_per_endpoint": 0},
                        "services[0].capacity.max_in_flight_per_endpoint: must be an integer from 1"),
                       ({"max_in_flight_per_endpoint": "lots"},
                        "services[0].capacity.max_in_flight_per_endpoint: must be an integer"),
                       ({"max_inflight": 3}, 'services[0].capacity: unknown key "max_inflight"'),
                       ({"max_rate_per_endpoint": 0}, "services[0].capacity.max_rate_per_endpoint: must be a number"),
                       ("x", "services[0].capacity: must be a mapping")]:
        with pytest.raises(ConfigError) as err:
            parse_config({"sources": SOURCES, "services": [{"name": "w", "port": 80, "capacity": bad}]})
        assert error in str(err.value)
    # One priority level: nowhere to spill to, so a limit is refused rather than ignored.
    with pytest.raises(ConfigError) as err:
        parse_config({"sources": SOURCES, "services": [
            {"name": "w", "port": 80, "capacity": {"max_in_flight_per_endpoint": 4}}]})
    assert "services[0].capacity: needs a second priority level to spill to" in str(err.value)
    with pytest.raises(ConfigError) as err:     # two levels, but the service uses only one source
        parse_config({"sources": SOURCES, "services": [
            {"name": "w", "port": 80, "sources": ["zone-a"], "failover": ["zone-b"],
             "capacity": {"max_rate_per_endpoint": 4}}]})
    assert "services[0].capacity: needs a second priority level" in str(err.value)
    prioritized = [{**SOURCES[0]}, {**SOURCES[1], "priority": 1}]
    cfg = parse_config({"sources": prioritized, "services": [
        {"name": "w", "port": 80, "capacity": {"max_in_flight_per_endpoint": 4}}]})
    assert cfg.services[0].capacity.max_in_flight_per_endpoint == 4


def _fault(backend, query: str) -> None:
    with urllib.request.urlopen(f"http://{backend.host}:{backend.port}/_backend/fault?{query}",
                                timeout=5) as resp:
        assert resp.status == 200


def _max_overlap(samples, trim: float) -> int:
    """Most requests in flight at once among ``samples`` (client-side times, each shortened
    by ``trim`` at both ends: the gateway's own time around the backend's)."""
    events = []
    for s in samples:
        if s.done - s.sent > 2 * trim:
            events += [(s.sent + trim, 1), (s.done - trim, -1)]
    most = now = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        now += step
        most = max(most, now)
    return most


@pytest.mark.parametrize("limit", [2, None], ids=["limit-2", "off"])
def test_slow_cluster_spills_its_excess_to_the_next(tmp_path, limit):
    # B has room for all 8 clients in either worker (3 pods x 2 + A's 2), so that the limit
    # is never reached everywhere (then requests would go to A as without a limit).
    pods = {"zone-a": [start_backend("127.0.0.46", "zone-a", "a-0")],
            "zone-b": [start_backend(f"127.0.0.{47 + i}", "zone-b", f"b-{i}") for i in range(3)]}
    gw = load = None
    try:
        _fault(pods["zone-a"][0], "delay=0.3")      # every answer of A 300 ms late
        service = {"name": "web", "port": 8000, "failover": ["zone-b"]}
        if limit:
            service["capacity"] = {"max_in_flight_per_endpoint": limit}
        config = {"workers": 2,
                  "sources": [static_source(z, {"web": [p.address for p in ps]}) for z, ps in pods.items()],
                  "services": [service],
                  "routes": [{"name": "web", "match": {"path": {"prefix": "/"}}, "service": "web"}]}
        gw, admin = start_with_admin(config, tmp_path, f"spill-{limit}")
        admin.wait("/services/default/web", lambda s: s["serving"] == 4, timeout=20)
        assert admin.get("/services/default/web")["capacity"] == {"max_in_flight_per_endpoint": limit or 0,
                                                                  "max_rate_per_endpoint": 0.0}
        load = Load(gw.host, gw.port, threads=8, deadline=60).start()
        load.wait_count(120, timeout=45)
        samples = load.stop()
        assert not failures(samples), failures(samples)[:5]
        by = {z: [s for s in samples if s.cluster == z] for z in pods}
        assert len(by["zone-a"]) + len(by["zone-b"]) == len(samples)
        if limit is None:
            assert not by["zone-b"], f"{len(by['zone-b'])} of {len(samples)} went to B with no limit"
            assert _max_overlap(by["zone-a"], 0.05) >= 4      # A took the concurrency itself
        else:
            # A serves what its limit lets in (2 workers x 2), B the rest; A is never starved.
            assert by["zone-a"], "A got nothing: spill-over must not empty a level with room"
            assert len(by["zone-b"]) > len(by["zone-a"]), {z: len(v) for z, v in by.items()}
            assert _max_overlap(by["zone-a"], 0.05) <= 2 * limit + 1
            b_times = sorted(s.seconds for s in by["zone-b"])
            assert b_times[len(b_times) // 2] < 0.15    # the excess did not queue behind A's 300 ms
    finally:
        if load is not None:
            load.stop()
        if gw is not None:
            gw.stop()
        for p in [p for ps in pods.values() for p in ps]:
            p.stop()


def _paced(gw, threads: int, pause: float, seconds: float) -> list[tuple[int, str | None]]:
    """(status, cluster) of requests from ``threads`` keep-alive clients, each pausing ``pause``
    s between requests, for ``seconds`` (bounded: an offered load, not a closed loop at full speed)."""
    import threading
    from support import Client
    out: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def run() -> None:
        end = time.monotonic() + seconds
        with Client(gw.host, gw.port, timeout=10) as c:
            while time.monotonic() < end:
                r = c.request("GET", "/anything")
                with lock:
                    out.append((r.status, r.json().get("cluster") if r.status == 200 else None))
                time.sleep(pause)

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=seconds + 30)
    return out


def test_rate_limit_spills_with_real_processes(tmp_path):
    """A limited to 30 requests/s per endpoint (per worker, workers: 2), B has room (3 pods):
    2 clients offering ~90 requests/s for 4 s; A answers at most its rate, B the rest, none fails."""
    pods = {"zone-a": [start_backend("127.0.0.46", "zone-a", "a-0")],
            "zone-b": [start_backend(f"127.0.0.{47 + i}", "zone-b", f"b-{i}") for i in range(3)]}
    gw = None
    rate, seconds = 30.0, 4.0
    try:
        config = {"workers": 2,
                  "sources": [static_source(z, {"web": [p.address for p in ps]}) for z, ps in pods.items()],
                  "services": [{"name": "web", "port": 8000, "failover": ["zone-b"],
                                "capacity": {"max_rate_per_endpoint": rate}}],
                  "routes": [{"name": "web", "match": {"path": {"prefix": "/"}}, "service": "web"}]}
        gw, admin = start_with_admin(config, tmp_path, "spill-rate")
        admin.wait("/services/default/web", lambda s: s["serving"] == 4, timeout=20)
        answers = _paced(gw, threads=2, pause=0.02, seconds=seconds)
        assert answers and all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:5]
        a = sum(1 for _, cluster in answers if cluster == "zone-a")
        b = sum(1 for _, cluster in answers if cluster == "zone-b")
        assert a + b == len(answers)
        # At most both workers' rate over the run plus their buckets (3 requests each); more
        # offered than that, so B took the excess.
        assert 0 < a <= 2 * rate * seconds * 1.2 + 6, (a, b)
        assert b > 0, (a, b)
        print(f"rate spill: A {a}, B {b} in {seconds:g} s (A's limit {2 * rate * seconds:g})")
    finally:
        if gw is not None:
            gw.stop()
        for p in [p for ps in pods.values() for p in ps]:
            p.stop()
