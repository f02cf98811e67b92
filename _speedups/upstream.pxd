from _speedups.http cimport BodyFramer, RequestHead, ResponseHead
from _speedups.reactor cimport Protocol
from _speedups.service cimport Service
from _speedups.stats cimport Reported, TrafficStats


cdef class StreamPool:
    """The pool of an endpoint spoken to over HTTP/2 (``h2_upstream.H2Pool``): its
    connections carry many requests at once, so what is lent is a stream, not a connection."""
    # A stream on a connection with room for one, or None: connect one (new_connection)
    cdef UpstreamConnection take(self)
    # A stream on a connection not made yet; the caller connects conn.protocol()
    cdef UpstreamConnection new_connection(self, Py_ssize_t max_head, Py_ssize_t max_headers)
    cdef void give_back(self, UpstreamConnection conn, double now)
    cpdef int close_idle(self, double older_than) except -1
    cpdef int idle_count(self)


cdef class Upstream(Reported):
    cdef readonly tuple key                 # (cluster, ip, port)
    cdef readonly str pool                  # "" (shared) or the TLS service that owns it
    cdef readonly str ip
    cdef readonly int port
    cdef public int weight
    cdef readonly str cluster
    cdef readonly str host                  # "ip:port", as logged
    cdef readonly bytes host_bytes
    cdef readonly bytes json_host           # JSON-encoded once, for the access log
    cdef readonly bytes json_cluster
    cdef list idle                          # pooled UpstreamConnection, LIFO
    cdef public bint removed
    cdef public long long requests
    cdef public long long failures
    cdef public int inflight                # requests sent (or being sent) to it now
    # Passive health is decided by the control plane: every failure is reported, and a
    # success only while this is set (after a failure here, or when the control plane
    # asks because another worker reported one).
    cdef public bint report_success
    cdef public int max_idle
    cdef public object ssl                  # SSLContext when the service speaks TLS, else None
    cdef public str server_hostname
    cdef readonly TrafficStats traffic
    cdef public StreamPool streams          # HTTP/2 endpoints: their connections, else None
    cdef UpstreamConnection take_idle(self)
    cdef void give_back(self, UpstreamConnection conn, double now)
    cpdef int close_idle(self, double older_than) except -1


cdef class UpstreamOwner:
    """What a lent upstream connection reports to (an exchange): the response as parsed."""
    cdef bint upstream_interim(self, UpstreamConnection conn, ResponseHead head) except -1
    # The final head (or a 101); False: the owner let go of the connection (a retry).
    cdef bint upstream_head(self, UpstreamConnection conn, ResponseHead head) except -1
    # Body bytes data[start:] (the head may have come in the same read: no copy of the rest)
    cdef bint upstream_body(self, UpstreamConnection conn, bytes data, Py_ssize_t start) except -1
    cdef bint upstream_body_error(self, UpstreamConnection conn, str reason) except -1
    cdef bint upstream_bad(self, UpstreamConnection conn, str reason) except -1
    cdef bint upstream_tunnel_data(self, bytes data) except -1
    # An HTTP/2 upstream's trailers, before the body's last upstream_body
    cdef bint upstream_trailers(self, UpstreamConnection conn, list headers) except -1
    cdef bint upstream_gone(self, UpstreamConnection conn, object exc) except -1
    # The upstream did not process the request (HTTP/2 REFUSED_STREAM, GOAWAY, or the
    # connection it waited for failed): it may go elsewhere, even when not idempotent
    cdef bint upstream_refused(self, UpstreamConnection conn, str reason) except -1
    # The upstream cannot take the request as asked (a WebSocket to an HTTP/2 upstream that
    # did not enable extended CONNECT): a 502, the endpoint not at fault
    cdef bint upstream_unable(self, UpstreamConnection conn, str reason) except -1
    cdef void upstream_write_paused(self, bint paused)
    cpdef internal_error(self, object exc)


cdef class UpstreamConnection(Protocol):
    """A connection to one endpoint, lent to one exchange at a time; it reads the
    response (head, interim heads, framed body) and hands it to its owner."""
    cdef readonly Upstream upstream
    cdef UpstreamOwner owner
    cdef bint closed
    cdef bint eof
    cdef bint extra                         # sent bytes past its response: out of sync
    cdef bint paused                        # reading paused because the client is slow
    cdef bint tunnel                        # after 101: bytes go through unparsed
    cdef double idle_since
    cdef Service breaker                    # counts this connection in max_connections
    cdef Py_ssize_t max_head                # limits.max_response_head
    cdef Py_ssize_t max_headers
    cdef bytes buf                          # response head bytes not yet complete
    cdef ResponseHead head                  # the final head, once read
    cdef readonly BodyFramer framer         # the response body's, reset per response
    cdef void init(self, Upstream upstream, Py_ssize_t max_head, Py_ssize_t max_headers)
    cdef void lend(self, UpstreamOwner owner)
    cdef object protocol(self)              # the asyncio protocol to connect (self for HTTP/1.1)
    cdef void count_in(self, Service breaker)
    cdef void connect_failed(self)
    cdef void expect_body(self, int framing, long long length)
    cdef void received(self, bytes data) except *
    cdef void feed(self, bytes data)
    cdef void read_body(self, bytes data, Py_ssize_t start)
    cdef bint chunk_body                    # the request's body is MODE_STREAM: chunk it here
    # The request as messages: its head (the client's, and what the proxy adds), body
    # payload in the head's framing, and the end of a MODE_STREAM body with its trailers
    cdef void send_head(self, RequestHead head, bytes target, bytes host, bytes client_ip,
                        bytes request_id, bytes via, bint upgrade, bytes proto, bytes real_ip,
                        bytes trace_fields)
    cdef void write_body(self, bytes data)
    cdef void end_body(self, list trailers)
    cdef void write(self, bytes data)       # bytes as they are (a tunnel's)
    cdef bint half_close(self)              # a tunnel's client half-closed; False: cannot pass it on
    cdef void pause(self)
    cdef void resume(self)
    cdef void close(self)
    cdef void abort(self)
    cdef void end(self, bint abort)
