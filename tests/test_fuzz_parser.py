"""Hypothesis fuzzing of the compiled HTTP/1.1 framing (``_speedups.http``), in process.

* Random and mutated request heads through ``find_head_end`` / ``parse_request``, and random
  bodies through ``BodyFramer``: the only exception ever raised is ``HttpError``, with a 4xx/5xx
  status, and a framer fed the same bytes in any split gives the same answer.
* A differential test against llhttp (httptools, strict: no leniency flag set): whenever our
  parser accepts a request, llhttp parses it with the same method, target, fields and body
  framing (no body / Content-Length n / chunked ending at the same byte).  The only classes
  where llhttp may refuse what we accept are listed in ``ACCEPTED_DIFFERENCES`` with the
  RFC 9112 reasoning; any other disagreement fails the test.

CI runs bounded examples (``EXAMPLES``); ``-m fuzz_long`` runs the same properties with
``LONG_EXAMPLES`` each::

    /work/venv/bin/python -m pytest tests/test_fuzz_parser.py tests/test_fuzz_proxy.py -m fuzz_long
"""
from __future__ import annotations

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _speedups.http import (FRAMING_CHUNKED, BodyFramer, HttpError, find_head_end, parse_request)

EXAMPLES = 400
LONG_EXAMPLES = 50_000
FAST = settings(max_examples=EXAMPLES, deadline=500, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=LONG_EXAMPLES, deadline=2000,
                suppress_health_check=[HealthCheck.too_slow])

# Methods llhttp knows (a subset of its table); any other token is legal per RFC 9110 9.1.
LLHTTP_METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE",
                  b"PROPFIND", b"MKCOL", b"PURGE", b"REPORT", b"SEARCH", b"QUERY"]
OTHER_METHODS = [b"FOO", b"get", b"G-T", b"BREW", b"M!#$%&'*+-.^_`|~"]
HOP_BY_HOP = {b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"keep-alive",
              b"proxy-connection", b"te", b"trailer", b"x-request-id", b"x-forwarded-for",
              b"x-forwarded-proto", b"x-forwarded-host", b"via", b"host"}

# Bytes that matter to HTTP framing, and words that do; mutations draw from these.
SPECIAL = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b",", b";", b"=", b'"', b"0", b"5",
           b"-", b"+", b"\x0b", b"\x7f", b"\x80", b"\xff", b"/", b"?", b"#", b"*", b"chunked",
           b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n", b"Host: x\r\n", b"\r\n\r\n",
           b"HTTP/1.1", b"gzip", b"0\r\n\r\n", b"ff\r\n", b"\n\n", b"\r\r"]


# -- strategies -----------------------------------------------------------------------------------

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~",
                min_size=1, max_size=12).map(str.encode)
field_value = st.one_of(
    st.binary(max_size=20).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7f)),
    st.sampled_from([b"", b"chunked", b"5", b"0", b"close", b"keep-alive", b"upgrade", b"x",
                     b"gzip, chunked", b"100-continue", b" padded ", b"\tx\t"]))
field_name = st.one_of(token, st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding",
                                               b"Connection", b"Upgrade", b"Expect", b"TE", b"Trailer",
                                               b"X-Request-Id", b"Keep-Alive", b"Via"]))
target = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%?#[]{}|\\^`\"<>",
            max_size=30).map(lambda t: b"/" + t.encode()),
    st.sampled_from([b"/", b"*", b"http://x/y", b"x:80", b"//x", b"/a?b=c"]))


@st.composite
def chunked_body(draw) -> bytes:
    out = []
    for _ in range(draw(st.integers(0, 3))):
        data = draw(st.binary(min_size=1, max_size=20))
        ext = draw(st.sampled_from([b"", b";a", b";a=b", b';a="q"', b";a=b;c"]))
        out.append(b"%x%s\r\n%s\r\n" % (len(data), ext, data))
    out.append(b"0\r\n")
    out.append(draw(st.sampled_from([b"", b"X-T: 1\r\n", b"A: b\r\nC: d\r\n"])))
    out.append(b"\r\n")
    return b"".join(out)


@st.composite
def request(draw) -> bytes:
    """A request that is usually well-formed: known or other methods, varied fields and framing."""
    method = draw(st.one_of(st.sampled_from(LLHTTP_METHODS), st.sampled_from(OTHER_METHODS)))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    lines = [method + b" " + draw(target) + b" " + version]
    if draw(st.booleans()) or version == b"HTTP/1.1":
        lines.append(b"Host: " + draw(st.sampled_from([b"gw.test", b"a:80", b"[::1]", b""])))
    for name, value in draw(st.lists(st.tuples(field_name, field_value), max_size=5)):
        lines.append(name + b": " + value)
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b""
    if framing == "length":
        body = draw(st.binary(max_size=40))
        lines.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        body = draw(chunked_body())
        lines.append(b"Transfer-Encoding: chunked")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


