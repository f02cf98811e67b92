# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The request path: a downstream protocol paired with pooled upstream protocols.

Callback protocols only (as uvloop's own benchmarks do): no coroutine, task or
future per request.  A task appears only to open a new upstream connection,
which the pool makes rare.  Bytes are moved with ``transport.write``, flow
control with ``pause_reading``/``resume_reading``; bodies are never buffered
whole in either direction.

One request is in flight per client connection; pipelined requests wait in the
connection's buffer and are answered in order.  The per-request state lives in
the DownstreamProtocol's fields (reset per request) rather than in a new object.

Policy lives elsewhere: which route, which service and the retry settings come
from the snapshot objects (Route, Service) built by ``gateway.dataplane``; what
happens with passive failure reports is the context's ``on_upstream_result``.
"""
import logging
import os as _os
import time as _time
from asyncio import CancelledError

from orjson import dumps as _orjson_dumps
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

from libc.stdint cimport uint64_t

from _speedups.http cimport (
    BodyFramer, RequestHead, ResponseHead, build_error_response, build_interim_head,
    build_request_head, build_response_head, find_head_end, parse_request, parse_response,
    response_framing)
from _speedups.http import HttpError, FRAMING_CHUNKED, FRAMING_LENGTH, FRAMING_NONE, FRAMING_UNTIL_CLOSE
from _speedups.path cimport (
    NORM_OK, NORM_REDIRECT, PATH_FORWARD_ORIGINAL, PathPolicy, outcome_reason)
from _speedups.filters cimport RouteFilters
from _speedups.router cimport Router
from _speedups.table cimport EndpointTable, hash_bytes

cdef object _log = logging.getLogger("gateway.proxy")
cdef object monotonic = _time.monotonic
cdef object wall_time = _time.time

# Downstream states.
DEF S_IDLE = 0          # waiting for (the rest of) a request head
DEF S_BODY = 1          # streaming the request body upstream
DEF S_WAIT = 2          # request received whole; waiting for / streaming the response
DEF S_TUNNEL = 3        # after 101 Switching Protocols: bytes both ways
DEF S_CLOSED = 4

# Reasons for pausing the client's reads (a bit each, so they overlap safely).
DEF PAUSE_UPSTREAM_FULL = 1     # upstream's write buffer is full
DEF PAUSE_PENDING = 2           # body waiting for a connection passed the limit
DEF PAUSE_PIPELINE = 4          # pipelined requests waiting passed the limit

DEF PENDING_LIMIT = 262144      # bytes of request body held while connecting
DEF REPLAY_LIMIT = 65536        # bytes of request body kept so the request can be retried
DEF PIPELINE_LIMIT = 65536
DEF COALESCE_LIMIT = 16384      # body bytes copied to join the head in one write
DEF HOLD_LIMIT = 65536          # a sized response this small is written whole, in one write

# What a connection's deadline is for.
DEF D_NONE = 0
DEF D_IDLE = 1          # keep-alive connection with no request
DEF D_HEADER = 2        # a request head is arriving
DEF D_RESPONSE = 3      # waiting for the response head (per try)
DEF D_BODY = 4          # waiting for more of the request body

# Failure kinds reported to the context (passive health) and written to the log.
KIND_CONNECT = "connect_failed"
KIND_CONNECT_TIMEOUT = "connect_timeout"
KIND_RESET = "upstream_reset"
KIND_TIMEOUT = "upstream_timeout"
KIND_BAD_RESPONSE = "bad_response"
KIND_5XX = "upstream_5xx"

# ProxyContext.counters, by index (enum in proxy.pxd), and their names in .stats.
STAT_NAMES = ("requests", "responses_2xx", "responses_3xx", "responses_4xx", "responses_5xx",
              "retries", "upstream_connects", "connect_failures", "downstream_connections",
              "internal_errors", "connections_refused", "redispatched",
              "overflow_max_connections", "overflow_max_pending", "overflow_max_requests",
              "overflow_max_retries")

# Latency histogram bucket upper bounds (seconds), Prometheus-style; the last is +Inf.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
cdef double[13] _BOUNDS = [    # LATENCY_BOUNDS as a C array, for record()
   0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]

cdef bytes EMPTY = b""


cdef class TrafficStats:
    """Counters of one upstream or route: responses by status class and a latency histogram."""

    def __cinit__(self):
        cdef int i
        for i in range(6):
            self.by_class[i] = 0
        for i in range(N_BUCKETS):
            self.buckets[i] = 0
        self.latency_sum = 0.0
        self.count = 0

    cdef inline void record(self, int status, double seconds):
        cdef int i = 0
        self.count += 1
        self.by_class[status // 100 if 100 <= status < 600 else 0] += 1
        self.latency_sum += seconds
        while i < N_BUCKETS - 1 and seconds > _BOUNDS[i]:
            i += 1
        self.buckets[i] += 1

    cpdef list as_list(self):
        """Flat, for the worker's report: [count, by_class[0..5], buckets..., latency_sum]
        (gateway.stats.traffic_dict turns it into the as_dict shape)."""
        cdef int i
        out = [self.count]
        for i in range(6):
            out.append(self.by_class[i])
        for i in range(N_BUCKETS):
            out.append(self.buckets[i])
        out.append(self.latency_sum)
        return out

    def as_dict(self):
        return {"requests": self.count,
                "responses": {f"{c}xx": self.by_class[c] for c in range(1, 6)},
                "errors_no_status": self.by_class[0],
                "latency_buckets": [self.buckets[i] for i in range(N_BUCKETS)],
                "latency_sum": self.latency_sum}
cdef bytes CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


cdef class Reported:
    """What a worker reports on: it joins ``touched_sink`` when its counters move, once
    until the next report, so that a report costs what changed, not every endpoint."""

    cdef void touch(self):
        if not self.touched and self.touched_sink is not None:
            self.touched = True
            self.touched_sink.append(self)


cdef class Upstream(Reported):
    """One endpoint as the data plane sees it: its address and its idle connections.

    Kept by identity across snapshots (``key`` = (cluster, ip, port)), so its
    pool and counters survive endpoint-list updates.  ``touched`` is the list
    (``ProxyContext.touched``) it joins when its counters move, so that a worker
    reports only what changed.
    """

    def __init__(self, tuple key, str ip, int port, int weight, str cluster, list touched=None,
                 str pool=""):
        self.key = key
        self.pool = pool
        self.ip = ip
        self.port = port
        self.weight = weight
        self.cluster = cluster
        self.host = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        self.host_bytes = self.host.encode()
        self.json_host = _exact_json(self.host)
        self.json_cluster = _exact_json(cluster)
        self.idle = []
        self.removed = False
        self.requests = 0
        self.failures = 0
        self.inflight = 0
        self.report_success = False
        self.max_idle = 64
        self.touched = False
        self.touched_sink = touched
        self.ssl = None
        self.server_hostname = None
        self.traffic = TrafficStats()

    def counters(self):
        """[requests, failures, inflight, idle, *traffic.as_list()], for the worker's report."""
        self.touched = False
        return [self.requests, self.failures, self.inflight, len(self.idle), *self.traffic.as_list()]

    cdef UpstreamProtocol take_idle(self):
        cdef UpstreamProtocol conn
        while self.idle:
            conn = self.idle.pop()          # LIFO: the warmest connection first
            if not conn.closed and not conn.eof:
                return conn
        return None

    cdef void give_back(self, UpstreamProtocol conn, double now):
        if self.removed or len(self.idle) >= self.max_idle or conn.closed or conn.eof:
            conn.close()
            return
        conn.resume()                       # it may have been paused for a slow client
        conn.owner = None
        conn.idle_since = now
        self.idle.append(conn)
        self.touch()

    cpdef int close_idle(self, double older_than) except -1:
        """Close pooled connections idle since before ``older_than`` (all when it is inf)."""
        cdef UpstreamProtocol conn
        if not self.idle:
            return 0
        keep = []
        for conn in self.idle:
            if conn.idle_since < older_than and not conn.closed:
                conn.close()
            elif not conn.closed:
                keep.append(conn)
        if len(keep) != len(self.idle):
            self.touch()
        self.idle = keep
        return len(keep)

    def idle_count(self):
        return len(self.idle)


cdef class Service:
    """A merged service of the snapshot: its endpoint table and the Upstream per index."""

    def __init__(self, str key, EndpointTable table):
        self.key = key
        self.json_key = _exact_json(key)
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
                 list touched=None, double backoff=0.0):
        self.name = name
        self.json_name = _exact_json(name)
        self.services = services
        self.split = split
        self.rewrite_from = rewrite_from
        self.rewrite_to = rewrite_to
        self.timeout = timeout
        self.attempts = attempts
        self.retry_statuses = retry_statuses if retry_statuses else None
        self.backoff = backoff
        self.retry_timeout = retry_timeout
        self.per_try_timeout = per_try_timeout
        self.traffic = traffic if traffic is not None else TrafficStats()   # kept across reloads
        self.touched = False
        self.touched_sink = touched

    def counters(self):
        """``traffic.as_list()``, for the worker's report."""
        self.touched = False
        return self.traffic.as_list()

    cdef Service pick_service(self):
        """A service by the split's weights; None for the share of invalid backendRefs."""
        cdef int i
        if self.split is None:
            return self.services[0]
        i = self.split.pick(None)
        if i >= len(self.services):
            return None
        return self.services[i if i >= 0 else 0]


