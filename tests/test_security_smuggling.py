"""Request smuggling and bad framing (RFC 9112), each tried over a real socket through the gateway.

Every bad request must get its error status (400; 505 for an unsupported version) and a closed
connection, and nothing of it may reach the upstream: the upstream here is a ``RecordingUpstream``
that keeps every byte it receives.  A request whose *head* is fine but whose chunked *body* is
broken is streamed, so the upstream may see the head and the good chunks before the bad byte;
for those the rule is weaker and exact: the upstream never sees a complete request, and the
gateway resets that upstream connection.

Responses with bad framing from an upstream must give the client a 502 (or a cut connection
once the body has started), and the upstream connection must never carry another request.

The case lists are data: ``docs/security.md`` holds a table generated from them
(``python tests/test_security_smuggling.py --table``; ``--write`` rewrites the doc), and
``test_security_doc_table_is_current`` fails when the two drift apart.
"""
from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support import REPO, Client, GatewayProcess, PeerClosed, TinyServer, static_source

HOST = b"gw.test"


# -- an upstream that records every byte ------------------------------------------------------


@dataclass
class Forwarded:
    """One complete request as the upstream received it."""

    conn: int                           # index of the upstream connection it came on
    head: bytes
    method: bytes
    target: bytes
    fields: list[tuple[bytes, bytes]]   # (lower-case name, value)
    body: bytes                         # raw body bytes as framed on the wire (chunk lines kept)

    def field(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.fields if k == name]


@dataclass
class UpstreamConn:
    index: int
    data: bytearray = field(default_factory=bytearray)
    requests: list[Forwarded] = field(default_factory=list)
    closed: bool = False                # the gateway closed or reset it
    unparseable: bytes | None = None    # bytes this upstream could not frame (a gateway bug)


