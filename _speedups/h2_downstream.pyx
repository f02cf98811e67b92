# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""An HTTP/2 client connection: h2c with prior knowledge on the plain listener, or ALPN h2
on the TLS one (``Http1Connection`` hands the connection over when it sees either).

Each stream is an ``Exchange``, the same state machine an HTTP/1.1 request runs, so routing,
balancing, retries, passive health and the access log are the same.  The exchange passes
messages (heads as field lists, body payload, trailers); this codec frames them:

* a request head's fields go through the checks an HTTP/1.1 head's do
  (``http.request_from_fields``) and stay a list; a body without content-length is
  ``streamed``: payload, ended (with the client's trailers) by END_STREAM;
* a response head becomes HTTP/2 fields; a chunked body (an HTTP/1.1 upstream's) is
  de-chunked into DATA frames, any other body is DATA as it comes; the upstream's trailers
  (an HTTP/2 upstream's, or a chunked body's) end the stream;
* the gateway's own errors on a gRPC call are gRPC answers (grpc-status 14 UNAVAILABLE,
  4 DEADLINE_EXCEEDED, ...), never a text page a gRPC client cannot read;
* WebSocket over HTTP/2 (RFC 8441): the session advertises SETTINGS_ENABLE_CONNECT_PROTOCOL;
  an extended CONNECT (``:protocol websocket``) becomes the HTTP/1.1 Upgrade request it
  stands for (GET, a fresh Sec-WebSocket-Key unless the client sent one), the upstream's
  101 becomes ``:status 200``
  (its Sec-WebSocket-Accept checked), and the stream is then a tunnel: DATA payload to the
  upstream raw, the upstream's bytes as DATA, END_STREAM as the half-close either way, a
  reset for a reset.  A plain CONNECT is answered 501.

Flow control is nghttp2's windows, opened (``consume``) only once the exchange took the
bytes and no pause holds the stream; response bytes queue per stream up to the session's
``queue_limit``, past which the stream's upstream stops being read until the queue drains.
Output is written once per read or, for events from upstreams, once per loop turn.
"""
import base64
import hashlib
import logging
import os

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

from _speedups.clock cimport monotonic
from _speedups.context cimport Context, Port, earliest
from _speedups.exchange cimport new_exchange
from _speedups.http cimport MODE_CHUNKED, Dechunker, decimal, digits_value, request_from_fields, tail
from _speedups.reactor cimport Reactor
from _speedups.stats cimport ST_4XX, ST_5XX, ST_CONNECTIONS, ST_INTERNAL_ERRORS, ST_REFUSED
from _speedups.h2 import CONNECT_ERROR, INTERNAL_ERROR, NO_ERROR, REFUSED_STREAM, H2Error
from _speedups.http import HttpError

cdef object _log = logging.getLogger("gateway.proxy")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

cdef bytes EMPTY = b""
# Fields that frame, route or control a message: never taken from a client's trailers.
cdef frozenset NOT_TRAILERS = frozenset((b"content-length", b"transfer-encoding", b"host",
                                         b"connection", b"keep-alive", b"proxy-connection", b"te",
                                         b"trailer", b"upgrade", b"content-type", b"authorization"))
cdef bytes GRPC_CONTENT_TYPE = b"application/grpc"
cdef long long STREAM_WINDOW = 65535     # a client stream's receive window (SETTINGS default)
cdef bytes WEBSOCKET = b"websocket"
cdef bytes WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"   # RFC 6455 §1.3

# gRPC status codes for the gateway's own answers (HTTP status -> gRPC, after gRPC's
# "HTTP to gRPC status code mapping"; 504 is the deadline that passed here).
cdef dict GRPC_CODE = {400: 13, 401: 16, 403: 7, 404: 12, 408: 4, 413: 8, 429: 14, 431: 8,
                       500: 13, 502: 14, 503: 14, 504: 4}
cdef int GRPC_UNKNOWN = 2
cdef int GRPC_UNAVAILABLE = 14


@cython.freelist(16)
cdef class H2Stream:
    """One stream: its exchange, and what the translation keeps between events (made by
    ``new_stream``; its fields start as 0, False or None)."""


cdef class _Events(H2Handler):
    """A connection's session events, passed on as C calls (H2Connection's base is Downstream)."""
    cdef H2Connection conn

    def __cinit__(self, H2Connection conn):
        self.conn = conn

    cdef void h2_headers(self, int32_t stream_id, list headers, bint end_stream) except *:
        self.conn.h2_headers(stream_id, headers, end_stream)

    cdef void h2_data(self, int32_t stream_id, bytes data) except *:
        self.conn.h2_data(stream_id, data)

    cdef void h2_end(self, int32_t stream_id) except *:
        self.conn.h2_end(stream_id)

    cdef void h2_trailers(self, int32_t stream_id, list headers) except *:
        self.conn.h2_trailers(stream_id, headers)

    cdef void h2_close(self, int32_t stream_id, uint32_t error_code) except *:
        self.conn.h2_close(stream_id, error_code)

    cdef void h2_drained(self, int32_t stream_id) except *:
        self.conn.h2_drained(stream_id)

    cdef void h2_too_large(self, int32_t stream_id) except *:
        self.conn.h2_too_large(stream_id)


cdef class H2Connection(Downstream):
    """One HTTP/2 client connection (asyncio protocol)."""

    def __init__(self, Context ctx, bytes proto=b"http", Port port=None, bytes sni=None):
        self.ctx = ctx
        self.proto = proto
        self.port = port if port is not None else ctx.port
        self.sni = sni                      # TLS: the server name (handed over by HTTP/1.1's ALPN)
        self.keep_alive = True
        self.streams = {}
        self.started_streams = 0
        self.write_paused = False
        self.flush_scheduled = False
        self.goaway_sent = False
        self.idle_deadline = 0
        self.session = H2Session(_Events(self), True, max_concurrent_streams=ctx.max_concurrent_streams,
                                 max_header_list_size=ctx.max_head_size, connect_protocol=True)
        # Room for every stream's window at once: a stream paused by a slow upstream keeps
        # its window shut, and with the default connection window (64 KiB) it would shut the
        # connection's too, stalling every other upload on it.  What is held stays bounded
        # by the stream windows.
        self.session.set_connection_window(min(ctx.max_concurrent_streams * STREAM_WINDOW, 0x7fffffff))

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport):
        """A listener made this connection for HTTP/2 directly (it counts it here)."""
        cdef Context ctx = self.ctx
        peer = transport.get_extra_info("peername")
        if len(ctx.connections) >= ctx.max_connections:
            ctx.counters[ST_REFUSED] += 1
            _log.warning("connection refused: limits.max_connections reached (%d)", ctx.max_connections)
            self.closed = True
            transport.abort()
            return
        ctx.counters[ST_CONNECTIONS] += 1
        self.take_over(transport, peer[0] if peer else "-", EMPTY)

    cpdef take_over(self, object transport, str client, bytes received):
        """Start on ``transport`` (counted already), with ``received`` its first bytes."""
        self.use_transport(transport)
        self.client_bytes = client.encode()
        self.ctx.connections.add(self)
        self.idle_from(monotonic())
        self.flush()                        # the server's SETTINGS
        if received:
            self.data_received(received)
        if self.ctx.draining:
            self.go_away()                  # came while shutting down: drain_connections is past

    def data_received(self, bytes data):
        self.received(data)

    cdef void received(self, bytes data) except *:
        if self.closed:
            return
        try:
            self.session.receive(data)
        except H2Error as err:
            self.protocol_error(str(err))
            return
        except Exception as exc:
            self.internal_error(exc)
            return
        self.flush()

    def eof_received(self):
        self.close()
        return False

    def connection_lost(self, exc):
        self.ctx.forget(self)
        self.closed = True
        self.end_streams()

    def pause_writing(self):
        self.write_paused = True            # nghttp2 keeps the frames until the client reads

    def resume_writing(self):
        self.write_paused = False
        self.flush()

    # -- output ---------------------------------------------------------------------

    cdef void flush(self):
        """Write what the session has to send now; close once drained and done."""
        self.flush_scheduled = False
        if self.closed or self.write_paused:
            return
        try:
            out = self.session.output()
        except H2Error as err:
            self.protocol_error(str(err))
            return
        if out:
            self.send(out)
        if not self.session.want_write() and (self.goaway_sent and not self.streams
                                              or not self.session.want_read()):
            self.close()    # nghttp2 ends the session by itself after some connection errors

    cdef void schedule_flush(self):
        """Once the events in hand are handled: one write for every frame they made."""
        cdef Reactor reactor
        if not self.flush_scheduled and not self.closed:
            self.flush_scheduled = True
            reactor = self.ctx.reactor
            if reactor is None or not reactor.defer(self):
                self.ctx.loop.call_soon(self.flush_later)

    cdef void deferred(self) except *:
        self.flush()

    def flush_later(self):
        self.flush()

    cdef void protocol_error(self, str reason):
        """The client broke the protocol or a limit: GOAWAY (nghttp2 made it), then close."""
        cdef Context ctx = self.ctx
        ctx.counters[ST_4XX] += 1
        if ctx.log is not None:
            ctx.log.error_line(self.client_bytes, 400, f"HTTP/2: {reason}")
        try:
            out = self.session.output()
        except H2Error:
            out = EMPTY
        if out and not self.closed:
            self.transport.write(out)
        self.close()

    # -- the session's events (h2.H2Handler) -------------------------------------------

    cdef void h2_headers(self, int32_t stream_id, list headers, bint end_stream) except *:
        cdef H2Stream stream = self.new_stream(stream_id)
        cdef Exchange ex
        cdef RequestHead head
        if stream is None:
            return
        try:
            head = self.request_head(stream, headers, end_stream)
        except HttpError as err:
            self.refuse(stream, err.status, err.reason)
            return
        ex = stream.ex = new_exchange(self.ctx, self)
        ex.stream_id, ex.stream_key = stream_id, stream.key
        ex.client_timeout = stream.client_timeout
        stream.ended_in = end_stream
        if not end_stream and not stream.tunnel:
            stream.body_deadline = monotonic() + self.ctx.body_idle_timeout
            self.ctx.wake_at(self, stream.body_deadline)
        ex.start(head, not end_stream and not stream.tunnel, head.head_size)

    cdef void h2_too_large(self, int32_t stream_id) except *:
        """A request head past limits.max_request_head once decoded (an HPACK bomb, say)."""
        cdef H2Stream stream = self.new_stream(stream_id)
        if stream is not None:
            self.refuse(stream, 431, "request head too large")

    cdef H2Stream new_stream(self, int stream_id):
        """The stream for a request head, or None: refused, past the advertised limit (h2.pyx)."""
        cdef H2Stream stream
        if len(self.streams) >= self.ctx.max_concurrent_streams:
            self.session.reset(stream_id, REFUSED_STREAM)
            return None
        stream = H2Stream.__new__(H2Stream)    # no Python call: one per stream
        stream.id = stream_id
        stream.key = self.session.key(stream_id)
        self.streams[stream.key] = stream
        self.started_streams += 1
        if self.started_streams >= self.ctx.max_requests_per_connection or self.ctx.draining:
            self.go_away()
        return stream

    cdef RequestHead request_head(self, H2Stream stream, list headers, bint end_stream):
        """The request's head (RFC 9113 8.3.1), its fields checked as an HTTP/1.1 head's
        (``http.request_from_fields``); an extended CONNECT's is a WebSocket Upgrade request
        (RFC 8441 §5)."""
        cdef bytes method = None, path = None, authority = None, protocol = None, name, value
        cdef list fields = []
        cdef list cookies = None
        cdef bint has_length = False, has_version = False
        cdef RequestHead head
        cdef tuple field
        for field in headers:
            name, value = <bytes>field[0], <bytes>field[1]
            if name[0] == 58:               # ":" (nghttp2 has them all come first)
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                elif name == b":protocol":
                    protocol = value
                continue
            if protocol is not None:        # an extended CONNECT: no body, the key sent apart
                if name == b"content-length":
                    continue
                if name == b"sec-websocket-key":
                    stream.ws_key = value   # some clients send one anyway (and want the Accept)
                    stream.client_key = True
                    continue
                if name == b"sec-websocket-version":
                    has_version = True
            if name == b"cookie":           # may be split over fields in HTTP/2 (8.2.3)
                if cookies is None:
                    cookies = []
                cookies.append(value)
                continue
            if name == b"host":
                if authority is None:
                    authority = value
                continue
            if name == b"content-length":
                has_length = True
            elif name == b"content-type" and value.startswith(GRPC_CONTENT_TYPE):
                stream.grpc = True
            elif name == b"grpc-timeout":
                stream.client_timeout = _grpc_timeout(value)
            fields.append(field)            # (name, value) as received
        if method == b"CONNECT":
            if protocol is None:
                raise HttpError(501, "CONNECT is not supported over HTTP/2")
            if protocol.lower() != WEBSOCKET:
                raise HttpError(501, f"extended CONNECT for {protocol.decode('latin-1')!r} is not supported")
            method = b"GET"
            stream.tunnel = True
            if stream.ws_key is None:
                stream.ws_key = base64.b64encode(os.urandom(16))
            fields += ((b"connection", b"upgrade"), (b"upgrade", b"websocket"),
                       (b"sec-websocket-key", stream.ws_key))
            if not has_version:
                fields.append((b"sec-websocket-version", b"13"))
        elif protocol is not None:
            raise HttpError(400, ":protocol without CONNECT")
        if path is None or method is None:
            raise HttpError(400, "missing :method or :path")
        if authority is None:
            raise HttpError(400, "missing :authority")
        if len(path) > self.ctx.max_uri:
            raise HttpError(414, "request target too long")
        if cookies is not None:
            fields.append((b"cookie", b"; ".join(cookies)))
        head = request_from_fields(method, path, authority, fields, self.ctx.max_headers)
        if head.head_size > self.ctx.max_head_size:
            raise HttpError(431, "request head too large")
        # A body of unknown length is payload the upstream's codec frames (MODE_STREAM).
        head.streamed = not end_stream and not has_length and not stream.tunnel
        return head

    cdef void refuse(self, H2Stream stream, int status, str reason):
        """A request that cannot be read as one: answered on its stream, the others go on."""
        cdef Context ctx = self.ctx
        ctx.counters[ST_4XX if status < 500 else ST_5XX] += 1
        if ctx.log is not None:
            ctx.log.error_line(self.client_bytes, status, reason)
        stream.finished = True
        self.submit_error(stream, status, reason, b"-", None, None, True)
        self.schedule_flush()

    cdef void h2_data(self, int32_t stream_id, bytes data) except *:
        cdef H2Stream stream = self.streams.get(self.session.key(stream_id))
        cdef Exchange ex
        cdef Context ctx = self.ctx
        cdef Py_ssize_t n = len(data)
        if stream is None or stream.finished or stream.ex is None:
            self.session.consume(stream_id, n)  # nobody reads it: keep the windows open
            return
        ex = stream.ex
        if stream.tunnel:
            self.tunnel_in(stream, ex, data)
            return
        stream.payload_in += n
        ex.bytes_received += n
        if ctx.max_body and stream.payload_in > ctx.max_body:
            self.session.consume(stream_id, n)
            ex.fail(413, f"request body larger than limits.max_body ({ctx.max_body} bytes)")
            return
        stream.body_deadline = monotonic() + ctx.body_idle_timeout
        ex.receive_body(data)
        if stream.read_paused:
            stream.unconsumed += n
        else:
            self.session.consume(stream_id, n)

    cdef void h2_end(self, int32_t stream_id) except *:
        cdef H2Stream stream = self.streams.get(self.session.key(stream_id))
        if stream is None or stream.finished or stream.ex is None or stream.ended_in:
            return
        stream.ended_in = True
        if stream.tunnel:                   # a half-close, passed on once the tunnel is open
            if stream.tunnel_open and not stream.ex.tunnel_eof():
                stream.ex.client_gone()     # the upstream cannot half-close (TLS): it ends
            return
        stream.body_deadline = 0
        stream.ex.body_received()

    cdef void h2_trailers(self, int32_t stream_id, list headers) except *:
        """The client's trailers (h2_end follows): sent with the end of a body of unknown
        length (as trailers to an HTTP/2 upstream: client-streaming gRPC; in the last chunk
        to an HTTP/1.1 one), dropped after a body of known length, which HTTP/1.1 cannot
        follow with any.  Fields that frame or route a message are not trailers (RFC 9110
        6.5.1) and are dropped; nghttp2 has checked names and values."""
        cdef H2Stream stream = self.streams.get(self.session.key(stream_id))
        if stream is None or stream.finished or stream.ex is None or not stream.ex.head.streamed:
            return
        stream.ex.receive_trailers([(name, value) for name, value in headers
                                    if name[:1] != b":" and name not in NOT_TRAILERS])

    cdef void h2_close(self, int32_t stream_id, uint32_t error_code) except *:
        cdef H2Stream stream = self.streams.pop(self.session.key(stream_id), None)
        if stream is not None and not stream.finished and stream.ex is not None:
            stream.finished = True
            stream.ex.client_gone()         # reset by the client (or the connection ended)
        if not self.streams:
            if self.goaway_sent:
                self.schedule_flush()       # which closes the connection once written
            else:
                self.idle_from(monotonic())

    cdef void h2_drained(self, int32_t stream_id) except *:
        cdef H2Stream stream = self.streams.get(self.session.key(stream_id))
        if stream is not None and stream.out_paused:
            stream.out_paused = False
            if stream.ex is not None:
                stream.ex.client_write_paused(False)

    # -- the response (Downstream) -------------------------------------------------------

    cdef inline H2Stream stream_of(self, Exchange ex):
        return self.streams.get(ex.stream_key)

    cdef bint send_interim(self, Exchange ex, ResponseHead head) except -1:
        """A 1xx (100 Continue to a client that sent Expect, 103 Early Hints) goes on."""
        cdef H2Stream stream = self.stream_of(ex)
        if stream is not None and not stream.finished and not stream.submitted:
            self.session.submit_informational(
                stream.id,
                [(b":status", decimal(head.status))] + [(n, v) for n, _, v in head.peek_fields()])
            self.schedule_flush()
        return True

    cdef bint send_head(self, Exchange ex, ResponseHead head, int framing) except -1:
        cdef H2Stream stream = self.stream_of(ex)
        cdef list fields
        if stream is None:
            return True
        fields = [(b":status", decimal(head.status))]
        if head.field_lines is not None and not stream.grpc:
            stream.head_lines = head.field_lines    # as they came: nothing split
        else:
            for lname, _, value in head.peek_fields():
                fields.append((lname, value))
                if stream.grpc and lname == b"grpc-status":
                    ex.grpc_status = _status_int(value)     # trailers-only answer
        if framing == MODE_CHUNKED:
            stream.dechunk = Dechunker()
        elif head.content_length >= 0:
            fields.append((b"content-length", decimal(head.content_length)))
        stream.head_out = fields            # submitted with the first body bytes, or at the end
        return True

    cdef bint send_body(self, Exchange ex, bytes data, Py_ssize_t start,
                        long long holdable) except -1:
        cdef H2Stream stream = self.stream_of(ex)
        if stream is None or stream.finished:
            return True
        if start:
            data = tail(data, start)
        if stream.dechunk is not None and data:
            data = stream.dechunk.feed(data)
            if stream.dechunk.done and stream.dechunk.trailers and stream.trailers is None:
                stream.trailers = stream.dechunk.trailers   # an HTTP/1.1 upstream's trailers
        if not data:
            return True
        self.submit_head(stream, False)
        if self.session.send_data(stream.id, data) > self.session.queue_limit and not stream.out_paused:
            stream.out_paused = True        # the client reads slowly: stop reading upstream
            ex.client_write_paused(True)
        self.schedule_flush()
        return True

    cdef bint send_trailers(self, Exchange ex, list headers) except -1:
        cdef H2Stream stream = self.stream_of(ex)
        if stream is not None:
            stream.trailers = headers
            for name, value in headers:
                if name == b"grpc-status":
                    ex.grpc_status = _status_int(value)
        return True

    cdef bint unsend(self, Exchange ex) except -1:
        cdef H2Stream stream = self.stream_of(ex)
        if stream is None or stream.submitted:
            return False
        stream.head_out = stream.head_lines = None
        stream.dechunk = None
        return True

    cdef bint send_error(self, Exchange ex, int status, str message, bytes location,
                         bytes extra_header) except -1:
        cdef H2Stream stream = self.stream_of(ex)
        if stream is None:
            return True
        if stream.grpc:
            ex.grpc_status = GRPC_CODE.get(status, GRPC_UNKNOWN)
        ex.bytes_sent = self.submit_error(stream, status, message, ex.request_id, location,
                                          extra_header, ex.head is None or ex.head.method != b"HEAD")
        stream.finished = True
        self.schedule_flush()
        return True

    cdef Py_ssize_t submit_error(self, H2Stream stream, int status, str message, bytes request_id,
                                 bytes location, bytes extra_header, bint with_body) except -1:
        """The gateway's own answer: text for HTTP, trailers-only grpc-status for gRPC calls."""
        cdef bytes body = message.encode() + b"\n" if message else b""
        cdef list fields
        if stream.grpc:
            fields = [(b":status", b"200"), (b"content-type", GRPC_CONTENT_TYPE),
                      (b"grpc-status", b"%d" % GRPC_CODE.get(status, GRPC_UNKNOWN)),
                      (b"grpc-message", _percent_encode(message.encode())),
                      (b"x-request-id", request_id or b"-")]
            self.session.submit_response(stream.id, fields, True)
            stream.submitted = True
            return 0
        fields = [(b":status", decimal(status)), (b"content-length", decimal(len(body))),
                  (b"x-request-id", request_id or b"-"), (b"server", b"gateway")]
        if body:
            fields.insert(1, (b"content-type", b"text/plain; charset=utf-8"))
        if location is not None:
            fields.append((b"location", location))
        if extra_header is not None:
            for line in extra_header.split(b"\r\n"):
                name, _, value = line.partition(b": ")
                fields.append((name.lower(), value))
        with_body = with_body and bool(body)
        self.session.submit_response(stream.id, fields, not with_body)
        stream.submitted = True
        if with_body:
            self.session.send_data(stream.id, body, True)
            return len(body)
        return 0

    cdef void submit_head(self, H2Stream stream, bint end_stream):
        if stream.head_out is not None:
            self.session.submit_response(stream.id, stream.head_out, end_stream, stream.head_lines)
            stream.head_out = stream.head_lines = None
            stream.submitted = True

    cdef bint open_tunnel(self, Exchange ex, ResponseHead head) except -1:
        """The upstream's 101 to an extended CONNECT: :status 200 (RFC 8441 §5) with its
        fields (Sec-WebSocket-Protocol, -Extensions, ...); the Accept is checked here against
        the key sent, and passed back only to a client that sent that key itself.  Then the
        DATA held meanwhile goes up."""
        cdef H2Stream stream = self.stream_of(ex)
        cdef list fields = [(b":status", b"200")]
        cdef bytes accept = None, data
        if stream is None:
            ex.client_gone()
            return False
        if not stream.tunnel:               # (only an extended CONNECT asks for an upgrade)
            ex.bad_response("101 Switching Protocols to a request that asked for no upgrade")
            return False
        for lname, _, value in head.peek_fields():
            if lname == b"sec-websocket-accept":
                accept = value
                if stream.client_key:
                    fields.append((lname, value))
            else:
                fields.append((lname, value))
        if accept != base64.b64encode(hashlib.sha1(stream.ws_key + WS_GUID).digest()):
            ex.bad_response("a 101 without the Sec-WebSocket-Accept of the key sent")
            return False
        ex.status = 200                     # what the client was answered
        self.session.submit_response(stream.id, fields, False)
        stream.submitted = True
        stream.tunnel_open = True
        early, stream.early = stream.early, None
        if early is not None:
            for data in early:
                ex.tunnel_in(data)
            if not stream.read_paused:
                self.session.consume(stream.id, stream.unconsumed)
                stream.unconsumed = 0
        self.schedule_flush()
        if stream.ended_in and not ex.tunnel_eof():
            ex.client_gone()
        return True

    cdef bint tunnel_data(self, Exchange ex, bytes data) except -1:
        """The upstream's bytes: DATA, as the client's window allows; past the queue limit
        the upstream is not read until the queue drains (h2_drained)."""
        cdef H2Stream stream = self.stream_of(ex)
        if stream is None or stream.finished or not data:
            return True
        if self.session.send_data(stream.id, data) > self.session.queue_limit and not stream.out_paused:
            stream.out_paused = True
            ex.client_write_paused(True)
        self.schedule_flush()
        return True

    cdef void tunnel_in(self, H2Stream stream, Exchange ex, bytes data):
        """The client's DATA on a tunnel: raw to the upstream, its window reopened once
        written (not while the upstream's buffer is full); before the 101, held."""
        cdef Py_ssize_t n = len(data)
        if not stream.tunnel_open:
            if stream.early is None:
                stream.early = []
            stream.early.append(data)       # at most the stream's window: it is not consumed
            stream.unconsumed += n
            return
        ex.tunnel_in(data)
        if stream.read_paused:
            stream.unconsumed += n
        else:
            self.session.consume(stream.id, n)

    cdef void end_tunnel(self, H2Stream stream, Exchange ex):
        """The upstream ended the tunnel: END_STREAM after what it sent; a reset of its
        connection is a reset of the stream (CONNECT_ERROR, RFC 9113 8.5)."""
        stream.finished = True
        if ex.error is None:
            self.session.send_data(stream.id, EMPTY, True)
        else:
            self.session.reset(stream.id, CONNECT_ERROR)
        self.schedule_flush()

    cdef void pause_body(self, Exchange ex, int reason):
        cdef H2Stream stream = self.stream_of(ex)
        if stream is not None:
            stream.read_paused |= reason    # its window stays shut: the client stops sending

    cdef void resume_body(self, Exchange ex, int reason):
        cdef H2Stream stream = self.stream_of(ex)
        if stream is None or stream.read_paused == 0:
            return
        stream.read_paused &= ~reason
        if stream.read_paused == 0 and stream.unconsumed and (stream.tunnel_open or not stream.tunnel):
            self.session.consume(stream.id, stream.unconsumed)
            stream.unconsumed = 0
            self.schedule_flush()

    cdef void exchange_done(self, Exchange ex, bint completed):
        """The exchange is over: end its stream (a clean end only for a complete response)."""
        cdef H2Stream stream = self.stream_of(ex)
        if stream is None or self.closed:
            return
        if stream.unconsumed:               # what a pause held back: the connection's window
            self.session.consume(stream.id, stream.unconsumed)
            stream.unconsumed = 0
            stream.early = None
        if stream.tunnel_open and not stream.finished:
            self.end_tunnel(stream, ex)
            return
        if stream.finished:                 # answered by send_error, or aborted
            self.schedule_flush()
            return
        if not completed:
            self.end_abruptly(stream, ex)
            return
        stream.finished = True
        if stream.head_out is not None:
            self.submit_head(stream, stream.trailers is None)
            if stream.trailers is not None:
                self.session.send_trailers(stream.id, stream.trailers)
        elif stream.trailers is not None:
            self.session.send_trailers(stream.id, stream.trailers)
        else:
            self.session.send_data(stream.id, EMPTY, True)
        self.schedule_flush()

    cdef void abort_exchange(self, Exchange ex, bint reset):
        cdef H2Stream stream = self.stream_of(ex)
        if stream is not None and not stream.finished and not self.closed:
            self.end_abruptly(stream, ex)

    cdef void end_abruptly(self, H2Stream stream, Exchange ex):
        """The response cannot be completed: a gRPC call ends UNAVAILABLE (trailers, or a
        trailers-only answer when nothing was sent), any other request is reset."""
        stream.finished = True
        if stream.grpc:
            ex.grpc_status = GRPC_UNAVAILABLE
            trailers = [(b"grpc-status", b"14"),
                        (b"grpc-message", _percent_encode((ex.error or "upstream failed").encode()))]
            if stream.submitted:
                self.session.send_trailers(stream.id, trailers)
            else:
                self.session.submit_response(
                    stream.id, [(b":status", b"200"), (b"content-type", GRPC_CONTENT_TYPE)] + trailers, True)
                stream.submitted = True
        else:
            self.session.reset(stream.id, INTERNAL_ERROR)
        self.schedule_flush()

    # -- the connection (Connection) ------------------------------------------------------

    cdef void go_away(self):
        """No new streams (a drain, a reload, or its request limit); those open run to their end."""
        if not self.goaway_sent and not self.closed:
            self.goaway_sent = True
            self.session.goaway(NO_ERROR)
            self.schedule_flush()

    cdef void idle_from(self, double now):
        """No stream open: the connection goes away after timeouts.downstream_idle without one."""
        self.idle_deadline = now + self.ctx.idle_timeout
        self.ctx.wake_at(self, self.idle_deadline)

    cdef double check_deadlines(self, double now):
        cdef H2Stream stream
        cdef double due = 0
        if self.closed:
            return 0
        if not self.streams:
            if now < self.idle_deadline:
                return self.idle_deadline
            self.go_away()
            return 0
        for stream in list(self.streams.values()):
            if stream.finished or stream.ex is None:
                continue
            if stream.ex.check_deadlines(now):
                pass
            elif stream.body_deadline and now >= stream.body_deadline and not stream.ended_in:
                stream.body_deadline = 0
                stream.ex.fail(408, "timed out reading the request body")
            if stream.ex is not None and not stream.finished:
                due = earliest(due, stream.ex.next_deadline())
                if stream.body_deadline and not stream.ended_in:
                    due = earliest(due, stream.body_deadline)
        if not self.streams and not self.closed:
            due = earliest(due, self.idle_deadline)
        return due

    cdef bint is_idle(self):
        return not self.streams

    cdef void drain(self, double deadline):
        self.go_away()                      # idle or not: no new streams

    cdef int redispatch(self, Service service, set gone) except -1:
        cdef H2Stream stream
        cdef int moved = 0
        for stream in list(self.streams.values()):
            if not stream.finished and stream.ex is not None:
                moved += stream.ex.redispatch_from(service, gone)
        return moved

    cdef void end_streams(self):
        """The connection is gone: every exchange still running ends with it."""
        cdef H2Stream stream
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if not stream.finished and stream.ex is not None:
                stream.finished = True
                stream.ex.client_gone()

    cpdef close(self):
        if not self.closed:
            self.closed = True
            self.ctx.forget(self)
            if self.transport is not None:
                self.transport.close()
        self.end_streams()

    cpdef internal_error(self, object exc):
        _log.error("internal error on the HTTP/2 request path", exc_info=exc)
        self.ctx.counters[ST_INTERNAL_ERRORS] += 1
        if not self.closed:
            try:
                self.session.goaway(INTERNAL_ERROR)
                out = self.session.output()
                if out:
                    self.transport.write(out)
            except Exception:
                pass
        self.close()



