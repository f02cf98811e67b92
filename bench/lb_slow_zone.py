"""Which load-balancing policy survives a slow zone and recovers from it (issue #26, point 2).

    python bench/lb_slow_zone.py                    # 6 s before/slow/after each, all policies
    python bench/lb_slow_zone.py --phase 1.5        # a quick check that it runs

The compiled ``EndpointTable`` of each policy, driven in real time (peak_ewma decays with the
monotonic clock, so the clock cannot be simulated): two zones of two endpoints, ``--clients``
closed-loop clients (each sends its next request when the last one is answered), every
answer taking ``--base`` seconds, plus ``--slow`` seconds from zone A while it is slow.
Printed per policy: zone A's share of requests before, while slow and after, and how long
after the repair zone A is back to a third of the traffic (measured over 0.5 s windows).
No sockets: this measures the policies' choices, not the proxy.
"""
from __future__ import annotations

import argparse
import heapq
import time

from _speedups.table import EndpointTable


class _Ep:
    __slots__ = ("key", "cluster", "weight")

    def __init__(self, i: int, cluster: str) -> None:
        self.key = (f"10.0.0.{i}", 8080)
        self.cluster = cluster
        self.weight = 1


def run(policy: str, phase: float, clients: int, base: float, slow: float, decay: float = 10.0) -> dict:
    eps = [_Ep(0, "a"), _Ep(1, "b"), _Ep(2, "a"), _Ep(3, "b")]
    table = EndpointTable(eps, policy=policy, decay=decay)
    zone_a = {i for i, e in enumerate(eps) if e.cluster == "a"}
    start = time.monotonic()
    slow_from, slow_until, end = start + phase, start + 2 * phase, start + 3 * phase
    done: list[tuple[float, int, float]] = []        # (due, endpoint, sent)
    picks: list[tuple[float, bool]] = []             # (time, to zone A)

    def send(now: float) -> None:
        i = table.pick()
        table.acquire(i)
        in_a = i in zone_a
        picks.append((now, in_a))
        delay = base + (slow if in_a and slow_from <= now < slow_until else 0.0)
        heapq.heappush(done, (now + delay, i, now))

    now = time.monotonic()
    for _ in range(clients):
        send(now)
    while done:
        due, i, sent = heapq.heappop(done)
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        now = time.monotonic()
        table.release(i)
        table.observe(i, now - sent, now)
        if now < end:
            send(now)

    def share(lo: float, hi: float) -> float:
        sel = [a for t, a in picks if lo <= t < hi]
        return sum(sel) / len(sel) if sel else float("nan")

    back = None
    t = slow_until
    while t < end:
        if share(t, t + 0.5) >= 1 / 3:
            back = t - slow_until
            break
        t += 0.1
    return {"policy": policy, "requests": len(picks), "before": share(start, slow_from),
            "slow": share(slow_from + 0.5, slow_until), "after": share(end - phase / 2, end),
            "back_s": back}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", type=float, default=6.0, help="seconds before, slow, after")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--base", type=float, default=0.002, help="answer time (s)")
    ap.add_argument("--slow", type=float, default=0.3, help="added in zone A while slow (s)")
    ap.add_argument("--decay", type=float, default=10.0, help="peak_ewma's decay (s)")
    ap.add_argument("--policies", default="round_robin,least_request,random,peak_ewma")
    args = ap.parse_args()
    print(f"{'policy':<14} {'requests':>8} {'A before':>9} {'A slow':>8} {'A after':>8} {'A back (s)':>10}")
    for policy in args.policies.split(","):
        r = run(policy, args.phase, args.clients, args.base, args.slow, args.decay)
        back = "never" if r["back_s"] is None else f"{r['back_s']:.1f}"
        print(f"{policy:<14} {r['requests']:>8} {r['before']:>9.1%} {r['slow']:>8.2%} "
              f"{r['after']:>8.1%} {back:>10}")


if __name__ == "__main__":
    main()
