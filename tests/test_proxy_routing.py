"""Route matching (path exact/prefix/regex, host, method, headers), first-declared wins,
weighted backends between two services, prefix rewrite.  The matched route is read from the
access log by request id."""
from __future__ import annotations

import itertools
from collections import Counter

import pytest

from support import GatewayProcess, static_source


def route(name, match, service="svc-a", **extra):
    return {"name": name, "match": match, "service": service, **extra}


@pytest.fixture(scope="module")
def gw(backend_a, backend_b, tmp_path_factory):
    config = {
        "sources": [static_source("zone-a", {"svc-a": [backend_a.address]}),
                    static_source("zone-b", {"svc-b": [backend_b.address]})],
        "services": [{"name": "svc-a", "port": 80}, {"name": "svc-b", "port": 80}],
        "routes": [
            route("exact", {"path": {"exact": "/exact"}}),
            route("regex", {"path": {"regex": "^/items/[0-9]+$"}}),
            route("items-prefix", {"path": {"prefix": "/items"}}),
            route("wildcard-host", {"path": {"prefix": "/host"}, "host": "*.example.com"}),
            route("exact-host", {"path": {"prefix": "/host"}, "host": ["example.com", "other.test"]}),
            route("method-post", {"path": {"prefix": "/method"}, "method": ["POST", "PUT"]}),
            route("method-any", {"path": {"prefix": "/method"}}),
            route("hdr-exact", {"path": {"prefix": "/hdr"}, "headers": [{"name": "X-Env", "exact": "prod"}]}),
            route("hdr-present", {"path": {"prefix": "/hdr"}, "headers": [{"name": "x-debug", "present": True}]}),
            route("hdr-regex", {"path": {"prefix": "/hdr"}, "headers": [{"name": "x-v", "regex": "^v[12]$"}]}),
            route("hdr-none", {"path": {"prefix": "/hdr"}}),
            route("first-a", {"path": {"prefix": "/first"}}, "svc-a"),
            route("first-b", {"path": {"prefix": "/first"}}, "svc-b"),
            {"name": "split", "match": {"path": {"prefix": "/split"}},
             "backends": [{"service": "svc-a", "weight": 1}, {"service": "svc-b", "weight": 3}]},
            route("rewrite", {"path": {"prefix": "/test"}}, "svc-b", rewrite={"prefix": "/"}),
            route("rewrite-sub", {"path": {"prefix": "/api/v1/"}}, "svc-b", rewrite={"prefix": "/v2/"}),
        ],
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("routing")).start()
    yield proc
    proc.stop()


_ids = itertools.count()


def routed(gw, method, path, headers=(), host="gw.test"):
    """(status, route name from the access log, backend JSON or None) for one request."""
    rid = f"rt-{next(_ids)}"
    with gw.client() as client:
        resp = client.request(method, path, [("X-Request-Id", rid), *headers], host=host,
                              body=b"x" if method in ("POST", "PUT") else None)
    entry = gw.log.by_ids([rid])[rid]
    body = resp.json() if resp.status == 200 else None
    return resp.status, entry["route"], body


@pytest.mark.parametrize("path,expected", [
    ("/exact", "exact"),
    ("/exact?q=1", "exact"),            # the query is not part of the path
    ("/exact/more", None),
    ("/exactly", None),
    ("/items/42", "regex"),
    ("/items/42?x=y", "regex"),
    ("/items/abc", "items-prefix"),
    ("/items", "items-prefix"),
    ("/nothing", None),
])
def test_path_exact_regex_prefix(gw, path, expected):
    status, name, _ = routed(gw, "GET", path)
    assert name == expected
    assert status == (404 if expected is None else 200)


@pytest.mark.parametrize("host,expected", [
    ("a.example.com", "wildcard-host"),
    ("b.a.example.com", "wildcard-host"),
    ("A.Example.COM:8080", "wildcard-host"),
    ("example.com", "exact-host"),
    ("example.com:80", "exact-host"),
    ("other.test", "exact-host"),
    ("notexample.com", None),
    ("example.com.evil", None),
])
def test_host_exact_and_wildcard(gw, host, expected):
    status, name, _ = routed(gw, "GET", "/host/x", host=host)
    assert name == expected
    assert status == (404 if expected is None else 200)


@pytest.mark.parametrize("method,expected", [("POST", "method-post"), ("PUT", "method-post"),
                                             ("GET", "method-any"), ("DELETE", "method-any")])
def test_method_match(gw, method, expected):
    status, name, body = routed(gw, method, "/method/x")
    assert (status, name) == (200, expected)
    assert body["method"] == method


@pytest.mark.parametrize("headers,expected", [
    ([("X-Env", "prod")], "hdr-exact"),
    ([("x-env", "prod")], "hdr-exact"),         # names are case-insensitive
    ([("X-Env", "Prod")], "hdr-none"),          # values are not
    ([("X-Env", "dev")], "hdr-none"),
    ([("X-Debug", "")], "hdr-present"),
    ([("X-Debug", "1"), ("X-Env", "prod")], "hdr-exact"),   # first declared wins
    ([("X-V", "v2")], "hdr-regex"),
    ([("X-V", "v3")], "hdr-none"),
    ([], "hdr-none"),
])
def test_header_match(gw, headers, expected):
    status, name, _ = routed(gw, "GET", "/hdr/x", headers)
    assert (status, name) == (200, expected)


def test_first_declared_route_wins(gw, backend_a):
    for _ in range(5):
        status, name, body = routed(gw, "GET", "/first/x")
        assert (status, name) == (200, "first-a")
        assert body["address"] == backend_a.address


def test_weighted_backends_split_1_to_3(gw, backend_a, backend_b):
    ids = [f"split-{i}" for i in range(400)]
    with gw.client() as client:
        for rid in ids:
            assert client.request("GET", f"/split/{rid}", [("X-Request-Id", rid)]).status == 200
    entries = gw.log.by_ids(ids).values()
    assert Counter(e["upstream_service"] for e in entries) == {"default/svc-a": 100, "default/svc-b": 300}
    assert Counter(e["upstream_host"] for e in entries) == {backend_a.address: 100, backend_b.address: 300}
    assert {e["route"] for e in entries} == {"split"}


@pytest.mark.parametrize("path,upstream_path,query", [
    ("/test/x", "/x", ""),
    ("/test/a/b?q=1", "/a/b", "q=1"),
    ("/test", "/", ""),
    ("/test/", "/", ""),
    ("/test?q=2", "/", "q=2"),
    ("/api/v1/users", "/v2/users", ""),
])
def test_prefix_rewrite(gw, path, upstream_path, query):
    status, name, body = routed(gw, "GET", path)
    assert status == 200 and name.startswith("rewrite")
    assert body["path"] == upstream_path
    assert body["query"] == query
