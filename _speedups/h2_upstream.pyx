# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""HTTP/2 to upstreams: connections that carry many requests (streams) at once.

``H2Pool`` is an HTTP/2 endpoint's pool (``Upstream.streams``): a few ``H2UpstreamSession``
connections, each an asyncio protocol around a client ``H2Session`` (nghttp2).  What an
exchange borrows is an ``H2Stream``: an ``UpstreamConnection`` to it, so the exchange is the
same for both protocols.  The request comes as messages: the head, whose fields become
HEADERS (``http.request_fields``), body payload as DATA (an HTTP/1.1 client's chunked body
de-chunked), the end of a streamed body with the client's trailers.  The response goes back
as a ``ResponseHead`` and payload: sized by its content-length, or ``streamed`` (MODE_STREAM)
and ended by END_STREAM after the trailers (``upstream_trailers``), which the client's codec
frames: DATA and trailers for HTTP/2, chunks and a trailer section for HTTP/1.1.

Flow control: the request body is queued in nghttp2 only up to ``H2Session.queue_limit``
per stream (then ``upstream_write_paused``); the response's DATA is ``consume``d, reopening
the upstream's windows, only once the exchange has taken it, and not while it is paused.
"""
from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport int32_t, uint32_t

from _speedups.clock cimport monotonic
from _speedups.reactor cimport SocketTransport
from _speedups.http cimport (MODE_STREAM, BodyFramer, Dechunker, RequestHead, ResponseHead, digits_value,
                             request_fields)
from _speedups.http import CONNECTION_SPECIFIC as _CONNECTION_SPECIFIC, HttpError
from _speedups.service cimport Service
from _speedups.upstream cimport StreamPool, Upstream, UpstreamConnection, UpstreamOwner

import base64
import hashlib
import logging
from asyncio import get_running_loop
from http import HTTPStatus

from _speedups.h2 import CANCEL, REFUSED_STREAM, H2Error

cdef object _log = logging.getLogger("gateway.proxy")
cdef bytes EMPTY = b""
cdef frozenset CONNECTION_SPECIFIC = _CONNECTION_SPECIFIC  # dropped from response heads
cdef bytes WEBSOCKET = b"websocket"
cdef bytes WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"     # RFC 6455 §1.3
# An HTTP/1.1 Upgrade's fields that have no place in an extended CONNECT (RFC 8441 §5)
cdef frozenset NOT_IN_EXTENDED_CONNECT = frozenset((b"sec-websocket-key", b"te", b"content-length"))

# Receive windows: a stream's is what a paused one holds at most; the connection's is
# larger, so that one slow client does not stall the other streams.
cdef int STREAM_WINDOW = 256 * 1024
cdef int CONNECTION_WINDOW = 16 * 1024 * 1024
cdef int ASSUMED_MAX_STREAMS = 100      # until the peer's SETTINGS say (RFC 9113 6.5.2)

cdef dict _REASONS = {}


cdef bytes _reason(int status):
    """The reason phrase an HTTP/1.1 status line gets (HTTP/2 has none)."""
    cdef bytes reason = _REASONS.get(status)
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b"Unknown"
        _REASONS[status] = reason
    return reason


cdef class H2Pool(StreamPool):
    """An HTTP/2 endpoint's connections: at most ``max_connections`` per worker."""

    def __init__(self, Upstream upstream, int max_connections=2, bint tls=False):
        self.upstream = upstream
        self.sessions = []
        self.max_connections = max(1, max_connections)
        self.scheme = b"https" if tls else b"http"
        self.max_head = 65536
        self.max_headers = 100

    cdef UpstreamConnection take(self):
        """A stream on the first connection with room (few connections, each well used);
        None while another may be opened; past that, on the least busy connection, whose
        nghttp2 holds the stream until the peer's concurrency limit lets it go."""
        cdef H2UpstreamSession session, least = None
        cdef int usable = 0
        for session in self.sessions:
            if session.usable():
                if session.active() < session.max_streams():
                    return session.open_stream(self.max_head, self.max_headers)
                usable += 1
                if least is None or session.active() < least.active():
                    least = session
        if usable < self.max_connections:
            return None                     # (one going away does not count)
        return least.open_stream(self.max_head, self.max_headers)

    cdef UpstreamConnection new_connection(self, Py_ssize_t max_head, Py_ssize_t max_headers):
        self.max_head, self.max_headers = max_head, max_headers
        cdef H2UpstreamSession session = H2UpstreamSession(self)
        self.sessions.append(session)
        return session.open_stream(max_head, max_headers)

    cdef void give_back(self, UpstreamConnection conn, double now):
        conn.close()                        # frees its stream; the connection stays

    cpdef int close_idle(self, double older_than) except -1:
        """Close connections without streams since before ``older_than``; at inf (the
        endpoint is removed) the busy ones too, once their streams end."""
        cdef H2UpstreamSession session
        for session in list(self.sessions):
            if session.active() == 0 and session.idle_since < older_than:
                session.close()
            elif older_than == float("inf"):
                session.draining = True
        return len(self.sessions)

    cpdef int idle_count(self):
        cdef H2UpstreamSession session
        cdef int idle = 0
        for session in self.sessions:
            idle += session.active() == 0
        return idle

    cdef void forget(self, H2UpstreamSession session):
        if session in self.sessions:
            self.sessions.remove(session)
            self.upstream.touch()


