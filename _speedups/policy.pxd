# Typed interface of _speedups.policy, so the exchange checks a route's edge policy at C speed.
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint64_t

from _speedups.forwarded cimport Networks
from _speedups.http cimport RequestHead
from _speedups.stats cimport DENY_FORBIDDEN, DENY_RATE_LIMITED, DENY_UNAUTHENTICATED

cdef class SharedBuckets:
    cdef readonly int fd                    # the memfd: passed to worker processes
    cdef readonly Py_ssize_t slots
    cdef uint64_t mask
    cdef object memory                      # the mmap, kept alive while words points into it
    cdef uint64_t *words
    cdef bint take(self, uint64_t h, int64_t interval, int64_t window, int64_t *wait) noexcept

cdef class Denial:
    cdef readonly int status
    cdef readonly str reason
    cdef readonly bytes fields              # "Name: value" lines joined by CRLF, or None
    cdef readonly int kind                  # DENY_* (stats.pxd): the route's counter
    cdef readonly str body                  # None: the reason is the body

cdef class Identity:
    cdef readonly list fields               # [(lower name, name, value)]
    cdef readonly bytes lines               # the same, "Name: value\r\n" each

cdef class Verdicts:
    cdef object __weakref__                 # JWT keys clear the caches of their authenticators
    cdef readonly bytes field               # the credential's field (lower-case); None: no fast path
    cdef dict entries                       # its last 8 bytes -> (credential, until, Identity or Denial)
    cdef Py_ssize_t size
    cdef object find(self, RequestHead head)
    cdef object _found(self, PyObject *entry, const char *credential, Py_ssize_t n)

cdef class RateLimit:
    cdef SharedBuckets buckets
    cdef readonly object store              # a global limit's RedisStore; None: the replica's buckets
    cdef readonly int64_t interval_us       # the same, in microseconds (the store's unit)
    cdef readonly int64_t window_us
    cdef uint64_t seed                      # the route and policy: its buckets are its own
    cdef readonly int64_t interval          # 128 ns units per request
    cdef readonly int64_t window            # burst x interval
    cdef bint per_client
    cdef bint key_path
    cdef bytes key_header                   # lower-case; None: not keyed by a header
    cdef bytes policy_field
    cdef bytes name
    cdef str reason
    cdef uint64_t bucket(self, RequestHead head, bytes client)
    cdef Denial take(self, RequestHead head, bytes client)
    cdef void ask(self, RequestHead head, bytes client, object answer)
    cdef Denial over(self, double wait_seconds)

cdef class IpFilter:
    cdef readonly Networks allow            # None: any
    cdef readonly Networks deny             # None: none
    cdef bint permits(self, bytes client)

cdef class RoutePolicy:
    cdef readonly IpFilter ip_filter
    cdef readonly object auth
    cdef Verdicts verdicts                  # the authenticator's, looked up before calling it
    cdef frozenset auth_owned               # the request fields authentication sets (lower names)
    cdef readonly RateLimit rate_limit
    cdef readonly object ext_authz          # gateway.policy.ext_authz.ExtAuthorizer; None: off
    cdef Denial ip_denial
    cdef Denial check(self, RequestHead head, bytes client)
    cdef void identify(self, RequestHead head, Identity identity, frozenset owned)
    cdef bint client_sent(self, RequestHead head, frozenset owned)

# check()'s answer when authentication decides later: the exchange calls auth.ask and waits.
cdef Denial DEFERRED
