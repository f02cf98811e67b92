from _speedups.h2 cimport H2Handler, H2Session
from _speedups.http cimport Dechunker, RequestHead
from _speedups.service cimport Service
from _speedups.upstream cimport StreamPool, Upstream, UpstreamConnection, UpstreamOwner


cdef class H2Pool(StreamPool):
    cdef Upstream upstream
    cdef readonly list sessions             # H2UpstreamSession, connected or connecting
    cdef public int max_connections         # per endpoint, per worker
    cdef readonly bytes scheme              # :scheme: b"https" over TLS (protocol h2)
    cdef Py_ssize_t max_head
    cdef Py_ssize_t max_headers
    cdef void forget(self, H2UpstreamSession session)


cdef class H2UpstreamSession(H2Handler):
    cdef H2Pool pool
    cdef H2Session h2                       # the client side
    cdef dict streams                       # stream id -> H2Stream, until the stream closes
    cdef int reserved                       # streams lent but not yet sent (no id yet)
    cdef bint connected
    cdef bint settled                       # the peer's first bytes (its SETTINGS) are read
    cdef list waiting                       # H2Stream held back until then
    cdef bint closed
    cdef bint write_paused                  # the socket's buffer is full: output waits
    cdef bint busy                          # inside nghttp2 (receive, output): no flush now
    cdef bint flush_again                   # a flush was asked for meanwhile
    cdef bint flush_deferred                # one waits for the reactor's dispatch to end
    cdef public bint draining               # no new streams; closed when the last ends
    cdef double idle_since
    cdef Service breaker                    # counts this connection in max_connections
    cdef int active(self)
    cdef int max_streams(self)
    cdef bint usable(self)
    cdef H2Stream open_stream(self, Py_ssize_t max_head, Py_ssize_t max_headers)
    cdef int submit(self, H2Stream stream, list headers, bint end_stream) except -1
    cdef void unreserve(self)
    cdef void stream_ended(self)
    cdef void flush(self)
    cdef void flush_soon(self)
    cdef void close(self)
    cdef void connect_failed(self)
    cdef void settle(self)
    cdef void received(self, bytes data) except *
    cdef void deferred(self) except *


cdef class H2Stream(UpstreamConnection):
    cdef H2UpstreamSession session
    cdef int stream_id                      # 0 until the head is sent
    cdef bint released                      # its slot is free: the owner let go, or it was not sent
    cdef bint request_ended                 # END_STREAM sent
    cdef bint response_ended                # END_STREAM received
    cdef bint stream_closed
    cdef bint body_paused                   # upstream_write_paused(True) was said
    cdef long long body_left                # Content-Length bytes of the request still to come
    cdef Dechunker dechunker                # a chunked request body's
    cdef list held                          # DATA received while paused
    cdef list unsent                        # writes held until the session is settled
    cdef public list trailers               # the response's, once received
    cdef bytes ws_accept                    # an extended CONNECT's: the Accept its key stands for
    cdef list extended_connect(self, RequestHead head, list fields)
    cdef void put(self, object piece)
    cdef void hold(self, object piece)
    cdef void submit_head(self, list fields)
    cdef void send_body(self, bytes data)
    cdef void send_end(self, list trailers)
    cdef void on_drained(self)
    cdef void on_headers(self, list headers, bint end_stream)
    cdef void on_data(self, bytes data)
    cdef void pass_on(self, bytes data)
    cdef void give(self, UpstreamOwner owner, bytes data)
    cdef void on_end(self)
    cdef void pass_end(self)
    cdef void on_close(self, int error_code)
    cdef void session_lost(self, exc)
    cdef void guard_bad(self, str reason)
