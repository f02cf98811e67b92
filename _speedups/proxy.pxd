from _speedups.http cimport BodyFramer, RequestHead, ResponseHead
from _speedups.filters cimport RouteFilters
from _speedups.forwarded cimport TrustedProxies
from _speedups.path cimport PathPolicy
from _speedups.router cimport Router
from _speedups.table cimport EndpointTable


cdef enum:
    N_BUCKETS = 14                      # len(LATENCY_BOUNDS) + 1 (+Inf)


cdef enum:                              # ProxyContext.counters (STAT_NAMES in proxy.pyx)
    ST_REQUESTS, ST_2XX, ST_3XX, ST_4XX, ST_5XX, ST_RETRIES, ST_UPSTREAM_CONNECTS,
    ST_CONNECT_FAILURES, ST_CONNECTIONS, ST_INTERNAL_ERRORS, ST_REFUSED, ST_REDISPATCHED,
    ST_OVERFLOW_CONNECTIONS, ST_OVERFLOW_PENDING, ST_OVERFLOW_REQUESTS, ST_OVERFLOW_RETRIES, N_STATS


cdef class TrafficStats:
    cdef long long by_class[6]              # [0]: no status (client gone), [1..5]: 1xx..5xx
    cdef long long buckets[N_BUCKETS]
    cdef readonly double latency_sum
    cdef readonly long long count
    cdef inline void record(self, int status, double seconds)
    cpdef list as_list(self)


cdef class Reported:
    """Counters a worker reports: ``touch()`` puts it in ProxyContext.touched once per report."""
    cdef bint touched
    cdef list touched_sink                  # ProxyContext.touched, or None
    cdef void touch(self)


cdef class Upstream(Reported):
    cdef readonly tuple key                 # (cluster, ip, port)
    cdef readonly str pool                  # "" (shared) or the TLS service that owns it
    cdef readonly str ip
    cdef readonly int port
    cdef public int weight
    cdef readonly str cluster
    cdef readonly str host                  # "ip:port", as logged
    cdef readonly bytes host_bytes
    cdef readonly bytes json_host           # JSON-encoded once, for the access log
    cdef readonly bytes json_cluster
    cdef list idle                          # pooled UpstreamProtocol, LIFO
    cdef public bint removed
    cdef public long long requests
    cdef public long long failures
    cdef public int inflight                # requests sent (or being sent) to it now
    # Passive health is decided by the control plane: every failure is reported, and a
    # success only while this is set (after a failure here, or when the control plane
    # asks because another worker reported one).
    cdef public bint report_success
    cdef public int max_idle
    cdef public object ssl                  # SSLContext when the service speaks TLS, else None
    cdef public str server_hostname
    cdef readonly TrafficStats traffic
    cdef UpstreamProtocol take_idle(self)
    cdef void give_back(self, UpstreamProtocol conn, double now)
    cpdef int close_idle(self, double older_than) except -1


cdef class Service:
    cdef readonly str key
    cdef readonly bytes json_key
    cdef readonly EndpointTable table
    # Circuit breakers (0: no limit), set from the config, and what they count.
    cdef public int max_connections         # upstream connections opened for it, still open
    cdef public int max_pending             # its requests waiting for a new connection
    cdef public int max_requests            # its requests in flight
    cdef public int max_retries             # its requests that are retrying, concurrently
    cdef readonly int connections
    cdef readonly int pending
    cdef readonly int active_requests
    cdef readonly int active_retries
    cdef public frozenset outlier_statuses  # answers passive health counts as 5xx
    cdef public bytes hash_header           # ring_hash on this request header (lower case) ...
    cdef public bint hash_source_ip         # ... or on the client address ...
    cdef public bytes hash_cookie           # ... or on this cookie, set when missing
    cdef public bytes hash_cookie_attributes    # "; Path=/; Max-Age=..." after its value
    cdef public bint observe_latency        # peak_ewma: feed response times to the table


cdef class Route(Reported):
    cdef readonly str name
    cdef readonly bytes json_name
    cdef readonly tuple services            # of Service
    cdef readonly EndpointTable split       # weighted choice among services; None for one
    cdef readonly bytes rewrite_from
    cdef readonly bytes rewrite_to
    cdef readonly double timeout
    cdef readonly int attempts
    cdef readonly frozenset retry_statuses  # answers to retry on; None: none
    cdef readonly double backoff            # before a retry after an answer or a timeout
    cdef readonly bint retry_timeout
    cdef readonly double per_try_timeout
    cdef readonly TrafficStats traffic
    cdef public RouteFilters filters        # None: no filters (the common, cheapest case)
    cdef Service pick_service(self)


cdef class ProxyContext:
    cdef readonly object loop
    cdef readonly Router router
    cdef public double connect_timeout
    cdef public double response_timeout
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
    cdef public PathPolicy path_policy      # how paths are read before route matching
    cdef public TrustedProxies trusted_proxies  # whose X-Forwarded-For is believed; None: nobody's
    cdef readonly object access_log
    cdef list log_parts                     # the access log's buffer, appended to directly
    cdef Py_ssize_t log_size
    cdef Py_ssize_t log_limit
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
    cdef object ticker
    cdef double tick_interval
    cdef bytes next_request_id(self)
    cdef void write_log_line(self, bytes line)