mutation = st.tuples(st.sampled_from(["insert", "delete", "replace"]), st.floats(0, 1),
                     st.one_of(st.sampled_from(SPECIAL), st.binary(min_size=1, max_size=3)))


@st.composite
def mutated_request(draw) -> bytes:
    data = draw(request())
    for op, where, piece in draw(st.lists(mutation, max_size=4)):
        i = int(where * len(data))
        if op == "insert":
            data = data[:i] + piece + data[i:]
        elif op == "delete":
            data = data[:i] + data[i + len(piece):]
        else:
            data = data[:i] + piece + data[i + len(piece):]
    return data


@st.composite
def body_mutated_request(draw) -> bytes:
    """A well-formed head with Content-Length or chunked framing; only the body is mutated."""
    version_line = draw(st.sampled_from([b"POST /b HTTP/1.1", b"PUT /b?x=1 HTTP/1.1"]))
    if draw(st.booleans()):
        body = draw(chunked_body())
        head = version_line + b"\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    else:
        body = draw(st.binary(max_size=40))
        head = version_line + b"\r\nHost: gw.test\r\nContent-Length: %d\r\n\r\n" % len(body)
    for op, where, piece in draw(st.lists(mutation, max_size=3)):
        i = int(where * len(body))
        if op == "insert":
            body = body[:i] + piece + body[i:]
        elif op == "delete":
            body = body[:i] + body[i + len(piece):]
        else:
            body = body[:i] + piece + body[i + len(piece):]
    return head + body


# -- our side -------------------------------------------------------------------------------------


def ours(data: bytes):
    """(head, head end, body end or None while incomplete) or an HttpError instance."""
    try:
        end = find_head_end(data, 0)
        if end < 0:
            return None
        head = parse_request(data, end, 100)
        if head.chunked:
            framer = BodyFramer(FRAMING_CHUNKED, 0, 400)
            stop = framer.feed(data, end)
            return head, end, stop if framer.done else None
        n = max(head.content_length, 0)
        return head, end, end + n if len(data) >= end + n else None
    except HttpError as err:
        assert err.status in (400, 413, 414, 431, 505), err.status
        return err


@given(st.binary(max_size=600))
@FAST
def test_random_bytes_only_http_error(data):
    ours(data)
    ours(b"GET / HTTP/1.1\r\n" + data)
    ours(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + data)


@given(st.one_of(mutated_request(), body_mutated_request()))
@FAST
def test_mutated_requests_only_http_error(data):
    ours(data)


@given(st.binary(max_size=400), st.lists(st.integers(1, 400), max_size=6))
@FAST
def test_body_framer_any_split_same_answer(data, cuts):
    """Fed in pieces, the chunked framer ends (or fails) exactly where it does in one piece."""
    whole = _frame_whole(data)
    framer = BodyFramer(FRAMING_CHUNKED, 0, 400)
    pos, result = 0, None
    try:
        for cut in sorted(set(c for c in cuts if c < len(data))) + [len(data)]:
            piece = data[pos:cut]
            stop = framer.feed(piece, 0)
            if framer.done:
                result = ("done", pos + stop)
                break
            pos = cut
        else:
            result = ("open", None)
    except HttpError:
        result = ("error", None)
    assert result == whole


@given(chunked_body(), st.lists(st.integers(1, 200), max_size=6))
@FAST
def test_body_framer_valid_chunked_any_split(body, cuts):
    assert _frame_whole(body + b"NEXT") == ("done", len(body))
    framer, pos = BodyFramer(FRAMING_CHUNKED, 0, 400), 0
    for cut in sorted(set(c for c in cuts if c < len(body))) + [len(body)]:
        stop = framer.feed(body[pos:cut], 0)
        assert not framer.done or pos + stop == len(body)
        pos = cut
    assert framer.done and framer.received == len(body)


def _frame_whole(data: bytes):
    framer = BodyFramer(FRAMING_CHUNKED, 0, 400)
    try:
        stop = framer.feed(data, 0)
    except HttpError:
        return ("error", None)
    return ("done", stop) if framer.done else ("open", None)


# -- differential against llhttp ------------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:       # trailer fields come through here too
            self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_message_complete(self) -> None:
        self.complete = True


def llhttp(data: bytes):
    """(method, recorder, upgraded) after feeding ``data``; raises httptools' errors."""
    rec = _Recorder()
    parser = httptools.HttpRequestParser(rec)
    upgraded = False
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        upgraded = True
    return parser.get_method(), rec, upgraded


