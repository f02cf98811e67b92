"""Route matching, prepared once per snapshot and run once per request (compiled)."""
import re
from typing import Any, Iterable, Literal, final

@final
class RouteMatcher:
    """The conditions of one route; ``target`` is what a match returns (the proxy's Route).

    ``headers``: (lower-case name, "exact" | "present" | "absent" | "regex", bytes | re.Pattern | None);
    ``queries``: (name, "exact" | "regex", bytes | re.Pattern), first of repeated names decides.
    """
    target: Any
    path_kind: int
    path_bytes: bytes
    def __init__(self, target: Any,
                 path_kind: Literal["any", "prefix", "segment_prefix", "exact", "regex"],
                 path_value: str | re.Pattern[str] | None, hosts: Iterable[str] = ...,
                 methods: Iterable[str] = ..., headers: Iterable[tuple] = ...,
                 queries: Iterable[tuple] = ...) -> None: ...

@final
class Router:
    """First match wins, in the order given; indexed by first path segment."""
    matchers: tuple[RouteMatcher, ...]
    dispatches: bool
    def __init__(self, matchers: Iterable[RouteMatcher]) -> None: ...
    @staticmethod
    def for_listeners(listeners: Iterable[tuple[str | None, Router]]) -> Router:
        """A Router choosing one listener's Router by the request's Host (exact hostname,
        then the longest wildcard, then the listener without hostname)."""
    def listener_for(self, host: bytes) -> Router | None: ...
    def misdirected(self, head: Any, sni: bytes | None) -> bool:
        """HTTPS: the Host selects another listener than the SNI did (answer 421)."""
    def match(self, head: Any) -> Any | None: ...