cdef class UpstreamProtocol:
    cdef readonly Upstream upstream
    cdef DownstreamProtocol owner
    cdef object transport
    cdef bint closed
    cdef bint eof
    cdef bint upstream_extra                # sent bytes past its response: out of sync
    cdef bint paused                        # reading paused because the client is slow
    cdef double idle_since
    cdef Service breaker                    # counts this connection in max_connections
    cdef void pause(self)
    cdef void resume(self)
    cdef void close(self)
    cdef void abort(self)


cdef class DownstreamProtocol:
    # per connection
    cdef ProxyContext ctx
    cdef bytes proto
    cdef object transport
    cdef str client
    cdef bytes client_bytes
    cdef int state
    cdef bytes buf                          # received, not yet consumed
    cdef Py_ssize_t scan_from
    cdef int read_paused                    # PAUSE_* reasons
    cdef long requests_served
    cdef int deadline_kind
    cdef double deadline
    cdef double total_deadline
    cdef bint client_eof
    cdef bint keep_alive
    cdef UpstreamProtocol up
    cdef int connect_id                     # invalidates callbacks of abandoned connects
    # per request
    cdef RequestHead head
    cdef bytes norm_target                  # normalized path + query; None when unchanged
    cdef bytes client_ip                    # the client: the peer, or found in X-Forwarded-For
    cdef bytes request_id
    cdef Route route
    cdef Service service
    cdef bytes upstream_target
    cdef Upstream upstream
    cdef int endpoint_index
    cdef unsigned long long table_generation
    cdef list tried                         # Upstreams tried, in order
    cdef int attempts
    cdef object backoff_timer               # a retry waiting for its backoff, or None
    cdef bytes set_cookie                   # ring_hash cookie for the response, or None
    cdef bytes mirror_head                  # a mirror's copy waiting for the request body
    cdef bytes cookie_value                 # ... and the value it was hashed on
    cdef bint budgeted_retry
    cdef bint budget_refused
    cdef Service breaker_service            # counts this request in max_requests
    cdef bint breaker_retry                 # ... and in max_retries
    cdef BodyFramer req_framer
    cdef BodyFramer resp_framer
    cdef ResponseHead resp_head
    cdef bytes resp_buf
    cdef bytes head_out                     # response head not yet written (joins the body)
    cdef bytes held_body                    # body of a small response, held to go out with it
    cdef bint response_started
    cdef list pending
    cdef Py_ssize_t pending_size
    cdef list replay
    cdef Py_ssize_t replay_size
    cdef bint replayable
    cdef bint written_upstream              # some attempt wrote to an upstream
    cdef int status
    cdef str error
    cdef double t_start
    cdef double t_try
    cdef double t_connect
    cdef double t_response
    cdef long long bytes_sent
    cdef long long bytes_received

    cdef void pause_reading(self, int reason)
    cdef void resume_reading(self, int reason)
    cdef void process(self)
    cdef bint read_head(self) except -1
    cdef void reject(self, int status, str reason)
    cdef void start_request(self, RequestHead head)
    cdef bint normalize_path(self, RequestHead head) except -1
    cdef bytes rewrite_target(self, bytes target)
    cdef bint answer_by_filters(self, RouteFilters filters, RequestHead head) except -1
    cdef void apply_request_filters(self, RouteFilters filters, RequestHead head)
    cdef void mirror(self, bytes copy)
    cdef void try_upstream(self)
    cdef int pick_retry(self, EndpointTable table) except -2
    cdef void retry_after_backoff(self)
    cdef void cancel_backoff(self)
    cdef void connect(self, Upstream upstream)
    cdef void on_connected(self, object task, object timer, int connect_id, Upstream upstream)
    cdef void send_head(self, UpstreamProtocol conn)
    cdef void send_body(self, bytes chunk)
    cdef void request_sent_whole(self)
    cdef void arm_response_timer(self)
    cdef void upstream_data(self, UpstreamProtocol conn, bytes data)
    cdef bint read_response_head(self, Py_ssize_t end) except -1
    cdef bint on_final_head(self, ResponseHead head) except -1
    cdef void forward_response_body(self, bytes data)
    cdef void start_tunnel(self, ResponseHead head)
    cdef void upstream_gone(self, UpstreamProtocol conn, object exc)
    cdef bint retry_allowed(self, bint sent)
    cdef bint other_cluster_available(self)
    cdef void upstream_failed(self, int connect_id, Upstream upstream, str kind, str reason, bint before_send)
    cdef void bad_response(self, str reason)
    cdef void abort_response(self, str reason)
    cdef void report(self, object kind, bint ok)
    cdef void set_deadline(self, int kind, double delay)
    cdef void check_deadlines(self, double now)
    cdef void upstream_timed_out(self, bint per_try, str what)
    cdef void release_endpoint(self)
    cdef void respond_error(self, int status, str message, bytes location=*, bytes extra_header=*)
    cdef bint over_limit(self, Service service, int limit, int count, bytes name, int stat)
    cdef void set_hash_key(self, EndpointTable table)
    cdef void fail_request(self, int status, str reason)
    cdef void finish_exchange(self)
    cdef void finish_request(self, bint completed)
    cdef void log_request(self, double duration)
    cpdef close(self)
    cpdef internal_error(self, object exc)
    cdef bint redispatch(self, Upstream upstream)
