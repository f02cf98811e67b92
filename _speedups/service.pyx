# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The snapshot objects the request path reads: a ``Route`` (its services, rewrite,
timeouts, retry settings, filters, traffic counters) and a ``Service`` (its endpoint
table and circuit breakers).  Built by ``gateway.dataplane`` per snapshot, never per
request; the request path only reads them (and bumps their counters)."""
from _speedups.accesslog cimport exact_json
from _speedups.stats cimport TrafficStats


cdef class Service:
    """A merged service of the snapshot: its endpoint table and the Upstream per index."""

    def __init__(self, str key, EndpointTable table):
        self.key = key
        self.json_key = exact_json(key)
        self.table = table
        self.outlier_statuses = frozenset((502, 503, 504))

    def breaker_state(self):
        """{limit: (in use, max or 0)}, for the admin API and tests."""
        return {"max_connections": (self.connections, self.max_connections),
                "max_pending": (self.pending, self.max_pending),
                "max_requests": (self.active_requests, self.max_requests),
                "max_retries": (self.active_retries, self.max_retries)}


cdef class Route(Reported):
    """A route of the snapshot, prepared for the request path."""

    def __init__(self, str name, tuple services, EndpointTable split, bytes rewrite_from,
                 bytes rewrite_to, double timeout, int attempts, frozenset retry_statuses,
                 bint retry_timeout, double per_try_timeout, TrafficStats traffic=None,
                 list touched=None, double backoff=0.0, bint idempotent=False):
        self.name = name
        self.json_name = exact_json(name)
        self.services = services
        self.split = split
        self.rewrite_from = rewrite_from
        self.rewrite_to = rewrite_to
        self.timeout = timeout
        self.attempts = attempts
        self.retry_statuses = retry_statuses if retry_statuses else None
        self.backoff = backoff
        self.retry_timeout = retry_timeout
        self.idempotent = idempotent
        self.per_try_timeout = per_try_timeout
        self.traffic = traffic if traffic is not None else TrafficStats()   # kept across reloads
        self.touched = False
        self.touched_sink = touched
        self.backends = {}

    def counters(self):
        """``traffic.as_list()``, for the worker's report."""
        self.touched = False
        return self.traffic.as_list()

    cdef Service pick_service(self, int *index):
        """A service by the split's weights (``index``: its place in ``services``); None for
        the share of invalid backendRefs."""
        cdef int i
        index[0] = 0
        if self.split is None:
            return self.services[0]
        i = self.split.pick(None)
        if i >= len(self.services):
            return None
        index[0] = i if i >= 0 else 0
        return self.services[index[0]]

    cdef bytes rewrite_target(self, bytes target):
        """``rewrite: {prefix: ...}``: the matched prefix replaced, one slash between."""
        if self.rewrite_from is None or not target.startswith(self.rewrite_from):
            return target
        rest = target[len(self.rewrite_from):]
        if self.rewrite_to.endswith(b"/") and rest.startswith(b"/"):
            rest = rest[1:]
        elif rest and not self.rewrite_to.endswith(b"/") and not rest[:1] in (b"/", b"?"):
            rest = b"/" + rest
        return (self.rewrite_to + rest) or b"/"
