"""HTTP/2 to upstreams (compiled): H2Pool, H2UpstreamSession, H2Stream; see _speedups/h2_upstream.pyx."""
from typing import final

from _speedups.upstream import StreamPool, Upstream, UpstreamConnection

@final
class H2Pool(StreamPool):
    """An HTTP/2 endpoint's connections (``Upstream.streams``): at most ``max_connections``
    per worker, each carrying as many streams as the peer's SETTINGS allow."""

    max_connections: int
    def __init__(self, upstream: Upstream, max_connections: int = 2, tls: bool = False) -> None: ...
    @property
    def sessions(self) -> list[H2UpstreamSession]: ...
    @property
    def scheme(self) -> bytes: ...

@final
class H2UpstreamSession:
    """asyncio protocol of one HTTP/2 connection to an endpoint."""

    draining: bool
    def __init__(self, pool: H2Pool) -> None: ...

@final
class H2Stream(UpstreamConnection):
    """One stream, lent to one exchange as an HTTP/1.1 connection would be (made by its
    session, not from Python)."""

    trailers: list[tuple[bytes, bytes]] | None
