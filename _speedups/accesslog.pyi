"""The access log line, rendered as bytes on the request path (compiled)."""
from typing import Any, final

def json_string(value: bytes) -> bytes:
    """``value`` as a JSON string literal (bytes taken as Latin-1, as HTTP defines them)."""

@final
class LogBuffer:
    """Lines appended to an access log's ``parts``; its ``flush()`` runs at ``limit`` bytes."""

    def __init__(self, access_log: Any = None) -> None: ...
    @property
    def access_log(self) -> Any: ...