cdef class ProxyContext:
    """What every connection of a worker shares: the current snapshot, settings, log."""

    def __init__(self, loop, *, double connect_timeout=1.0, double response_timeout=15.0,
                 double idle_timeout=60.0, double header_timeout=10.0,
                 Py_ssize_t max_head_size=65536, Py_ssize_t max_headers=100,
                 Py_ssize_t max_uri=8192, long long max_body=0, Py_ssize_t max_response_head=65536,
                 Py_ssize_t max_connections=10000, long max_requests_per_connection=10000,
                 double body_idle_timeout=30.0,
                 access_log=None, via=b"1.1 gateway", request_id_prefix=None):
        self.loop = loop
        self.router = Router(())
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.max_head_size = max_head_size
        self.max_headers = max_headers
        self.max_uri = max_uri
        self.max_body = max_body
        self.max_response_head = max_response_head
        self.max_connections = max_connections
        self.max_requests_per_connection = max_requests_per_connection
        self.body_idle_timeout = body_idle_timeout
        self.path_policy = PathPolicy()
        self.trusted_proxies = None
        self.set_access_log(access_log)
        self.via = via
        # Random per process: ids stay unique across workers, restarts and replicas.
        self.request_id_prefix = (request_id_prefix or _os.urandom(4).hex().encode()) + b"-"
        self.request_counter = 0
        self.connections = set()
        self.draining = False
        self.on_upstream_result = None
        self.drain_grace = 1.0
        self.touched = []
        self.requests_in_flight = 0
        self.retries_in_flight = 0
        self.retry_budget_ratio = 0.2
        self.retry_budget_min = 3
        self.ticker = None
        cdef int i
        for i in range(N_STATS):
            self.counters[i] = 0

    def set_router(self, Router router):
        self.router = router

    @property
    def stats(self):
        """The counters as a dict (built when asked: the request path bumps C integers)."""
        return {name: self.counters[i] for i, name in enumerate(STAT_NAMES)}

    def counter_list(self):
        """The counters in STAT_NAMES order, for the worker's report."""
        return [self.counters[i] for i in range(N_STATS)]

    def take_touched(self):
        """The Upstreams and Routes whose counters moved since the last call."""
        out = list(self.touched)
        del self.touched[:]
        return out

    def set_access_log(self, access_log):
        """``access_log`` has ``parts`` (a list of lines), ``limit`` (bytes) and ``flush()``."""
        self.access_log = access_log
        self.log_parts = access_log.parts if access_log is not None else None
        self.log_limit = access_log.limit if access_log is not None else 0
        self.log_size = 0

    cdef void write_log_line(self, bytes line):
        self.log_parts.append(line)
        self.log_size += len(line)
        if self.log_size >= self.log_limit:
            self.log_size = 0
            self.access_log.flush()

    def start_ticker(self, double interval=0.1):
        """Check every connection's deadlines each ``interval`` seconds."""
        self.tick_interval = interval
        self.ticker = self.loop.call_later(interval, self.tick)

    def stop_ticker(self):
        if self.ticker is not None:
            self.ticker.cancel()
            self.ticker = None

    def tick(self):
        cdef DownstreamProtocol conn
        cdef double now = monotonic()
        for conn in list(self.connections):
            if conn.deadline_kind != D_NONE or conn.total_deadline > 0:
                try:
                    conn.check_deadlines(now)
                except Exception as exc:
                    conn.internal_error(exc)
        self.ticker = self.loop.call_later(self.tick_interval, self.tick)

    def redispatch(self, Service service, upstreams):
        """Send ``service``'s requests waiting on these (just ejected or removed) endpoints
        elsewhere.  By service: health is per service, while an Upstream may be shared.

        Called by the data plane when it applies flags that take an endpoint out or a
        membership change that drops it, so rarely that a scan of the connections (as
        tick() makes several times a second) beats keeping a per-endpoint set of waiting
        requests on the hot path.  Returns how many requests moved.
        """
        cdef DownstreamProtocol conn
        cdef int moved = 0
        gone = set(upstreams)
        if not gone:
            return 0
        for conn in list(self.connections):
            if conn.service is service and conn.upstream is not None and conn.upstream in gone:
                try:
                    moved += conn.redispatch(conn.upstream)
                except Exception as exc:
                    conn.internal_error(exc)
        return moved

    cdef bytes next_request_id(self):
        self.request_counter += 1
        return self.request_id_prefix + b"%x" % self.request_counter

    def protocol_factory(self):
        return DownstreamProtocol(self)

    def tls_protocol_factory(self):
        return DownstreamProtocol(self, b"https")

    def close_idle_connections(self):
        """For graceful shutdown: close client connections with no request in progress."""
        cdef DownstreamProtocol conn
        for conn in list(self.connections):
            if conn.state == S_IDLE and not conn.buf:
                conn.close()

    def drain_idle_connections(self, double grace):
        """Shutting down: idle connections close within ``grace`` unless a request comes first."""
        cdef DownstreamProtocol conn
        cdef double deadline = monotonic() + grace
        self.drain_grace = grace
        for conn in list(self.connections):
            if conn.state == S_IDLE and not conn.buf:
                if conn.deadline_kind != D_IDLE or conn.deadline > deadline:
                    conn.deadline_kind = D_IDLE
                    conn.deadline = deadline

    def active_connections(self):
        return len(self.connections)


