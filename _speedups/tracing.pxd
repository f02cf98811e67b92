cdef class SpanRecord:
    """An upstream attempt's span, or a mirror copy's (``number`` 0): kept with its request."""
    cdef readonly bytes line                # its traceparent line: the span id is in it
    cdef readonly object upstream           # the attempt's Upstream; None for a mirror copy
    cdef readonly int number                # attempt 1, 2, ...; 0: a mirror copy
    cdef readonly double start              # monotonic seconds
    cdef readonly double end
    cdef readonly str kind                  # failure kind, or None
    cdef readonly int status                # the answer's status, 0: none
    cdef readonly double t_connect          # -1: none, 0: a pooled connection
    cdef readonly double t_response         # -1: no answer
    cdef readonly object mirrors            # a mirror copy: the route's mirrors
    cdef readonly SpanRecord next


cdef class RequestRecord:
    """A kept request: its server span's fields and its attempts' (and copies') spans."""
    cdef readonly bytes trace_id
    cdef readonly bytes server_span
    cdef readonly bytes parent_span         # the client's span, or None
    cdef readonly bytes trace_state
    cdef readonly double start
    cdef readonly double end
    cdef readonly bytes method
    cdef readonly bytes host
    cdef readonly bytes target
    cdef readonly int status                # 0: none (the client left first)
    cdef readonly str route
    cdef readonly str service
    cdef readonly str error
    cdef readonly bytes client
    cdef readonly bint h2
    cdef readonly bytes request_id
    cdef readonly int attempts
    cdef readonly SpanRecord spans          # the first, in the order they ended (``next``)
    cdef readonly int n_spans               # 1 (its own) + those


cdef SpanRecord new_span(bytes line, object upstream, int number, double start, double end,
                         str kind, int status, double t_connect, double t_response, object mirrors)


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
    cdef void push(self, RequestRecord record)


# "traceparent: 00-{trace id}-{span id}-0x\r\n": the span id's place in that line
cdef enum:
    LINE_SPAN_START = 49
    LINE_SPAN_END = 65
    LINE_SIZE = 70

# (trace id, parent span id, sampled, tracestate) from the request's headers, or None
cdef tuple parse_traceparent(bytes value)
cdef tuple parse_b3_single(bytes value)
cdef bytes pad_trace_id(bytes value)
