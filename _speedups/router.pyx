# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Route matching, prepared once per snapshot and run once per request.

Routes are tried in the order the snapshot gives and the first that matches wins:
declared order by default (Envoy's rule: predictable, the config reads top to bottom),
or the Gateway API's precedence, which ``gateway.routing`` sorts once per snapshot.  Everything a match
needs (lower-cased hosts, compiled regexes, method sets) is prepared when the
Router is built, so matching allocates nothing but a str for regex paths.

Large route sets: routes whose path is an exact or prefix match are indexed by
their first path segment, so a request only tries the routes that could match
it plus the "unindexable" ones (regex or "/"), in declared order.

Listener isolation (Gateway API): a port where several listeners of one Gateway take
connections gets a dispatching Router (``Router.for_listeners``): the request's Host picks
one listener, exact hostname first, then the longest wildcard, then the listener without a
hostname, and only that listener's routes are tried.  On HTTPS the SNI picks a listener the
same way; a Host that picks another one is a misdirected request (RFC 9110 15.5.20: 421).
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memchr, memcmp

from _speedups.http cimport RequestHead

cdef enum:                  # RouteMatcher.path_kind
    PATH_ANY = 0
    PATH_PREFIX = 1
    PATH_EXACT = 2
    PATH_REGEX = 3
    PATH_SEGMENT = 4        # whole segments: "/foo" matches "/foo" and "/foo/x", not "/foobar"

cdef enum:                  # how a header or query parameter is matched (the config's words, as C ints)
    MATCH_EXACT = 0
    MATCH_PRESENT = 1
    MATCH_ABSENT = 2
    MATCH_REGEX = 3

cdef dict _MATCH_KINDS = {"exact": MATCH_EXACT, "present": MATCH_PRESENT, "absent": MATCH_ABSENT,
                          "regex": MATCH_REGEX}


cdef tuple _prepared(tests):
    """(name, kind, value) with the kind as its MATCH_* int, once per snapshot."""
    return tuple((name, _MATCH_KINDS[kind], value) for name, kind, value in tests)


cdef bytes _query_value(bytes target, bytes name):
    """The value of the first ``name=`` parameter of ``target``'s query, or None.

    The Gateway API lets the first of repeated parameters decide (as Envoy does); a value
    is percent-decoded before comparing, as a name is written decoded in the route."""
    cdef Py_ssize_t q = target.find(b"?")
    if q < 0:
        return None
    for part in target[q + 1:].split(b"&"):
        key, eq, value = part.partition(b"=")
        if b"%" in key or b"+" in key:
            key = _unquote(key)
        if key == name:
            return _unquote(value) if (b"%" in value or b"+" in value) else value
    return None


cdef bytes _unquote(bytes text):
    from urllib.parse import unquote_to_bytes
    return unquote_to_bytes(text.replace(b"+", b" "))


cdef class RouteMatcher:
    """The conditions of one route; the route's target is any object in ``target``."""

    def __init__(self, object target, str path_kind, object path_value,
                 hosts=(), methods=(), headers=(), queries=()):
        self.target = target
        self.path_kind = {"any": PATH_ANY, "prefix": PATH_PREFIX, "exact": PATH_EXACT,
                          "regex": PATH_REGEX, "segment_prefix": PATH_SEGMENT}[path_kind]
        if self.path_kind == PATH_REGEX:
            self.path_regex = path_value          # a compiled re.Pattern over str
            self.path_bytes = b""
        elif self.path_kind == PATH_SEGMENT:
            self.path_bytes = path_value.rstrip("/").encode()
            if not self.path_bytes:
                self.path_kind = PATH_ANY         # "/" is every path
        else:
            self.path_bytes = (path_value or "/").encode()
        exact = [h.lower().encode() for h in hosts if not h.startswith("*.")]
        self.host_exact = frozenset(exact)
        self.host_suffixes = tuple(h[1:].lower().encode() for h in hosts if h.startswith("*."))
        self.any_host = not hosts
        self.methods = frozenset(m.upper().encode() for m in methods) if methods else None
        # headers: (lower-case name bytes, kind, value) with kind in exact|present|absent|regex
        self.headers = tuple(headers)
        # queries: (name bytes, kind, value) with kind exact (bytes) | regex (re.Pattern over str)
        self.queries = tuple(queries)
        self.header_tests = _prepared(self.headers)
        self.query_tests = _prepared(self.queries)

    cdef bint matches(self, RequestHead head, bytes host, object path_str):
        cdef bytes path = head.path
        if self.path_kind == PATH_PREFIX:
            if not _starts_with(path, self.path_bytes):
                return False
        elif self.path_kind == PATH_EXACT:
            if path != self.path_bytes:
                return False
        elif self.path_kind == PATH_SEGMENT:
            if not _starts_with(path, self.path_bytes) or (
                    len(path) > len(self.path_bytes) and path[len(self.path_bytes)] != 47):   # "/"
                return False
        elif self.path_kind == PATH_REGEX:
            if self.path_regex.match(path_str) is None:
                return False
        if self.methods is not None and head.method not in self.methods:
            return False
        if not self.any_host and not self._host_matches(host):
            return False
        if self.header_tests and not self._headers_match(head):
            return False
        if self.query_tests and not self._queries_match(head):
            return False
        return True

    cdef bint _queries_match(self, RequestHead head):
        cdef int kind
        for name, kind, expected in self.query_tests:
            value = _query_value(head.target, name)
            if value is None:
                return False
            if kind == MATCH_EXACT:
                if value != expected:
                    return False
            elif expected.search(value.decode("latin-1")) is None:
                return False
        return True

    cdef bint _host_matches(self, bytes host):
        if host in self.host_exact:
            return True
        for suffix in self.host_suffixes:
            # "*.example.com" matches "a.example.com", not "example.com"
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        return False

    cdef bint _headers_match(self, RequestHead head):
        cdef int kind
        for lname, kind, expected in self.header_tests:
            value = head.header(lname)
            if kind == MATCH_PRESENT:
                if value is None:
                    return False
            elif kind == MATCH_ABSENT:
                if value is not None:
                    return False
            elif value is None:
                return False
            elif kind == MATCH_EXACT:
                if value != expected:
                    return False
            elif expected.search(value.decode("latin-1")) is None:
                return False
        return True


cdef inline bint _starts_with(bytes text, bytes prefix):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(prefix)
    return (PyBytes_GET_SIZE(text) >= n
            and memcmp(PyBytes_AS_STRING(text), PyBytes_AS_STRING(prefix), n) == 0)


cdef bytes _first_segment(bytes path):
    """"/api/v1/x" -> b"api"; "/" -> b""."""
    cdef const char *p = PyBytes_AS_STRING(path)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(path)
    if n <= 1:
        return b""
    cdef const char *end = <const char *>memchr(p + 1, b"/", n - 1)
    return PyBytes_FromStringAndSize(p + 1, (end - p if end != NULL else n) - 1)


cdef object _segment_key(RouteMatcher m):
    """The first path segment every path the route matches starts with; None: no such one."""
    if m.path_kind == PATH_EXACT or m.path_kind == PATH_SEGMENT:
        return _first_segment(m.path_bytes)     # segment "/api" and "/api/v1" both need "api" first
    if m.path_kind == PATH_PREFIX:
        end = m.path_bytes.find(b"/", 1)
        if end > 0:
            return m.path_bytes[1:end]
    return None


cdef bytes _route_host(bytes host):
    """The Host value as host rules compare it: without its port, in lower case."""
    cdef const char *p = PyBytes_AS_STRING(host)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(host), i
    cdef const char *colon = NULL
    for i in range(n - 1, -1, -1):
        if p[i] == b":":
            colon = p + i
            break
        if p[i] == b"]":
            break                           # an IPv6 literal with no port
    if colon != NULL:
        n = colon - p
    for i in range(n):
        if 65 <= p[i] <= 90:
            return PyBytes_FromStringAndSize(p, n).lower()
    return host if n == PyBytes_GET_SIZE(host) else PyBytes_FromStringAndSize(p, n)


cdef class Router:
    """First-match-wins route table with a first-segment index; or, made by
    ``for_listeners``, a choice among listeners' tables by hostname."""

    def __init__(self, matchers):
        cdef RouteMatcher m
        cdef Py_ssize_t position = 0
        cdef list entries
        self.dispatches = False
        self.matchers = tuple(matchers)
        self.has_regex = self.has_hosts = False
        # An indexed route is a prefix or exact route whose first segment is complete,
        # e.g. prefix "/api/" or exact "/api"; prefix "/ap" could match "/apple".  Entries
        # are (position, matcher): a segment's routes and the unindexed ones are merged back
        # into the order given.  Built per route change: at 2,000 routes, a loop of typed
        # steps costs ~1 ms where per-route Python calls (sorted, genexprs) cost ~14.
        index = {}
        unindexed = []
        for m in self.matchers:
            self.has_regex |= m.path_kind == PATH_REGEX
            self.has_hosts |= not m.any_host
            seg = _segment_key(m)
            if seg is None:
                unindexed.append((position, m))
            else:
                entries = index.get(seg)
                if entries is None:
                    index[seg] = [(position, m)]
                else:
                    entries.append((position, m))
            position += 1
        self.unindexed = tuple([entry[1] for entry in unindexed])
        self.index = {}
        for seg, entries in index.items():
            if unindexed:
                entries = sorted(entries + unindexed)   # positions are unique: never compares matchers
            self.index[seg] = tuple([entry[1] for entry in entries])

    @staticmethod
    def for_listeners(listeners):
        """A Router that hands each request to one listener's Router: ``listeners`` are
        (hostname or None, Router) pairs of the listeners sharing a port."""
        cdef Router router = Router(())
        exact, wildcards = {}, []
        for hostname, listener in listeners:
            if not hostname:
                router.listener_default = listener
            elif hostname.startswith("*."):
                wildcards.append((hostname[1:].lower().encode(), listener))
            else:
                exact[hostname.lower().encode()] = listener
        router.listener_exact = exact
        # Longest suffix first: "*.foo.example.com" before "*.example.com".
        router.listener_wildcards = tuple(sorted(wildcards, key=lambda pair: -len(pair[0])))
        router.dispatches = True
        return router

    cpdef Router listener_for(self, bytes host):
        """The listener Router that ``host`` (lower case, no port) selects; None: none does."""
        cdef Router listener
        if not self.dispatches:
            return self
        listener = self.listener_exact.get(host)
        if listener is not None:
            return listener
        for suffix, listener in self.listener_wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                return listener
        return self.listener_default

    cpdef bint misdirected(self, RequestHead head, bytes sni):
        """A TLS request whose Host selects another listener than its SNI did."""
        if not self.dispatches or not sni:
            return False
        return self.listener_for(_route_host(head.host) if head.host else b"") is not self.listener_for(sni)

    cpdef object match(self, RequestHead head):
        """The target of the first route matching ``head``, or None."""
        cdef bytes host = b""
        cdef RouteMatcher m
        cdef Router listener
        if self.dispatches:
            listener = self.listener_for(_route_host(head.host) if head.host else b"")
            return None if listener is None else listener.match(head)
        if self.has_hosts and head.host:
            host = _route_host(head.host)
        path_str = head.path.decode("latin-1") if self.has_regex else None
        candidates = self.index.get(_first_segment(head.path), self.unindexed) if self.index else self.matchers
        for m in candidates:
            if m.matches(head, host, path_str):
                return m.target
        return None
