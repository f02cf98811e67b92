cdef class Tracer:
    """Spans recorded on the request path, taken by an exporter off it (gateway.tracing)."""
    cdef readonly double sample_ratio
    cdef unsigned long long threshold       # sampled: the trace id's random 64 bits below it
    cdef unsigned long long rng             # xorshift64* state (ids, not secrets)
    cdef list records                       # finished requests' span records, oldest first
    cdef public Py_ssize_t max_queue        # records held at most; more are dropped (counted)
    cdef public Py_ssize_t batch_size       # ``wake`` is called when this many are held
    cdef public object wake                 # the exporter's doorbell, or None
    cdef readonly long long recorded        # records queued
    cdef readonly long long dropped         # records dropped: the queue was full
    cdef readonly double mono_base          # monotonic() and time.time() read together:
    cdef readonly double wall_base          # span times are monotonic, exported as wall
    cdef unsigned long long next64(self)
    cdef bytes _hex(self, int words)
    cdef bytes span_id(self)
    cdef bytes trace_id(self)
    cdef bytes traceparent_line(self, bytes trace_id, bint sampled)
    cdef bint sample(self, bytes trace_id)
    cdef void push(self, tuple record)


# "traceparent: 00-{trace id}-{span id}-0x\r\n": the span id's place in that line
cdef enum:
    LINE_SPAN_START = 49
    LINE_SPAN_END = 65
    LINE_SIZE = 70

# (trace id, parent span id, sampled, tracestate) from the request's headers, or None
cdef tuple parse_traceparent(bytes value)
cdef tuple parse_b3_single(bytes value)
cdef bytes pad_trace_id(bytes value)
