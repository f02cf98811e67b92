from _speedups.accesslog cimport LogBuffer
from _speedups.forwarded cimport TrustedProxies
from _speedups.path cimport PathPolicy
from _speedups.reactor cimport Protocol, Reactor
from _speedups.router cimport Router
from _speedups.service cimport Service
from _speedups.stats cimport N_STATS
from _speedups.tracing cimport Tracer


cdef enum:
    CLEARTEXT_AUTO      # HTTP/1.1, and HTTP/2 after its preface's request line (in the order
                        # of gateway.config.model.CLEARTEXT, which names them)
    CLEARTEXT_HTTP1
    CLEARTEXT_H2C       # HTTP/2 only: other first bytes are nghttp2's bad preface (GOAWAY)


cdef inline double earliest(double a, double b) noexcept:
    """The earlier of two deadlines, 0 meaning none."""
    if a == 0 or (b != 0 and b < a):
        return b
    return a


cdef class Port:
    """The routes of one listening address, read per request by the connections accepted
    there; ``router`` is replaced whole when the config changes."""
    cdef public Router router


cdef class Connection(Protocol):
    """A client connection as the context sees it: deadlines to check, idle or not, and
    requests to move off an ejected endpoint.  ``downstream.Http1Connection`` is one,
    ``h2_downstream.H2Connection`` (several exchanges at once) another."""
    cdef Context ctx
    cdef double timer_due                   # when the context's timers look at it next ...
    cdef Py_ssize_t timer_slot              # ... from this place in their heap + 1; 0: not there
    # Act on the deadlines that are due; return the earliest still to come (0: none).
    cdef double check_deadlines(self, double now)
    cdef bint is_idle(self)                 # no request in progress, nothing buffered
    cdef void drain(self, double deadline)  # shutting down: idle ones close by then (or go away)
    cdef int redispatch(self, Service service, set gone) except -1
    cpdef close(self)
    cpdef internal_error(self, object exc)


cdef class Context:
    cdef readonly object loop
    cdef public Reactor reactor             # plain upstream connections are made on it (None: uvloop's)
    cdef readonly Port port                 # the file's listeners (listen, tls.listen)
    cdef public double connect_timeout
    cdef public double response_timeout
    cdef public double upstream_unresponsive   # s; 0: the kernel's defaults (see exchange.pyx)
    cdef public double idle_timeout
    cdef public double header_timeout
    cdef public Py_ssize_t max_head_size
    cdef public Py_ssize_t max_headers
    cdef public Py_ssize_t max_uri
    cdef public long long max_body
    cdef public Py_ssize_t max_response_head
    cdef public Py_ssize_t max_connections
    cdef public long max_requests_per_connection
    cdef public double body_idle_timeout
    cdef public int max_concurrent_streams  # HTTP/2 streams a client may have open at once
    cdef public PathPolicy path_policy      # how paths are read before route matching
    cdef public int cleartext               # the plain ports speak: CLEARTEXT_AUTO | _HTTP1 | _H2C
    cdef public TrustedProxies trusted_proxies  # whose X-Forwarded-For is believed; None: nobody's
    cdef LogBuffer log                      # None: no access log
    cdef public bytes via
    cdef bytes request_id_prefix
    cdef unsigned long long request_counter
    cdef readonly set connections
    cdef public bint draining
    cdef public double drain_grace          # idle keep-alive connections close this soon when draining
    cdef public object on_upstream_result   # f(service, upstream, failure kind or None)
    cdef long long counters[N_STATS]        # bumped per request; read as .stats
    cdef readonly list touched              # Upstreams and Routes whose counters moved
    cdef public long requests_in_flight
    cdef public long retries_in_flight      # sent requests being retried (budgeted)
    cdef public double retry_budget_ratio
    cdef public long retry_budget_min
    cdef public Tracer tracer               # None: tracing off (the exchange's one check)
    cdef readonly dict backend_stats        # (route, service, cluster) -> stats.BackendStats
    cdef list timer_heap                    # Connections by timer_due, earliest first
    cdef object timer_handle                # the loop's one timer, for the heap's first
    cdef double timer_armed                 # ... due then (0: none)
    cdef bint timers_running
    cdef void wake_at(self, Connection conn, double due)
    cdef void forget(self, Connection conn)
    cdef void heap_remove(self, Py_ssize_t i)
    cdef void heap_up(self, Py_ssize_t i, Connection conn)
    cdef void heap_down(self, Py_ssize_t i, Connection conn)
    cdef void arm_timer(self, double due)
    cdef bytes next_request_id(self)
