"""The tracing pieces alone: header parsing (W3C Trace Context, B3), ids, ratio sampling,
the parser keeping traceparent aside, the ``tracing`` config section,
and the OTLP encoding decoded by the official opentelemetry-proto classes."""
from __future__ import annotations

import re

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from _speedups.http import build_request_head, find_head_end, parse_request
from _speedups.tracing import RequestRecord, SpanRecord, Tracer, b3_fields, traceparent_fields
from gateway.config import ConfigError, parse_config
from _speedups.otlp import SpanEncoder
from gateway.tracing import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, encode_request, resource_and_scope
from tests.reference.otlp import frame_spans, spans_of

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = b"00f067aa0ba902b7"


@pytest.mark.parametrize("value, expected", [
    (b"00-%s-%s-01" % (TRACE, SPAN), (TRACE, SPAN, True)),
    (b"00-%s-%s-00" % (TRACE, SPAN), (TRACE, SPAN, False)),
    (b"00-%s-%s-03" % (TRACE, SPAN), (TRACE, SPAN, True)),          # other flags: sampled bit read
    (b"01-%s-%s-01-future" % (TRACE, SPAN), (TRACE, SPAN, True)),   # a later version: read as 00
    (b"00-%s-%s-01-extra" % (TRACE, SPAN), None),                   # version 00 has no more fields
    (b"ff-%s-%s-01" % (TRACE, SPAN), None),                         # version ff is invalid
    (b"00-%s-%s-01" % (b"0" * 32, SPAN), None),                     # all-zero ids are invalid
    (b"00-%s-%s-01" % (TRACE, b"0" * 16), None),
    (b"00-%s-%s-01" % (TRACE.upper(), SPAN), None),                 # upper case is invalid
    (b"00-%s-%s-0" % (TRACE, SPAN), None),
    (b"garbage", None),
])
def test_traceparent(value, expected):
    assert traceparent_fields(value) == expected


@pytest.mark.parametrize("value, expected", [
    (b"%s-%s-1" % (TRACE, SPAN), (TRACE, SPAN, True)),
    (b"%s-%s-0-%s" % (TRACE, SPAN, SPAN), (TRACE, SPAN, False)),
    (b"%s-%s-d" % (TRACE, SPAN), (TRACE, SPAN, True)),              # debug
    (b"%s-%s" % (TRACE[16:], SPAN), (b"0" * 16 + TRACE[16:], SPAN, None)),  # 64-bit id, no decision
    (b"0", None),                                                   # a lone "deny": no context
    (b"xyz-%s-1" % SPAN, None),
])
def test_b3_single(value, expected):
    assert b3_fields(value) == expected


