# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Upstream endpoints and their keep-alive pools, and the connection to one: it owns the
response's buffer, head parser and body framer, and reports to the exchange it is lent to
(``UpstreamOwner``) in terms of heads and body bytes, never raw reads."""
from _speedups.accesslog cimport exact_json
from _speedups.http cimport (
    BodyFramer, RequestHead, ResponseHead, build_request_head, find_head_end, parse_response, tail)
from _speedups.http import HttpError

cdef bytes EMPTY = b""
cdef bytes LAST_CHUNK = b"0\r\n"
cdef bytes CRLF = b"\r\n"


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
        self.json_host = exact_json(self.host)
        self.json_cluster = exact_json(cluster)
        self.idle = []
        self.removed = False
        self.requests = 0
        self.failures = 0
        self.inflight = 0
        self.report_success = False
        # Idle connections kept (they close after timeouts.upstream_idle anyway): as many as
        # one client connection's HTTP/2 streams may need at once, and more
        self.max_idle = 256
        self.touched = False
        self.touched_sink = touched
        self.ssl = None
        self.server_hostname = None
        self.traffic = TrafficStats()
        self.streams = None

    def counters(self):
        """[requests, failures, inflight, idle, *traffic.as_list()] (the UPSTREAM_* order,
        stats.pxd), for the worker's report."""
        self.touched = False
        return [self.requests, self.failures, self.inflight, self.idle_count(), *self.traffic.as_list()]

    cdef UpstreamConnection take_idle(self):
        cdef UpstreamConnection conn
        if self.streams is not None:
            return self.streams.take()
        while self.idle:
            conn = self.idle.pop()          # LIFO: the warmest connection first
            if not conn.closed and not conn.eof:
                return conn
        return None

    cdef void give_back(self, UpstreamConnection conn, double now):
        if self.streams is not None:
            self.streams.give_back(conn, now)
            return
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
        cdef UpstreamConnection conn
        if self.streams is not None:
            return self.streams.close_idle(older_than)
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
        return len(self.idle) if self.streams is None else self.streams.idle_count()


cdef class StreamPool:
    """The interface only (see upstream.pxd); ``h2_upstream.H2Pool`` implements it."""

    cdef UpstreamConnection take(self):
        return None

    cdef UpstreamConnection new_connection(self, Py_ssize_t max_head, Py_ssize_t max_headers):
        return None

    cdef void give_back(self, UpstreamConnection conn, double now):
        pass

    cpdef int close_idle(self, double older_than) except -1:
        return 0

    cpdef int idle_count(self):
        return 0


cdef class UpstreamOwner:

    cdef bint upstream_interim(self, UpstreamConnection conn, ResponseHead head) except -1:
        return True

    cdef bint upstream_head(self, UpstreamConnection conn, ResponseHead head) except -1:
        return False

    cdef bint upstream_body(self, UpstreamConnection conn, bytes data, Py_ssize_t start) except -1:
        return True

    cdef bint upstream_body_error(self, UpstreamConnection conn, str reason) except -1:
        return True

    cdef bint upstream_bad(self, UpstreamConnection conn, str reason) except -1:
        return True

    cdef bint upstream_tunnel_data(self, bytes data) except -1:
        return True

    cdef bint upstream_trailers(self, UpstreamConnection conn, list headers) except -1:
        return True

    cdef bint upstream_gone(self, UpstreamConnection conn, object exc) except -1:
        return True

    cdef bint upstream_refused(self, UpstreamConnection conn, str reason) except -1:
        return self.upstream_gone(conn, None)

    cdef bint upstream_unable(self, UpstreamConnection conn, str reason) except -1:
        return self.upstream_gone(conn, None)

    cdef void upstream_write_paused(self, bint paused):
        pass

    cpdef internal_error(self, object exc):
        pass


