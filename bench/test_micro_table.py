"""Micro-benchmarks of EndpointTable: compiled vs the plain-Python reference.

    python -m pytest bench/test_micro_table.py --benchmark-only -p no:cacheprovider

Up to ``EDF_THRESHOLD`` (64) endpoints a table schedules by smooth WRR, O(n)
per pick; above it by EDF, O(log n).  So n=2 is smooth WRR, n=100 and
n=10,000 are EDF, and the ``wrr-forced`` rows show what smooth WRR would cost
at that size (``edf_threshold`` raised).  The reference implements the same two
regimes (``tests/reference/wrr.py``, ``edf.py``: heapq of Fraction deadlines).
"""
from __future__ import annotations

import functools
import importlib.util
import itertools
import os
import random
import time
from dataclasses import dataclass
from typing import Hashable

import pytest

from _speedups.table import EndpointTable
from tests.reference.wrr import ReferenceTable

IMPLEMENTATIONS = {"compiled": EndpointTable, "reference": ReferenceTable,
                   "compiled-wrr-forced": functools.partial(EndpointTable, edf_threshold=1 << 30)}


def _before_table():
    """BENCH_TABLE_BEFORE=/path/to/an/older/table.cpython-*.so: that build's EndpointTable too,
    loaded beside this one, so before and after are measured in one run on the same machine
    state (copy the .so aside before rebuilding)."""
    path = os.environ.get("BENCH_TABLE_BEFORE")
    if not path:
        return None
    spec = importlib.util.spec_from_file_location("_speedups_before.table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointTable


BEFORE = _before_table()


@dataclass(frozen=True)
class Ep:
    key: Hashable
    weight: int
    cluster: str


def endpoints(n: int, weighted: bool, salt: str = "") -> list[Ep]:
    rnd = random.Random(n)
    return [Ep((f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}{salt}", 80),
               rnd.randint(1, 100) if weighted else 1, "ab"[i % 2])
            for i in range(n)]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("kind", ["equal", "weighted"])
@pytest.mark.parametrize("n", [2, 100, 10_000])
def test_pick(benchmark, impl, kind, n):
    if impl == "compiled-wrr-forced" and n == 2:
        pytest.skip("n=2 is smooth WRR anyway")
    benchmark.group = f"pick n={n} {kind}"
    table = IMPLEMENTATIONS[impl](endpoints(n, kind == "weighted"))
    assert benchmark(table.pick) >= 0


@pytest.mark.parametrize("impl", ["compiled", "reference"])
def test_pick_retry_exclude(benchmark, impl):
    benchmark.group = "pick n=100 weighted exclude=(3, 42)"
    table = IMPLEMENTATIONS[impl](endpoints(100, True))
    assert benchmark(table.pick, (3, 42)) >= 0


# Two priority levels (clusters a and b, 4 endpoints each, all load on level 0) under each
# policy: capacity spill-over off (the cost every service pays: two tests per pick), on with
# room in level 0 (one pass over the endpoints to find the full ones, then the pick), and by
# rate (the same pass, refilling each endpoint's bucket, one clock read).
LEVEL_BUILDS = {"compiled": EndpointTable, **({"before": BEFORE} if BEFORE is not None else {})}


@pytest.mark.parametrize("capacity", ["off", "on", "rate"])
@pytest.mark.parametrize("build", LEVEL_BUILDS)
@pytest.mark.parametrize("policy", ["round_robin", "least_request"])
def test_pick_levels(benchmark, policy, build, capacity):
    if capacity != "off" and build == "before":
        pytest.skip("the build before has no capacity limit")
    benchmark.group = f"pick n=8, 2 levels, {policy}"
    eps = endpoints(8, False)
    table = LEVEL_BUILDS[build](policy=policy)
    table.update(eps, [0 if e.cluster == "a" else 1 for e in eps])
    table.set_loads([(0, 10_000)])
    if capacity == "on":
        table.set_capacity(1_000)       # never reached: the cost of checking
    elif capacity == "rate":
        table.set_capacity(0, 1e9)      # never reached: a clock read and 8 refills per pick
    assert benchmark(table.pick) >= 0


@pytest.mark.parametrize("impl", ["compiled", "reference"])
def test_update_one_changed(benchmark, impl):
    # Alternate between two 10,000-endpoint lists that differ in one endpoint,
    # so every call removes one key, adds one and carries 9,999 by key.
    benchmark.group = "update n=10000, 1 changed"
    a = endpoints(10_000, True)
    b = a[:5000] + endpoints(10_000, True, salt="x")[5000:5001] + a[5001:]
    table = IMPLEMENTATIONS[impl](a)
    lists = itertools.cycle([b, a])
    benchmark(lambda: table.update(next(lists)))
    assert len(table) == 10_000


def _ns_per_pick(table, picks: int = 20_000, repeat: int = 7) -> float:
    pick = table.pick
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(picks):
            pick()
        best = min(best, time.perf_counter() - t0)
    return best / picks * 1e9


@pytest.mark.parametrize("kind", ["equal", "weighted"])
def test_pick_cost_does_not_grow_linearly(kind):
    # 100x the endpoints: smooth WRR costs ~100x, EDF log(10,000)/log(100) = 2x
    # more heap levels (measured ~1.1-1.6x).  Best of 7 against a noisy machine.
    small = _ns_per_pick(EndpointTable(endpoints(100, kind == "weighted")))
    large = _ns_per_pick(EndpointTable(endpoints(10_000, kind == "weighted")))
    print(f"\npick {kind}: n=100 {small:.0f} ns, n=10,000 {large:.0f} ns, ratio {large / small:.2f}")
    assert large < 5 * small