cdef class UpstreamProtocol:
    """A connection to one endpoint; lent to one downstream request at a time."""

    def __init__(self, Upstream upstream):
        self.upstream = upstream
        self.owner = None
        self.transport = None
        self.closed = False
        self.eof = False
        self.paused = False
        self.idle_since = 0.0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, bytes data):
        cdef DownstreamProtocol owner = self.owner
        if owner is None:
            self.close()                    # bytes on an idle connection: it is out of sync
            return
        try:
            owner.upstream_data(self, data)
        except Exception as exc:
            owner.internal_error(exc)

    def eof_received(self):
        cdef DownstreamProtocol owner = self.owner
        self.eof = True
        if owner is not None:
            try:
                owner.upstream_gone(self, None)
            except Exception as exc:
                owner.internal_error(exc)
        return False

    def connection_lost(self, exc):
        cdef DownstreamProtocol owner = self.owner
        self.closed = True
        self.eof = True
        if self.breaker is not None:
            self.breaker.connections -= 1
            self.breaker = None
        if owner is not None:
            try:
                owner.upstream_gone(self, exc)
            except Exception as err:
                owner.internal_error(err)

    def pause_writing(self):
        if self.owner is not None:
            self.owner.pause_reading(PAUSE_UPSTREAM_FULL)

    def resume_writing(self):
        if self.owner is not None:
            self.owner.resume_reading(PAUSE_UPSTREAM_FULL)

    cdef void pause(self):
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    cdef void resume(self):
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    cdef void close(self):
        self.owner = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    cdef void abort(self):
        self.owner = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()


