# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""What every connection of a worker shares: the current routes (a Port per listening
address), settings, counters, the access log's buffer, and the connections' deadlines.

Deadlines: a connection sits in one binary heap by the earliest time it asked to be looked
at, and the loop holds one timer, for the heap's first.  Setting a deadline is a comparison
when the connection already sits earlier (the common case: a keep-alive connection's next
deadline is later than its last), a sift of the heap otherwise; no timer object is made per
request.  A connection whose deadlines moved later is looked at early, finds nothing due and
says when to look next.  Deadlines fire within a millisecond or two of their time, where the
ticker this replaced (every connection, every 100 ms) let a 400 ms timeout run to 500."""
import os as _os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport ceil
from libc.string cimport memcpy

from _speedups.clock cimport monotonic
from _speedups.router cimport Router
from _speedups.stats cimport N_STATS
from _speedups.stats import STAT_NAMES

cdef const char *HEX_DIGITS = b"0123456789abcdef"


cdef class Port:

    def __init__(self, Router router=None):
        self.router = router if router is not None else Router(())


cdef class Connection:

    cdef double check_deadlines(self, double now):
        return 0

    cdef bint is_idle(self):
        return False

    cdef void drain(self, double deadline):
        pass

    cdef int redispatch(self, Service service, set gone) except -1:
        return 0

    cpdef close(self):
        pass

    cpdef internal_error(self, object exc):
        pass


cdef class Context:

    def __init__(self, loop, limits, timeouts, *, access_log=None, via=b"1.1 gateway",
                 request_id_prefix=None):
        """``limits`` and ``timeouts``: the config's ``Limits`` and ``Timeouts`` (gateway.config.model),
        where their defaults are written; nothing here has a default of its own."""
        self.loop = loop
        self.reactor = None
        self.port = Port()
        self.configure(limits, timeouts)
        self.path_policy = PathPolicy()
        self.cleartext = CLEARTEXT_AUTO
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
        self.timer_heap = []
        self.timer_handle = None
        self.timer_armed = 0
        self.timers_running = False
        self.tracer = None
        self.backend_stats = {}
        cdef int i
        for i in range(<int>N_STATS):
            self.counters[i] = 0

    def configure(self, limits, timeouts):
        """Take the bounds and timeouts of a config's ``Limits`` and ``Timeouts`` (at start and
        at each reload): the one place their fields are mapped onto the request path's."""
        self.connect_timeout = timeouts.connect
        self.response_timeout = timeouts.response_header
        self.upstream_unresponsive = timeouts.upstream_unresponsive
        self.idle_timeout = timeouts.downstream_idle
        self.header_timeout = timeouts.downstream_header
        self.body_idle_timeout = timeouts.body_idle
        self.max_head_size = limits.max_request_head
        self.max_headers = limits.max_headers
        self.max_uri = limits.max_uri
        self.max_body = limits.max_body
        self.max_response_head = limits.max_response_head
        self.max_connections = limits.max_connections
        self.max_requests_per_connection = limits.max_requests_per_connection
        self.max_concurrent_streams = limits.max_concurrent_streams
        self.retry_budget_ratio = limits.retry_budget_share
        self.retry_budget_min = limits.retry_budget_min

    def set_router(self, Router router):
        self.port.router = router

    @property
    def router(self):
        """The file listeners' routes."""
        return self.port.router

    @property
    def stats(self):
        """The counters as a dict (built when asked: the request path bumps C integers)."""
        return {name: self.counters[i] for i, name in enumerate(STAT_NAMES)}

    def counter_list(self):
        """The counters in STAT_NAMES order, for the worker's report."""
        cdef int i
        return [self.counters[i] for i in range(<int>N_STATS)]

    def take_touched(self):
        """The Upstreams and Routes whose counters moved since the last call."""
        out = list(self.touched)
        del self.touched[:]
        return out

    @property
    def access_log(self):
        return self.log.access_log if self.log is not None else None

    def set_access_log(self, access_log):
        """``access_log`` has ``parts`` (a list of lines), ``limit`` (bytes), ``flush()`` and
        ``spill`` (set here).  Lines held for a log being replaced go to it first."""
        if self.log is not None:
            self.log.detach()
        self.log = LogBuffer(access_log) if access_log is not None else None

    # -- deadlines: one heap of connections, one loop timer -----------------------------------

    cdef void wake_at(self, Connection conn, double due):
        """Look at ``conn``'s deadlines by ``due`` (a monotonic time; 0: no deadline)."""
        if due <= 0:
            return
        if conn.timer_slot:
            if conn.timer_due <= due:
                return                      # looked at sooner anyway
            conn.timer_due = due
            self.heap_up(conn.timer_slot - 1, conn)
        else:
            conn.timer_due = due
            self.timer_heap.append(conn)
            self.heap_up(len(self.timer_heap) - 1, conn)
        if not self.timers_running and (self.timer_armed == 0 or due < self.timer_armed):
            self.arm_timer(due)

    cdef void forget(self, Connection conn):
        """``conn`` closed: out of the connections and of the timers."""
        self.connections.discard(conn)
        if conn.timer_slot:
            self.heap_remove(conn.timer_slot - 1)

    cdef void heap_remove(self, Py_ssize_t i):
        cdef list heap = self.timer_heap
        cdef Connection gone = heap[i], last = heap.pop()
        gone.timer_slot = 0
        if last is gone:
            return
        if i > 0 and last.timer_due < (<Connection>heap[(i - 1) >> 1]).timer_due:
            self.heap_up(i, last)
        else:
            self.heap_down(i, last)

    cdef void heap_up(self, Py_ssize_t i, Connection conn):
        """Put ``conn`` at ``i`` or above, where its due time belongs."""
        cdef list heap = self.timer_heap
        cdef Connection parent
        cdef Py_ssize_t p
        while i > 0:
            p = (i - 1) >> 1
            parent = heap[p]
            if parent.timer_due <= conn.timer_due:
                break
            heap[i] = parent
            parent.timer_slot = i + 1
            i = p
        heap[i] = conn
        conn.timer_slot = i + 1

    cdef void heap_down(self, Py_ssize_t i, Connection conn):
        """Put ``conn`` at ``i`` or below, where its due time belongs."""
        cdef list heap = self.timer_heap
        cdef Py_ssize_t n = len(heap), c
        cdef Connection child
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and (<Connection>heap[c + 1]).timer_due < (<Connection>heap[c]).timer_due:
                c += 1
            child = heap[c]
            if conn.timer_due <= child.timer_due:
                break
            heap[i] = child
            child.timer_slot = i + 1
            i = c
        heap[i] = conn
        conn.timer_slot = i + 1

    cdef void arm_timer(self, double due):
        """The loop's timers count whole milliseconds from its clock, read once per
        iteration: rounded up, the wait ends at most a millisecond late, where rounded to
        the nearest it ended early and the loop spun until the time had come."""
        if self.timer_handle is not None:
            self.timer_handle.cancel()
        self.timer_armed = due
        self.timer_handle = self.loop.call_later(ceil(max(due - monotonic(), 0.0) * 1000.0) / 1000.0,
                                                 self.run_timers)

    def run_timers(self):
        """The loop's timer: every connection due is looked at, then the timer is set for the
        next.  Those due are taken out first, so one that names a time already past is looked
        at in the next round, not again in this one."""
        cdef Connection conn
        cdef list heap = self.timer_heap, due = []
        cdef double now = monotonic(), next_due
        self.timer_handle = None
        self.timer_armed = 0
        self.timers_running = True
        try:
            while heap and (<Connection>heap[0]).timer_due <= now:
                conn = heap[0]
                self.heap_remove(0)
                due.append(conn)
            for conn in due:
                try:
                    next_due = conn.check_deadlines(now)
                except Exception as exc:
                    conn.internal_error(exc)
                    continue
                self.wake_at(conn, next_due)
        finally:
            self.timers_running = False
        if heap:
            # The loop's timer may still come a little early (its clock was read before this
            # iteration's work): then this finds nothing due and sets it again.
            self.arm_timer((<Connection>heap[0]).timer_due)

    def stop_timers(self):
        if self.timer_handle is not None:
            self.timer_handle.cancel()
            self.timer_handle = None
        self.timer_armed = 0

    def timers_pending(self):
        """How many connections wait for a deadline (the heap's size)."""
        return len(self.timer_heap)

    def redispatch(self, Service service, upstreams):
        """Send ``service``'s requests waiting on these (just ejected or removed) endpoints
        elsewhere.  By service: health is per service, while an Upstream may be shared.

        Called by the data plane when it applies flags that take an endpoint out or a
        membership change that drops it, so rarely that a scan of the connections beats
        keeping a per-endpoint set of waiting requests on the hot path.  Returns how many requests moved.
        """
        cdef Connection conn
        cdef int moved = 0
        cdef set gone = set(upstreams)
        if not gone:
            return 0
        for conn in list(self.connections):
            try:
                moved += conn.redispatch(service, gone)
            except Exception as exc:
                conn.internal_error(exc)
        return moved

    cdef bytes next_request_id(self):
        """The prefix and a counter in hex, made as one bytes object (digits by hand:
        snprintf's format parsing was most of this)."""
        cdef char buf[96]
        cdef Py_ssize_t n = PyBytes_GET_SIZE(self.request_id_prefix), i = 0
        cdef unsigned long long v
        cdef char digits[16]
        self.request_counter += 1
        if n > 64:
            return self.request_id_prefix + b"%x" % self.request_counter
        v = self.request_counter
        while True:
            digits[15 - i] = HEX_DIGITS[v & 15]
            i += 1
            v >>= 4
            if v == 0:
                break
        memcpy(buf, PyBytes_AS_STRING(self.request_id_prefix), n)
        memcpy(buf + n, digits + 16 - i, i)
        return PyBytes_FromStringAndSize(buf, n + i)

    def close_idle_connections(self):
        """For graceful shutdown: close client connections with no request in progress."""
        cdef Connection conn
        for conn in list(self.connections):
            if conn.is_idle():
                conn.close()

    def drain_connections(self, double grace):
        """Shutting down (``draining`` set): idle HTTP/1 connections close within ``grace``
        unless a request comes first, busy ones after their response; HTTP/2 ones are sent
        GOAWAY and close when their streams are done."""
        cdef Connection conn
        cdef double deadline = monotonic() + grace
        self.drain_grace = grace
        for conn in list(self.connections):
            conn.drain(deadline)

    def active_connections(self):
        return len(self.connections)
