# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Edge policy on a route: who may call it (IP filter, authentication) and how often
(rate limit), checked before the request is sent anywhere.

Rate limits are GCRA token buckets (the generic cell rate algorithm: one timestamp per
bucket, the "theoretical arrival time", is the whole state) in memory that every worker
of a replica maps (``SharedBuckets``, a memfd the control plane creates), so ``workers: N``
share one budget.  A bucket is one 64-bit word, updated by compare-and-swap: a 20-bit
fingerprint of its key beside 44 bits of TAT in 128 ns units (26 days, compared modulo
that, so the clock may wrap).  A bucket whose TAT has passed is full, the same as no
bucket: an expired slot is free to reuse without losing anything.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.long cimport PyLong_FromUnsignedLongLong
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcmp, memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from _speedups.clock cimport wall_clock
from _speedups.forwarded cimport Networks
from _speedups.http cimport RequestHead
from _speedups.stats cimport DENY_FORBIDDEN, DENY_RATE_LIMITED, DENY_UNAUTHENTICATED

import mmap
import os


cdef extern from *:
    """
    #include <stdint.h>
    static inline int gw_cas64(uint64_t *p, uint64_t expected, uint64_t desired) {
        return __atomic_compare_exchange_n(p, &expected, desired, 0,
                                           __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
    static inline uint64_t gw_load64(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    """
    bint gw_cas64(uint64_t *p, uint64_t expected, uint64_t desired) nogil
    uint64_t gw_load64(uint64_t *p) nogil


cdef enum:
    UNIT_SHIFT = 7                      # TAT units: 2**7 ns
    TAT_BITS = 44
    PROBES = 8                          # slots looked at per key (linear probing)
    CAS_TRIES = 64

cdef uint64_t FNV_PRIME = <uint64_t>0x100000001b3
cdef uint64_t FNV_OFFSET = <uint64_t>0xcbf29ce484222325
cdef uint64_t TAT_MASK = (<uint64_t>1 << TAT_BITS) - 1
cdef int64_t TAT_HALF = <int64_t>1 << (TAT_BITS - 1)
# No bucket takes longer to fill (gateway.config.model.MAX_RATE_WINDOW refuses more): a TAT
# further ahead is left from before a wrap of the 26-day clock.
MAX_WINDOW_SECONDS = 86_400.0
cdef int64_t MAX_WINDOW_UNITS = <int64_t>(MAX_WINDOW_SECONDS * 1e9) >> UNIT_SHIFT

DEFAULT_SLOTS = 1 << 20                 # 8 MiB of buckets per replica, touched as used
UNITS_PER_SECOND = 1e9 / (1 << 7)



cdef inline int64_t _now_units() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return (<int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec) >> UNIT_SHIFT


cdef inline int64_t _ahead(uint64_t word, int64_t now) noexcept nogil:
    """How far a slot's TAT is ahead of ``now`` (0: the bucket is full, or the slot free)."""
    cdef int64_t ahead
    if word == 0:
        return 0
    ahead = <int64_t>(((word & TAT_MASK) - <uint64_t>now) & TAT_MASK)
    if ahead >= TAT_HALF:
        ahead -= <int64_t>1 << TAT_BITS
    if ahead <= 0 or ahead > MAX_WINDOW_UNITS:     # passed, or left from before a wrap of the clock
        return 0
    return ahead


cdef inline uint64_t _fnv1a(uint64_t h, const unsigned char *p, Py_ssize_t n) noexcept nogil:
    """FNV-1a: the same in every process (Python's hash() of bytes is salted per process)."""
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * FNV_PRIME
    return h