cdef class H2UpstreamSession(H2Handler):
    """One HTTP/2 connection to an endpoint (the asyncio protocol), carrying its streams."""

    def __init__(self, H2Pool pool):
        self.pool = pool
        # limits.max_response_head bounds a response head decoded, as for HTTP/1.1.
        self.h2 = H2Session(self, False, initial_window_size=STREAM_WINDOW,
                            max_header_list_size=pool.max_head)
        self.h2.set_connection_window(CONNECTION_WINDOW)
        self.streams = {}
        self.waiting = []
        self.idle_since = monotonic()

    cdef int active(self):
        return len(self.streams) + self.reserved

    cdef int max_streams(self):
        cdef long long peer = self.h2.remote_max_concurrent_streams()
        # 2**32-1 when the peer sets no limit: as many as nghttp2 assumes before SETTINGS.
        return ASSUMED_MAX_STREAMS if peer >= 0x7fffffff else peer

    cdef bint usable(self):
        return not self.closed and not self.draining and self.h2.request_allowed()

    cdef H2Stream open_stream(self, Py_ssize_t max_head, Py_ssize_t max_headers):
        cdef H2Stream stream = H2Stream.__new__(H2Stream)     # (no Python call per stream)
        stream.init(self.pool.upstream, max_head, max_headers)
        stream.session = self
        self.reserved += 1
        return stream

    cdef int submit(self, H2Stream stream, list headers, bint end_stream) except -1:
        cdef int stream_id = self.h2.submit_request(headers, end_stream)
        self.reserved -= 1
        self.streams[self.h2.key(stream_id)] = stream
        return stream_id

    cdef void unreserve(self):
        self.reserved -= 1
        self.stream_ended()

    cdef void stream_ended(self):
        if self.active() == 0:
            self.idle_since = monotonic()
            if self.draining or not self.h2.request_allowed():     # removed, or GOAWAY
                # Not from inside nghttp2's callback (h2_close): it may not be re-entered.
                get_running_loop().call_soon(self.close_if_idle)

    def close_if_idle(self):
        if self.active() == 0:
            self.close()

    cdef void flush(self):
        """Write what nghttp2 has for the peer (unless the socket is full: resume_writing).

        Not from inside nghttp2 (its callbacks reach the exchange, which may write a retry
        or a body chunk here): then once the outer receive or output returns.
        """
        if self.transport is None or self.closed or self.write_paused:
            return
        if self.busy:
            self.flush_again = True
            return
        self.busy = True
        try:
            self.flush_again = True
            while self.flush_again and not self.write_paused and not self.closed:
                self.flush_again = False
                out = self.h2.output()
                if out:
                    self.send(out)
        except H2Error:
            self.busy = False
            self.close()
        finally:
            self.busy = False

    cdef void flush_soon(self):
        """A stream's writes: once the events in hand are handled, when a reactor dispatches
        them (the HEADERS and DATA of a request that came in one read leave in one write, as
        do the window updates of all the responses read), else now."""
        if self.flush_deferred:
            return
        if type(self.transport) is SocketTransport and \
                (<SocketTransport>self.transport).reactor.defer(self):
            self.flush_deferred = True
            return
        self.flush()

    cdef void deferred(self) except *:
        self.flush_deferred = False
        self.flush()

    cdef void close(self):
        if self.closed:
            return
        self.closed = True
        self.pool.forget(self)
        if self.transport is not None:
            if self.active() == 0 and not self.busy:
                self.h2.goaway()            # a clean end: the peer need not guess
                out = self.h2.output()
                if out:
                    self.transport.write(out)
            self.transport.close()

    cdef void connect_failed(self):
        """The connect failed: requests that took a stream on it meanwhile go elsewhere."""
        cdef H2Stream stream
        self.closed = True
        self.pool.forget(self)
        for stream in list(self.streams.values()):
            stream.refused(f"connect to {self.pool.upstream.host} failed")
        self.streams.clear()
        self.refuse_waiting(f"connect to {self.pool.upstream.host} failed")

    def refuse_waiting(self, str reason):
        cdef H2Stream stream
        waiting, self.waiting = self.waiting, []
        for stream in waiting:
            stream.refused(reason)

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport):
        self.use_transport(transport)
        self.connected = True
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            _log.warning("upstream %s did not agree to HTTP/2 by ALPN (protocol: h2)",
                         self.pool.upstream.host)
            self.closed = True              # speaking HTTP/2 to it would be garbage
            transport.abort()
            return
        self.flush()

    def data_received(self, bytes data):
        self.received(data)

    cdef void received(self, bytes data) except *:
        self.busy = True
        try:
            self.h2.receive(data)
            self.busy = False
            if not self.settled:
                self.settle()
        except H2Error:
            self.busy = False
            self.flush()                    # our GOAWAY says why
            self.close()
            return
        except Exception:
            self.busy = False
            _log.exception("HTTP/2 upstream session failed")
            self.transport.abort()          # its streams' owners hear of it (connection_lost)
            return
        self.flush()

    cdef void settle(self):
        """The peer's SETTINGS are known: the streams held back go out (nghttp2 keeps
        those past its SETTINGS_MAX_CONCURRENT_STREAMS queued)."""
        cdef H2Stream stream
        self.settled = True
        waiting, self.waiting = self.waiting, []
        for stream in waiting:
            stream.send_unsent()

    def eof_received(self):
        return False                        # the transport closes: connection_lost

    def connection_lost(self, exc):
        cdef H2Stream stream
        self.closed = True
        self.pool.forget(self)
        if self.breaker is not None:
            self.breaker.connections -= 1
            self.breaker = None
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.session_lost(exc)
        self.refuse_waiting("the connection was lost before the request was sent")

    def pause_writing(self):
        self.write_paused = True

    def resume_writing(self):
        self.write_paused = False
        self.flush()

    # -- H2Session's handler ---------------------------------------------------------

    cdef void h2_headers(self, int32_t stream_id, list headers, bint end_stream) except *:
        cdef H2Stream stream = self.streams.get(self.h2.key(stream_id))
        if stream is not None:
            stream.on_headers(headers, end_stream)

    cdef void h2_too_large(self, int32_t stream_id) except *:
        """A response head past limits.max_response_head: a bad response, as over HTTP/1.1."""
        cdef H2Stream stream = self.streams.get(self.h2.key(stream_id))
        self.h2.reset(stream_id)
        self.flush()
        if stream is not None:
            stream.guard_bad("response head too large")

    cdef void h2_data(self, int32_t stream_id, bytes data) except *:
        cdef H2Stream stream = self.streams.get(self.h2.key(stream_id))
        if stream is None or stream.owner is None:
            self.h2.consume(stream_id, len(data))   # nobody wants it: keep the windows open
        else:
            stream.on_data(data)

    cdef void h2_end(self, int32_t stream_id) except *:
        cdef H2Stream stream = self.streams.get(self.h2.key(stream_id))
        if stream is not None:
            stream.on_end()

    cdef void h2_trailers(self, int32_t stream_id, list headers) except *:
        cdef H2Stream stream = self.streams.get(self.h2.key(stream_id))
        if stream is not None:
            stream.trailers = [(name, value) for name, value in headers if name[:1] != b":"]

    cdef void h2_close(self, int32_t stream_id, uint32_t error_code) except *:
        cdef H2Stream stream = self.streams.pop(self.h2.key(stream_id), None)
        if stream is not None:
            stream.on_close(error_code)
        self.stream_ended()

    cdef void h2_drained(self, int32_t stream_id) except *:
        cdef H2Stream stream = self.streams.get(self.h2.key(stream_id))
        if stream is not None:
            stream.on_drained()


