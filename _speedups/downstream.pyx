# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""An HTTP/1.1 client connection: reading request heads and bodies (limits, pipelining,
flow control), writing responses, keep-alive and its deadlines.

One request is in flight per connection; pipelined requests wait in the buffer and are
answered in order.  Each request is an ``Exchange``, one object reused for the next
request (no allocation per request); it answers through the ``Downstream`` methods here.
"""
import logging

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy

from _speedups.clock cimport monotonic
from _speedups.context cimport CLEARTEXT_H2C, CLEARTEXT_HTTP1, Context, Port, earliest
from _speedups.exchange cimport PAUSE_PENDING, PAUSE_PIPELINE, PAUSE_UPSTREAM_FULL, new_exchange
from _speedups.http cimport (
    MODE_CHUNKED, MODE_LENGTH, MODE_NONE, MODE_STREAM, MODE_UNTIL_CLOSE, Dechunker, ResponseHead,
    build_error_response, build_interim_head, build_response_head, find_head_end, parse_request, tail)
from _speedups.service cimport Service
from _speedups.http import HttpError
from _speedups.h2_downstream import PREFACE, H2Connection
from _speedups.stats cimport ST_4XX, ST_5XX, ST_CONNECTIONS, ST_INTERNAL_ERRORS, ST_REFUSED

cdef object _log = logging.getLogger("gateway.proxy")
cdef Py_ssize_t H2_REQUEST_LINE = 16      # "PRI * HTTP/2.0\r\n": no HTTP/1.1 request starts so

cdef enum:
    PIPELINE_LIMIT = 65536      # pipelined bytes buffered before reading pauses
    COALESCE_LIMIT = 16384      # body bytes copied to join the head in one write
    HOLD_LIMIT = 65536          # a sized response this small is written whole, in one write

cdef bytes EMPTY = b""


cdef bytes _joined(bytes head, bytes data, Py_ssize_t start):
    """``head + data[start:]``, made once."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(head), m = PyBytes_GET_SIZE(data) - start
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + m)
    memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(head), n)
    memcpy(PyBytes_AS_STRING(out) + n, PyBytes_AS_STRING(data) + start, m)
    return out


cdef object _rest(bytes data, Py_ssize_t start):
    """``data[start:]`` to write: a view when it is large (the transport copies nothing)."""
    if start == 0:
        return data
    if PyBytes_GET_SIZE(data) - start > COALESCE_LIMIT:
        return memoryview(data)[start:]
    return tail(data, start)


cdef bytes CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
cdef bytes LAST_CHUNK = b"0\r\n"
cdef bytes CRLF = b"\r\n"


