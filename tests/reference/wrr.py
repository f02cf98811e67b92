"""Smooth weighted round robin in plain Python: the oracle for ``_speedups.table``.

Same semantics as ``EndpointTable`` (pick, update, flags, in-flight, and the
switch to earliest deadline first above ``edf_threshold`` endpoints, see
``edf.py``), written for clarity; tests drive both with the same operations
and compare.
"""
from __future__ import annotations

import operator
from typing import Any, Hashable, Iterable

from tests.reference.edf import EdfScheduler

EDF_THRESHOLD = 64              # as _speedups.table.EDF_THRESHOLD
_MAX_FLAGS = (1 << 30) - 1      # bit 30 is the compiled table's exclude mark


class ReferenceTable:
    def __init__(self, endpoints: Iterable[Any] = (), edf_threshold: int = EDF_THRESHOLD) -> None:
        if edf_threshold < 0:
            raise ValueError(f"edf_threshold must be >= 0, got {edf_threshold}")
        self.edf_threshold = edf_threshold
        self._edf: EdfScheduler | None = None   # set while len > edf_threshold
        self.endpoints: tuple = ()
        self.clusters: tuple[str, ...] = ()
        self.generation = 0
        self._index: dict[Hashable, int] = {}
        self._weight: list[int] = []
        self._current: list[int] = []
        self._flags: list[int] = []
        self._inflight: list[int] = []
        self._cluster: list[int] = []
        self.update(endpoints)

    def __len__(self) -> int:
        return len(self.endpoints)

    @property
    def scheduler(self) -> str:
        return "wrr" if self._edf is None else "edf"

    def update(self, endpoints: Iterable[Any]) -> None:
        eps = tuple(endpoints)
        index: dict[Hashable, int] = {}
        clusters: dict[str, int] = {}
        weight, current, flags, inflight, cluster = [], [], [], [], []
        carried_due = []
        edf = len(eps) > self.edf_threshold
        moved = len(eps) != len(self.endpoints)
        for i, ep in enumerate(eps):
            if ep.key in index:
                raise ValueError(f"duplicate endpoint key {ep.key!r}")
            index[ep.key] = i
            w = operator.index(ep.weight)
            if w < 1:
                raise ValueError(f"endpoint {ep.key!r}: weight must be >= 1, got {w}")
            weight.append(w)
            cluster.append(clusters.setdefault(ep.cluster, len(clusters)))
            old = self._index.get(ep.key)
            moved = moved or old != i
            # State follows the key; a new key starts from zero.  In the EDF
            # regime the WRR current stays 0, and a deadline is kept only for a
            # scheduled endpoint whose weight did not change.
            current.append(0 if old is None or edf else self._current[old])
            flags.append(0 if old is None else self._flags[old])
            inflight.append(0 if old is None else self._inflight[old])
            keep = edf and self._edf is not None and old is not None and self._weight[old] == w
            carried_due.append(self._edf.due[old] if keep else None)
        if edf:
            scheduler = self._edf if self._edf is not None else EdfScheduler()
            scheduler.reset(weight, [f == 0 for f in flags], carried_due)
        else:
            scheduler = None
        self._edf = scheduler
        self.endpoints, self._index, self.clusters = eps, index, tuple(clusters)
        self._weight, self._current, self._flags = weight, current, flags
        self._inflight, self._cluster = inflight, cluster
        if moved:
            self.generation += 1

    def pick(self, exclude: Iterable[int] | None = None) -> int:
        excluded = set() if exclude is None else {operator.index(x) for x in exclude}
        if self._edf is not None:
            return self._edf.pick(excluded)
        current, flags = self._current, self._flags
        best, best_current, total = -1, 0, 0
        for i, w in enumerate(self._weight):
            if flags[i] or i in excluded:
                continue
            current[i] += w
            total += w
            if best < 0 or current[i] > best_current:   # first of equals wins, as in nginx
                best, best_current = i, current[i]
        if best >= 0:
            current[best] -= total
        return best

    def _check(self, i: int) -> None:
        if not 0 <= i < len(self.endpoints):
            raise IndexError(f"endpoint index {i} out of range 0..{len(self.endpoints) - 1}")

    def endpoint(self, i: int) -> Any:
        self._check(i)
        return self.endpoints[i]

    def cluster_index(self, i: int) -> int:
        self._check(i)
        return self._cluster[i]

    def set_flags(self, i: int, flags: int) -> None:
        self._check(i)
        if not 0 <= flags <= _MAX_FLAGS:
            raise ValueError(f"invalid health flags {flags:#x}")
        self._set(i, flags)

    def _set(self, i: int, flags: int) -> None:
        self._flags[i] = flags
        if self._edf is not None:
            self._edf.set_healthy(i, flags == 0)

    def add_flag(self, i: int, flag: int) -> None:
        self._check(i)
        if not 0 <= flag <= _MAX_FLAGS:
            raise ValueError(f"invalid health flag {flag:#x}")
        self._set(i, self._flags[i] | flag)

    def clear_flag(self, i: int, flag: int) -> None:
        self._check(i)
        self._set(i, self._flags[i] & ~flag)

    def flags(self, i: int) -> int:
        self._check(i)
        return self._flags[i]

    def index_of(self, key: Hashable) -> int:
        return self._index.get(key, -1)

    def acquire(self, i: int) -> None:
        self._check(i)
        self._inflight[i] += 1

    def release(self, i: int) -> None:
        self._check(i)
        self._inflight[i] = max(0, self._inflight[i] - 1)

    def inflight(self, i: int) -> int:
        self._check(i)
        return self._inflight[i]

    def deadline(self, i: int) -> tuple[int, int, int] | None:
        self._check(i)
        return None if self._edf is None else self._edf.deadline(i)

    def healthy_count(self) -> int:
        return sum(1 for f in self._flags if f == 0)

    def state(self) -> list[dict[str, Any]]:
        return [{"key": ep.key, "cluster": self.clusters[self._cluster[i]],
                 "weight": self._weight[i], "current": self._current[i],
                 "flags": self._flags[i], "inflight": self._inflight[i]}
                for i, ep in enumerate(self.endpoints)]
