"""HTTP/1.1 message heads and body framing (compiled): RFC 9112 parsing with the
framing rules that keep request smuggling out, and the heads the proxy writes."""
from typing import Final, final

FRAMING_NONE: Final[int]
"""No body."""
FRAMING_LENGTH: Final[int]
"""A Content-Length body."""
FRAMING_CHUNKED: Final[int]
FRAMING_UNTIL_CLOSE: Final[int]
"""The body ends when the connection does (responses only)."""
FRAMING_STREAM: Final[int]
"""Payload only, ended by its codec (an HTTP/2 stream's END_STREAM); chunked for HTTP/1.1."""

class HttpError(Exception):
    """A message that cannot be read: ``status`` is the answer (400, 413, 431, 501, 502...)."""

    status: int
    reason: str
    def __init__(self, status: int, reason: str) -> None: ...

class MessageHead:
    headers: list[tuple[bytes, bytes, bytes]]
    """(lower-case name, name, value), hop-by-hop and proxy-set fields removed; made from
    ``field_lines`` when first read.  Reading or setting it makes the list what is
    forwarded (``field_lines`` becomes None)."""
    field_lines: bytes | None
    """The fields passed on, as they are forwarded ("Name: value\r\n" each), or None once
    the list was taken to be changed."""
    minor: int
    """HTTP/1.<minor>."""
    content_length: int
    """-1 when absent."""
    chunked: bool
    streamed: bool
    """An HTTP/2 message without content-length: its body is FRAMING_STREAM."""
    keep_alive: bool
    connection: bytes | None
    upgrade: bytes | None
    """The Upgrade value when "Connection: upgrade" asks for it."""
    extra_hop: frozenset[bytes] | None
    """Names listed in Connection, dropped too."""
    head_size: int

@final
class RequestHead(MessageHead):
    method: bytes
    target: bytes
    """Path and query, as received."""
    path: bytes
    host: bytes | None
    request_id: bytes | None
    forwarded_for: bytes | None
    via: bytes | None
    expect_continue: bool
    traceparent: bytes | None
    tracestate: bytes | None
    b3: bool
    @property
    def idempotent(self) -> bool: ...
    def header(self, lname: bytes) -> bytes | None:
        """The first value of the header with this lower-case name, or None."""

@final
class ResponseHead(MessageHead):
    status: int
    reason: bytes

@final
class BodyFramer:
    """Where a body ends, fed as it arrives (chunked framing checked, not removed)."""

    mode: int
    remaining: int
    received: int
    """Bytes on the wire, framing included."""
    payload: int
    """Body bytes, without chunk framing."""
    done: bool
    def __init__(self, mode: int = ..., length: int = 0, error_status: int = 400) -> None: ...
    def reset(self, mode: int, length: int) -> None:
        """Frame a new body with this framer (no new object per message)."""
    def feed(self, data: bytes, start: int) -> int:
        """Consume ``data[start:]``; the offset where the body ends there (``len(data)`` while
        it goes on).  Raises HttpError on bad framing."""

def find_head_end(data: bytes, start: int) -> int:
    """The offset just past the blank line ending a head, or -1; ``start``: where to resume."""
def parse_request(data: bytes, end: int, max_headers: int = 100) -> RequestHead: ...
def request_from_fields(method: bytes, path: bytes, authority: bytes,
                        fields: list[tuple[bytes, bytes]], max_headers: int = 100) -> RequestHead:
    """An HTTP/2 request's head, its fields checked as an HTTP/1.1 head's are."""
def parse_response(data: bytes, end: int, max_headers: int = 100) -> ResponseHead: ...
def response_framing(head: ResponseHead, request_method: bytes) -> int:
    """How the response body is framed (RFC 9112 6.3), given the request's method."""
def build_request_head(head: RequestHead, target: bytes, host: bytes, client_ip: bytes,
                       request_id: bytes, via: bytes, upgrade: bool, proto: bytes = ...,
                       real_ip: bytes | None = ..., trace_fields: bytes | None = ...) -> bytes: ...
def request_fields(head: RequestHead, scheme: bytes, target: bytes, host: bytes, client_ip: bytes,
                   request_id: bytes, via: bytes, proto: bytes = ..., real_ip: bytes | None = ...,
                   trace_fields: bytes | None = ...) -> list[tuple[bytes, bytes]]:
    """The HTTP/2 fields of the request sent upstream (build_request_head's, as fields)."""
def build_response_head(head: ResponseHead, framing: int, keep_alive: bool) -> bytes: ...
def build_interim_head(head: ResponseHead) -> bytes: ...
def build_error_response(status: int, message: str, request_id: bytes, keep_alive: bool,
                         location: bytes | None = ..., with_body: bool = ...,
                         extra_header: bytes | None = ...) -> bytes:
    """The gateway's own answer: a short text body naming the reason and the request id."""

class Dechunker:
    """The payload (and trailer fields) of a chunked body already validated; C interface only."""
