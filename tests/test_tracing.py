"""OpenTelemetry traces, end to end: a gateway with ``workers: 2`` exports OTLP/HTTP to a
real receiver (``otlpreceiver``: the official opentelemetry-proto classes decode every
span), its backends see the propagated traceparent, its access log carries the trace id.

* A server span per request and a client span per attempt, with the HTTP semantic
  conventions' attributes and the gateway's (route, service, cluster, endpoint, attempt).
* W3C traceparent/tracestate followed (parent-based sampling), B3 accepted.
* A request retried after a failed connect is one trace of two attempt spans, exported
  even with ``sample_ratio: 0`` (errors are always kept), while untroubled requests are not.
* A collector that is down or slow never slows requests: spans are dropped and counted.
"""
from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime

import pytest

from support import Client, free_port, static_source, wait_until
from otlpreceiver import OtlpReceiver
from test_mirror_bodies import Recorder
from test_workers import start_gateway

pytestmark = pytest.mark.timeout(120)

SERVER, CLIENT = 2, 3           # OTLP SpanKind


def _config(backend_a, backend_b, endpoint: str, ratio, **tracing) -> dict:
    return {
        "workers": 2,
        "admin": f"127.0.0.1:{free_port()}",
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address]}),
                    static_source("zone-b", {"httpbin": [backend_b.address]})],
        "services": [{"name": "httpbin", "port": 8000}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}],
        "tracing": {"endpoint": endpoint, "sample_ratio": ratio, "flush_interval": "200ms",
                    "service_name": "edge", **tracing},
    }


