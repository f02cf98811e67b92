"""Micro-benchmarks of EndpointTable: compiled vs the plain-Python reference.

    python -m pytest bench/test_micro_table.py --benchmark-only -p no:cacheprovider
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Hashable

import pytest

from _speedups.table import EndpointTable
from tests.reference.wrr import ReferenceTable

IMPLEMENTATIONS = {"compiled": EndpointTable, "reference": ReferenceTable}


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
    benchmark.group = f"pick n={n} {kind}"
    table = IMPLEMENTATIONS[impl](endpoints(n, kind == "weighted"))
    assert benchmark(table.pick) >= 0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_pick_retry_exclude(benchmark, impl):
    benchmark.group = "pick n=100 weighted exclude=(3, 42)"
    table = IMPLEMENTATIONS[impl](endpoints(100, True))
    assert benchmark(table.pick, (3, 42)) >= 0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
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
