from _speedups.context cimport Connection, Context, Port
from _speedups.filters cimport BackendFilters, RouteFilters
from _speedups.http cimport RequestHead, ResponseHead
from _speedups.policy cimport Denial
from _speedups.service cimport Route, Service, SessionPolicy
from _speedups.stats cimport BackendStats
from _speedups.tracing cimport SpanRecord, Tracer
from _speedups.table cimport EndpointTable
from _speedups.upstream cimport Upstream, UpstreamConnection, UpstreamOwner


cdef enum ExchangeState:
    X_IDLE                  # no request (before the first, after the last)
    X_ROUTING               # the head is here: route, service, endpoint to pick
    X_CONNECTING            # waiting for a new upstream connection
    X_WAITING               # sent (its body may still stream): waiting for the response head
    X_RESPONDING            # the response head is taken: its body streams to the client
    X_TUNNEL                # after 101 Switching Protocols: bytes both ways
    X_DONE                  # answered (or abandoned), counted and logged


cdef enum PauseReason:      # why the client's request body is not read now (a bit each)
    PAUSE_UPSTREAM_FULL = 1     # upstream's write buffer is full
    PAUSE_PENDING = 2           # body waiting for a connection passed the limit
    PAUSE_PIPELINE = 4          # pipelined requests waiting passed the limit


cdef class Downstream(Connection):
    """What an exchange needs from the client connection that carries it: where the
    response goes, and flow control of the request body.  One exchange at a time for
    HTTP/1.1; the interface names the exchange so that a connection may carry several."""
    cdef readonly bytes proto               # X-Forwarded-Proto: "https" behind a TLS listener
    cdef Port port                          # the routes of the address it was accepted on
    cdef bytes sni                          # TLS: the server name the client asked for, or None
    cdef bytes client_bytes                 # the peer's address
    cdef bint closed
    cdef bint keep_alive                    # the connection outlives this exchange (HTTP/1)
    cdef bint send_interim(self, Exchange ex, ResponseHead head) except -1
    cdef bint send_head(self, Exchange ex, ResponseHead head, int framing) except -1
    # The body bytes data[start:]; ``holdable``: body bytes still to come when the response
    # may be held back whole (a small sized one), else -1
    cdef bint send_body(self, Exchange ex, bytes data, Py_ssize_t start,
                        long long holdable) except -1
    cdef bint unsend(self, Exchange ex) except -1
    cdef bint send_error(self, Exchange ex, int status, str message, bytes location,
                         bytes extra_header) except -1
    # The upstream's 101: the exchange is a tunnel from now on; False when the downstream
    # refused it (and answered the exchange itself)
    cdef bint open_tunnel(self, Exchange ex, ResponseHead head) except -1
    cdef bint tunnel_data(self, Exchange ex, bytes data) except -1
    # The response's trailers (an HTTP/2 upstream's), before its end
    cdef bint send_trailers(self, Exchange ex, list headers) except -1
    # The end of a MODE_STREAM body (payload only, ended by its codec): HTTP/1.1 writes
    # the last chunk, with the trailers
    cdef bint end_body(self, Exchange ex) except -1
    cdef void pause_body(self, Exchange ex, int reason)
    cdef void resume_body(self, Exchange ex, int reason)
    cdef void exchange_done(self, Exchange ex, bint completed)
    # the response cannot be completed: end what carries it (the connection, or a stream),
    # at once (``reset``) or after what was written
    cdef void abort_exchange(self, Exchange ex, bint reset)


