"""Route filters (Gateway API HTTPRoute filters), prepared once per snapshot (compiled)."""
from typing import Callable, Iterable, final

from _speedups.policy import RoutePolicy

@final
class HeaderModifier:
    """``set`` replaces every field of the name, ``add`` appends one, ``remove`` drops them."""
    set_fields: tuple[tuple[bytes, bytes, bytes], ...]
    add_fields: tuple[tuple[bytes, bytes, bytes], ...]
    drop: frozenset[bytes]
    def __init__(self, set: Iterable[tuple[str, str]] = ..., add: Iterable[tuple[str, str]] = ...,
                 remove: Iterable[str] = ...) -> None: ...
    def apply(self, headers: list[tuple[bytes, bytes, bytes]]) -> list[tuple[bytes, bytes, bytes]]: ...

@final
class PathRewrite:
    """The full path (``prefix_from`` None) or the matched prefix replaced (ReplacePrefixMatch)."""
    replacement: bytes
    prefix_from: bytes | None
    def __init__(self, replacement: str, prefix_from: str | None = None) -> None: ...
    def path(self, path: bytes) -> bytes: ...

@final
class Redirect:
    status: int
    def __init__(self, status: int, scheme: str | None = None, host: str | None = None,
                 port: int | None = None, path: PathRewrite | None = None) -> None: ...
    def location(self, head: object, request_scheme: bytes) -> bytes: ...

@final
class Cors:
    """The CORS filter: which origins a route allows, and the fields its answers get."""
    def __init__(self, allow_origins: Iterable[str] = (), allow_methods: Iterable[str] = (),
                 allow_headers: Iterable[str] = (), expose_headers: Iterable[str] = (),
                 allow_credentials: bool = False, max_age: int = 5) -> None: ...

@final
class RouteFilters:
    request_headers: HeaderModifier | None
    response_headers: HeaderModifier | None
    redirect: Redirect | None
    rewrite_path: PathRewrite | None
    rewrite_host: bytes | None
    mirrors: tuple[Callable[[bytes], None], ...]
    direct_status: int
    direct_reason: str
    cors: Cors | None
    policy: RoutePolicy | None
    def __init__(self, request_headers: HeaderModifier | None = None,
                 response_headers: HeaderModifier | None = None, redirect: Redirect | None = None,
                 rewrite_path: PathRewrite | None = None, rewrite_host: str | None = None,
                 mirrors: tuple[Callable[[bytes], None], ...] = (), direct_status: int = 0,
                 direct_reason: str | None = None, cors: Cors | None = None,
                 policy: RoutePolicy | None = None) -> None: ...
    def rewrite_target(self, target: bytes) -> bytes: ...
