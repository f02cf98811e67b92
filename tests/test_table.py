"""EndpointTable: smooth WRR and EDF, health flags, exclude, state carried across updates.

Behaviour tests run against the compiled table and the plain-Python reference
alike, in both regimes (EDF with ``edf_threshold=0``, so that small tables
schedule by EDF too); tests of an exact smooth-WRR sequence use ``WrrTable``.
A stateful Hypothesis test then checks that both agree pick for pick.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Hashable

import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from _speedups.table import (EDF_THRESHOLD, FLAG_ACTIVE_FAILED, FLAG_DRAINING, FLAG_EJECTED,
                              EndpointTable)
from tests.reference.wrr import EDF_THRESHOLD as REFERENCE_EDF_THRESHOLD
from tests.reference.wrr import ReferenceTable


@dataclass(frozen=True)
class Ep:
    key: Hashable
    weight: int = 1
    cluster: str = "a"


def eps(*weights: int, cluster: str = "a") -> list[Ep]:
    return [Ep(("10.0.0.%d" % i, 80), w, cluster) for i, w in enumerate(weights)]


@pytest.fixture(params=[EndpointTable, ReferenceTable], ids=["compiled", "reference"])
def WrrTable(request):
    """Smooth WRR: the default for tables of up to EDF_THRESHOLD endpoints."""
    return request.param


@pytest.fixture(params=[EndpointTable, ReferenceTable], ids=["compiled", "reference"])
def EdfTable(request):
    """EDF at any size."""
    return functools.partial(request.param, edf_threshold=0)


@pytest.fixture(params=["compiled", "reference", "compiled-edf", "reference-edf"])
def Table(request):
    """Either regime: behaviour that does not depend on the exact interleaving."""
    cls = EndpointTable if request.param.startswith("compiled") else ReferenceTable
    return functools.partial(cls, edf_threshold=0) if request.param.endswith("edf") else cls


def picks(table, n: int, exclude=None) -> list[int]:
    return [table.pick(exclude) for _ in range(n)]


def letters(table, n: int) -> str:
    return "".join("abcdefgh"[i] for i in picks(table, n))


# -- the algorithm ---------------------------------------------------------------

def test_flag_values():
    assert (FLAG_ACTIVE_FAILED, FLAG_EJECTED, FLAG_DRAINING) == (1, 2, 4)


def test_two_equal_endpoints_alternate(Table):
    seq = picks(Table(eps(1, 1)), 1000)
    assert seq[:4] == [0, 1, 0, 1]
    assert all(a != b for a, b in zip(seq, seq[1:]))
    for start in range(len(seq) - 100 + 1):
        assert sum(seq[start:start + 100]) == 50


def test_weights_1_to_3_exact_share_and_interleave(WrrTable):
    t = WrrTable(eps(1, 3))
    seq = letters(t, 1000)
    assert seq == "babb" * 250
    assert (seq.count("a"), seq.count("b")) == (250, 750)


def test_nginx_5_1_1_sequence(WrrTable):
    # The example from nginx's commit that introduced smooth WRR (52327e0627f4).
    assert letters(WrrTable(eps(5, 1, 1)), 70) == "aabacaa" * 10


def test_compiled_matches_reference_on_fixed_weights():
    weights = (7, 3, 3, 1, 12, 1, 5)
    c, r = EndpointTable(eps(*weights)), ReferenceTable(eps(*weights))
    assert picks(c, 5000) == picks(r, 5000)
    assert c.state() == r.state()


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=12))
def test_one_cycle_gives_exact_shares_and_returns_to_zero(weights):
    # Over sum(weights) picks from a fresh table every endpoint gets exactly its
    # weight and every current weight is back at 0: the sequence is periodic.
    t = EndpointTable(eps(*weights))
    seq = picks(t, sum(weights))
    assert [seq.count(i) for i in range(len(weights))] == weights
    assert [s["current"] for s in t.state()] == [0] * len(weights)


def test_weights_beyond_int32_total(Table):
    # current/total are 64-bit: a sum of int weights must not wrap.
    big = 2**31 - 1
    t = Table(eps(big, big, 1))
    r = ReferenceTable(eps(big, big, 1), edf_threshold=t.edf_threshold)
    assert picks(t, 20) == picks(r, 20)
    assert t.state() == r.state()
    assert [t.deadline(i) for i in range(3)] == [r.deadline(i) for i in range(3)]


def test_empty_table(Table):
    t = Table()
    assert len(t) == 0 and t.pick() == -1 and t.pick((0,)) == -1
    assert t.healthy_count() == 0 and t.state() == []


# -- health ----------------------------------------------------------------------

def test_unhealthy_endpoint_never_picked_and_share_goes_to_others(Table):
    t = Table(eps(1, 1, 2))
    t.add_flag(2, FLAG_EJECTED)
    seq = picks(t, 100)
    assert 2 not in seq and seq.count(0) == seq.count(1) == 50
    t.clear_flag(2, FLAG_EJECTED)
    assert 2 in picks(t, 4)


def test_flag_bits_are_independent(Table):
    t = Table(eps(1, 1))
    t.add_flag(0, FLAG_ACTIVE_FAILED)
    t.add_flag(0, FLAG_EJECTED)
    t.clear_flag(0, FLAG_ACTIVE_FAILED)
    assert t.flags(0) == FLAG_EJECTED and t.healthy_count() == 1
    assert set(picks(t, 10)) == {1}
    t.clear_flag(0, FLAG_EJECTED)
    assert t.flags(0) == 0 and t.healthy_count() == 2
    t.set_flags(1, FLAG_DRAINING | FLAG_EJECTED)
    assert t.flags(1) == 6 and set(picks(t, 10)) == {0}


def test_all_unhealthy_returns_minus_one(Table):
    t = Table(eps(1, 2, 3))
    for i in range(3):
        t.set_flags(i, FLAG_DRAINING)
    assert t.healthy_count() == 0
    assert picks(t, 5) == [-1] * 5
    assert [s["current"] for s in t.state()] == [0, 0, 0]


@pytest.mark.parametrize("bad", [-1, 1 << 30])
def test_reserved_or_negative_flags_rejected(Table, bad):
    t = Table(eps(1))
    with pytest.raises(ValueError):
        t.set_flags(0, bad)
    with pytest.raises(ValueError):
        t.add_flag(0, bad)
    assert t.flags(0) == 0


# -- exclude ---------------------------------------------------------------------

@pytest.mark.parametrize("exclude", [(0,), (1,), [2], (1, 1, 7, -1)])
def test_exclude_skips_endpoint(Table, exclude):
    t = Table(eps(1, 1, 1))
    seq = picks(t, 30, exclude)
    others = [i for i in range(3) if i not in exclude]
    assert sorted(set(seq)) == others and [seq.count(i) for i in others] == [15, 15]
    assert [t.flags(i) for i in range(3)] == [0, 0, 0]  # exclude marks do not leak into flags


def test_exclude_all_healthy_returns_minus_one(Table):
    t = Table(eps(1, 1, 1))
    t.add_flag(2, FLAG_EJECTED)
    assert t.pick((0, 1)) == -1
    assert t.healthy_count() == 2 and [t.flags(i) for i in range(3)] == [0, 0, FLAG_EJECTED]
    assert t.pick() == 0            # excluded endpoints' state was not advanced


def test_exclude_with_bad_item_raises_and_leaves_no_mark(Table):
    t = Table(eps(1, 1))
    with pytest.raises(TypeError):
        t.pick((0, "x"))
    assert [t.flags(i) for i in range(2)] == [0, 0]
    assert picks(t, 4) == [0, 1, 0, 1]


# -- update ----------------------------------------------------------------------

def test_update_carries_state_of_survivors(WrrTable):
    t = WrrTable(eps(1, 1))
    assert t.pick() == 0                            # currents now a=-1, b=+1
    t.add_flag(1, FLAG_ACTIVE_FAILED)
    t.acquire(0)
    t.update(eps(1, 1, 1))
    assert (t.flags(1), t.inflight(0)) == (FLAG_ACTIVE_FAILED, 1)
    t.clear_flag(1, FLAG_ACTIVE_FAILED)
    # Continues where it was: b is due next.  A reset table would pick a.
    assert t.pick() == 1


def test_update_adding_endpoint_continues_smoothly(WrrTable):
    t = WrrTable(eps(1, 1))
    carried = WrrTable(eps(1, 1))
    assert picks(t, 3) == picks(carried, 3) == [0, 1, 0]
    t.update(eps(1, 1, 1))
    # Survivors keep their currents (a=-1, b=+1, new c=0); same as a reference
    # table whose currents were carried by hand.
    r = ReferenceTable(eps(1, 1, 1))
    r._current[:] = [-1, 1, 0]
    seq = picks(t, 30)
    assert seq == picks(r, 30)
    assert seq[0] == 1 and [seq.count(i) for i in range(3)] == [10, 10, 10]


def test_update_resets_removed_endpoint(Table):
    t = Table(eps(1, 1, 1))
    t.pick()
    t.set_flags(2, FLAG_EJECTED)
    t.acquire(2)
    t.update(eps(1, 1))
    assert t.index_of(eps(1, 1, 1)[2].key) == -1
    t.update(eps(1, 1, 1))
    assert t.state()[2] == {"key": ("10.0.0.2", 80), "cluster": "a", "weight": 1,
                            "current": 0, "flags": 0, "inflight": 0}


def test_update_unchanged_keeps_everything(Table):
    t = Table(eps(3, 1))
    picks(t, 3)
    t.set_flags(1, FLAG_DRAINING)
    before, generation = t.state(), t.generation
    fresh = eps(3, 1)               # equal, but new objects
    t.update(fresh)
    assert t.state() == before and t.generation == generation
    assert t.endpoint(0) is fresh[0]


def test_update_weight_change_keeps_current(WrrTable):
    t = WrrTable(eps(1, 1))
    t.pick()
    t.update(eps(1, 5))
    assert [s["current"] for s in t.state()] == [-1, 1]
    assert [s["weight"] for s in t.state()] == [1, 5]


def test_update_reorder_moves_state_with_key(Table):
    a, b, c = eps(1, 2, 3)
    t = Table([a, b, c])
    t.set_flags(0, FLAG_EJECTED)
    t.acquire(2)
    generation = t.generation
    t.update([c, b, a])
    assert t.generation == generation + 1
    assert (t.index_of(a.key), t.index_of(c.key)) == (2, 0)
    assert (t.flags(2), t.inflight(0)) == (FLAG_EJECTED, 1)


@pytest.mark.parametrize("bad, message", [
    ([Ep("k", 1), Ep("k", 2)], "duplicate endpoint key 'k'"),
    ([Ep("k", 0)], "endpoint 'k': weight must be >= 1, got 0"),
])
def test_bad_update_raises_and_leaves_table_unchanged(Table, bad, message):
    t = Table(eps(1, 1))
    t.pick()
    before = t.state()
    with pytest.raises(ValueError, match=message):
        t.update(bad)
    assert t.state() == before and len(t) == 2


# -- lookups, in-flight, clusters ------------------------------------------------

def test_index_of_and_endpoint(Table):
    endpoints = eps(1, 2, 3)
    t = Table(endpoints)
    assert [t.index_of(e.key) for e in endpoints] == [0, 1, 2]
    assert t.index_of(("10.9.9.9", 80)) == -1
    assert t.endpoint(1) is endpoints[1] and t.endpoints == tuple(endpoints)
    assert len(t) == 3


def test_inflight_acquire_release(Table):
    t = Table(eps(1, 1))
    t.acquire(1)
    t.acquire(1)
    t.release(1)
    assert (t.inflight(0), t.inflight(1)) == (0, 1)
    t.release(1)
    t.release(1)                    # clamped: see EndpointTable.release
    assert t.inflight(1) == 0


def test_clusters(Table):
    t = Table(eps(1, 1, cluster="east") + [Ep("x", 1, "west")] + [Ep("y", 1, "east")])
    assert t.clusters == ("east", "west")
    assert [t.cluster_index(i) for i in range(4)] == [0, 0, 1, 0]
    assert t.state()[2]["cluster"] == "west"


@pytest.mark.parametrize("method", ["endpoint", "flags", "inflight", "acquire", "release",
                                    "cluster_index"])
@pytest.mark.parametrize("i", [-1, 2, 2**20])
def test_index_out_of_range(Table, method, i):
    with pytest.raises(IndexError):
        getattr(Table(eps(1, 1)), method)(i)


@pytest.mark.parametrize("method", ["set_flags", "add_flag", "clear_flag"])
def test_flag_index_out_of_range(Table, method):
    with pytest.raises(IndexError):
        getattr(Table(eps(1)), method)(1, FLAG_EJECTED)


def test_repr():
    assert repr(EndpointTable(eps(1, 1))) == "<EndpointTable endpoints=2 healthy=2 generation=1>"


# -- the regimes: smooth WRR up to edf_threshold endpoints, EDF above ---------------

def test_default_threshold_and_regime_switch(WrrTable):
    assert EDF_THRESHOLD == REFERENCE_EDF_THRESHOLD == 64
    t = WrrTable(eps(*[1] * 64))
    assert (t.edf_threshold, t.scheduler) == (64, "wrr")
    t.update(eps(*[1] * 65))
    assert t.scheduler == "edf"
    assert t.deadline(0) == (0, 1, 1) or t.deadline(0) == (1, 0, 1)
    t.update(eps(*[1] * 64))
    assert t.scheduler == "wrr" and t.deadline(0) is None
    assert [s["current"] for s in t.state()] == [0] * 64     # WRR starts afresh


def test_negative_threshold_rejected(WrrTable):
    with pytest.raises(ValueError, match="edf_threshold must be >= 0"):
        WrrTable(eps(1), edf_threshold=-1)


def test_edf_sequences(EdfTable):
    # Deadlines k/w: b at 1/3, 2/3; a and b tie at 1 and a has the lower index.
    assert letters(EdfTable(eps(1, 3)), 400) == "bbab" * 100
    # a at .2 .4 .6 .8 1, b and c at 1.
    assert letters(EdfTable(eps(5, 1, 1)), 70) == "aaaaabc" * 10


def test_edf_deadlines_are_exact_grid_points(EdfTable):
    t = EdfTable(eps(3, 2))
    assert [t.deadline(i) for i in range(2)] == [(0, 1, 3), (0, 1, 2)]
    assert picks(t, 5) == [0, 1, 0, 0, 1]               # 1/3, 1/2, 2/3, 1 (a first), 1
    assert [t.deadline(i) for i in range(2)] == [(1, 1, 3), (1, 1, 2)]
    assert [s["current"] for s in t.state()] == [0, 0]  # WRR state is unused


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=12))
def test_edf_cycle_shares_exact_and_every_window_within_one(weights):
    c = EndpointTable(eps(*weights), edf_threshold=0)
    r = ReferenceTable(eps(*weights), edf_threshold=0)
    total = sum(weights)
    seq = picks(c, 3 * total)
    assert seq == picks(r, 3 * total)
    for cycle in range(3):
        part = seq[cycle * total:(cycle + 1) * total]
        assert [part.count(i) for i in range(len(weights))] == weights
    for start in range(2 * total + 1):
        window = seq[start:start + total]
        assert all(abs(window.count(i) - w) <= 1 for i, w in enumerate(weights)), (start, window)


def test_edf_large_table_exact_shares():
    weights = [1 + (i * 7919) % 13 for i in range(5000)]
    t = EndpointTable(eps(*weights))
    assert t.scheduler == "edf"
    seq = picks(t, sum(weights))
    counts = [0] * len(weights)
    for i in seq:
        counts[i] += 1
    assert counts == weights


def test_edf_weights_beyond_int32_do_not_overflow(EdfTable):
    big = 2**31 - 1
    t = EdfTable(eps(big, big - 1, 1))
    seq = picks(t, 20_000)
    assert 2 not in seq and abs(seq.count(0) - seq.count(1)) <= 1


def test_edf_flagged_endpoint_leaves_and_rejoins_without_burst(EdfTable):
    n = 100
    t = EdfTable(eps(*[1] * n))
    picks(t, 250)                               # mid-cycle: 50..99 due at 3, 0..49 at 4
    t.add_flag(7, FLAG_EJECTED)
    assert t.deadline(7) is None
    seq = picks(t, 50 + 2 * (n - 1))            # to the end of cycle 5
    assert 7 not in seq
    assert [seq.count(i) for i in range(n)] == [2] * 7 + [0] + [2] * 42 + [3] * 50
    t.clear_flag(7, FLAG_EJECTED)
    # Back at its next grid point after now (the end of the current cycle): one
    # pick in the next cycle, like every other endpoint, not a catch-up burst.
    seq = picks(t, n)
    assert seq.count(7) == 1 and sorted(seq) == list(range(n))


def test_edf_all_flagged_then_cleared_are_all_scheduled_again(EdfTable):
    t = EdfTable(eps(1, 2, 3, 4))
    for i in range(4):
        t.set_flags(i, FLAG_DRAINING)
    assert picks(t, 3) == [-1] * 3 and t.healthy_count() == 0
    for i in range(4):
        t.set_flags(i, 0)
    seq = picks(t, 10)
    assert [seq.count(i) for i in range(4)] == [1, 2, 3, 4]


def test_edf_exclude_keeps_deadlines_of_excluded(EdfTable):
    t = EdfTable(eps(*[1] * 10))
    before = [t.deadline(i) for i in range(10)]
    assert t.pick(range(6)) == 6                # the earliest eligible: below the excluded top
    assert [t.deadline(i) for i in range(6)] == before[:6]
    assert [t.flags(i) for i in range(10)] == [0] * 10
    assert picks(t, 5) == [0, 1, 2, 3, 4]       # passed over, not lost
    before = [t.deadline(i) for i in range(10)]
    assert t.pick(range(10)) == -1 and [t.deadline(i) for i in range(10)] == before


def test_edf_exclude_with_large_heap(EdfTable):
    t = EdfTable(eps(*[1 + i % 5 for i in range(200)]))
    r = ReferenceTable(eps(*[1 + i % 5 for i in range(200)]), edf_threshold=0)
    for k in range(300):
        exclude = tuple(range(k % 50, 200, 3))
        assert t.pick(exclude) == r.pick(exclude)
    assert picks(t, 500) == picks(r, 500)


def test_edf_update_carries_deadlines_and_adds_without_burst(EdfTable):
    n = 100
    t = EdfTable(eps(*[1] * n))
    picks(t, 150)                               # now = 2: 50..99 still due at 2, 0..49 at 3
    before = [t.deadline(i) for i in range(n)]
    generation = t.generation
    t.update(eps(*[1] * (n + 20)))              # 20 new endpoints
    assert [t.deadline(i) for i in range(n)] == before and t.generation == generation + 1
    assert all(t.deadline(i) == (3, 0, 1) for i in range(n, n + 20))   # next grid point
    seq = picks(t, 50)                          # the rest of this cycle: survivors only
    assert seq == list(range(50, n))
    seq = picks(t, n + 20)                      # the next cycle: everyone once
    assert sorted(seq) == list(range(n + 20))


def test_edf_update_weight_change_reschedules_within_one_period(EdfTable):
    t = EdfTable(eps(1, 1, 1))
    assert picks(t, 4) == [0, 1, 2, 0]          # now = 2; b and c due at 2
    t.update(eps(1, 100, 1))
    assert t.deadline(1) == (2, 1, 100)         # the next point of its new grid: 2.01
    assert t.deadline(2) == (2, 0, 1)           # unchanged weight: carried
    assert picks(t, 102) == [2] + [1] * 99 + [0, 1]


def test_edf_update_keeps_flags_out_of_the_heap(EdfTable):
    t = EdfTable(eps(1, 1, 1))
    t.set_flags(1, FLAG_EJECTED)
    t.update(list(reversed(eps(1, 1, 1))))
    assert t.deadline(1) is None and 1 not in picks(t, 20)
    t.set_flags(1, 0)
    assert 1 in picks(t, 3)


# -- the oracle: compiled and reference agree under random operations ------------

ADDRESSES = [("10.0.0.%d" % i, 80) for i in range(8)]

endpoint_lists = st.lists(
    st.tuples(st.sampled_from(ADDRESSES), st.integers(1, 10), st.sampled_from(["a", "b"])),
    max_size=8, unique_by=lambda t: t[0],
).map(lambda items: [Ep(*item) for item in items])
index = st.integers(0, 7)
flag_values = st.sampled_from([0, FLAG_ACTIVE_FAILED, FLAG_EJECTED, FLAG_DRAINING,
                               FLAG_ACTIVE_FAILED | FLAG_EJECTED])
excludes = st.none() | st.lists(st.integers(-2, 9), max_size=3).map(tuple)


class TableMachine(RuleBasedStateMachine):
    edf_threshold = EDF_THRESHOLD       # up to 8 endpoints: always smooth WRR

    def __init__(self) -> None:
        super().__init__()
        self.compiled = EndpointTable(edf_threshold=self.edf_threshold)
        self.reference = ReferenceTable(edf_threshold=self.edf_threshold)

    def both(self, method: str, *args):
        results = []
        for table in (self.compiled, self.reference):
            try:
                results.append(getattr(table, method)(*args))
            except (IndexError, ValueError) as e:
                results.append(type(e))
        assert results[0] == results[1], (method, args, results)
        return results[0]

    @initialize(endpoints=endpoint_lists)
    def start(self, endpoints):
        self.both("update", endpoints)

    @rule(endpoints=endpoint_lists)
    def update(self, endpoints):
        self.both("update", endpoints)

    @rule(exclude=excludes, count=st.integers(1, 30))
    def pick(self, exclude, count):
        for _ in range(count):
            self.both("pick", exclude)

    @rule(i=index, flags=flag_values)
    def set_flags(self, i, flags):
        self.both("set_flags", i, flags)

    @rule(i=index, flag=flag_values)
    def add_flag(self, i, flag):
        self.both("add_flag", i, flag)

    @rule(i=index, flag=flag_values)
    def clear_flag(self, i, flag):
        self.both("clear_flag", i, flag)

    @rule(i=index)
    def acquire(self, i):
        self.both("acquire", i)

    @rule(i=index)
    def release(self, i):
        self.both("release", i)

    @invariant()
    def same_state(self):
        c, r = self.compiled, self.reference
        assert c.state() == r.state()
        assert (len(c), c.healthy_count(), c.clusters, c.generation, c.scheduler) == \
               (len(r), r.healthy_count(), r.clusters, r.generation, r.scheduler)
        assert [c.deadline(i) for i in range(len(c))] == [r.deadline(i) for i in range(len(r))]


class EdfTableMachine(TableMachine):
    edf_threshold = 0                   # always EDF


class CrossingTableMachine(TableMachine):
    edf_threshold = 3                   # updates move the table between the regimes


MACHINE_SETTINGS = settings(max_examples=300, stateful_step_count=40, deadline=None, database=None)
TestCompiledAgreesWithReference = TableMachine.TestCase
TestCompiledAgreesWithReference.settings = MACHINE_SETTINGS
TestCompiledAgreesWithReferenceEdf = EdfTableMachine.TestCase
TestCompiledAgreesWithReferenceEdf.settings = MACHINE_SETTINGS
TestCompiledAgreesWithReferenceCrossing = CrossingTableMachine.TestCase
TestCompiledAgreesWithReferenceCrossing.settings = MACHINE_SETTINGS
