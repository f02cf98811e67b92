"""Micro-benchmarks of route matching: the indexed compiled Router vs a plain first-match loop.

    python -m pytest bench/test_micro_router.py --benchmark-only -p no:cacheprovider

The request matches the *last* route (the worst case of first-match):

* ``prefix``: routes ``/svc-<i>/`` with distinct first segments.  The compiled
  Router indexes them by first segment, so it tries one route whatever n is;
  the reference loop (``tests/reference/router.py``) tries all n.
* ``segment_query``: Gateway API routes, a segment-wise ``/svc-<i>`` prefix and a query
  match ``v=2`` each (what HTTPRoutes give): indexed like ``prefix``, plus one query scan
  of the matched route; compare with ``prefix`` for what the Gateway API matching costs.
* ``regex``: routes ``^/svc-<i>/[a-z]+$``.  A regex cannot be indexed: both try
  every route in order, one ``re.match`` each, so both grow linearly with n and
  the compiled Router only saves the loop overhead around the regex calls.
  Large route sets should use prefix or exact paths; a few regex routes are
  cheap (each one is tried by every request).
"""
from __future__ import annotations

import re

import pytest

from _speedups.http import find_head_end, parse_request
from _speedups.router import RouteMatcher, Router
from tests.reference.router import ReferenceRoute, ReferenceRouter


def head_for(path: str):
    data = f"GET {path} HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n".encode()
    return parse_request(data, find_head_end(data, 0))


def route_args(n: int, kind: str):
    if kind == "prefix":
        return [(i, "prefix", f"/svc-{i}/") for i in range(n)]
    if kind == "segment_query":
        return [(i, "segment_prefix", f"/svc-{i}", (), (), (), [(b"v", "exact", b"2")]) for i in range(n)]
    return [(i, "regex", re.compile(f"^/svc-{i}/[a-z]+$")) for i in range(n)]


def build(impl: str, n: int, kind: str):
    args = route_args(n, kind)
    if impl == "compiled":
        return Router([RouteMatcher(*a) for a in args])
    return ReferenceRouter([ReferenceRoute(*a) for a in args])


@pytest.mark.parametrize("impl", ["compiled", "reference"])
@pytest.mark.parametrize("kind", ["prefix", "segment_query", "regex"])
@pytest.mark.parametrize("n", [10, 1000])
def test_match_last_route(benchmark, impl, kind, n):
    benchmark.group = f"route n={n} {kind}, last route matches"
    router = build(impl, n, kind)
    head = head_for(f"/svc-{n - 1}/items" + ("?a=1&v=2" if kind == "segment_query" else ""))
    assert benchmark(router.match, head) == n - 1


@pytest.mark.parametrize("impl", ["compiled", "reference"])
@pytest.mark.parametrize("n", [10, 1000])
def test_no_route_matches(benchmark, impl, n):
    benchmark.group = f"route n={n} prefix, no route matches (404)"
    router = build(impl, n, "prefix")
    assert benchmark(router.match, head_for("/nowhere/items")) is None
