# Typed interface of _speedups.forwarded, so the proxy finds the client address at C speed.
from libc.stdint cimport uint64_t

cdef class Networks:
    cdef uint64_t *nets                     # [hi, lo, mask_hi, mask_lo] per network, IPv4 as ::ffff:a.b.c.d
    cdef Py_ssize_t count
    cdef readonly tuple cidrs
    cdef bint contains(self, const unsigned char *text, Py_ssize_t n, bint *valid)

cdef class TrustedProxies:
    cdef readonly int hops                  # > 0: that many proxies in front, whatever their address
    cdef readonly Networks networks
    cdef readonly tuple cidrs
    cdef bint trusted(self, const unsigned char *text, Py_ssize_t n, bint *valid)
    cdef bytes client(self, bytes peer, bytes forwarded_for)
