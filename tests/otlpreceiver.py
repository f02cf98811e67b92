"""A real OTLP/HTTP receiver for the tests: POST /v1/traces and /v1/logs, protobuf bodies
decoded with the official ``opentelemetry-proto`` classes (so the gateway's hand-written
encoding is checked against the schema), every span and log record kept as a flat dict.

``mode``: "ok" answers 200; "fail" answers 503; "slow" holds each request ``delay`` seconds
before answering (a collector that cannot keep up).
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest, ExportLogsServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    def __init__(self, mode: str = "ok", delay: float = 0.0) -> None:
        self.mode = mode
        self.delay = delay
        self.spans: list[dict] = []
        self.logs: list[dict] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):      # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.mode == "slow":
                    time.sleep(receiver.delay)
                if receiver.mode == "fail":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                receiver.take(self.path, self.headers.get("Content-Type"), body)
                answer = ExportLogsServiceResponse() if self.path == "/v1/logs" else ExportTraceServiceResponse()
                out = answer.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}/v1/traces"
        self.logs_endpoint = f"http://127.0.0.1:{self.port}/v1/logs"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def take(self, path: str, content_type: str, body: bytes) -> None:
        assert path in ("/v1/traces", "/v1/logs") and content_type == "application/x-protobuf", (path, content_type)
        if path == "/v1/logs":
            self.take_logs(ExportLogsServiceRequest.FromString(body))
            return
        request = ExportTraceServiceRequest.FromString(body)
        out = []
        for rs in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.append({
                        "resource": resource, "scope": ss.scope.name,
                        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(), "trace_state": span.trace_state,
                        "name": span.name, "kind": span.kind,
                        "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                        "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                        "status_code": span.status.code, "status_message": span.status.message,
                    })
        with self._lock:
            self.requests += 1
            self.spans.extend(out)

    def take_logs(self, request) -> None:
        out = []
        for rl in request.resource_logs:
            resource = {kv.key: _value(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    out.append({
                        "resource": resource, "scope": sl.scope.name, "time": record.time_unix_nano,
                        "observed_time": record.observed_time_unix_nano,
                        "severity": record.severity_number, "severity_text": record.severity_text,
                        "body": _value(record.body), "trace_id": record.trace_id.hex(),
                        "attributes": {kv.key: _value(kv.value) for kv in record.attributes},
                    })
        with self._lock:
            self.requests += 1
            self.logs.extend(out)

    def log_records(self) -> list[dict]:
        with self._lock:
            return list(self.logs)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.spans)

    def wait(self, predicate, timeout: float = 20.0) -> list[dict]:
        """The spans once ``predicate(spans)`` holds (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            if predicate(spans):
                return spans
            assert time.monotonic() < deadline, f"condition not met in {timeout}s; {len(spans)} spans"
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
