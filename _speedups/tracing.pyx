# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Trace context on the request path: ids, the sampling decision and the span records.

The exchange asks for ids (``trace_id``, ``span_id``: lower-case hex, made here from a
xorshift64* generator, with no Python call), decides whether a new trace is sampled
(``sample``: the trace id's last 64 bits against ``sample_ratio``, as OpenTelemetry's
TraceIdRatioBased does, so every hop that samples by ratio agrees) and, when a request
ends and is kept, pushes one tuple (``push``).  Nothing here encodes or sends: an
exporter thread (``gateway.tracing``) takes the records (``take``) and makes OTLP of
them.  A full queue drops the record and counts it: a slow collector costs spans,
never request time.

Header formats: W3C Trace Context (traceparent, tracestate, https://www.w3.org/TR/trace-context/)
and, on input only, B3 (https://github.com/openzipkin/b3-propagation), single and multi.
"""
import os as _os
import time as _time

cimport cython

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy

from _speedups.clock cimport monotonic

cdef const char *HEX = b"0123456789abcdef"


cdef inline int _hexval(char c):
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    return -1


cdef bint _is_hex(const char *p, Py_ssize_t n, bint allow_upper):
    """``p[:n]`` is hex and not all zeros (an invalid id in both formats)."""
    cdef Py_ssize_t i
    cdef bint nonzero = False
    cdef char c
    for i in range(n):
        c = p[i]
        if allow_upper and 65 <= c <= 70:
            c += 32
        if _hexval(c) < 0:
            return False
        if c != 48:
            nonzero = True
    return nonzero


# Records are not tracked by the cycle collector: nothing they hold refers back to a record,
# and at 100% sampling three tracked objects per request, held in the queue until the next
# export, made the collector run and walk them every few hundred requests.
@cython.no_gc
cdef class SpanRecord:

    def __init__(self, bytes line, object upstream, int number, double start, double end,
                 str kind=None, int status=0, double t_connect=-1.0, double t_response=-1.0,
                 object mirrors=None):
        """For tests and the Python side; the request path uses ``new_span``."""
        self.line, self.upstream, self.number, self.start, self.end = line, upstream, number, start, end
        self.kind, self.status, self.t_connect, self.t_response = kind, status, t_connect, t_response
        self.mirrors = mirrors

    @property
    def span_id(self):
        return self.line[LINE_SPAN_START:LINE_SPAN_END]


cdef SpanRecord new_span(bytes line, object upstream, int number, double start, double end,
                         str kind, int status, double t_connect, double t_response, object mirrors):
    """One object per kept span: the times stay C doubles (a tuple held five floats)."""
    cdef SpanRecord span = SpanRecord.__new__(SpanRecord)
    span.line, span.upstream, span.number, span.start, span.end = line, upstream, number, start, end
    span.kind, span.status, span.t_connect, span.t_response = kind, status, t_connect, t_response
    span.mirrors = mirrors
    return span


@cython.no_gc
cdef class RequestRecord:

    def __init__(self, bytes trace_id, bytes server_span, bytes parent_span, bytes trace_state,
                 double start, double end, bytes method, bytes host, bytes target, int status,
                 str route, str service, str error, bytes client, bint h2, bytes request_id,
                 int attempts, list spans=None):
        """For tests and the Python side; the exchange fills one in directly."""
        cdef SpanRecord span, last = None
        self.trace_id, self.server_span, self.parent_span = trace_id, server_span, parent_span
        self.trace_state, self.start, self.end = trace_state, start, end
        self.method, self.host, self.target, self.status = method, host, target, status
        self.route, self.service, self.error, self.client = route, service, error, client
        self.h2, self.request_id, self.attempts = h2, request_id, attempts
        self.n_spans = 1
        for span in spans or ():
            if last is None:
                self.spans = span
            else:
                last.next = span
            last = span
            self.n_spans += 1

    def span_list(self):
        cdef SpanRecord span = self.spans
        out = []
        while span is not None:
            out.append(span)
            span = span.next
        return out


cdef class Tracer:

    def __init__(self, double sample_ratio=1.0, Py_ssize_t max_queue=4096,
                 Py_ssize_t batch_size=512):
        self.set_ratio(sample_ratio)
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.records = []
        self.wake = None
        self.recorded = 0
        self.dropped = 0
        self.rng = int.from_bytes(_os.urandom(8), "little") | 1
        self.mono_base = monotonic()
        self.wall_base = _time.time()

    def set_ratio(self, double ratio):
        self.sample_ratio = ratio
        if ratio >= 1.0:
            self.threshold = 0xFFFFFFFFFFFFFFFF
        elif ratio <= 0.0:
            self.threshold = 0
        else:
            self.threshold = <unsigned long long>(ratio * 18446744073709551616.0)

    cdef unsigned long long next64(self):
        cdef unsigned long long x = self.rng
        x ^= x >> 12
        x ^= x << 25
        x ^= x >> 27
        self.rng = x
        return x * <unsigned long long>0x2545F4914F6CDD1D

    cdef bytes _hex(self, int words):
        cdef bytes out = PyBytes_FromStringAndSize(NULL, 16 * words)
        cdef char *p = PyBytes_AS_STRING(out)
        cdef unsigned long long v
        cdef int w, i
        for w in range(words):
            v = self.next64()
            if v == 0:
                v = 1
            for i in range(16):
                p[w * 16 + 15 - i] = HEX[v & 15]
                v >>= 4
        return out

    cdef bytes span_id(self):
        return self._hex(1)

    cdef bytes trace_id(self):
        return self._hex(2)

    cdef bytes traceparent_line(self, bytes trace_id, bint sampled):
        """The traceparent field line of a new span (an upstream attempt), its id made in
        place: one bytes object per attempt, the id sliced out only if the span is kept."""
        cdef bytes out = PyBytes_FromStringAndSize(NULL, LINE_SIZE)
        cdef char *p = PyBytes_AS_STRING(out)
        cdef unsigned long long v = self.next64()
        cdef int i
        if v == 0:
            v = 1
        memcpy(p, b"traceparent: 00-", 16)
        memcpy(p + 16, PyBytes_AS_STRING(trace_id), 32)
        p[48] = 45                                  # "-"
        for i in range(16):
            p[LINE_SPAN_END - 1 - i] = HEX[v & 15]
            v >>= 4
        memcpy(p + LINE_SPAN_END, b"-01\r\n" if sampled else b"-00\r\n", 5)
        return out

    cdef bint sample(self, bytes trace_id):
        """TraceIdRatioBased: the last 16 hex digits (64 random bits) below the threshold."""
        cdef const char *p = PyBytes_AS_STRING(trace_id) + 16
        cdef unsigned long long v = 0
        cdef int i
        if self.threshold == 0xFFFFFFFFFFFFFFFF:
            return True
        for i in range(16):
            v = (v << 4) | <unsigned long long>_hexval(p[i])
        return v < self.threshold

    cdef void push(self, RequestRecord record):
        if len(self.records) >= self.max_queue:
            self.dropped += 1
            return
        self.records.append(record)
        self.recorded += 1
        if len(self.records) == self.batch_size and self.wake is not None:
            self.wake()

    def take(self):
        """The records held, oldest first; the queue starts again empty.  Called from the
        exporter's thread: one swap under the GIL (no Python code runs between the read
        and the write), so a record pushed meanwhile lands in one list or the other."""
        cdef list out = self.records
        self.records = []
        return out

    def counters(self):
        return {"recorded": self.recorded, "dropped": self.dropped,
                "queued": len(self.records)}

    # for tests and the pure-Python side
    def new_trace_id(self):
        return self.trace_id()

    def new_span_id(self):
        return self.span_id()

    def new_traceparent_line(self, bytes trace_id, bint sampled):
        return self.traceparent_line(trace_id, sampled)

    def sampled(self, bytes trace_id):
        return self.sample(trace_id)


cdef tuple parse_traceparent(bytes value):
    """``version-traceid-parentid-flags``; (trace id, parent id, sampled) or None when
    malformed (then a new trace starts, as the spec asks).  Version 00 is 55 characters;
    a later version may append fields after a dash (read as 00, per the spec's section 4.3)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    cdef const char *p = PyBytes_AS_STRING(value)
    cdef int flags
    if n < 55 or (n > 55 and (p[0] == 48 and p[1] == 48 or p[55] != 45)):
        return None
    if p[2] != 45 or p[35] != 45 or p[52] != 45:
        return None
    if _hexval(p[0]) < 0 or _hexval(p[1]) < 0 or (p[0] == 102 and p[1] == 102):   # ff: invalid
        return None
    if not _is_hex(p + 3, 32, False) or not _is_hex(p + 36, 16, False):
        return None
    if _hexval(p[53]) < 0 or _hexval(p[54]) < 0:
        return None
    flags = _hexval(p[54])
    return (value[3:35], value[36:52], bool(flags & 1))


cdef bytes pad_trace_id(bytes value):
    """A B3 trace id (16 or 32 hex digits, any case) as 32 lower-case digits, or None."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    if (n != 16 and n != 32) or not _is_hex(PyBytes_AS_STRING(value), n, True):
        return None
    value = value.lower()
    return value if n == 32 else b"0000000000000000" + value


cdef tuple parse_b3_single(bytes value):
    """``b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]``, or a lone sampling state;
    (trace id, span id, sampled: True, False or None for "decide here"), or None."""
    cdef list parts = value.strip().split(b"-")
    cdef bytes trace, span
    if len(parts) < 2:
        return None
    trace = pad_trace_id(parts[0])
    span = parts[1].lower()
    if trace is None or len(span) != 16 or not _is_hex(PyBytes_AS_STRING(span), 16, False):
        return None
    if len(parts) >= 3 and parts[2]:
        return (trace, span, parts[2] in (b"1", b"d"))
    return (trace, span, None)


def traceparent_fields(value):
    """For tests: parse_traceparent from Python."""
    return parse_traceparent(value)


def b3_fields(value):
    return parse_b3_single(value)
