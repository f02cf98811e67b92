"""pick() cost per load-balancing policy against smooth WRR / EDF (ns per pick).

    python bench/pick_policies.py                 # n = 10, 1,000, 10,000 (run on a quiet machine)
    python bench/pick_policies.py --sizes 10 --picks 1000   # a quick check that it runs

Each policy gets a fresh table of n equal-weight endpoints; ring_hash gets a new key
per pick (hash_bytes of a short user id, precomputed: the key's hash is the proxy's
cost, not the table's).  Timed from Python, as bench/MICRO.md times round robin, so
the figures include one Python call per pick.
"""
from __future__ import annotations

import argparse
import time

from _speedups.table import POLICIES, EndpointTable, hash_bytes


class _Ep:
    __slots__ = ("key", "cluster", "weight")

    def __init__(self, i: int) -> None:
        self.key = (f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 8080)
        self.cluster = "a" if i % 2 else "b"
        self.weight = 1


def ns_per_pick(policy: str, n: int, picks: int) -> float:
    t = EndpointTable([_Ep(i) for i in range(n)], policy=policy)
    pick = t.pick
    if policy == "ring_hash":
        keys = [hash_bytes(b"user-%d" % k) for k in range(picks)]
        set_key = t.set_key
        start = time.perf_counter_ns()
        for h in keys:
            set_key(h)
            pick()
    else:
        start = time.perf_counter_ns()
        for _ in range(picks):
            pick()
    return (time.perf_counter_ns() - start) / picks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10_000])
    parser.add_argument("--picks", type=int, default=200_000)
    args = parser.parse_args()
    print(f"{'policy':<15}" + "".join(f"{'n=' + str(n):>12}" for n in args.sizes) + "   (ns per pick)")
    for policy in POLICIES:
        row = [ns_per_pick(policy, n, args.picks) for n in args.sizes]
        print(f"{policy:<15}" + "".join(f"{x:>12.0f}" for x in row))


if __name__ == "__main__":
    main()
