from _speedups.accesslog cimport LogBuffer
from _speedups.forwarded cimport TrustedProxies
from _speedups.path cimport PathPolicy
from _speedups.router cimport Router
from _speedups.service cimport Service
from _speedups.stats cimport N_STATS
from _speedups.tracing cimport Tracer


cdef class Port:
    """The routes of one listening address, read per request by the connections accepted
    there; ``router`` is replaced whole when the config changes."""
    cdef public Router router


cdef class Connection:
    """A client connection as the context sees it: deadlines to check, idle or not, and
    requests to move off an ejected endpoint.  ``downstream.Http1Connection`` is one; an
    HTTP/2 connection (several exchanges at once) would be another."""
    cdef Context ctx
    cdef void check_deadlines(self, double now)
    cdef bint is_idle(self)                 # no request in progress, nothing buffered
    cdef void drain(self, double deadline)  # idle: close by then unless a request comes
    cdef int redispatch(self, Service service, set gone) except -1
    cpdef close(self)
    cpdef internal_error(self, object exc)


cdef class Context:
    cdef readonly object loop
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
    cdef object ticker
    cdef double tick_interval
    cdef bytes next_request_id(self)
