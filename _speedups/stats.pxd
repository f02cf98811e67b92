cdef enum:
    N_BUCKETS = 14                      # len(LATENCY_BOUNDS) + 1 (+Inf)


cpdef enum:                             # TrafficStats.denied: why the route's edge policy answered
    DENY_RATE_LIMITED, DENY_UNAUTHENTICATED, DENY_FORBIDDEN, N_DENIALS      # DENIAL_NAMES


# The worker's report lists, by position (gateway.stats reads them by these names).
cpdef enum:                             # TrafficStats.as_list()
    TRAFFIC_COUNT = 0
    TRAFFIC_CLASSES = 1                 # by_class[0..5]: no status, 1xx .. 5xx
    TRAFFIC_BUCKETS = 7                 # the latency histogram, N_BUCKETS of them
    TRAFFIC_LATENCY_SUM = 7 + N_BUCKETS
    TRAFFIC_DENIED = 8 + N_BUCKETS      # N_DENIALS of them
    TRAFFIC_LEN = 8 + N_BUCKETS + N_DENIALS


cpdef enum:                             # Upstream.counters(): these, then the traffic list
    UPSTREAM_REQUESTS = 0
    UPSTREAM_FAILURES = 1               # gateway errors: connect failures, resets, timeouts
    UPSTREAM_IN_FLIGHT = 2              # gauges ...
    UPSTREAM_IDLE = 3                   # ... (zero once the worker is gone)
    UPSTREAM_TRAFFIC = 4


cdef enum:                              # BackendStats.failures / .retries, by cause (CAUSE_NAMES)
    CAUSE_CONNECT_FAILED, CAUSE_CONNECT_TIMEOUT, CAUSE_RESET, CAUSE_TIMEOUT, CAUSE_BAD_RESPONSE,
    CAUSE_STATUS, CAUSE_EJECTED, N_CAUSES


cpdef enum:                             # Histogram.as_list()
    HISTOGRAM_COUNT = 0
    HISTOGRAM_BUCKETS = 1               # N_BUCKETS of them, not cumulative
    HISTOGRAM_SUM = 1 + N_BUCKETS
    HISTOGRAM_LEN


cpdef enum:                             # BackendStats.counters(): three histograms, then by cause
    BACKEND_DURATION = 0
    BACKEND_CONNECT = HISTOGRAM_LEN
    BACKEND_RESPONSE = 2 * HISTOGRAM_LEN
    BACKEND_FAILURES = 3 * HISTOGRAM_LEN            # N_CAUSES of them
    BACKEND_RETRIES = 3 * HISTOGRAM_LEN + N_CAUSES  # N_CAUSES of them
    BACKEND_LEN = 3 * HISTOGRAM_LEN + 2 * N_CAUSES


cdef enum:                              # Context.counters (STAT_NAMES in stats.pyx)
    ST_REQUESTS, ST_2XX, ST_3XX, ST_4XX, ST_5XX, ST_RETRIES, ST_UPSTREAM_CONNECTS,
    ST_CONNECT_FAILURES, ST_CONNECTIONS, ST_INTERNAL_ERRORS, ST_REFUSED, ST_REDISPATCHED,
    ST_OVERFLOW_CONNECTIONS, ST_OVERFLOW_PENDING, ST_OVERFLOW_REQUESTS, ST_OVERFLOW_RETRIES, N_STATS


cdef class TrafficStats:
    cdef long long by_class[6]              # [0]: no status (client gone), [1..5]: 1xx..5xx
    cdef long long buckets[N_BUCKETS]
    cdef readonly double latency_sum
    cdef readonly long long count
    cdef long long denied[N_DENIALS]
    cdef void record(self, int status, double seconds)
    cdef void deny(self, int kind)
    cpdef list as_list(self)


cdef class Reported:
    """Counters a worker reports: ``touch()`` puts it in Context.touched once per report."""
    cdef bint touched
    cdef list touched_sink                  # Context.touched, or None
    cdef void touch(self)


cdef int status_class_stat(int status)


cdef class Histogram:
    cdef long long buckets[N_BUCKETS]       # LATENCY_BOUNDS, +Inf last (not cumulative)
    cdef readonly double total
    cdef readonly long long count
    cdef void observe(self, double seconds)


cdef class BackendStats(Reported):
    """One (route, service, cluster): what its requests took and why attempts failed."""
    cdef readonly tuple key                 # (route, service, cluster)
    cdef Histogram duration                 # request, first byte in to last byte out
    cdef Histogram connect                  # new upstream connections
    cdef Histogram response                 # request sent to response head
    cdef long long failures[N_CAUSES]       # failed attempts by cause
    cdef long long retries[N_CAUSES]        # retries (and re-dispatches) by the cause before them
    cdef list exemplars                     # per duration bucket (trace id, seconds, wall time) or None
    cdef void exemplify(self, double seconds, bytes trace_id, double wall_time)
