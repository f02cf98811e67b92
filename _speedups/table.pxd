# C-level interface of _speedups.table, for the proxy protocol:
#     from _speedups.table cimport EndpointTable, FLAG_EJECTED
cimport cython

# Health flag bits, one per cause (Envoy's idea): an endpoint is healthy iff
# no bit is set.  cpdef: also plain ints at Python level.  Bit 30 is reserved
# for pick()'s exclude marks (_EXCLUDED in table.pyx), bit 29 for its capacity marks (_FULL).
cpdef enum:
    POLICY_ROUND_ROBIN = 0      # smooth WRR, EDF for big tables
    POLICY_LEAST_REQUEST = 1    # power of two choices by in-flight / weight
    POLICY_RANDOM = 2           # weighted random
    POLICY_RING_HASH = 3        # consistent hashing on a key (Ketama-style ring)
    POLICY_PEAK_EWMA = 4        # power of two choices by latency EWMA x (in-flight + 1) / weight

cpdef enum:
    FLAG_ACTIVE_FAILED = 1      # failed active health checks
    FLAG_EJECTED = 2            # passive outlier ejection
    FLAG_DRAINING = 4           # not ready / terminating
    FLAG_CLUSTER_DRAINED = 8    # its cluster is drained for this service (gateway/health/domains.py)


cpdef unsigned long long hash_bytes(bytes data)


# Per-endpoint state, one struct per endpoint: smooth WRR reads flags and weight
# and writes current of every endpoint, so keeping them side by side means
# one cache line per endpoint visited.
cdef struct _Peer:
    long long current           # smooth WRR current weight; long long: sum of n int weights
    int weight                  # effective weight, >= 1
    int flags                   # health flag bits, 0 = healthy
    int inflight                # requests in progress
    int cluster                 # index into EndpointTable.clusters
    # EDF (large tables): the next deadline is due + due_frac / weight, in units
    # of one scheduling cycle.  Exact integers, not a double: no drift, and equal
    # deadlines compare equal (ties go to the lower index).
    unsigned long long due
    int due_frac                # 0 <= due_frac < weight
    int heap_pos                # index in _Core.heap, -1 when not scheduled (flagged)
    int level                   # index into _Core.level_*, 0 in a one-level table
    double ewma                 # peak_ewma: decayed response time (s), peak-sensitive
    double ewma_stamp           # when ewma was last updated (monotonic s)
    double tokens               # capacity spill-over by rate: a token bucket (requests) ...
    double tokens_stamp         # ... last refilled then (monotonic s)


# All C state of a table behind one pointer.  The EndpointTable object keeps the
# size and field offsets it had before EDF, so a proxy module built against the
# older .pxd still reads ``generation`` at the right place.
cdef struct _Core:
    _Peer *peers
    int *heap                   # EDF: healthy endpoints, a binary min-heap by (deadline, index)
    int *marks                  # indices pick() marked _EXCLUDED, to clear afterwards
    int *stack                  # EDF pick(exclude): heap positions still to visit
    int heap_len
    int nmarks
    int edf                     # 1 when this table schedules by EDF (len > edf_threshold)
    int edf_threshold
    # EDF virtual time: the deadline of the last pick, now_due + now_frac / now_weight.
    unsigned long long now_due
    int now_frac
    int now_weight
    # Priority levels (distinct priorities, ascending): a pick first chooses a level by
    # smooth WRR over the levels' loads (basis points from the control plane), then an
    # endpoint of that level.  nlevels <= 1: no level step at all.
    int nlevels
    int *level_priority
    int *level_load
    long long *level_current
    # Selection policy (POLICY_*): smooth WRR / EDF, or one of the others below, which
    # never build the EDF heap.
    int policy
    unsigned long long rng      # xorshift64* state (random, the two choices)
    unsigned long long key      # ring_hash: the request's key hash, set before pick()
    unsigned long long *ring    # ring_hash: sorted points (hash << 20 | endpoint index)
    int ring_len
    double decay                # peak_ewma: time constant (s)
    int uniform                 # every endpoint has the same weight
    # Capacity spill-over: an endpoint with this many requests in flight is full; a pick
    # passes over full endpoints to another level while one has room (0: no limit).
    int max_inflight
    int *level_room             # per level: an eligible endpoint with room (scratch of a pick)
    double max_rate             # ... or at this many requests per second (0: no limit) ...
    double burst                # ... with a bucket of this many requests (max(1, rate / 10))


@cython.final
cdef class EndpointTable:
    cdef _Core *_core
    cdef Py_ssize_t _n
    cdef dict _index                        # key -> index
    cdef readonly tuple endpoints           # the objects given to update(), by index
    cdef readonly tuple clusters            # distinct cluster names, by first appearance
    cdef readonly unsigned long long generation  # +1 whenever update() moves indices

    cpdef update(self, endpoints, priorities=*)
    cpdef int pick(self, object exclude=*) except -2
    cpdef object endpoint(self, int i)
    cpdef int cluster_index(self, int i) except -1
    cpdef set_flags(self, int i, int flags)
    cpdef add_flag(self, int i, int flag)
    cpdef clear_flag(self, int i, int flag)
    cpdef int flags(self, int i) except -1
    cpdef int index_of(self, object key) except -2
    cpdef acquire(self, int i)
    cpdef release(self, int i)
    cpdef int inflight(self, int i) except -1
    cpdef int healthy_count(self)

    cdef int _pick(self) noexcept
    cdef int _mark(self, object exclude) except -1
    cdef int _check(self, int i) except -1
    # New methods go after the old ones: the vtable order is the declaration order.
    cdef void _set_flags(self, int i, int flags) noexcept
    cpdef set_loads(self, loads)
    cdef void _carry_loads(self, _Core *prev, _Core *c, list distinct)
    cpdef set_key(self, unsigned long long key)
    cpdef observe(self, int i, double seconds, double now)
    cpdef set_weight(self, int i, int weight)
    cpdef set_capacity(self, int max_inflight, double max_rate=*)
