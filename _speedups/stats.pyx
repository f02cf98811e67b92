# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""What the request path counts: the worker's counters (``Stat``, by index), and per
upstream and route a ``TrafficStats`` (responses by class, latency histogram).  A worker
reports only the ``Reported`` objects whose counters moved (``touch``)."""

# Context.counters, by index (the enum in stats.pxd), and their names in .stats.
STAT_NAMES = ("requests", "responses_2xx", "responses_3xx", "responses_4xx", "responses_5xx",
              "retries", "upstream_connects", "connect_failures", "downstream_connections",
              "internal_errors", "connections_refused", "redispatched",
              "overflow_max_connections", "overflow_max_pending", "overflow_max_requests",
              "overflow_max_retries")
assert len(STAT_NAMES) == N_STATS

# TrafficStats.denied, by index (the DENY_* enum in stats.pxd)
DENIAL_NAMES = ("rate_limited", "unauthenticated", "forbidden")
assert len(DENIAL_NAMES) == N_DENIALS

# Latency histogram bucket upper bounds (seconds), Prometheus-style; the last is +Inf.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
cdef double[13] _BOUNDS = [    # LATENCY_BOUNDS as a C array, for record()
   0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
assert len(LATENCY_BOUNDS) == N_BUCKETS - 1
assert TRAFFIC_LEN == 1 + 6 + N_BUCKETS + 1 + N_DENIALS

# BackendStats.failures / .retries, by index (the enum in stats.pxd): the exchange's failure
# kinds (exchange.pyx KIND_*), "status" (a retried answer: retry_on statuses, gRPC refusals)
# and "ejected" (re-dispatched off an endpoint ejected while the request waited).
CAUSE_NAMES = ("connect_failed", "connect_timeout", "upstream_reset", "upstream_timeout",
               "bad_response", "status", "ejected")
assert len(CAUSE_NAMES) == N_CAUSES
assert BACKEND_LEN == 3 * (1 + N_BUCKETS + 1) + 2 * N_CAUSES


cdef int status_class_stat(int status):
    """The counter of a response status (N_STATS: none, the client got no status)."""
    if status >= 500:
        return ST_5XX
    if status >= 400:
        return ST_4XX
    if status >= 300:
        return ST_3XX
    if status >= 200:
        return ST_2XX
    return N_STATS


cdef class TrafficStats:
    """Counters of one upstream or route: responses by status class and a latency histogram."""

    def __cinit__(self):
        cdef int i
        for i in range(6):
            self.by_class[i] = 0
        for i in range(N_BUCKETS):
            self.buckets[i] = 0
        for i in range(N_DENIALS):
            self.denied[i] = 0
        self.latency_sum = 0.0
        self.count = 0

    cdef void deny(self, int kind):
        """A request the route's edge policy answered (its record() comes as well)."""
        self.denied[kind] += 1

    cdef void record(self, int status, double seconds):
        cdef int i = 0
        self.count += 1
        self.by_class[status // 100 if 100 <= status < 600 else 0] += 1
        self.latency_sum += seconds
        while i < N_BUCKETS - 1 and seconds > _BOUNDS[i]:
            i += 1
        self.buckets[i] += 1

    cpdef list as_list(self):
        """Flat, for the worker's report, in the TRAFFIC_* order (stats.pxd): [count,
        by_class[0..5], buckets..., latency_sum, denied...] (gateway.stats.traffic_dict
        turns it into the as_dict shape)."""
        cdef int i
        out = [self.count]
        for i in range(6):
            out.append(self.by_class[i])
        for i in range(N_BUCKETS):
            out.append(self.buckets[i])
        out.append(self.latency_sum)
        for i in range(N_DENIALS):
            out.append(self.denied[i])
        return out

    def as_dict(self):
        return {"requests": self.count,
                "responses": {f"{c}xx": self.by_class[c] for c in range(1, 6)},
                "errors_no_status": self.by_class[0],
                "latency_buckets": [self.buckets[i] for i in range(N_BUCKETS)],
                "latency_sum": self.latency_sum,
                "denied": dict(zip(DENIAL_NAMES, (self.denied[i] for i in range(N_DENIALS))))}


cdef class Reported:
    """What a worker reports on: it joins ``touched_sink`` when its counters move, once
    until the next report, so that a report costs what changed, not every endpoint."""

    cdef void touch(self):
        if not self.touched and self.touched_sink is not None:
            self.touched = True
            self.touched_sink.append(self)


cdef inline int bucket_of(double seconds) noexcept:
    """The histogram bucket ``seconds`` falls in: the first bound it does not exceed."""
    cdef int i = 0
    while i < N_BUCKETS - 1 and seconds > _BOUNDS[i]:
        i += 1
    return i


cdef class Histogram:
    """Prometheus-style buckets (LATENCY_BOUNDS) with sum and count."""

    def __cinit__(self):
        cdef int i
        for i in range(N_BUCKETS):
            self.buckets[i] = 0
        self.total = 0.0
        self.count = 0

    cdef void observe(self, double seconds):
        self.count += 1
        self.total += seconds
        self.buckets[bucket_of(seconds)] += 1

    def as_list(self):
        """[count, buckets..., sum]: the HISTOGRAM_* positions (stats.pxd)."""
        cdef int i
        out = [self.count]
        for i in range(N_BUCKETS):
            out.append(self.buckets[i])
        out.append(self.total)
        return out


cdef class BackendStats(Reported):
    """Per (route, service, cluster), for the latency histograms of /metrics and the
    dashboard: a route's own TrafficStats cannot say which cluster served, and an
    Upstream's cannot say which route sent.  Found per request through two dict lookups
    on keys whose hash is cached (``Route.backends``: Service, then cluster name)."""

    def __init__(self, tuple key, list touched=None):
        cdef int i
        self.key = key
        self.duration = Histogram()
        self.connect = Histogram()
        self.response = Histogram()
        for i in range(N_CAUSES):
            self.failures[i] = 0
            self.retries[i] = 0
        self.touched = False
        self.touched_sink = touched
        self.exemplars = None

    cdef void exemplify(self, double seconds, bytes trace_id, double wall_time):
        """A traced request's duration as its bucket's exemplar (OpenMetrics: the trace a
        dashboard's latency point links to); the latest per bucket until the next report."""
        if self.exemplars is None:
            self.exemplars = [None] * N_BUCKETS
        self.exemplars[bucket_of(seconds)] = (trace_id, seconds, wall_time)

    def take_exemplars(self):
        """[(bucket, trace id, seconds, wall time)] set since the last call, for the report."""
        if self.exemplars is None:
            return []
        out = [(i, e[0].decode(), e[1], e[2]) for i, e in enumerate(self.exemplars) if e is not None]
        self.exemplars = None
        return out

    def counters(self):
        """[duration..., connect..., response..., failures..., retries...] (each histogram
        as Histogram.as_list): the BACKEND_* positions (stats.pxd), for the worker's report."""
        cdef int i
        self.touched = False
        out = self.duration.as_list() + self.connect.as_list() + self.response.as_list()
        for i in range(N_CAUSES):
            out.append(self.failures[i])
        for i in range(N_CAUSES):
            out.append(self.retries[i])
        return out
