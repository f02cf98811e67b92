from _speedups.filters cimport RouteFilters
from _speedups.stats cimport Reported, TrafficStats
from _speedups.table cimport EndpointTable


cdef class Service:
    cdef readonly str key
    cdef readonly bytes json_key
    cdef readonly EndpointTable table
    # Circuit breakers (0: no limit), set from the config, and what they count.
    cdef public int max_connections         # upstream connections opened for it, still open
    cdef public int max_pending             # its requests waiting for a new connection
    cdef public int max_requests            # its requests in flight
    cdef public int max_retries             # its requests that are retrying, concurrently
    cdef readonly int connections
    cdef readonly int pending
    cdef readonly int active_requests
    cdef readonly int active_retries
    cdef public frozenset outlier_statuses  # answers passive health counts as 5xx
    cdef public bytes hash_header           # ring_hash on this request header (lower case) ...
    cdef public bint hash_source_ip         # ... or on the client address ...
    cdef public bytes hash_cookie           # ... or on this cookie, set when missing
    cdef public bytes hash_cookie_attributes    # "; Path=/; Max-Age=..." after its value
    cdef public bint observe_latency        # peak_ewma: feed response times to the table


cdef class SessionPolicy:
    cdef readonly bytes name                # the cookie's name, or the header's (as sent)
    cdef readonly bytes lookup              # what the request is searched for: the cookie's name, the header's in lower case
    cdef readonly bint header               # the token travels in a header, not a cookie
    cdef readonly double absolute           # seconds a session lasts (0: no end)
    cdef readonly double idle               # seconds a session may go unused (0: no end)
    cdef readonly bytes cookie_attributes   # "; Path=/; HttpOnly" (and Max-Age when permanent)
    cdef tuple endpoint(self, bytes token, double now)
    cdef bytes token(self, tuple key, double created, double now)


cdef class Route(Reported):
    cdef readonly str name
    cdef readonly bytes json_name
    cdef readonly tuple services            # of Service
    cdef readonly EndpointTable split       # weighted choice among services; None for one
    cdef readonly bytes rewrite_from
    cdef readonly bytes rewrite_to
    cdef readonly double timeout
    cdef readonly int attempts
    cdef readonly frozenset retry_statuses  # answers to retry idempotent requests on; None: none
    cdef readonly double backoff            # before a retry after an answer or a timeout
    cdef readonly bint retry_timeout
    cdef readonly bint idempotent           # retry sent requests whatever their method (gRPC)
    cdef readonly double per_try_timeout
    cdef readonly TrafficStats traffic
    cdef public RouteFilters filters        # None: no filters (the common, cheapest case)
    # Per service, its backend's BackendFilters or None; None: no backend has any
    cdef public tuple backend_filters
    cdef dict backends                      # Service -> {cluster: BackendStats} (found once)
    cdef public SessionPolicy session       # sessionPersistence; None: none
    cdef Service pick_service(self, int *index)
    cdef bytes rewrite_target(self, bytes target)
