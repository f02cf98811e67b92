# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The access log line, rendered as bytes on the request path: no dict, no encoder call
per request.  Names set by the config (route, service, cluster, upstream host) are
JSON-encoded once per snapshot (``exact_json``); only what the client sent is escaped
per request (``json_string``)."""
import time as _time

from orjson import dumps as _orjson_dumps
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

cdef object wall_time = _time.time

# RFC 3339 with milliseconds; the seconds part is formatted once per second.
cdef double _ts_second = -1.0
cdef bytes _ts_prefix = b""


cdef class LogBuffer:

    def __init__(self, access_log=None):
        self.access_log = access_log
        self.parts = access_log.parts if access_log is not None else None
        self.limit = access_log.limit if access_log is not None else 0
        self.size = 0
        self.reserve(max(self.limit, 4096) + 4096)
        if access_log is not None:
            access_log.spill = self.spill   # the log takes the lines held here before it writes

    def __dealloc__(self):
        free(self.data)

    def spill(self):
        """Move the lines held here into the log's ``parts`` (one bytes object)."""
        if self.size:
            self.parts.append(PyBytes_FromStringAndSize(self.data, self.size))
            self.size = 0

    def detach(self):
        """Hand what is held to the log and stop being its source (another buffer replaces it)."""
        self.spill()
        if self.access_log is not None and getattr(self.access_log, "spill", None) == self.spill:
            self.access_log.spill = None

    cdef int reserve(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t capacity
        cdef char *grown
        if self.size + n <= self.capacity:
            return 0
        capacity = max(self.capacity * 2, self.size + n)
        grown = <char *>realloc(self.data, capacity)
        if grown == NULL:
            raise MemoryError()
        self.data = grown
        self.capacity = capacity
        return 0

    cdef int put(self, const char *s, Py_ssize_t n) except -1:
        if self.size + n > self.capacity:
            self.reserve(n)
        memcpy(self.data + self.size, s, n)
        self.size += n
        return 0

    cdef int put_bytes(self, bytes value) except -1:
        return self.put(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))

    cdef int put_json(self, bytes value) except -1:
        """``value`` as a JSON string (``json_string``), copied without an object when it
        needs no escaping (the common case)."""
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(value)
        cdef Py_ssize_t i, n = PyBytes_GET_SIZE(value)
        for i in range(n):
            if p[i] < 0x20 or p[i] >= 0x7f or p[i] == 34 or p[i] == 92:
                return self.put_bytes(_orjson_dumps(value.decode("latin-1")))
        self.put(b'"', 1)
        self.put(<const char *>p, n)
        return self.put(b'"', 1)

    cdef int put_int(self, long long value) except -1:
        # Digits by hand: snprintf's format parsing cost more than the rest of a field.
        cdef char digits[24]
        cdef int i = 24
        cdef unsigned long long v = -value if value < 0 else value
        while True:
            i -= 1
            digits[i] = 48 + v % 10
            v //= 10
            if v == 0:
                break
        if value < 0:
            i -= 1
            digits[i] = 45              # "-"
        return self.put(digits + i, 24 - i)

    cdef int put_ms(self, double seconds) except -1:
        """Milliseconds with three decimals (a whole microsecond, rounded), or null when negative."""
        cdef long long us
        cdef char frac[4]
        if seconds < 0:
            return self.put(b"null", 4)
        us = <long long>(seconds * 1e6 + 0.5)
        self.put_int(us // 1000)
        frac[0] = 46                    # "."
        frac[1] = 48 + (us // 100) % 10
        frac[2] = 48 + (us // 10) % 10
        frac[3] = 48 + us % 10
        return self.put(frac, 4)

    cdef int put_time(self) except -1:
        """RFC 3339 with milliseconds, UTC; the seconds part is formatted once per second."""
        global _ts_second, _ts_prefix
        cdef timespec ts
        clock_gettime(CLOCK_REALTIME, &ts)          # time.time()'s clock, without an object
        cdef double now = ts.tv_sec + ts.tv_nsec * 1e-9
        cdef double second = <double>(<long long>now)
        cdef int millis = <int>((now - second) * 1000.0)
        cdef char ms[5]
        if second != _ts_second:
            _ts_second = second
            _ts_prefix = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(second)).encode()
        self.put_bytes(_ts_prefix)
        ms[0] = 46                      # ".000Z"
        ms[1] = 48 + millis // 100
        ms[2] = 48 + (millis // 10) % 10
        ms[3] = 48 + millis % 10
        ms[4] = 90
        return self.put(ms, 5)

    cdef int end_line(self) except -1:
        self.put(b"}\n", 2)
        if self.size >= self.limit:
            self.spill()
            self.access_log.flush()
        return 0

    cdef void write(self, bytes line):
        self.put_bytes(line)
        if self.size >= self.limit:
            self.spill()
            self.access_log.flush()

    cdef void error_line(self, bytes client, int status, str reason):
        """A connection refused or a request that could not be read: no route, no upstream."""
        self.write(b'{"time":"%s","client":"%s","status":%d,"error":%s}\n' % (
            _timestamp(wall_time()), client, status, dumps(reason)))

    cdef void request_line(self, bytes request_id, bytes trace_id, bytes client, bytes method, bytes host,
                           bytes target, int status, long long bytes_sent,
                           long long bytes_received, double duration, bytes json_route,
                           bytes json_service, bytes json_upstream, bytes json_cluster,
                           int attempts, double t_connect, double t_response, bytes extra):
        self.put(b'{"time":"', 9)
        self.put_time()
        self.put(b'","request_id":', 15)
        self.put_json(request_id)
        if trace_id is not None:            # 32 hex digits, checked where it was read
            self.put(b',"trace_id":"', 13)
            self.put_bytes(trace_id)
            self.put(b'","client":"', 12)   # the trace id's closing quote, then the field
        else:
            self.put(b',"trace_id":null,"client":"', 27)
        self.put_bytes(client)
        self.put(b'","method":"', 12)
        self.put_bytes(method)
        self.put(b'","host":', 9)
        if host is not None:
            self.put_json(host)
        else:
            self.put(b"null", 4)
        self.put(b',"path":', 8)
        self.put_json(target)
        self.put(b',"status":', 10)
        self.put_int(status)
        self.put(b',"bytes_sent":', 14)
        self.put_int(bytes_sent)
        self.put(b',"bytes_received":', 18)
        self.put_int(bytes_received)
        self.put(b',"duration_ms":', 15)
        self.put_ms(duration)
        self.put(b',"route":', 9)
        self.put_bytes(json_route)
        self.put(b',"upstream_service":', 20)
        self.put_bytes(json_service)
        self.put(b',"upstream_host":', 17)
        self.put_bytes(json_upstream)
        self.put(b',"upstream_cluster":', 20)
        self.put_bytes(json_cluster)
        self.put(b',"attempts":', 12)
        self.put_int(attempts)
        self.put(b',"upstream_connect_ms":', 23)
        self.put_ms(t_connect)
        self.put(b',"upstream_response_ms":', 24)
        self.put_ms(t_response)
        self.put_bytes(extra)
        self.end_line()


cdef bytes _timestamp(double now):
    global _ts_second, _ts_prefix
    cdef double second = <double>(<long long>now)
    if second != _ts_second:
        _ts_second = second
        _ts_prefix = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(second)).encode()
    return b"%s.%03dZ" % (_ts_prefix, <int>((now - second) * 1000.0))


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