def split_message(buf: bytes | bytearray) -> tuple[bytes, list[tuple[bytes, bytes]], bytes, int] | None:
    """Frame one request from ``buf`` with a deliberately simple parser of its own (not the
    gateway's): (head, fields, raw body, bytes used), or None while incomplete.

    The gateway rebuilds request heads itself, so they are clean; bodies are forwarded as
    received, so the chunk parser skips extensions and reads trailers up to the blank line.
    Raises ValueError for bytes that cannot be framed.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end + 4])
    lines = head[:-4].split(b"\r\n")
    fields = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"header line without colon: {line!r}")
        fields.append((name.strip().lower(), value.strip()))
    te = [v for k, v in fields if k == b"transfer-encoding"]
    cl = [v for k, v in fields if k == b"content-length"]
    if te and cl or len(te) > 1 or len(cl) > 1:
        raise ValueError("ambiguous framing forwarded")
    pos = end + 4
    if te:
        if te[0].lower() != b"chunked":
            raise ValueError(f"transfer-encoding {te[0]!r} forwarded")
        for _ in range(1_000_000):
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            pos = eol + 2
            if size == 0:
                for _ in range(10_000):         # trailer lines up to the blank line
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        return None
                    line, pos = buf[pos:eol], eol + 2
                    if not line:
                        break
                break
            if len(buf) < pos + size + 2:
                return None
            if buf[pos + size:pos + size + 2] != b"\r\n":
                raise ValueError("chunk data not followed by CRLF")
            pos += size + 2
    elif cl:
        n = int(cl[0])
        if len(buf) < pos + n:
            return None
        pos += n
    return head, fields, bytes(buf[end + 4:pos]), pos


OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
HEAD_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"


class RecordingUpstream:
    """A TCP upstream (``TinyServer``) that records every byte per connection and answers each
    complete request: with ``responses[target]`` when the target is listed (bad responses for
    the response-framing tests; a tuple is sent in pieces 200 ms apart), else 200 "ok"
    with keep-alive."""

    def __init__(self, host: str, responses: dict[bytes, bytes | tuple[bytes, ...]] | None = None,
                 close_after: frozenset[bytes] = frozenset()) -> None:
        self.responses = responses or {}
        self.close_after = close_after  # targets whose answer is followed by closing
        self.lock = threading.Lock()
        self.conns: list[UpstreamConn] = []
        self.server = TinyServer(host, self._handle)

    @property
    def address(self) -> str:
        return self.server.address

    def _handle(self, sock: socket.socket) -> None:
        with self.lock:
            rec = UpstreamConn(len(self.conns))
            self.conns.append(rec)
        sock.settimeout(120.0)          # pooled connections idle long; stop() shuts them down
        buf = bytearray()
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                with self.lock:
                    rec.data += data
                buf += data
                while True:
                    try:
                        msg = split_message(buf)
                    except ValueError:
                        rec.unparseable = bytes(buf)
                        return
                    if msg is None:
                        break
                    head, fields, body, used = msg
                    del buf[:used]
                    method, target = head.split(b" ", 2)[:2]
                    with self.lock:
                        rec.requests.append(Forwarded(rec.index, head, method, target, fields, body))
                    answer = self.responses.get(target, HEAD_RESPONSE if method == b"HEAD" else OK_RESPONSE)
                    for i, piece in enumerate(answer if isinstance(answer, tuple) else (answer,)):
                        if i:
                            time.sleep(0.2)     # pieces arrive in separate reads
                        sock.sendall(piece)
                    if target in self.close_after:
                        sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            rec.closed = True

    # readings

    def total_bytes(self) -> int:
        with self.lock:
            return sum(len(c.data) for c in self.conns)

    def lengths(self) -> list[int]:
        """Bytes received so far on each connection."""
        with self.lock:
            return [len(c.data) for c in self.conns]

    def requests(self) -> list[Forwarded]:
        with self.lock:
            return [r for c in self.conns for r in c.requests]

    def snapshot(self) -> tuple[int, int]:
        """(connections, requests) so far, to compare with later."""
        with self.lock:
            return len(self.conns), sum(len(c.requests) for c in self.conns)

    def wait(self, predicate, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self.conns):
                    return True
            time.sleep(0.01)
        with self.lock:
            return predicate(self.conns)

    def quiet(self, period: float, timeout: float = 5.0) -> None:
        """Return once no byte has arrived for ``period`` seconds (or after ``timeout``)."""
        deadline = time.monotonic() + timeout
        last = self.total_bytes()
        while time.monotonic() < deadline:
            time.sleep(period)
            now = self.total_bytes()
            if now == last:
                return
            last = now

    def stop(self) -> None:
        self.server.stop()


# -- the cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    raw: bytes
    status: int = 400
    body_error: bool = False            # the head is valid: the error is in the chunked body

    @property
    def shown(self) -> str:
        """The distinguishing part of the input, for the doc table ("…" stands for the usual
        request line and Host field)."""
        raw = self.raw
        for common in (b"POST /rec HTTP/1.1\r\nHost: gw.test\r\n", b"Host: gw.test\r\n"):
            if common in raw:
                raw = raw.replace(common, b"\x85", 1)
                break
        text = repr(raw)[2:-1].replace("\\x85", "…")
        return text if len(text) <= 100 else text[:97] + "..."


def _req(head_lines: bytes, body: bytes = b"", line: bytes = b"POST /rec HTTP/1.1") -> bytes:
    return line + b"\r\n" + head_lines + b"\r\n" + body


def _post(fields: bytes, body: bytes = b"") -> bytes:
    return _req(b"Host: gw.test\r\n" + fields, body)


def _chunked(body: bytes) -> bytes:
    return _post(b"Transfer-Encoding: chunked\r\n", body)


def _get_line(line: bytes, fields: bytes = b"Host: gw.test\r\n") -> bytes:
    return _req(fields, line=line)


G_CLTE = "Content-Length and Transfer-Encoding (RFC 9112 6.1, 6.3)"
G_TE = "Transfer-Encoding other than a lone final chunked (RFC 9112 6.1)"
G_CHUNK = "Chunked body (RFC 9112 7.1)"
G_FIELD = "Field lines (RFC 9112 2.2, 5; RFC 9110 5.5)"
G_LINE = "Request line: method, target, version (RFC 9112 3)"
G_HOST = "Host (RFC 9112 3.2)"

CASES: list[Case] = [
    # Content-Length / Transfer-Encoding together, duplicated, or not one decimal number.
    Case("cl-and-te", G_CLTE, _post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n")),
    Case("te-and-cl", G_CLTE, _post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n")),
    Case("cl-and-te-gzip-chunked", G_CLTE,
         _post(b"Content-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n")),
    Case("cl-0-and-te", G_CLTE, _post(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n")),
    Case("cl-duplicate-equal", G_CLTE, _post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello")),
    Case("cl-duplicate-differ", G_CLTE, _post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!")),
    Case("cl-list-equal", G_CLTE, _post(b"Content-Length: 5, 5\r\n", b"hello")),
    Case("cl-list-differ", G_CLTE, _post(b"Content-Length: 5, 6\r\n", b"hello!")),
    Case("cl-plus-sign", G_CLTE, _post(b"Content-Length: +5\r\n", b"hello")),
    Case("cl-minus-sign", G_CLTE, _post(b"Content-Length: -5\r\n", b"hello")),
    Case("cl-space-inside", G_CLTE, _post(b"Content-Length: 5 5\r\n", b"hello")),
    Case("cl-hex", G_CLTE, _post(b"Content-Length: 0x5\r\n", b"hello")),
    Case("cl-decimal-point", G_CLTE, _post(b"Content-Length: 5.0\r\n", b"hello")),
    Case("cl-empty", G_CLTE, _post(b"Content-Length:\r\n", b"hello")),
    Case("cl-overflow", G_CLTE, _post(b"Content-Length: 99999999999999999999999\r\n", b"hello")),
    Case("cl-obs-text", G_CLTE, _post(b"Content-Length: 5\xa0\r\n", b"hello")),
    Case("cl-nul", G_CLTE, _post(b"Content-Length: 5\x00\r\n", b"hello")),
    # Transfer-Encoding: only a lone "chunked" is understood.
    Case("te-gzip", G_TE, _post(b"Transfer-Encoding: gzip\r\n", b"0\r\n\r\n")),
    Case("te-identity", G_TE, _post(b"Transfer-Encoding: identity\r\n", b"hello")),
    Case("te-chunked-gzip", G_TE, _post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n")),
    Case("te-gzip-chunked", G_TE, _post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n")),
    Case("te-chunked-twice-list", G_TE, _post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n")),
    Case("te-chunked-twice-lines", G_TE,
         _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n")),
    Case("te-chunked-then-gzip-lines", G_TE,
         _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", b"0\r\n\r\n")),
    Case("te-xchunked", G_TE, _post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n")),
    Case("te-chunkedx", G_TE, _post(b"Transfer-Encoding: chunkedx\r\n", b"0\r\n\r\n")),
    Case("te-chunked-trailing-comma", G_TE, _post(b"Transfer-Encoding: chunked,\r\n", b"0\r\n\r\n")),
    Case("te-quoted", G_TE, _post(b'Transfer-Encoding: "chunked"\r\n', b"0\r\n\r\n")),
    Case("te-chunked-param", G_TE, _post(b"Transfer-Encoding: chunked;q=1\r\n", b"0\r\n\r\n")),
    Case("te-vertical-tab", G_TE, _post(b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n")),
    Case("te-form-feed", G_TE, _post(b"Transfer-Encoding: chunked\x0c\r\n", b"0\r\n\r\n")),
    Case("te-nul", G_TE, _post(b"Transfer-Encoding: chunked\x00\r\n", b"0\r\n\r\n")),
    Case("te-empty", G_TE, _post(b"Transfer-Encoding:\r\n", b"0\r\n\r\n")),
    Case("te-space-before-colon", G_TE, _post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n")),
    Case("te-folded", G_TE, _post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n")),
    Case("te-first-line-folded", G_TE,
         _req(b" Transfer-Encoding: chunked\r\nHost: gw.test\r\n", b"0\r\n\r\n")),
    Case("te-http10", G_TE, _req(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n",
                                 line=b"POST /rec HTTP/1.0")),
    # Chunked bodies: the head is valid, the error is in the body.
    Case("chunk-size-not-hex", G_CHUNK, _chunked(b"zz\r\nhello\r\n0\r\n\r\n"), body_error=True),
    Case("chunk-size-0x", G_CHUNK, _chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), body_error=True),
    Case("chunk-size-negative", G_CHUNK, _chunked(b"-5\r\nhello\r\n0\r\n\r\n"), body_error=True),
    Case("chunk-size-plus", G_CHUNK, _chunked(b"+5\r\nhello\r\n0\r\n\r\n"), body_error=True),
    Case("chunk-size-overflow", G_CHUNK, _chunked(b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
         body_error=True),
    Case("chunk-size-missing", G_CHUNK, _chunked(b"\r\nhello\r\n0\r\n\r\n"), body_error=True),
    Case("chunk-size-space-after", G_CHUNK, _chunked(b"5 \r\nhello\r\n0\r\n\r\n"), body_error=True),
    Case("chunk-size-space-before", G_CHUNK, _chunked(b" 5\r\nhello\r\n0\r\n\r\n"), body_error=True),
    Case("chunk-size-bare-lf", G_CHUNK, _chunked(b"5\nhello\r\n0\r\n\r\n"), body_error=True),
    Case("chunk-ext-control", G_CHUNK, _chunked(b"5;a=\x01b\r\nhello\r\n0\r\n\r\n"), body_error=True),
    Case("chunk-ext-nul", G_CHUNK, _chunked(b"5;a\x00\r\nhello\r\n0\r\n\r\n"), body_error=True),
    Case("chunk-ext-bare-lf", G_CHUNK, _chunked(b"5;a\nhello\r\n0\r\n\r\n"), body_error=True),
    Case("chunk-ext-bare-cr", G_CHUNK, _chunked(b"5;a\rb\r\nhello\r\n0\r\n\r\n"), body_error=True),
    Case("chunk-data-without-crlf", G_CHUNK, _chunked(b"5\r\nhello0\r\n\r\n"), body_error=True),
    Case("chunk-data-longer-than-size", G_CHUNK, _chunked(b"3\r\nhello\r\n0\r\n\r\n"), body_error=True),
    Case("chunk-data-bare-lf", G_CHUNK, _chunked(b"5\r\nhello\n0\r\n\r\n"), body_error=True),
    Case("chunk-data-bare-cr", G_CHUNK, _chunked(b"5\r\nhello\r0\r\n\r\n"), body_error=True),
    Case("last-chunk-bare-lf", G_CHUNK, _chunked(b"5\r\nhello\r\n0\n\n"), body_error=True),
    Case("trailer-bare-lf", G_CHUNK, _chunked(b"0\r\nX-T: a\n\r\n"), body_error=True),
    Case("trailer-without-colon", G_CHUNK, _chunked(b"0\r\nX-T a\r\n\r\n"), body_error=True),
    Case("trailer-space-before-colon", G_CHUNK, _chunked(b"0\r\nX-T : a\r\n\r\n"), body_error=True),
    Case("trailer-folded", G_CHUNK, _chunked(b"0\r\nX-T: a\r\n b\r\n\r\n"), body_error=True),
    Case("trailer-control", G_CHUNK, _chunked(b"0\r\nX-T: a\x01\r\n\r\n"), body_error=True),
    # Field lines.
    Case("obs-fold-space", G_FIELD, _post(b"X-A: a\r\n  b\r\n")),
    Case("obs-fold-tab", G_FIELD, _post(b"X-A: a\r\n\tb\r\n")),
    Case("space-before-colon", G_FIELD, _req(b"Host : gw.test\r\n")),
    Case("tab-before-colon", G_FIELD, _post(b"X-A\t: a\r\n")),
    Case("bare-lf-everywhere", G_FIELD, b"GET /rec HTTP/1.1\nHost: gw.test\n\n"),
    Case("bare-lf-request-line", G_FIELD, b"GET /rec HTTP/1.1\nHost: gw.test\r\n\r\n"),
    Case("bare-lf-field", G_FIELD, _post(b"X-A: a\nX-B: b\r\n")),
    Case("bare-lf-end-of-head", G_FIELD, b"GET /rec HTTP/1.1\r\nHost: gw.test\r\n\n"),
    Case("bare-cr-field", G_FIELD, _post(b"X-A: a\rX-B: b\r\n")),
    Case("bare-cr-line-end", G_FIELD, _post(b"X-A: a\r\r\n")),
    Case("bare-cr-request-line", G_FIELD, b"GET /rec\r HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
    Case("nul-in-value", G_FIELD, _post(b"X-A: a\x00b\r\n")),
    Case("ctl-01-in-value", G_FIELD, _post(b"X-A: a\x01b\r\n")),
    Case("esc-in-value", G_FIELD, _post(b"X-A: a\x1bb\r\n")),
    Case("del-in-value", G_FIELD, _post(b"X-A: a\x7fb\r\n")),
    Case("vt-in-value", G_FIELD, _post(b"X-A: a\x0bb\r\n")),
    Case("nul-in-name", G_FIELD, _post(b"X-\x00A: a\r\n")),
    Case("empty-name", G_FIELD, _post(b": a\r\n")),
    Case("line-without-colon", G_FIELD, _post(b"X-A a\r\n")),
    Case("non-token-name", G_FIELD, _post(b"X(A): a\r\n")),
    Case("obs-text-name", G_FIELD, _post(b"X-\xe9: a\r\n")),
    Case("whitespace-only-line", G_FIELD, _post(b"   \r\n")),
    # Request line.
    Case("absolute-form", G_LINE, _get_line(b"GET http://gw.test/rec HTTP/1.1")),
    Case("asterisk-form", G_LINE, _get_line(b"OPTIONS * HTTP/1.1")),
    Case("authority-form", G_LINE, _get_line(b"CONNECT gw.test:443 HTTP/1.1")),
    Case("relative-target", G_LINE, _get_line(b"GET rec HTTP/1.1")),
    Case("empty-target", G_LINE, _get_line(b"GET  HTTP/1.1")),
    Case("space-in-target", G_LINE, _get_line(b"GET /r ec HTTP/1.1")),
    Case("nul-in-target", G_LINE, _get_line(b"GET /r\x00ec HTTP/1.1")),
    Case("obs-text-in-target", G_LINE, _get_line(b"GET /r\xe9c HTTP/1.1")),
    Case("del-in-target", G_LINE, _get_line(b"GET /r\x7fc HTTP/1.1")),
    Case("method-paren", G_LINE, _get_line(b"G(T /rec HTTP/1.1")),
    Case("method-at", G_LINE, _get_line(b"G@T /rec HTTP/1.1")),
    Case("method-slash", G_LINE, _get_line(b"G/T /rec HTTP/1.1")),
    Case("method-nul", G_LINE, _get_line(b"GE\x00T /rec HTTP/1.1")),
    Case("method-obs-text", G_LINE, _get_line(b"G\xc9T /rec HTTP/1.1")),
    Case("method-empty", G_LINE, _get_line(b" /rec HTTP/1.1")),
    Case("tab-separators", G_LINE, _get_line(b"GET\t/rec\tHTTP/1.1")),
    Case("double-space", G_LINE, _get_line(b"GET  /rec HTTP/1.1")),
    Case("leading-space", G_LINE, _get_line(b" GET /rec HTTP/1.1")),
    Case("trailing-space", G_LINE, _get_line(b"GET /rec HTTP/1.1 ")),
    Case("http09-no-version", G_LINE, b"GET /rec\r\n\r\n"),
    Case("version-0.9", G_LINE, _get_line(b"GET /rec HTTP/0.9"), status=505),
    Case("version-2.0", G_LINE, _get_line(b"GET /rec HTTP/2.0"), status=505),
    Case("version-3.0", G_LINE, _get_line(b"GET /rec HTTP/3.0"), status=505),
    Case("version-1.2", G_LINE, _get_line(b"GET /rec HTTP/1.2"), status=505),
    Case("version-lower-case", G_LINE, _get_line(b"GET /rec http/1.1")),
    Case("version-no-minor", G_LINE, _get_line(b"GET /rec HTTP/2")),
    Case("version-letters", G_LINE, _get_line(b"GET /rec HTTP/x.y")),
    Case("version-minor-letter", G_LINE, _get_line(b"GET /rec HTTP/1.x")),
    Case("version-comma", G_LINE, _get_line(b"GET /rec HTTP/1,1")),
    Case("version-three-parts", G_LINE, _get_line(b"GET /rec HTTP/1.1.1")),
    Case("version-two-digits", G_LINE, _get_line(b"GET /rec HTTP/11.1")),
    Case("version-garbage", G_LINE, _get_line(b"GET /rec HTXP/1.1")),
    # Host.
    Case("host-missing", G_HOST, _req(b"", line=b"GET /rec HTTP/1.1")),
    Case("host-duplicate-equal", G_HOST, _req(b"Host: gw.test\r\nHost: gw.test\r\n", line=b"GET /rec HTTP/1.1")),
    Case("host-duplicate-differ", G_HOST, _req(b"Host: gw.test\r\nHost: other.test\r\n",
                                               line=b"GET /rec HTTP/1.1")),
    Case("host-space", G_HOST, _req(b"Host: gw.test evil.test\r\n", line=b"GET /rec HTTP/1.1")),
    Case("host-slash", G_HOST, _req(b"Host: evil.test/gw.test\r\n", line=b"GET /rec HTTP/1.1")),
    Case("host-userinfo", G_HOST, _req(b"Host: gw.test@evil.test\r\n", line=b"GET /rec HTTP/1.1")),
    Case("host-obs-text", G_HOST, _req(b"Host: gw\xe9.test\r\n", line=b"GET /rec HTTP/1.1")),
]


@dataclass(frozen=True)
class ResponseCase:
    name: str
    raw: bytes                          # everything the upstream sends for the request
    outcome: str                        # "502", "cut" (body had started) or "200" (first reply only)

    @property
    def target(self) -> bytes:
        return b"/bad/" + self.name.encode()


RESPONSE_CASES: list[ResponseCase] = [
    ResponseCase("cl-and-te", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"0\r\n\r\n", "502"),
    ResponseCase("te-and-cl", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                              b"0\r\n\r\n", "502"),
    ResponseCase("two-cl-differ", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!", "502"),
    ResponseCase("two-cl-equal", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", "502"),
    ResponseCase("cl-list", b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", "502"),
    ResponseCase("cl-negative", b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok", "502"),
    ResponseCase("te-gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", "502"),
    ResponseCase("te-chunked-twice", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "502"),
    ResponseCase("garbage-status-line", b"garbage\r\nContent-Length: 2\r\n\r\nok", "502"),
    ResponseCase("status-line-no-code", b"HTTP/1.1 OK\r\nContent-Length: 2\r\n\r\nok", "502"),
    ResponseCase("status-four-digits", b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok", "502"),
    ResponseCase("status-letters", b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok", "502"),
    ResponseCase("version-garbage", b"HTTP/1.x 200 OK\r\nContent-Length: 2\r\n\r\nok", "502"),
    ResponseCase("version-2", b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "502"),
    ResponseCase("http09-body-only", b"ok ok ok ok\r\n\r\n", "502"),
    ResponseCase("bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "502"),
    ResponseCase("obs-fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok", "502"),
    ResponseCase("nul-in-field", b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", "502"),
    ResponseCase("space-before-colon", b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", "502"),
    # 1 MiB: larger than one read of the gateway, so its end is not seen in the first read (the
    # one-read case is test_security_limits.test_response_head_over_limit_in_one_read_502).
    ResponseCase("head-too-large", b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * (1 << 20) + b"\r\n"
                                   b"Content-Length: 2\r\n\r\nok", "502"),
    ResponseCase("closed-mid-head", b"HTTP/1.1 200 OK\r\nContent-Len", "502"),
    ResponseCase("chunk-size-not-hex", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n"
                                       b"0\r\n\r\n", "cut"),
    ResponseCase("chunk-without-crlf", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok"
                                       b"2\r\nok\r\n0\r\n\r\n", "cut"),
    ResponseCase("chunk-ext-bare-lf", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x\nok\r\n"
                                      b"0\r\n\r\n", "cut"),
    ResponseCase("closed-mid-body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", "cut"),
    ResponseCase("extra-bytes-after-body", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                                           b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle", "200"),
]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream():
    responses = {c.target: c.raw for c in RESPONSE_CASES}
    server = RecordingUpstream("127.0.0.7", responses,
                               frozenset(c.target for c in RESPONSE_CASES if c.name.startswith("closed-")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    config = {
        "sources": [static_source("zone-a", {"rec": [upstream.address]})],
        "services": [{"name": "rec", "port": 80, "outlier_detection": "off"}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "rec",
                    "retries": {"attempts": 1}}],
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("smuggling")).start()
    yield proc
    proc.stop()


def _read_status(client: Client) -> int | None:
    """The status of the gateway's answer, or None when it closed without one."""
    try:
        return client.read_response("GET").status
    except (PeerClosed, ConnectionResetError):
        return None


