"""The OTLP span encoding in plain Python: the oracle for ``_speedups.otlp.SpanEncoder``.

``spans_of`` turns a kept request (``Exchange.trace_end``'s ``RequestRecord``) into its
encoded spans field by field, as trace.proto says; tests/test_tracing_units.py holds the
compiled encoder to it byte for byte and decodes both with the official classes.  The
protobuf primitives and the request envelope are the shipped ones (``gateway.protobuf``,
``gateway.tracing``).
"""
from __future__ import annotations

from _speedups.tracing import RequestRecord
from gateway.protobuf import FIXED64, attribute, field, varint
from gateway.tracing import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, STATUS_ERROR, STATUS_UNSET


def encode_span(trace_id: bytes, span_id: bytes, parent: bytes | None, trace_state: bytes | None,
                name: str, kind: int, start_ns: int, end_ns: int, attributes: dict,
                status: int, message: str | None) -> bytes:
    """trace.v1.Span (ids given as hex, sent as raw bytes)."""
    out = [field(1, bytes.fromhex(trace_id.decode())), field(2, bytes.fromhex(span_id.decode()))]
    if trace_state:
        out.append(field(3, trace_state))
    if parent is not None:
        out.append(field(4, bytes.fromhex(parent.decode())))
    out.append(field(5, name.encode()))
    out.append(b"\x30" + varint(kind))                         # kind: field 6, varint
    out.append(b"\x39" + FIXED64.pack(start_ns))               # field 7, fixed64
    out.append(b"\x41" + FIXED64.pack(end_ns))                 # field 8, fixed64
    for key, value in attributes.items():
        if value is not None:
            out.append(attribute(9, key, value))
    if status != STATUS_UNSET:
        st = b""
        if message:
            st += field(2, message.encode())
        st += b"\x18" + varint(status)                         # code: field 3
        out.append(field(15, st))
    return b"".join(out)


def frame_spans(spans: list[bytes]) -> bytes:
    """Spans as the ``spans`` fields of a ScopeSpans (what SpanEncoder.encode returns)."""
    return b"".join(field(2, s) for s in spans)


def _split_host(host: bytes | None) -> tuple[str | None, int | None]:
    if not host:
        return None, None
    text = host.decode("latin-1")
    if text.startswith("["):
        end = text.find("]")
        port = text[end + 2:] if text[end + 1:end + 2] == ":" else ""
        return text[1:end], int(port) if port.isdigit() else None
    name, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    return name, int(port) if port.isdigit() else None


def spans_of(r: RequestRecord, wall_ns) -> list[bytes]:
    """A kept request (``Exchange.trace_end``): its server span, then its attempts' and
    mirror copies' spans, in the order they ended."""
    method_s = r.method.decode("latin-1")
    path, _, query = r.target.partition(b"?")
    address, port = _split_host(r.host)
    server_attrs = {
        "http.request.method": method_s,
        "url.path": path,
        "url.query": query or None,
        "server.address": address,
        "server.port": port,
        "client.address": r.client,
        "network.protocol.version": "2" if r.h2 else "1.1",
        "http.response.status_code": r.status or None,
        "gateway.route": r.route,
        "gateway.service": r.service,
        "gateway.request_id": r.request_id,
        "gateway.attempts": r.attempts,
        "error.type": (str(r.status) if r.status >= 500 else None),
    }
    failed = r.status >= 500 or r.status == 0
    out = [encode_span(r.trace_id, r.server_span, r.parent_span, r.trace_state,
                       f"{method_s} {r.route}" if r.route else method_s, SPAN_KIND_SERVER,
                       wall_ns(r.start), wall_ns(r.end), server_attrs,
                       STATUS_ERROR if failed else STATUS_UNSET, r.error if failed else None)]
    for a in r.span_list():
        if a.number == 0:
            # A mirror copy, fire and forget (gateway.mirror): the span is its hand-over; its
            # answer is not waited for.  One copy (one span) goes to every mirror of the route.
            attrs = {"http.request.method": method_s, "gateway.route": r.route, "gateway.mirror": True,
                     "gateway.service": ",".join(m.service.key for m in a.mirrors)}
            out.append(encode_span(r.trace_id, a.span_id, r.server_span, r.trace_state,
                                   f"{method_s} mirror", SPAN_KIND_CLIENT, wall_ns(a.start),
                                   wall_ns(a.end), attrs, STATUS_UNSET, None))
            continue
        up, kind = a.upstream, a.kind
        attrs = {       # (the compiled encoder keeps the route's and endpoint's ones together)
            "http.request.method": method_s,
            "server.address": up.ip if up is not None else None,
            "server.port": up.port if up is not None else None,
            "network.peer.address": up.ip if up is not None else None,
            "gateway.route": r.route,
            "gateway.service": r.service,
            "gateway.cluster": up.cluster if up is not None else None,
            "gateway.endpoint": up.host if up is not None else None,
            "http.response.status_code": a.status or None,
            "http.request.resend_count": a.number - 1 if a.number > 1 else None,
            "gateway.attempt": a.number,
            "gateway.failure_kind": kind,
            "gateway.upstream_connect_ms": (round(a.t_connect * 1000, 3) if a.t_connect > 0 else None),
            "error.type": kind if kind is not None else (str(a.status) if a.status >= 400 else None),
        }
        bad = kind is not None or a.status >= 400
        out.append(encode_span(r.trace_id, a.span_id, r.server_span, r.trace_state, method_s,
                               SPAN_KIND_CLIENT, wall_ns(a.start), wall_ns(a.end), attrs,
                               STATUS_ERROR if bad else STATUS_UNSET, kind))
    return out
