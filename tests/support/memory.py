"""Memory of a process, from /proc/<pid>/status: ``rss_bytes`` (VmRSS now), ``peak_rss_bytes``
(VmHWM, the most it ever held) and ``RssSampler`` (the peak over a block of a test, sampled
from a thread, optionally over a supervisor and its workers).

Used by the tests that bound the gateway's or a backend's memory and by the benchmarks that
report it (bench/httproutes.py, bench/scale.py, bench/memory.py).
"""
from __future__ import annotations

import threading

from .processes import descendants

MiB = 1 << 20


def status_bytes(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM, ...), in bytes.

    FileNotFoundError (an OSError) when the process is gone, RuntimeError when it has no such
    field (a zombie has no VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process now (VmRSS), in bytes."""
    return status_bytes(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int:
    """The most resident memory the process ever had (VmHWM), in bytes."""
    return status_bytes(pid, "VmHWM")


class RssSampler:
    """Samples a process's VmRSS from a thread; ``peak`` is the largest value seen.

    ``tree``: the sum over the process and its descendants then (a supervisor's workers).
    """

    def __init__(self, pid: int, interval: float = 0.02, tree: bool = False) -> None:
        self.pids = [pid, *descendants(pid)] if tree else [pid]
        self.pid = pid
        self.interval = interval
        self.baseline = self.rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, self.rss())
            except (OSError, RuntimeError):
                return

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, self.rss())

    def rss(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline
