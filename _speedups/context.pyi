"""What every connection of a worker shares (compiled): settings, counters, the access
log's buffer, the router, and the connections' deadline timers."""
from _speedups.forwarded import TrustedProxies
from _speedups.path import PathPolicy
from _speedups.router import Router
from _speedups.service import Service
from typing import Any, Callable, Iterable

class Port:
    """The routes of one listening address; connections accepted there read ``router``
    per request, and a new config replaces it."""
    router: Router
    def __init__(self, router: Router | None = None) -> None: ...

class Connection:
    """A client connection as the context drives it (deadlines, drain, redispatch)."""

    def close(self) -> None: ...
    def internal_error(self, exc: BaseException) -> None: ...

class Context:
    connect_timeout: float
    response_timeout: float
    idle_timeout: float
    header_timeout: float
    max_head_size: int
    max_headers: int
    max_uri: int
    max_body: int
    max_response_head: int
    max_connections: int
    max_requests_per_connection: int
    body_idle_timeout: float
    path_policy: PathPolicy
    trusted_proxies: TrustedProxies | None
    via: bytes
    draining: bool
    drain_grace: float
    on_upstream_result: Callable[[Service, Any, str | None], None] | None
    """f(service, upstream, failure kind or None for a recovery), passive health."""
    requests_in_flight: int
    retries_in_flight: int
    retry_budget_ratio: float
    retry_budget_min: int
    def __init__(self, loop: Any, limits: Any, timeouts: Any, *, access_log: Any = None,
                 via: bytes = b"1.1 gateway", request_id_prefix: bytes | None = None) -> None:
        """``limits``, ``timeouts``: the config's ``Limits`` and ``Timeouts``."""
    def configure(self, limits: Any, timeouts: Any) -> None:
        """Take a config's ``Limits`` and ``Timeouts`` (at start and at each reload)."""
    @property
    def loop(self) -> Any: ...
    @property
    def port(self) -> Port: ...
    @property
    def router(self) -> Router:
        """The file listeners' routes (``port.router``)."""
    @property
    def connections(self) -> set[Connection]: ...
    @property
    def touched(self) -> list: ...
    @property
    def stats(self) -> dict[str, int]: ...
    @property
    def access_log(self) -> Any: ...
    cleartext: int
    """``http.cleartext``: what the plain ports speak, its index in ``gateway.config.model.CLEARTEXT``."""
    def set_router(self, router: Router) -> None: ...
    def counter_list(self) -> list[int]: ...
    def take_touched(self) -> list:
        """The Upstreams and Routes whose counters moved since the last call."""
    def set_access_log(self, access_log: Any) -> None:
        """``access_log`` has ``parts`` (a list of lines), ``limit`` (bytes) and ``flush()``."""
    def run_timers(self) -> None:
        """The loop's timer callback: look at the connections whose deadlines are due."""
    def stop_timers(self) -> None: ...
    def timers_pending(self) -> int:
        """How many connections wait for a deadline."""
    def redispatch(self, service: Service, upstreams: Iterable[Any]) -> int:
        """Move ``service``'s requests waiting on these endpoints elsewhere; how many moved."""
    def close_idle_connections(self) -> None: ...
    def drain_connections(self, grace: float) -> None:
        """Shutting down: idle HTTP/1 connections close within ``grace``, HTTP/2 ones go away."""
    def active_connections(self) -> int: ...
