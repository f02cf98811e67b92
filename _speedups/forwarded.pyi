"""The client address behind trusted proxies (compiled): X-Forwarded-For walked from the right."""
from typing import Iterable, final

@final
class Networks:
    """IP networks (CIDRs); IPv4 also matches as its IPv4-mapped IPv6 form."""
    cidrs: tuple[str, ...]
    def __init__(self, cidrs: Iterable[str] = ()) -> None: ...
    def __contains__(self, address: str) -> bool: ...

@final
class TrustedProxies:
    """Exactly one of ``cidrs`` (networks whose addresses are proxies) and ``hops`` (> 0)."""

    def __init__(self, cidrs: Iterable[str] = (), hops: int = 0) -> None: ...
    @property
    def cidrs(self) -> tuple[str, ...]: ...
    @property
    def hops(self) -> int: ...
    def __call__(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address for a request from ``peer`` with this X-Forwarded-For value."""
