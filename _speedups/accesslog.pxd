cdef class LogBuffer:
    """The access log's buffer on the request path: lines rendered straight into a C
    buffer (no object per line), moved to the log's ``parts`` as one bytes object when it
    passes the log's ``limit`` or when the log flushes (``spill``)."""
    cdef readonly object access_log         # gateway.accesslog.AccessLog (parts, limit, flush, spill)
    cdef list parts
    cdef char *data
    cdef Py_ssize_t size
    cdef Py_ssize_t capacity
    cdef Py_ssize_t limit
    cdef int reserve(self, Py_ssize_t n) except -1
    cdef int put(self, const char *s, Py_ssize_t n) except -1
    cdef int put_bytes(self, bytes value) except -1
    cdef int put_json(self, bytes value) except -1
    cdef int put_int(self, long long value) except -1
    cdef int put_ms(self, double seconds) except -1
    cdef int put_time(self) except -1
    cdef int end_line(self) except -1
    cdef void write(self, bytes line)
    cdef void error_line(self, bytes client, int status, str reason)
    cdef void request_line(self, bytes request_id, bytes trace_id, bytes client, bytes method, bytes host,
                           bytes target, int status, long long bytes_sent,
                           long long bytes_received, double duration, bytes json_route,
                           bytes json_service, bytes json_upstream, bytes json_cluster,
                           int attempts, double t_connect, double t_response, bytes extra)


cpdef bytes json_string(bytes value)
cdef bytes dumps(object value)
cdef bytes exact_json(str value)
