"""Route filters (Gateway API HTTPRoute filters), prepared once per snapshot (compiled)."""
from typing import Callable, Iterable, final

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
class RouteFilters:
    request_headers: HeaderModifier | None
    response_headers: HeaderModifier | None
    redirect: Redirect | None
    rewrite_path: PathRewrite | None
    rewrite_host: bytes | None
    mirrors: tuple[Callable[[bytes], None], ...]
    direct_status: int
    direct_reason: str
    def __init__(self, request_headers: HeaderModifier | None = None,
                 response_headers: HeaderModifier | None = None, redirect: Redirect | None = None,
                 rewrite_path: PathRewrite | None = None, rewrite_host: str | None = None,
                 mirrors: tuple[Callable[[bytes], None], ...] = (), direct_status: int = 0,
                 direct_reason: str | None = None) -> None: ...
    def rewrite_target(self, target: bytes) -> bytes: ...