# -- bad requests --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_request_rejected_before_upstream(gw, upstream, case):
    lengths_before = upstream.lengths()
    requests_before = upstream.snapshot()[1]
    mark = gw.log.count()
    with gw.client(timeout=5.0) as client:
        client.send(case.raw)           # one write: the whole case is in one segment
        resp = client.read_response("GET")
        assert resp.status == case.status, (resp.status, resp.body)
        assert resp.closes
        assert resp.body.strip(), "the error body names the problem"
        assert client.wait_closed(5.0), "connection left open after a bad request"
    entry = gw.log.since(mark, 1)[0]
    assert entry["status"] == case.status and entry.get("error"), entry
    if not case.body_error:
        assert upstream.lengths() == lengths_before, "bytes of a rejected request reached the upstream"
        return
    # A streamed body: the upstream may have the head, never a complete request, and the
    # connection that carried any of it is reset by the gateway.
    assert upstream.snapshot()[1] == requests_before, "a request with a broken body reached the upstream whole"
    grown = [c for i, c in enumerate(upstream.conns)
             if len(c.data) > (lengths_before[i] if i < len(lengths_before) else 0)]
    assert upstream.wait(lambda conns: all(c.closed for c in grown)), \
        "an upstream connection that carried a broken body was not closed"


def test_body_error_after_good_chunks_resets_the_upstream_connection(gw, upstream):
    """Good chunks are streamed upstream before the bad one arrives: that connection must end."""
    head = b"POST /rec/stream HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    line = b"POST /rec/stream HTTP/1.1\r\n"
    with gw.client(timeout=5.0) as client:
        client.send(head + b"5\r\nhello\r\n")
        assert upstream.wait(lambda conns: any(line in c.data and c.data.endswith(b"5\r\nhello\r\n")
                                               for c in conns))
        client.send(b"zz\r\n")
        resp = client.read_response("POST")
        assert resp.status == 400 and resp.closes
        assert client.wait_closed(5.0)
    carrier = [c for c in upstream.conns if line in c.data]
    assert len(carrier) == 1 and carrier[0].data.endswith(b"5\r\nhello\r\n")
    assert upstream.wait(lambda conns: carrier[0].closed), "upstream connection kept after a broken body"
    assert not any(r.target == b"/rec/stream" for r in upstream.requests())
    entry = gw.log.matching(lambda e: e.get("path") == "/rec/stream")[0]
    assert entry["status"] == 400 and "chunk size" in entry["error"], entry