cdef class DownstreamProtocol:
    """One client connection."""

    def __init__(self, ProxyContext ctx, bytes proto=b"http"):
        self.ctx = ctx
        self.proto = proto                  # X-Forwarded-Proto: "https" behind a TLS listener
        self.state = S_IDLE
        self.buf = EMPTY
        self.scan_from = 0
        self.read_paused = 0
        self.requests_served = 0
        self.deadline_kind = D_NONE
        self.total_deadline = 0
        self.client_eof = False
        self.up = None

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else "-"
        self.client_bytes = self.client.encode()
        if len(self.ctx.connections) >= self.ctx.max_connections:
            # Over the limit: close at once rather than queue work we cannot bound.
            self.ctx.counters[ST_REFUSED] += 1
            _log.warning("connection refused: limits.max_connections reached (%d)", self.ctx.max_connections)
            if self.ctx.access_log is not None:
                self.ctx.write_log_line(b'{"time":"%s","client":"%s","status":0,"error":%s}\n' % (
                    _timestamp(wall_time()), self.client_bytes,
                    _dumps("connection refused: limits.max_connections reached")))
            self.state = S_CLOSED
            transport.abort()
            return
        self.ctx.connections.add(self)
        self.ctx.counters[ST_CONNECTIONS] += 1
        self.set_deadline(D_IDLE, self.ctx.idle_timeout)

    def data_received(self, bytes data):
        if self.state == S_TUNNEL:
            if self.up is not None:
                self.up.transport.write(data)
            return
        if self.buf:
            self.buf += data
        else:
            self.buf = data
        try:
            self.process()
        except Exception as exc:
            self.internal_error(exc)

    cpdef internal_error(self, object exc):
        """A bug reached a callback: log it, answer 500 if nothing was sent yet, close.

        Only this connection is affected; the exception never reaches the event
        loop (which would close the transport and leave the client waiting).
        """
        _log.error("internal error on the request path", exc_info=exc)
        self.ctx.counters[ST_INTERNAL_ERRORS] += 1
        if self.up is not None:
            self.up.abort()
            self.up = None
        if self.state != S_CLOSED:
            if self.head is not None and not self.response_started:
                self.transport.write(build_error_response(500, "internal error in the gateway",
                                                          self.request_id, False))
            self.state = S_CLOSED
            self.deadline_kind = D_NONE
            self.transport.close()

    def eof_received(self):
        if self.state == S_TUNNEL and self.up is not None and self.up.transport.can_write_eof():
            self.up.transport.write_eof()   # half-close through the tunnel
            return True
        if self.state == S_IDLE and not self.buf:
            self.close()
            return False
        # The client stopped sending but may still read the answer to its request.
        self.client_eof = True
        return True

    def connection_lost(self, exc):
        self.ctx.connections.discard(self)
        self.deadline_kind = D_NONE
        if self.state != S_IDLE and self.state != S_CLOSED and self.head is not None:
            if self.up is not None:
                self.up.abort()
                self.up = None
            if not self.response_started and self.state != S_TUNNEL:
                self.status = 499           # nginx's "client closed request"
                self.error = "client closed connection"
            self.finish_request(False)
        self.state = S_CLOSED
        self.buf = EMPTY

    def pause_writing(self):
        if self.up is not None:
            self.up.pause()                 # the client is slow: stop reading its response

    def resume_writing(self):
        if self.up is not None:
            self.up.resume()

    # -- reading requests -------------------------------------------------

    cdef void pause_reading(self, int reason):
        if self.read_paused == 0 and self.state != S_CLOSED:
            self.transport.pause_reading()
        self.read_paused |= reason

    cdef void resume_reading(self, int reason):
        if self.read_paused == 0:
            return
        self.read_paused &= ~reason
        if self.read_paused == 0 and self.state != S_CLOSED:
            self.transport.resume_reading()

    cdef void process(self):
        """Consume buffered bytes as far as the current state allows."""
        cdef Py_ssize_t end
        cdef bytes chunk
        while self.state != S_CLOSED:
            if self.state == S_IDLE:
                if not self.buf:
                    return
                if not self.read_head():
                    return
            elif self.state == S_BODY:
                if not self.buf:
                    return
                try:
                    end = self.req_framer.feed(self.buf, 0)
                except HttpError as err:
                    self.fail_request(err.status, err.reason)
                    return
                if end == len(self.buf):
                    chunk = self.buf
                    self.buf = EMPTY
                else:
                    chunk = self.buf[:end]
                    self.buf = self.buf[end:]
                self.bytes_received += len(chunk)
                if self.ctx.max_body and self.req_framer.payload > self.ctx.max_body:
                    self.fail_request(413, f"request body larger than limits.max_body ({self.ctx.max_body} bytes)")
                    return
                self.send_body(chunk)
                if self.req_framer.done:
                    self.request_sent_whole()
                elif self.deadline_kind == D_BODY:
                    self.deadline = monotonic() + self.ctx.body_idle_timeout
            else:
                # S_WAIT: bytes now are pipelined requests; keep them for later.
                if len(self.buf) > PIPELINE_LIMIT:
                    self.pause_reading(PAUSE_PIPELINE)
                return

    cdef bint read_head(self) except -1:
        """Parse a complete head from the buffer and start its request; False if incomplete."""
        cdef Py_ssize_t end = find_head_end(self.buf, self.scan_from)
        cdef RequestHead head
        if end < 0:
            if len(self.buf) > self.ctx.max_head_size:
                if self.buf.find(b"\n", 0, self.ctx.max_uri) < 0:
                    self.reject(414, "request target too long")
                else:
                    self.reject(431, "request head too large")
                return False
            self.scan_from = max(0, len(self.buf) - 3)
            if self.deadline_kind != D_HEADER:
                self.set_deadline(D_HEADER, self.ctx.header_timeout)
            return False
        self.scan_from = 0
        if end > self.ctx.max_head_size:
            self.reject(431, "request head too large")
            return False
        try:
            head = parse_request(self.buf, end, self.ctx.max_headers)
        except HttpError as err:
            self.reject(err.status, err.reason)
            return False
        if len(head.target) > self.ctx.max_uri:
            self.reject(414, "request target too long")
            return False
        self.bytes_received = end
        self.buf = self.buf[end:] if end < len(self.buf) else EMPTY
        self.start_request(head)
        return True

    cdef void reject(self, int status, str reason):
        """Answer a request we cannot parse and close: its framing is unknown."""
        self.head = None
        self.transport.write(build_error_response(status, reason, b"-", False))
        self.ctx.counters[ST_4XX if status < 500 else ST_5XX] += 1
        if self.ctx.access_log is not None:
            self.ctx.write_log_line(b'{"time":"%s","client":"%s","status":%d,"error":%s}\n' % (
                _timestamp(wall_time()), self.client_bytes, status, _dumps(reason)))
        self.close()

    # -- one request ------------------------------------------------------

    cdef void start_request(self, RequestHead head):
        cdef ProxyContext ctx = self.ctx
        cdef object route
        self.head = head
        self.norm_target = None
        self.client_ip = self.client_bytes
        if ctx.trusted_proxies is not None and head.forwarded_for is not None:
            self.client_ip = ctx.trusted_proxies.client(self.client_bytes, head.forwarded_for)
        self.t_start = monotonic()
        self.request_id = head.request_id if head.request_id is not None else ctx.next_request_id()
        self.status = 0
        self.error = None
        self.attempts = 0
        self.tried = None
        self.response_started = False
        self.resp_head = None
        self.head_out = None
        self.held_body = None
        self.resp_buf = EMPTY
        self.bytes_sent = 0
        self.pending = None
        self.pending_size = 0
        self.replay = []
        self.replay_size = 0
        self.replayable = True
        self.written_upstream = False
        self.upstream = None
        self.endpoint_index = -1
        self.service = None
        self.t_connect = -1.0
        self.t_response = -1.0
        self.route = None
        self.deadline_kind = D_NONE
        self.total_deadline = 0
        self.requests_served += 1
        self.keep_alive = (head.keep_alive and head.minor == 1 and not ctx.draining
                           and self.requests_served < ctx.max_requests_per_connection)
        self.budgeted_retry = False
        self.budget_refused = False
        self.set_cookie = None
        self.mirror_head = None
        self.breaker_service = None
        self.breaker_retry = False
        ctx.requests_in_flight += 1
        ctx.counters[ST_REQUESTS] += 1
        if head.chunked:
            self.req_framer = BodyFramer(FRAMING_CHUNKED, 0, 400)
        elif head.content_length > 0:
            self.req_framer = BodyFramer(FRAMING_LENGTH, head.content_length, 400)
        else:
            self.req_framer = None
        self.state = S_BODY if self.req_framer is not None else S_WAIT
        if ctx.max_body and head.content_length > ctx.max_body:
            self.respond_error(413, f"request body larger than limits.max_body ({ctx.max_body} bytes)")
            return
        if self.state == S_BODY:
            self.set_deadline(D_BODY, ctx.body_idle_timeout)
        if not self.normalize_path(head):
            return
        route = ctx.router.match(head)
        if route is None:
            self.respond_error(404, "no route matches this request")
            return
        self.route = <Route>route
        if self.route.filters is not None and self.answer_by_filters(self.route.filters, head):
            return
        self.service = self.route.pick_service()
        if self.service is None:
            self.respond_error(500, "this request drew an invalid backendRef of its route rule")
            return
        if self.over_limit(self.service, self.service.max_requests, self.service.active_requests,
                           b"max_requests", ST_OVERFLOW_REQUESTS):
            return
        self.breaker_service = self.service
        self.service.active_requests += 1
        target = head.target
        # A rewrite replaces the prefix the route matched, which only the normalized path
        # is known to start with: it applies to that one even when the original is forwarded.
        if self.norm_target is not None and (self.route.rewrite_from is not None
                                             or not ctx.path_policy.flags & PATH_FORWARD_ORIGINAL):
            target = self.norm_target
        self.upstream_target = self.rewrite_target(target)
        if self.route.filters is not None:
            self.apply_request_filters(self.route.filters, head)
        if self.route.timeout > 0:
            self.total_deadline = self.t_start + self.route.timeout
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

    cdef bint answer_by_filters(self, RouteFilters filters, RequestHead head) except -1:
        """True when the route's filters answer the request here (redirect, or no valid backend)."""
        if filters.direct_status:
            self.respond_error(filters.direct_status, filters.direct_reason)
            return True
        if filters.redirect is not None:
            self.respond_error(filters.redirect.status, "redirected",
                               filters.redirect.location(head, self.proto))
            return True
        return False

    cdef void apply_request_filters(self, RouteFilters filters, RequestHead head):
        """URLRewrite's path, RequestHeaderModifier and RequestMirror, once per request (a
        retry resends what they made)."""
        if filters.rewrite_path is not None:
            self.upstream_target = filters.rewrite_target(self.upstream_target)
        if filters.request_headers is not None:
            head.headers = filters.request_headers.apply(head.headers)
        if filters.mirrors and head.content_length <= REPLAY_LIMIT:
            host = filters.rewrite_host or head.host or b""
            copy = build_request_head(head, self.upstream_target, host, self.client_bytes,
                                      self.request_id, self.ctx.via, False, self.proto, self.client_ip)
            if self.state == S_BODY:
                self.mirror_head = copy     # sent with the body once it is all here
            else:
                self.mirror(copy)

    cdef void mirror(self, bytes copy):
        """RequestMirror: a copy to each mirror service; it never fails or holds up this request.

        A body is copied from the replay buffer, so only bodies up to REPLAY_LIMIT (64 KiB)
        are mirrored (the head is mirrored with them; a larger body is not mirrored at all).
        """
        for mirror in self.route.filters.mirrors:
            try:
                mirror(copy)
            except Exception:
                self.ctx.counters[ST_INTERNAL_ERRORS] += 1
                _log.exception("request mirror failed")

    cdef bytes rewrite_target(self, bytes target):
        cdef Route route = self.route
        if route.rewrite_from is None or not target.startswith(route.rewrite_from):
            return target
        rest = target[len(route.rewrite_from):]
        if route.rewrite_to.endswith(b"/") and rest.startswith(b"/"):
            rest = rest[1:]
        elif rest and not route.rewrite_to.endswith(b"/") and not rest[:1] in (b"/", b"?"):
            rest = b"/" + rest
        return (route.rewrite_to + rest) or b"/"

    cdef void try_upstream(self):
        """Pick an endpoint not tried yet and send the request to it."""
        cdef EndpointTable table = self.service.table
        cdef Upstream upstream
        cdef UpstreamProtocol conn
        cdef int index
        if (self.service.hash_header is not None or self.service.hash_source_ip
                or self.service.hash_cookie is not None):
            self.set_hash_key(table)
        if self.tried is None:
            index = table.pick(None)
        else:
            if not self.breaker_retry:
                if self.over_limit(self.service, self.service.max_retries,
                                   self.service.active_retries, b"max_retries", ST_OVERFLOW_RETRIES):
                    return
                self.breaker_retry = True
                self.service.active_retries += 1
            index = self.pick_retry(table)
        if index < 0:
            if self.attempts == 0:
                self.respond_error(503, f"no healthy endpoint for service {self.service.key}")
            else:
                self.respond_error(502, self.error or "upstream failed")
            return
        upstream = <Upstream>table.endpoint(index)
        self.attempts += 1
        self.endpoint_index = index
        self.upstream = upstream
        if self.tried is None:
            self.tried = [upstream]
        else:
            self.tried.append(upstream)
        if self.attempts > 1:
            self.ctx.counters[ST_RETRIES] += 1
        table.acquire(index)
        self.table_generation = table.generation
        upstream.requests += 1
        upstream.inflight += 1
        upstream.touch()
        conn = upstream.take_idle()
        if conn is not None:
            self.t_connect = 0.0
            self.send_head(conn)
        else:
            self.connect(upstream)

    cdef void retry_after_backoff(self):
        """Retry after an answer or a timeout: at once, or after the route's backoff.

        The wait doubles with each retry (at most 10x); the request's own deadline keeps
        running meanwhile.  Retries after a failed connect or an ejection do not wait:
        that endpoint never had the request, or is out.
        """
        cdef double delay = self.route.backoff
        if delay <= 0:
            self.try_upstream()
            return
        delay = min(delay * (1 << min(self.attempts - 1, 4)), 10 * self.route.backoff)
        self.backoff_timer = self.ctx.loop.call_later(delay, self.retry_now, self.connect_id)

    def retry_now(self, int connect_id):
        self.backoff_timer = None
        if connect_id == self.connect_id and self.state != S_CLOSED and self.head is not None:
            self.try_upstream()

    cdef void cancel_backoff(self):
        if self.backoff_timer is not None:
            self.backoff_timer.cancel()
            self.backoff_timer = None

    cdef int pick_retry(self, EndpointTable table) except -2:
        """A retry goes to another cluster if one can take it, else to an endpoint not tried yet."""
        cdef Upstream u
        cdef int i, index
        # By identity: the table's indices may have moved since the last try.
        tried_idx = [table.index_of(u.key) for u in self.tried]
        tried_clusters = {u.cluster for u in self.tried}
        same_clusters = [i for i in range(len(table)) if table.endpoint(i).cluster in tried_clusters]
        index = table.pick(tuple(same_clusters))
        if index < 0:
            index = table.pick(tuple(tried_idx))
        if index < 0:
            index = table.pick(None)        # every endpoint tried: any healthy one will do
        return index

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

    cdef void connect(self, Upstream upstream):
        cdef ProxyContext ctx = self.ctx
        cdef Service service = self.service
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
        self.t_try = monotonic()
        self.connect_id += 1
        if upstream.ssl is None:
            connecting = ctx.loop.create_connection(lambda: UpstreamProtocol(upstream), upstream.ip,
                                                    upstream.port)
        else:
            connecting = ctx.loop.create_connection(
                lambda: UpstreamProtocol(upstream), upstream.ip, upstream.port, ssl=upstream.ssl,
                server_hostname=upstream.server_hostname, ssl_handshake_timeout=ctx.connect_timeout)
        task = ctx.loop.create_task(connecting)
        timer = ctx.loop.call_later(ctx.connect_timeout, task.cancel)
        cdef int connect_id = self.connect_id
        task.add_done_callback(lambda t: self.guarded_on_connected(t, timer, connect_id, upstream,
                                                                   service))

    def guarded_on_connected(self, task, timer, int connect_id, Upstream upstream, Service service):
        # Each connect() is one pending slot and one connection until here; a connection
        # that was made keeps its slot until it closes (UpstreamProtocol.connection_lost).
        service.pending -= 1
        if task.cancelled() or task.exception() is not None:
            service.connections -= 1
        else:
            (<UpstreamProtocol>task.result()[1]).breaker = service
        try:
            self.on_connected(task, timer, connect_id, upstream)
        except Exception as exc:
            self.internal_error(exc)

    cdef void on_connected(self, object task, object timer, int connect_id, Upstream upstream):
        cdef UpstreamProtocol conn
        timer.cancel()
        try:
            conn = <UpstreamProtocol>task.result()[1]
        except CancelledError:
            self.upstream_failed(connect_id, upstream, KIND_CONNECT_TIMEOUT,
                                 f"connect to {upstream.host} timed out", True)
            return
        except OSError as exc:
            self.upstream_failed(connect_id, upstream, KIND_CONNECT,
                                 f"connect to {upstream.host} failed: {exc.strerror or exc}", True)
            return
        if connect_id != self.connect_id or self.state == S_CLOSED or self.upstream is not upstream:
            upstream.give_back(conn, monotonic())   # this request moved on; keep the connection
            return
        self.t_connect = monotonic() - self.t_try
        self.send_head(conn)

    cdef void send_head(self, UpstreamProtocol conn):
        cdef RequestHead head = self.head
        conn.owner = self
        self.up = conn
        self.t_try = monotonic()
        host = head.host if head.host is not None else self.upstream.host_bytes
        if self.route.filters is not None and self.route.filters.rewrite_host is not None:
            host = self.route.filters.rewrite_host     # URLRewrite; X-Forwarded-Host keeps the client's
        conn.transport.write(build_request_head(
            head, self.upstream_target, host, self.client_bytes, self.request_id, self.ctx.via,
            head.upgrade is not None, self.proto, self.client_ip))
        # A retry after an attempt that wrote to its upstream resends the whole body so
        # far (kept in ``replay``); otherwise ``pending`` holds all not yet written.
        body = self.replay if self.written_upstream else self.pending
        if body:
            for chunk in body:
                conn.transport.write(chunk)
        self.written_upstream = True
        self.pending = None
        self.pending_size = 0
        self.resume_reading(PAUSE_PENDING)
        if self.state == S_WAIT:
            self.arm_response_timer()

    cdef void send_body(self, bytes chunk):
        if self.replayable:
            if self.replay_size + len(chunk) <= REPLAY_LIMIT:
                self.replay.append(chunk)
                self.replay_size += len(chunk)
            else:
                self.replayable = False     # too large to keep: a sent request is not retried
                self.replay = None
        if self.up is not None:
            self.up.transport.write(chunk)
            return
        if self.pending is None:
            self.pending = []
        self.pending.append(chunk)
        self.pending_size += len(chunk)
        if self.pending_size > PENDING_LIMIT:
            self.pause_reading(PAUSE_PENDING)

    cdef void request_sent_whole(self):
        self.state = S_WAIT
        if self.mirror_head is not None:
            if self.replayable:
                self.mirror(self.mirror_head + b"".join(self.replay))
            self.mirror_head = None
        if self.up is not None and self.resp_head is None:
            self.arm_response_timer()
        if self.resp_head is not None and self.resp_framer is not None and self.resp_framer.done:
            self.finish_exchange()          # the answer came before the body was done
        elif self.buf:
            self.process()

    cdef void arm_response_timer(self):
        cdef Route route = self.route
        self.set_deadline(D_RESPONSE, route.per_try_timeout if route.per_try_timeout > 0
                          else self.ctx.response_timeout)

    # -- the response -----------------------------------------------------

    cdef void upstream_data(self, UpstreamProtocol conn, bytes data):
        cdef Py_ssize_t end
        if conn is not self.up:
            conn.close()
            return
        if self.state == S_TUNNEL:
            self.transport.write(data)
            return
        if self.resp_head is None:
            self.resp_buf = self.resp_buf + data if self.resp_buf else data
            while self.resp_head is None:
                end = find_head_end(self.resp_buf, 0)
                if end < 0:
                    if len(self.resp_buf) > self.ctx.max_response_head:
                        self.bad_response("response head too large")
                    return
                if end > self.ctx.max_response_head:
                    self.bad_response("response head too large")
                    return
                if not self.read_response_head(end):
                    return
            data = self.resp_buf
            self.resp_buf = EMPTY
            if self.state == S_TUNNEL:
                if data:
                    self.transport.write(data)
                return
        self.forward_response_body(data)

    cdef bint read_response_head(self, Py_ssize_t end) except -1:
        cdef ResponseHead head
        cdef bytes rest
        try:
            head = parse_response(self.resp_buf, end, self.ctx.max_headers)
        except HttpError as err:
            self.bad_response(err.reason)
            return False
        rest = self.resp_buf[end:]
        self.resp_buf = rest
        if head.status == 101:
            if self.head.upgrade is None:
                self.bad_response("101 Switching Protocols to a request that asked for no upgrade")
                return False
            self.start_tunnel(head)
            return True
        if head.status < 200:
            # 1xx: forward to HTTP/1.1 clients, then wait for the final head.
            if self.head.minor == 1:
                self.transport.write(build_interim_head(head) if head.status != 100 else CONTINUE_100)
            return True
        return self.on_final_head(head)

    cdef bint on_final_head(self, ResponseHead head) except -1:
        """Take the final response head; False when the request went to another endpoint instead."""
        cdef Route route = self.route
        cdef int framing = response_framing(head, self.head.method)
        cdef double now = monotonic()
        cdef int index
        self.t_response = now - self.t_try
        if self.service.observe_latency:
            index = self.endpoint_index
            if self.service.table.generation != self.table_generation:
                index = self.service.table.index_of(self.upstream.key)
            if index >= 0:
                self.service.table.observe(index, self.t_response, now)
        if head.status >= 500 and head.status in self.service.outlier_statuses:
            self.report(KIND_5XX, False)
        if head.status >= 400 and route.retry_statuses is not None and head.status in route.retry_statuses:
            if self.retry_allowed(True):
                self.up.close()
                self.up = None
                self.release_endpoint()
                self.error = f"upstream {self.upstream.host} answered {head.status}"
                self.resp_buf = EMPTY
                self.retry_after_backoff()
                return False
        self.resp_head = head
        self.status = head.status
        self.response_started = True
        self.deadline_kind = D_NONE
        if framing == FRAMING_UNTIL_CLOSE:
            self.keep_alive = False         # the body ends when the upstream closes
        if self.state == S_BODY and not self.req_framer.done:
            self.keep_alive = False         # the client's body would have to be drained
        self.resp_framer = BodyFramer(framing, head.content_length, 502)
        if route.filters is not None and route.filters.response_headers is not None:
            head.headers = route.filters.response_headers.apply(head.headers)
        if self.set_cookie is not None:
            head.headers.append((b"set-cookie", b"Set-Cookie", self.set_cookie))
        # Written with the first body bytes by forward_response_body: one syscall, not two.
        self.head_out = build_response_head(head, framing, self.keep_alive)
        if head.status < 500:
            self.report(None, True)
        return True

    cdef void forward_response_body(self, bytes data):
        cdef Py_ssize_t end = 0
        cdef bytes head_out = self.head_out
        if data and not self.resp_framer.done:
            try:
                end = self.resp_framer.feed(data, 0)
            except HttpError as err:
                if head_out is not None:    # nothing reached the client yet: it gets a 502
                    self.head_out = None
                    self.response_started = False
                    self.bad_response(err.reason)
                else:
                    self.abort_response(err.reason)
                return
        if end < len(data):
            # Bytes past the end of the response: that upstream connection is out of sync.
            self.up.upstream_extra = True
            data = data[:end]
        self.bytes_sent += end
        if head_out is not None:
            if self.held_body is not None:
                data = self.held_body + data
            if (not self.resp_framer.done and self.resp_framer.mode == FRAMING_LENGTH
                    and len(data) + self.resp_framer.remaining <= HOLD_LIMIT):
                # A small response split over reads is written whole once complete, in one
                # syscall, as nginx's proxy buffering does; until then the client has seen
                # nothing, so a failing upstream still gets it a clean 502.
                self.held_body = data
                return
            self.held_body = None
            self.head_out = None
            self.bytes_sent += len(head_out)
            if not data:
                self.transport.write(head_out)
            elif len(data) <= COALESCE_LIMIT:
                self.transport.write(head_out + data)
            else:
                self.transport.writelines((head_out, data))    # one writev, no copy
        elif data:
            self.transport.write(data)
        if self.resp_framer.done:
            self.finish_exchange()

    cdef void start_tunnel(self, ResponseHead head):
        self.resp_head = head
        self.status = 101
        self.response_started = True
        self.deadline_kind = D_NONE
        self.total_deadline = 0
        cdef bytes out = build_response_head(head, FRAMING_NONE, True)
        self.bytes_sent = len(out)
        self.transport.write(out)
        self.state = S_TUNNEL
        if self.buf:
            self.up.transport.write(self.buf)
            self.buf = EMPTY
        self.resume_reading(PAUSE_PENDING | PAUSE_PIPELINE)

    cdef void upstream_gone(self, UpstreamProtocol conn, object exc):
        """The upstream connection ended (EOF or loss) while lent to this request."""
        if conn is not self.up:
            return
        if self.state == S_TUNNEL:
            self.up = None
            self.finish_request(False)
            self.close()
            return
        if self.resp_head is not None:
            if self.resp_framer.mode == FRAMING_UNTIL_CLOSE:
                self.up = None
                self.forward_response_body(EMPTY)   # a head still held goes out now
                self.finish_exchange()
            elif self.head_out is not None:     # held: nothing has reached the client
                self.head_out = self.held_body = None
                self.response_started = False
                self.bad_response("upstream closed the connection mid-response")
            else:
                self.abort_response("upstream closed the connection mid-response")
            return
        if self.resp_buf:
            self.bad_response("upstream closed the connection mid-head")
            return
        # No response byte: retry when the request was never sent or is idempotent.
        reason = f"upstream {self.upstream.host} closed the connection before responding"
        self.upstream_failed(self.connect_id, self.upstream, KIND_RESET, reason, False)

    cdef bint retry_allowed(self, bint sent):
        """The retry rule: a request never sent may go elsewhere; a sent one only if idempotent.

        Retries of sent requests within one cluster draw on a budget (a share of
        the requests in flight, as Envoy's retry budget), so that retries cannot
        multiply the load on a struggling service.  Two kinds are not budgeted:
        a request never sent costs its upstream nothing, and a retry that fails
        over to another cluster is the failover itself -- budgeting it made
        concurrent requests caught by a hung cluster fail (at most one such
        retry per request: later ones land in a tried cluster and are budgeted).
        """
        cdef ProxyContext ctx = self.ctx
        if self.attempts >= self.route.attempts or self.response_started:
            return False
        if self.written_upstream and not self.replayable:
            return False                    # part of the body is gone: it cannot be sent again
        if not sent:
            return True
        if not self.head.idempotent:
            return False
        if self.other_cluster_available():
            return True
        if ctx.retries_in_flight >= max(ctx.retry_budget_min,
                                        ctx.retry_budget_ratio * ctx.requests_in_flight):
            self.budget_refused = True
            return False
        if not self.budgeted_retry:
            self.budgeted_retry = True
            ctx.retries_in_flight += 1
        return True

    cdef bint other_cluster_available(self):
        """Is there a serving endpoint in a cluster this request has not tried?"""
        cdef EndpointTable table = self.service.table
        cdef Upstream u
        cdef int i
        tried_clusters = {u.cluster for u in self.tried}
        for i in range(len(table)):
            if table.flags(i) == 0 and (<Upstream>table.endpoint(i)).cluster not in tried_clusters:
                return True
        return False

    cdef void upstream_failed(self, int connect_id, Upstream upstream, str kind, str reason, bint before_send):
        if connect_id != self.connect_id or self.state == S_CLOSED or self.upstream is not upstream:
            return
        if kind == KIND_CONNECT or kind == KIND_CONNECT_TIMEOUT:
            self.ctx.counters[ST_CONNECT_FAILURES] += 1
        upstream.failures += 1
        self.report(kind, False)
        if self.up is not None:
            self.up.abort()
            self.up = None
        self.release_endpoint()
        self.error = reason
        if self.retry_allowed(not before_send):
            self.try_upstream()
        else:
            self.respond_error(504 if kind == KIND_TIMEOUT else 502, reason)

    cdef void bad_response(self, str reason):
        self.report(KIND_BAD_RESPONSE, False)
        if self.up is not None:
            self.up.abort()
            self.up = None
        self.respond_error(502, f"upstream {self.upstream.host} sent a malformed response ({reason})")

    cdef void abort_response(self, str reason):
        """The response started but cannot be completed: the client connection must end."""
        self.error = reason
        self.report(KIND_BAD_RESPONSE, False)
        if self.up is not None:
            self.up.abort()
            self.up = None
        self.keep_alive = False
        self.finish_request(False)
        self.transport.abort()

    cdef void report(self, object kind, bint ok):
        """Feed passive health: every failure, and a success only when it ends a run of failures."""
        cdef Upstream upstream = self.upstream
        if upstream is None:
            return
        if ok:
            if not upstream.report_success:
                return                      # the common case: nothing to tell, no Python call
            upstream.report_success = False
        else:
            upstream.report_success = True
        handler = self.ctx.on_upstream_result
        if handler is not None:
            handler(self.service, upstream, kind)

    # -- deadlines ------------------------------------------------------
    # Checked by ProxyContext.tick() a few times a second: no timer object is
    # made per request, and a timeout fires within one tick of its deadline.

    cdef void set_deadline(self, int kind, double delay):
        self.deadline_kind = kind
        self.deadline = monotonic() + delay

    cdef void check_deadlines(self, double now):
        cdef int kind = self.deadline_kind
        if self.total_deadline > 0 and now >= self.total_deadline and self.state in (S_BODY, S_WAIT):
            self.total_deadline = 0
            if self.response_started:
                self.abort_response("route timeout during the response")
            else:
                self.upstream_timed_out(False, "route timeout")
            return
        if kind == D_NONE or now < self.deadline:
            return
        self.deadline_kind = D_NONE
        if kind == D_IDLE:
            if self.state == S_IDLE and not self.buf:
                self.close()
        elif kind == D_HEADER:
            if self.state == S_IDLE:
                self.reject(408, "timed out reading the request head")
        elif kind == D_RESPONSE:
            if self.state in (S_BODY, S_WAIT) and not self.response_started and self.up is not None:
                self.upstream_timed_out(True, "timed out")
        elif kind == D_BODY:
            if self.state == S_BODY:
                self.fail_request(408, "timed out reading the request body")

    cdef bint redispatch(self, Upstream upstream):
        """This request's endpoint was ejected while it waits for the response head: when it
        is idempotent and has a retry left, send it to another endpoint (another cluster
        first, as any retry) now rather than at its timeout.  A hung endpoint would hold it
        for the whole response timeout; an ejected one is not expected to answer soon.
        Nothing is reported to passive health: the endpoint is out already.  A request still
        connecting is left to its (short) connect timeout; a non-idempotent one keeps
        waiting, since the endpoint may yet process it.
        """
        if (self.upstream is not upstream or self.up is None or self.resp_head is not None
                or self.resp_buf or (self.state != S_WAIT and self.state != S_BODY)):
            return False
        if not self.retry_allowed(True):
            return False
        self.error = f"upstream {upstream.host} was ejected while the request waited for its answer"
        self.up.abort()
        self.up = None
        self.connect_id += 1
        self.deadline_kind = D_NONE
        self.release_endpoint()
        self.ctx.counters[ST_REDISPATCHED] += 1
        self.try_upstream()
        return True

    cdef void upstream_timed_out(self, bint per_try, str what):
        reason = f"upstream {self.upstream.host if self.upstream is not None else '-'} {what}"
        self.error = reason
        self.report(KIND_TIMEOUT, False)
        if self.up is not None:
            self.up.abort()
            self.up = None
        self.connect_id += 1                # a connect in progress no longer concerns us
        if per_try and self.route.retry_timeout and self.retry_allowed(True):
            self.release_endpoint()
            self.error = reason
            self.retry_after_backoff()
            return
        self.respond_error(504, reason)

    # -- ending a request -------------------------------------------------

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
        cdef bytes out
        self.status = status
        if self.error is None:
            self.error = message
        if self.state == S_BODY and (self.req_framer is None or not self.req_framer.done):
            self.keep_alive = False         # the rest of the body is unread: close after
        out = build_error_response(status, message, self.request_id, self.keep_alive, location,
                                   self.head is None or self.head.method != b"HEAD", extra_header)
        self.bytes_sent = len(out)
        self.transport.write(out)
        self.response_started = True
        if self.up is not None:
            self.up.abort()
            self.up = None
        self.connect_id += 1
        self.finish_request(True)

    cdef void fail_request(self, int status, str reason):
        """A framing error in the request body: nothing more can be read."""
        if self.up is not None:
            self.up.abort()
            self.up = None
        self.keep_alive = False
        if self.response_started:
            self.error = reason
            self.finish_request(False)
            self.close()
        else:
            self.respond_error(status, reason)

    cdef void finish_exchange(self):
        """The response is complete: return the upstream connection, then finish."""
        cdef UpstreamProtocol conn = self.up
        cdef bint reusable
        if self.state == S_BODY:
            # The upstream answered before the request body was all sent: close both.
            self.keep_alive = False
        if conn is not None:
            reusable = (self.resp_head.keep_alive and self.state == S_WAIT
                        and self.resp_framer.mode != FRAMING_UNTIL_CLOSE and not conn.upstream_extra
                        and self.head.minor == 1)
            self.up = None
            if reusable:
                self.upstream.give_back(conn, monotonic())
            else:
                conn.close()
        self.finish_request(True)

    cdef void finish_request(self, bint completed):
        """Log, count, release; then read the next request or close."""
        cdef ProxyContext ctx = self.ctx
        cdef int status = self.status
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
        if status >= 500:
            ctx.counters[ST_5XX] += 1
        elif status >= 400:
            ctx.counters[ST_4XX] += 1
        elif status >= 300:
            ctx.counters[ST_3XX] += 1
        elif status >= 200:
            ctx.counters[ST_2XX] += 1
        cdef double duration = monotonic() - self.t_start
        if self.upstream is not None:
            self.upstream.traffic.record(status, duration)
            self.upstream.touch()
        if self.route is not None:
            self.route.traffic.record(status, duration)
            self.route.touch()
        if ctx.access_log is not None:
            self.log_request(duration)
        self.head = None
        self.resp_head = None
        self.replay = None
        self.pending = None
        self.route = None
        if not completed or self.state == S_CLOSED:
            return
        if self.state == S_TUNNEL:
            return
        if not self.keep_alive:
            self.close()
            return
        self.state = S_IDLE
        self.total_deadline = 0
        self.resume_reading(PAUSE_PIPELINE | PAUSE_PENDING | PAUSE_UPSTREAM_FULL)
        if self.buf:
            self.deadline_kind = D_NONE
            self.process()
        elif self.client_eof:
            self.close()
        elif ctx.draining:
            # This response went out before the drain began, without "Connection: close":
            # the client may send another request, which is answered with it.
            self.set_deadline(D_IDLE, min(ctx.idle_timeout, ctx.drain_grace))
        else:
            self.set_deadline(D_IDLE, ctx.idle_timeout)

    cdef void log_request(self, double duration):
        """Render the access log line as bytes here: no dict, no encoder call per request.

        Names set by the config (route, service, cluster, upstream host) were
        JSON-encoded once per snapshot; only what the client sent is escaped now.
        """
        cdef RequestHead head = self.head
        cdef Upstream upstream = self.upstream
        cdef bytes extra = EMPTY
        if self.norm_target is not None:
            extra = b',"normalized_path":' + json_string(self.norm_target)
        if self.client_ip is not self.client_bytes:
            extra += b',"peer":"' + self.client_bytes + b'"'
        if self.attempts > 1:
            extra += b',"tried_hosts":' + _dumps([u.host for u in self.tried])
        if self.error is not None:
            extra += b',"error":' + _dumps(self.error + (" (retry budget exhausted)" if self.budget_refused else ""))
        line = (b'{"time":"%s","request_id":%s,"client":"%s","method":"%s","host":%s,"path":%s,'
                b'"status":%d,"bytes_sent":%d,"bytes_received":%d,"duration_ms":%.3f,'
                b'"route":%s,"upstream_service":%s,"upstream_host":%s,"upstream_cluster":%s,'
                b'"attempts":%d,"upstream_connect_ms":%s,"upstream_response_ms":%s%s}\n') % (
            _timestamp(wall_time()), json_string(self.request_id), self.client_ip, head.method,
            json_string(head.host) if head.host is not None else b"null", json_string(head.target),
            self.status, self.bytes_sent, self.bytes_received, duration * 1000.0,
            self.route.json_name if self.route is not None else b"null",
            self.service.json_key if self.service is not None else b"null",
            upstream.json_host if upstream is not None else b"null",
            upstream.json_cluster if upstream is not None else b"null",
            self.attempts, _ms(self.t_connect), _ms(self.t_response), extra)
        self.ctx.write_log_line(line)

    cpdef close(self):
        if self.state != S_CLOSED:
            self.state = S_CLOSED
            self.deadline_kind = D_NONE
            self.transport.close()
        if self.up is not None:
            self.up.abort()
            self.up = None


