"""Heads as the proxy keeps them: the fields it passes on are held as the bytes they are
forwarded as (``field_lines``), the field list is made only when asked for, and either
form builds the same head.  Also ``find_head_end``'s scan against its definition."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _speedups.http import (
    FRAMING_LENGTH, HttpError, build_request_head, build_response_head, find_head_end, parse_request,
    parse_response)

FAST = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def head_end_by_definition(data: bytes, start: int) -> int:
    """The first CR LF CR LF at or after ``start``, unless a bare LF LF comes before it."""
    crlf = data.find(b"\r\n\r\n", start)
    lflf = data.find(b"\n\n", start, crlf if crlf >= 0 else len(data))
    if lflf >= 0:
        return lflf + 2
    return crlf + 4 if crlf >= 0 else -1


@FAST
@given(st.binary(max_size=40).map(lambda b: bytes(b"\r\na:"[x % 4] for x in b)),
       st.integers(min_value=0, max_value=40))
def test_find_head_end_is_its_definition(data, start):
    start = min(start, len(data))
    assert find_head_end(data, start) == head_end_by_definition(data, start)


REQUEST = (b"GET /a?b=1 HTTP/1.1\r\nHost: Example.com\r\nUser-Agent:  curl/8  \r\n"
           b"x-custom:v\r\nConnection: keep-alive\r\nAccept: */*\r\nContent-Length: 3\r\n\r\n")
NAMING_A_HOP = REQUEST.replace(b"keep-alive", b"keep-alive, X-Hop").replace(
    b"Accept", b"X-Hop: 1\r\nAccept")


def parsed(raw: bytes = REQUEST):
    return parse_request(raw, find_head_end(raw, 0))


def test_field_lines_hold_what_is_forwarded_normalized():
    head = parsed()
    # Hop-by-hop fields are out, and the whitespace around values.
    assert head.field_lines == b"User-Agent: curl/8\r\nx-custom: v\r\nAccept: */*\r\n"
    # A field named in Connection is dropped from the list, which is then what is forwarded.
    head = parsed(NAMING_A_HOP)
    assert head.field_lines is None
    assert head.headers == [(b"user-agent", b"User-Agent", b"curl/8"),
                            (b"x-custom", b"x-custom", b"v"), (b"accept", b"Accept", b"*/*")]


def test_header_lookup_needs_no_list_and_ignores_case():
    head = parsed(b"GET / HTTP/1.1\r\nHost: h\r\nX-User: Ann\r\nx-user: Bob\r\n\r\n")
    assert head.header(b"x-user") == b"Ann"
    assert head.header(b"x-use") is None and head.header(b"x-user-id") is None
    assert head.field_lines is not None        # a lookup does not make the list


def test_a_changed_field_list_is_what_gets_forwarded():
    head = parsed()
    assert head.field_lines is not None
    unchanged = build_request_head(head, b"/a?b=1", b"Example.com", b"10.0.0.1", b"id-1",
                                   b"1.1 gateway", False)
    head.headers = head.headers + [(b"x-added", b"X-Added", b"yes")]
    assert head.field_lines is None
    changed = build_request_head(head, b"/a?b=1", b"Example.com", b"10.0.0.1", b"id-1",
                                 b"1.1 gateway", False)
    assert changed == unchanged.replace(b"Accept: */*\r\n", b"Accept: */*\r\nX-Added: yes\r\n")
    assert head.header(b"x-added") == b"yes"


def test_the_list_and_the_lines_build_the_same_request_head():
    from_lines = build_request_head(parsed(), b"/a?b=1", b"Example.com", b"10.0.0.1", b"id-1",
                                    b"1.1 gateway", False)
    head = parsed()
    head.headers = list(head.headers)           # the list form
    from_list = build_request_head(head, b"/a?b=1", b"Example.com", b"10.0.0.1", b"id-1",
                                   b"1.1 gateway", False)
    assert from_lines == from_list
    hop_named = parsed(NAMING_A_HOP)
    assert build_request_head(hop_named, b"/a?b=1", b"Example.com", b"10.0.0.1", b"id-1",
                              b"1.1 gateway", False) == from_lines
    assert from_lines == (b"GET /a?b=1 HTTP/1.1\r\nHost: Example.com\r\nUser-Agent: curl/8\r\n"
                          b"x-custom: v\r\nAccept: */*\r\nContent-Length: 3\r\n"
                          b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n"
                          b"X-Forwarded-Host: Example.com\r\nX-Real-IP: 10.0.0.1\r\n"
                          b"X-Request-Id: id-1\r\nVia: 1.1 gateway\r\n\r\n")


def test_response_head_round_trip():
    raw = (b"HTTP/1.1 201 Created\r\nServer: x\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n"
           b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nETag:\"e\"\r\n\r\nhello")
    head = parse_response(raw, find_head_end(raw, 0))
    assert head.status == 201 and head.content_length == 5 and head.keep_alive
    out = build_response_head(head, FRAMING_LENGTH, False)
    assert out == (b"HTTP/1.1 201 Created\r\nServer: x\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
                   b"ETag: \"e\"\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")


def test_expect_continue_is_read_from_the_first_expect_field():
    head = parsed(b"PUT / HTTP/1.1\r\nHost: h\r\nEXPECT: 100-Continue\r\nContent-Length: 1\r\n\r\n")
    assert head.expect_continue and head.header(b"expect") == b"100-Continue"
    http10 = b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    assert not parsed(http10).expect_continue
    named_hop = b"PUT / HTTP/1.1\r\nHost: h\r\nConnection: expect\r\nExpect: 100-continue\r\n\r\n"
    assert not parsed(named_hop).expect_continue


WHITESPACE = st.sampled_from([b"", b" ", b"  ", b"\t", b" \t "])
VALUE = st.binary(min_size=1, max_size=12).map(
    lambda b: bytes(b"ab=;/,\"x \t"[x % 10] for x in b).strip(b" \t") or b"v")


@FAST
@given(st.lists(st.tuples(st.sampled_from([b"Server", b"x-a", b"ETag", b"Keep-Alive", b"TE", b"Trailer"]),
                          WHITESPACE, VALUE, WHITESPACE), max_size=8))
def test_response_field_lines_are_the_kept_fields_normalized(fields):
    """Lines already spelled "Name: value" are copied as they came (a run of them at once),
    the others rebuilt: either way the same bytes as field by field."""
    raw = (b"HTTP/1.1 200 OK\r\n" + b"".join(name + b":" + before + value + after + b"\r\n"
                                              for name, before, value, after in fields) + b"\r\n")
    head = parse_response(raw, find_head_end(raw, 0))
    dropped = {b"keep-alive", b"te", b"trailer"}
    assert head.field_lines == b"".join(name + b": " + value + b"\r\n" for name, _, value, _ in fields
                                        if name.lower() not in dropped)


@pytest.mark.parametrize("parse, first_line", [(parse_request, b"GET / HTTP/1.1\r\nHost: h\r\n"),
                                               (parse_response, b"HTTP/1.1 200 OK\r\n")])
def test_a_bare_cr_anywhere_in_a_field_line_is_refused(parse, first_line):
    line = b"X-Name: some value\r\n"
    for at in range(len(line) - 1):         # before each byte of the line but its LF
        raw = first_line + line[:at] + b"\r" + line[at:] + b"Server: s\r\n\r\n"
        with pytest.raises(HttpError):
            parse(raw, find_head_end(raw, 0))
