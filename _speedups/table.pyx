# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Per-service endpoint table: weighted selection over C arrays, in one of two regimes.

Small tables (``len <= edf_threshold``, default 64): nginx's smooth weighted
round robin.  Each pick adds every eligible endpoint's weight to its
``current`` and to a ``total``, takes the largest ``current`` (first on ties)
and subtracts ``total`` from it, so 5:1:1 gives a a b a c a a.  It interleaves
best (two equal endpoints alternate exactly) but costs O(n) per pick.

Large tables: earliest deadline first, as Envoy schedules big host sets
(``edf_scheduler.h``), O(log n) per pick.  Endpoint i is due at the points
k / w_i of its own grid (time in units of one scheduling cycle); the healthy
endpoints sit in a binary min-heap keyed by (deadline, index), a pick takes
the root, moves the virtual time to its deadline and re-keys it 1 / w_i later.
From a fresh table one cycle (sum of weights picks) gives every endpoint
exactly its weight; any window of that many picks gives it its weight +-1.
Deadlines are exact integers (whole cycles + a fraction over the weight), not
doubles: no drift, equal deadlines tie, and the tie goes to the lower index,
so picks are deterministic.  A flagged endpoint leaves the heap; when its flags
clear it re-enters at the first point of its grid after the current time, so
it is neither lost nor owed a burst.  ``exclude`` leaves the heap untouched:
the earliest eligible endpoint is found below the excluded top of the heap.

update() carries state by key (nginx keeps its peers, pingora inherits health
by identity): flags and in-flight always; the WRR ``current``, or in the EDF
regime the deadline of a healthy endpoint whose weight did not change.  New
endpoints start at 0 (WRR) or at their next grid point after the current
time (EDF): a new snapshot must neither restart the rotation, nor burst-pick
new endpoints, nor forget an ejection.  Crossing the threshold starts the new
regime afresh.  Indices move only when ``generation`` does; re-resolve held
ones with index_of().

Priority levels (update(endpoints, priorities)): the control plane decides what
share of requests each level gets (gateway.health.state.plan_levels, Envoy's
priority load) and sends it as basis points (set_loads).  A pick chooses the
level by smooth WRR over those loads, so the shares hold exactly over any
window and not just on average, then the endpoint within the level by the
table's scheduler restricted to it; a level with no eligible endpoint left
(everything excluded by a retry) falls through to the others, best first.  A
table whose endpoints are all at one level skips the level step.
"""
cimport cython
from libc.limits cimport LLONG_MIN
from libc.stdlib cimport calloc, free, malloc

# pick() marks excluded endpoints with this bit, so that the WRR loop tests one
# int per endpoint and the EDF walk one per heap node; _clear_marks() removes
# them again from the endpoints listed in _Core.marks.
cdef enum:
    _EXCLUDED = 1 << 30

# Above this many endpoints a table schedules by EDF.  Measured (bench/MICRO.md,
# pick() from Python): smooth WRR costs ~25 ns + ~1.1 ns per endpoint, EDF
# 70-190 ns growing with log n, so the two meet at 64-96 endpoints; 64 keeps
# every table of a typical service (a handful of pods per cluster) on smooth
# WRR, which interleaves better.
EDF_THRESHOLD = 64


# -- the C state -----------------------------------------------------------------

cdef _Core *_core_new(Py_ssize_t n, bint edf, int edf_threshold, int nlevels=1) noexcept:
    """calloc'd: every endpoint starts with current 0, flags 0, inflight 0, level 0."""
    cdef Py_ssize_t m = n if n else 1
    cdef int nl = nlevels if nlevels > 0 else 1
    cdef _Core *c = <_Core *>calloc(1, sizeof(_Core))
    if c == NULL:
        return NULL
    c.edf = edf
    c.edf_threshold = edf_threshold
    c.now_weight = 1
    c.nlevels = nlevels
    c.peers = <_Peer *>calloc(m, sizeof(_Peer))
    c.marks = <int *>malloc(m * sizeof(int))
    c.level_priority = <int *>calloc(nl, sizeof(int))
    c.level_load = <int *>calloc(nl, sizeof(int))
    c.level_current = <long long *>calloc(nl, sizeof(long long))
    if edf:
        c.heap = <int *>malloc(m * sizeof(int))
        c.stack = <int *>malloc(m * sizeof(int))
    if (c.peers == NULL or c.marks == NULL or (edf and (c.heap == NULL or c.stack == NULL))
            or c.level_priority == NULL or c.level_load == NULL or c.level_current == NULL):
        _core_free(c)
        return NULL
    return c


cdef void _core_free(_Core *c) noexcept:
    if c != NULL:
        free(c.peers)
        free(c.marks)
        free(c.heap)
        free(c.stack)
        free(c.level_priority)
        free(c.level_load)
        free(c.level_current)
        free(c)


cdef inline void _clear_marks(_Core *c) noexcept:
    cdef int k
    for k in range(c.nmarks):
        c.peers[c.marks[k]].flags &= ~_EXCLUDED
    c.nmarks = 0


# -- smooth weighted round robin (small tables) ------------------------------------

cdef inline bint _skip(const _Peer *x, int level) noexcept:
    """Not eligible: flagged or excluded, or (level >= 0) of another level."""
    return x.flags != 0 or (level >= 0 and x.level != level)


cdef int _pick_wrr(_Peer *p, Py_ssize_t n, int level) noexcept:
    cdef Py_ssize_t i, best = -1
    cdef long long total = 0, best_current = LLONG_MIN   # any current beats it
    for i in range(n):
        if _skip(&p[i], level):                 # unhealthy, excluded or another level
            continue
        p[i].current += p[i].weight
        total += p[i].weight
        if p[i].current > best_current:         # strict: first of equals wins, as in nginx
            best = i
            best_current = p[i].current
    if best >= 0:
        p[best].current -= total
    return <int>best


# -- earliest deadline first (large tables) ----------------------------------------

cdef inline bint _earlier(unsigned long long due_a, int frac_a, int weight_a,
                          unsigned long long due_b, int frac_b, int weight_b) noexcept:
    """due_a + frac_a / weight_a < due_b + frac_b / weight_b, exactly."""
    if due_a != due_b:
        return due_a < due_b
    # frac < weight < 2**31, so both products fit in 62 bits.
    return <long long>frac_a * weight_b < <long long>frac_b * weight_a


cdef inline bint _before(const _Peer *p, int a, int b) noexcept:
    """Is endpoint a due before endpoint b?  Equal deadlines: the lower index first."""
    cdef const _Peer *x = &p[a]
    cdef const _Peer *y = &p[b]
    cdef long long l, r
    if x.due != y.due:
        return x.due < y.due
    l = <long long>x.due_frac * y.weight
    r = <long long>y.due_frac * x.weight
    if l != r:
        return l < r
    return a < b


cdef void _sift_up(_Core *c, int pos) noexcept:
    cdef int *h = c.heap
    cdef _Peer *p = c.peers
    cdef int i = h[pos], parent
    while pos > 0:
        parent = (pos - 1) >> 1
        if not _before(p, i, h[parent]):
            break
        h[pos] = h[parent]
        p[h[pos]].heap_pos = pos
        pos = parent
    h[pos] = i
    p[i].heap_pos = pos


cdef void _sift_down(_Core *c, int pos) noexcept:
    cdef int *h = c.heap
    cdef _Peer *p = c.peers
    cdef int n = c.heap_len, i = h[pos], child
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        if child + 1 < n and _before(p, h[child + 1], h[child]):
            child += 1
        if not _before(p, h[child], i):
            break
        h[pos] = h[child]
        p[h[pos]].heap_pos = pos
        pos = child
    h[pos] = i
    p[i].heap_pos = pos


cdef void _due_after_now(_Core *c, _Peer *x) noexcept:
    """Set x's deadline to the first point k / weight of its grid after the current time.

    That is at most one period 1 / weight away, as for a picked endpoint: an
    endpoint that (re)joins is due within its period, with no backlog to catch up.
    """
    cdef long long k = <long long>c.now_frac * x.weight // c.now_weight + 1
    if k >= x.weight:
        x.due = c.now_due + 1
        x.due_frac = 0
    else:
        x.due = c.now_due
        x.due_frac = <int>k


cdef void _heap_push(_Core *c, int i) noexcept:
    c.heap[c.heap_len] = i
    c.heap_len += 1
    _sift_up(c, c.heap_len - 1)


cdef void _heap_remove(_Core *c, int i) noexcept:
    cdef _Peer *p = c.peers
    cdef int pos = p[i].heap_pos, last
    p[i].heap_pos = -1
    c.heap_len -= 1
    if pos == c.heap_len:
        return
    last = c.heap[c.heap_len]
    c.heap[pos] = last
    p[last].heap_pos = pos
    _sift_up(c, pos)
    _sift_down(c, p[last].heap_pos)


cdef void _heapify(_Core *c) noexcept:
    cdef int pos
    for pos in range(c.heap_len // 2 - 1, -1, -1):
        _sift_down(c, pos)


cdef int _pick_edf(_Core *c, int level) noexcept:
    cdef int *h = c.heap
    cdef int *stack = c.stack
    cdef _Peer *p = c.peers
    cdef _Peer *x
    cdef int pos = 0, best = -1, top = 0, child, end, i
    if c.heap_len == 0:
        return -1
    if _skip(&p[h[0]], level):
        # The earliest eligible endpoint is a child of an excluded one (or one of
        # another level): walk the ineligible top of the heap (each node once, so
        # at most heap_len steps) and take the earliest eligible node at its border.
        # The heap holds only unflagged endpoints, so _skip is "excluded or
        # another level" here.
        stack[0] = 0
        top = 1
        while top:
            top -= 1
            pos = stack[top]
            child = 2 * pos + 1
            end = child + 2 if child + 2 <= c.heap_len else c.heap_len
            while child < end:
                i = h[child]
                if _skip(&p[i], level):
                    stack[top] = child
                    top += 1
                elif best < 0 or _before(p, i, h[best]):
                    best = child
                child += 1
        if best < 0:
            return -1
        pos = best
    i = h[pos]
    x = &p[i]
    # Time never goes back: an endpoint passed over by exclude may be behind it.
    if _earlier(c.now_due, c.now_frac, c.now_weight, x.due, x.due_frac, x.weight):
        c.now_due, c.now_frac, c.now_weight = x.due, x.due_frac, x.weight
    x.due_frac += 1
    if x.due_frac == x.weight:
        x.due += 1
        x.due_frac = 0
    _sift_down(c, pos)          # a later deadline only moves down
    return i


# -- priority levels ------------------------------------------------------------

cdef int _pick_level(_Core *c) noexcept:
    """Smooth WRR over the levels' loads; -1 when no level has load."""
    cdef int l, best = -1
    cdef long long total = 0, best_current = LLONG_MIN
    for l in range(c.nlevels):
        if c.level_load[l] <= 0:
            continue
        c.level_current[l] += c.level_load[l]
        total += c.level_load[l]
        if c.level_current[l] > best_current:
            best = l
            best_current = c.level_current[l]
    if best >= 0:
        c.level_current[best] -= total
    return best


cdef inline int _pick_in(_Core *c, Py_ssize_t n, int level) noexcept:
    return _pick_edf(c, level) if c.edf else _pick_wrr(c.peers, n, level)


cdef int _pick_levels(_Core *c, Py_ssize_t n) noexcept:
    cdef int l, i = -1
    cdef int chosen = _pick_level(c)
    if chosen >= 0:
        i = _pick_in(c, n, chosen)
    for l in range(c.nlevels):      # nothing eligible there: the other levels, best first
        if i >= 0:
            break
        if l != chosen:
            i = _pick_in(c, n, l)
    return i


@cython.final
cdef class EndpointTable:

    def __cinit__(self):
        self._core = _core_new(0, False, EDF_THRESHOLD)
        if self._core == NULL:
            raise MemoryError()
        self._n = 0
        self._index = {}
        self.endpoints = ()
        self.clusters = ()
        self.generation = 0

    def __init__(self, endpoints=(), int edf_threshold=EDF_THRESHOLD):
        if edf_threshold < 0:
            raise ValueError(f"edf_threshold must be >= 0, got {edf_threshold}")
        self._core.edf_threshold = edf_threshold
        self.update(endpoints)

    def __dealloc__(self):
        _core_free(self._core)

    def __len__(self):
        return self._n

    def __repr__(self):
        return (f"<EndpointTable endpoints={self._n} healthy={self.healthy_count()} "
                f"generation={self.generation}>")

    @property
    def edf_threshold(self):
        """Tables with more endpoints than this schedule by EDF, others by smooth WRR."""
        return self._core.edf_threshold

    @property
    def scheduler(self):
        """"wrr" (smooth weighted round robin) or "edf" (earliest deadline first)."""
        return "edf" if self._core.edf else "wrr"

    cpdef update(self, endpoints, priorities=None):
        """``priorities``: one int per endpoint (its priority level), or None (all 0)."""
        cdef tuple eps = tuple(endpoints)
        cdef Py_ssize_t i, n = len(eps)
        cdef tuple prios = tuple(priorities) if priorities is not None else ()
        cdef list distinct = sorted(set(prios))
        cdef dict level_of = {p: l for l, p in enumerate(distinct)}
        cdef int l, nlevels = len(distinct)
        cdef Py_ssize_t old
        cdef int w
        cdef bint moved = n != self._n
        cdef dict index = {}
        cdef dict clusters = {}
        cdef _Core *prev = self._core
        cdef bint edf = n > prev.edf_threshold
        cdef bint carry_due = edf and prev.edf      # same regime: deadlines stay comparable
        if prios and len(prios) != n:
            raise ValueError(f"{len(prios)} priorities for {n} endpoints")
        cdef _Core *c = _core_new(n, edf, prev.edf_threshold, nlevels if nlevels > 1 else 0)
        if c == NULL:
            raise MemoryError()
        cdef _Peer *peers = c.peers
        cdef _Peer *q
        try:
            for i in range(n):
                ep = eps[i]
                key = ep.key
                index[key] = i
                if len(index) <= i:     # one hash per key, not two: -15% at n=10,000
                    raise ValueError(f"duplicate endpoint key {key!r}")
                w = ep.weight
                if w < 1:
                    raise ValueError(f"endpoint {key!r}: weight must be >= 1, got {w}")
                peers[i].weight = w
                peers[i].cluster = clusters.setdefault(ep.cluster, len(clusters))
                peers[i].heap_pos = -1          # -1: take a deadline after now (EDF)
                if c.nlevels > 1:
                    peers[i].level = level_of[prios[i]]
                o = self._index.get(key)
                if o is None:
                    moved = True
                    continue
                old = o
                moved = moved or old != i
                q = &prev.peers[old]
                peers[i].flags = q.flags & ~_EXCLUDED
                peers[i].inflight = q.inflight
                if not edf:
                    peers[i].current = q.current    # 0 if it was EDF: WRR starts afresh
                elif carry_due and q.heap_pos >= 0 and q.weight == w:
                    peers[i].due = q.due
                    peers[i].due_frac = q.due_frac
                    peers[i].heap_pos = 0       # 0: keep this deadline
        except BaseException:
            _core_free(c)       # a bad list leaves the table as it was
            raise
        if c.nlevels > 1:
            self._carry_loads(prev, c, distinct)
        if edf:
            if carry_due:
                c.now_due, c.now_frac, c.now_weight = prev.now_due, prev.now_frac, prev.now_weight
            for i in range(n):
                if peers[i].flags:
                    peers[i].heap_pos = -1
                    continue
                if peers[i].heap_pos < 0:
                    _due_after_now(c, &peers[i])
                c.heap[c.heap_len] = <int>i
                peers[i].heap_pos = c.heap_len
                c.heap_len += 1
            _heapify(c)
        _core_free(prev)
        self._core = c
        self._n = n
        self._index = index
        self.endpoints = eps
        self.clusters = tuple(clusters)
        if moved:
            self.generation += 1

    cdef void _carry_loads(self, _Core *prev, _Core *c, list distinct):
        """Levels keep their load (and WRR position) by priority across an update;
        a new level has no load until set_loads gives it one."""
        cdef int l, k
        for l in range(c.nlevels):
            c.level_priority[l] = distinct[l]
            for k in range(prev.nlevels):
                if prev.level_priority[k] == c.level_priority[l]:
                    c.level_load[l] = prev.level_load[k]
                    c.level_current[l] = prev.level_current[k]

    cpdef set_loads(self, loads):
        """Each level's share of requests: (priority, weight) pairs, e.g. basis points.

        A level not named gets 0 (only a retry that finds nothing elsewhere goes there);
        a priority with no endpoint is ignored.  No effect on a one-level table.
        """
        cdef _Core *c = self._core
        cdef int l
        cdef dict by_priority = {}
        for priority, weight in loads:
            if weight < 0:
                raise ValueError(f"load of priority {priority} must be >= 0, got {weight}")
            by_priority[priority] = weight
        for l in range(c.nlevels):
            c.level_load[l] = by_priority.get(c.level_priority[l], 0)
            c.level_current[l] = 0

    @property
    def levels(self):
        """(priority, load) per level, best first; () when all endpoints are at one level."""
        cdef _Core *c = self._core
        return tuple((c.level_priority[l], c.level_load[l]) for l in range(c.nlevels))

    cpdef int pick(self, object exclude=None) except -2:
        """Index of the next endpoint, or -1 if no healthy one is left."""
        if exclude is not None:
            self._mark(exclude)
        return self._pick()

    cdef int _mark(self, object exclude) except -1:
        cdef Py_ssize_t j
        cdef _Core *c
        try:
            for x in exclude:
                j = x
                c = self._core          # re-read: iterating ``exclude`` runs Python code
                if 0 <= j < self._n and not c.peers[j].flags & _EXCLUDED:   # stale or bogus
                    c.peers[j].flags |= _EXCLUDED                           # ones exclude nothing
                    c.marks[c.nmarks] = <int>j
                    c.nmarks += 1
        except BaseException:
            _clear_marks(self._core)
            raise
        return 0

    cdef int _pick(self) noexcept:
        cdef _Core *c = self._core
        cdef int i = _pick_levels(c, self._n) if c.nlevels > 1 else _pick_in(c, self._n, -1)
        if c.nmarks:
            _clear_marks(c)
        return i

    cdef int _check(self, int i) except -1:
        if i < 0 or i >= self._n:
            raise IndexError(f"endpoint index {i} out of range 0..{self._n - 1}")
        return 0

    cdef void _set_flags(self, int i, int flags) noexcept:
        """Set the flags of a checked index; in EDF, move it out of or into the heap."""
        cdef _Core *c = self._core
        cdef _Peer *x = &c.peers[i]
        x.flags = flags
        if not c.edf:
            return
        if flags & ~_EXCLUDED:
            if x.heap_pos >= 0:
                _heap_remove(c, i)
        elif x.heap_pos < 0:
            _due_after_now(c, x)
            _heap_push(c, i)

    cpdef object endpoint(self, int i):
        self._check(i)
        return self.endpoints[i]

    cpdef int cluster_index(self, int i) except -1:
        """Index into ``clusters`` of endpoint ``i``'s cluster."""
        self._check(i)
        return self._core.peers[i].cluster

    cpdef set_flags(self, int i, int flags):
        self._check(i)
        if flags < 0 or flags & _EXCLUDED:
            raise ValueError(f"invalid health flags {flags:#x}")
        self._set_flags(i, flags)

    cpdef add_flag(self, int i, int flag):
        self._check(i)
        if flag < 0 or flag & _EXCLUDED:
            raise ValueError(f"invalid health flag {flag:#x}")
        self._set_flags(i, self._core.peers[i].flags | flag)

    cpdef clear_flag(self, int i, int flag):
        self._check(i)
        self._set_flags(i, self._core.peers[i].flags & ~flag)

    cpdef int flags(self, int i) except -1:
        self._check(i)
        return self._core.peers[i].flags

    cpdef int index_of(self, object key) except -2:
        i = self._index.get(key)
        return -1 if i is None else i

    cpdef acquire(self, int i):
        self._check(i)
        self._core.peers[i].inflight += 1

    cpdef release(self, int i):
        self._check(i)
        # Clamp, not raise: an endpoint removed and re-added by update() starts
        # again at 0 while requests from before may still finish and release.
        if self._core.peers[i].inflight > 0:
            self._core.peers[i].inflight -= 1

    cpdef int inflight(self, int i) except -1:
        self._check(i)
        return self._core.peers[i].inflight

    cpdef int healthy_count(self):
        cdef Py_ssize_t i
        cdef int count = 0
        for i in range(self._n):
            count += self._core.peers[i].flags == 0
        return count

    def deadline(self, int i):
        """EDF: endpoint ``i``'s next deadline as (whole cycles, numerator, weight); None if not scheduled.

        For tests and the admin API; cycles are counted from the table's creation
        or its entry into the EDF regime.  None in the WRR regime.
        """
        self._check(i)
        cdef _Peer *x = &self._core.peers[i]
        if not self._core.edf or x.heap_pos < 0:
            return None
        return (x.due, x.due_frac, x.weight)

    def state(self):
        """Per endpoint: key, cluster, weight, current, flags, inflight, and priority in a
        table with levels (admin API)."""
        cdef Py_ssize_t i
        cdef _Peer *p
        out = []
        for i in range(self._n):
            p = &self._core.peers[i]
            out.append({"key": self.endpoints[i].key, "cluster": self.clusters[p.cluster],
                        "weight": p.weight, "current": p.current, "flags": p.flags,
                        "inflight": p.inflight})
            if self._core.nlevels > 1:
                out[i]["priority"] = self._core.level_priority[p.level]
        return out
