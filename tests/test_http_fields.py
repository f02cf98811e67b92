"""An HTTP/2 request's head is made from its field list, not from HTTP/1.1 text: these hold
the two codecs to one set of checks and one set of forwarded fields.

* ``request_from_fields`` (HTTP/2 in) and ``parse_request`` (HTTP/1.1 in) take the same
  fields to the same head, or refuse them with the same status and reason;
* ``request_fields`` (HTTP/2 out) sends the fields ``build_request_head`` (HTTP/1.1 out)
  writes, but for what HTTP/2 carries otherwise (pseudo-fields, framing, hop-by-hop).
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _speedups.http import (
    HttpError, build_request_head, parse_request, request_fields, request_from_fields)

FAST = settings(max_examples=500, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

# Names the parser gives a meaning to, and plain ones.
NAMES = [b"content-length", b"x-forwarded-for", b"via", b"traceparent", b"tracestate",
         b"x-request-id", b"expect", b"b3", b"x-b3-traceid", b"x-real-ip", b"x-forwarded-proto",
         b"x-forwarded-host", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"accept",
         b"user-agent", b"content-type", b"cookie", b"x-custom"]
VALUES = st.one_of(
    st.sampled_from([b"0", b"12", b"012", b"1x", b"", b"100-continue", b"10.0.0.1", b"trailers",
                     b"1.1 proxy", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]),
    st.binary(max_size=12).map(lambda b: bytes(32 + x % 95 for x in b)),   # visible ASCII
    st.sampled_from([b"a\x00b", b"a\x7fb", b"\xe9t\xe9"]))                 # NUL, DEL, obs-text
FIELDS = st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=8)
AUTHORITIES = st.sampled_from([b"example.com", b"example.com:8080", b"[::1]:80", b"bad host"])


def as_text(method: bytes, path: bytes, authority: bytes, fields) -> bytes:
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in fields)
    return method + b" " + path + b" HTTP/1.1\r\nhost: " + authority + b"\r\n" + lines + b"\r\n"


def outcome(make):
    try:
        head = make()
    except HttpError as err:
        return ("refused", err.status, err.reason)
    return ("head", head.method, head.target, head.path, head.host, head.content_length,
            head.request_id, head.forwarded_for, head.via, head.traceparent, head.tracestate,
            head.expect_continue, head.b3, head.keep_alive, head.upgrade,
            [(lname, value) for lname, _, value in head.headers])


@FAST
@given(st.sampled_from([b"GET", b"POST", b"PATCH", b"BREW"]),
       st.sampled_from([b"/", b"/a?b=1", b"/p/q"]), AUTHORITIES, FIELDS,
       st.integers(min_value=2, max_value=12))
def test_an_http2_head_is_checked_and_kept_as_an_http1_one_is(method, path, authority, fields,
                                                               max_headers):
    text = as_text(method, path, authority, fields)
    expected = outcome(lambda: parse_request(text, len(text), max_headers))
    got = outcome(lambda: request_from_fields(method, path, authority, list(fields), max_headers))
    assert got == expected


def test_an_extended_connect_becomes_an_upgrade_request_in_both():
    fields = [(b"connection", b"upgrade"), (b"upgrade", b"websocket"),
              (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")]
    text = as_text(b"GET", b"/ws", b"example.com", fields)
    from_text = parse_request(text, len(text))
    from_fields = request_from_fields(b"GET", b"/ws", b"example.com", fields)
    assert from_fields.upgrade == from_text.upgrade == b"websocket"
    assert from_fields.keep_alive and from_text.keep_alive
    assert outcome(lambda: from_fields) == outcome(lambda: from_text)


@pytest.mark.parametrize("method, path, status, reason", [
    (b"GE T", b"/", 400, "invalid method"),
    (b"GET", b"/a b", 400, "invalid request target"),
    (b"GET", b"*", 400, "only origin-form request targets are accepted"),
    (b"GET", b"http://x/", 400, "only origin-form request targets are accepted"),
])
def test_a_bad_request_line_is_refused_as_http1_refuses_it(method, path, status, reason):
    with pytest.raises(HttpError) as err:
        request_from_fields(method, path, b"example.com", [])
    assert (err.value.status, err.value.reason) == (status, reason)


def test_transfer_encoding_is_no_http2_framing():
    with pytest.raises(HttpError) as err:
        request_from_fields(b"POST", b"/", b"example.com", [(b"transfer-encoding", b"chunked")])
    assert err.value.status == 400


def http1_fields(head_text: bytes):
    """(request line parts, {lower-case name: [values]}) of a head build_request_head wrote."""
    lines = head_text.split(b"\r\n")
    method, target, _ = lines[0].split(b" ")
    fields = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b": ")
            fields.append((name.lower(), value))
    return method, target, fields


@FAST
@given(FIELDS, st.booleans(), st.sampled_from([None, b"traceparent: 00-1-2-01\r\ntracestate: a=b\r\n"]),
       st.sampled_from([None, b"192.0.2.9"]))
def test_http2_upstreams_get_the_fields_http1_upstreams_get(fields, streamed, trace_fields, real_ip):
    text = as_text(b"POST", b"/in", b"example.com", fields)
    try:
        head = parse_request(text, len(text))
    except HttpError:
        return                              # refused alike (above): nothing is forwarded
    head.streamed = streamed and head.content_length < 0
    args = (b"/up?x=1", b"backend.local", b"10.1.2.3", b"req-1", b"1.1 gateway")
    kwargs = dict(proto=b"https", real_ip=real_ip, trace_fields=trace_fields)
    method, target, sent = http1_fields(build_request_head(head, *args, False, **kwargs))
    h2 = request_fields(head, b"http", *args, **kwargs)
    pseudo = [f for f in h2 if f[0].startswith(b":")]
    assert pseudo == [(b":method", method), (b":scheme", b"http"),
                      (b":authority", dict(sent)[b"host"]), (b":path", target)]
    framing = {b"host", b"transfer-encoding"}
    assert [f for f in h2[len(pseudo):] if f != (b"te", b"trailers")] == [
        f for f in sent if f[0] not in framing]
    assert h2[-1] == (b"te", b"trailers")
    assert (b"transfer-encoding", b"chunked") in sent or not head.streamed


@FAST
@given(FIELDS, st.sampled_from([None, b"traceparent: 00-1-2-01\r\n"]))
def test_an_http2_heads_fields_go_on_as_they_came_or_as_a_list(fields, trace_fields):
    """An HTTP/2 head forwards the field tuples it came with (``pairs``) until its field list
    is asked for to change it: both builders write the same either way."""
    try:
        as_came = request_from_fields(b"POST", b"/in", b"example.com", list(fields))
    except HttpError:
        return
    as_list = request_from_fields(b"POST", b"/in", b"example.com", list(fields))
    as_list.headers = list(as_list.headers)     # the list form from now on
    args = (b"/up", b"backend.local", b"10.1.2.3", b"req-1", b"1.1 gateway")
    assert (request_fields(as_came, b"http", *args, trace_fields=trace_fields)
            == request_fields(as_list, b"http", *args, trace_fields=trace_fields))
    assert (build_request_head(as_came, *args, False, trace_fields=trace_fields)
            == build_request_head(as_list, *args, False, trace_fields=trace_fields))
    assert as_came.header(b"x-custom") == as_list.header(b"x-custom")
