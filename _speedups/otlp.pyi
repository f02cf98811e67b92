"""OTLP span encoding (compiled); gateway.tracing.spans_of is its Python reference."""
from typing import final

@final
class SpanEncoder:
    def encode(self, records: list, base: float) -> bytes:
        """The records' spans as ScopeSpans ``spans`` fields (field 2, length-delimited);
        ``base``: wall clock minus monotonic clock, seconds."""
