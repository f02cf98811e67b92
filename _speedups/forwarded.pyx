# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Which address is the client's, behind proxies the config trusts (X-Forwarded-For).

Each proxy appends the address it received the request from, so X-Forwarded-For
reads left to right from the client towards the gateway, and only the entries
appended by proxies we trust are true: anything to their left may have been
written by the client.  So the list is walked from the right:

* ``cidrs``: the peer must be in a trusted network, else the header is not
  believed at all and the peer is the client.  Then trusted entries are skipped
  from the right; the first untrusted one is the client (nginx's
  ``real_ip_recursive on``, Envoy's ``xff_trusted_cidrs``).  If every entry is
  trusted, the leftmost is the client; an entry that is not an IP address
  ends the walk at the nearest trusted hop, the last address known to be true.
* ``hops``: that many proxies are in front, whatever their address (Envoy's
  ``xff_num_trusted_hops``): the client is the hops-th entry from the right;
  with fewer entries, or a bad one there, the peer.

The networks are parsed once per config into 128-bit (address, mask) pairs,
IPv4 as its IPv4-mapped IPv6 form (RFC 4291 2.5.5.2), so that one comparison
loop covers both families and a dual-stack listener's ``::ffff:10.0.0.1`` peer
matches ``10.0.0.0/8``.  Per request the cost is an ``inet_pton`` per entry walked.
"""
import ipaddress

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset


cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char *src, void *dst)
    int AF_INET
    int AF_INET6


cdef enum:
    MAX_ADDRESS = 63                    # longer than any IPv6 text form: not an address


cdef inline uint64_t _load_be(const unsigned char *b):
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v = (v << 8) | b[i]
    return v


cdef bint _port_ok(const unsigned char *text, Py_ssize_t i, Py_ssize_t n):
    """text[i:n] is empty or ":" and 1 to 5 digits."""
    cdef Py_ssize_t j
    if i == n:
        return True
    if text[i] != b':' or n - i - 1 < 1 or n - i - 1 > 5:
        return False
    for j in range(i + 1, n):
        if not (b'0' <= text[j] <= b'9'):
            return False
    return True


cdef bint _parse(const unsigned char *text, Py_ssize_t n, uint64_t *hi, uint64_t *lo,
                 Py_ssize_t *start, Py_ssize_t *end):
    """Parse an X-Forwarded-For entry: "a.b.c.d", "a.b.c.d:port", "v6", "[v6]" or "[v6]:port".

    On success the address is hi:lo (IPv4 mapped) and text[start:end] is its text, without
    brackets or port.
    """
    cdef char buf[MAX_ADDRESS + 1]
    cdef unsigned char addr[16]
    cdef Py_ssize_t s = 0, e = n, i, colons = 0
    if n == 0:
        return False
    if text[0] == b'[':                     # [v6] or [v6]:port
        e = 1
        while e < n and text[e] != b']':
            e += 1
        if e == n or not _port_ok(text, e + 1, n):
            return False
        s = 1
    else:
        for i in range(n):
            if text[i] == b':':
                colons += 1
        if colons == 1:                     # a.b.c.d:port (an IPv6 address has two or more)
            e = 0
            while text[e] != b':':
                e += 1
            if not _port_ok(text, e, n):
                return False
    if e - s <= 0 or e - s > MAX_ADDRESS:
        return False
    memcpy(buf, text + s, e - s)
    buf[e - s] = 0
    memset(addr, 0, 16)
    if s == 0 and colons <= 1 and inet_pton(AF_INET, buf, addr + 12) == 1:
        addr[10] = 0xff
        addr[11] = 0xff
    elif inet_pton(AF_INET6, buf, addr) != 1:
        return False
    hi[0] = _load_be(addr)
    lo[0] = _load_be(addr + 8)
    start[0] = s
    end[0] = e
    return True


cdef class Networks:
    """A set of IP networks (CIDRs), parsed once into 128-bit (address, mask) pairs."""

    def __cinit__(self):
        self.nets = NULL
        self.count = 0

    def __init__(self, cidrs=()):
        cdef Py_ssize_t i
        networks = [ipaddress.ip_network(c) for c in cidrs]
        self.cidrs = tuple(str(n) for n in networks)
        self.nets = <uint64_t *>PyMem_Malloc(sizeof(uint64_t) * 4 * max(len(networks), 1))
        if self.nets == NULL:
            raise MemoryError()
        for i, net in enumerate(networks):
            if net.version == 4:
                value = (0xffff << 32) | int(net.network_address)
                bits = 96 + net.prefixlen
            else:
                value = int(net.network_address)
                bits = net.prefixlen
            mask = ((1 << bits) - 1) << (128 - bits)     # Python integers: 128 bits wide
            self.nets[4 * i] = value >> 64
            self.nets[4 * i + 1] = value & 0xFFFFFFFFFFFFFFFF
            self.nets[4 * i + 2] = mask >> 64
            self.nets[4 * i + 3] = mask & 0xFFFFFFFFFFFFFFFF
        self.count = len(networks)

    def __dealloc__(self):
        if self.nets != NULL:
            PyMem_Free(self.nets)

    cdef bint contains(self, const unsigned char *text, Py_ssize_t n, bint *valid):
        """Is ``text`` (an address) in one of the networks?  ``valid``: was it an address at all."""
        cdef uint64_t hi, lo
        cdef Py_ssize_t i, s, e
        cdef uint64_t *net
        valid[0] = _parse(text, n, &hi, &lo, &s, &e)
        if not valid[0]:
            return False
        for i in range(self.count):
            net = self.nets + 4 * i
            if (hi & net[2]) == net[0] and (lo & net[3]) == net[1]:
                return True
        return False

    def __contains__(self, str address):
        cdef bint valid
        data = address.encode("latin-1")
        return self.contains(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &valid)


cdef class TrustedProxies:
    """Trusted proxies of one config: networks (``cidrs``) or a number of ``hops``."""

    def __init__(self, cidrs=(), int hops=0):
        self.networks = Networks(cidrs)
        self.cidrs = self.networks.cidrs
        self.hops = hops
        if (not self.cidrs) == (hops <= 0):
            raise ValueError("exactly one of cidrs and hops")

    cdef bint trusted(self, const unsigned char *text, Py_ssize_t n, bint *valid):
        return self.networks.contains(text, n, valid)

    cdef bytes client(self, bytes peer, bytes forwarded_for):
        """The client's address for a request from ``peer`` carrying ``forwarded_for`` (or None)."""
        cdef const unsigned char *p
        cdef Py_ssize_t end, start, a, b, s, e, seen = 0
        cdef bint valid
        cdef uint64_t hi, lo
        cdef bytes nearest = peer
        if forwarded_for is None:
            return peer
        if self.hops == 0 and not self.trusted(<const unsigned char *>PyBytes_AS_STRING(peer),
                                               PyBytes_GET_SIZE(peer), &valid):
            return peer                     # an untrusted peer's X-Forwarded-For proves nothing
        p = <const unsigned char *>PyBytes_AS_STRING(forwarded_for)
        end = PyBytes_GET_SIZE(forwarded_for)
        while end > 0:
            start = end
            while start > 0 and p[start - 1] != b',':
                start -= 1
            a, b = start, end               # the entry, without the optional whitespace around it
            while a < b and (p[a] == b' ' or p[a] == b'\t'):
                a += 1
            while b > a and (p[b - 1] == b' ' or p[b - 1] == b'\t'):
                b -= 1
            end = start - 1
            if a == b:
                continue                    # "a,,b": an empty list element (RFC 9110 5.6.1)
            seen += 1
            if self.hops > 0:
                if seen < self.hops:
                    continue
                if not _parse(p + a, b - a, &hi, &lo, &s, &e):
                    return peer
                return forwarded_for[a + s:a + e]
            if not self.trusted(p + a, b - a, &valid):
                if not valid:
                    return nearest          # garbage: stop at the last address known to be true
                _parse(p + a, b - a, &hi, &lo, &s, &e)
                return forwarded_for[a + s:a + e]
            _parse(p + a, b - a, &hi, &lo, &s, &e)
            nearest = forwarded_for[a + s:a + e]
        return peer if self.hops > 0 else nearest

    def __call__(self, str peer, forwarded_for):
        """The client address as a str (for tests and tools); ``forwarded_for``: str or None."""
        result = self.client(peer.encode(), forwarded_for.encode("latin-1")
                             if forwarded_for is not None else None)
        return result.decode("latin-1")
