"""Soak: a gateway under steady load for a long time, its memory sampled every 30 s.

    /work/venv/bin/python bench/soak.py                          # 10 minutes, 1,000 endpoints
    /work/venv/bin/python bench/soak.py --minutes 60 --endpoints 10000 --connections 100
    /work/venv/bin/python bench/soak.py --minutes 2 --interval 10  # a quick look

Not part of CI: a script (``bench/`` is outside the pytest ``testpaths``), and
it takes as long as you ask.

Same setup as bench/memory.py (nginx backends on loopback addresses, one
``python -m gateway run`` with ``workers: 1`` and two static sources), but with
the default ``upstream_idle`` (60 s), so idle upstream connections are closed
and reopened during the run.  Load: ``wrk`` for the whole duration (1 thread,
``--connections`` keep-alive connections) if installed, else the asyncio
client of bench/memory.py in a thread; with ``taskset`` and 2+ CPUs the gateway
is pinned to CPU 0 and the backends and load to CPU 1, as bench/run.py does.
At ~20k requests/s on one core the default 10 minutes is well over 1M
requests; the run fails if fewer than ``--min-requests`` were answered.

Every ``--interval`` seconds it prints the worker's RSS (MiB), open fds and
elapsed time.  Growth is flagged when, after a warm-up (``--warmup``, default
2 minutes: pools, caches and allocator arenas fill up first), either

* RSS at the end is more than ``--max-growth-mib`` (default 10) above the
  first sample after the warm-up, or
* the least-squares slope of RSS over the samples after the warm-up exceeds
  ``--max-slope`` MiB per 10 minutes (default 5).

Exit status: 0, 1 on growth or too few requests, 2 if it could not set up.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory  # noqa: E402  (bench/memory.py: setup, RSS, the asyncio client)


def slope_per_10min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per 10 minutes."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return sum((t - mt) * (r - mr) for t, r in samples) / var * 600


class Load:
    """wrk for ``seconds``, or the asyncio client in a thread; ``result()`` after it ends."""

    def __init__(self, port: int, seconds: float, connections: int) -> None:
        self.seconds = seconds
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None
        self.statuses: Counter = Counter()
        self.output = ""
        if shutil.which("wrk"):
            argv = memory.pinned(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s",
                                  "--timeout", "5s", f"http://127.0.0.1:{port}/"], memory.LOAD_CPU)
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        else:
            self.thread = threading.Thread(target=self._client, args=(port, connections),
                                           daemon=True)
            self.thread.start()

    def _client(self, port: int, connections: int) -> None:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:         # 10,000-request rounds until the time is up
            self.statuses += asyncio.run(memory._asyncio_load(port, 10_000, connections))

    @property
    def tool(self) -> str:
        return "wrk" if self.proc is not None else "asyncio client"

    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.thread.is_alive()

    def wait(self) -> None:
        if self.proc is not None:
            try:
                self.output = self.proc.communicate(timeout=self.seconds + 60)[0].decode(errors="replace")
            except subprocess.TimeoutExpired:
                self.stop()
        else:
            self.thread.join(self.seconds + 60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.output = self.proc.communicate()[0].decode(errors="replace")

    def answered(self) -> tuple[int, int]:
        """(answers, answers that were not 2xx or failed)."""
        if self.proc is None:
            total = sum(self.statuses.values())
            return total, total - self.statuses.get(200, 0)
        m = re.search(r"(\d+) requests in", self.output)
        total = int(m.group(1)) if m else 0
        bad = 0
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", self.output)
        if m:
            bad += int(m.group(1))
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      self.output)
        if m:
            bad += sum(int(x) for x in m.groups())
        return total, bad


def main(argv: list[str] | None = None) -> int:
    memory.exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds before the baseline")
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--min-requests", type=int, default=1_000_000)
    parser.add_argument("--max-growth-mib", type=float, default=10.0)
    parser.add_argument("--max-slope", type=float, default=5.0, help="MiB per 10 minutes")
    parser.add_argument("--repo", type=Path, default=memory.REPO)
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    samples: list[tuple[float, float]] = []
    load: Load | None = None
    try:
        with memory.Setup(args.endpoints, 1, args.keep_tmp, args.repo, upstream_idle="60s") as setup:
            pid = setup.worker_pids()[0]
            print(f"soak: {args.minutes:g} min, {args.endpoints} endpoints, "
                  f"{args.connections} connections, worker pid {pid}", flush=True)
            print(f"  t=   0s  rss {memory.rss_mib(pid):7.1f} MiB  fds {memory.open_fds(pid)}  (loaded)",
                  flush=True)
            load = Load(setup.port, seconds, args.connections)
            start = time.monotonic()
            next_sample = start + args.interval
            while load.running():
                time.sleep(max(0.0, min(1.0, next_sample - time.monotonic())))
                if time.monotonic() >= next_sample:
                    t = time.monotonic() - start
                    rss = memory.rss_mib(pid)
                    samples.append((t, rss))
                    note = "" if t >= args.warmup else "  (warm-up)"
                    print(f"  t={t:4.0f}s  rss {rss:7.1f} MiB  fds {memory.open_fds(pid)}{note}",
                          flush=True)
                    next_sample += args.interval
                if not setup.gateway.alive():
                    print(f"gateway died:\n{setup.gateway.log_tail()}", file=sys.stderr)
                    return 1
            load.wait()
            final = memory.rss_mib(pid)
    except memory.SetupError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    finally:
        if load is not None:
            load.stop()
    total, bad = load.answered()
    steady = [(t, r) for t, r in samples if t >= args.warmup]
    baseline = steady[0][1] if steady else (samples[0][1] if samples else final)
    growth = final - baseline
    slope = slope_per_10min(steady)
    print(f"{load.tool}: {total} requests in {seconds:.0f} s ({total / seconds:,.0f}/s), {bad} failed")
    print(f"RSS: after warm-up {baseline:.1f} MiB, at the end {final:.1f} MiB "
          f"(growth {growth:+.1f} MiB), slope {slope:+.2f} MiB per 10 min")
    problems = []
    if growth > args.max_growth_mib:
        problems.append(f"RSS grew {growth:.1f} MiB > {args.max_growth_mib:g}")
    if slope > args.max_slope:
        problems.append(f"RSS slope {slope:.2f} MiB/10 min > {args.max_slope:g}")
    if total < args.min_requests:
        problems.append(f"only {total} requests < {args.min_requests}")
    if bad:
        problems.append(f"{bad} requests failed")
    print("GROWTH FLAGGED: " + "; ".join(problems) if problems else "OK: no growth")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