def _difference_class(data: bytes, head, end: int, stop: int | None, exc: Exception) -> str | None:
    """Which accepted difference explains llhttp refusing what we accept; None: a real one."""
    if head.method not in LLHTTP_METHODS:
        return "method"                 # llhttp knows a fixed list; RFC 9110 9.1: any token
    text = str(exc)
    if head.chunked and ("Transfer-Encoding" in text or "Content-Length" in text):
        trailers = data[end:stop if stop is not None else len(data)].lower()
        if b"\r\n0\r\n" in b"\r\n" + trailers and (b"transfer-encoding" in trailers
                                                   or b"content-length" in trailers):
            return "trailer-framing-field"
    if head.chunked and ("chunk extension" in text or "chunk_extension" in text):
        ext_bytes = data[end:stop if stop is not None else len(data)]
        if any(c >= 0x80 for c in ext_bytes) or b"\t" in ext_bytes or b" " in ext_bytes \
                or b'"' in ext_bytes or b"=" in ext_bytes or b";" in ext_bytes:
            return "chunk-extension"
    return None


DISAGREEMENTS: list[tuple[str, bytes]] = []      # (class, input) seen in this run


def _compare(data: bytes) -> None:
    result = ours(data)
    if result is None or isinstance(result, HttpError):
        return
    head, end, stop = result
    upto = stop if stop is not None else len(data)
    try:
        method, rec, upgraded = llhttp(data[:upto])
    except httptools.HttpParserError as exc:
        cls = _difference_class(data, head, end, stop, exc)
        assert cls is not None, f"llhttp refuses what we accept: {exc} in {data[:upto]!r}"
        DISAGREEMENTS.append((cls, data[:upto]))
        return
    assert method == head.method
    assert rec.url == head.target
    assert rec.headers_done
    # Fields in order, minus those the proxy handles itself; llhttp keeps trailing whitespace.
    extra = head.extra_hop or frozenset()
    theirs = [(n, v.rstrip(b" \t")) for n, v in rec.fields
              if n.lower() not in HOP_BY_HOP and n.lower() not in extra]
    assert theirs == [(name, value) for _, name, value in head.headers]
    hosts = [v.rstrip(b" \t") for n, v in rec.fields if n.lower() == b"host"]
    assert hosts == ([head.host] if head.host is not None else [])
    if upgraded:
        return                          # llhttp hands the rest to the upgraded protocol
    if stop is None:
        assert not rec.complete, "llhttp found the end of a body we still wait for"
        return
    assert rec.complete, "llhttp did not find the end of the body where we did"
    if stop > end:
        # Not a byte earlier: the body ends at the same byte for both.
        _, early, _ = llhttp(data[:stop - 1])
        assert not early.complete, "llhttp ended the body before we did"


@given(request())
@FAST
def test_differential_llhttp_wellformed(data):
    _compare(data)


@given(st.one_of(mutated_request(), body_mutated_request()))
@FAST
def test_differential_llhttp_mutated(data):
    _compare(data)


@pytest.mark.fuzz_long
@pytest.mark.timeout(3600)
@given(st.one_of(mutated_request(), body_mutated_request()))
@LONG
def test_differential_llhttp_mutated_long(data):
    _compare(data)


@pytest.mark.fuzz_long
@pytest.mark.timeout(3600)
@given(st.binary(max_size=2000))
@LONG
def test_random_bytes_only_http_error_long(data):
    ours(data)
    ours(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + data)


# The differences found, decided per RFC 9112, each pinned by an example.
ACCEPTED_DIFFERENCES = {
    "method": (b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n",
               "llhttp knows a fixed list of methods; RFC 9110 9.1 makes any token a method, "
               "and a proxy forwards methods it does not know.  We are right."),
    "chunk-extension": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5;a=\xe9\r\nhello\r\n0\r\n\r\n",
                        "llhttp checks the chunk-ext grammar (token / quoted-string); we accept any "
                        "field-value bytes there (no CR, LF or other controls) and forward them "
                        "unchanged.  llhttp is right by the letter of RFC 9112 7.1.1; ours is "
                        "safe because every reading of the line still ends at the same CR LF."),
    "trailer-framing-field": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"0\r\nTransfer-Encoding: chunked\r\n\r\n",
                              "llhttp applies its header rules to trailers and refuses a second "
                              "Transfer-Encoding there; we forward trailer lines unchanged.  RFC 9110 "
                              "6.5.1: a sender must not put framing fields in trailers and a recipient "
                              "must not merge them into the header section; the body's framing is "
                              "decided before trailers, so both readings end the message at the same "
                              "byte.  Refusing would be stricter (defence against upstreams that merge "
                              "trailers); not a framing disagreement."),
}


@pytest.mark.parametrize("name", list(ACCEPTED_DIFFERENCES))
def test_accepted_differences_pinned(name):
    data, _ = ACCEPTED_DIFFERENCES[name]
    result = ours(data)
    assert not isinstance(result, HttpError) and result is not None
    with pytest.raises(httptools.HttpParserError):
        llhttp(data)