# RFC 3339 with milliseconds; the seconds part is formatted once per second.
cdef double _ts_second = -1.0
cdef bytes _ts_prefix = b""

cdef bytes _timestamp(double now):
    global _ts_second, _ts_prefix
    cdef double second = <double>(<long long>now)
    if second != _ts_second:
        _ts_second = second
        _ts_prefix = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(second)).encode()
    return b"%s.%03dZ" % (_ts_prefix, <int>((now - second) * 1000.0))



cdef inline bytes _ms(double seconds):
    return b"%.3f" % (seconds * 1000.0) if seconds >= 0 else b"null"


cdef bytes _dumps(object value):
    return _orjson_dumps(value)


cdef bytes _exact_json(str value):
    """JSON for a name kept as long as its endpoint: orjson returns bytes with ~4 KiB of
    spare capacity that is never trimmed (77 MiB at 10,000 endpoints); copy it to size."""
    return bytes(memoryview(_orjson_dumps(value)))


cpdef bytes json_string(bytes value):
    """``value`` as a JSON string literal (bytes taken as Latin-1, as HTTP defines them)."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(value)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(value)
    for i in range(n):
        if p[i] < 0x20 or p[i] >= 0x7f or p[i] == 34 or p[i] == 92:    # control, non-ASCII, " or \\
            return _orjson_dumps(value.decode("latin-1"))
    return b'"' + value + b'"'


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
