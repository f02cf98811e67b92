"""Upstream endpoints, their keep-alive pools, and the connection to one (compiled)."""
from _speedups.stats import Reported, TrafficStats
from typing import Any, final

@final
class Upstream(Reported):
    """One endpoint: address, idle connections (LIFO), counters; kept by ``key`` across
    snapshots so that its pool and counters survive endpoint-list updates."""

    weight: int
    removed: bool
    requests: int
    failures: int
    inflight: int
    report_success: bool
    """Report the next success to passive health (set after a failure)."""
    max_idle: int
    ssl: Any
    """An SSLContext when the service speaks TLS, else None."""
    server_hostname: str | None
    streams: StreamPool | None
    """HTTP/2 endpoints: their pool of multiplexed connections (h2_upstream.H2Pool), else None."""
    def __init__(self, key: tuple[str, str, int], ip: str, port: int, weight: int, cluster: str,
                 touched: list | None = None, pool: str = "") -> None: ...
    @property
    def key(self) -> tuple[str, str, int]: ...
    @property
    def pool(self) -> str: ...
    @property
    def ip(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def cluster(self) -> str: ...
    @property
    def host(self) -> str:
        """"ip:port" ("[ip]:port" for IPv6), as logged."""
    @property
    def host_bytes(self) -> bytes: ...
    @property
    def json_host(self) -> bytes: ...
    @property
    def json_cluster(self) -> bytes: ...
    @property
    def traffic(self) -> TrafficStats: ...
    def counters(self) -> list[float]:
        """[requests, failures, inflight, idle, *traffic.as_list()] (clears ``touched``)."""
    def close_idle(self, older_than: float) -> int:
        """Close pooled connections idle since before ``older_than``; how many stay."""
    def idle_count(self) -> int: ...

class StreamPool:
    """The pool of an HTTP/2 endpoint: the interface (h2_upstream.H2Pool implements it)."""

    def close_idle(self, older_than: float) -> int: ...
    def idle_count(self) -> int: ...

class UpstreamOwner:
    """What a lent upstream connection reports to (C methods only)."""

class UpstreamConnection:
    """asyncio protocol of one upstream connection."""

    def __init__(self, upstream: Upstream, max_head: int = 65536, max_headers: int = 100) -> None: ...
    @property
    def upstream(self) -> Upstream: ...
