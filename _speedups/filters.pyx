# cython: language_level=3, boundscheck=False, wraparound=False
"""Route filters (the Gateway API's HTTPRoute filters), prepared once per snapshot.

A route without filters carries ``filters = None`` and the request path tests only that;
a route with some gets one ``RouteFilters`` whose parts are each None unless configured,
so a request pays for the filters of its route and nothing else.  Every name and value is
encoded and lower-cased here, at snapshot time, not per request.
"""
from _speedups.http cimport RequestHead
from _speedups.policy cimport RoutePolicy

cdef bytes _EMPTY = b""


cdef class HeaderModifier:
    """RequestHeaderModifier / ResponseHeaderModifier: ``set`` replaces every field of that
    name, ``add`` appends one more, ``remove`` drops them (Gateway API HTTPHeaderFilter)."""

    def __init__(self, set=(), add=(), remove=()):
        self.set_fields = tuple((n.lower().encode(), n.encode(), v.encode()) for n, v in set)
        self.add_fields = tuple((n.lower().encode(), n.encode(), v.encode()) for n, v in add)
        self.drop = frozenset([n.lower().encode() for n in remove] + [f[0] for f in self.set_fields])

    cpdef list apply(self, list headers):
        """A new field list ([(lower name, name, value)]) with the changes made."""
        cdef list out
        if self.drop:
            out = [field for field in headers if field[0] not in self.drop]
        else:
            out = list(headers)
        out.extend(self.set_fields)
        out.extend(self.add_fields)
        return out


cdef bytes _join_prefix(bytes replacement, bytes rest):
    """The Gateway API's ReplacePrefixMatch: "/foo" -> "/bar" turns "/foo/x" into "/bar/x",
    and "/foo" -> "/" turns "/foo/x" into "/x" (one "/" between the parts, never two)."""
    if replacement.endswith(b"/") and rest.startswith(b"/"):
        rest = rest[1:]
    elif rest and not replacement.endswith(b"/") and not rest.startswith(b"/"):
        rest = b"/" + rest
    return (replacement + rest) or b"/"


cdef class PathRewrite:
    """A path replacement: the full path (``prefix_from`` None) or the matched prefix."""

    def __init__(self, str replacement, str prefix_from=None):
        self.replacement = replacement.encode()
        self.prefix_from = prefix_from.rstrip("/").encode() if prefix_from is not None else None

    cpdef bytes path(self, bytes path):
        if self.prefix_from is None:
            return self.replacement
        if not path.startswith(self.prefix_from):
            return path
        return _join_prefix(self.replacement, path[len(self.prefix_from):])


cdef tuple _split_host(bytes host):
    """b"a.example:8080" -> (b"a.example", b"8080"); IPv6 literals keep their brackets."""
    cdef Py_ssize_t colon = host.rfind(b":")
    if colon >= 0 and host.find(b"]", colon) < 0:
        return host[:colon], host[colon + 1:]
    return host, None


cdef class Redirect:
    """RequestRedirect: the gateway answers ``status`` with a Location built from the request."""

    def __init__(self, int status, str scheme=None, str host=None, port=None, PathRewrite path=None):
        self.status = status
        self.scheme = scheme.encode() if scheme is not None else None
        self.host = host.encode() if host is not None else None
        self.port = int(port) if port is not None else 0
        self.path_rewrite = path

    cpdef bytes location(self, RequestHead head, bytes request_scheme):
        cdef bytes scheme = self.scheme if self.scheme is not None else request_scheme
        cdef bytes host, port
        host, port = _split_host((head.host or _EMPTY).lower())
        if self.host is not None:
            host = self.host
        # The spec: a given port wins; a given scheme implies its well-known port; otherwise
        # the port the request came to (here: the one in its Host field).
        if self.port:
            port = str(self.port).encode()
        elif self.scheme is not None:
            port = None
        if port is not None and ((scheme == b"http" and port == b"80") or (scheme == b"https" and port == b"443")):
            port = None
        cdef bytes path = head.path
        cdef Py_ssize_t q = head.target.find(b"?")
        cdef bytes query = head.target[q:] if q >= 0 else _EMPTY
        if self.path_rewrite is not None:
            path = self.path_rewrite.path(path)
        if port is None:
            return b"%s://%s%s%s" % (scheme, host, path, query)
        return b"%s://%s:%s%s%s" % (scheme, host, port, path, query)


cdef bytes _join(tuple items):
    return ", ".join(items).encode() if items and "*" not in items else None


