"""Waiting for an event, bounded in time: ``wait_until``.

Every test and benchmark that polls for something (a log line, a reload, a process gone, a
route served) polls with this one function, so that each wait has a deadline and says what it
waited for when that deadline passes.
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError, AssertionError):
    """A ``wait_until`` deadline passed.  Both a TimeoutError and an AssertionError, so that a
    test reports it as a failure and callers may catch either."""


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, message: str = "condition",
               interval: float = 0.05, ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Poll ``predicate`` until it returns something truthy; that value is returned.

    ``ignore``: exceptions of ``predicate`` that count as "not yet" (a page redrawn while it was
    read, an assertion inside the check).  After ``timeout`` seconds: ``WaitTimeout`` naming
    ``message`` and the last value (or exception) seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = last = predicate()
        except ignore as exc:
            value, last = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"{message} not met within {timeout}s (last: {last!r})"[:2000])
        time.sleep(interval)
