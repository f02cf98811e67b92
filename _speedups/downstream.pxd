from _speedups.exchange cimport Downstream, Exchange
from _speedups.http cimport Dechunker, BodyFramer, RequestHead


cdef enum ReadState:
    R_HEAD                  # waiting for (the rest of) a request head
    R_BODY                  # streaming the request body upstream
    R_WAIT                  # request received whole; waiting for / streaming the response
    R_TUNNEL                # after 101 Switching Protocols: bytes both ways
    R_CLOSED


cdef enum DeadlineKind:     # what the connection's own deadline is for (the exchange has its own)
    D_NONE
    D_IDLE                  # keep-alive connection with no request
    D_HEADER                # a request head is arriving
    D_BODY                  # waiting for more of the request body


cdef class Http1Connection(Downstream):
    cdef str client
    cdef ReadState state
    cdef bytes buf                          # received, not yet consumed
    cdef Py_ssize_t scan_from
    cdef int read_paused                    # PauseReason bits
    cdef long requests_served
    cdef DeadlineKind deadline_kind
    cdef double deadline
    cdef bint client_eof
    cdef Exchange ex                        # the one exchange, reused request after request
    cdef BodyFramer req_framer              # the request body's, reset per request
    cdef bytes head_out                     # response head not yet written (joins the body)
    cdef bytes held_body                    # body of a small response, held to go out with it
    cdef bint chunk_out                     # a MODE_STREAM body: chunk-framed here
    cdef list trailers_out                  # ... and the trailers its last chunk carries
    cdef Dechunker dechunk_out              # a chunked body to an HTTP/1.0 client: payload only

    cdef void received(self, bytes data) except *
    cdef void set_closed(self)
    cdef void process(self)
    cdef bint read_head(self) except -1
    cdef bint read_body(self) except -1
    cdef void hand_over_to_h2(self)
    cdef void reject(self, int status, str reason)
    cdef void start_request(self, RequestHead head, Py_ssize_t head_size)
    cdef void set_deadline(self, DeadlineKind kind, double delay)
