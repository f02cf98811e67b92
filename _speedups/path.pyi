"""Request path normalization (compiled): RFC 3986 6.2.2 before route matching."""
from typing import Literal, final

@final
class PathPolicy:
    """How request paths are normalized; one per config.

    ``escaped_slashes`` decides %2F, %5C and a raw backslash: "keep" (bytes of their
    segment, never a separator), "reject" (400) or "unescape_and_redirect" (307 to
    the path with them decoded to "/").
    """

    def __init__(self, normalize: bool = True, merge_slashes: bool = True,
                 escaped_slashes: Literal["keep", "reject", "unescape_and_redirect"] = "reject",
                 forward_original: bool = False) -> None: ...
    @property
    def flags(self) -> int: ...
    @property
    def escaped_slashes(self) -> int: ...
    @property
    def forward_original(self) -> bool: ...
    def __call__(self, path: bytes) -> tuple[int, bytes] | tuple[int, str]:
        """(0, normalized path), (307, the path to redirect to) or (400, the reason).

        The normalized path is ``path`` itself (the same object) when nothing changed.
        """
