# Typed interface of _speedups.filters, so the proxy applies a route's filters at C speed.
from _speedups.http cimport RequestHead
from _speedups.policy cimport RoutePolicy

cdef class HeaderModifier:
    cdef readonly tuple set_fields          # ((lower name, name, value), ...) as bytes
    cdef readonly tuple add_fields
    cdef readonly frozenset drop            # lower names removed (and those set)
    cpdef list apply(self, list headers)

cdef class PathRewrite:
    cdef readonly bytes replacement
    cdef readonly bytes prefix_from         # None: replace the whole path
    cpdef bytes path(self, bytes path)

cdef class Redirect:
    cdef readonly int status
    cdef readonly bytes scheme
    cdef readonly bytes host
    cdef readonly int port                  # 0: not set
    cdef readonly PathRewrite path_rewrite
    cpdef bytes location(self, RequestHead head, bytes request_scheme)

cdef class Cors:
    cdef readonly bint any_origin
    cdef readonly frozenset origins         # exact, lower-case bytes
    cdef readonly tuple wildcards           # (scheme "://", host suffix ".example.com"), lower-case
    cdef readonly bytes methods             # "GET, POST" as configured; None: any ("*")
    cdef readonly bytes headers             # None: any ("*")
    cdef readonly bytes expose              # None: none
    cdef readonly bint credentials
    cdef readonly bytes max_age
    cdef bint allows(self, bytes origin)
    cpdef bytes preflight_fields(self, bytes origin, RequestHead head)
    cpdef list response_fields(self, bytes origin)

cdef class BackendFilters:
    cdef readonly HeaderModifier request_headers
    cdef readonly HeaderModifier response_headers
    cdef readonly PathRewrite rewrite_path
    cdef readonly bytes rewrite_host
    cdef readonly Redirect redirect

cpdef bytes rewrite_target(PathRewrite rewrite, bytes target)

cdef class RouteFilters:
    cdef readonly HeaderModifier request_headers
    cdef readonly HeaderModifier response_headers
    cdef readonly Redirect redirect
    cdef readonly PathRewrite rewrite_path
    cdef readonly bytes rewrite_host
    cdef readonly tuple mirrors             # callables(head bytes), fire and forget
    cdef readonly int direct_status         # 0: none; else the gateway answers it (500: no backend)
    cdef readonly str direct_reason
    cdef readonly Cors cors                 # None: no CORS filter
    cdef readonly RoutePolicy policy        # None: no IP filter, authentication or rate limit
    cpdef bytes rewrite_target(self, bytes target)
