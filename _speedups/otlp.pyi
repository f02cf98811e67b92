"""OTLP span encoding (compiled); gateway.tracing.spans_of is its Python reference."""
from typing import final

@final
class SpanEncoder:
    def encode(self, records: list, base: float) -> bytes:
        """The records' spans as ScopeSpans ``spans`` fields (field 2, length-delimited);
        ``base``: wall clock minus monotonic clock, seconds."""
    def export_request(self, records: list, base: float, resource: bytes, scope: bytes) -> bytes:
        """A whole ExportTraceServiceRequest of the records: one ResourceSpans (``resource``:
        a Resource message) with one ScopeSpans (``scope``: an InstrumentationScope)."""
