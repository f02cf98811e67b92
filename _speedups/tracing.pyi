"""Trace context on the request path (compiled): ids, sampling and span records."""
from typing import final

@final
class SpanRecord:
    """An upstream attempt's span, or a mirror copy's (number 0)."""
    line: bytes
    upstream: object
    number: int
    start: float
    end: float
    kind: str | None
    status: int
    t_connect: float
    t_response: float
    mirrors: object
    next: SpanRecord | None
    def __init__(self, line: bytes, upstream: object, number: int, start: float, end: float,
                 kind: str | None = None, status: int = 0, t_connect: float = -1.0,
                 t_response: float = -1.0, mirrors: object = None) -> None: ...
    @property
    def span_id(self) -> bytes: ...

@final
class RequestRecord:
    """A kept request: its server span's fields and its spans, linked."""
    trace_id: bytes
    server_span: bytes
    parent_span: bytes | None
    trace_state: bytes | None
    start: float
    end: float
    method: bytes
    host: bytes | None
    target: bytes
    status: int
    route: str | None
    service: str | None
    error: str | None
    client: bytes
    h2: bool
    request_id: bytes
    attempts: int
    spans: SpanRecord | None
    n_spans: int
    def __init__(self, trace_id: bytes, server_span: bytes, parent_span: bytes | None,
                 trace_state: bytes | None, start: float, end: float, method: bytes,
                 host: bytes | None, target: bytes, status: int, route: str | None,
                 service: str | None, error: str | None, client: bytes, h2: bool,
                 request_id: bytes, attempts: int, spans: list[SpanRecord] | None = None) -> None: ...
    def span_list(self) -> list[SpanRecord]: ...

@final
class Tracer:
    sample_ratio: float
    max_queue: int
    batch_size: int
    wake: object
    recorded: int
    dropped: int
    mono_base: float
    wall_base: float
    def __init__(self, sample_ratio: float = 1.0, max_queue: int = 4096,
                 batch_size: int = 512) -> None: ...
    def set_ratio(self, ratio: float) -> None: ...
    def take(self) -> list[RequestRecord]:
        """The span records held, oldest first (the exporter's thread calls this)."""
    def counters(self) -> dict[str, int]: ...
    def new_trace_id(self) -> bytes: ...
    def new_span_id(self) -> bytes: ...
    def new_traceparent_line(self, trace_id: bytes, sampled: bool) -> bytes: ...
    def sampled(self, trace_id: bytes) -> bool: ...

def traceparent_fields(value: bytes) -> tuple[bytes, bytes, bool] | None: ...
def b3_fields(value: bytes) -> tuple[bytes, bytes, bool | None] | None: ...