cdef class UpstreamConnection:

    def __init__(self, Upstream upstream, Py_ssize_t max_head=65536, Py_ssize_t max_headers=100):
        self.init(upstream, max_head, max_headers)

    cdef void init(self, Upstream upstream, Py_ssize_t max_head, Py_ssize_t max_headers):
        """The fields __init__ sets; H2UpstreamSession.open_stream calls it on a stream made
        with __new__ (no Python call per stream)."""
        self.upstream = upstream
        self.owner = None
        self.transport = None
        self.closed = False
        self.eof = False
        self.paused = False
        self.idle_since = 0.0
        self.max_head = max_head
        self.max_headers = max_headers
        self.buf = EMPTY
        self.framer = BodyFramer(0, 0, 502)

    cdef void lend(self, UpstreamOwner owner):
        """A new response is expected on this connection, for ``owner``."""
        self.owner = owner
        self.buf = EMPTY
        self.head = None

    cdef object protocol(self):
        return self

    cdef void count_in(self, Service breaker):
        self.breaker = breaker              # released in connection_lost

    cdef void connect_failed(self):
        pass

    cdef void expect_body(self, int framing, long long length):
        self.framer.reset(framing, length)

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport):
        self.use_transport(transport)

    def data_received(self, bytes data):
        self.received(data)

    cdef void received(self, bytes data) except *:
        cdef UpstreamOwner owner = self.owner
        if owner is None:
            self.close()                    # bytes on an idle connection: it is out of sync
            return
        try:
            self.feed(data)
        except Exception as exc:
            owner.internal_error(exc)

    def eof_received(self):
        cdef UpstreamOwner owner = self.owner
        self.eof = True
        if owner is not None:
            try:
                owner.upstream_gone(self, None)
            except Exception as exc:
                owner.internal_error(exc)
        return False

    def connection_lost(self, exc):
        cdef UpstreamOwner owner = self.owner
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
            self.owner.upstream_write_paused(True)

    def resume_writing(self):
        if self.owner is not None:
            self.owner.upstream_write_paused(False)

    # -- the response -----------------------------------------------------

    cdef void feed(self, bytes data):
        """Bytes from the upstream: heads until the final one, then its body."""
        cdef UpstreamOwner owner = self.owner
        cdef ResponseHead head
        cdef Py_ssize_t end, start = 0
        if self.tunnel:
            owner.upstream_tunnel_data(data)
            return
        if self.head is None:
            self.buf = self.buf + data if self.buf else data
            while self.head is None:
                end = find_head_end(self.buf, 0)
                if end < 0 or end > self.max_head:
                    if end >= 0 or len(self.buf) > self.max_head:
                        owner.upstream_bad(self, "response head too large")
                    return
                try:
                    head = parse_response(self.buf, end, self.max_headers)
                except HttpError as err:
                    owner.upstream_bad(self, err.reason)
                    return
                if head.status < 200 and head.status != 101:
                    self.buf = tail(self.buf, end)
                    owner.upstream_interim(self, head)
                    if self.owner is not owner:
                        return
                    continue
                if not owner.upstream_head(self, head):
                    return                  # the owner let go of this connection
                self.head = head
                start = end                 # the body follows in the same buffer: no copy
            data = self.buf
            self.buf = EMPTY
            if self.tunnel:
                if start < len(data):
                    owner.upstream_tunnel_data(tail(data, start))
                return
        self.read_body(data, start)

    cdef void read_body(self, bytes data, Py_ssize_t start):
        """Frame the body bytes ``data[start:]`` (none at the close of an until-close body)
        for the owner."""
        cdef Py_ssize_t end = start
        if start < len(data) and not self.framer.done:
            try:
                end = self.framer.feed(data, start)
            except HttpError as err:
                self.owner.upstream_body_error(self, err.reason)
                return
        if end < len(data):
            # Bytes past the end of the response: this connection is out of sync.
            self.extra = True
            data = data[start:end]
            start = 0
        self.owner.upstream_body(self, data, start)

    # -- writing and flow control -----------------------------------------

    cdef void send_head(self, RequestHead head, bytes target, bytes host, bytes client_ip,
                        bytes request_id, bytes via, bint upgrade, bytes proto, bytes real_ip,
                        bytes trace_fields):
        self.chunk_body = head.streamed
        self.send(build_request_head(head, target, host, client_ip, request_id, via, upgrade,
                                     proto, real_ip, trace_fields))

    cdef void write_body(self, bytes data):
        if self.chunk_body:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self.send(data)

    cdef void end_body(self, list trailers):
        """The last chunk of a body chunked here, with the client's trailers."""
        cdef list lines
        if not self.chunk_body:
            return
        lines = [LAST_CHUNK]
        for name, value in trailers or ():
            lines += (name, b": ", value, CRLF)
        lines.append(CRLF)
        self.send(b"".join(lines))

    cdef void write(self, bytes data):
        self.send(data)

    cdef bint half_close(self):
        """The client half-closed a tunnel: pass it on (True) if this connection can (TLS cannot)."""
        if self.transport.can_write_eof():
            self.transport.write_eof()
            return True
        return False

    cdef void pause(self):
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    cdef void resume(self):
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    cdef void close(self):
        """End it cleanly (it is in sync: a response was read whole, or none was sent)."""
        self.end(False)

    cdef void abort(self):
        """End it at once (RST): what the upstream would still send is unwanted."""
        self.end(True)

    cdef void end(self, bint abort):
        self.owner = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                if abort:
                    self.transport.abort()
                else:
                    self.transport.close()
