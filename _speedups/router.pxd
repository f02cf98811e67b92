from _speedups.http cimport RequestHead

cdef class RouteMatcher:
    cdef readonly object target
    cdef readonly int path_kind
    cdef readonly bytes path_bytes
    cdef readonly object path_regex
    cdef readonly frozenset host_exact
    cdef readonly tuple host_suffixes
    cdef readonly bint any_host
    cdef readonly frozenset methods
    cdef readonly tuple headers
    cdef readonly tuple queries
    cdef tuple header_tests                 # headers with the kind as a C int (MATCH_*)
    cdef tuple query_tests
    cdef bint matches(self, RequestHead head, bytes host, object path_str)
    cdef bint _queries_match(self, RequestHead head)
    cdef bint _host_matches(self, bytes host)
    cdef bint _headers_match(self, RequestHead head)

cdef class Router:
    cdef readonly tuple matchers
    cdef readonly tuple unindexed
    cdef readonly dict index
    cdef readonly bint has_regex
    cdef readonly bint has_hosts            # some route names hosts: the Host value is needed
    # for_listeners: the listeners sharing a port, by hostname (see the module docstring)
    cdef readonly bint dispatches
    cdef readonly dict listener_exact       # hostname bytes -> Router
    cdef readonly tuple listener_wildcards  # (".suffix" bytes, Router), longest first
    cdef readonly Router listener_default   # the listener without a hostname, or None
    cpdef Router listener_for(self, bytes host)
    cpdef bint misdirected(self, RequestHead head, bytes sni)
    cpdef object match(self, RequestHead head)
