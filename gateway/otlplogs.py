"""The access log as OpenTelemetry logs: every line the access log writes is also sent to a
collector as an OTLP LogRecord (OTLP/HTTP, protobuf, POST to ``access_log.otlp_endpoint``).

Off the request path twice over: the access log's writer thread hands each chunk it has
written to this exporter's bounded queue, and this exporter's own thread parses the lines
and POSTs them, so a collector that is slow or down holds neither requests nor the file.
What does not fit the queue, or fails to send, is dropped and counted (``counters``).

A record: ``body`` the line's JSON text as written to the file; ``time_unix_nano`` its
``time``; ``trace_id`` its ``trace_id`` (so a backend joins the line to its trace);
severity INFO, WARN for a 4xx answer, ERROR for a 5xx; and attributes after the
OpenTelemetry HTTP conventions (``http.request.method``, ``url.path``,
``http.response.status_code``, ``http.route``) plus the gateway's ``gateway.upstream.*``.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from datetime import datetime

import orjson

from gateway import __version__
from gateway.collector import Collector
from gateway.protobuf import FIXED64, any_value, attribute, field, varint

log = logging.getLogger("gateway.otlplogs")

MAX_QUEUED = 16 * 1024 * 1024       # bytes of lines waiting for export; past it: dropped
BATCH = 1024                        # lines per export request
FLUSH_INTERVAL = 1.0                # seconds between exports when fewer are waiting
TIMEOUT = 2.0                       # per export request
SEVERITY_INFO, SEVERITY_WARN, SEVERITY_ERROR = 9, 13, 17       # logs.v1.SeverityNumber
# access-log field -> record attribute
ATTRIBUTES = (("method", "http.request.method"), ("path", "url.path"), ("status", "http.response.status_code"),
              ("route", "http.route"), ("client", "client.address"), ("upstream_service", "gateway.upstream.service"),
              ("upstream_host", "gateway.upstream.host"), ("upstream_cluster", "gateway.upstream.cluster"),
              ("duration_ms", "gateway.duration_ms"))


def log_record(line: bytes) -> bytes | None:
    """One access-log line as a logs.v1.LogRecord; None for a line that is not JSON."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    out = bytearray()
    when = _unix_nano(entry.get("time"))
    if when:
        out += b"\x09" + FIXED64.pack(when)                    # time_unix_nano, fixed64
    status = entry.get("status")
    severity = SEVERITY_ERROR if isinstance(status, int) and status >= 500 else \
        SEVERITY_WARN if isinstance(status, int) and status >= 400 else SEVERITY_INFO
    out += b"\x10" + varint(severity)                           # severity_number
    out += field(3, {SEVERITY_INFO: b"INFO", SEVERITY_WARN: b"WARN", SEVERITY_ERROR: b"ERROR"}[severity])
    out += field(5, any_value(line.rstrip(b"\n").decode("utf-8", "replace")))     # body
    for key, name in ATTRIBUTES:
        value = entry.get(key)
        if value is not None:
            out += attribute(6, name, value)
    trace_id = entry.get("trace_id")
    if isinstance(trace_id, str) and len(trace_id) == 32:
        try:
            out += field(9, bytes.fromhex(trace_id))
        except ValueError:
            pass
    if when:
        out += b"\x59" + FIXED64.pack(when)                    # observed_time_unix_nano (11)
    return bytes(out)


def _unix_nano(text) -> int:
    if not isinstance(text, str):
        return 0
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1e9)
    except ValueError:
        return 0


def encode_request(records: list[bytes], service_name: str) -> bytes:
    """collector.logs.v1.ExportLogsServiceRequest: one ResourceLogs, one ScopeLogs."""
    resource = (attribute(1, "service.name", service_name) + attribute(1, "service.version", __version__)
                + attribute(1, "process.pid", os.getpid()))
    scope = field(1, b"gateway.accesslog") + field(2, __version__.encode())
    scope_logs = field(1, scope) + b"".join(field(2, record) for record in records)
    return field(1, field(1, resource) + field(2, scope_logs))


class LogExporter:
    """A worker's access-log exporter: ``offer(chunk)`` from the access log's writer thread."""

    def __init__(self, endpoint: str, service_name: str = "gateway") -> None:
        self.endpoint = endpoint
        self.service_name = service_name
        self._collector = Collector(endpoint, "/v1/logs", TIMEOUT)
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self.exported = 0               # records the collector took
        self.dropped = 0                # lines lost: the queue full, or their export failed
        self.failures = 0               # export requests that failed
        self._thread = threading.Thread(target=self._run, name="gateway-otlp-logs", daemon=True)
        self._thread.start()

    def counters(self) -> list[int]:
        """[records exported, lines dropped, export failures] (gateway.stats.OTLP_LOG_NAMES)."""
        return [self.exported, self.dropped, self.failures]

    def offer(self, chunk: bytes) -> None:
        """Lines the access log wrote (whole lines, newline-terminated)."""
        with self._lock:
            if self._queued + len(chunk) > MAX_QUEUED:
                self.dropped += chunk.count(b"\n")
                return
            self._chunks.append(chunk)
            self._queued += len(chunk)

    def _take(self) -> list[bytes]:
        with self._lock:
            chunks, self._chunks, self._queued = self._chunks, deque(), 0
        return [line for chunk in chunks for line in chunk.splitlines() if line]

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(FLUSH_INTERVAL)
            try:
                self.flush()
            except Exception:       # never let the thread die: the queue would only fill
                log.exception("access log export failed")
        self.flush()
        self._collector.close()

    def flush(self) -> None:
        lines = self._take()
        for i in range(0, len(lines), BATCH):
            records = [r for r in map(log_record, lines[i:i + BATCH]) if r is not None]
            if records:
                self._send(records)

    def _send(self, records: list[bytes]) -> None:
        try:
            self._collector.post(encode_request(records, self.service_name))
            self.exported += len(records)
        except OSError as exc:
            if not self.failures:       # the first only: a collector down would flood the log
                log.warning("cannot export the access log", extra={"fields": {
                    "endpoint": self.endpoint, "error": str(exc)}})
            self.failures += 1
            self.dropped += len(records)

    def close(self) -> None:
        """Export what is queued (at most about one export timeout per batch), then end."""
        self._stopping = True
        self._wake.set()
        self._thread.join(TIMEOUT * 2 + 1.0)
