# What other compiled modules call of h2.pyx without Python's method calls: the session, and
# the handler its events go to (a subclass of H2Handler; a Python object is wrapped).
from libc.stdint cimport int32_t, uint32_t

from _speedups.reactor cimport Protocol

cdef extern from "nghttp2/nghttp2.h":
    ctypedef struct nghttp2_session:
        pass


cdef class H2Handler(Protocol):            # a Protocol too: an h2 upstream session is both
    cdef void h2_headers(self, int32_t stream_id, list headers, bint end_stream) except *
    cdef void h2_data(self, int32_t stream_id, bytes data) except *
    cdef void h2_end(self, int32_t stream_id) except *
    cdef void h2_trailers(self, int32_t stream_id, list headers) except *
    cdef void h2_close(self, int32_t stream_id, uint32_t error_code) except *
    cdef void h2_drained(self, int32_t stream_id) except *
    cdef void h2_too_large(self, int32_t stream_id) except *


cdef class H2Session:
    cdef nghttp2_session *session
    cdef H2Handler handler
    cdef dict outgoing          # stream id -> _Outgoing
    # The header block being received (HTTP/2 sends one block at a time, contiguous: RFC 9113
    # §4.3), so one slot, not a map by stream id: an _Head, or None
    cdef object receiving
    cdef int32_t receiving_id
    cdef object error           # an exception a handler raised inside a callback
    cdef readonly bint server
    cdef public Py_ssize_t queue_limit
    cdef readonly str going_away    # why this side sent GOAWAY for a limit, or None
    cdef Py_ssize_t max_header_list_size
    cdef double reset_tokens        # the peer's stream resets: a bucket of RESET_BURST
    cdef double reset_refilled
    cdef uint32_t advertised_streams    # patched into the first SETTINGS out (0: done, or a client)
    # (server) The highest stream id a client's HEADERS opened, and the ids it skipped, as
    # (first, last) ranges: RFC 9113 §5.1.1 closes them, and HEADERS on one is a connection
    # error, which nghttp2 leaves undetected (it ignores the frame).  Clients skip rarely:
    # a few ranges are kept, the oldest dropped past SKIPPED_RANGES.
    cdef int32_t last_client_stream
    cdef list skipped
    # The last stream id boxed by key(), and its int: the maps by stream id (here and in the
    # handler) are keyed and looked up with that one object while its stream is the current
    # one, so a lookup finds its key by identity, with no int made or compared.
    cdef int32_t key_id
    cdef object key_int

    cdef object key(self, int32_t stream_id)

    cpdef receive(self, data)
    cpdef consume(self, int32_t stream_id, size_t n)
    cpdef bytes output(self)
    cpdef submit_response(self, int32_t stream_id, list headers, bint end_stream=*, bytes lines=*)
    cpdef int32_t submit_request(self, list headers, bint end_stream=*) except? -1
    cpdef submit_informational(self, int32_t stream_id, list headers)
    cpdef Py_ssize_t send_data(self, int32_t stream_id, data, bint end_stream=*) except -1
    cpdef send_trailers(self, int32_t stream_id, list headers)
    cpdef reset(self, int32_t stream_id, uint32_t error_code=*)
    cpdef goaway(self, uint32_t error_code=*)
    cpdef bint want_read(self)
    cpdef bint want_write(self)
    cpdef Py_ssize_t queued(self, int32_t stream_id)
    cpdef long long remote_max_concurrent_streams(self)
    cpdef bint remote_allows_extended_connect(self)
    cpdef bint request_allowed(self)
    cpdef set_connection_window(self, int32_t size)
    cdef void _advertise_streams(self, char *frame, Py_ssize_t n)
    cdef _raise_pending(self, ssize_t rc)
    cdef int32_t _submit_head(self, int32_t stream_id, list headers, bytes lines, bint end_stream) except? -1
    cdef bint _reset_over_limit(self)
    cdef _go_away(self, uint32_t error_code, str why)
