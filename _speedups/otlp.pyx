# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""OTLP span encoding, compiled: the span records a worker queued (``Exchange.trace_end``)
written as the ``spans`` fields of a ScopeSpans message, straight into one C buffer.

``gateway.tracing.spans_of`` is the plain Python reference (and the test oracle: the two
must give the same bytes).  It costs ~25 us per request (two spans, ~25 attributes, a
bytes object per field); at 100% sampling that was more than the whole request (~12 us),
and the exporter thread holds the GIL, so the event loop waited on it.  Here a request's
spans take ~1-2 us.

Protobuf wire format (https://protobuf.dev/programming-guides/encoding/): a field is a
varint key (number << 3 | wire type), then a varint (0), 8 bytes little-endian (1), or a
varint length and that many bytes (2).  A span's length is known only once it is
written, so each span is written into ``scratch`` first, then copied after its length.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

from _speedups.tracing cimport LINE_SPAN_START, RequestRecord, SpanRecord
from _speedups.upstream cimport Upstream

cdef enum:
    KIND_SERVER = 2
    KIND_CLIENT = 3
    STATUS_ERROR = 2


@cython.final
cdef class _Buf:
    """A growing C buffer.  Each write reserves its whole size once, then writes without
    checks (``_raw_*``): per byte checks were a quarter of the encoder's time."""
    cdef char *data
    cdef Py_ssize_t size, capacity

    def __dealloc__(self):
        free(self.data)

    cdef inline int reserve(self, Py_ssize_t n) except -1:
        if self.size + n <= self.capacity:
            return 0
        return self._grow(n)

    cdef int _grow(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t capacity = max(self.capacity * 2, self.size + n, 4096)
        cdef char *grown = <char *>realloc(self.data, capacity)
        if grown == NULL:
            raise MemoryError()
        self.data, self.capacity = grown, capacity
        return 0

    cdef inline void _raw_varint(self, unsigned long long v) noexcept:
        while v > 0x7F:
            self.data[self.size] = <char>((v & 0x7F) | 0x80)
            self.size += 1
            v >>= 7
        self.data[self.size] = <char>v
        self.size += 1

    cdef inline void _raw_put(self, const char *p, Py_ssize_t n) noexcept:
        memcpy(self.data + self.size, p, n)
        self.size += n

    cdef int put(self, const char *p, Py_ssize_t n) except -1:
        self.reserve(n)
        self._raw_put(p, n)
        return 0

    cdef int varint(self, unsigned long long v) except -1:
        self.reserve(10)
        self._raw_varint(v)
        return 0

    cdef int fixed64(self, int number, unsigned long long v) except -1:
        cdef int i
        self.reserve(18)
        self._raw_varint(number << 3 | 1)
        for i in range(8):
            self.data[self.size + i] = <char>(v & 0xFF)
            v >>= 8
        self.size += 8
        return 0

    cdef int field(self, int number, const char *p, Py_ssize_t n) except -1:
        self.reserve(20 + n)
        self._raw_varint(number << 3 | 2)
        self._raw_varint(n)
        self._raw_put(p, n)
        return 0

    cdef int hex_field(self, int number, bytes hexid, Py_ssize_t at, Py_ssize_t n) except -1:
        """An id of ``n`` bytes given as lower-case hex at ``hexid[at:]``, sent raw."""
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(hexid) + at
        cdef Py_ssize_t i
        cdef char *q
        self.reserve(20 + n)
        self._raw_varint(number << 3 | 2)
        self._raw_varint(n)
        q = self.data + self.size           # a local pointer: writes through self.data made
        for i in range(n):                  # the compiler reload self.size for every byte
            q[i] = <char>(UNHEX[p[2 * i]] << 4 | UNHEX[p[2 * i + 1]])
        self.size += n
        return 0

    # KeyValue{1: key, 2: AnyValue{...}} as field 9 of a Span
    cdef int attr_str(self, bytes key, const char *p, Py_ssize_t n) except -1:
        cdef Py_ssize_t keylen = PyBytes_GET_SIZE(key)
        cdef Py_ssize_t anylen = 1 + _varint_size(n) + n
        cdef Py_ssize_t kvlen = 1 + _varint_size(keylen) + keylen + 1 + _varint_size(anylen) + anylen
        self.reserve(1 + 10 + kvlen)
        self._raw_varint(9 << 3 | 2)
        self._raw_varint(kvlen)
        self._raw_varint(1 << 3 | 2)
        self._raw_varint(keylen)
        self._raw_put(PyBytes_AS_STRING(key), keylen)
        self._raw_varint(2 << 3 | 2)
        self._raw_varint(anylen)
        self._raw_varint(1 << 3 | 2)
        self._raw_varint(n)
        self._raw_put(p, n)
        return 0

    cdef int attr_text(self, bytes key, object value) except -1:
        """A str or bytes (Latin-1, as HTTP has it) value as an OTLP string (UTF-8)."""
        cdef bytes data
        if isinstance(value, str):
            data = (<str>value).encode()
        elif _ascii(<bytes>value):
            data = <bytes>value
        else:
            data = (<bytes>value).decode("latin-1").encode()
        return self.attr_str(key, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))

    cdef int attr_int(self, bytes key, long long value) except -1:
        cdef unsigned long long v = <unsigned long long>value
        cdef Py_ssize_t anylen = 1 + _varint_size(v)
        self.varint(9 << 3 | 2)
        self.varint(1 + _varint_size(len(key)) + len(key) + 1 + _varint_size(anylen) + anylen)
        self.field(1, PyBytes_AS_STRING(key), len(key))
        self.varint(2 << 3 | 2)
        self.varint(anylen)
        self.varint(3 << 3 | 0)
        return self.varint(v)

    cdef int attr_bool(self, bytes key, bint value) except -1:
        self.varint(9 << 3 | 2)
        self.varint(1 + _varint_size(len(key)) + len(key) + 1 + 1 + 2)
        self.field(1, PyBytes_AS_STRING(key), len(key))
        self.varint(2 << 3 | 2)
        self.varint(2)
        self.varint(2 << 3 | 0)
        return self.varint(1 if value else 0)

    cdef int attr_double(self, bytes key, double value) except -1:
        cdef unsigned long long bits = (<unsigned long long *>&value)[0]
        self.varint(9 << 3 | 2)
        self.varint(1 + _varint_size(len(key)) + len(key) + 1 + 1 + 9)
        self.field(1, PyBytes_AS_STRING(key), len(key))
        self.varint(2 << 3 | 2)
        self.varint(9)
        return self.fixed64(4, bits)


cdef unsigned char UNHEX[256]          # a lower-case hex digit's value (ids are random: a
for _c in range(256):                   # branch per digit mispredicted every other time)
    UNHEX[_c] = _c - 48 if 48 <= _c <= 57 else (_c - 87 if 97 <= _c <= 102 else 0)


cdef inline Py_ssize_t _varint_size(unsigned long long v):
    cdef Py_ssize_t n = 1
    while v > 0x7F:
        v >>= 7
        n += 1
    return n


cdef bint _ascii(bytes value):
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(value)
    cdef Py_ssize_t i
    for i in range(PyBytes_GET_SIZE(value)):
        if p[i] >= 0x80:
            return False
    return True


cdef tuple _split_host(bytes host):
    """(address, port or -1) from a Host value, as gateway.tracing._split_host."""
    cdef Py_ssize_t end, colon
    cdef bytes port = b""
    if not host:
        return None, -1
    if host.startswith(b"["):
        end = host.find(b"]")
        if host[end + 1:end + 2] == b":":
            port = host[end + 2:]
        return host[1:end], int(port) if port.isdigit() else -1
    if host.count(b":") == 1:
        colon = host.rfind(b":")
        port = host[colon + 1:]
        return host[:colon], int(port) if port.isdigit() else -1
    return host, -1


cdef enum:
    CACHE_LIMIT = 4096          # names and hosts kept encoded; past it the caches start over


cdef class SpanEncoder:
    """Writes span records as ScopeSpans.spans fields (``encode``).  Route, service, cluster
    and endpoint names, span names and Host values repeat from request to request: each is
    encoded (or split) once and kept, bounded by CACHE_LIMIT."""
    cdef _Buf out
    cdef _Buf scratch
    cdef dict texts                         # str -> its UTF-8 bytes
    cdef dict names                         # (method, route) -> span name bytes
    cdef dict hosts                         # Host value -> its server.address/port attributes
    cdef dict blocks                        # (route, service[, Upstream]) -> their attributes

    def __init__(self):
        self.out = _Buf()
        self.scratch = _Buf()
        self.texts = {}
        self.names = {}
        self.hosts = {}
        self.blocks = {}

    cdef bytes utf8(self, str value):
        cdef object found = self.texts.get(value)
        if found is None:
            if len(self.texts) >= CACHE_LIMIT:
                self.texts.clear()
            found = self.texts[value] = value.encode()
        return <bytes>found

    cdef int text(self, _Buf b, bytes key, object value) except -1:
        cdef bytes data
        if isinstance(value, str):
            data = self.utf8(<str>value)        # UTF-8 already: no Latin-1 step
            return b.attr_str(key, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        return b.attr_text(key, value)

    cdef int host(self, _Buf b, bytes value) except -1:
        """server.address and server.port from a Host value, encoded once per value."""
        cdef object found = self.hosts.get(value)
        cdef _Buf block
        if found is None:
            if len(self.hosts) >= CACHE_LIMIT:
                self.hosts.clear()
            address, port = _split_host(value)
            block = _Buf()
            if address is not None:
                block.attr_text(b"server.address", address)
            if port >= 0:
                block.attr_int(b"server.port", port)
            found = self.hosts[value] = PyBytes_FromStringAndSize(block.data, block.size)
        return b.put(PyBytes_AS_STRING(<bytes>found), PyBytes_GET_SIZE(<bytes>found))

    cdef int names_block(self, _Buf b, str route, str service, Upstream up) except -1:
        """An attempt's endpoint attributes (``up`` given) or a server span's route and
        service, encoded once per (route, service, endpoint)."""
        key = (route, service, up)
        cdef object found = self.blocks.get(key)
        cdef _Buf block
        if found is None:
            if len(self.blocks) >= CACHE_LIMIT:
                self.blocks.clear()
            block = _Buf()
            if up is not None:
                self.text(block, b"server.address", up.ip)
                block.attr_int(b"server.port", up.port)
                self.text(block, b"network.peer.address", up.ip)
            if route is not None:
                self.text(block, b"gateway.route", route)
            if service is not None:
                self.text(block, b"gateway.service", service)
            if up is not None:
                self.text(block, b"gateway.cluster", up.cluster)
                self.text(block, b"gateway.endpoint", up.host)
            found = self.blocks[key] = PyBytes_FromStringAndSize(block.data, block.size)
        return b.put(PyBytes_AS_STRING(<bytes>found), PyBytes_GET_SIZE(<bytes>found))

    cdef bytes name(self, bytes method, object route, str suffix):
        """"{method} {route}" (the server span), "{method}" or "{method} mirror"."""
        key = (method, route, suffix)
        cdef object found = self.names.get(key)
        if found is None:
            if len(self.names) >= CACHE_LIMIT:
                self.names.clear()
            method_s = method.decode("latin-1")
            text = (f"{method_s} {route}" if route else method_s) if suffix is None else f"{method_s}{suffix}"
            found = self.names[key] = text.encode()
        return <bytes>found

    cdef int span_head(self, _Buf b, bytes trace_id, bytes span_id, Py_ssize_t at, bytes parent,
                       bytes trace_state, bytes name_bytes, int kind, double base, double start,
                       double end) except -1:
        """``span_id``: 16 hex digits at ``at`` (a traceparent line holds an attempt's)."""
        b.hex_field(1, trace_id, 0, 16)
        b.hex_field(2, span_id, at, 8)
        if trace_state:
            b.field(3, PyBytes_AS_STRING(trace_state), len(trace_state))
        if parent is not None:
            b.hex_field(4, parent, 0, 8)
        b.field(5, PyBytes_AS_STRING(name_bytes), len(name_bytes))
        b.varint(6 << 3 | 0)
        b.varint(kind)
        b.fixed64(7, <unsigned long long>((base + start) * 1e9))
        b.fixed64(8, <unsigned long long>((base + end) * 1e9))
        return 0

    cdef int span_status(self, _Buf b, object message) except -1:
        """Status{2: message, 3: code ERROR} as field 15."""
        cdef bytes text = (<str>message).encode() if message else b""
        cdef Py_ssize_t n = (1 + _varint_size(len(text)) + len(text) if text else 0) + 2
        b.varint(15 << 3 | 2)
        b.varint(n)
        if text:
            b.field(2, PyBytes_AS_STRING(text), len(text))
        b.varint(3 << 3 | 0)
        return b.varint(STATUS_ERROR)

    cdef int flush_span(self) except -1:
        """The span in ``scratch`` as a ScopeSpans.spans field of the output."""
        self.out.field(2, self.scratch.data, self.scratch.size)
        self.scratch.size = 0
        return 0

    cpdef bytes export_request(self, list records, double base, bytes resource, bytes scope):
        """A whole collector.trace.v1.ExportTraceServiceRequest of ``records``: one
        ResourceSpans (``resource``: its Resource message) with one ScopeSpans (``scope``: its
        InstrumentationScope), in one allocation: a batch is ~1 MB, and building it by
        concatenation copied it four times."""
        cdef Py_ssize_t spans, scope_spans, resource_spans, total
        cdef _Buf head = _Buf()
        cdef bytes out
        self.encode_spans(records, base)
        spans = self.out.size
        scope_spans = 1 + _varint_size(len(scope)) + len(scope) + spans
        resource_spans = 1 + _varint_size(len(resource)) + len(resource) + 1 + _varint_size(scope_spans) + scope_spans
        head.varint(1 << 3 | 2)                     # ExportTraceServiceRequest.resource_spans
        head.varint(resource_spans)
        head.field(1, PyBytes_AS_STRING(resource), len(resource))     # ResourceSpans.resource
        head.varint(2 << 3 | 2)                     # ResourceSpans.scope_spans
        head.varint(scope_spans)
        head.field(1, PyBytes_AS_STRING(scope), len(scope))           # ScopeSpans.scope
        total = head.size + spans
        out = PyBytes_FromStringAndSize(NULL, total)
        memcpy(PyBytes_AS_STRING(out), head.data, head.size)
        memcpy(PyBytes_AS_STRING(out) + head.size, self.out.data, spans)
        return out

    cpdef bytes encode(self, list records, double base):
        """``records``' spans, as the ``spans`` fields of a ScopeSpans."""
        self.encode_spans(records, base)
        return PyBytes_FromStringAndSize(self.out.data, self.out.size)

    cdef int encode_spans(self, list records, double base) except -1:
        """``records``' spans; ``base``: wall clock minus monotonic clock, in seconds."""
        cdef RequestRecord r
        cdef SpanRecord a
        cdef _Buf b = self.scratch
        cdef int status
        cdef bytes method, target, path, query, server_span
        cdef Upstream up
        cdef Py_ssize_t q
        self.out.size = 0
        for r in records:
            status, method, target, server_span = r.status, r.method, r.target, r.server_span
            self.span_head(b, r.trace_id, server_span, 0, r.parent_span, r.trace_state,
                           self.name(method, r.route, None), KIND_SERVER, base, r.start, r.end)
            b.attr_text(b"http.request.method", method)
            q = target.find(b"?")
            path = target[:q] if q >= 0 else target
            query = target[q + 1:] if q >= 0 else b""
            b.attr_text(b"url.path", path)
            if query:
                b.attr_text(b"url.query", query)
            if r.host is not None:
                self.host(b, r.host)
            b.attr_text(b"client.address", r.client)
            if r.h2:
                b.attr_str(b"network.protocol.version", b"2", 1)
            else:
                b.attr_str(b"network.protocol.version", b"1.1", 3)
            if status:
                b.attr_int(b"http.response.status_code", status)
            self.names_block(b, r.route, r.service, None)
            b.attr_text(b"gateway.request_id", r.request_id)
            b.attr_int(b"gateway.attempts", r.attempts)
            if status >= 500:
                b.attr_text(b"error.type", str(status))
            if status >= 500 or status == 0:
                self.span_status(b, r.error)
            self.flush_span()
            a = r.spans
            while a is not None:
                if a.number == 0:
                    self.mirror_span(b, r, a, base)
                else:
                    self.attempt_span(b, r, a, base)
                self.flush_span()
                a = a.next
        return 0

    cdef int attempt_span(self, _Buf b, RequestRecord r, SpanRecord a, double base) except -1:
        cdef Upstream up = a.upstream
        cdef str kind = a.kind
        self.span_head(b, r.trace_id, a.line, LINE_SPAN_START, r.server_span, r.trace_state,
                       self.name(r.method, None, ""), KIND_CLIENT, base, a.start, a.end)
        b.attr_text(b"http.request.method", r.method)
        self.names_block(b, r.route, r.service, up)
        if a.status:
            b.attr_int(b"http.response.status_code", a.status)
        if a.number > 1:
            b.attr_int(b"http.request.resend_count", a.number - 1)
        b.attr_int(b"gateway.attempt", a.number)
        if kind is not None:
            self.text(b, b"gateway.failure_kind", kind)
        if a.t_connect > 0:
            b.attr_double(b"gateway.upstream_connect_ms", round(a.t_connect * 1000, 3))
        if kind is not None:
            self.text(b, b"error.type", kind)
        elif a.status >= 400:
            b.attr_text(b"error.type", str(a.status))
        if kind is not None or a.status >= 400:
            self.span_status(b, kind)
        return 0

    cdef int mirror_span(self, _Buf b, RequestRecord r, SpanRecord a, double base) except -1:
        self.span_head(b, r.trace_id, a.line, LINE_SPAN_START, r.server_span, r.trace_state,
                       self.name(r.method, None, " mirror"), KIND_CLIENT, base, a.start, a.end)
        b.attr_text(b"http.request.method", r.method)
        if r.route is not None:
            self.text(b, b"gateway.route", r.route)
        b.attr_bool(b"gateway.mirror", True)
        return b.attr_text(b"gateway.service", ",".join([m.service.key for m in a.mirrors]))
