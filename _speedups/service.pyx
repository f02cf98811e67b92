# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The snapshot objects the request path reads: a ``Route`` (its services, rewrite,
timeouts, retry settings, filters, traffic counters) and a ``Service`` (its endpoint
table and circuit breakers).  Built by ``gateway.dataplane`` per snapshot, never per
request; the request path only reads them (and bumps their counters)."""
import base64 as _base64

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


cdef class SessionPolicy:
    """A route's session persistence: the token naming the endpoint a session's requests go to,
    "cluster ip port created last-used" (wall-clock seconds: tokens outlive a process and are
    read by every replica), base64url in a cookie or a header. Not signed: a client that
    forges one only chooses among the endpoints that serve, as it could by retrying."""

    def __init__(self, str name, bint header=False, double absolute=0.0, double idle=0.0, bint permanent=False):
        self.name = name.encode()
        self.lookup = self.name.lower() if header else self.name
        self.header = header
        self.absolute = absolute
        self.idle = idle
        max_age = f"; Max-Age={int(absolute)}" if permanent and absolute > 0 else ""
        self.cookie_attributes = f"; Path=/{max_age}; HttpOnly".encode()

    cdef tuple endpoint(self, bytes token, double now):
        """(the endpoint key, the session's start) the token names, or None when it names none
        or its session has ended."""
        try:
            fields = _base64.urlsafe_b64decode(token + b"=" * ((4 - len(token) % 4) % 4)).split(b"\x1f")  # (cdivision: no negative modulo)
            cluster, ip, port, created, used = fields
            key = (cluster.decode(), ip.decode(), int(port))
            started, last = float(created), float(used)
        except (ValueError, TypeError, UnicodeDecodeError):
            return None
        if (self.absolute > 0 and now - started > self.absolute) or (self.idle > 0 and now - last > self.idle):
            return None
        return key, started

    cdef bytes token(self, tuple key, double created, double now):
        cluster, ip, port = key
        raw = b"\x1f".join((cluster.encode(), ip.encode(), str(port).encode(),
                            str(int(created)).encode(), str(int(now)).encode()))
        return _base64.urlsafe_b64encode(raw).rstrip(b"=")

    def endpoint_of(self, bytes token, double now):
        """``endpoint`` for Python (tests)."""
        return self.endpoint(token, now)

    def token_for(self, tuple key, double created, double now):
        return self.token(key, created, now)


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
        self.session = None

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
