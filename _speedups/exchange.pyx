# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""One request and its response (an exchange), as a state machine (``ExchangeState``).

The exchange passes messages between two codecs: a head (a field list), body pieces, the
end of the body with its trailers.  The downstream connection hands it a checked head
(``start``), the request body (``receive_body``, ``receive_trailers``, ``body_received``)
and its own troubles (``fail``, ``client_gone``); the exchange answers through the
``Downstream`` interface (``send_head``, ``send_body``, ``send_trailers``, ``end_body``,
``send_error``, ``exchange_done``).  Framing is each codec's: a body comes in its head's
framing, HTTP/1.1's wire form passed through between two HTTP/1.1 sides (a sized or
chunked body is not re-framed), payload when the head is ``streamed`` (MODE_STREAM: an
HTTP/2 message without content-length, ended by its codec).  It never touches the
client's transport, so an HTTP/2 connection can drive several exchanges at once.

Upstream, the exchange borrows an ``UpstreamConnection`` (pooled, or connected by
``reactor.open_connection``), to which it sends the request (``send_head``,
``write_body``, ``end_body``) and which reports the response's head and body.  What to
do after a failure is asked of small policy objects, on failure only: ``RetryPolicy``
(may it go again, and where) and ``PassiveHealth`` (what the control plane hears).