def test_good_request_still_forwarded_after_bad_ones(gw, upstream):
    with gw.client() as client:
        resp = client.request("POST", "/rec/after", body=b"hello")
        assert resp.status == 200 and resp.body == b"ok"
    fwd = [r for r in upstream.requests() if r.target == b"/rec/after"]
    assert len(fwd) == 1 and fwd[0].body == b"hello" and fwd[0].field(b"content-length") == [b"5"]
    assert gw.log.matching(lambda e: e.get("path") == "/rec/after")[0]["status"] == 200


# -- bad responses --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=[c.name for c in RESPONSE_CASES])
def test_bad_response_framing_502_and_upstream_connection_not_reused(gw, upstream, case):
    with gw.client(timeout=5.0) as client:
        client.send(Client.build("GET", case.target.decode()))
        if case.outcome == "502":
            resp = client.read_response("GET")
            assert resp.status == 502, (resp.status, resp.body)
        elif case.outcome == "200":
            resp = client.read_response("GET")
            assert (resp.status, resp.body) == (200, b"ok")
        else:
            # The head is valid but the body breaks: either a 502 (nothing sent yet) or a cut
            # connection that never delivers a complete response.
            try:
                resp = client.read_response("GET")
            except (PeerClosed, ConnectionResetError, ValueError):
                resp = None
            assert resp is None or resp.status == 502, (resp.status, resp.body)
            if resp is None:
                assert client.wait_closed(5.0)  # cut mid-response: the connection must end
            # A 502 sent before any byte of the bad response leaves the connection in sync.
    entry = gw.log.matching(lambda e: e.get("path") == case.target.decode())[0]
    if case.outcome != "200":
        assert entry["status"] in (200, 502) and entry.get("error"), entry
    carrier = [c for c in upstream.conns if any(r.target == case.target for r in c.requests)]
    assert len(carrier) == 1
    assert upstream.wait(lambda conns: carrier[0].closed), "upstream connection kept after a bad response"
    assert carrier[0].requests[-1].target == case.target, "the connection carried another request"
    # The next request works, on some other upstream connection.
    with gw.client(timeout=5.0) as client:
        resp = client.request("GET", f"/rec/after-{case.name}")
        assert (resp.status, resp.body) == (200, b"ok")
    after = [r for r in upstream.requests() if r.target == f"/rec/after-{case.name}".encode()]
    assert len(after) == 1 and after[0].conn != carrier[0].index


