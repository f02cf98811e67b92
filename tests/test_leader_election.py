"""Leader election (gateway.gatewayapi.leader) against the local API server, real client.

Each test campaigns for a Lease of its own in ``default``, with short timings (lease 2 s,
renew deadline 1.5 s, retry 0.3 s unless a test needs more room). Events are recorded with
their monotonic time on the asyncio loop the callbacks are delivered to; every wait is a
bounded poll, and the bounds asserted are the ones the election promises plus a margin for a
busy machine. Electors are stopped at teardown; the child process by its pid.
"""
from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from kubernetes import client, config, watch

from gateway.devcluster import _process
from gateway.devcluster.apiserver import ApiServerProcess
from support import LoopThread, wait_until
from gateway.gatewayapi.leader import JITTER_FACTOR, LeaderElector, default_identity

NS = "default"
FAST = {"lease_duration": 2, "renew_deadline": 1.5, "retry_period": 0.3}
SLACK = 1.0     # scheduling delays on a loaded 2-core machine, added to every upper bound
CHILD = Path(__file__).with_name("leader_child.py")

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory):
    server = ApiServerProcess(tmp_path_factory.mktemp("api"), name="leader", persist=False).start()
    yield server
    server.stop()


def api_client(apiserver) -> client.ApiClient:
    """A client of its own per elector (its own connections, as a replica has), without
    urllib3's retries, as the gateway builds it."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(apiserver.kubeconfig), context=apiserver.context,
                            client_configuration=configuration)
    configuration.retries = 0
    return client.ApiClient(configuration)


@pytest.fixture(scope="module")
def leases(apiserver):
    with api_client(apiserver) as api:
        yield client.CoordinationV1Api(api)


@pytest.fixture(scope="module")
def loop():
    with LoopThread() as thread:
        yield thread


class Candidate:
    """An elector and what its callbacks reported, each with the monotonic time it arrived."""

    def __init__(self, elector: LeaderElector) -> None:
        self.elector = elector
        self.started: list[float] = []
        self.stopped: list[float] = []
        self.leaders: list[str] = []
        elector.on_started_leading = lambda: self.started.append(time.monotonic())
        elector.on_stopped_leading = lambda: self.stopped.append(time.monotonic())
        elector.on_new_leader = self.leaders.append

    @property
    def identity(self) -> str:
        return self.elector.identity


@pytest.fixture
def candidates(apiserver, loop):
    """``candidates(lease, identity, cls=LeaderElector, **timing)`` starts a candidate."""
    made: list[tuple[Candidate, client.ApiClient]] = []

    def make(lease: str, identity: str, cls=LeaderElector, **timing) -> Candidate:
        api = api_client(apiserver)
        candidate = Candidate(cls(api, NS, lease, identity=identity, **{**FAST, **timing}))
        made.append((candidate, api))
        candidate.elector.start(loop.loop)
        return candidate

    yield make
    for candidate, api in made:
        assert candidate.elector.stop(timeout=10), f"{candidate.identity} did not stop"
        api.close()


def lease_name() -> str:
    return f"lease-{uuid.uuid4().hex[:8]}"


def the_leader(group: list[Candidate]) -> Candidate | None:
    leading = [c for c in group if c.elector.is_leader]
    assert len(leading) <= 1, [c.identity for c in leading]
    return leading[0] if leading else None


def test_three_candidates_elect_exactly_one(candidates, leases):
    name = lease_name()
    group = [candidates(name, f"replica-{i}") for i in range(3)]
    leader = wait_until(lambda: the_leader(group), timeout=10, message="a leader")
    wait_until(lambda: all(c.elector.leader == leader.identity for c in group), message="all see it")
    lease = leases.read_namespaced_lease(name, NS)
    assert lease.spec.holder_identity == leader.identity
    assert lease.spec.lease_duration_seconds == 2 and lease.spec.lease_transitions == 0

    # Over three renewals, nobody else ever leads, and everyone heard of this one leader only.
    renewals = {lease.spec.renew_time}

    def renewed_three_times() -> bool:
        renewals.add(leases.read_namespaced_lease(name, NS).spec.renew_time)
        return len(renewals) > 3

    wait_until(renewed_three_times, message="three renewals")
    assert leases.read_namespaced_lease(name, NS).spec.holder_identity == leader.identity
    wait_until(lambda: all(c.leaders == [leader.identity] for c in group), message="on_new_leader")
    assert [len(c.started) for c in group] == [int(c is leader) for c in group]
    assert not any(c.stopped for c in group)
    assert leader.elector.status()["acquired"] == 1 and leader.elector.status()["lost"] == 0


def test_a_released_lease_is_taken_at_the_next_retry(candidates, leases):
    # A long lease: a successor taking it well before lease_duration can only come from the release.
    timing = {"lease_duration": 10, "renew_deadline": 3, "retry_period": 0.3}
    name = lease_name()
    first = candidates(name, "first", **timing)
    wait_until(lambda: first.started, message="first leads")
    second = candidates(name, "second", **timing)
    wait_until(lambda: second.elector.leader == "first", message="second sees first")

    stop_at = time.monotonic()
    assert first.elector.stop(timeout=10)
    assert not first.elector.is_leader
    wait_until(lambda: second.started, timeout=10, message="second leads")
    took = second.started[0] - stop_at
    wait_until(lambda: first.stopped, message="on_stopped_leading")
    assert len(first.stopped) == 1 and first.stopped[0] <= second.started[0]   # posted before the release
    # Within the next try: retry_period * (1 + JITTER_FACTOR), far from the 10 s duration.
    assert took < 0.3 * (1 + JITTER_FACTOR) + SLACK, took
    lease = leases.read_namespaced_lease(name, NS)
    assert (lease.spec.holder_identity, lease.spec.lease_transitions) == ("second", 1)
    wait_until(lambda: second.leaders == ["first", "second"], message="on_new_leader")


class Child:
    """``tests/leader_child.py`` in its own process; its lines read by a thread into a queue."""

    def __init__(self, apiserver, lease: str, identity: str) -> None:
        args = [str(apiserver.kubeconfig), apiserver.context, NS, lease, identity,
                str(FAST["lease_duration"]), str(FAST["renew_deadline"]), str(FAST["retry_period"])]
        self.proc = subprocess.Popen([sys.executable, str(CHILD), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=_process.child_env(), text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, wanted: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                seen.append(self.lines.get(timeout=left))
            except queue.Empty:
                break
            if seen[-1] == wanted:
                return
        raise AssertionError(f"child: no {wanted!r} within {timeout}s; got {seen}")

    def stop(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        _process.stop(self.proc)


def test_a_killed_leader_is_replaced_once_its_lease_expired(apiserver, candidates, leases):
    name = lease_name()
    child = Child(apiserver, name, "child")
    try:
        child.expect("READY")
        child.expect("STARTED")
        followers = [candidates(name, f"follower-{i}") for i in range(2)]
        wait_until(lambda: all(f.elector.leader == "child" for f in followers), message="followers see child")
        before = leases.read_namespaced_lease(name, NS)
        killed_at = time.monotonic()
        child.proc.kill()
        child.proc.wait(timeout=10)
    finally:
        child.stop()

    def started_leader() -> Candidate | None:
        """The follower that leads once its on_started_leading ran (is_leader turns True first,
        the callback is posted to the loop: a CI run read ``started`` in between)."""
        leader = the_leader(followers)
        return leader if leader is not None and leader.started else None
    winner = wait_until(started_leader, timeout=15, message="a follower leads")
    took = winner.started[0] - killed_at
    # A follower notices the child's last renewal up to one jittered retry after it, the lease
    # expires lease_duration later, and the takeover comes at the next jittered retry:
    # lease_duration + 2 * retry_period * (1 + JITTER_FACTOR) at worst.
    assert took < FAST["lease_duration"] + 2 * FAST["retry_period"] * (1 + JITTER_FACTOR) + SLACK, took

    # Not before the lease expired: the takeover's acquireTime is at least lease_duration after
    # the child's last renewTime (both written by this host's clock). The child's records
    # after ``before`` are replayed from the API server's history.
    records = [before.spec] + [e["object"].spec for e in watch.Watch().stream(
        leases.list_namespaced_lease, NS, field_selector=f"metadata.name={name}",
        resource_version=before.metadata.resource_version, timeout_seconds=1)]
    last_renewal = [r for r in records if r.holder_identity == "child"][-1]
    takeover = next(r for r in records if r.holder_identity == winner.identity)
    assert takeover.acquire_time - last_renewal.renew_time >= timedelta(seconds=FAST["lease_duration"])
    assert takeover.lease_transitions == last_renewal.lease_transitions + 1
    wait_until(lambda: [f.leaders for f in followers] == [["child", winner.identity]] * 2,
               message="both followers see the winner")


def test_a_leader_cut_off_from_the_api_stops_leading_within_the_renew_deadline(apiserver, candidates, leases):
    name = lease_name()
    solo = candidates(name, "solo")
    wait_until(lambda: solo.started, message="solo leads")
    paused_at = time.monotonic()
    apiserver.pause(seconds=4)
    wait_until(lambda: solo.stopped, timeout=10, message="solo stops leading")
    took = solo.stopped[0] - paused_at
    assert took < FAST["renew_deadline"] + FAST["retry_period"] + SLACK, took
    assert not solo.elector.is_leader and solo.elector.status()["lost"] == 1
    assert solo.elector.last_error is not None

    # Back online: the lease still names it, unchanged since, so it leads again (no transition).
    wait_until(lambda: len(solo.started) == 2, timeout=20, message="solo leads again")
    lease = leases.read_namespaced_lease(name, NS)
    assert (lease.spec.holder_identity, lease.spec.lease_transitions) == ("solo", 0)
    assert solo.elector.last_error is None


class RacingElector(LeaderElector):
    """Holds its first write until the other candidate is about to write too, so that both send
    an update carrying the resourceVersion they read: the API server must refuse one."""

    barrier = threading.Barrier(2)

    def _update(self, record, deadline):
        if not getattr(self, "_raced", False):
            self._raced = True
            self.barrier.wait(timeout=20)
        super()._update(record, deadline)


def test_two_candidates_racing_for_an_expired_lease_one_wins(candidates, leases):
    name = lease_name()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    leases.create_namespaced_lease(NS, {"metadata": {"name": name}, "spec": {
        "holderIdentity": "gone", "leaseDurationSeconds": 1, "leaseTransitions": 4,
        "acquireTime": now, "renewTime": now}})
    RacingElector.barrier.reset()
    # The race is the point, not renewal speed: a lease long enough that a loaded machine
    # cannot make the winner miss a renewal (and the loser take over) before the checks.
    pair = [candidates(name, f"racer-{i}", cls=RacingElector, lease_duration=10, renew_deadline=8,
                       retry_period=1) for i in range(2)]
    winner = wait_until(lambda: the_leader(pair), timeout=15, message="a racer leads")
    loser = next(c for c in pair if c is not winner)
    # The loser's refused update may be answered just after the winner's accepted one.
    wait_until(lambda: loser.elector.conflicts == 1, timeout=15, message="the loser's update refused")
    assert winner.elector.conflicts == 0
    lease = leases.read_namespaced_lease(name, NS)
    assert (lease.spec.holder_identity, lease.spec.lease_transitions) == (winner.identity, 5)
    wait_until(lambda: [c.leaders for c in pair] == [["gone", winner.identity]] * 2,
               message="both see the winner")
    assert loser.elector.leader == winner.identity and loser.elector.lease_transitions == 5
    assert not loser.started and not loser.elector.is_leader


def test_timing_is_checked_with_reasons():
    api = client.ApiClient(client.Configuration())
    cases = [({"lease_duration": 1.5}, "whole number of seconds"),
             ({"lease_duration": 10, "renew_deadline": 10}, "below lease_duration"),
             ({"renew_deadline": 2, "retry_period": 2}, r"retry_period \* 1.2 below renew_deadline"),
             ({"retry_period": 0}, "must be above 0")]
    for timing, message in cases:
        with pytest.raises(ValueError, match=message):
            LeaderElector(api, NS, "x", identity="a", **timing)
    with pytest.raises(ValueError, match="identity must not be empty"):
        LeaderElector(api, NS, "x", identity="")
    with pytest.raises(ValueError, match="namespace and a name"):
        LeaderElector(api, "", "x", identity="a")
    api.close()


def test_identity_is_the_pod_name_or_unique_per_process(monkeypatch):
    monkeypatch.delenv("POD_NAME", raising=False)
    first, second = default_identity(), default_identity()
    assert first != second and first.split("_")[0] == second.split("_")[0]
    monkeypatch.setenv("POD_NAME", "gateway-7d9f-abcde")
    assert default_identity() == "gateway-7d9f-abcde"
