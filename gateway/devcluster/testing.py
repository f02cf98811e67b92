"""Helpers for tests that use the local cluster: an event loop thread, process probes, polling.

``LoopThread`` runs a uvloop loop in a daemon thread so that synchronous tests (and the
synchronous ``kubernetes`` client) can use in-process servers::

    with LoopThread() as loop:
        backend = loop.run(start_backend("127.0.0.2", 0, "a", "pod-0"))
        ...                                   # backend.stats.total, backend.stats.by_prefix
        loop.run(stop_backend(backend))
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


class LoopThread:
    """A uvloop event loop running in a daemon thread until ``close()``."""

    def __init__(self) -> None:
        import uvloop

        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="devcluster-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Awaitable[T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args) -> T:
        """Call a plain function on the loop thread and return its result."""
        async def wrapper() -> T:
            return fn(*args)
        return self.run(wrapper())

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            self.run(cancel_all())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()

    def __enter__(self) -> "LoopThread":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


async def stop_backend(backend) -> None:
    backend.close()
    await backend.wait_closed()


def _status_field(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def rss(pid: int) -> int:
    """Resident memory of a process now, in bytes."""
    return _status_field(pid, "VmRSS")


def peak_rss(pid: int) -> int:
    """The most resident memory the process ever had (VmHWM), in bytes."""
    return _status_field(pid, "VmHWM")


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
               message: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not met within {timeout}s")
        time.sleep(interval)


def process_state(pid: int) -> str:
    """The one-letter state of a process (R, S, T for stopped, Z...)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


__all__ = ["LoopThread", "stop_backend", "rss", "peak_rss", "pid_alive", "wait_until",
           "process_state"]
