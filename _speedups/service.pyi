"""The snapshot objects the request path reads (compiled): routes and services."""
from _speedups.filters import RouteFilters
from _speedups.stats import Reported, TrafficStats
from _speedups.table import EndpointTable
from typing import final

@final
class Service:
    """A merged service: its endpoint table (of ``Upstream``) and circuit breakers."""

    key: str
    json_key: bytes
    table: EndpointTable
    max_connections: int
    max_pending: int
    max_requests: int
    max_retries: int
    """Circuit breakers: 0 is no limit."""
    outlier_statuses: frozenset[int]
    hash_header: bytes | None
    hash_source_ip: bool
    hash_cookie: bytes | None
    hash_cookie_attributes: bytes | None
    observe_latency: bool
    def __init__(self, key: str, table: EndpointTable) -> None: ...
    @property
    def connections(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def active_requests(self) -> int: ...
    @property
    def active_retries(self) -> int: ...
    def breaker_state(self) -> dict[str, tuple[int, int]]:
        """{limit: (in use, max or 0)}."""

@final
class Route(Reported):
    filters: RouteFilters | None
    def __init__(self, name: str, services: tuple[Service, ...], split: EndpointTable | None,
                 rewrite_from: bytes | None, rewrite_to: bytes | None, timeout: float,
                 attempts: int, retry_statuses: frozenset[int], retry_timeout: bool,
                 per_try_timeout: float, traffic: TrafficStats | None = None,
                 touched: list | None = None, backoff: float = 0.0) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def json_name(self) -> bytes: ...
    @property
    def services(self) -> tuple[Service, ...]: ...
    @property
    def split(self) -> EndpointTable | None: ...
    @property
    def rewrite_from(self) -> bytes | None: ...
    @property
    def rewrite_to(self) -> bytes | None: ...
    @property
    def timeout(self) -> float: ...
    @property
    def attempts(self) -> int: ...
    @property
    def retry_statuses(self) -> frozenset[int] | None: ...
    @property
    def backoff(self) -> float: ...
    @property
    def retry_timeout(self) -> bool: ...
    @property
    def per_try_timeout(self) -> float: ...
    @property
    def traffic(self) -> TrafficStats: ...
    def counters(self) -> list[float]:
        """``traffic.as_list()``, for the worker's report (clears ``touched``)."""