cdef inline uint64_t _hash_bytes(uint64_t seed, bytes data):
    return _fnv1a(seed, <const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


cdef class SharedBuckets:
    """The replica's rate-limit buckets: ``slots`` words in a memfd every worker maps."""

    def __init__(self, int fd=-1, Py_ssize_t slots=DEFAULT_SLOTS):
        if slots <= 0 or slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        if fd < 0:
            fd = os.memfd_create("gateway-rate-limits", os.MFD_CLOEXEC)
            os.ftruncate(fd, slots * 8)
        self.fd = fd
        self.slots = slots
        self.mask = slots - 1
        self.memory = mmap.mmap(fd, slots * 8)
        cdef unsigned char[::1] view = self.memory
        self.words = <uint64_t *>&view[0]

    cdef bint take(self, uint64_t h, int64_t interval, int64_t window, int64_t *wait) noexcept:
        """One request from the bucket ``h``: True if allowed, else False (``wait``: units
        until one is).  ``interval``: units per request; ``window``: burst x interval."""
        cdef uint64_t fp = ((h >> TAT_BITS) | 1) << TAT_BITS     # never 0: 0 is an empty slot
        cdef uint64_t *slot
        cdef uint64_t *best
        cdef uint64_t word
        cdef int64_t now, ahead, best_ahead, new_ahead
        cdef int i, tries
        for tries in range(CAS_TRIES):
            now = _now_units()
            best = NULL
            best_ahead = TAT_HALF
            for i in range(PROBES):
                slot = self.words + ((h + <uint64_t>i) & self.mask)
                word = gw_load64(slot)
                ahead = _ahead(word, now)
                if word & ~TAT_MASK == fp:
                    best, best_ahead = slot, ahead
                    break
                if ahead < best_ahead:  # free (0), or the nearest to full: reused if no slot is ours
                    best, best_ahead = slot, ahead
            word = gw_load64(best)
            ahead = _ahead(word, now) if word & ~TAT_MASK == fp else 0
            new_ahead = ahead + interval
            if new_ahead > window:
                wait[0] = new_ahead - window
                return False
            if gw_cas64(best, word, fp | (<uint64_t>(now + new_ahead) & TAT_MASK)):
                return True
        return True                     # the slot kept changing under us: never seen in practice


cdef class Denial:
    """The gateway's answer instead of the upstream's: status, reason (logged; the body too
    unless ``body`` is given), fields."""

    def __init__(self, int status, str reason, bytes fields=None, int kind=DENY_FORBIDDEN, str body=None):
        self.status = status
        self.reason = reason
        self.fields = fields
        self.kind = kind
        self.body = body


DEFERRED = Denial(0, "authentication decides later")


cdef class Identity:
    """What authentication lets through: the fields to set on the request, and the same as
    header lines, joined once per verdict instead of once per request."""

    def __init__(self, fields=()):
        self.fields = list(fields)
        self.lines = b"".join([f[1] + b": " + f[2] + b"\r\n" for f in self.fields])


cdef double FOREVER = float("inf")
CACHE_SIZE = 10_000                     # credentials remembered per route and worker


cdef inline object _key(const char *credential, Py_ssize_t n):
    """The cache key of a credential: its last eight bytes (a JWT's signature) and its length,
    as an int, not all of it, so that a lookup hashes one word instead of a 600-byte token;
    the entry holds the whole credential, compared before its verdict is used."""
    cdef uint64_t tail = 0
    if n >= 8:
        memcpy(&tail, credential + n - 8, 8)
    else:
        memcpy(&tail, credential, n)
    return PyLong_FromUnsignedLongLong(tail ^ (<uint64_t>n * FNV_PRIME))


cdef class Verdicts:
    """An authenticator's verdicts (an Identity or a Denial) by credential, the whole value of
    the field ``field`` (None: found otherwise, by the authenticator itself), each good until
    a wall-clock time (a JWT's exp).  RoutePolicy.check looks here first: a credential seen
    before costs a field scan and a dict lookup, with no call into Python.  Bounded: a full
    cache is emptied and refills."""

    def __init__(self, bytes field=None, Py_ssize_t size=CACHE_SIZE):
        self.field = field
        self.entries = {}
        self.size = size

    cdef object find(self, RequestHead head):
        """The verdict for the request's credential, or None (not seen, expired, or no field)."""
        cdef const char *value = NULL
        cdef Py_ssize_t n
        if self.field is None:
            return None
        n = head.header_span(self.field, &value)
        if n < 0:
            return None
        return self._found(PyDict_GetItem(self.entries, _key(value, n)), value, n)

    cdef object _found(self, PyObject *entry, const char *credential, Py_ssize_t n):
        """The verdict of ``entry`` (credential, until, verdict) if it is this credential's and
        still good."""
        cdef bytes held
        if entry is NULL:
            return None
        held = <bytes>PyTuple_GET_ITEM(<object>entry, 0)
        if PyBytes_GET_SIZE(held) != n or memcmp(PyBytes_AS_STRING(held), credential, n) != 0:
            return None                 # another credential with the same last bytes
        if <double>(<object>PyTuple_GET_ITEM(<object>entry, 1)) < wall_clock():
            return None
        return <object>PyTuple_GET_ITEM(<object>entry, 2)

    def lookup(self, bytes credential):
        """The verdict remembered for ``credential``, if it is still good; else None."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(credential)
        return self._found(PyDict_GetItem(self.entries, _key(PyBytes_AS_STRING(credential), n)),
                           PyBytes_AS_STRING(credential), n)

    def remember(self, bytes credential, verdict, double until=FOREVER):
        if len(self.entries) >= self.size:
            self.entries.clear()
        self.entries[_key(PyBytes_AS_STRING(credential), PyBytes_GET_SIZE(credential))] = (
            credential, until, verdict)
        return verdict

    def clear(self):
        self.entries.clear()

    def __len__(self):
        return len(self.entries)


cdef class RateLimit:
    """A token bucket per key (or one for the route): ``requests`` per ``seconds``, up to
    ``burst``; in the replica's SharedBuckets, or with ``store`` (gateway.policy.redis_store)
    in Redis, for every replica."""

    def __init__(self, SharedBuckets buckets, str name, int requests, double seconds, int burst,
                 str key="none", object store=None):
        self.buckets = buckets
        self.store = store
        self.interval_us = max(1, <int64_t>(seconds * 1e6 / requests))
        self.window_us = self.interval_us * burst
        self.seed = _hash_bytes(FNV_OFFSET, f"{name}\0{requests}/{seconds!r}/{burst}\0{key}".encode())
        self.interval = max(1, <int64_t>(seconds * UNITS_PER_SECOND / requests))
        self.window = self.interval * burst
        self.per_client = key == "client"
        self.key_path = key == "path"
        self.key_header = key[len("header:"):].lower().encode() if key.startswith("header:") else None
        window = f"{seconds:g}"
        self.policy_field = f'RateLimit-Policy: "{name}";q={requests};w={window}'.encode()
        self.reason = f"rate limited: route {name}, {requests} per {window}s" + (
            f" by {key}" if key != "none" else "")
        self.name = name.encode()

    cdef uint64_t bucket(self, RequestHead head, bytes client):
        """The bucket of this request: the limit's, and its key's value."""
        cdef bytes key = b""
        if self.per_client:
            key = client
        elif self.key_path:
            key = head.path
        elif self.key_header is not None:
            key = head.header(self.key_header) or b""
        return _hash_bytes(self.seed, key)

    cdef Denial take(self, RequestHead head, bytes client):
        """The replica's bucket: None when allowed, else the 429."""
        cdef int64_t wait = 0
        if self.buckets.take(self.bucket(head, client), self.interval, self.window, &wait):
            return None
        return self.over(wait / UNITS_PER_SECOND)

    cdef void ask(self, RequestHead head, bytes client, object answer):
        """The global bucket, in Redis: ``answer`` gets the store's reply (gateway.policy.redis_store)."""
        self.store.take(self.name + b":%016x" % self.bucket(head, client), self.interval_us,
                        self.window_us, answer)

    cdef Denial over(self, double wait_seconds):
        """The 429 for a request that would have waited ``wait_seconds`` for its token."""
        cdef long long seconds = max(1, <long long>(wait_seconds + 0.999999))   # rounded up, at least 1
        return Denial(429, self.reason,
                      b"Retry-After: %d\r\n%s\r\nRateLimit: \"%s\";r=0;t=%d"
                      % (seconds, self.policy_field, self.name, seconds), DENY_RATE_LIMITED)

    def __call__(self, RequestHead head, bytes client=b""):
        """Take one request (for tests): None when allowed, else the Denial."""
        return self.take(head, client)


cdef class IpFilter:
    """Allowed and denied networks of a route: a client in ``deny`` is refused; with
    ``allow``, a client outside it is too."""

    def __init__(self, allow=(), deny=()):
        self.allow = Networks(allow) if allow else None
        self.deny = Networks(deny) if deny else None

    cdef bint permits(self, bytes client):
        cdef bint valid
        cdef const unsigned char *text = <const unsigned char *>PyBytes_AS_STRING(client)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(client)
        if self.deny is not None and self.deny.contains(text, n, &valid):
            return False
        if self.allow is not None:
            return self.allow.contains(text, n, &valid)
        return True


cdef class RoutePolicy:
    """A route's edge policy, in the order it is checked: IP filter, authentication
    (gateway.policy.auth: its ``verdicts`` first, then ``authenticate(head)``, which returns a
    Denial, or the Identity to set on the request once the fields named in its ``owned`` are
    dropped, or None when its verdict comes later: check() answers DEFERRED and the exchange
    asks ``auth.ask`` and waits, as it does ``ext_authz``), rate limit (the exchange's, after
    authentication: a limit keyed by a header sees the fields authentication set, a JWT
    claim).  None parts are off."""

    def __init__(self, str route, IpFilter ip_filter=None, object auth=None, RateLimit rate_limit=None,
                 object ext_authz=None):
        self.ip_filter = ip_filter
        self.auth = auth
        self.verdicts = auth.verdicts if auth is not None else None
        self.ext_authz = ext_authz
        self.auth_owned = auth.owned if auth is not None else frozenset()
        self.rate_limit = rate_limit
        self.ip_denial = Denial(403, f"forbidden: the client address is not allowed on route {route}",
                                None, DENY_FORBIDDEN)

    cdef Denial check(self, RequestHead head, bytes client):
        cdef object verdict
        if self.ip_filter is not None and not self.ip_filter.permits(client):
            return self.ip_denial
        if self.auth is not None:
            verdict = self.verdicts.find(head)
            if verdict is None:
                verdict = self.auth.authenticate(head)
                if verdict is None:
                    return DEFERRED
            if isinstance(verdict, Denial):
                return <Denial>verdict
            self.identify(head, <Identity?>verdict, self.auth_owned)
        return None

    cdef void identify(self, RequestHead head, Identity identity, frozenset owned):
        """Authentication's fields set on the request; a client's own copies dropped first."""
        if owned and self.client_sent(head, owned):
            head.replace_fields(owned, identity.fields, identity.lines)
        elif identity.fields:
            head.append_fields(identity.fields, identity.lines)     # the raw field lines stay

    cdef bint client_sent(self, RequestHead head, frozenset owned):
        """Did the request come with a field authentication sets?"""
        for name in owned:
            if head.header(name) is not None:
                return True
        return False

    def __call__(self, RequestHead head, bytes client=b""):
        """IP filter and authentication, then the replica's rate limit (for tests and benches)."""
        denial = self.check(head, client)
        if denial is None and self.rate_limit is not None:
            return self.rate_limit.take(head, client)
        return denial