cdef class Exchange(UpstreamOwner):
    cdef Context ctx
    cdef Downstream downstream
    cdef int stream_id                      # HTTP/2: its stream; 0 for HTTP/1
    cdef object stream_key                  # HTTP/2: stream_id boxed once (its connection's map key)
    cdef double client_timeout              # a deadline the client asked for (grpc-timeout), 0: none
    cdef int grpc_status                    # a gRPC call's status, for the log; -1: none
    cdef ExchangeState state
    cdef UpstreamConnection up
    cdef int connect_id                     # invalidates callbacks of abandoned connects
    cdef RequestHead head
    cdef bint body_complete                 # the whole request body was received
    cdef bytes norm_target                  # normalized path + query; None when unchanged
    cdef bytes client_ip                    # the client: the peer, or found in X-Forwarded-For
    cdef bytes request_id
    cdef Route route
    cdef Service service
    cdef bytes upstream_target
    cdef object backoff_timer               # a retry waiting for its backoff, or None
    cdef bytes set_cookie                   # ring_hash cookie for the response, or None
    cdef bytes cookie_value                 # ... and the value it was hashed on
    cdef tuple session                      # sessionPersistence: (endpoint key, start) the request's token named, or None
    cdef bytes mirror_head                  # a mirror's copy waiting for the request body
    cdef list request_trailers              # a streamed body's (HTTP/2 client), or None
    cdef Upstream upstream
    cdef int endpoint_index
    cdef unsigned long long table_generation
    cdef list tried                         # Upstreams tried, in order (tried_upstreams())
    cdef int attempts
    cdef bint budgeted_retry
    cdef bint budget_refused
    cdef Service breaker_service            # counts this request in max_requests
    cdef bint breaker_retry                 # ... and in max_retries
    cdef ResponseHead resp_head
    cdef bint response_started
    cdef list pending                       # body not yet written (no connection yet)
    cdef Py_ssize_t pending_size
    cdef list replay                        # body written, kept for a retry; None: not kept
    cdef Py_ssize_t replay_size
    cdef bint replayable
    cdef bint written_upstream              # some attempt wrote to an upstream
    cdef int status
    cdef str error
    cdef int failed_status                  # the answer when no endpoint is left to try; 0: 502
    cdef list cors_fields                   # the CORS filter's fields for the answer, or None
    cdef BackendFilters backend_filters     # the picked backend's filters, or None
    cdef double response_deadline           # 0: none (per try, for the response head)
    cdef double total_deadline              # 0: none (route timeout)
    cdef double t_start
    cdef double t_try
    cdef double t_connect
    cdef double t_response
    cdef long long bytes_sent
    cdef long long bytes_received
    # Tracing (ctx.tracer set; trace_id is None when off)
    cdef Tracer tracer                      # ctx.tracer when the request began (None: off)
    cdef bytes trace_id                     # 32 hex digits
    cdef bytes parent_span                  # the client's span (traceparent, B3), or None
    cdef bytes server_span                  # this request's span (made when it is kept)
    cdef bytes trace_state
    cdef bint trace_sampled
    cdef bytes attempt_line                 # the attempt in progress: its traceparent line, or None
    cdef double t_attempt
    cdef SpanRecord trace_first             # spans to export (ended attempts, mirror copies) ...
    cdef SpanRecord trace_last              # ... linked by ``next``, in the order they ended
    cdef int trace_spans
    cdef bint trace_failed                  # an attempt failed: the trace is kept, whatever the ratio
    cdef bytes mirror_line                  # the mirrors' copy: its traceparent line, or None
    cdef BackendStats failed_stats          # where the cause of a coming retry is counted
    cdef int retry_cause

    # driven by the downstream
    cdef void start(self, RequestHead head, bint has_body, long long head_size)
    cdef void receive_body(self, bytes chunk)
    cdef void receive_trailers(self, list trailers)
    cdef void body_received(self)
    cdef bytes replay_as_sent(self)
    cdef void fail(self, int status, str reason)
    cdef void client_gone(self)
    cdef void forget_downstream(self)
    cdef void client_write_paused(self, bint paused)
    cdef void tunnel_in(self, bytes data)
    cdef bint tunnel_eof(self)
    cdef double next_deadline(self)
    cdef bint check_deadlines(self, double now) except -1
    cdef int redispatch_from(self, Service service, set gone) except -1
    # states
    cdef void route_request(self)
    cdef void dispatch(self)
    cdef bint normalize_path(self, RequestHead head) except -1
    cdef bint answer_by_filters(self, RouteFilters filters, RequestHead head) except -1
    cdef bint answer_by_limit(self, RouteFilters filters, RequestHead head) except -1
    cdef void authz_answered(self, int connect_id, object checker, object answer)
    cdef void deny(self, Denial denial)
    cdef void store_answered(self, int connect_id, object answer)
    cdef bint answer_by_route_filters(self, RouteFilters filters, RequestHead head) except -1
    cdef void apply_request_filters(self, RouteFilters filters, RequestHead head)
    cdef bint apply_backend_filters(self, BackendFilters filters, RequestHead head) except -1
    cdef void mirror(self, bytes copy)
    cdef void retry_after_backoff(self)
    cdef void cancel_backoff(self)
    cdef void try_upstream(self)
    cdef void connect(self, Upstream upstream)
    cdef void connect_done(self, object transport, object exc, int connect_id, Upstream upstream,
                           Service service, UpstreamConnection conn)
    cdef void on_connected(self, object transport, object exc, int connect_id, Upstream upstream,
                           UpstreamConnection conn)
    cdef void send_request(self, UpstreamConnection conn)
    cdef void arm_response_timer(self, double now)
    cdef bint on_final_head(self, UpstreamConnection conn, ResponseHead head) except -1
    cdef bint start_tunnel(self, UpstreamConnection conn, ResponseHead head) except -1
    cdef void finish_response(self)
    cdef void finish(self, bint completed)
    # failures
    cdef list tried_upstreams(self)
    cdef void drop_upstream(self)
    cdef void report_failure(self, str kind)
    cdef void report_success(self)
    cdef int session_pick(self, EndpointTable table) except -2
    cdef void add_session_token(self, ResponseHead head)
    cdef void set_hash_key(self, EndpointTable table)
    cdef bint over_limit(self, Service service, int limit, int count, bytes name, int stat)
    cdef void upstream_failed(self, int connect_id, Upstream upstream, str kind, str reason, bint before_send)
    cdef void upstream_timed_out(self, bint per_try, str what)
    cdef void bad_response(self, str reason)
    cdef void abort_response(self, str reason)
    cdef void retry_elsewhere(self, str reason)
    cdef void release_endpoint(self)
    cdef void respond_error(self, int status, str message, bytes location=*, bytes extra_header=*)
    cdef void log_request(self, double duration)
    # observability
    cdef void trace_begin(self, RequestHead head)
    cdef void trace_attempt(self, str kind, int status, bint keep, double end)
    cdef void trace_span(self, SpanRecord span)
    cdef void trace_end(self, double duration)
    cdef BackendStats backend(self, Upstream upstream)
    cdef void record_backend(self, double duration)
    cdef void attempt_failed(self, int cause, str kind, int status)


cdef Exchange new_exchange(Context ctx, Downstream downstream)


cdef class RetryPolicy:
    cdef bint allowed(self, Exchange ex, bint sent)
    cdef bint other_cluster_available(self, Exchange ex)
    cdef int pick(self, Exchange ex, EndpointTable table) except -2


cdef class PassiveHealth:
    cdef void report(self, Exchange ex, object kind)
