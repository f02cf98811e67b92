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

Other policies (``policy=``), all over the same eligible set (flags, exclude, level):
``random`` (weighted, O(n)); ``least_request`` and ``peak_ewma``, the power of two
choices (two endpoints drawn at random, the one with the lower cost wins: in-flight + 1
over weight, as Envoy's active_request_bias = 1; times the latency EWMA for peak_ewma,
as Finagle and Linkerd do); ``ring_hash``, a Ketama-style ring of points per endpoint
in proportion to its weight, searched from the request's key hash (set_key) to the
first eligible endpoint: removing one of N endpoints moves only the keys that were
on it (~1/N), which go to the next points.  Ring points are hashed from the endpoint
key's text with FNV-1a, not Python's hash(), so every worker builds the same ring.

Priority levels (update(endpoints, priorities)): the control plane decides what
share of requests each level gets (gateway.health.state.plan_levels, Envoy's
priority load) and sends it as basis points (set_loads).  A pick chooses the
level by smooth WRR over those loads, so the shares hold exactly over any
window and not just on average, then the endpoint within the level by the
table's scheduler restricted to it; a level with no eligible endpoint left
(everything excluded by a retry) falls through to the others, best first.  A
table whose endpoints are all at one level skips the level step.

Capacity spill-over (set_capacity, off by default): with a limit of requests in
flight per endpoint, a pick passes over the endpoints at the limit (one pass over
the table, marking them as exclude does); when the level it would take has no
endpoint with room, the next level with room takes the request (GKE's
maxRatePerEndpoint spill, by requests in flight), and the level gets requests
again as soon as one of its endpoints has room.  Full everywhere: as without a limit.
"""
cimport cython
from libc.limits cimport LLONG_MIN
from libc.math cimport exp, log2

from _speedups.clock cimport monotonic
from libc.stdlib cimport calloc, free, malloc, qsort

# pick() marks excluded endpoints with this bit, so that the WRR loop tests one
# int per endpoint and the EDF walk one per heap node; _clear_marks() removes
# them again from the endpoints listed in _Core.marks.
cdef enum:
    _EXCLUDED = 1 << 30
    _FULL = 1 << 29             # capacity spill-over: at its in-flight limit (this pick only)
    _MARKS = _EXCLUDED | _FULL

# Above this many endpoints a table schedules by EDF.  Measured (bench/MICRO.md,
# pick() from Python): smooth WRR costs ~25 ns + ~1.1 ns per endpoint, EDF
# 70-190 ns growing with log n, so the two meet at 64-96 endpoints; 64 keeps
# every table of a typical service (a handful of pods per cluster) on smooth
# WRR, which interleaves better.
EDF_THRESHOLD = 64

POLICIES = {"round_robin": POLICY_ROUND_ROBIN, "least_request": POLICY_LEAST_REQUEST,
            "random": POLICY_RANDOM, "ring_hash": POLICY_RING_HASH, "peak_ewma": POLICY_PEAK_EWMA}
_POLICY_NAMES = {v: k for k, v in POLICIES.items()}


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
    c.level_room = <int *>calloc(nl, sizeof(int))
    if edf:
        c.heap = <int *>malloc(m * sizeof(int))
        c.stack = <int *>malloc(m * sizeof(int))
    c.rng = 0x9E3779B97F4A7C15
    c.decay = 1.0
    if (c.peers == NULL or c.marks == NULL or (edf and (c.heap == NULL or c.stack == NULL))
            or c.level_priority == NULL or c.level_load == NULL or c.level_current == NULL
            or c.level_room == NULL):
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
        free(c.level_room)
        free(c.ring)
        free(c)


cdef inline void _clear_marks(_Core *c) noexcept:
    cdef int k
    for k in range(c.nmarks):
        c.peers[c.marks[k]].flags &= ~_MARKS
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


# -- other policies ------------------------------------------------------------------

cdef inline unsigned long long _next_random(_Core *c) noexcept:
    """xorshift64*: fast, good enough to spread picks, no Python call."""
    cdef unsigned long long x = c.rng
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    c.rng = x
    return x * <unsigned long long>2685821657736338717ULL


cdef int _pick_random(_Core *c, Py_ssize_t n, int level) noexcept:
    cdef Py_ssize_t i
    cdef long long total = 0, r
    cdef _Peer *p = c.peers
    for i in range(n):
        if not _skip(&p[i], level):
            total += p[i].weight
    if total == 0:
        return -1
    r = <long long>(_next_random(c) % <unsigned long long>total)
    for i in range(n):
        if not _skip(&p[i], level):
            r -= p[i].weight
            if r < 0:
                return <int>i
    return -1


cdef int _random_eligible(_Core *c, Py_ssize_t n, int level, int other) noexcept:
    """A uniformly drawn eligible endpoint other than ``other``; -1 if none.

    A few draws first (almost always enough), then one scan, so it stays bounded
    when most endpoints are flagged or excluded.
    """
    cdef int tries, i
    cdef Py_ssize_t j, count = 0, k
    for tries in range(8):
        i = <int>(_next_random(c) % <unsigned long long>n)
        if i != other and not _skip(&c.peers[i], level):
            return i
    for j in range(n):
        if j != other and not _skip(&c.peers[j], level):
            count += 1
    if count == 0:
        return -1
    k = <Py_ssize_t>(_next_random(c) % <unsigned long long>count)
    for j in range(n):
        if j != other and not _skip(&c.peers[j], level):
            if k == 0:
                return <int>j
            k -= 1
    return -1


cdef inline double _decayed(_Core *c, _Peer *x, double now) noexcept:
    """peak_ewma's estimate now: decayed toward 0 with the time since its last update
    (Finagle's and Linkerd's rule).  Without it an endpoint that was slow kept its estimate
    until it answered again, and was never picked to answer: a zone fast again after 300 ms
    answers kept 0% of the traffic for 25 s and more (issue #26).  Now a slow endpoint's
    estimate halves every decay x ln 2 seconds without news, so it soon wins a draw, and
    that probe's answer updates it."""
    if now <= x.ewma_stamp:
        return x.ewma
    return x.ewma * exp(-(now - x.ewma_stamp) / c.decay)


cdef inline double _cost(_Core *c, _Peer *x, double now) noexcept:
    # Weight is in the draw (see _pick_two_choices), so not in the cost again.
    cdef double load = x.inflight + 1.0
    cdef double estimate
    if c.policy == POLICY_PEAK_EWMA:
        # An endpoint not measured yet costs as if answering in 1 ms: tried soon, not flooded.
        estimate = _decayed(c, x, now) if x.ewma > 0 else 0.001
        return load * estimate
    return load


# Up to this many endpoints (equal weights) the cheapest of all is taken, ties drawn at
# random: two random choices among two pods per zone draw both from a slow zone one time in
# six, which kept 17% of the requests on a zone 300 ms slower (bench/lb_slow_zone.py); the
# scan keeps ~1% there.  Above it, two choices, O(1) (Mitzenmacher's power of two choices).
cdef enum:
    _SCAN_MAX = 8


cdef int _pick_least_cost(_Core *c, Py_ssize_t n, int level, double now) noexcept:
    cdef Py_ssize_t j
    cdef int best = -1
    cdef unsigned long long ties = 0
    cdef double cost, best_cost = 0.0
    for j in range(n):
        if _skip(&c.peers[j], level):
            continue
        cost = _cost(c, &c.peers[j], now)
        if best < 0 or cost < best_cost:
            best, best_cost, ties = <int>j, cost, 1
        elif cost == best_cost:
            ties += 1                       # reservoir sampling: each tie kept with 1 / ties
            if _next_random(c) % ties == 0:
                best = <int>j
    return best


cdef int _pick_two_choices(_Core *c, Py_ssize_t n, int level) noexcept:
    cdef int a, b
    cdef double now = 0.0
    if n == 0:
        return -1
    if c.policy == POLICY_PEAK_EWMA:
        now = monotonic()               # one clock read per pick, for peak_ewma only
    if not c.uniform:
        # Unequal weights: both candidates drawn by weight (O(n)), so that an idle
        # service splits by weight, and the cost (load) decides between them.
        a = _pick_random(c, n, level)
        if a < 0:
            return -1
        b = _pick_random(c, n, level)
        return b if _cost(c, &c.peers[b], now) < _cost(c, &c.peers[a], now) else a
    if n <= _SCAN_MAX:
        return _pick_least_cost(c, n, level, now)
    a = _random_eligible(c, n, level, -1)
    if a < 0:
        return -1
    b = _random_eligible(c, n, level, a)
    if b < 0:
        return a
    return b if _cost(c, &c.peers[b], now) < _cost(c, &c.peers[a], now) else a


cdef int _pick_ring(_Core *c, int level) noexcept:
    """The first eligible endpoint at or after the key's point, walking round once."""
    cdef int lo = 0, hi = c.ring_len, mid, k, i
    cdef unsigned long long want = c.key >> 20
    if hi == 0:
        return -1
    while lo < hi:
        mid = (lo + hi) >> 1
        if (c.ring[mid] >> 20) < want:
            lo = mid + 1
        else:
            hi = mid
    for k in range(c.ring_len):
        i = <int>(c.ring[(lo + k) % c.ring_len] & 0xFFFFF)
        if not _skip(&c.peers[i], level):
            return i
    return -1


cdef inline unsigned long long _mix(unsigned long long x) noexcept:
    """splitmix64's finalizer: spreads the points of one endpoint over the ring."""
    x ^= x >> 30
    x *= <unsigned long long>0xBF58476D1CE4E5B9ULL
    x ^= x >> 27
    x *= <unsigned long long>0x94D049BB133111EBULL
    x ^= x >> 31
    return x


cpdef unsigned long long hash_bytes(bytes data):
    """FNV-1a 64 of ``data``, mixed: the same in every process (unlike hash())."""
    cdef unsigned long long h = 0xCBF29CE484222325ULL
    cdef const unsigned char *s = data
    cdef Py_ssize_t i
    for i in range(len(data)):
        h ^= s[i]
        h *= <unsigned long long>0x100000001B3ULL
    return _mix(h)


cdef int _cmp_points(const void *a, const void *b) noexcept nogil:
    cdef unsigned long long x = (<unsigned long long *>a)[0]
    cdef unsigned long long y = (<unsigned long long *>b)[0]
    return -1 if x < y else (1 if x > y else 0)


# About 1,000 points per endpoint on average (Ketama uses 160: with 100, a share was off by
# a quarter of itself), at most 2**18 points (2 MiB) for huge tables.  Points are the
# weight times a power of two, so that removing one endpoint leaves the other endpoints'
# points where they were (a scale from n or the total weight would move them all, and
# then ~2x the keys move); the power changes only when the total weight doubles or halves.
cdef Py_ssize_t _RING_MAX = 1 << 18


cdef int _build_ring(_Core *c, Py_ssize_t n, tuple eps) except -1:
    cdef long long total = 0
    cdef Py_ssize_t i, size, m = 0, points, r
    cdef unsigned long long base
    if n == 0:
        return 0
    if n >= (1 << 20):
        raise ValueError("ring_hash supports fewer than 2**20 endpoints")
    for i in range(n):
        total += c.peers[i].weight
    shift = round(log2(1000.0 * n / total))
    while shift > -62 and (total << shift if shift >= 0 else total >> -shift) > _RING_MAX:
        shift -= 1
    counts = [max(1, c.peers[i].weight << shift if shift >= 0 else c.peers[i].weight >> -shift)
              for i in range(n)]
    c.ring = <unsigned long long *>malloc(sum(counts) * sizeof(unsigned long long))
    if c.ring == NULL:
        raise MemoryError()
    for i in range(n):
        base = hash_bytes(repr(eps[i].key).encode())
        points = counts[i]
        for r in range(points):
            c.ring[m] = ((_mix(base + <unsigned long long>r) & ~(<unsigned long long>0xFFFFF))
                         | <unsigned long long>i)
            m += 1
    c.ring_len = <int>m
    qsort(c.ring, m, sizeof(unsigned long long), _cmp_points)
    return 0


cdef inline int _pick_in(_Core *c, Py_ssize_t n, int level) noexcept:
    cdef int policy = c.policy
    if policy == POLICY_ROUND_ROBIN:
        return _pick_edf(c, level) if c.edf else _pick_wrr(c.peers, n, level)
    if policy == POLICY_RING_HASH:
        return _pick_ring(c, level)
    if policy == POLICY_RANDOM:
        return _pick_random(c, n, level)
    return _pick_two_choices(c, n, level)


cdef int _pick_spill(_Core *c, Py_ssize_t n, int chosen) noexcept:
    """Capacity spill-over: the endpoints at their in-flight limit, or out of tokens (rate),
    are marked _FULL for this pick; the chosen level if it has an eligible endpoint with
    room, else the first level (best first) that has one.  -1 when every level is full: the
    marks are lifted and the pick goes on as without a limit (the load's level, as before:
    no 503 for being full everywhere).  One pass over the endpoints: the cost of a limit."""
    cdef Py_ssize_t j
    cdef int l, cap = c.max_inflight
    cdef double now = 0.0, rate = c.max_rate
    cdef _Peer *x
    if rate > 0:
        now = monotonic()                   # one clock read per pick, with a rate limit only
    for l in range(c.nlevels):
        c.level_room[l] = 0
    for j in range(n):
        x = &c.peers[j]
        if rate > 0:                        # refill every bucket, flagged or not
            if now > x.tokens_stamp:
                x.tokens += (now - x.tokens_stamp) * rate
                if x.tokens > c.burst:
                    x.tokens = c.burst
            x.tokens_stamp = now
        if x.flags:                         # flagged or excluded: not a candidate anyway
            continue
        if (cap > 0 and x.inflight >= cap) or (rate > 0 and x.tokens < 1.0):
            x.flags = _FULL                 # was 0; not in the EDF heap's order (flags only)
            c.marks[c.nmarks] = <int>j      # at most once: only unmarked endpoints get here
            c.nmarks += 1
        else:
            c.level_room[x.level] = 1
    if chosen >= 0 and c.level_room[chosen]:
        return _pick_in(c, n, chosen)
    for l in range(c.nlevels):
        if c.level_room[l]:
            return _pick_in(c, n, l)
    for j in range(c.nmarks):               # full everywhere: as if there were no limit
        c.peers[c.marks[j]].flags &= ~_FULL
    return -1


cdef int _pick_levels(_Core *c, Py_ssize_t n) noexcept:
    cdef int l, i = -1
    cdef int chosen = _pick_level(c)
    if c.max_inflight > 0 or c.max_rate > 0:
        i = _pick_spill(c, n, chosen)
    if i < 0 and chosen >= 0:
        i = _pick_in(c, n, chosen)
    for l in range(c.nlevels):      # nothing eligible there: the other levels, best first
        if i >= 0:
            break
        if l != chosen:
            i = _pick_in(c, n, l)
    if i >= 0 and c.max_rate > 0:   # the request spends a token (none owed when full everywhere)
        c.peers[i].tokens = c.peers[i].tokens - 1.0 if c.peers[i].tokens >= 1.0 else 0.0
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

    def __init__(self, endpoints=(), int edf_threshold=EDF_THRESHOLD, str policy="round_robin",
                 double decay=1.0):
        if edf_threshold < 0:
            raise ValueError(f"edf_threshold must be >= 0, got {edf_threshold}")
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}")
        if decay <= 0:
            raise ValueError(f"decay must be > 0, got {decay}")
        self._core.edf_threshold = edf_threshold
        self._core.policy = POLICIES[policy]
        self._core.decay = decay
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

    @property
    def policy(self):
        return _POLICY_NAMES[self._core.policy]

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
        cdef bint edf = n > prev.edf_threshold and prev.policy == POLICY_ROUND_ROBIN
        cdef bint carry_due = edf and prev.edf      # same regime: deadlines stay comparable
        if prios and len(prios) != n:
            raise ValueError(f"{len(prios)} priorities for {n} endpoints")
        cdef _Core *c = _core_new(n, edf, prev.edf_threshold, nlevels if nlevels > 1 else 0)
        if c == NULL:
            raise MemoryError()
        c.policy, c.rng, c.decay, c.key = prev.policy, prev.rng, prev.decay, prev.key
        c.max_inflight, c.max_rate, c.burst = prev.max_inflight, prev.max_rate, prev.burst
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
                peers[i].flags = q.flags & ~_MARKS
                peers[i].inflight = q.inflight
                peers[i].ewma = q.ewma
                peers[i].ewma_stamp = q.ewma_stamp
                peers[i].tokens = q.tokens
                peers[i].tokens_stamp = q.tokens_stamp
                if not edf:
                    peers[i].current = q.current    # 0 if it was EDF: WRR starts afresh
                elif carry_due and q.heap_pos >= 0 and q.weight == w:
                    peers[i].due = q.due
                    peers[i].due_frac = q.due_frac
                    peers[i].heap_pos = 0       # 0: keep this deadline
            c.uniform = 1
            for i in range(1, n):
                if peers[i].weight != peers[0].weight:
                    c.uniform = 0
            if c.policy == POLICY_RING_HASH:
                _build_ring(c, n, eps)
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

    cpdef set_weight(self, int i, int weight):
        """Change endpoint ``i``'s weight in place (slow start re-weighs a ramping endpoint a
        few times per window): no rebuild, the rotation and other endpoints' state stay.  In
        EDF a scheduled endpoint is re-keyed to its new grid's next point after now."""
        cdef _Core *c = self._core
        cdef _Peer *x
        cdef Py_ssize_t k
        self._check(i)
        if weight < 1:
            raise ValueError(f"endpoint {i}: weight must be >= 1, got {weight}")
        if c.policy == POLICY_RING_HASH:
            raise ValueError("ring_hash weights are ring points: update() the table instead")
        x = &c.peers[i]
        if x.weight == weight:
            return
        if c.edf and x.heap_pos >= 0:
            _heap_remove(c, i)
            x.weight = weight
            _due_after_now(c, x)
            _heap_push(c, i)
        else:
            x.weight = weight
        c.uniform = 1
        for k in range(1, self._n):
            if c.peers[k].weight != c.peers[0].weight:
                c.uniform = 0
                break

    cpdef set_capacity(self, int max_inflight, double max_rate=0.0):
        """Capacity spill-over (services[].capacity): with priority levels, an endpoint with
        ``max_inflight`` requests in flight (acquire/release), or that was picked ``max_rate``
        times per second (a token bucket of max(1, max_rate / 10) requests, refilled
        continuously), is full; when every endpoint of the level a pick would take is full,
        the pick goes to the next level with room (best first), and back as soon as there is
        room.  When all are full, the pick is as without a limit.  0: no limit; no effect on
        a one-level table."""
        if max_inflight < 0:
            raise ValueError(f"max_inflight must be >= 0, got {max_inflight}")
        if not max_rate >= 0:
            raise ValueError(f"max_rate must be >= 0, got {max_rate}")
        self._core.max_inflight = max_inflight
        self._core.max_rate = max_rate
        self._core.burst = max(1.0, max_rate / 10.0)

    @property
    def capacity(self):
        """The in-flight limit per endpoint of set_capacity (0: none)."""
        return self._core.max_inflight

    @property
    def max_rate(self):
        """The requests-per-second limit per endpoint of set_capacity (0: none)."""
        return self._core.max_rate

    cpdef set_key(self, unsigned long long key):
        """ring_hash: the request's key hash (hash_bytes) for the picks that follow."""
        self._core.key = key

    cpdef observe(self, int i, double seconds, double now):
        """peak_ewma: a response time of endpoint ``i``.  A slower answer than the average
        is taken at once (the peak: a slowing endpoint loses load immediately); a faster one
        pulls the average down with weight 1 - exp(-elapsed / decay), so an endpoint recovers
        over about ``decay`` seconds, as Finagle's and Linkerd's peak EWMA."""
        cdef _Peer *x
        cdef double w, current
        self._check(i)
        x = &self._core.peers[i]
        # The estimate as pick() sees it (decayed toward 0 since the last update), then:
        # slower is taken at once, faster averaged in with weight 1 - exp(-elapsed / decay).
        current = _decayed(self._core, x, now)
        if seconds > current:
            x.ewma = seconds
        else:
            w = exp(-(now - x.ewma_stamp) / self._core.decay) if now > x.ewma_stamp else 1.0
            x.ewma = current * w + seconds * (1.0 - w)
        x.ewma_stamp = now

    def ewma(self, int i):
        self._check(i)
        return self._core.peers[i].ewma

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
        if flags < 0 or flags & _MARKS:
            raise ValueError(f"invalid health flags {flags:#x}")
        self._set_flags(i, flags)

    cpdef add_flag(self, int i, int flag):
        self._check(i)
        if flag < 0 or flag & _MARKS:
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
