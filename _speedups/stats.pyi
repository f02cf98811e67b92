"""What the request path counts (compiled): worker counters by index, and per upstream
and route the responses by status class and a latency histogram."""
from typing import Final, final

STAT_NAMES: Final[tuple[str, ...]]
"""The worker's counters, in ``ProxyContext.counter_list()`` order."""
LATENCY_BOUNDS: Final[tuple[float, ...]]
"""Histogram bucket upper bounds in seconds; one more bucket (+Inf) follows."""

# Positions in the report lists: TrafficStats.as_list() and Upstream.counters().
TRAFFIC_COUNT: Final[int]
TRAFFIC_CLASSES: Final[int]
TRAFFIC_BUCKETS: Final[int]
TRAFFIC_LATENCY_SUM: Final[int]
TRAFFIC_DENIED: Final[int]
TRAFFIC_LEN: Final[int]
DENY_RATE_LIMITED: Final[int]
DENY_UNAUTHENTICATED: Final[int]
DENY_FORBIDDEN: Final[int]
N_DENIALS: Final[int]
DENIAL_NAMES: Final[tuple[str, ...]]
UPSTREAM_REQUESTS: Final[int]
UPSTREAM_FAILURES: Final[int]
UPSTREAM_IN_FLIGHT: Final[int]
UPSTREAM_IDLE: Final[int]
UPSTREAM_TRAFFIC: Final[int]
# ... Histogram.as_list() and BackendStats.counters().
HISTOGRAM_COUNT: Final[int]
HISTOGRAM_BUCKETS: Final[int]
HISTOGRAM_SUM: Final[int]
HISTOGRAM_LEN: Final[int]
BACKEND_DURATION: Final[int]
BACKEND_CONNECT: Final[int]
BACKEND_RESPONSE: Final[int]
BACKEND_FAILURES: Final[int]
BACKEND_RETRIES: Final[int]
BACKEND_LEN: Final[int]

@final
class TrafficStats:
    @property
    def latency_sum(self) -> float: ...
    @property
    def count(self) -> int: ...
    def as_list(self) -> list[float]:
        """[count, by_class[0..5], buckets..., latency_sum], for the worker's report."""
    def as_dict(self) -> dict: ...

class Reported:
    """Counters a worker reports; they join ``ProxyContext.touched`` when they move."""

CAUSE_NAMES: Final[tuple[str, ...]]
"""Causes of failed attempts and retries, in ``BackendStats.counters()`` order."""

@final
class Histogram:
    @property
    def total(self) -> float: ...
    @property
    def count(self) -> int: ...
    def as_list(self) -> list[float]:
        """[count, buckets..., sum]"""

@final
class BackendStats(Reported):
    """Per (route, service, cluster): duration, connect and response histograms, failed
    attempts and retries by cause."""
    @property
    def key(self) -> tuple[str, str, str]: ...
    def __init__(self, key: tuple[str, str, str], touched: list | None = None) -> None: ...
    def counters(self) -> list[float]: ...