def _metric(admin, name: str, **labels) -> float:
    text = admin.request("GET", "/metrics")[2].decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + ("{" + want if labels else " ")) or (
                not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait_metric(admin, name: str, predicate, timeout: float = 15.0, **labels) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = _metric(admin, name, **labels)
        if predicate(value):
            return value
        assert time.monotonic() < deadline, f"{name}{labels} = {value} after {timeout}s"
        time.sleep(0.1)


@pytest.fixture
def receiver():
    r = OtlpReceiver()
    yield r
    r.close()


def test_spans_per_request_and_attempt_with_propagation_and_access_log(
        tmp_path, backend_a, backend_b, receiver):
    g, admin = start_gateway(tmp_path, _config(backend_a, backend_b, receiver.endpoint, 1.0))
    try:
        parent_trace, parent_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        sent: dict[str, dict] = {}          # request id -> what the backend saw
        for i in range(12):                 # new connections: either worker may take each
            headers = {"X-Request-Id": f"tr-{i}"}
            if i % 3 == 1:
                headers["traceparent"] = f"00-{parent_trace}-{parent_span}-01"
                headers["tracestate"] = "vendor=opaque"
            elif i % 3 == 2:
                headers["X-B3-TraceId"] = "a3ce929d0e0e4736"
                headers["X-B3-SpanId"] = "00f067aa0ba902b7"
                headers["X-B3-Sampled"] = "1"
            with Client(g.host, g.port) as c:
                resp = c.request("GET", "/headers", headers)
            assert resp.status == 200, resp.body
            sent[f"tr-{i}"] = {k.lower(): v for k, v in resp.json()["headers"].items()}

        def complete(spans):
            ids = {s["attributes"].get("gateway.request_id") for s in spans if s["kind"] == SERVER}
            return set(sent) <= ids
        spans = receiver.wait(complete)
        pids = {w["pid"] for w in admin.get("/status")["workers"]}
        assert len({s["span_id"] for s in spans}) == len(spans)
        log = g.log.by_ids(sent)
        for rid, seen in sent.items():
            (server,) = [s for s in spans if s["kind"] == SERVER
                         and s["attributes"].get("gateway.request_id") == rid]
            attrs = server["attributes"]
            assert server["resource"]["service.name"] == "edge"
            assert server["resource"]["process.pid"] in pids
            assert server["name"] == "GET all"
            assert attrs["http.request.method"] == "GET" and attrs["url.path"] == "/headers"
            assert attrs["http.response.status_code"] == 200
            assert attrs["gateway.route"] == "all" and attrs["gateway.service"] == "default/httpbin"
            assert server["end"] > server["start"] > (time.time() - 120) * 1e9
            (attempt,) = [s for s in spans if s["parent_span_id"] == server["span_id"]]
            a = attempt["attributes"]
            assert attempt["kind"] == CLIENT and attempt["trace_id"] == server["trace_id"]
            assert a["gateway.attempt"] == 1 and a["gateway.cluster"] in ("zone-a", "zone-b")
            assert a["gateway.endpoint"] == f"{a['server.address']}:{a['server.port']}"
            assert a["http.response.status_code"] == 200
            assert server["start"] <= attempt["start"] <= attempt["end"] <= server["end"]
            # The backend saw the attempt's span as its parent, sampled.
            assert seen["traceparent"] == f"00-{server['trace_id']}-{attempt['span_id']}-01"
            # The access log line names the trace.
            assert log[rid]["trace_id"] == server["trace_id"]
            i = int(rid.split("-")[1])
            if i % 3 == 1:
                assert server["trace_id"] == parent_trace
                assert server["parent_span_id"] == parent_span
                assert server["trace_state"] == "vendor=opaque" and seen["tracestate"] == "vendor=opaque"
            elif i % 3 == 2:
                assert server["trace_id"] == "0000000000000000a3ce929d0e0e4736"
                assert server["parent_span_id"] == "00f067aa0ba902b7"
            else:
                assert server["parent_span_id"] == "" and server["trace_id"] != parent_trace
        # Four new traces, four requests in the W3C parent's, four in the B3 parent's.
        assert len({s["trace_id"] for s in spans if s["kind"] == SERVER}) == 4 + 1 + 1
        _wait_metric(admin, "gateway_tracing_spans_exported_total", lambda v: v >= 24)
    finally:
        g.stop()


def test_a_mirrored_request_has_a_mirror_span_and_the_copy_carries_it(
        tmp_path, backend_a, backend_b, receiver):
    recorder = Recorder()           # the mirror: records the heads it gets
    cfg = _config(backend_a, backend_b, receiver.endpoint, 1.0)
    cfg["sources"].append(static_source("zone-m", {"shadow": [recorder.server.address]}))
    cfg["services"].append({"name": "shadow", "port": 80})
    cfg["routes"][0]["mirrors"] = ["default/shadow"]
    try:
        g, admin = start_gateway(tmp_path, cfg)
        try:
            with Client(g.host, g.port) as c:
                assert c.request("GET", "/anything/mirrored", {"X-Request-Id": "m-1"}).status == 200
            spans = receiver.wait(lambda spans: any(s["attributes"].get("gateway.mirror") for s in spans)
                                  and any(s["kind"] == SERVER for s in spans))
            (server,) = [s for s in spans if s["attributes"].get("gateway.request_id") == "m-1"]
            (mirror,) = [s for s in spans if s["attributes"].get("gateway.mirror")]
            assert mirror["parent_span_id"] == server["span_id"] and mirror["trace_id"] == server["trace_id"]
            assert mirror["kind"] == CLIENT and mirror["name"] == "GET mirror"
            assert mirror["attributes"]["gateway.service"] == "default/shadow"
            # The mirror got the copy with the mirror span as its parent, not the attempt's.
            [(head, _)] = recorder.wait(1)
            assert f"traceparent: 00-{server['trace_id']}-{mirror['span_id']}-01".encode() in head
        finally:
            g.stop()
    finally:
        recorder.server.stop()


def test_unsampled_parent_is_followed_and_not_exported(tmp_path, backend_a, backend_b, receiver):
    g, admin = start_gateway(tmp_path, _config(backend_a, backend_b, receiver.endpoint, 1.0))
    try:
        trace = "0af7651916cd43dd8448eb211c80319c"
        with Client(g.host, g.port) as c:
            resp = c.request("GET", "/headers", {"traceparent": f"00-{trace}-b7ad6b7169203331-00",
                                                 "X-Request-Id": "unsampled"})
            seen = {k.lower(): v for k, v in resp.json()["headers"].items()}
            # The upstream gets the same trace, the gateway's span as parent, not sampled.
            assert seen["traceparent"].startswith(f"00-{trace}-") and seen["traceparent"].endswith("-00")
            assert seen["traceparent"].split("-")[2] != "b7ad6b7169203331"
            resp = c.request("GET", "/headers", {"X-Request-Id": "sampled"})
        receiver.wait(lambda spans: any(s["attributes"].get("gateway.request_id") == "sampled"
                                        for s in spans))
        # One request recorded in all: the unsampled one never was (the counter says so).
        _wait_metric(admin, "gateway_tracing_requests_recorded_total", lambda v: v == 1)
        assert g.log.by_ids(["unsampled"])["unsampled"]["trace_id"] == trace
        assert not [s for s in receiver.snapshot() if s["trace_id"] == trace]
    finally:
        g.stop()


def test_a_retried_request_is_one_trace_and_errors_are_kept_at_ratio_zero(
        tmp_path, backend_a, backend_b, receiver):
    dead = f"127.0.0.4:{free_port('127.0.0.4')}"        # connection refused
    cfg = _config(backend_a, backend_b, receiver.endpoint, 0)
    cfg["sources"] = [static_source("zone-a", {"httpbin": [backend_a.address]}),
                      static_source("zone-dead", {"httpbin": [dead]})]
    cfg["routes"][0]["retries"] = {"attempts": 3}
    g, admin = start_gateway(tmp_path, cfg)
    try:
        ids = [f"re-{i}" for i in range(8)]
        for rid in ids:
            with Client(g.host, g.port) as c:
                assert c.request("GET", "/get", {"X-Request-Id": rid}).status == 200
        log = g.log.by_ids(ids)
        retried = [rid for rid in ids if log[rid]["attempts"] > 1]
        assert retried, [log[r]["attempts"] for r in ids]     # smooth WRR: every other one starts on the dead endpoint
        spans = receiver.wait(lambda spans: {s["attributes"].get("gateway.request_id") for s in spans}
                              >= set(retried))
        for rid in retried:
            (server,) = [s for s in spans if s["attributes"].get("gateway.request_id") == rid]
            assert server["trace_id"] == log[rid]["trace_id"]
            attempts = sorted((s for s in spans if s["parent_span_id"] == server["span_id"]),
                              key=lambda s: s["attributes"]["gateway.attempt"])
            assert [a["attributes"]["gateway.attempt"] for a in attempts] == [1, 2]
            first, second = (a["attributes"] for a in attempts)
            assert first["gateway.cluster"] == "zone-dead" and first["gateway.failure_kind"] == "connect_failed"
            assert first["error.type"] == "connect_failed" and attempts[0]["status_code"] == 2
            assert second["gateway.cluster"] == "zone-a" and second["http.response.status_code"] == 200
            assert second["http.request.resend_count"] == 1
            assert all(a["trace_id"] == server["trace_id"] for a in attempts)
            assert attempts[0]["end"] <= attempts[1]["start"]
        # Only the troubled requests were recorded (ratio 0), each once.
        _wait_metric(admin, "gateway_tracing_requests_recorded_total", lambda v: v == len(retried))
        _wait_metric(admin, "gateway_retries_by_cause_total", lambda v: v == len(retried),
                     route="all", service="default/httpbin", cluster="zone-dead", cause="connect_failed")
        _wait_metric(admin, "gateway_upstream_attempt_failures_total", lambda v: v == len(retried),
                     route="all", service="default/httpbin", cluster="zone-dead", cause="connect_failed")
    finally:
        g.stop()


class _BlackHole:
    """A collector that accepts connections and never answers (a slow collector)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1/traces"

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("collector", ["down", "slow"])
def test_a_collector_down_or_slow_never_slows_requests(tmp_path, backend_a, backend_b, collector):
    hole = _BlackHole() if collector == "slow" else None
    endpoint = hole.endpoint if hole else f"http://127.0.0.1:{free_port()}/v1/traces"
    cfg = _config(backend_a, backend_b, endpoint, 1.0, max_queue=16, batch_size=8, timeout="10s")
    g, admin = start_gateway(tmp_path, cfg)
    try:
        slowest = 0.0
        with Client(g.host, g.port) as c:
            for i in range(300):
                t = time.monotonic()
                assert c.request("GET", "/get").status == 200
                slowest = max(slowest, time.monotonic() - t)
        # Generous for a busy 2-core machine; an export in the request path would take 10 s.
        assert slowest < 2.0, slowest
        reason = "queue_full" if collector == "slow" else "export_failed"
        _wait_metric(admin, "gateway_tracing_requests_dropped_total", lambda v: v > 0, reason=reason)
        assert _metric(admin, "gateway_tracing_spans_exported_total") == 0
        if collector == "down":
            _wait_metric(admin, "gateway_tracing_export_failures_total", lambda v: v > 0)
    finally:
        g.stop()
        if hole:
            hole.close()


def test_tracing_turns_on_and_off_with_a_reload(tmp_path, backend_a, backend_b, receiver):
    import signal
    from test_workers import rewrite_config
    cfg = _config(backend_a, backend_b, receiver.endpoint, 1.0)
    tracing = cfg.pop("tracing")
    g, admin = start_gateway(tmp_path, cfg)
    try:
        def upstream_traceparent() -> str | None:
            with Client(g.host, g.port) as c:
                resp = c.request("GET", "/headers")
            assert resp.status == 200
            return {k.lower(): v for k, v in resp.json()["headers"].items()}.get("traceparent")

        assert upstream_traceparent() is None
        rewrite_config(g, {**cfg, "tracing": tracing})
        os.kill(g.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not receiver.snapshot():          # each worker traces once it has the new config
            assert time.monotonic() < deadline, "no span after the reload turned tracing on"
            upstream_traceparent()
            time.sleep(0.1)
        rewrite_config(g, cfg)
        os.kill(g.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        quiet = 0
        while quiet < 10:                       # ten in a row untraced: both workers have it off
            assert time.monotonic() < deadline, "requests still traced after the reload turned it off"
            quiet = quiet + 1 if upstream_traceparent() is None else 0
    finally:
        g.stop()


def test_an_http2_request_is_traced_as_http2(tmp_path, backend_a, backend_b, receiver):
    import subprocess
    g, admin = start_gateway(tmp_path, _config(backend_a, backend_b, receiver.endpoint, 1.0))
    try:
        got = subprocess.run(["curl", "-sS", "--max-time", "10", "--http2-prior-knowledge",
                              "-H", "X-Request-Id: h2-1", f"http://127.0.0.1:{g.port}/headers"],
                             capture_output=True, timeout=20)
        assert got.returncode == 0, got
        spans = receiver.wait(lambda spans: any(s["attributes"].get("gateway.request_id") == "h2-1"
                                                for s in spans))
        (server,) = [s for s in spans if s["attributes"].get("gateway.request_id") == "h2-1"]
        assert server["attributes"]["network.protocol.version"] == "2"
        (attempt,) = [s for s in spans if s["parent_span_id"] == server["span_id"]]
        seen = {k.lower(): v for k, v in json.loads(got.stdout)["headers"].items()}
        assert seen["traceparent"] == f"00-{server['trace_id']}-{attempt['span_id']}-01"
    finally:
        g.stop()


def test_the_access_log_as_otlp_log_records(tmp_path, backend_a, backend_b, receiver):
    """``access_log.otlp_endpoint``: each line the file gets also reaches the collector as a
    LogRecord (decoded by opentelemetry-proto): the line as its body, its trace id, time,
    severity by status and the HTTP attributes; from both workers."""
    cfg = _config(backend_a, backend_b, receiver.endpoint, 1.0)
    cfg["access_log"] = {"otlp_endpoint": receiver.logs_endpoint}
    g, admin = start_gateway(tmp_path, cfg)
    try:
        ids = [f"otlp-log-{i}" for i in range(20)]
        for i, rid in enumerate(ids):           # a connection each: both workers serve some
            with Client(g.host, g.port) as c:
                path = "/status/503" if i % 5 == 0 else "/get"
                assert c.request("GET", path, {"X-Request-Id": rid}).status in (200, 503)
        lines = g.log.by_ids(ids)

        def records_by_id() -> dict[str, dict]:
            found = {}
            for record in receiver.log_records():
                entry = json.loads(record["body"])
                if entry.get("request_id") in lines:
                    found[entry["request_id"]] = (entry, record)
            return found if len(found) == len(ids) else None
        found = wait_until(records_by_id, 20, "every line as a log record")
        for rid, line in lines.items():
            entry, record = found[rid]
            assert entry == line                                    # the line, as the file has it
            assert record["trace_id"] == line["trace_id"] and len(record["trace_id"]) == 32
            assert record["severity_text"] == ("ERROR" if line["status"] == 503 else "INFO")
            assert record["attributes"]["http.response.status_code"] == line["status"]
            assert record["attributes"]["http.route"] == "all" and record["attributes"]["url.path"] == line["path"]
            assert record["attributes"]["gateway.upstream.cluster"] == line["upstream_cluster"]
            assert abs(record["time"] / 1e9 - datetime.fromisoformat(line["time"]).timestamp()) < 0.002
            assert record["resource"]["service.name"] == "gateway" and record["scope"] == "gateway.accesslog"
        assert len({record["resource"]["process.pid"] for _, record in found.values()}) == 2     # both workers
        _wait_metric(admin, "gateway_accesslog_otlp_records_total", lambda v: v >= len(ids), outcome="exported")
    finally:
        g.stop()


def test_an_access_log_collector_down_costs_records_not_lines(tmp_path, backend_a, backend_b):
    cfg = _config(backend_a, backend_b, "http://127.0.0.1:9/v1/traces", 1.0)
    del cfg["tracing"]
    cfg["access_log"] = {"otlp_endpoint": f"http://127.0.0.1:{free_port()}/v1/logs"}
    g, admin = start_gateway(tmp_path, cfg)
    try:
        ids = [f"down-{i}" for i in range(50)]
        with Client(g.host, g.port) as c:
            for rid in ids:
                assert c.request("GET", "/get", {"X-Request-Id": rid}).status == 200
        assert len(g.log.by_ids(ids)) == len(ids)           # the file has every line
        _wait_metric(admin, "gateway_accesslog_otlp_records_total", lambda v: v >= len(ids), outcome="dropped")
        assert _wait_metric(admin, "gateway_accesslog_otlp_export_failures_total", lambda v: v > 0) > 0
        assert _metric(admin, "gateway_accesslog_otlp_records_total", outcome="exported") == 0
    finally:
        g.stop()


def test_tracing_off_passes_trace_context_through_and_logs_the_clients_trace_id(
        tmp_path, backend_a, backend_b):
    cfg = _config(backend_a, backend_b, "http://127.0.0.1:9/v1/traces", 1.0)
    del cfg["tracing"]
    g, admin = start_gateway(tmp_path, cfg)
    try:
        parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        with Client(g.host, g.port) as c:
            resp = c.request("GET", "/headers", {"traceparent": parent, "tracestate": "a=1",
                                                 "X-Request-Id": "off-1"})
            seen = {k.lower(): v for k, v in resp.json()["headers"].items()}
            assert seen["traceparent"] == parent and seen["tracestate"] == "a=1"
            c.request("GET", "/headers", {"X-Request-Id": "off-2"})
        log = g.log.by_ids(["off-1", "off-2"])
        assert log["off-1"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert "trace_id" in log["off-2"] and log["off-2"]["trace_id"] is None
        assert "gateway_tracing_" not in admin.request("GET", "/metrics")[2].decode()
    finally:
        g.stop()
