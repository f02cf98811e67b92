"""A straightforward pure-Python request-head parser: the baseline for ``_speedups.http``.

What a Python developer would write with ``bytes`` methods and ``re``: split the
head into lines, match the request line and each field line with a regular
expression, then apply the same framing rules as the compiled parser
(RFC 9112: CR LF only, no obs-fold, no space before the colon, one decimal
Content-Length, a lone "chunked", origin-form targets, HTTP/1.0 and 1.1, Host
once and well-formed, hop-by-hop fields dropped).  On a valid head it returns
the same fields as ``_speedups.http.parse_request`` (``bench/test_micro_http.py``
checks that); errors are ``HttpError`` with the same status, not always the
same reason.  Not used by the gateway.
"""
from __future__ import annotations

import re

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(.*?)[ \t]*", re.S)
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_HOST = re.compile(rb"[0-9A-Za-z:\-._~!$&'()*+,;=%\[\]]*")
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,18}")

_DROPPED = frozenset((b"content-length", b"transfer-encoding", b"connection", b"upgrade",
                      b"keep-alive", b"proxy-connection", b"te", b"trailer", b"x-request-id",
                      b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via",
                      b"host"))


class HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RequestHead:
    __slots__ = ("method", "target", "path", "minor", "headers", "host", "content_length",
                 "chunked", "keep_alive", "connection", "upgrade", "extra_hop", "request_id",
                 "forwarded_for", "via", "expect_continue", "head_size")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes, bytes]] = []
        self.host = self.connection = self.upgrade = self.extra_hop = None
        self.request_id = self.forwarded_for = self.via = None
        self.content_length = -1
        self.chunked = False


def find_head_end(data: bytes, start: int) -> int:
    crlf = data.find(b"\r\n\r\n", start)
    lflf = data.find(b"\n\n", start)
    if lflf >= 0 and (crlf < 0 or lflf < crlf):
        return lflf + 2
    return crlf + 4 if crlf >= 0 else -1


def parse_request(data: bytes, end: int, max_headers: int = 100) -> RequestHead:
    head = RequestHead()
    pos = 0
    while data.startswith(b"\r\n", pos) and pos + 1 < end:
        pos += 2
    text = data[pos:end]
    if not text.endswith(b"\r\n\r\n"):
        raise HttpError(400, "bare LF in head")
    lines = text[:-4].split(b"\r\n")
    for line in lines:
        if b"\n" in line or b"\r" in line:
            raise HttpError(400, "bare LF or CR in head")

    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        raise HttpError(400, "invalid request line")
    method, target, major, minor = m.groups()
    if not target.startswith(b"/"):
        raise HttpError(400, "only origin-form request targets are accepted")
    if major != b"1" or minor not in (b"0", b"1"):
        raise HttpError(505, "HTTP version not supported")
    head.method, head.target, head.minor = method, target, int(minor)
    head.path = target.split(b"?", 1)[0]

    if len(lines) - 1 > max_headers:
        raise HttpError(431, "too many header fields")
    hosts = 0
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete line folding")
        m = _FIELD_LINE.fullmatch(line)
        if m is None:
            raise HttpError(400, "invalid header name")
        name, value = m.groups()
        if not _FIELD_VALUE.fullmatch(value):
            raise HttpError(400, "invalid character in header value")
        lname = name.lower()
        if lname not in _DROPPED:
            head.headers.append((lname, name, value))
        elif lname == b"content-length":
            if head.content_length >= 0 or not _CONTENT_LENGTH.fullmatch(value):
                raise HttpError(400, "invalid or duplicate Content-Length")
            head.content_length = int(value)
        elif lname == b"transfer-encoding":
            if head.chunked or value.lower() != b"chunked":
                raise HttpError(400, "unsupported Transfer-Encoding")
            head.chunked = True
        elif lname == b"connection":
            head.connection = value
        elif lname == b"upgrade":
            head.upgrade = value
        elif lname == b"host":
            if not _HOST.fullmatch(value):
                raise HttpError(400, "invalid Host header")
            hosts += 1
            head.host = value
        elif lname == b"x-request-id":
            head.request_id = value
        elif lname == b"x-forwarded-for":
            head.forwarded_for = value if head.forwarded_for is None else head.forwarded_for + b", " + value
        elif lname == b"via":
            head.via = value if head.via is None else head.via + b", " + value
    if head.chunked and head.content_length >= 0:
        raise HttpError(400, "both Content-Length and Transfer-Encoding")
    if hosts > 1:
        raise HttpError(400, "duplicate Host")
    if head.minor == 1 and head.host is None:
        raise HttpError(400, "missing Host header")
    if head.chunked and head.minor == 0:
        raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")

    # Connection: keep-alive, upgrade and extra hop-by-hop names.
    head.keep_alive = head.minor == 1
    if head.connection is None:
        head.upgrade = None
    else:
        tokens = [t.strip(b" \t") for t in head.connection.lower().split(b",")]
        extra = []
        for token in tokens:
            if token == b"close":
                head.keep_alive = False
            elif token == b"keep-alive":
                head.keep_alive = head.keep_alive or head.minor == 0
            elif token and token != b"upgrade":
                extra.append(token)
        if b"upgrade" not in tokens:
            head.upgrade = None
        if extra:
            extra = frozenset(extra)
            head.extra_hop = extra
            head.headers = [h for h in head.headers if h[0] not in extra]
    head.expect_continue = False
    if head.minor == 1:
        for lname, _, value in head.headers:
            if lname == b"expect":
                head.expect_continue = value.lower() == b"100-continue"
                break
    head.head_size = end
    return head


def build_request_head(head, target: bytes, host: bytes, client_ip: bytes, request_id: bytes,
                       via: bytes, upgrade: bool, proto: bytes = b"http", real_ip: bytes | None = None) -> bytes:
    """The head sent upstream: the client's end-to-end fields plus the proxy's own; X-Real-IP
    is ``real_ip`` (the client the gateway decided on, trusted proxies), else the peer."""
    lines = [b"%s %s HTTP/1.1" % (head.method, target), b"Host: " + host]
    lines += [name + b": " + value for _, name, value in head.headers]
    if head.chunked:
        lines.append(b"Transfer-Encoding: chunked")
    elif head.content_length >= 0:
        lines.append(b"Content-Length: %d" % head.content_length)
    forwarded_for = client_ip if head.forwarded_for is None else head.forwarded_for + b", " + client_ip
    lines += [b"X-Forwarded-For: " + forwarded_for, b"X-Forwarded-Proto: " + proto,
              b"X-Forwarded-Host: " + (head.host or host),
              b"X-Real-IP: " + (real_ip if real_ip is not None else client_ip), b"X-Request-Id: " + request_id,
              b"Via: " + (via if head.via is None else head.via + b", " + via)]
    if upgrade:
        lines += [b"Connection: upgrade", b"Upgrade: " + head.upgrade]
    return b"\r\n".join(lines) + b"\r\n\r\n"
