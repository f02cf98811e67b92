cdef class LogBuffer:
    """The access log's buffer on the request path: lines rendered as bytes, appended to
    the log's ``parts``; the log's ``flush()`` hands them to its writer thread."""
    cdef readonly object access_log         # gateway.accesslog.AccessLog (parts, limit, flush), or None
    cdef list parts
    cdef Py_ssize_t size
    cdef Py_ssize_t limit
    cdef void write(self, bytes line)
    cdef void error_line(self, bytes client, int status, str reason)
    cdef void request_line(self, bytes request_id, bytes client, bytes method, bytes host,
                           bytes target, int status, long long bytes_sent,
                           long long bytes_received, double duration, bytes json_route,
                           bytes json_service, bytes json_upstream, bytes json_cluster,
                           int attempts, double t_connect, double t_response, bytes extra)


cpdef bytes json_string(bytes value)
cdef bytes dumps(object value)
cdef bytes exact_json(str value)