cdef int _status_int(bytes value):
    cdef long long status = digits_value(value, 3)
    return status if status >= 0 else GRPC_UNKNOWN


cdef double _grpc_timeout(bytes value):
    """grpc-timeout ("100m", "5S", at most 8 digits and a unit) in seconds; 0 when malformed."""
    cdef const char *text = PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value), i
    cdef double unit
    cdef long long digits = 0
    if not 1 < n <= 9:
        return 0
    unit = _timeout_unit(text[n - 1])
    for i in range(n - 1):
        if not c'0' <= text[i] <= c'9':
            return 0
        digits = digits * 10 + (text[i] - c'0')
    return digits * unit


cdef inline double _timeout_unit(char unit):
    """Seconds per grpc-timeout unit (hours, minutes, seconds, milli-, micro-, nanoseconds)."""
    if unit == c'H':
        return 3600.0
    if unit == c'M':
        return 60.0
    if unit == c'S':
        return 1.0
    if unit == c'm':
        return 1e-3
    if unit == c'u':
        return 1e-6
    if unit == c'n':
        return 1e-9
    return 0


cdef bytes _percent_encode(bytes text):
    """grpc-message: printable ASCII but '%' as is, the rest %XX (gRPC over HTTP/2)."""
    cdef unsigned char c
    for c in text:
        if c < 0x20 or c > 0x7e or c == 0x25:
            break
    else:
        return text
    return b"".join([bytes((c,)) if 0x20 <= c <= 0x7e and c != 0x25 else b"%%%02X" % c for c in text])