cdef class Cors:
    """The CORS filter (Gateway API HTTPRoute, Fetch standard): which origins a route
    allows, and the fields of a preflight's answer and of an allowed request's answer.
    The allowed Origin is echoed, never "*": that is valid with credentials too, and a
    cache keys on it (Vary: Origin)."""

    def __init__(self, allow_origins=(), allow_methods=(), allow_headers=(), expose_headers=(),
                 bint allow_credentials=False, int max_age=5):
        origins = [o.lower() for o in allow_origins]
        self.any_origin = "*" in origins
        self.origins = frozenset(o.encode() for o in origins if "*" not in o)
        self.wildcards = tuple((o.split("*", 1)[0].encode(), o.split("*", 1)[1].encode())
                               for o in origins if o != "*" and "*" in o)
        self.methods = _join(tuple(allow_methods))
        self.headers = _join(tuple(allow_headers))
        self.expose = ", ".join(expose_headers).encode() if expose_headers else None
        self.credentials = allow_credentials
        self.max_age = str(max_age).encode()

    cdef bint allows(self, bytes origin):
        cdef bytes lower = origin.lower()
        if self.any_origin or lower in self.origins:
            return True
        for prefix, suffix in self.wildcards:
            # "https://*.bar.com": one label or more before ".bar.com", no port after it
            if (lower.startswith(prefix) and lower.endswith(suffix)
                    and len(lower) > len(prefix) + len(suffix) and b"/" not in lower[len(prefix):]):
                return True
        return False

    cpdef bytes preflight_fields(self, bytes origin, RequestHead head):
        """The answer's fields ("Name: value" lines joined by CRLF) to a preflight from
        ``origin``; None when the origin is not allowed (the answer then has none)."""
        if not self.allows(origin):
            return None
        cdef bytes method = head.header(b"access-control-request-method") or b""
        cdef bytes asked = head.header(b"access-control-request-headers")
        cdef list lines = [b"Access-Control-Allow-Origin: " + origin,
                           b"Access-Control-Allow-Methods: " + (self.methods if self.methods is not None else method)]
        if self.headers is not None:
            lines.append(b"Access-Control-Allow-Headers: " + self.headers)
        elif asked:
            lines.append(b"Access-Control-Allow-Headers: " + asked)
        if self.expose is not None:
            lines.append(b"Access-Control-Expose-Headers: " + self.expose)
        if self.credentials:
            lines.append(b"Access-Control-Allow-Credentials: true")
        lines.append(b"Access-Control-Max-Age: " + self.max_age)
        lines.append(b"Vary: Origin")
        return b"\r\n".join(lines)

    cpdef list response_fields(self, bytes origin):
        """Fields for the answer to a request from ``origin`` ([(lower name, name, value)]);
        None when the origin is not allowed."""
        if not self.allows(origin):
            return None
        cdef list fields = [(b"access-control-allow-origin", b"Access-Control-Allow-Origin", origin),
                            (b"vary", b"Vary", b"Origin")]
        if self.credentials:
            fields.append((b"access-control-allow-credentials", b"Access-Control-Allow-Credentials", b"true"))
        if self.expose is not None:
            fields.append((b"access-control-expose-headers", b"Access-Control-Expose-Headers", self.expose))
        return fields


cpdef bytes rewrite_target(PathRewrite rewrite, bytes target):
    """``target`` (path and query) with the path rewritten; the query is kept."""
    cdef Py_ssize_t q = target.find(b"?")
    if q < 0:
        return rewrite.path(target)
    return rewrite.path(target[:q]) + target[q:]


cdef class BackendFilters:
    """What one backend of a route does to the requests the weights give it, after the
    route's filters (an HTTPRoute backendRef's filters); None parts are off."""

    def __init__(self, HeaderModifier request_headers=None, HeaderModifier response_headers=None,
                 PathRewrite rewrite_path=None, str rewrite_host=None, Redirect redirect=None):
        self.request_headers = request_headers
        self.response_headers = response_headers
        self.rewrite_path = rewrite_path
        self.rewrite_host = rewrite_host.encode() if rewrite_host is not None else None
        self.redirect = redirect


cdef class RouteFilters:
    """Everything a route does besides matching and choosing a backend; None parts are off."""

    def __init__(self, HeaderModifier request_headers=None, HeaderModifier response_headers=None,
                 Redirect redirect=None, PathRewrite rewrite_path=None, str rewrite_host=None,
                 tuple mirrors=(), int direct_status=0, str direct_reason=None, Cors cors=None,
                 RoutePolicy policy=None):
        self.request_headers = request_headers
        self.response_headers = response_headers
        self.redirect = redirect
        self.rewrite_path = rewrite_path
        self.rewrite_host = rewrite_host.encode() if rewrite_host is not None else None
        self.mirrors = mirrors
        self.direct_status = direct_status
        self.direct_reason = direct_reason or ""
        self.cors = cors
        self.policy = policy

    cpdef bytes rewrite_target(self, bytes target):
        """``target`` (path and query) with the path rewritten; the query is kept."""
        return rewrite_target(self.rewrite_path, target)