cdef class H2Stream(UpstreamConnection):
    """One stream, lent to one exchange: to it, an HTTP/1.1 connection (see the module).
    Made by ``H2UpstreamSession.open_stream``."""

    cdef object protocol(self):
        return self.session

    cdef void count_in(self, Service breaker):
        if self.session.closed:
            breaker.connections -= 1        # lost already (its ALPN was not h2)
        else:
            self.session.breaker = breaker

    cdef void connect_failed(self):
        self.session.connect_failed()

    # -- the request ----------------------------------------------------------------

    cdef void send_head(self, RequestHead head, bytes target, bytes host, bytes client_ip,
                        bytes request_id, bytes via, bint upgrade, bytes proto, bytes real_ip,
                        bytes trace_fields):
        """HEADERS, from the head's fields (``http.request_fields``).  The body ends with its
        content-length, its chunked framing (an HTTP/1.1 client's, removed here), or
        ``end_body`` (MODE_STREAM: an HTTP/2 client's)."""
        cdef list fields = request_fields(head, self.session.pool.scheme, target, host, client_ip,
                                          request_id, via, proto, real_ip, trace_fields)
        self.dechunker = Dechunker() if head.chunked else None
        self.body_left = head.content_length
        self.request_ended = not head.chunked and not head.streamed and head.content_length <= 0
        self.ws_accept = None
        if upgrade and head.upgrade.lower() == WEBSOCKET:     # (another goes as a plain request)
            fields = self.extended_connect(head, fields)
        self.put(fields)

    cdef list extended_connect(self, RequestHead head, list fields):
        """A WebSocket upgrade as RFC 8441 has it: CONNECT with ``:protocol websocket``, no
        key (the Accept an HTTP/1.1 client wants is made here, ``websocket_head``); once
        answered 2xx the stream is the tunnel.  Only to a peer that enabled it (submit_head)."""
        key = head.header(b"sec-websocket-key") or b""
        self.ws_accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        self.request_ended = False
        self.body_left = -1
        return [(b":method", b"CONNECT"), (b":protocol", WEBSOCKET)] + [
            field for field in fields[1:] if field[0] not in NOT_IN_EXTENDED_CONNECT]

    cdef void write_body(self, bytes data):
        self.put(data)

    cdef void end_body(self, list trailers):
        self.put((trailers,))

    cdef void write(self, bytes data):
        self.put(data)

    cdef void put(self, object piece):
        """A piece of the request, in order: its fields (a list), payload (bytes), or the end
        of a MODE_STREAM body (a 1-tuple of its trailers)."""
        if self.closed:
            return
        if self.session.closed:
            if self.stream_id == 0:
                # Lost between connect and this write (its ALPN was not h2, say): nothing was
                # sent, which the owner is told once it is done writing (not from inside write).
                self.closed = True
                get_running_loop().call_soon(self.refused,
                                             "the connection closed before the request was sent")
            return                          # (else connection_lost tells the owner)
        if self.unsent is not None or (self.stream_id == 0 and not self.session.settled and (
                self.ws_accept is not None or self.session.streams or self.session.waiting)):
            self.hold(piece)                # (an extended CONNECT waits for the peer's SETTINGS)
            return
        if type(piece) is list:
            self.submit_head(<list>piece)
        elif self.request_ended:
            return
        elif type(piece) is bytes:
            self.send_body(<bytes>piece)
        else:
            self.send_end((<tuple>piece)[0])
        self.session.flush_soon()

    cdef void hold(self, object piece):
        """Until the peer's SETTINGS come, one stream goes out per connection (the peer's
        limit may be below the 100 assumed until then): the others' pieces wait here, the
        client's body pausing past the queue limit as it would in nghttp2's queue."""
        cdef Py_ssize_t size = 0
        if self.unsent is None:
            self.unsent = []
            self.session.waiting.append(self)
        self.unsent.append(piece)
        for piece in self.unsent:
            if type(piece) is bytes:
                size += len(<bytes>piece)
        if not self.body_paused and self.owner is not None and size > self.session.h2.queue_limit:
            self.body_paused = True
            self.owner.upstream_write_paused(True)

    def send_unsent(self):
        cdef H2Stream stream = self         # (the owner may let go meanwhile)
        unsent, stream.unsent = stream.unsent, None
        for piece in unsent or ():
            stream.put(piece)
        if stream.body_paused and stream.session.h2.queued(stream.stream_id) <= stream.session.h2.queue_limit:
            stream.on_drained()

    cdef void submit_head(self, list fields):
        if self.ws_accept is not None and not self.session.h2.remote_allows_extended_connect():
            self.released = self.closed = True
            self.session.unreserve()
            get_running_loop().call_soon(self.refused, (
                f"upstream {self.upstream.host} does not take WebSockets over HTTP/2 "
                "(its SETTINGS do not enable extended CONNECT, RFC 8441)"), True)
            return
        try:
            self.stream_id = self.session.submit(self, fields, self.request_ended)
        except H2Error:
            # The connection takes no new stream after all (a GOAWAY read with its SETTINGS).
            self.released = self.closed = True
            self.session.unreserve()
            get_running_loop().call_soon(self.refused, "the connection no longer takes requests")

    cdef void send_body(self, bytes data):
        """Body bytes in the head's framing: the payload goes out as DATA."""
        cdef Dechunker dechunker = self.dechunker
        cdef bint ended = False
        cdef H2Session h2 = self.session.h2
        if dechunker is not None:
            data = dechunker.feed(data)
            ended = dechunker.done
        elif self.body_left >= 0:
            self.body_left -= len(data)
            ended = self.body_left <= 0
        if ended and dechunker is not None and dechunker.trailers:
            queued = h2.send_data(self.stream_id, data, False)
            h2.send_trailers(self.stream_id, dechunker.trailers)
        else:
            queued = h2.send_data(self.stream_id, data, ended)
        self.request_ended = ended
        if queued > h2.queue_limit and not self.body_paused and self.owner is not None:
            self.body_paused = True
            self.owner.upstream_write_paused(True)

    cdef void send_end(self, list trailers):
        """END_STREAM after a MODE_STREAM body: with the client's trailers, when it sent any."""
        if trailers:
            self.session.h2.send_trailers(self.stream_id, trailers)
        else:
            self.session.h2.send_data(self.stream_id, EMPTY, True)
        self.request_ended = True

    cdef void on_drained(self):
        if self.body_paused:
            self.body_paused = False
            if self.owner is not None:
                self.owner.upstream_write_paused(False)

    # -- the response ---------------------------------------------------------------

    cdef void on_headers(self, list headers, bint end_stream):
        cdef UpstreamOwner owner = self.owner
        cdef ResponseHead head
        if owner is None:
            return
        try:
            head = _response_head(headers, end_stream)
        except HttpError as err:
            self.guard_bad(err.reason)
            return
        try:
            if head.status < 200:
                owner.upstream_interim(self, head)
                return
            if self.ws_accept is not None and head.status < 300:
                head = websocket_head(head, self.ws_accept)
            if not owner.upstream_head(self, head):
                return                      # the owner let go of this stream (a retry)
            self.head = head
            if self.tunnel:                 # the stream carries the WebSocket from now on
                return
            if self.framer.done:            # no body (HEAD, 204, 304, content-length: 0)
                owner.upstream_body(self, EMPTY, 0)
        except Exception as exc:
            owner.internal_error(exc)

    cdef void on_data(self, bytes data):
        if not data or self.head is None:
            self.session.h2.consume(self.stream_id, len(data))
            return
        if self.paused or self.held is not None:
            if self.held is None:
                self.held = []
            self.held.append(data)          # at most the stream's window: it is not consumed
            return
        self.pass_on(data)

    cdef void pass_on(self, bytes data):
        """Body bytes to the owner, framed as it expects; the windows reopen by as many."""
        cdef UpstreamOwner owner = self.owner
        cdef Py_ssize_t n = len(data)
        if self.tunnel:
            self.session.h2.consume(self.stream_id, n)
            try:
                owner.upstream_tunnel_data(data)
            except Exception as exc:
                owner.internal_error(exc)
            return
        if self.framer.done:                # past its content-length: nghttp2 resets it
            self.session.h2.consume(self.stream_id, n)
            return
        self.give(owner, data)
        self.session.h2.consume(self.stream_id, n)

    cdef void give(self, UpstreamOwner owner, bytes data):
        """Payload, through the framer (which checks a content-length) to the owner."""
        try:
            self.framer.feed(data, 0)
            owner.upstream_body(self, data, 0)
        except HttpError as err:
            owner.upstream_body_error(self, err.reason)
        except Exception as exc:
            owner.internal_error(exc)

    cdef void on_end(self):
        self.response_ended = True
        if self.owner is not None and self.held is None and not self.paused:
            self.pass_end()

    cdef void pass_end(self):
        """END_STREAM: the trailers, then the end of a body of unknown length (or a short
        body's error)."""
        cdef UpstreamOwner owner = self.owner
        if self.tunnel:                     # the upstream's half-close ends the tunnel
            self.closed = self.eof = True
            try:
                owner.upstream_gone(self, None)
            except Exception as exc:
                owner.internal_error(exc)
            return
        if self.head is None or self.framer.done:
            return
        try:
            if self.trailers:
                owner.upstream_trailers(self, self.trailers)
                if self.owner is not owner:
                    return
            if self.framer.mode != MODE_STREAM:
                owner.upstream_body_error(self, "upstream ended the stream before its content-length")
                return
            self.framer.done = True
            owner.upstream_body(self, EMPTY, 0)
        except Exception as exc:
            owner.internal_error(exc)

    cdef void on_close(self, int error_code):
        cdef UpstreamOwner owner = self.owner
        self.stream_closed = True
        if owner is None or self.response_ended:
            return                          # done, or held DATA still to pass on
        self.closed = self.eof = True
        try:
            if error_code == REFUSED_STREAM and self.head is None:
                owner.upstream_refused(
                    self, f"upstream {self.upstream.host} refused the stream (it was not processed)")
            else:
                owner.upstream_gone(self, ConnectionResetError(f"stream reset ({error_code})")
                                    if self.tunnel else None)
        except Exception as exc:
            owner.internal_error(exc)

    cdef bint half_close(self):
        """The client half-closed the tunnel: END_STREAM."""
        self.put((None,))
        return True

    def refused(self, str reason, bint unable=False):
        """Nothing of the request went out: it may go elsewhere (``upstream_refused``), or,
        ``unable``, this upstream cannot take it as asked (``upstream_unable``)."""
        cdef UpstreamOwner owner = self.owner
        self.closed = self.eof = self.stream_closed = True
        if owner is not None:
            try:
                if unable:
                    owner.upstream_unable(self, reason)
                else:
                    owner.upstream_refused(self, reason)
            except Exception as exc:
                owner.internal_error(exc)

    cdef void session_lost(self, exc):
        cdef UpstreamOwner owner = self.owner
        self.stream_closed = True
        if owner is None or self.response_ended:
            return
        self.closed = self.eof = True
        try:
            owner.upstream_gone(self, exc)
        except Exception as err:
            owner.internal_error(err)

    cdef void guard_bad(self, str reason):
        cdef UpstreamOwner owner = self.owner
        if owner is None:
            return
        try:
            owner.upstream_bad(self, reason)
        except Exception as exc:
            owner.internal_error(exc)

    # -- flow control and letting go ---------------------------------------------

    cdef void pause(self):
        self.paused = True

    cdef void resume(self):
        # The exchange calls this on its ``up``, which it may clear while the body goes on
        # (the response ends): ``stream`` keeps this object alive until the method returns.
        cdef H2Stream stream = self
        if not stream.paused:
            return
        stream.paused = False
        while stream.held and not stream.paused and stream.owner is not None:
            stream.pass_on(stream.held.pop(0))
        if not stream.held:
            stream.held = None
            if stream.response_ended and not stream.paused and stream.owner is not None:
                stream.pass_end()
        stream.session.flush_soon()         # the window updates

    cdef void end(self, bint abort):
        """The owner lets go: a stream not finished both ways is reset (CANCEL)."""
        cdef H2UpstreamSession session = self.session
        cdef Py_ssize_t held = 0
        self.owner = None
        if self.released:
            return
        self.released = self.closed = True
        if self.stream_id == 0:
            if self.unsent is not None:
                session.waiting.remove(self)
                self.unsent = None
            session.unreserve()             # never sent: its slot is free again
            return
        if self.held:
            for data in self.held:
                held += len(data)
            session.h2.consume(self.stream_id, held)
            self.held = None
        # A response read whole (its content-length) is ended by the END_STREAM coming with it.
        if not self.stream_closed and not (self.request_ended and (
                self.response_ended or self.head is not None and self.framer.done)):
            session.h2.reset(self.stream_id, CANCEL)
        session.flush_soon()


