"""Route order: the Gateway API's precedence, decided once per snapshot.

The router (``_speedups/router.pyx``) tries routes in the order it is given and the first
match wins; this module gives it the HTTPRoute order when asked (``route_order:
precedence`` in the file, always for routes from Kubernetes). The spec (HTTPRouteRule,
"Proxy or Load Balancer routing configuration generated from HTTPRoutes MUST prioritize
matches based on the following criteria, continuing on ties"):

1. an "Exact" path match, then the "PathPrefix" with the most characters;
2. a method match;
3. the most header matches;
4. the most query param matches;
5. then the oldest Route (creationTimestamp), then "{namespace}/{name}" alphabetically, then
   rule and match order within the route: a stable sort over the order the routes come in,
   which the Gateway API source gives in exactly that order.

Before those, hostnames: an implementation serves each listener hostname as a virtual host,
so a route naming the request's exact host beats one reaching it through a wildcard, and
both beat a route with no hostname (this is what Envoy Gateway's per-hostname virtual hosts
do). Regex paths, whose precedence the spec leaves to the implementation, come after
every prefix; "any path" (prefix "/") last with the empty prefix.
"""
from __future__ import annotations

from gateway.config import RouteConfig, RouteMatch


def precedence_order(routes: tuple[RouteConfig, ...] | list[RouteConfig]) -> list[RouteConfig]:
    """``routes`` in Gateway API precedence; equal ones keep their given order."""
    return sorted(routes, key=lambda rc: precedence_key(rc.match))


def precedence_key(m: RouteMatch) -> tuple:
    """Smaller sorts first."""
    return (_host_rank(m.hosts), *_path_rank(m), 0 if m.methods else 1, -len(m.headers), -len(m.queries))


def _host_rank(hosts: tuple[str, ...]) -> tuple[int, int]:
    if not hosts:
        return (2, 0)
    if any(not h.startswith("*.") for h in hosts):
        return (0, 0)
    return (1, -max(len(h) for h in hosts))   # "*.a.example.com" before "*.example.com"


def _path_rank(m: RouteMatch) -> tuple[int, int]:
    if m.path_exact is not None:
        return (0, -len(m.path_exact))
    prefix = m.matched_prefix
    if prefix is not None and prefix != "/":
        return (1, -len(prefix))
    if m.path_regex is not None:
        return (2, -len(m.path_regex))
    return (3, 0)