def test_ids_are_hex_and_distinct_and_the_traceparent_line_carries_a_new_span():
    t = Tracer(1.0)
    ids = {t.new_trace_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(re.fullmatch(rb"[0-9a-f]{32}", i) for i in ids)
    line = t.new_traceparent_line(TRACE, True)
    assert re.fullmatch(rb"traceparent: 00-%s-[0-9a-f]{16}-01\r\n" % TRACE, line), line
    assert t.new_traceparent_line(TRACE, False).endswith(b"-00\r\n")
    assert traceparent_fields(line[13:-2])[0] == TRACE


def test_ratio_sampling_follows_the_trace_ids_low_bits():
    assert not Tracer(0.0).sampled(b"f" * 16 + b"0" * 15 + b"1")
    assert Tracer(1.0).sampled(b"f" * 32)
    half = Tracer(0.5)
    assert half.sampled(b"0" * 16 + b"7" + b"f" * 15) and not half.sampled(b"0" * 16 + b"8" + b"0" * 15)
    t = Tracer(0.01)
    hits = sum(t.sampled(t.new_trace_id()) for _ in range(20000))
    assert 100 <= hits <= 320, hits        # 200 expected; bounds > 7 standard deviations


def test_parser_keeps_trace_context_aside_and_passes_it_on_when_not_tracing():
    raw = (b"GET /a HTTP/1.1\r\nHost: h\r\ntraceparent: 00-%s-%s-01\r\ntracestate: a=1\r\n"
           b"TraceState: b=2\r\nX-B3-TraceId: %s\r\nAccept: */*\r\n\r\n" % (TRACE, SPAN, TRACE))
    head = parse_request(raw, find_head_end(raw, 0))
    assert head.traceparent == b"00-%s-%s-01" % (TRACE, SPAN)
    assert head.tracestate == b"a=1,b=2" and head.b3
    assert head.header(b"traceparent") is None and head.header(b"x-b3-traceid") == TRACE
    passed = build_request_head(head, b"/a", b"h", b"10.0.0.1", b"id", b"1.1 gw", False)
    assert passed.count(b"traceparent:") == 1 and b"traceparent: 00-%s-%s-01\r\n" % (TRACE, SPAN) in passed
    assert b"tracestate: a=1,b=2\r\n" in passed and b"X-B3-TraceId: " + TRACE in passed
    own = b"traceparent: 00-%s-1111111111111111-01\r\n" % TRACE
    replaced = build_request_head(head, b"/a", b"h", b"10.0.0.1", b"id", b"1.1 gw", False,
                                  trace_fields=own)
    assert replaced.count(b"traceparent:") == 1 and own in replaced and b"tracestate" not in replaced


def test_config_section_defaults_and_errors():
    cfg = parse_config({"tracing": {"endpoint": "http://otel:4318/v1/traces"}})
    assert cfg.tracing.sample_ratio == 0.01 and cfg.tracing.max_queue == 4096
    assert cfg.tracing.batch_size == 512 and cfg.tracing.flush_interval == 1.0
    assert parse_config({"tracing": "off"}).tracing is None and parse_config({}).tracing is None
    with pytest.raises(ConfigError) as err:
        parse_config({"tracing": {"endpoint": "otel:4318", "sample_ratio": 1.5, "max_queue": 0,
                                  "flush_interval": "0s", "sampling": 1}})
    errors = err.value.errors
    assert any(e.startswith("tracing.endpoint: must be an http:// or https:// URL") for e in errors)
    assert any(e.startswith("tracing.sample_ratio: must be a share") for e in errors)
    assert any(e.startswith("tracing.max_queue:") for e in errors)
    assert any(e.startswith("tracing.flush_interval:") for e in errors)
    assert any(e.startswith('tracing: unknown key "sampling"') for e in errors)
    with pytest.raises(ConfigError) as err:
        parse_config({"tracing": {"sample_ratio": 0.5}})
    assert "tracing.endpoint: required" in err.value.errors


def _upstream():
    from _speedups.proxy import Upstream
    return Upstream(("zone-b", "10.0.0.7", 8080), "10.0.0.7", 8080, 1, "zone-b")


class _Mirror:
    def __init__(self, key):
        self.service = type("S", (), {"key": key})()


def _line(span: bytes) -> bytes:
    return b"traceparent: 00-%s-%s-01\r\n" % (TRACE, span)


def _attempt(span, number, start, end, kind=None, status=0, t_connect=-1.0, t_response=-1.0,
             upstream=True):
    return SpanRecord(_line(span), _upstream() if upstream else None, number, start, end, kind,
                      status, t_connect, t_response)


def _record(**changes):
    fields = dict(
        trace_id=TRACE, server_span=SPAN, parent_span=b"1111111111111111", trace_state=b"k=v",
        start=100.0, end=100.5, method=b"POST", host=b"example.com:8443", target=b"/x/y?z=1",
        status=502, route="r1", service="default/web", error="upstream failed", client=b"10.1.1.1",
        h2=False, request_id=b"req-1", attempts=2,
        spans=[_attempt(b"2222222222222222", 1, 100.1, 100.2, "connect_failed"),
               _attempt(b"3333333333333333", 2, 100.2, 100.4, None, 502, 0.001, 0.1)])
    fields.update(changes)
    return RequestRecord(**fields)


RECORDS = [
    _record(),
    _record(parent_span=None, trace_state=None, status=200, error=None, h2=True, host=b"[::1]:80",
            target=b"/\xe9t\xe9", spans=[_attempt(b"4444444444444444", 1, 100.0, 100.1, None, 200, 0.0, 0.05)]),
    _record(status=404, route=None, service=None, host=None, spans=None, method=b"GET",
            error="no route matches this request", attempts=0),
    _record(status=0, error="client closed connection", host=b"h", client=b"\xff"),
    _record(status=200, error=None, spans=[
        _attempt(b"4444444444444444", 1, 100.0, 100.1, None, 200),
        SpanRecord(_line(b"6666666666666666"), None, 0, 100.3, 100.3,
                   mirrors=(_Mirror("default/shadow"), _Mirror("ns/b")))]),
    _record(route="r\u00e9", status=503, spans=[_attempt(b"5555555555555555", 1, 100.0, 100.1,
                                                          upstream=False)]),
]


def test_compiled_encoding_is_byte_for_byte_the_python_reference():
    base = 1.7e9 - 12345.678
    reference = frame_spans([s for r in RECORDS for s in spans_of(r, lambda t: int((base + t) * 1e9))])
    assert SpanEncoder().encode(RECORDS, base) == reference
    ExportTraceServiceRequest.FromString(encode_request(reference, "edge"))   # decodes (UTF-8 checked)
    # the whole export request, written in one allocation, is the concatenated one
    assert SpanEncoder().export_request(RECORDS, base, *resource_and_scope("edge")) == encode_request(reference, "edge")


def test_otlp_encoding_decodes_with_the_official_classes():
    record = RECORDS[0]
    body = encode_request(SpanEncoder().encode([record], 0.0), "edge")
    req = ExportTraceServiceRequest.FromString(body)
    (rs,) = req.resource_spans
    assert {kv.key: kv.value.string_value for kv in rs.resource.attributes}["service.name"] == "edge"
    server, first, second = rs.scope_spans[0].spans
    assert server.kind == SPAN_KIND_SERVER and server.name == "POST r1"
    assert server.trace_id.hex() == TRACE.decode() and server.span_id.hex() == SPAN.decode()
    assert server.parent_span_id.hex() == "1111111111111111" and server.trace_state == "k=v"
    assert server.start_time_unix_nano == 100_000_000_000 and server.end_time_unix_nano == 100_500_000_000
    assert server.status.code == 2 and server.status.message == "upstream failed"
    attrs = {kv.key: kv.value for kv in server.attributes}
    assert attrs["http.response.status_code"].int_value == 502
    assert attrs["url.path"].string_value == "/x/y" and attrs["url.query"].string_value == "z=1"
    assert attrs["server.address"].string_value == "example.com" and attrs["server.port"].int_value == 8443
    assert first.kind == SPAN_KIND_CLIENT and first.parent_span_id == server.span_id
    a1 = {kv.key: kv.value for kv in first.attributes}
    assert a1["gateway.failure_kind"].string_value == "connect_failed" and a1["gateway.attempt"].int_value == 1
    assert "http.response.status_code" not in a1 and first.status.code == 2
    a2 = {kv.key: kv.value for kv in second.attributes}
    assert a2["http.request.resend_count"].int_value == 1 and a2["gateway.cluster"].string_value == "zone-b"
    assert a2["gateway.upstream_connect_ms"].double_value == 1.0
