from libc.stdint cimport int32_t, uint32_t

from _speedups.exchange cimport Downstream, Exchange
from _speedups.h2 cimport H2Handler, H2Session
from _speedups.http cimport Dechunker, RequestHead, ResponseHead
from _speedups.service cimport Service


cdef class H2Stream:
    cdef int id
    cdef object key                 # id as the int H2Connection.streams is keyed by (boxed once)
    cdef Exchange ex                # None: refused before it became an exchange
    cdef bint grpc                  # content-type application/grpc*: errors answered as gRPC
    cdef double client_timeout      # grpc-timeout, in seconds (0: none)
    cdef bint ended_in              # the client ended its side (END_STREAM)
    cdef int read_paused            # PauseReason bits: its window is not reopened meanwhile
    cdef Py_ssize_t unconsumed      # body bytes taken while paused, to consume() on resume
    cdef long long payload_in
    cdef bint out_paused            # its response queue is over the limit: upstream paused
    cdef list head_out              # response fields not yet submitted
    cdef bytes head_lines           # ... and after them an HTTP/1.1 upstream's field lines
    cdef bint submitted             # the response head went to nghttp2
    cdef Dechunker dechunk          # a chunked response body's payload, else None
    cdef list trailers              # an HTTP/2 upstream's trailers, sent at the end
    cdef bint finished              # the exchange is over (answered, aborted or gone)
    cdef double body_deadline       # the request body must move on by then (0: not waiting)
    # WebSocket over HTTP/2 (RFC 8441): an extended CONNECT, sent upstream as an Upgrade
    cdef bint tunnel                # :protocol websocket: the stream becomes a tunnel
    cdef bint tunnel_open           # the upstream's 101 came: DATA goes through raw
    cdef bytes ws_key               # the Sec-WebSocket-Key sent upstream (its Accept is checked)
    cdef bint client_key            # ... the client's own (RFC 8441 has none): the Accept goes back
    cdef list early                 # DATA before the 101, held (its window stays shut)


cdef class H2Connection(Downstream):
    cdef H2Session session
    cdef dict streams               # stream id -> H2Stream, until nghttp2 closes it
    cdef long started_streams
    cdef bint write_paused
    cdef bint flush_scheduled
    cdef bint goaway_sent
    cdef double idle_deadline
    cpdef take_over(self, object transport, str client, bytes received)
    cdef H2Stream new_stream(self, int stream_id)
    cdef void received(self, bytes data) except *
    cdef void deferred(self) except *
    cdef void flush(self)
    cdef void schedule_flush(self)
    cdef void protocol_error(self, str reason)
    cdef RequestHead request_head(self, H2Stream stream, list headers, bint end_stream)
    cdef void refuse(self, H2Stream stream, int status, str reason)
    cdef H2Stream stream_of(self, Exchange ex)
    cdef Py_ssize_t submit_error(self, H2Stream stream, int status, str message, bytes request_id,
                                 bytes location, bytes extra_header, bint with_body) except -1
    cdef void submit_head(self, H2Stream stream, bint end_stream)
    cdef void end_abruptly(self, H2Stream stream, Exchange ex)
    cdef void tunnel_in(self, H2Stream stream, Exchange ex, bytes data)
    cdef void end_tunnel(self, H2Stream stream, Exchange ex)
    cdef void go_away(self)
    cdef void idle_from(self, double now)
    cdef void end_streams(self)
    # the session's events (through _Events: this class's base is Downstream)
    cdef void h2_headers(self, int32_t stream_id, list headers, bint end_stream) except *
    cdef void h2_data(self, int32_t stream_id, bytes data) except *
    cdef void h2_end(self, int32_t stream_id) except *
    cdef void h2_trailers(self, int32_t stream_id, list headers) except *
    cdef void h2_close(self, int32_t stream_id, uint32_t error_code) except *
    cdef void h2_drained(self, int32_t stream_id) except *
    cdef void h2_too_large(self, int32_t stream_id) except *