# -- the table in docs/security.md -----------------------------------------------------------------

DOC = REPO / "docs" / "security.md"
TABLE_BEGIN = "<!-- table: generated by python tests/test_security_smuggling.py --write -->"
TABLE_END = "<!-- end of generated table -->"


def security_table() -> str:
    """The markdown tables of every bad input the security tests try, with the answer."""
    import test_security_limits as limits
    out = ["### Requests with bad framing or syntax", "",
           f"{len(CASES)} requests, each sent in one write on a new connection "
           "(`tests/test_security_smuggling.py`).  Every one is answered and the connection "
           "closed; *upstream* says what the recording upstream received.  In *input*, `…` "
           "stands for `POST /rec HTTP/1.1\\r\\nHost: gw.test\\r\\n` (or the Host line alone).", ""]
    group = None
    for case in CASES:
        if case.group != group:
            group = case.group
            out += ["", f"#### {group}", "", "| case | input | answer | upstream |", "|---|---|---|---|"]
        upstream_saw = ("head and good chunks at most, never a complete request; connection reset"
                        if case.body_error else "nothing")
        shown = case.shown.replace("|", "\\|")
        out.append(f"| {case.name} | `{shown}` | {case.status}, close | {upstream_saw} |")
    out += ["", "### Responses with bad framing from an upstream", "",
            f"{len(RESPONSE_CASES)} responses; in every case that upstream connection is closed "
            "and never carries another request.", "",
            "| case | upstream sends | client gets |", "|---|---|---|"]
    answers = {"502": "502", "cut": "502, or the connection cut (head already committed)",
               "200": "the first response only; the extra bytes are dropped"}
    for rc in RESPONSE_CASES:
        shown = repr(rc.raw)[2:-1]
        shown = (shown if len(shown) <= 80 else shown[:77] + "...").replace("|", "\\|")
        out.append(f"| {rc.name} | `{shown}` | {answers[rc.outcome]} |")
    import test_path_normalization as paths
    import test_trusted_proxies as xff
    out += ["", "### Request paths", "",
            f"{len(paths.PATH_CASES)} paths through a gateway with the default `http.path` settings "
            "(`tests/test_path_normalization.py`; routes `/public/`, `/test`, `/api/v1/` rewritten to "
            "`/v2/`, and `/`).  *upstream* is the path and query the backend received; a refused "
            "path reaches no upstream.", "",
            "| input | answer | route | upstream | why |", "|---|---|---|---|---|"]
    for target, status, route, upstream, why in paths.PATH_CASES:
        shown = target.replace("|", "\\|")
        out.append(f"| `{shown}` | {status} | {route or '-'} | {f'`{upstream}`' if upstream else 'nothing'} "
                   f"| {why} |")
    out += ["", "### X-Forwarded-For and the client address", "",
            f"{len(xff.XFF_CASES)} requests through a gateway with `http.trusted_proxies: {{cidrs: "
            f"[{xff.LB}/32, 10.0.0.0/8, 2001:db8::/32]}}` (`tests/test_trusted_proxies.py`).  "
            "*client* is the access log's `client` and the X-Real-IP sent upstream; X-Forwarded-For "
            "always goes on with the peer appended.", "",
            "| peer | X-Forwarded-For | client | why |", "|---|---|---|---|"]
    for source, lines, client, why in xff.XFF_CASES:
        shown = " / ".join(f"`{v}`" for v in lines).replace("|", "\\|") or "(none)"
        out.append(f"| {source} | {shown} | {client} | {why} |")
    out += ["", "### Limits and timeouts", "",
            "`tests/test_security_limits.py`, with the small limits its gateway is configured with.", "",
            "| breach | answer | access log |", "|---|---|---|"]
    for name, what, answer, logged in limits.LIMIT_CASES:
        out.append(f"| {name}: {what} | {answer} | {logged} |")
    return "\n".join(out) + "\n"


def _doc_table() -> str:
    text = DOC.read_text()
    start = text.index(TABLE_BEGIN) + len(TABLE_BEGIN)
    return text[start:text.index(TABLE_END)].strip("\n") + "\n"


def test_security_doc_table_is_current():
    assert _doc_table() == security_table(), (
        "docs/security.md is out of date: run python tests/test_security_smuggling.py --write")


if __name__ == "__main__":
    if "--write" in sys.argv:
        text = DOC.read_text()
        start = text.index(TABLE_BEGIN) + len(TABLE_BEGIN)
        DOC.write_text(text[:start] + "\n" + security_table() + text[text.index(TABLE_END):])
    elif "--table" in sys.argv:
        sys.stdout.write(security_table())
    else:
        sys.exit("usage: python tests/test_security_smuggling.py --table | --write")
