"""OpenTelemetry traces: the exporter that takes what the request path recorded.

The request path (``_speedups/exchange.pyx`` with ``_speedups/tracing.pyx``) only records:
per request kept (sampled, answered 5xx, or with a failed attempt) one ``RequestRecord``
(with a ``SpanRecord`` per attempt), pushed onto the ``Tracer``'s bounded queue.  Here a thread of the worker process takes the queue every
``flush_interval`` (or as soon as ``batch_size`` requests are held), turns each record into
a server span and one client span per upstream attempt, encodes them as OTLP protobuf and
POSTs them to the collector (OTLP/HTTP, ``application/x-protobuf``).  A collector that is
down or slow costs spans, not request time: the POST blocks this thread only, the queue
fills and the request path drops (and counts) what does not fit.

The protobuf is written by hand: OTLP's trace messages use three wire forms, and a
dependency on ``protobuf`` + ``opentelemetry-proto`` at run time would be ~10 MiB per
worker for them.  The spans are written by ``_speedups.otlp.SpanEncoder`` (compiled: the
export thread holds the GIL while it encodes, so the event loop waits meanwhile);
``tests/reference/otlp.py`` is its plain Python reference, which the tests hold it to byte
for byte.  The tests decode every span with the official ``opentelemetry-proto`` classes,
so the encoding is checked against the real schema too.

Attributes follow the OpenTelemetry HTTP semantic conventions (``http.request.method``,
``http.response.status_code``, ``server.address``, ``http.request.resend_count``,
``error.type`` ...) plus the gateway's own under ``gateway.*``: route, service, cluster,
endpoint, attempt number and failure kind.
"""
from __future__ import annotations

import logging
import os
import threading

from _speedups.otlp import SpanEncoder
from _speedups.tracing import RequestRecord, Tracer
from gateway import __version__
from gateway.collector import Collector
from gateway.config import TracingConfig
from gateway.protobuf import attribute, field

log = logging.getLogger("gateway.tracing")

# OTLP enums (opentelemetry/proto/trace/v1/trace.proto)
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2


def resource_and_scope(service_name: str) -> tuple[bytes, bytes]:
    """The Resource and InstrumentationScope messages of this worker's spans."""
    resource = (attribute(1, "service.name", service_name)
                + attribute(1, "telemetry.sdk.name", "gateway")
                + attribute(1, "telemetry.sdk.language", "python")
                + attribute(1, "service.version", __version__)
                + attribute(1, "process.pid", os.getpid()))       # which worker served
    return resource, field(1, b"gateway") + field(2, __version__.encode())


def encode_request(spans: bytes, service_name: str) -> bytes:
    """collector.trace.v1.ExportTraceServiceRequest: one ResourceSpans, one ScopeSpans;
    ``spans``: its spans fields (``SpanEncoder.encode``).  The plain form of
    ``SpanEncoder.export_request``, which the tests hold it to."""
    resource, scope = resource_and_scope(service_name)
    return field(1, field(1, resource) + field(2, field(1, scope) + spans))


class SpanExporter:
    """A worker's exporter thread: takes the Tracer's records, sends OTLP batches."""

    def __init__(self, tracer: Tracer, cfg: TracingConfig,
                 previous: "SpanExporter | None" = None) -> None:
        """``previous``: the exporter this one replaces (a reload changed ``tracing``); its
        counts carry on here, so that the worker's counters never go down."""
        self.tracer = tracer
        self._previous = previous
        self._base = [0] * 5
        self.cfg = cfg
        self._collector = Collector(cfg.endpoint, "/v1/traces", cfg.timeout)
        self._encoder = SpanEncoder()
        self._resource_and_scope = resource_and_scope(cfg.service_name)
        self.spans_exported = 0
        self.requests_failed = 0        # requests' spans lost because an export failed
        self.export_failures = 0        # export POSTs that failed
        self._wake = threading.Event()
        self._stopping = False
        tracer.wake = self._wake.set
        self._thread = threading.Thread(target=self._run, name="gateway-otlp", daemon=True)
        self._thread.start()

    def counters(self) -> list[int]:
        """[recorded, dropped (queue full), spans exported, dropped (export failed),
        export failures]: absolute, for the worker's report (gateway.stats)."""
        t = self.tracer
        mine = [t.recorded, t.dropped, self.spans_exported, self.requests_failed,
                self.export_failures]
        previous = self._previous
        if previous is not None:
            counts = previous.counters()
            if not previous._thread.is_alive():     # its last flush is done: fold it in
                self._base = [a + b for a, b in zip(self._base, counts)]
                self._previous = None
                counts = [0] * 5
            mine = [a + b for a, b in zip(mine, counts)]
        return [a + b for a, b in zip(mine, self._base)]

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.cfg.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:       # never let the thread die: the queue would only fill
                log.exception("span export failed")
        self.flush()
        self._collector.close()

    def flush(self) -> None:
        records = self.tracer.take()
        size = self.cfg.batch_size
        for i in range(0, len(records), size):
            self._send(records[i:i + size])

    def _send(self, batch: list[RequestRecord]) -> None:
        body = self._encoder.export_request(batch, self.tracer.wall_base - self.tracer.mono_base,
                                            *self._resource_and_scope)
        count = sum(record.n_spans for record in batch)
        try:
            self._collector.post(body)
            self.spans_exported += count
        except OSError as exc:
            if not self.export_failures:    # the first only: a collector down would flood the log
                log.warning("cannot export spans", extra={"fields": {
                    "endpoint": self.cfg.endpoint, "error": str(exc)}})
            self.export_failures += 1
            self.requests_failed += len(batch)

    def stop(self) -> None:
        """Stop after one last flush, without waiting for it."""
        self._stopping = True
        self._wake.set()

    def close(self) -> None:
        """Stop and wait for the last flush (at most about one export timeout)."""
        self.stop()
        self._thread.join(self.cfg.timeout + 1.0)


def apply_tracing(ctx, exporter: SpanExporter | None, cfg: TracingConfig | None) -> SpanExporter | None:
    """Tracing on, off or changed for a worker's context; returns the exporter now running."""
    if exporter is not None:
        exporter.stop()             # its queue is flushed by its thread, then it ends
    if cfg is None:
        ctx.tracer = None
        return None
    tracer = Tracer(cfg.sample_ratio, cfg.max_queue, cfg.batch_size)
    ctx.tracer = tracer
    return SpanExporter(tracer, cfg, exporter)