cdef class Http1Connection(Downstream):
    """One client connection (asyncio protocol)."""

    def __init__(self, Context ctx, bytes proto=b"http", Port port=None):
        self.ctx = ctx
        self.proto = proto
        self.port = port if port is not None else ctx.port
        self.state = R_HEAD
        self.buf = EMPTY
        self.scan_from = 0
        self.read_paused = 0
        self.requests_served = 0
        self.deadline_kind = D_NONE
        self.client_eof = False
        self.ex = new_exchange(ctx, self)
        self.req_framer = BodyFramer(MODE_NONE, 0, 400)

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport):
        cdef Context ctx = self.ctx
        self.use_transport(transport)
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else "-"
        self.client_bytes = self.client.encode()
        if len(ctx.connections) >= ctx.max_connections:
            # Over the limit: close at once rather than queue work we cannot bound.
            ctx.counters[ST_REFUSED] += 1
            _log.warning("connection refused: limits.max_connections reached (%d)", ctx.max_connections)
            if ctx.log is not None:
                ctx.log.error_line(self.client_bytes, 0,
                                   "connection refused: limits.max_connections reached")
            self.set_closed()
            transport.abort()
            return
        ctx.connections.add(self)
        ctx.counters[ST_CONNECTIONS] += 1
        self.set_deadline(D_IDLE, ctx.idle_timeout)
        if self.proto == b"https":
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                # Recorded by the SNI callback (gateway.tls.ServerTls) for the 421 check.
                self.sni = getattr(ssl_object, "gateway_sni", None)
                if ssl_object.selected_alpn_protocol() == "h2":
                    self.hand_over_to_h2()

    def data_received(self, bytes data):
        self.received(data)

    cdef void received(self, bytes data) except *:
        if self.state == R_TUNNEL:
            self.ex.tunnel_in(data)
            return
        if self.buf:
            self.buf += data
        else:
            self.buf = data
        try:
            self.process()
        except Exception as exc:
            self.internal_error(exc)

    cpdef internal_error(self, object exc):
        """A bug reached a callback: log it, answer 500 if nothing was sent yet, close.

        Only this connection is affected; the exception never reaches the event
        loop (which would close the transport and leave the client waiting).
        """
        _log.error("internal error on the request path", exc_info=exc)
        self.ctx.counters[ST_INTERNAL_ERRORS] += 1
        self.ex.drop_upstream()
        if self.state != R_CLOSED:
            if self.ex.head is not None and not self.ex.response_started:
                self.transport.write(build_error_response(500, "internal error in the gateway",
                                                          self.ex.request_id, False))
            self.set_closed()
            self.transport.close()

    def eof_received(self):
        if self.state == R_TUNNEL and self.ex.tunnel_eof():
            return True                     # half-closed through the tunnel
        if self.state == R_HEAD and not self.buf:
            self.close()
            return False
        # The client stopped sending but may still read the answer to its request.
        self.client_eof = True
        return True

    def connection_lost(self, exc):
        self.ctx.forget(self)
        self.deadline_kind = D_NONE
        if self.state != R_HEAD and self.state != R_CLOSED:
            self.ex.client_gone()
        self.ex.forget_downstream()
        self.set_closed()
        self.buf = EMPTY

    def pause_writing(self):
        self.ex.client_write_paused(True)   # the client is slow: stop reading its response

    def resume_writing(self):
        self.ex.client_write_paused(False)

    cdef void set_closed(self):
        self.state = R_CLOSED
        self.closed = True
        self.deadline_kind = D_NONE

    # -- reading requests -------------------------------------------------

    cdef void pause_body(self, Exchange ex, int reason):
        if self.read_paused == 0 and self.state != R_CLOSED:
            self.transport.pause_reading()
        self.read_paused |= reason

    cdef void resume_body(self, Exchange ex, int reason):
        if self.read_paused == 0:
            return
        self.read_paused &= ~reason
        if self.read_paused == 0 and self.state != R_CLOSED:
            self.transport.resume_reading()

    cdef void process(self):
        """Consume buffered bytes as far as the current state allows."""
        while self.state != R_CLOSED:
            if self.state == R_HEAD:
                if not self.buf or not self.read_head():
                    return
            elif self.state == R_BODY:
                if not self.buf or not self.read_body():
                    return
            else:
                # R_WAIT: bytes now are pipelined requests; keep them for later.
                if len(self.buf) > PIPELINE_LIMIT:
                    self.pause_body(self.ex, PAUSE_PIPELINE)
                return

    cdef bint read_head(self) except -1:
        """Parse a complete head from the buffer and start its request; False if incomplete."""
        cdef Context ctx = self.ctx
        cdef Py_ssize_t end
        cdef RequestHead head
        if self.requests_served == 0 and ctx.cleartext != CLEARTEXT_HTTP1 and (
                ctx.cleartext == CLEARTEXT_H2C
                or (self.buf[0] == 80 and PREFACE.startswith(self.buf[:H2_REQUEST_LINE]))):
            # "PRI * HTTP/2.0": h2c with prior knowledge (RFC 9113 3.3). The rest of the 24
            # bytes is HTTP/2's to check: a wrong one gets GOAWAY(PROTOCOL_ERROR), not an
            # HTTP/1.1 answer to a client that does not speak it.  On an h2c-only port every
            # client is one, whatever its first line.
            if len(self.buf) >= len(PREFACE) or not PREFACE.startswith(self.buf):
                self.hand_over_to_h2()
            return False
        end = find_head_end(self.buf, self.scan_from)
        if end < 0:
            if len(self.buf) > ctx.max_head_size:
                if self.buf.find(b"\n", 0, ctx.max_uri) < 0:
                    self.reject(414, "request target too long")
                else:
                    self.reject(431, "request head too large")
                return False
            self.scan_from = max(0, len(self.buf) - 3)
            if self.deadline_kind != D_HEADER:
                self.set_deadline(D_HEADER, ctx.header_timeout)
            return False
        self.scan_from = 0
        if end > ctx.max_head_size:
            self.reject(431, "request head too large")
            return False
        try:
            head = parse_request(self.buf, end, ctx.max_headers)
        except HttpError as err:
            self.reject(err.status, err.reason)
            return False
        if len(head.target) > ctx.max_uri:
            self.reject(414, "request target too long")
            return False
        self.buf = tail(self.buf, end)
        self.start_request(head, end)
        return True

    cdef bint read_body(self) except -1:
        """Hand the buffered body bytes to the exchange; False to stop reading for now."""
        cdef Context ctx = self.ctx
        cdef Exchange ex = self.ex
        cdef Py_ssize_t end
        cdef bytes chunk
        try:
            end = self.req_framer.feed(self.buf, 0)
        except HttpError as err:
            ex.fail(err.status, err.reason)
            return False
        if end == len(self.buf):
            chunk = self.buf
            self.buf = EMPTY
        else:
            chunk = self.buf[:end]
            self.buf = self.buf[end:]
        ex.bytes_received += len(chunk)
        if ctx.max_body and self.req_framer.payload > ctx.max_body:
            ex.body_complete = self.req_framer.done
            ex.fail(413, f"request body larger than limits.max_body ({ctx.max_body} bytes)")
            return False
        ex.receive_body(chunk)
        if self.req_framer.done:
            self.state = R_WAIT
            ex.body_received()
        elif self.deadline_kind == D_BODY:
            self.deadline = monotonic() + ctx.body_idle_timeout
        return True

    cdef void hand_over_to_h2(self):
        """The client speaks HTTP/2: an H2Connection takes the transport (and what was read)."""
        cdef bytes received = self.buf
        h2 = H2Connection(self.ctx, self.proto, self.port, self.sni)
        self.ctx.forget(self)
        self.set_closed()
        self.ex.forget_downstream()
        self.buf = EMPTY
        self.transport.set_protocol(h2)
        h2.take_over(self.transport, self.client, received)

    cdef void reject(self, int status, str reason):
        """Answer a request we cannot parse and close: its framing is unknown."""
        cdef Context ctx = self.ctx
        self.transport.write(build_error_response(status, reason, b"-", False))
        ctx.counters[ST_4XX if status < 500 else ST_5XX] += 1
        if ctx.log is not None:
            ctx.log.error_line(self.client_bytes, status, reason)
        self.close()

    cdef void start_request(self, RequestHead head, Py_ssize_t head_size):
        cdef Context ctx = self.ctx
        cdef bint has_body = True
        self.requests_served += 1
        self.keep_alive = (head.keep_alive and head.minor == 1 and not ctx.draining
                           and self.requests_served < ctx.max_requests_per_connection)
        self.head_out = None
        self.held_body = None
        self.deadline_kind = D_NONE
        if head.chunked:
            self.req_framer.reset(MODE_CHUNKED, 0)
        elif head.content_length > 0:
            self.req_framer.reset(MODE_LENGTH, head.content_length)
        else:
            has_body = False
        if has_body:
            self.state = R_BODY
            self.set_deadline(D_BODY, ctx.body_idle_timeout)
        else:
            self.state = R_WAIT
        self.ex.start(head, has_body, head_size)

    # -- the response (Downstream) ------------------------------------------

    cdef bint send_interim(self, Exchange ex, ResponseHead head) except -1:
        # 1xx: forwarded to HTTP/1.1 clients only (RFC 9110 15.2).
        if ex.head.minor == 1:
            self.transport.write(build_interim_head(head) if head.status != 100 else CONTINUE_100)
        return True

    cdef bint send_head(self, Exchange ex, ResponseHead head, int framing) except -1:
        # Written with the first body bytes by send_body: one syscall, not two.
        self.deadline_kind = D_NONE         # the rest of the request body no longer matters
        self.dechunk_out = None
        if ex.head.minor == 0 and (framing == MODE_CHUNKED or framing == MODE_STREAM):
            # HTTP/1.0 has no chunked coding (RFC 9112 6.1): the payload as it comes, ended
            # by closing the connection (the trailers go nowhere).
            self.keep_alive = False
            if framing == MODE_CHUNKED:
                self.dechunk_out = Dechunker()
            framing = MODE_UNTIL_CLOSE
        self.head_out = build_response_head(head, framing, self.keep_alive)
        self.chunk_out = framing == MODE_STREAM
        self.trailers_out = None
        return True

    cdef bint send_body(self, Exchange ex, bytes data, Py_ssize_t start,
                        long long holdable) except -1:
        cdef bytes head_out = self.head_out
        cdef Py_ssize_t size
        if self.dechunk_out is not None:
            data = self.dechunk_out.feed(tail(data, start) if start else data)
            start = 0
        size = len(data) - start
        if self.chunk_out and size > 0:
            data = b"%x\r\n%b\r\n" % (size, tail(data, start) if start else data)
            start = 0
            size = len(data)
        if head_out is None:
            if size > 0:
                self.send(_rest(data, start))
            return True
        if self.held_body is not None:
            data = self.held_body + tail(data, start)
            start = 0
            size = len(data)
        if holdable >= 0 and size + holdable <= HOLD_LIMIT:
            # A small response split over reads is written whole once complete, in one
            # syscall, as nginx's proxy buffering does; until then the client has seen
            # nothing, so a failing upstream still gets it a clean 502.
            self.held_body = tail(data, start) if start else data
            return True
        self.held_body = None
        self.head_out = None
        ex.bytes_sent += len(head_out)
        if size == 0:
            self.send(head_out)
        elif size <= COALESCE_LIMIT:
            self.send(_joined(head_out, data, start))
        else:
            self.transport.writelines((head_out, _rest(data, start)))    # one writev, no copy
        return True

    cdef bint send_trailers(self, Exchange ex, list headers) except -1:
        self.trailers_out = headers
        return True

    cdef bint end_body(self, Exchange ex) except -1:
        """The last chunk, with the trailers (and the head, when no body came); for an
        HTTP/1.0 client only the head, if still held: the close ends its body."""
        cdef list lines = [self.head_out] if self.head_out is not None else []
        if not self.chunk_out:
            self.head_out = self.trailers_out = None
            if lines:
                self.send(lines[0])
            return True
        lines.append(LAST_CHUNK)
        for name, value in self.trailers_out or ():
            lines += (name, b": ", value, CRLF)
        lines.append(CRLF)
        self.head_out = None
        self.trailers_out = None
        self.send(b"".join(lines))
        return True

    cdef bint unsend(self, Exchange ex) except -1:
        """Drop a response head (and body) still held; True when the client saw nothing of it."""
        if self.head_out is None:
            return False
        self.head_out = self.held_body = None
        return True

    cdef bint send_error(self, Exchange ex, int status, str message, bytes location,
                         bytes extra_header) except -1:
        cdef bytes out = build_error_response(
            status, message, ex.request_id, self.keep_alive, location,
            ex.head is None or ex.head.method != b"HEAD", extra_header)
        ex.bytes_sent = len(out)
        self.transport.write(out)
        return True

    cdef bint open_tunnel(self, Exchange ex, ResponseHead head) except -1:
        cdef bytes out = build_response_head(head, MODE_NONE, True)
        self.deadline_kind = D_NONE
        ex.bytes_sent = len(out)
        self.transport.write(out)
        self.state = R_TUNNEL
        if self.buf:
            ex.tunnel_in(self.buf)
            self.buf = EMPTY
        self.resume_body(self.ex, PAUSE_PENDING | PAUSE_PIPELINE)
        return True

    cdef bint tunnel_data(self, Exchange ex, bytes data) except -1:
        self.send(data)
        return True

    cdef void exchange_done(self, Exchange ex, bint completed):
        """Read the next request, or close."""
        cdef Context ctx = self.ctx
        if not completed or self.state == R_CLOSED or self.state == R_TUNNEL:
            return
        if not self.keep_alive:
            self.close()
            return
        self.state = R_HEAD
        self.resume_body(self.ex, PAUSE_PIPELINE | PAUSE_PENDING | PAUSE_UPSTREAM_FULL)
        if self.buf:
            self.deadline_kind = D_NONE
            self.process()
        elif self.client_eof:
            self.close()
        elif ctx.draining:
            # This response went out before the drain began, without "Connection: close":
            # the client may send another request, which is answered with it.
            self.set_deadline(D_IDLE, min(ctx.idle_timeout, ctx.drain_grace))
        else:
            self.set_deadline(D_IDLE, ctx.idle_timeout)

    cdef void abort_exchange(self, Exchange ex, bint reset):
        if reset:
            self.transport.abort()
        else:
            self.close()

    # -- deadlines (Connection) -----------------------------------------------
    # One deadline of the connection's own (idle, head, body) and the exchange's; the
    # context's timer heap looks at them when the earliest is due (context.pyx).

    cdef void set_deadline(self, DeadlineKind kind, double delay):
        self.deadline_kind = kind
        self.deadline = monotonic() + delay
        self.ctx.wake_at(self, self.deadline)

    cdef double check_deadlines(self, double now):
        cdef DeadlineKind kind = self.deadline_kind
        if self.state == R_CLOSED:
            return 0
        if not self.ex.check_deadlines(now) and kind != D_NONE and now >= self.deadline:
            self.deadline_kind = D_NONE
            if kind == D_IDLE:
                if self.state == R_HEAD and not self.buf:
                    self.close()
            elif kind == D_HEADER:
                if self.state == R_HEAD:
                    self.reject(408, "timed out reading the request head")
            elif kind == D_BODY:
                if self.state == R_BODY:
                    self.ex.fail(408, "timed out reading the request body")
        if self.state == R_CLOSED:
            return 0
        return earliest(self.ex.next_deadline(),
                        self.deadline if self.deadline_kind != D_NONE else 0)

    cdef bint is_idle(self):
        return self.state == R_HEAD and not self.buf

    cdef void drain(self, double deadline):
        if not self.is_idle():
            return                          # closes after its response (ctx.draining)
        if self.deadline_kind != D_IDLE or self.deadline > deadline:
            self.deadline_kind = D_IDLE
            self.deadline = deadline
            self.ctx.wake_at(self, deadline)

    cdef int redispatch(self, Service service, set gone) except -1:
        return self.ex.redispatch_from(service, gone)

    cpdef close(self):
        if self.state != R_CLOSED:
            self.set_closed()
            self.transport.close()
        self.ex.drop_upstream()