States, and the methods that serve them: X_ROUTING ``route_request`` -> ``try_upstream``;
X_CONNECTING ``connect`` / ``on_connected``; X_WAITING ``send_request``, ``on_final_head``;
X_RESPONDING ``upstream_body``, ``finish_response``; X_TUNNEL ``start_tunnel``;
X_DONE ``finish``.
"""
import logging
import os as _os
import socket as _socket
from time import time as _wall_time
from errno import ETIMEDOUT

from _speedups.clock cimport monotonic
from _speedups.accesslog cimport dumps, json_string
from _speedups.http cimport (
    MODE_LENGTH, MODE_STREAM, MODE_UNTIL_CLOSE, BodyFramer, build_request_head, response_framing)
from _speedups.context cimport earliest
from _speedups.reactor cimport SocketTransport, open_connection
from _speedups.router cimport Router
from _speedups.filters cimport rewrite_target
from _speedups.path cimport NORM_OK, NORM_REDIRECT, PATH_FORWARD_ORIGINAL, outcome_reason
from _speedups.policy cimport DEFERRED, Identity, RateLimit, RoutePolicy
from _speedups.stats cimport (
    CAUSE_BAD_RESPONSE, CAUSE_CONNECT_FAILED, CAUSE_CONNECT_TIMEOUT, CAUSE_EJECTED, CAUSE_RESET,
    CAUSE_STATUS, CAUSE_TIMEOUT, BackendStats, N_STATS, ST_CONNECT_FAILURES, ST_INTERNAL_ERRORS, ST_OVERFLOW_CONNECTIONS,
    ST_OVERFLOW_PENDING, ST_OVERFLOW_REQUESTS, ST_OVERFLOW_RETRIES, ST_REDISPATCHED,
    ST_REQUESTS, ST_RETRIES, ST_UPSTREAM_CONNECTS, status_class_stat)
from _speedups.table cimport hash_bytes
from _speedups.tracing cimport (
    RequestRecord, SpanRecord, Tracer, new_span, pad_trace_id, parse_b3_single, parse_traceparent)

cdef object _log = logging.getLogger("gateway.proxy")

cdef enum:
    PENDING_LIMIT = 262144      # bytes of request body held while connecting
    REPLAY_LIMIT = 65536        # bytes of request body kept so the request can be retried

# Failure kinds reported to the context (passive health) and written to the log.
cdef str KIND_CONNECT = "connect_failed"
cdef str KIND_CONNECT_TIMEOUT = "connect_timeout"
cdef str KIND_RESET = "upstream_reset"
cdef str KIND_TIMEOUT = "upstream_timeout"
cdef str KIND_BAD_RESPONSE = "bad_response"
cdef str KIND_5XX = "upstream_5xx"
# The same kinds for the control plane's passive health (gateway.health.state), from here only.
GATEWAY_ERROR_KINDS = frozenset((KIND_CONNECT, KIND_CONNECT_TIMEOUT, KIND_RESET, KIND_TIMEOUT, KIND_BAD_RESPONSE))
UPSTREAM_5XX = KIND_5XX

cdef bytes EMPTY = b""

# Looked up once: the options that bound a connection to a vanished peer (see _bound_liveness).
cdef int _SOL_SOCKET = _socket.SOL_SOCKET, _SO_KEEPALIVE = _socket.SO_KEEPALIVE
cdef int _IPPROTO_TCP = _socket.IPPROTO_TCP
cdef int _TCP_KEEPIDLE = _socket.TCP_KEEPIDLE, _TCP_KEEPINTVL = _socket.TCP_KEEPINTVL
cdef int _TCP_USER_TIMEOUT = _socket.TCP_USER_TIMEOUT


cdef void _bound_liveness(object transport, double seconds):
    """Once per upstream connection: a peer that stops acknowledging for ``seconds`` (its zone
    vanished, a blackhole) ends the connection with ETIMEDOUT, even while a request waits on
    it -- without it, such a request waited for the whole response timeout (13 s measured in
    issue #26).  Keepalive probes start after 1 s idle, one a second; TCP_USER_TIMEOUT aborts
    once nothing was acknowledged for ``seconds`` (it also replaces keepalive's probe count,
    Linux tcp_keepalive_timer).  A live peer's kernel acknowledges the probes, so a slow answer
    is never cut; the cost is one small packet a second per idle connection.  The request
    then fails as "reset before any response byte": retried elsewhere when idempotent.
    """
    if seconds <= 0:
        return
    cdef SocketTransport own
    if isinstance(transport, SocketTransport):      # made by the reactor: no socket object
        own = transport
        own.set_option(_SOL_SOCKET, _SO_KEEPALIVE, 1)
        own.set_option(_IPPROTO_TCP, _TCP_KEEPIDLE, 1)
        own.set_option(_IPPROTO_TCP, _TCP_KEEPINTVL, 1)
        own.set_option(_IPPROTO_TCP, _TCP_USER_TIMEOUT, <int>(seconds * 1000))
        return
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(_SOL_SOCKET, _SO_KEEPALIVE, 1)
        sock.setsockopt(_IPPROTO_TCP, _TCP_KEEPIDLE, 1)
        sock.setsockopt(_IPPROTO_TCP, _TCP_KEEPINTVL, 1)
        sock.setsockopt(_IPPROTO_TCP, _TCP_USER_TIMEOUT, <int>(seconds * 1000))
    except OSError:
        pass                                # not TCP (a test's unix socket): nothing to bound


cdef class Downstream(Connection):
    """The interface only: ``downstream.Http1Connection`` implements it."""

    cdef bint send_interim(self, Exchange ex, ResponseHead head) except -1:
        return True

    cdef bint send_head(self, Exchange ex, ResponseHead head, int framing) except -1:
        return True

    cdef bint send_body(self, Exchange ex, bytes data, Py_ssize_t start,
                        long long holdable) except -1:
        return True

    cdef bint unsend(self, Exchange ex) except -1:
        return False

    cdef bint send_error(self, Exchange ex, int status, str message, bytes location,
                         bytes extra_header) except -1:
        return True

    cdef bint open_tunnel(self, Exchange ex, ResponseHead head) except -1:
        return True

    cdef bint tunnel_data(self, Exchange ex, bytes data) except -1:
        return True

    cdef bint send_trailers(self, Exchange ex, list headers) except -1:
        return True

    cdef bint end_body(self, Exchange ex) except -1:
        return True

    cdef void pause_body(self, Exchange ex, int reason):
        pass

    cdef void resume_body(self, Exchange ex, int reason):
        pass

    cdef void exchange_done(self, Exchange ex, bint completed):
        pass

    cdef void abort_exchange(self, Exchange ex, bint reset):
        pass


cdef Exchange new_exchange(Context ctx, Downstream downstream):
    """An exchange for ``downstream``'s requests, made without a Python call (one per HTTP/2
    stream)."""
    cdef Exchange ex = Exchange.__new__(Exchange)
    ex.ctx = ctx
    ex.downstream = downstream
    ex.state = X_IDLE
    ex.endpoint_index = -1
    ex.grpc_status = -1
    return ex


cdef class Exchange(UpstreamOwner):
    """One request/response (made by ``new_exchange``).  A downstream may reuse one for its
    next request."""

    # -- driven by the downstream -----------------------------------------

    cdef void start(self, RequestHead head, bint has_body, long long head_size):
        cdef Context ctx = self.ctx
        self.head = head
        self.body_complete = not has_body
        self.norm_target = None
        self.client_ip = self.downstream.client_bytes
        if ctx.trusted_proxies is not None and head.forwarded_for is not None:
            self.client_ip = ctx.trusted_proxies.client(self.downstream.client_bytes, head.forwarded_for)
        self.t_start = monotonic()
        self.request_id = head.request_id if head.request_id is not None else ctx.next_request_id()
        self.failed_stats = None
        self.trace_id = None
        self.tracer = ctx.tracer                # kept: a reload may turn tracing off meanwhile
        if self.tracer is not None:             # tracing off: this check is all it costs
            self.trace_begin(head)
        self.status = 0
        self.error = None
        self.failed_status = 0
        self.cors_fields = None
        self.backend_filters = None
        self.attempts = 0
        self.tried = None
        self.response_started = False
        self.resp_head = None
        self.bytes_sent = 0
        self.bytes_received = head_size
        self.pending = None
        self.pending_size = 0
        self.replay = [] if has_body else None      # a bodiless request has nothing to replay
        self.replay_size = 0
        self.replayable = True
        self.written_upstream = False
        self.upstream = None
        self.endpoint_index = -1
        self.service = None
        self.t_connect = -1.0
        self.t_response = -1.0
        self.route = None
        self.response_deadline = 0
        self.total_deadline = 0
        self.budgeted_retry = False
        self.budget_refused = False
        self.breaker_service = None
        self.breaker_retry = False
        self.set_cookie = None
        self.session = None
        self.mirror_head = None
        self.request_trailers = None
        ctx.requests_in_flight += 1
        ctx.counters[ST_REQUESTS] += 1
        self.state = X_ROUTING
        if ctx.max_body and head.content_length > ctx.max_body:
            self.respond_error(413, f"request body larger than limits.max_body ({ctx.max_body} bytes)")
            return
        self.route_request()

    cdef void receive_body(self, bytes chunk):
        """A piece of the request body, in the head's framing: as framed on the wire
        (chunked stays chunked), or payload when the head is ``streamed`` (HTTP/2)."""
        if self.replay is not None:
            if self.replay_size + len(chunk) <= REPLAY_LIMIT:
                self.replay.append(chunk)
                self.replay_size += len(chunk)
            else:
                self.replayable = False     # too large to keep: a sent request is not retried
                self.replay = None
        if self.up is not None:
            self.up.write_body(chunk)
            return
        if self.pending is None:
            self.pending = []
        self.pending.append(chunk)
        self.pending_size += len(chunk)
        if self.pending_size > PENDING_LIMIT:
            self.downstream.pause_body(self, PAUSE_PENDING)

    cdef void receive_trailers(self, list trailers):
        """The trailers of a ``streamed`` body (HTTP/2), sent with its end."""
        self.request_trailers = trailers

    cdef void body_received(self):
        self.body_complete = True
        if self.mirror_head is not None:
            if self.replayable and self.replay is not None:
                self.mirror(self.mirror_head + self.replay_as_sent())
            self.mirror_head = None
        if self.up is not None:
            if self.head.streamed:
                self.up.end_body(self.request_trailers)
            if self.resp_head is None:
                self.arm_response_timer(monotonic())

    cdef bytes replay_as_sent(self):
        """The body kept for a retry as an HTTP/1.1 request carries it (a mirror's copy)."""
        cdef bytes body = b"".join(self.replay)
        if not self.head.streamed:
            return body
        return (b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"

    cdef void fail(self, int status, str reason):
        """The request cannot be read on (a framing error in its body, a limit, a timeout)."""
        self.drop_upstream()
        self.downstream.keep_alive = False
        if self.response_started:
            self.error = reason
            self.finish(False)
            self.downstream.abort_exchange(self, False)
        else:
            self.respond_error(status, reason)

    cdef void client_gone(self):
        """The client connection was lost with this exchange in progress."""
        if self.state == X_IDLE or self.state == X_DONE:
            return
        self.drop_upstream()
        self.connect_id += 1                # a connect under way is not for this exchange now
        if not self.response_started and self.state != X_TUNNEL:
            self.status = 499               # nginx's "client closed request"
            self.error = "client closed connection"
        self.finish(False)

    cdef void forget_downstream(self):
        """The client connection is gone and done with this exchange: from now on a closed
        stand-in answers for it.  The connection holds the exchange and the exchange held
        the connection: a cycle, which only the cyclic collector could free (a collection
        every few dozen connections at one request per connection); now reference
        counting frees both when the connection goes.  Late callbacks (a connect that
        completes) find ``downstream.closed`` as before."""
        self.downstream = _LOST

    cdef void client_write_paused(self, bint paused):
        """The client reads slowly: stop reading its response upstream, until it catches up."""
        if self.up is not None:
            if paused:
                self.up.pause()
            else:
                self.up.resume()

    cdef void tunnel_in(self, bytes data):
        if self.up is not None:
            self.bytes_received += len(data)
            self.up.write(data)

    cdef bint tunnel_eof(self):
        """The client half-closed a tunnel: pass it on (True) if the upstream can take it."""
        return self.up is not None and self.up.half_close()

    cdef double next_deadline(self):
        """The earliest deadline this exchange waits for (0: none), for its connection's timer."""
        if self.state < X_ROUTING or self.state > X_RESPONDING:
            return 0
        return earliest(self.total_deadline, self.response_deadline)

    cdef bint check_deadlines(self, double now) except -1:
        """The route's timeout and the per-try response timeout; True when one fired."""
        if self.state < X_ROUTING or self.state > X_RESPONDING:
            return False
        if self.total_deadline > 0 and now >= self.total_deadline:
            self.total_deadline = 0
            if self.response_started:
                self.abort_response("route timeout during the response")
            else:
                self.upstream_timed_out(False, "route timeout")
            return True
        if self.response_deadline > 0 and now >= self.response_deadline:
            self.response_deadline = 0
            if not self.response_started and self.up is not None:
                self.upstream_timed_out(True, "timed out")
            return True
        return False

    cdef int redispatch_from(self, Service service, set gone) except -1:
        """This request's endpoint was ejected while it waits for the response head: when it
        is idempotent and has a retry left, send it to another endpoint (another cluster
        first, as any retry) now rather than at its timeout.  A hung endpoint would hold it
        for the whole response timeout; an ejected one is not expected to answer soon.
        Nothing is reported to passive health: the endpoint is out already.  A request still
        connecting is left to its (short) connect timeout; a non-idempotent one keeps
        waiting, since the endpoint may yet process it.
        """
        cdef Upstream upstream = self.upstream
        if (self.service is not service or upstream is None or upstream not in gone
                or self.up is None or self.resp_head is not None or self.up.buf
                or self.state < X_ROUTING or self.state > X_RESPONDING):
            return 0
        if not _retry.allowed(self, True):
            return 0
        self.error = f"upstream {upstream.host} was ejected while the request waited for its answer"
        self.attempt_failed(CAUSE_EJECTED, "ejected", 0)
        self.drop_upstream()
        self.connect_id += 1
        self.response_deadline = 0
        self.release_endpoint()
        self.ctx.counters[ST_REDISPATCHED] += 1
        self.try_upstream()
        return 1

    cpdef internal_error(self, object exc):
        if self.downstream is _LOST:
            _log.error("internal error on the request path (its client connection was lost)",
                       exc_info=exc)
            self.ctx.counters[ST_INTERNAL_ERRORS] += 1
        else:
            self.downstream.internal_error(exc)

    # -- X_ROUTING ----------------------------------------------------------

    cdef void route_request(self):
        cdef Context ctx = self.ctx
        cdef RequestHead head = self.head
        cdef Router router
        cdef Route route
        if not self.normalize_path(head):
            return
        router = self.downstream.port.router
        if self.downstream.sni is not None and router.misdirected(head, self.downstream.sni):
            self.respond_error(421, "the Host names another listener than the TLS server name")
            return
        found = router.match(head)
        if found is None:
            self.respond_error(404, "no route matches this request")
            return
        route = self.route = <Route>found
        if route.filters is not None and self.answer_by_filters(route.filters, head):
            return
        self.dispatch()

    cdef void dispatch(self):
        """The routed request to one of its route's backends (after its filters let it)."""
        cdef Context ctx = self.ctx
        cdef RequestHead head = self.head
        cdef Route route = self.route
        cdef Service service
        cdef int picked
        service = self.service = route.pick_service(&picked)
        if service is None:
            self.respond_error(500, "this request drew an invalid backendRef of its route rule")
            return
        if self.over_limit(service, service.max_requests, service.active_requests,
                           b"max_requests", ST_OVERFLOW_REQUESTS):
            return
        self.breaker_service = service
        service.active_requests += 1
        target = head.target
        # A rewrite replaces the prefix the route matched, which only the normalized path
        # is known to start with: it applies to that one even when the original is forwarded.
        if self.norm_target is not None and (route.rewrite_from is not None
                                             or not ctx.path_policy.flags & PATH_FORWARD_ORIGINAL):
            target = self.norm_target
        self.upstream_target = route.rewrite_target(target)
        if route.filters is not None:
            self.apply_request_filters(route.filters, head)
        if route.backend_filters is not None and route.backend_filters[picked] is not None:
            if self.apply_backend_filters(<BackendFilters>route.backend_filters[picked], head):
                return
        timeout = route.timeout
        if self.client_timeout > 0 and (timeout <= 0 or self.client_timeout < timeout):
            timeout = self.client_timeout     # grpc-timeout: the client gives up then anyway
        if timeout > 0:
            self.total_deadline = self.t_start + timeout
            self.ctx.wake_at(self.downstream, self.total_deadline)
        self.try_upstream()

    cdef bint normalize_path(self, RequestHead head) except -1:
        """Route on the normalized path (``_speedups/path.pyx``); False when answered here instead.

        ``head.path`` becomes the normalized path; ``head.target`` stays as received,
        for the access log and for ``forward: original``.
        """
        cdef int outcome = NORM_OK
        cdef bytes path = head.path
        cdef bytes normalized = self.ctx.path_policy.normalize(path, &outcome)
        if outcome == NORM_OK and normalized is path:
            return True                     # the common case: nothing to do, nothing allocated
        if normalized is not None:
            self.norm_target = normalized + head.target[len(path):]   # the query is untouched
        if outcome == NORM_OK:
            head.path = normalized
            return True
        if outcome == NORM_REDIRECT:
            self.respond_error(307, "escaped slash in the request path: redirected",
                               self.norm_target)
        else:
            self.respond_error(400, outcome_reason(outcome))
        return False

    cdef bint apply_backend_filters(self, BackendFilters filters, RequestHead head) except -1:
        """The picked backend's filters, after the route's: True when its redirect answered."""
        if filters.redirect is not None:
            self.respond_error(filters.redirect.status, "redirected",
                               filters.redirect.location(head, self.downstream.proto))
            return True
        if filters.request_headers is not None:
            head.set_fields(filters.request_headers.apply(head.fields()))
        if filters.rewrite_path is not None:
            self.upstream_target = rewrite_target(filters.rewrite_path, self.upstream_target)
        self.backend_filters = filters          # its host rewrite and response filter come later
        return False

    cdef bint answer_by_filters(self, RouteFilters filters, RequestHead head) except -1:
        """True when the route's filters answer the request here (a CORS preflight, its edge
        policy's denial, a redirect, or no valid backend)."""
        cdef bytes origin
        cdef Denial denial
        cdef int connect_id
        cdef object checker
        if filters.cors is not None:
            origin = head.header(b"origin")
            if origin is not None:
                if head.method == b"OPTIONS" and head.header(b"access-control-request-method") is not None:
                    # Answered here, allowed or not (then without CORS fields: the browser
                    # refuses the request it was asking about).
                    self.respond_error(200, "", None, filters.cors.preflight_fields(origin, head))
                    return True
                self.cors_fields = filters.cors.response_fields(origin)
        if filters.policy is not None:
            denial = filters.policy.check(head, self.client_ip)
            if denial is DEFERRED:          # a password hash checked off the event loop
                checker = filters.policy.auth
            elif denial is not None:
                self.deny(denial)
                return True
            elif filters.policy.ext_authz is not None:
                checker = filters.policy.ext_authz
            else:
                return self.answer_by_limit(filters, head)
            connect_id = self.connect_id
            checker.ask(head, self.client_ip, lambda answer: self.authz_answered(connect_id, checker, answer))
            return True                     # routing goes on when the checker answers
        return self.answer_by_route_filters(filters, head)

    cdef bint answer_by_limit(self, RouteFilters filters, RequestHead head) except -1:
        """The route's rate limit, once the request is authenticated: True when it answers
        (429), or when the global store was asked (routing goes on in store_answered)."""
        cdef Denial denial
        cdef int connect_id
        cdef RateLimit limit = filters.policy.rate_limit
        if limit is not None:
            if limit.store is not None:
                connect_id = self.connect_id
                limit.ask(head, self.client_ip, lambda answer: self.store_answered(connect_id, answer))
                return True
            denial = limit.take(head, self.client_ip)
            if denial is not None:
                self.deny(denial)
                return True
        return self.answer_by_route_filters(filters, head)

    cdef void authz_answered(self, int connect_id, object checker, object answer):
        """A checker's answer (gateway.policy.ext_authz's service, or an authenticator that
        decided off the event loop): a Denial to pass on, or the Identity to set on the
        request before it goes on."""
        cdef RoutePolicy policy
        if connect_id != self.connect_id or self.state != X_ROUTING or self.downstream.closed:
            return                          # the client left meanwhile
        policy = self.route.filters.policy
        verdict = checker.verdict(answer)
        if isinstance(verdict, Denial):
            self.deny(<Denial>verdict)
            return
        policy.identify(self.head, <Identity?>verdict, checker.owned)
        if not self.answer_by_limit(self.route.filters, self.head):
            self.dispatch()

    cdef void deny(self, Denial denial):
        """The edge policy's answer; with the route's CORS fields for an allowed Origin, so
        that a browser's script can read why (a 401's challenge, a 429's Retry-After)."""
        cdef bytes fields = denial.fields
        self.route.traffic.deny(denial.kind)
        if self.cors_fields is not None:
            cors = b"\r\n".join([f[1] + b": " + f[2] for f in self.cors_fields])
            fields = cors if fields is None else fields + b"\r\n" + cors
        if denial.body is not None:
            self.error = denial.reason      # logged; the client gets the body
        self.respond_error(denial.status, denial.body if denial.body is not None else denial.reason, None, fields)

    cdef void store_answered(self, int connect_id, object answer):
        """The global limit's answer: (allowed, left or wait microseconds), or None when the
        store could not say (its failure_mode decides)."""
        cdef RateLimit limit
        if connect_id != self.connect_id or self.state != X_ROUTING or self.downstream.closed:
            return                          # the client left meanwhile
        limit = self.route.filters.policy.rate_limit
        if answer is None:
            limit.store.failed()
            if not limit.store.fail_open:
                self.respond_error(503, "rate limit store unavailable (redis.failure_mode: closed)")
                return
        elif not answer[0]:
            self.deny(limit.over(answer[1] / 1e6))
            return
        if not self.answer_by_route_filters(self.route.filters, self.head):
            self.dispatch()

    cdef bint answer_by_route_filters(self, RouteFilters filters, RequestHead head) except -1:
        """True when the route answers itself: no valid backend, or a redirect."""
        if filters.direct_status:
            self.respond_error(filters.direct_status, filters.direct_reason)
            return True
        if filters.redirect is not None:
            self.respond_error(filters.redirect.status, "redirected",
                               filters.redirect.location(head, self.downstream.proto))
            return True
        return False

    cdef void apply_request_filters(self, RouteFilters filters, RequestHead head):
        """URLRewrite's path, RequestHeaderModifier and RequestMirror, once per request (a
        retry resends what they made)."""
        if filters.rewrite_path is not None:
            self.upstream_target = filters.rewrite_target(self.upstream_target)
        if filters.request_headers is not None:
            head.set_fields(filters.request_headers.apply(head.fields()))
        cdef bytes trace_fields = None
        if filters.mirrors and head.content_length <= REPLAY_LIMIT:
            host = filters.rewrite_host or head.host or b""
            if self.trace_id is not None:       # the copy is a span of its own (one for all mirrors)
                self.mirror_line = trace_fields = self.tracer.traceparent_line(
                    self.trace_id, self.trace_sampled)
                if self.trace_state is not None:
                    trace_fields += b"tracestate: " + self.trace_state + b"\r\n"
            copy = build_request_head(head, self.upstream_target, host, self.downstream.client_bytes,
                                      self.request_id, self.ctx.via, False, self.downstream.proto,
                                      self.client_ip, trace_fields)
            if self.body_complete:
                self.mirror(copy)
            else:
                self.mirror_head = copy     # sent with the body once it is all here

    cdef void mirror(self, bytes copy):
        """RequestMirror: a copy to each mirror service; it never fails or holds up this request.

        A body is copied from the replay buffer, so only bodies up to REPLAY_LIMIT (64 KiB)
        are mirrored (with their head; a larger body is not mirrored at all).
        """
        for mirror in self.route.filters.mirrors:
            try:
                mirror(copy)
            except Exception:
                self.ctx.counters[ST_INTERNAL_ERRORS] += 1
                _log.exception("request mirror failed")
        cdef double now
        if self.mirror_line is not None and self.trace_id is not None:
            now = monotonic()
            self.trace_span(new_span(self.mirror_line, None, 0, now, now, None, 0, -1.0, -1.0,
                                     self.route.filters.mirrors))
            self.mirror_line = None

    cdef void try_upstream(self):
        """Pick an endpoint not tried yet and send the request to it."""
        cdef Service service = self.service
        cdef EndpointTable table = service.table
        cdef Upstream upstream
        cdef UpstreamConnection conn
        cdef int index
        if (service.hash_header is not None or service.hash_source_ip
                or service.hash_cookie is not None):
            self.set_hash_key(table)
        if self.attempts == 0:
            index = self.session_pick(table) if self.route.session is not None else -1
            if index < 0:
                index = table.pick(None)
        else:
            if not self.breaker_retry:
                if self.over_limit(service, service.max_retries, service.active_retries,
                                   b"max_retries", ST_OVERFLOW_RETRIES):
                    return
                self.breaker_retry = True
                service.active_retries += 1
            index = _retry.pick(self, table)
        if index < 0:
            if self.attempts == 0:
                self.respond_error(503, f"no healthy endpoint for service {service.key}")
            else:
                self.respond_error(self.failed_status or 502, self.error or "upstream failed")
            return
        upstream = <Upstream>table.endpoint(index)
        if self.attempts:
            self.tried_upstreams().append(upstream)
        self.attempts += 1
        self.endpoint_index = index
        self.upstream = upstream
        if self.attempts > 1:
            self.ctx.counters[ST_RETRIES] += 1
            if self.failed_stats is not None:
                self.failed_stats.retries[self.retry_cause] += 1
                self.failed_stats = None
        if self.trace_id is not None:
            self.attempt_line = self.tracer.traceparent_line(self.trace_id, self.trace_sampled)
            self.t_attempt = monotonic()
        table.acquire(index)
        self.table_generation = table.generation
        upstream.requests += 1
        upstream.inflight += 1
        upstream.touch()
        conn = upstream.take_idle()
        if conn is not None:
            self.t_connect = 0.0
            self.send_request(conn)
        else:
            self.connect(upstream)

    cdef int session_pick(self, EndpointTable table) except -2:
        """sessionPersistence: the endpoint the request's token names, if it still serves; -1
        (then balanced as any request, and a new session begins) otherwise."""
        cdef SessionPolicy policy = self.route.session
        cdef bytes token
        cdef int index
        if policy.header:
            token = self.head.header(policy.lookup)
        else:
            token = _cookie(self.head.header(b"cookie"), policy.lookup)
        if token is None:
            return -1
        self.session = policy.endpoint(token, _wall_time())
        if self.session is None:
            return -1
        index = table.index_of(self.session[0])
        if index < 0 or table.flags(index) != 0:
            self.session = None
            return -1
        return index

    cdef void add_session_token(self, ResponseHead head):
        """The answer names the endpoint that gave it: a new session's token, or the same
        session's again when it went elsewhere or its idle time is counted."""
        cdef SessionPolicy policy = self.route.session
        cdef Upstream upstream = self.upstream
        cdef double now
        if self.session is not None and self.session[0] == upstream.key and policy.idle <= 0:
            return                          # the token the client holds stays right
        now = _wall_time()
        token = policy.token(upstream.key, self.session[1] if self.session is not None else now, now)
        if policy.header:
            head.fields().append((policy.lookup, policy.name, token))
        else:
            head.fields().append((b"set-cookie", b"Set-Cookie", policy.name + b"=" + token + policy.cookie_attributes))

    cdef void set_hash_key(self, EndpointTable table):
        """ring_hash: the key of this request, before every pick (another request may have
        set its own in between).  No header: the request id, so such requests spread.
        No cookie: a new value, which the response sets, so the client's next requests
        go where this one went."""
        cdef bytes value = None
        cdef Service service = self.service
        if service.hash_source_ip:
            value = self.client_ip
        elif service.hash_cookie is not None:
            if self.set_cookie is not None:     # a retry: the value chosen for the first try
                value = self.cookie_value
            else:
                value = _cookie(self.head.header(b"cookie"), service.hash_cookie)
                if value is None:
                    value = self.cookie_value = _os.urandom(12).hex().encode()
                    self.set_cookie = service.hash_cookie + b"=" + value + service.hash_cookie_attributes
        else:
            value = self.head.header(service.hash_header)
        table.set_key(hash_bytes(value if value is not None else self.request_id))

    cdef bint over_limit(self, Service service, int limit, int count, bytes name, int stat):
        """Answer 503 naming the circuit breaker when ``count`` is at ``limit`` (0: none)."""
        if limit <= 0 or count < limit:
            return False
        self.ctx.counters[stat] += 1
        self.respond_error(503, f"circuit breaker open: service {service.key} is at "
                                f"{name.decode()} ({limit})", None, b"X-Gateway-Overloaded: " + name)
        return True

    # -- X_CONNECTING -------------------------------------------------------

    cdef void connect(self, Upstream upstream):
        cdef Context ctx = self.ctx
        cdef Service service = self.service
        cdef Py_ssize_t max_head = ctx.max_response_head, max_headers = ctx.max_headers
        if self.over_limit(service, service.max_connections, service.connections,
                           b"max_connections", ST_OVERFLOW_CONNECTIONS):
            return
        if self.over_limit(service, service.max_pending, service.pending,
                           b"max_pending", ST_OVERFLOW_PENDING):
            return
        # Counted from the connect on: a connection being opened is one (as Envoy counts).
        service.connections += 1
        service.pending += 1
        ctx.counters[ST_UPSTREAM_CONNECTS] += 1
        self.state = X_CONNECTING
        self.t_try = monotonic()
        self.connect_id += 1
        # HTTP/2: a stream on a new connection, which later requests may share before it is up.
        cdef UpstreamConnection conn = (UpstreamConnection(upstream, max_head, max_headers)
                                        if upstream.streams is None
                                        else upstream.streams.new_connection(max_head, max_headers))
        open_connection(ctx.reactor, ctx.loop, upstream.ip, upstream.port, conn.protocol(),
                        ctx.connect_timeout, self.connected, (self.connect_id, upstream, service, conn),
                        upstream.ssl, upstream.server_hostname)

    def connected(self, tuple token, transport, exc):
        """``open_connection``'s callback."""
        connect_id, upstream, service, conn = token
        self.connect_done(transport, exc, connect_id, upstream, service, conn)

    cdef void connect_done(self, object transport, object exc, int connect_id, Upstream upstream,
                           Service service, UpstreamConnection conn):
        # Each connect() is one pending slot and one connection until here; a connection
        # that was made keeps its slot until it closes (UpstreamConnection.connection_lost).
        service.pending -= 1
        if transport is None:
            service.connections -= 1
            conn.connect_failed()           # HTTP/2: other requests waiting on it go elsewhere
        else:
            conn.count_in(service)
        try:
            self.on_connected(transport, exc, connect_id, upstream, conn)
        except Exception as error:
            self.internal_error(error)

    cdef void on_connected(self, object transport, object exc, int connect_id, Upstream upstream,
                           UpstreamConnection conn):
        if transport is None:
            if isinstance(exc, OSError) and exc.errno == ETIMEDOUT:
                self.upstream_failed(connect_id, upstream, KIND_CONNECT_TIMEOUT,
                                     f"connect to {upstream.host} timed out", True)
            elif isinstance(exc, OSError):
                self.upstream_failed(connect_id, upstream, KIND_CONNECT,
                                     f"connect to {upstream.host} failed: {exc.strerror or exc}", True)
            else:
                raise exc
            return
        _bound_liveness(transport, self.ctx.upstream_unresponsive)
        if connect_id != self.connect_id or self.downstream.closed or self.upstream is not upstream:
            upstream.give_back(conn, monotonic())   # this request moved on; keep the connection
            return
        self.t_connect = monotonic() - self.t_try
        self.send_request(conn)

    cdef bint upstream_unable(self, UpstreamConnection conn, str reason) except -1:
        if conn is not self.up:
            return False
        self.respond_error(502, reason)
        return True

    cdef bint upstream_refused(self, UpstreamConnection conn, str reason) except -1:
        """The upstream did not process this request (see UpstreamOwner): as a failed connect."""
        if conn is not self.up:
            return False
        self.up = None
        self.upstream_failed(self.connect_id, self.upstream, KIND_RESET, reason, True)
        return True

    # -- X_WAITING ------------------------------------------------------------

    cdef void send_request(self, UpstreamConnection conn):
        cdef RequestHead head = self.head
        cdef Route route = self.route
        conn.lend(self)
        self.up = conn
        self.state = X_WAITING
        self.t_try = monotonic()
        host = head.host if head.host is not None else self.upstream.host_bytes
        if route.filters is not None and route.filters.rewrite_host is not None:
            host = route.filters.rewrite_host     # URLRewrite; X-Forwarded-Host keeps the client's
        if self.backend_filters is not None and self.backend_filters.rewrite_host is not None:
            host = self.backend_filters.rewrite_host     # a backendRef's URLRewrite, after the route's
        cdef bytes trace_fields = None
        if self.trace_id is not None:                     # else the client's pass through
            trace_fields = self.attempt_line
        if trace_fields is not None and self.trace_state is not None:
            trace_fields += b"tracestate: " + self.trace_state + b"\r\n"
        conn.send_head(head, self.upstream_target, host, self.downstream.client_bytes,
                       self.request_id, self.ctx.via, head.upgrade is not None,
                       self.downstream.proto, self.client_ip, trace_fields)
        # A retry after an attempt that wrote to its upstream resends the whole body so
        # far (kept in ``replay``); otherwise ``pending`` holds all not yet written.
        body = self.replay if self.written_upstream else self.pending
        if body:
            for chunk in body:
                conn.write_body(chunk)
        if self.body_complete and head.streamed:
            conn.end_body(self.request_trailers)
        self.written_upstream = True
        if self.pending is not None:
            self.pending = None
            self.pending_size = 0
            self.downstream.resume_body(self, PAUSE_PENDING)
        if self.body_complete:
            self.arm_response_timer(self.t_try)

    cdef void arm_response_timer(self, double now):
        cdef Route route = self.route
        self.response_deadline = now + (route.per_try_timeout if route.per_try_timeout > 0
                                        else self.ctx.response_timeout)
        self.ctx.wake_at(self.downstream, self.response_deadline)

    cdef bint upstream_interim(self, UpstreamConnection conn, ResponseHead head) except -1:
        if conn is not self.up:
            conn.close()
            return False
        self.downstream.send_interim(self, head)
        return True

    cdef bint upstream_head(self, UpstreamConnection conn, ResponseHead head) except -1:
        if conn is not self.up:
            conn.close()
            return False
        if head.status == 101:
            if self.head.upgrade is None:
                self.bad_response("101 Switching Protocols to a request that asked for no upgrade")
                return False
            return self.start_tunnel(conn, head)
        if self.stream_id and self.head.upgrade is not None and head.status < 300:
            # An HTTP/2 client takes any 2xx to its extended CONNECT for the tunnel opened
            # (RFC 8441 §5): an upstream that answers the upgrade without taking it is no
            # WebSocket server there.  Not a failure of the endpoint (passive health).
            self.respond_error(502, f"upstream {self.upstream.host} answered the WebSocket "
                                    f"upgrade with {head.status}, not 101")
            return False
        return self.on_final_head(conn, head)

    cdef bint on_final_head(self, UpstreamConnection conn, ResponseHead head) except -1:
        """Take the final response head; False when the request went to another endpoint instead."""
        cdef Route route = self.route
        cdef Service service = self.service
        cdef int framing = response_framing(head, self.head.method)
        cdef double now = monotonic()
        cdef int index
        self.t_response = now - self.t_try
        if service.observe_latency:
            index = self.endpoint_index
            if service.table.generation != self.table_generation:
                index = service.table.index_of(self.upstream.key)
            if index >= 0:
                service.table.observe(index, self.t_response, now)
        if head.status >= 500 and head.status in service.outlier_statuses:
            self.report_failure(KIND_5XX)
        if head.status >= 400 and route.retry_statuses is not None and head.status in route.retry_statuses:
            if _retry.allowed(self, True):
                self.attempt_failed(CAUSE_STATUS, "status", head.status)
                self.retry_elsewhere(f"upstream {self.upstream.host} answered {head.status}")
                return False
        if route.idempotent and head.status == 200:
            refusal = _grpc_refusal(head)
            if refusal is not None and _retry.allowed(self, True):
                self.attempt_failed(CAUSE_STATUS, "status", head.status)
                self.retry_elsewhere(f"upstream {self.upstream.host} answered gRPC {refusal}")
                return False
        self.resp_head = head
        self.status = head.status
        self.response_started = True
        self.response_deadline = 0
        self.state = X_RESPONDING
        if framing == MODE_UNTIL_CLOSE or not self.body_complete:
            # The body ends when the upstream closes; or the client's would have to be drained.
            self.downstream.keep_alive = False
        conn.expect_body(framing, head.content_length)
        if route.filters is not None and route.filters.response_headers is not None:
            head.set_fields(route.filters.response_headers.apply(head.fields()))
        if self.backend_filters is not None and self.backend_filters.response_headers is not None:
            head.set_fields(self.backend_filters.response_headers.apply(head.fields()))
        if self.cors_fields is not None:        # the route's CORS fields, not the upstream's
            head.set_fields([f for f in head.fields() if not (<bytes>f[0]).startswith(b"access-control-")]
                            + self.cors_fields)
        if self.set_cookie is not None:
            head.fields().append((b"set-cookie", b"Set-Cookie", self.set_cookie))
        if route.session is not None and self.upstream is not None:
            self.add_session_token(head)
        self.downstream.send_head(self, head, framing)
        if head.status < 500:
            self.report_success()
        return True

    # -- X_RESPONDING ---------------------------------------------------------

    cdef bint upstream_body(self, UpstreamConnection conn, bytes data, Py_ssize_t start) except -1:
        if conn is not self.up:
            conn.close()
            return False
        cdef BodyFramer framer = conn.framer
        self.bytes_sent += len(data) - start
        if framer.mode == MODE_STREAM and framer.done:
            self.downstream.end_body(self)      # its codec said so: no bytes come with the end
        else:
            self.downstream.send_body(
                self, data, start,
                framer.remaining if framer.mode == MODE_LENGTH and not framer.done else -1)
        if framer.done:
            self.finish_response()
        return True

    cdef bint upstream_body_error(self, UpstreamConnection conn, str reason) except -1:
        if self.downstream.unsend(self):    # nothing reached the client yet: it gets a 502
            self.response_started = False
            self.bad_response(reason)
        else:
            self.abort_response(reason)
        return True

    cdef void finish_response(self):
        """The response is complete: return the upstream connection, then finish."""
        cdef UpstreamConnection conn = self.up
        cdef bint reusable
        if not self.body_complete:
            # The upstream answered before the request body was all sent: close both.
            self.downstream.keep_alive = False
        if conn is not None:
            # The client's version and Connection are its own hop's: the upstream was asked
            # in HTTP/1.1 and says itself whether its connection stays.
            reusable = (self.resp_head.keep_alive and self.body_complete
                        and conn.framer.mode != MODE_UNTIL_CLOSE and not conn.extra)
            self.up = None
            if reusable:
                self.upstream.give_back(conn, self.t_try + self.t_response)  # when the head came
            else:
                conn.close()
        self.finish(True)

    # -- X_TUNNEL ---------------------------------------------------------------

    cdef bint start_tunnel(self, UpstreamConnection conn, ResponseHead head) except -1:
        self.resp_head = head
        self.status = 101
        self.response_started = True
        self.response_deadline = 0
        self.total_deadline = 0
        self.state = X_TUNNEL
        conn.tunnel = True
        return self.downstream.open_tunnel(self, head)

    cdef bint upstream_tunnel_data(self, bytes data) except -1:
        if self.state == X_TUNNEL:
            self.bytes_sent += len(data)
            self.downstream.tunnel_data(self, data)
        return True

    cdef bint upstream_trailers(self, UpstreamConnection conn, list headers) except -1:
        if conn is self.up:
            self.downstream.send_trailers(self, headers)
        return True

    # -- the upstream's troubles ------------------------------------------------

    cdef bint upstream_bad(self, UpstreamConnection conn, str reason) except -1:
        if conn is not self.up:
            conn.close()
            return False
        self.bad_response(reason)
        return True

    cdef void upstream_write_paused(self, bint paused):
        if paused:
            self.downstream.pause_body(self, PAUSE_UPSTREAM_FULL)
        else:
            self.downstream.resume_body(self, PAUSE_UPSTREAM_FULL)

    cdef bint upstream_gone(self, UpstreamConnection conn, object exc) except -1:
        """The upstream connection ended (EOF or loss) while lent to this exchange."""
        if conn is not self.up:
            return False
        if self.state == X_TUNNEL:
            self.up = None
            if exc is not None:             # a reset, not a close: an HTTP/2 stream says so
                self.error = f"upstream {self.upstream.host} reset the tunnel: {exc}"
            self.finish(False)
            self.downstream.abort_exchange(self, False)
            return True
        if self.resp_head is not None:
            if conn.framer.mode == MODE_UNTIL_CLOSE:
                self.up = None
                self.downstream.send_body(self, EMPTY, 0, -1)  # a head still held goes out now
                self.finish_response()
            elif self.downstream.unsend(self):      # held: nothing has reached the client
                self.response_started = False
                self.bad_response("upstream closed the connection mid-response")
            else:
                self.abort_response("upstream closed the connection mid-response")
            return True
        if conn.buf:
            self.bad_response("upstream closed the connection mid-head")
            return True
        # No response byte: retry when the request was never sent or is idempotent.
        reason = f"upstream {self.upstream.host} closed the connection before responding"
        self.upstream_failed(self.connect_id, self.upstream, KIND_RESET, reason, False)
        return True

    cdef list tried_upstreams(self):
        """The Upstreams tried, in order; made on the first retry (the first attempt's is
        ``upstream``: no list for a request that goes through at once)."""
        if self.tried is None:
            self.tried = [self.upstream] if self.upstream is not None else []
        return self.tried

    cdef void drop_upstream(self):
        """Abort the upstream connection in use, if any: what it would still say is unwanted."""
        if self.up is not None:
            self.up.abort()
            self.up = None

    cdef void report_failure(self, str kind):
        """Passive health hears every failure ..."""
        if self.upstream is not None:
            self.upstream.report_success = True
            _health.report(self, kind)

    cdef void report_success(self):
        """... and a success only when it ends a run of failures (rarely: no call otherwise)."""
        if self.upstream is not None and self.upstream.report_success:
            self.upstream.report_success = False
            _health.report(self, None)

    cdef void upstream_failed(self, int connect_id, Upstream upstream, str kind, str reason,
                              bint before_send):
        if connect_id != self.connect_id or self.downstream.closed or self.upstream is not upstream:
            return
        if kind is KIND_CONNECT or kind is KIND_CONNECT_TIMEOUT:
            self.ctx.counters[ST_CONNECT_FAILURES] += 1
        self.attempt_failed(CAUSE_CONNECT_FAILED if kind is KIND_CONNECT else
                            CAUSE_CONNECT_TIMEOUT if kind is KIND_CONNECT_TIMEOUT else CAUSE_RESET,
                            kind, 0)
        upstream.failures += 1
        self.report_failure(kind)
        self.drop_upstream()
        self.release_endpoint()
        self.error = reason
        # Not reached, or reset before a response byte: the service is unavailable (503, as
        # Envoy answers and Gateway API's conformance expects); 502 is for answers unusable.
        self.failed_status = 504 if kind is KIND_TIMEOUT else 503
        if _retry.allowed(self, not before_send):
            self.try_upstream()
        else:
            self.respond_error(self.failed_status, reason)

    cdef void upstream_timed_out(self, bint per_try, str what):
        reason = f"upstream {self.upstream.host if self.upstream is not None else '-'} {what}"
        self.error = reason
        self.failed_status = 504
        self.report_failure(KIND_TIMEOUT)
        self.attempt_failed(CAUSE_TIMEOUT, KIND_TIMEOUT, 0)
        self.drop_upstream()
        self.connect_id += 1                # a connect in progress no longer concerns us
        if per_try and self.route.retry_timeout and _retry.allowed(self, True):
            self.release_endpoint()
            self.retry_after_backoff()
            return
        self.respond_error(504, reason)

    cdef void retry_after_backoff(self):
        """Retry after an answer or a timeout: at once, or after the route's backoff.

        The wait doubles with each retry (at most 10x); the route's timeout keeps running
        meanwhile.  Retries after a failed connect or an ejection do not wait: that
        endpoint never had the request, or is out.
        """
        cdef double base = self.route.backoff
        if base <= 0:
            self.try_upstream()
            return
        delay = min(base * (1 << min(self.attempts - 1, 4)), 10 * base)
        self.backoff_timer = self.ctx.loop.call_later(delay, self.retry_now, self.connect_id)

    def retry_now(self, int connect_id):
        self.backoff_timer = None
        if connect_id == self.connect_id and X_ROUTING <= self.state <= X_WAITING and not self.downstream.closed:
            self.try_upstream()

    cdef void cancel_backoff(self):
        if self.backoff_timer is not None:
            self.backoff_timer.cancel()
            self.backoff_timer = None

    cdef void retry_elsewhere(self, str reason):
        """An answer not to pass on (a status the route retries on): let go of the
        connection (it stays in sync, so a clean close) and try another endpoint."""
        self.up.close()
        self.up = None
        self.release_endpoint()
        self.error = reason
        self.failed_status = 502
        self.retry_after_backoff()

    cdef void bad_response(self, str reason):
        self.report_failure(KIND_BAD_RESPONSE)
        self.attempt_failed(CAUSE_BAD_RESPONSE, KIND_BAD_RESPONSE, 0)
        self.drop_upstream()
        self.respond_error(502, f"upstream {self.upstream.host} sent a malformed response ({reason})")

    cdef void abort_response(self, str reason):
        """The response started but cannot be completed: the client connection must end."""
        self.error = reason
        self.report_failure(KIND_BAD_RESPONSE)
        self.attempt_failed(CAUSE_BAD_RESPONSE, KIND_BAD_RESPONSE,
                            self.resp_head.status if self.resp_head is not None else 0)
        self.drop_upstream()
        self.downstream.keep_alive = False
        self.finish(False)
        self.downstream.abort_exchange(self, True)

    # -- X_DONE ---------------------------------------------------------------------

    cdef void release_endpoint(self):
        cdef EndpointTable table
        cdef int index = self.endpoint_index
        if index < 0 or self.service is None:
            return
        self.upstream.inflight -= 1
        self.upstream.touch()
        table = self.service.table
        if table.generation != self.table_generation:
            index = table.index_of(self.upstream.key)   # the table changed under this request
        if index >= 0:
            table.release(index)
        self.endpoint_index = -1

    cdef void respond_error(self, int status, str message, bytes location=None,
                            bytes extra_header=None):
        """Answer with the gateway's own error or redirect (before any response byte was sent)."""
        self.status = status
        if self.error is None and message:
            self.error = message
        if not self.body_complete:
            self.downstream.keep_alive = False  # the rest of the body is unread: close after
        self.downstream.send_error(self, status, message, location, extra_header)
        self.response_started = True
        self.drop_upstream()
        self.connect_id += 1
        self.finish(True)

    cdef void finish(self, bint completed):
        """Count, log, release; then the downstream goes on (next request, or close)."""
        cdef Context ctx = self.ctx
        cdef int status = self.status
        cdef int stat = status_class_stat(status)
        self.cancel_backoff()
        self.release_endpoint()
        ctx.requests_in_flight -= 1
        if self.breaker_service is not None:
            self.breaker_service.active_requests -= 1
            if self.breaker_retry:
                self.breaker_service.active_retries -= 1
            self.breaker_service = None
            self.breaker_retry = False
        if self.budgeted_retry:
            ctx.retries_in_flight -= 1
            self.budgeted_retry = False
        if stat != N_STATS:
            ctx.counters[stat] += 1
        cdef double duration = monotonic() - self.t_start
        if self.upstream is not None:
            self.upstream.traffic.record(status, duration)
            self.upstream.touch()
        if self.route is not None:
            self.route.traffic.record(status, duration)
            self.route.touch()
            if self.service is not None:
                self.record_backend(duration)
        if self.trace_id is not None:
            self.trace_end(duration)
        if ctx.log is not None:
            self.log_request(duration)
        self.state = X_DONE
        self.head = None
        self.resp_head = None
        self.replay = None
        self.pending = None
        self.route = None
        self.downstream.exchange_done(self, completed)

    cdef void log_request(self, double duration):
        cdef RequestHead head = self.head
        cdef Upstream upstream = self.upstream
        cdef bytes extra = EMPTY
        if self.norm_target is not None:
            extra = b',"normalized_path":' + json_string(self.norm_target)
        if self.client_ip is not self.downstream.client_bytes:
            extra += b',"peer":"' + self.downstream.client_bytes + b'"'
        if self.attempts > 1:
            extra += b',"tried_hosts":' + dumps([u.host for u in self.tried_upstreams()])
        if self.stream_id:
            extra += b',"protocol":"HTTP/2"'
            if self.grpc_status >= 0:
                extra += b',"grpc_status":%d' % self.grpc_status
        if self.error is not None:
            extra += b',"error":' + dumps(self.error + (" (retry budget exhausted)" if self.budget_refused else ""))
        cdef bytes trace_id = self.trace_id
        if trace_id is None and head.traceparent is not None:     # tracing off: the client's
            found = parse_traceparent(head.traceparent)
            if found is not None:
                trace_id = <bytes>(<tuple>found)[0]
        self.ctx.log.request_line(
            self.request_id, trace_id, self.client_ip, head.method, head.host, head.target, self.status,
            self.bytes_sent, self.bytes_received, duration,
            self.route.json_name if self.route is not None else b"null",
            self.service.json_key if self.service is not None else b"null",
            upstream.json_host if upstream is not None else b"null",
            upstream.json_cluster if upstream is not None else b"null",
            self.attempts, self.t_connect, self.t_response, extra)


    # -- observability ---------------------------------------------------------------

    cdef void trace_begin(self, RequestHead head):
        """The trace this request joins (traceparent, else B3) or starts, and whether it is
        sampled: the parent's decision when there is one, else the ratio (parent-based)."""
        cdef Tracer tracer = self.tracer
        cdef object found = None
        self.trace_state = None
        self.trace_first = self.trace_last = None
        self.trace_spans = 0
        self.trace_failed = False
        self.attempt_line = None
        self.mirror_line = None
        self.parent_span = None
        self.server_span = None
        if head.traceparent is not None:
            found = parse_traceparent(head.traceparent)
            if found is not None:
                self.trace_state = head.tracestate
        if found is None and head.b3:
            found = _b3_context(head)
        if found is not None:
            self.trace_id = <bytes>found[0]
            self.parent_span = <bytes>found[1]
            self.trace_sampled = (found[2] if found[2] is not None
                                  else tracer.sample(self.trace_id))
        else:
            self.trace_id = tracer.trace_id()
            self.trace_sampled = tracer.sample(self.trace_id)

    cdef void trace_attempt(self, str kind, int status, bint keep, double end):
        """The attempt in progress ended; its record is kept when sampled or ``keep``
        (a failed attempt: errors are always exported)."""
        if keep or self.trace_sampled:
            self.trace_span(new_span(self.attempt_line, self.upstream, self.attempts, self.t_attempt,
                                     end, kind, status, self.t_connect, self.t_response, None))
        if kind is not None:
            self.trace_failed = True
        self.attempt_line = None

    cdef void trace_span(self, SpanRecord span):
        if self.trace_last is None:
            self.trace_first = span
        else:
            self.trace_last.next = span
        self.trace_last = span
        self.trace_spans += 1

    cdef void trace_end(self, double duration):
        """Queue the request's spans when sampled, answered 5xx, or any attempt failed."""
        cdef int status = self.status
        cdef bint keep = self.trace_sampled or status >= 500 or self.trace_failed
        cdef RequestHead head = self.head
        cdef RequestRecord record
        if self.attempt_line is not None:
            self.trace_attempt(None, self.resp_head.status if self.resp_head is not None else 0, keep,
                               self.t_start + duration)     # the server span's end, not later
        if not keep:
            self.trace_first = self.trace_last = None
            return
        record = RequestRecord.__new__(RequestRecord)
        record.trace_id, record.parent_span, record.trace_state = self.trace_id, self.parent_span, self.trace_state
        record.server_span = self.server_span = self.tracer.span_id()
        record.start, record.end = self.t_start, self.t_start + duration
        record.method, record.host, record.target = head.method, head.host, head.target
        record.status, record.error = status, self.error
        record.route = self.route.name if self.route is not None else None
        record.service = self.service.key if self.service is not None else None
        record.client, record.h2 = self.client_ip, self.stream_id != 0
        record.request_id, record.attempts = self.request_id, self.attempts
        record.spans, record.n_spans = self.trace_first, 1 + self.trace_spans
        self.trace_first = self.trace_last = None
        self.tracer.push(record)

    cdef BackendStats backend(self, Upstream upstream):
        """The (route, service, cluster) counters: two lookups on cached hashes; made once."""
        cdef Route route = self.route
        cdef Service service = self.service
        if route is None or service is None:
            return None
        cdef str cluster = upstream.cluster if upstream is not None else ""
        by_cluster = route.backends.get(service)
        if by_cluster is None:
            by_cluster = route.backends[service] = {}
        stats = (<dict>by_cluster).get(cluster)
        if stats is None:
            key = (route.name, service.key, cluster)
            stats = self.ctx.backend_stats.get(key)
            if stats is None:       # kept in the context: totals outlive a reload's new Route
                stats = self.ctx.backend_stats[key] = BackendStats(key, self.ctx.touched)
            by_cluster[cluster] = stats
        return <BackendStats>stats

    cdef void record_backend(self, double duration):
        cdef BackendStats stats = self.backend(self.upstream)
        if stats is None:
            return
        stats.duration.observe(duration)
        if self.trace_id is not None and self.trace_sampled:    # its bucket's exemplar
            stats.exemplify(duration, self.trace_id,
                            self.tracer.wall_base + self.t_start + duration - self.tracer.mono_base)
        if self.t_connect > 0:
            stats.connect.observe(self.t_connect)
        if self.t_response >= 0:
            stats.response.observe(self.t_response)
        stats.touch()

    cdef void attempt_failed(self, int cause, str kind, int status):
        """Count a failed attempt by cause (a retry after it is counted by the same cause)
        and end its span."""
        cdef BackendStats stats = self.backend(self.upstream)
        if stats is not None:
            stats.failures[cause] += 1
            stats.touch()
            self.failed_stats = stats
            self.retry_cause = cause
        if self.attempt_line is not None:
            self.trace_attempt(kind, status, True, monotonic())


cdef tuple _b3_context(RequestHead head):
    """B3, single header or multi: (trace id, span id, sampled or None), or None."""
    cdef bytes value = head.header(b"b3")
    cdef bytes trace, span, sampled
    if value is not None:
        return parse_b3_single(value)
    value = head.header(b"x-b3-traceid")
    span = head.header(b"x-b3-spanid")
    if value is None or span is None:
        return None
    trace = pad_trace_id(value)
    span = span.lower()
    if trace is None or len(span) != 16:
        return None
    sampled = head.header(b"x-b3-sampled")
    if head.header(b"x-b3-flags") == b"1":
        return (trace, span, True)          # debug
    if sampled is None:
        return (trace, span, None)
    return (trace, span, sampled in (b"1", b"true"))


cdef class RetryPolicy:
    """May a failed attempt go again, and where: asked after a failure only."""

    cdef bint allowed(self, Exchange ex, bint sent):
        """The retry rule: a request never sent may go elsewhere; a sent one only if idempotent.

        Retries of sent requests within one cluster draw on a budget (a share of
        the requests in flight, as Envoy's retry budget), so that retries cannot
        multiply the load on a struggling service.  Two kinds are not budgeted:
        a request never sent costs its upstream nothing, and a retry that fails
        over to another cluster is the failover itself -- budgeting it made
        concurrent requests caught by a hung cluster fail (at most one such
        retry per request: later ones land in a tried cluster and are budgeted).
        """
        cdef Context ctx = ex.ctx
        if ex.attempts >= ex.route.attempts or ex.response_started:
            return False
        if ex.written_upstream and not ex.replayable:
            return False                    # part of the body is gone: it cannot be sent again
        if not sent:
            return True
        if not ex.head.idempotent and not ex.route.idempotent:
            return False
        if self.other_cluster_available(ex):
            return True
        if ctx.retries_in_flight >= max(ctx.retry_budget_min,
                                        ctx.retry_budget_ratio * ctx.requests_in_flight):
            ex.budget_refused = True
            return False
        if not ex.budgeted_retry:
            ex.budgeted_retry = True
            ctx.retries_in_flight += 1
        return True

    cdef bint other_cluster_available(self, Exchange ex):
        """Is there a serving endpoint in a cluster this request has not tried?"""
        cdef EndpointTable table = ex.service.table
        cdef unsigned long long tried = _cluster_mask(table, ex.tried_upstreams())
        cdef int i
        for i in range(len(table)):
            if table.flags(i) == 0 and not _in_mask(tried, table, i, ex.tried_upstreams()):
                return True
        return False

    cdef int pick(self, Exchange ex, EndpointTable table) except -2:
        """A retry goes to another cluster if one can take it, else to an endpoint not tried yet."""
        cdef Upstream u
        cdef int i, index
        cdef unsigned long long tried = _cluster_mask(table, ex.tried_upstreams())
        # By identity: the table's indices may have moved since the last try.
        tried_idx = [table.index_of(u.key) for u in ex.tried_upstreams()]
        same_clusters = [i for i in range(len(table)) if _in_mask(tried, table, i, ex.tried_upstreams())]
        index = table.pick(tuple(same_clusters))
        if index < 0:
            index = table.pick(tuple(tried_idx))
        if index < 0:
            index = table.pick(None)        # every endpoint tried: any healthy one will do
        return index


cdef unsigned long long _cluster_mask(EndpointTable table, list tried) except? 0:
    """Bit i: the request tried an endpoint of ``table.clusters[i]`` (names compared once
    per retry, then C indices per endpoint); all bits when the table has more than 64
    clusters (_in_mask then compares names)."""
    cdef unsigned long long mask = 0
    cdef Upstream u
    cdef int j
    if len(table.clusters) > 64:
        return ~(<unsigned long long>0)
    for u in tried:
        for j in range(len(table.clusters)):
            if table.clusters[j] == u.cluster:
                mask |= (<unsigned long long>1) << j
                break
    return mask


cdef inline bint _in_mask(unsigned long long mask, EndpointTable table, int i,
                          list tried) except -1:
    """Was endpoint ``i``'s cluster tried?"""
    cdef Upstream u
    cdef int c = table.cluster_index(i)
    if len(table.clusters) > 64:                # rare: by name
        for u in tried:
            if u.cluster == table.clusters[c]:
                return True
        return False
    return (mask >> c) & 1


cdef class PassiveHealth:
    """Tells the control plane (``Context.on_upstream_result``) what an attempt found."""

    cdef void report(self, Exchange ex, object kind):
        handler = ex.ctx.on_upstream_result
        if handler is not None:
            handler(ex.service, ex.upstream, kind)


cdef Downstream _lost_downstream():
    cdef Downstream lost = Downstream()
    lost.closed = True
    lost.client_bytes = b"-"
    lost.proto = b"http"
    return lost


cdef Downstream _LOST = _lost_downstream()     # what an exchange's lost connection leaves
cdef RetryPolicy _retry = RetryPolicy()
cdef PassiveHealth _health = PassiveHealth()


cdef str _grpc_refusal(ResponseHead head):
    """A trailers-only gRPC answer that says the server took no part in the call: its
    status name, else None.  UNAVAILABLE (14); CANCELLED (1), which grpcio answers to a call
    that arrives while the server stops (what Envoy's ``retry_on: cancelled`` is for)."""
    for name, _, value in head.peek_fields():
        if name == b"grpc-status":
            if value == b"14":
                return "UNAVAILABLE"
            return "CANCELLED" if value == b"1" else None
    return None


cdef bytes _cookie(bytes header, bytes name):
    """The value of cookie ``name`` in a Cookie header ("a=1; b=2"), or None."""
    cdef Py_ssize_t start = 0, end, n = len(name)
    if header is None:
        return None
    while True:
        start = header.find(name, start)
        if start < 0:
            return None
        if (start == 0 or header[start - 1] in b" ;") and header[start + n:start + n + 1] == b"=":
            end = header.find(b";", start)
            return header[start + n + 1:end if end >= 0 else len(header)].strip()
        start += n
