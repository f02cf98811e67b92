# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Per-service endpoint table: nginx's smooth weighted round robin over C arrays.

Each pick adds every eligible endpoint's weight to its ``current`` and to a
``total``, takes the largest ``current`` (first on ties) and subtracts ``total``
from it, so 5:1:1 gives a a b a c a a.  update() carries current, flags and
in-flight by key (nginx keeps its peers, pingora inherits health by identity):
a new snapshot must neither restart the rotation nor forget an ejection.
Indices move only when ``generation`` does; re-resolve held ones with index_of().
"""
cimport cython
from libc.limits cimport LLONG_MIN
from libc.stdlib cimport calloc, free

# pick() marks excluded endpoints with this bit so that its loop tests one int
# per endpoint; the loop clears the marks again as it passes them.
cdef enum:
    _EXCLUDED = 1 << 30


@cython.final
cdef class EndpointTable:

    def __cinit__(self):
        self._peers = NULL
        self._n = 0
        self._index = {}
        self.endpoints = ()
        self.clusters = ()
        self.generation = 0

    def __init__(self, endpoints=()):
        self.update(endpoints)

    def __dealloc__(self):
        free(self._peers)

    def __len__(self):
        return self._n

    def __repr__(self):
        return (f"<EndpointTable endpoints={self._n} healthy={self.healthy_count()} "
                f"generation={self.generation}>")

    cpdef update(self, endpoints):
        cdef tuple eps = tuple(endpoints)
        cdef Py_ssize_t i, n = len(eps)
        cdef Py_ssize_t old
        cdef int w
        cdef bint moved = n != self._n
        cdef dict index = {}
        cdef dict clusters = {}
        # calloc: new endpoints start with current 0, flags 0, inflight 0.
        cdef _Peer *peers = <_Peer *>calloc(n if n else 1, sizeof(_Peer))
        if peers == NULL:
            raise MemoryError()
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
                o = self._index.get(key)
                if o is None:
                    moved = True
                    continue
                old = o
                moved = moved or old != i
                peers[i].current = self._peers[old].current
                peers[i].flags = self._peers[old].flags
                peers[i].inflight = self._peers[old].inflight
        except BaseException:
            free(peers)         # a bad list leaves the table as it was
            raise
        free(self._peers)
        self._peers = peers
        self._n = n
        self._index = index
        self.endpoints = eps
        self.clusters = tuple(clusters)
        if moved:
            self.generation += 1

    cpdef int pick(self, object exclude=None) except -2:
        """Index of the next endpoint, or -1 if no healthy one is left."""
        if exclude is not None:
            self._mark(exclude)
        return self._pick()

    cdef int _mark(self, object exclude) except -1:
        cdef Py_ssize_t i, j
        try:
            for x in exclude:
                j = x
                if 0 <= j < self._n:    # stale or bogus indices exclude nothing
                    self._peers[j].flags |= _EXCLUDED
        except BaseException:
            for i in range(self._n):
                self._peers[i].flags &= ~_EXCLUDED
            raise
        return 0

    cdef int _pick(self) noexcept:
        cdef _Peer *p = self._peers
        cdef Py_ssize_t i, best = -1
        cdef long long total = 0, best_current = LLONG_MIN   # any current beats it
        cdef int f
        for i in range(self._n):
            f = p[i].flags
            if f:
                if f & _EXCLUDED:
                    p[i].flags = f & ~_EXCLUDED
                continue
            p[i].current += p[i].weight
            total += p[i].weight
            if p[i].current > best_current:     # strict: first of equals wins, as in nginx
                best = i
                best_current = p[i].current
        if best >= 0:
            p[best].current -= total
        return <int>best

    cdef int _check(self, int i) except -1:
        if i < 0 or i >= self._n:
            raise IndexError(f"endpoint index {i} out of range 0..{self._n - 1}")
        return 0

    cpdef object endpoint(self, int i):
        self._check(i)
        return self.endpoints[i]

    cpdef int cluster_index(self, int i) except -1:
        """Index into ``clusters`` of endpoint ``i``'s cluster."""
        self._check(i)
        return self._peers[i].cluster

    cpdef set_flags(self, int i, int flags):
        self._check(i)
        if flags < 0 or flags & _EXCLUDED:
            raise ValueError(f"invalid health flags {flags:#x}")
        self._peers[i].flags = flags

    cpdef add_flag(self, int i, int flag):
        self._check(i)
        if flag < 0 or flag & _EXCLUDED:
            raise ValueError(f"invalid health flag {flag:#x}")
        self._peers[i].flags |= flag

    cpdef clear_flag(self, int i, int flag):
        self._check(i)
        self._peers[i].flags &= ~flag

    cpdef int flags(self, int i) except -1:
        self._check(i)
        return self._peers[i].flags

    cpdef int index_of(self, object key) except -2:
        i = self._index.get(key)
        return -1 if i is None else i

    cpdef acquire(self, int i):
        self._check(i)
        self._peers[i].inflight += 1

    cpdef release(self, int i):
        self._check(i)
        # Clamp, not raise: an endpoint removed and re-added by update() starts
        # again at 0 while requests from before may still finish and release.
        if self._peers[i].inflight > 0:
            self._peers[i].inflight -= 1

    cpdef int inflight(self, int i) except -1:
        self._check(i)
        return self._peers[i].inflight

    cpdef int healthy_count(self):
        cdef Py_ssize_t i
        cdef int count = 0
        for i in range(self._n):
            count += self._peers[i].flags == 0
        return count

    def state(self):
        """Per endpoint: key, cluster, weight, current, flags, inflight (admin API)."""
        cdef Py_ssize_t i
        cdef _Peer *p
        out = []
        for i in range(self._n):
            p = &self._peers[i]
            out.append({"key": self.endpoints[i].key, "cluster": self.clusters[p.cluster],
                        "weight": p.weight, "current": p.current, "flags": p.flags,
                        "inflight": p.inflight})
        return out
