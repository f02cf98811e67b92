"""Router: the compiled, indexed first-match router agrees with the plain first-match loop.

``_speedups.router.Router`` indexes exact and prefix routes by their first path
segment and merges them with the unindexable ones (regex, "any", a prefix that
ends inside a segment) in declared order; ``tests/reference/router.py`` is a
loop over every route.  Both get the same routes and the same parsed request
heads, and must pick the same route: first match in declared order, whatever
mix of indexed and unindexed routes comes first.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _speedups.http import find_head_end, parse_request
from _speedups.router import RouteMatcher, Router
from tests.reference.router import ReferenceRoute, ReferenceRouter


def request(method: str = "GET", target: str = "/", host: str | None = "example.com",
            headers: tuple[tuple[str, str], ...] = ()):
    lines = [f"{method} {target} HTTP/{'1.1' if host is not None else '1.0'}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return parse_request(data, find_head_end(data, 0))


def routers(specs):
    """Compiled and reference routers over the same specs; each route's target is its index."""
    compiled = Router([RouteMatcher(i, *spec) for i, spec in enumerate(specs)])
    reference = ReferenceRouter([ReferenceRoute(i, *spec) for i, spec in enumerate(specs)])
    return compiled, reference


def both(specs, head):
    compiled, reference = routers(specs)
    result = compiled.match(head)
    assert result == reference.match(head)
    return result


# -- fixed cases --------------------------------------------------------------------

def test_first_match_across_indexed_and_unindexed():
    regex = ("regex", re.compile(r"/api/\d+"))
    api = ("prefix", "/api/")
    assert both([regex, api], request(target="/api/1")) == 0
    assert both([api, regex], request(target="/api/1")) == 0
    assert both([regex, api], request(target="/api/x")) == 1
    # A prefix ending inside a segment cannot be indexed: "/ap" matches "/apple".
    partial = ("prefix", "/ap")
    assert both([partial, api], request(target="/api/1")) == 0
    assert both([api, partial], request(target="/api/1")) == 0
    assert both([api, partial], request(target="/apple")) == 1
    assert both([api, ("any", None)], request(target="/other")) == 1
    assert both([("any", None), api], request(target="/api/")) == 0


def test_index_holds_indexed_routes_merged_with_unindexed_in_order():
    specs = [("prefix", "/api/"), ("regex", re.compile("/x")), ("exact", "/api"),
             ("prefix", "/static/"), ("any", None)]
    compiled, _ = routers(specs)
    assert sorted(compiled.index) == [b"api", b"static"]
    assert [m.target for m in compiled.index[b"api"]] == [0, 1, 2, 4]     # targets are positions
    assert [m.target for m in compiled.unindexed] == [1, 4]
    assert both(specs, request(target="/api")) == 2
    assert both(specs, request(target="/nothing")) == 4


@pytest.mark.parametrize("host, expected", [
    ("example.com", 0), ("EXAMPLE.com:8080", 0), ("a.example.com", 1), ("example.org", 2),
    ("[::1]:80", 2), (None, 2),
])
def test_hosts(host, expected):
    specs = [("prefix", "/a/", ["example.com"]), ("prefix", "/a/", ["*.example.com"]),
             ("any", None)]
    assert both(specs, request(target="/a/b", host=host)) == expected


def test_methods_and_headers():
    specs = [("any", None, (), ["post"]),
             ("any", None, (), (), [(b"x-canary", "exact", b"1")]),
             ("any", None, (), (), [(b"x-user", "regex", re.compile("^adm"))]),
             ("any", None, (), (), [(b"x-debug", "present", None)]),
             ("any", None, (), (), [(b"x-anon", "absent", None)])]
    assert both(specs, request("POST")) == 0
    assert both(specs, request(headers=(("X-Canary", "1"),))) == 1
    assert both(specs, request(headers=(("X-User", "admin"),))) == 2
    assert both(specs, request(headers=(("X-Debug", ""), ("X-Anon", "1")))) == 3
    assert both(specs, request()) == 4
    assert both(specs, request(headers=(("X-Anon", "1"),))) is None


# -- random route sets and requests -------------------------------------------------

SEGMENTS = ["api", "v1", "users", "static", "a", "ab", "x.y", ""]
segment = st.sampled_from(SEGMENTS)
path = st.lists(segment, min_size=1, max_size=3).map(lambda segs: "/" + "/".join(segs))
REGEXES = [r"/api/\d+", r"/a", r"/(users|static)/", r".*/v1", r"/api$", r"/x\.y"]

path_condition = st.one_of(
    st.just(("any", None)),
    st.tuples(st.just("prefix"), path),
    st.tuples(st.just("prefix"), path.map(lambda p: p + "/")),
    st.tuples(st.just("prefix"), path.map(lambda p: p[:-1] if len(p) > 2 else p)),   # mid-segment
    st.tuples(st.just("exact"), path),
    st.tuples(st.just("segment_prefix"), path),
    st.tuples(st.just("segment_prefix"), path.map(lambda p: p + "/")),
    st.tuples(st.just("regex"), st.sampled_from(REGEXES).map(re.compile)),
)
hosts = st.lists(st.sampled_from(["example.com", "*.example.com", "API.Example.com", "other.org"]),
                 max_size=2, unique=True)
methods = st.lists(st.sampled_from(["GET", "POST", "delete"]), max_size=2, unique=True)
HEADER_CONDITIONS = [(b"x-a", "exact", b"1"), (b"x-a", "present", None), (b"x-b", "absent", None),
                     (b"x-b", "regex", re.compile("^v[0-9]"))]
headers = st.lists(st.sampled_from(HEADER_CONDITIONS), max_size=2)
QUERY_CONDITIONS = [(b"v", "exact", b"2"), (b"v", "exact", b""), (b"q", "regex", re.compile("^[0-9]+$")),
                    (b"a b", "exact", b"c")]
queries = st.lists(st.sampled_from(QUERY_CONDITIONS), max_size=2)
route = st.tuples(path_condition, hosts, methods, headers, queries).map(
    lambda t: (t[0][0], t[0][1], t[1], t[2], t[3], t[4]))

request_heads = st.builds(
    request,
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
    target=st.tuples(path, st.sampled_from(["", "/", "?q=1", "/x?y", "?v=2", "?v=1&v=2", "?v=%32&q=12",
                                            "?v=", "?a+b=c", "?a%20b=c&v=2", "?q=1x"])).map("".join),
    host=st.sampled_from([None, "example.com", "Example.COM:8080", "a.example.com", "api.example.com",
                          "other.org", "[::1]:8080", "example.com.evil"]),
    headers=st.lists(st.sampled_from([("X-A", "1"), ("X-A", "2"), ("X-B", "v1"), ("X-B", "x")]),
                     max_size=3).map(tuple),
)


@settings(max_examples=400, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(route, max_size=12), st.lists(request_heads, min_size=1, max_size=8))
def test_compiled_agrees_with_reference(specs, heads):
    compiled, reference = routers(specs)
    for head in heads:
        assert compiled.match(head) == reference.match(head), (specs, head.method, head.target,
                                                               head.host)