cdef ResponseHead websocket_head(ResponseHead head, bytes accept):
    """A 2xx to an extended CONNECT as the exchange takes a WebSocket's opening: a 101
    with the Accept of the key the request had (RFC 8441 §5 has none of its own)."""
    cdef ResponseHead opened = ResponseHead.__new__(ResponseHead)
    opened.minor = 1
    opened.keep_alive = True
    opened.status = 101
    opened.reason = b"Switching Protocols"
    opened.upgrade = WEBSOCKET
    opened.set_fields([field for field in head.peek_fields() if field[0] != b"sec-websocket-accept"]
                      + [(b"sec-websocket-accept", b"Sec-WebSocket-Accept", accept)])
    return opened


cdef ResponseHead _response_head(list headers, bint end_stream):
    """An HTTP/2 response head as the exchange takes an HTTP/1.1 one."""
    cdef ResponseHead head = ResponseHead.__new__(ResponseHead)
    cdef int status = 0
    cdef list fields = []
    cdef bytes name, value
    head.minor = 1
    head.keep_alive = True
    for name, value in headers:
        if name == b":status":
            status = digits_value(value, 3) if len(value) == 3 else 0
        elif name == b"content-length":
            head.content_length = digits_value(value, 18)
            if head.content_length < 0:
                raise HttpError(502, "invalid content-length")
        elif PyBytes_AS_STRING(name)[0] != b':' and name not in CONNECTION_SPECIFIC:
            fields.append((name, name, value))
    if status < 100 or status == 101:
        raise HttpError(502, "invalid :status")
    head.set_fields(fields)
    head.status = status
    head.reason = _reason(status)
    if head.content_length < 0:
        if end_stream:
            head.content_length = 0
        else:
            head.streamed = True            # HTTP/1.1 clients get it chunked
    return head

