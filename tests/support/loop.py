"""An event loop in a thread, for synchronous tests that use in-process servers.

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
