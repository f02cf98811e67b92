"""Earliest deadline first in plain Python: the oracle for the EDF regime of ``_speedups.table``.

Written for clarity: deadlines are ``Fraction``s (time in scheduling cycles),
the schedule is a ``heapq`` of (deadline, index), a flagged endpoint is taken
out of the heap with ``list.remove`` and re-enters at the first point of its
own grid k / weight after the current time.  The compiled table keeps the same
deadlines as integers (whole cycles + numerator over the weight) and finds the
earliest eligible endpoint below an excluded heap top without popping; the
order (deadline, index) is total, so both pick the same endpoint.
"""
from __future__ import annotations

import heapq
import math
from fractions import Fraction
from typing import Container


def next_grid_point(now: Fraction, weight: int) -> Fraction:
    """The first k / weight strictly after ``now``: at most one period away."""
    return Fraction(math.floor(now * weight) + 1, weight)


class EdfScheduler:
    """The healthy endpoints of one table, by deadline."""

    def __init__(self) -> None:
        self.now = Fraction(0)                  # deadline of the latest pick
        self.due: list[Fraction | None] = []    # None: not scheduled (flagged)
        self.weight: list[int] = []
        self.heap: list[tuple[Fraction, int]] = []

    def reset(self, weights: list[int], healthy: list[bool],
              carried: list[Fraction | None] | None = None) -> None:
        """Schedule ``weights``; ``carried[i]`` keeps an endpoint's deadline (None: next grid point)."""
        carried = carried or [None] * len(weights)
        self.weight = list(weights)
        self.due = [None if not ok else (d if d is not None else next_grid_point(self.now, w))
                    for w, ok, d in zip(weights, healthy, carried)]
        self.heap = [(d, i) for i, d in enumerate(self.due) if d is not None]
        heapq.heapify(self.heap)

    def pick(self, excluded: Container[int]) -> int:
        passed_over = []
        best = -1
        while self.heap:
            entry = heapq.heappop(self.heap)
            if entry[1] in excluded:
                passed_over.append(entry)
            else:
                best = entry[1]
                break
        for entry in passed_over:               # excluded ones keep their deadlines
            heapq.heappush(self.heap, entry)
        if best < 0:
            return -1
        d = self.due[best]
        self.now = max(self.now, d)             # an endpoint passed over may be behind now
        self.due[best] = d + Fraction(1, self.weight[best])
        heapq.heappush(self.heap, (self.due[best], best))
        return best

    def set_healthy(self, i: int, healthy: bool) -> None:
        d = self.due[i]
        if not healthy and d is not None:
            self.heap.remove((d, i))
            heapq.heapify(self.heap)
            self.due[i] = None
        elif healthy and d is None:
            self.due[i] = next_grid_point(self.now, self.weight[i])
            heapq.heappush(self.heap, (self.due[i], i))

    def deadline(self, i: int) -> tuple[int, int, int] | None:
        """As ``EndpointTable.deadline``: (whole cycles, numerator, weight)."""
        d = self.due[i]
        if d is None:
            return None
        whole = math.floor(d)
        return whole, int((d - whole) * self.weight[i]), self.weight[i]
