# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The access log line, rendered as bytes on the request path: no dict, no encoder call
per request.  Names set by the config (route, service, cluster, upstream host) are
JSON-encoded once per snapshot (``exact_json``); only what the client sent is escaped
per request (``json_string``)."""
import time as _time

from orjson import dumps as _orjson_dumps
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

cdef object wall_time = _time.time


cdef class LogBuffer:

    def __init__(self, access_log=None):
        self.access_log = access_log
        self.parts = access_log.parts if access_log is not None else None
        self.limit = access_log.limit if access_log is not None else 0
        self.size = 0

    cdef void write(self, bytes line):
        self.parts.append(line)
        self.size += len(line)
        if self.size >= self.limit:
            self.size = 0
            self.access_log.flush()

    cdef void error_line(self, bytes client, int status, str reason):
        """A connection refused or a request that could not be read: no route, no upstream."""
        self.write(b'{"time":"%s","client":"%s","status":%d,"error":%s}\n' % (
            _timestamp(wall_time()), client, status, dumps(reason)))

    cdef void request_line(self, bytes request_id, bytes client, bytes method, bytes host,
                           bytes target, int status, long long bytes_sent,
                           long long bytes_received, double duration, bytes json_route,
                           bytes json_service, bytes json_upstream, bytes json_cluster,
                           int attempts, double t_connect, double t_response, bytes extra):
        self.write(
            (b'{"time":"%s","request_id":%s,"client":"%s","method":"%s","host":%s,"path":%s,'
             b'"status":%d,"bytes_sent":%d,"bytes_received":%d,"duration_ms":%.3f,'
             b'"route":%s,"upstream_service":%s,"upstream_host":%s,"upstream_cluster":%s,'
             b'"attempts":%d,"upstream_connect_ms":%s,"upstream_response_ms":%s%s}\n') % (
                _timestamp(wall_time()), json_string(request_id), client, method,
                json_string(host) if host is not None else b"null", json_string(target),
                status, bytes_sent, bytes_received, duration * 1000.0, json_route, json_service,
                json_upstream, json_cluster, attempts, _ms(t_connect), _ms(t_response), extra))


# RFC 3339 with milliseconds; the seconds part is formatted once per second.
cdef double _ts_second = -1.0
cdef bytes _ts_prefix = b""


cdef bytes _timestamp(double now):
    global _ts_second, _ts_prefix
    cdef double second = <double>(<long long>now)
    if second != _ts_second:
        _ts_second = second
        _ts_prefix = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(second)).encode()
    return b"%s.%03dZ" % (_ts_prefix, <int>((now - second) * 1000.0))


cdef inline bytes _ms(double seconds):
    return b"%.3f" % (seconds * 1000.0) if seconds >= 0 else b"null"


cdef bytes dumps(object value):
    return _orjson_dumps(value)


cdef bytes exact_json(str value):
    """JSON for a name kept as long as its endpoint: orjson returns bytes with ~4 KiB of
    spare capacity that is never trimmed (77 MiB at 10,000 endpoints); copy it to size."""
    return bytes(memoryview(_orjson_dumps(value)))


cpdef bytes json_string(bytes value):
    """``value`` as a JSON string literal (bytes taken as Latin-1, as HTTP defines them)."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(value)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(value)
    for i in range(n):
        if p[i] < 0x20 or p[i] >= 0x7f or p[i] == 34 or p[i] == 92:    # control, non-ASCII, " or \\
            return _orjson_dumps(value.decode("latin-1"))
    return b'"' + value + b'"'
