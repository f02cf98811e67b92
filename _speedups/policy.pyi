"""Edge policy on a route (compiled): IP filter, authentication hook, shared rate limits."""
from typing import Any, Iterable, final

DEFAULT_SLOTS: int
UNITS_PER_SECOND: float
MAX_WINDOW_SECONDS: float

@final
class SharedBuckets:
    """Rate-limit buckets in a memfd (``fd`` -1: a new one) that a replica's workers share."""
    fd: int
    slots: int
    def __init__(self, fd: int = -1, slots: int = ...) -> None: ...

@final
class Denial:
    status: int
    reason: str
    fields: bytes | None
    kind: int
    body: str | None
    def __init__(self, status: int, reason: str, fields: bytes | None = None, kind: int = ...,
                 body: str | None = None) -> None: ...

@final
class Identity:
    """The fields authentication sets on a request it lets through."""
    fields: list[tuple[bytes, bytes, bytes]]
    lines: bytes
    def __init__(self, fields: Iterable[tuple[bytes, bytes, bytes]] = ()) -> None: ...

CACHE_SIZE: int

@final
class Verdicts:
    """Verdicts (Identity or Denial) by credential, each good until a wall-clock time."""
    field: bytes | None
    def __init__(self, field: bytes | None = None, size: int = ...) -> None: ...
    def lookup(self, credential: bytes) -> Identity | Denial | None: ...
    def remember(self, credential: bytes, verdict: Identity | Denial, until: float = ...) -> Identity | Denial: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...

@final
class RateLimit:
    interval: int
    window: int
    store: Any
    def __init__(self, buckets: SharedBuckets, name: str, requests: int, seconds: float, burst: int,
                 key: str = "none", store: Any = None) -> None: ...
    def __call__(self, head: Any, client: bytes = b"") -> Denial | None: ...

@final
class IpFilter:
    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None: ...

@final
class RoutePolicy:
    ip_filter: IpFilter | None
    auth: Any
    rate_limit: RateLimit | None
    ext_authz: Any
    def __init__(self, route: str, ip_filter: IpFilter | None = None, auth: Any = None,
                 rate_limit: RateLimit | None = None, ext_authz: Any = None) -> None: ...
    def __call__(self, head: Any, client: bytes = b"") -> Denial | None: ...
