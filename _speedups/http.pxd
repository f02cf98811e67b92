# Typed interface of _speedups.http, so the proxy reads head fields at C speed.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE


cdef inline bytes tail(bytes data, Py_ssize_t start):
    """``data[start:]`` without a slice object; b"" when nothing is left."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + start, n - start) if start < n else b""


cdef enum Framing:                      # BodyFramer.mode (FRAMING_* in Python)
    MODE_NONE = 0                       # no body
    MODE_LENGTH = 1                     # Content-Length
    MODE_CHUNKED = 2
    MODE_UNTIL_CLOSE = 3                # the body ends when the connection does
    MODE_STREAM = 4                     # payload only; its codec says where it ends (an
                                        # HTTP/2 stream's END_STREAM), HTTP/1.1 chunks it


cdef class MessageHead:
    cdef list _fields                   # [(lower-case name, name, value)], or None: not made yet
    cdef public bytes field_lines       # the fields passed on, as forwarded; None once changed
    cdef list pairs                     # HTTP/2: the same as [(lower-case name, value)], or None
    cdef public int minor               # HTTP/1.<minor>
    cdef public long long content_length  # -1 when absent
    cdef public bint chunked
    cdef public bint streamed           # HTTP/2, no content-length: the body is MODE_STREAM
    cdef public bint keep_alive
    cdef public bytes connection
    cdef public bytes upgrade           # the Upgrade value when "Connection: upgrade" asks for it
    cdef public frozenset extra_hop     # names listed in Connection, dropped too
    cdef public Py_ssize_t head_size
    cdef list fields(self)
    cdef list peek_fields(self)
    cdef void set_fields(self, list fields)
    cdef void append_fields(self, list fields, bytes lines)
    cdef void replace_fields(self, frozenset names, list fields, bytes lines)

cdef class RequestHead(MessageHead):
    cdef public bytes method
    cdef public bytes target            # path and query, as received
    cdef public bytes path              # without the query
    cdef public bytes host
    cdef public bytes request_id
    cdef public bytes forwarded_for
    cdef public bytes via
    cdef public bint expect_continue
    cdef public bytes traceparent       # W3C trace context, kept out of the forwarded fields
    cdef public bytes tracestate
    cdef public bint b3                 # a B3 header came (passed on; read when tracing)
    cpdef bytes header(self, bytes lname)
    cdef Py_ssize_t header_span(self, bytes lname, const char **value)

cdef class ResponseHead(MessageHead):
    cdef public int status
    cdef public bytes reason

cdef class BodyFramer:
    cdef public int mode
    cdef public long long remaining
    cdef public long long received          # bytes on the wire, framing included
    cdef public long long payload           # body bytes, without chunk framing
    cdef public bint done
    cdef int state
    cdef int size_digits
    cdef int error_status
    cpdef reset(self, int mode, long long length)
    cpdef Py_ssize_t feed(self, bytes data, Py_ssize_t start) except -2
    cdef Py_ssize_t _feed_chunked(self, const char *buf, Py_ssize_t pos, Py_ssize_t n) except -2
    cdef int _fail(self, str reason) except -1

cdef bytes decimal(long long n)
cdef long long digits_value(bytes text, Py_ssize_t max_digits) noexcept
cpdef Py_ssize_t find_head_end(bytes data, Py_ssize_t start) except -2
cpdef RequestHead parse_request(bytes data, Py_ssize_t end, Py_ssize_t max_headers=*)
cpdef RequestHead request_from_fields(bytes method, bytes path, bytes authority, list fields,
                                      Py_ssize_t max_headers=*)
cpdef ResponseHead parse_response(bytes data, Py_ssize_t end, Py_ssize_t max_headers=*)
cpdef int response_framing(ResponseHead head, bytes request_method) except -1
cpdef bytes build_request_head(RequestHead head, bytes target, bytes host, bytes client_ip,
                               bytes request_id, bytes via, bint upgrade, bytes proto=*,
                               bytes real_ip=*, bytes trace_fields=*)
cpdef list request_fields(RequestHead head, bytes scheme, bytes target, bytes host,
                          bytes client_ip, bytes request_id, bytes via, bytes proto=*,
                          bytes real_ip=*, bytes trace_fields=*)
cpdef bytes build_response_head(ResponseHead head, int framing, bint keep_alive)
cpdef bytes build_interim_head(ResponseHead head)
cpdef bytes build_error_response(int status, str message, bytes request_id, bint keep_alive,
                                 bytes location=*, bint with_body=*, bytes extra_header=*)


cdef enum DechunkState:
    DC_SIZE, DC_DATA, DC_DATA_END, DC_TRAILERS, DC_DONE

cdef class Dechunker:
    cdef int state
    cdef long long left
    cdef bytes line                         # a size or trailer line split across reads
    cdef list trailers
    cdef bint done
    cdef bytes feed(self, bytes data)
