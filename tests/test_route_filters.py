"""Route features from the Gateway API in the file config, over a real gateway process:
segment-wise prefix, query and method matches, precedence order, header modifiers,
redirects, URL rewrites, mirrors. Each test names the HTTPRoute behaviour it checks."""
from __future__ import annotations

import itertools
import time

import pytest

from support import GatewayProcess, start_backend, static_source


def route(name, match, service="svc-a", **extra):
    return {"name": name, "match": match, "service": service, **extra}


@pytest.fixture(scope="module")
def mirror_backend():
    backend = start_backend("127.0.86.4", "zone-m", "mirror-0")
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def gw(backend_a, backend_b, mirror_backend, tmp_path_factory):
    config = {
        "route_order": "precedence",
        "sources": [static_source("zone-a", {"svc-a": [backend_a.address]}),
                    static_source("zone-b", {"svc-b": [backend_b.address]}),
                    static_source("zone-m", {"svc-m": [mirror_backend.address]})],
        "services": [{"name": "svc-a", "port": 80}, {"name": "svc-b", "port": 80}, {"name": "svc-m", "port": 80}],
        "routes": [
            # Declared before the more specific ones on purpose: precedence, not file order.
            route("catch-all", {}),
            route("seg", {"path": {"segment_prefix": "/foo/"}}),
            route("seg-long", {"path": {"segment_prefix": "/foo/bar"}}, "svc-b"),
            route("seg-exact", {"path": {"exact": "/foo/bar/exact"}}),
            route("q-plain", {"path": {"segment_prefix": "/q"}}),
            route("q-exact", {"path": {"segment_prefix": "/q"}, "query": [{"name": "v", "exact": "2"}]}, "svc-b"),
            route("q-regex", {"path": {"segment_prefix": "/q"},
                              "query": [{"name": "tag", "regex": "^a+$"}, {"name": "v", "exact": "2"}]}),
            route("m-any", {"path": {"segment_prefix": "/m"}}),
            route("m-delete", {"path": {"segment_prefix": "/m"}, "method": "DELETE"}, "svc-b"),
            route("h-one", {"path": {"segment_prefix": "/h"}, "headers": [{"name": "a", "exact": "1"}]}),
            route("h-two", {"path": {"segment_prefix": "/h"},
                            "headers": [{"name": "a", "exact": "1"}, {"name": "b", "exact": "2"}]}, "svc-b"),
            route("host-wild", {"path": {"segment_prefix": "/vh/x"}, "host": "*.example.com"}),
            route("host-exact", {"path": {"segment_prefix": "/vh"}, "host": "a.example.com"}, "svc-b"),
            route("req-hdr", {"path": {"segment_prefix": "/reqhdr"}},
                  request_headers={"set": [{"name": "X-Set", "value": "set"}],
                                   "add": [{"name": "X-Add", "value": "added"}],
                                   "remove": ["X-Drop"]}),
            route("resp-hdr", {"path": {"segment_prefix": "/resphdr"}},
                  response_headers={"set": {"X-Gw": "yes", "Content-Type": "text/x-set"},
                                    "add": {"X-More": "1"}, "remove": ["X-Request-Id"]}),
            {"name": "redir-https", "match": {"path": {"segment_prefix": "/old"}},
             "redirect": {"scheme": "https", "status": 301}},
            {"name": "redir-full", "match": {"path": {"segment_prefix": "/moved"}},
             "redirect": {"host": "new.example", "port": 8443, "path": {"full": "/new"}, "status": 308}},
            {"name": "redir-prefix", "match": {"path": {"segment_prefix": "/pre"}},
             "redirect": {"path": {"prefix": "/post"}, "status": 303}},
            {"name": "redir-port", "match": {"path": {"segment_prefix": "/keepport"}}, "redirect": {}},
            route("rw-full", {"path": {"segment_prefix": "/rwfull"}}, rewrite={"full_path": "/replaced",
                                                                               "host": "upstream.internal"}),
            route("rw-prefix", {"path": {"segment_prefix": "/rwpre"}}, rewrite={"prefix": "/"}),
            route("mirrored", {"path": {"segment_prefix": "/mirror"}}, mirrors=["svc-m"]),
            route("mirror-share", {"path": {"segment_prefix": "/quarter"}},
                  mirrors=[{"service": "svc-m", "percent": 25}]),
            {"name": "per-backend", "match": {"path": {"segment_prefix": "/perbackend"}},
             "request_headers": {"set": [{"name": "X-Route", "value": "r"}]},
             "backends": [{"service": "svc-a", "weight": 1,
                           "request_headers": {"set": [{"name": "X-Backend", "value": "a"}]},
                           "response_headers": {"set": [{"name": "X-Answered-By", "value": "a"}]}},
                          {"service": "svc-b", "weight": 1,
                           "request_headers": {"set": [{"name": "X-Backend", "value": "b"}],
                                               "remove": ["X-Route"]}}]},
        ],
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("filters")).start()
    yield proc
    proc.stop()


_ids = itertools.count()


def call(gw, method, path, headers=(), host="gw.test"):
    rid = f"f-{next(_ids)}"
    with gw.client() as client:
        resp = client.request(method, path, [("X-Request-Id", rid), *headers], host=host)
    entry = gw.log.by_ids([rid])[rid]
    return resp, entry["route"]


@pytest.mark.parametrize("path,expected", [
    ("/foo", "seg"), ("/foo/", "seg"), ("/foo/x", "seg"),
    ("/foobar", "catch-all"),                   # PathPrefix is segment-wise
    ("/foo/bar", "seg-long"), ("/foo/bar/", "seg-long"), ("/foo/bar/baz", "seg-long"),
    ("/foo/barbaz", "seg"),                     # longest prefix, whole segments
    ("/foo/bar/exact", "seg-exact"),            # Exact before any prefix
    ("/foo/bar/exact/x", "seg-long"),
])
def test_path_prefix_is_segment_wise_and_longest_wins(gw, path, expected):
    assert call(gw, "GET", path)[1] == expected


@pytest.mark.parametrize("path,expected", [
    ("/q", "q-plain"), ("/q?v=1", "q-plain"), ("/q?v=2", "q-exact"), ("/q?x=1&v=2", "q-exact"),
    ("/q?v=2&tag=aaa", "q-regex"),              # more query matches win
    ("/q?v=2&tag=b", "q-exact"),
    ("/q?v=%32", "q-exact"),                     # values are compared decoded
    ("/q?v=2&v=1", "q-exact"), ("/q?v=1&v=2", "q-plain"),    # the first of repeated names decides
])
def test_query_param_matches_and_their_precedence(gw, path, expected):
    assert call(gw, "GET", path)[1] == expected


def test_method_match_wins_over_none(gw):
    assert call(gw, "DELETE", "/m/x")[1] == "m-delete"
    assert call(gw, "GET", "/m/x")[1] == "m-any"


def test_more_header_matches_win(gw):
    assert call(gw, "GET", "/h", [("a", "1"), ("b", "2")])[1] == "h-two"
    assert call(gw, "GET", "/h", [("a", "1")])[1] == "h-one"


def test_exact_hostname_beats_wildcard_and_longer_path(gw):
    assert call(gw, "GET", "/vh/x/y", host="a.example.com")[1] == "host-exact"
    assert call(gw, "GET", "/vh/x/y", host="b.example.com")[1] == "host-wild"


def test_request_header_modifier_set_add_remove(gw):
    resp, name = call(gw, "GET", "/reqhdr", [("X-Set", "client"), ("X-Add", "client"), ("X-Drop", "gone")])
    assert name == "req-hdr"
    headers = {k.lower(): v for k, v in resp.json()["headers"].items()}
    assert headers["x-set"] == "set"                    # replaced
    assert headers["x-add"] == "client, added"          # appended
    assert "x-drop" not in headers


def test_a_backends_header_modifiers_apply_to_the_requests_it_gets(gw, backend_a, backend_b):
    """HTTPRoute backendRef filters (RequestHeaderModifier, ResponseHeaderModifier): after the
    route's, for the backend the weights picked."""
    seen = set()
    for _ in range(40):
        resp, name = call(gw, "GET", "/perbackend")
        body = resp.json()
        headers = {k.lower(): v for k, v in body["headers"].items()}
        if body["address"] == backend_a.address:
            assert (headers.get("x-backend"), headers.get("x-route"), resp.header("X-Answered-By")) == ("a", "r", "a")
        else:
            assert body["address"] == backend_b.address
            assert (headers.get("x-backend"), headers.get("x-route"), resp.header("X-Answered-By")) == ("b", None, None)
        seen.add(body["address"])
    assert seen == {backend_a.address, backend_b.address}


def test_response_header_modifier_set_add_remove(gw):
    resp, _ = call(gw, "GET", "/resphdr")
    assert resp.status == 200
    assert resp.header("X-Gw") == "yes"
    assert resp.header_all("Content-Type") == ["text/x-set"]
    assert resp.header("X-More") == "1"
    assert resp.header("X-Request-Id") is None


@pytest.mark.parametrize("path,host,status,location", [
    ("/old/a?x=1", "gw.test:8080", 301, "https://gw.test/old/a?x=1"),     # scheme: its well-known port
    ("/moved/a", "gw.test", 308, "http://new.example:8443/new"),
    ("/pre/a/b", "gw.test", 303, "http://gw.test/post/a/b"),              # ReplacePrefixMatch
    ("/pre", "gw.test", 303, "http://gw.test/post"),
    ("/keepport/x", "gw.test:8080", 302, "http://gw.test:8080/keepport/x"),   # defaults: 302, same port
])
def test_request_redirect(gw, path, host, status, location):
    resp, _ = call(gw, "GET", path, host=host)
    assert resp.status == status
    assert resp.header("Location") == location


@pytest.mark.parametrize("path,upstream", [("/rwpre/a/b?q=1", "/a/b"), ("/rwpre", "/"), ("/rwpre/", "/")])
def test_url_rewrite_replace_prefix_match(gw, path, upstream):
    resp, _ = call(gw, "GET", path)
    assert resp.json()["path"] == upstream


def test_url_rewrite_full_path_and_hostname(gw):
    resp, _ = call(gw, "GET", "/rwfull/deep/path?k=v", host="client.example")
    body = resp.json()
    assert (body["path"], body["query"]) == ("/replaced", "k=v")
    headers = {k.lower(): v for k, v in body["headers"].items()}
    assert headers["host"] == "upstream.internal"
    assert headers["x-forwarded-host"] == "client.example"


def test_request_mirror_gets_a_copy_and_the_main_request_is_unaffected(gw, backend_a, mirror_backend):
    before = mirror_backend.stats()["paths"].get("/mirror", 0)
    for _ in range(5):
        resp, _ = call(gw, "GET", "/mirror/x")
        assert resp.status == 200 and resp.json()["address"] == backend_a.address
    deadline = time.monotonic() + 5
    while mirror_backend.stats()["paths"].get("/mirror", 0) < before + 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mirror_backend.stats()["paths"].get("/mirror", 0) == before + 5


def test_request_mirror_percent_copies_that_share(gw, backend_a, mirror_backend):
    """RequestMirror percent: 25 of 400 requests' copies -> 100, within 10%."""
    def mirrored() -> int:
        return mirror_backend.stats()["paths"].get("/quarter", 0)
    before = mirrored()
    with gw.client() as client:
        for i in range(400):
            assert client.request("GET", f"/quarter/{i}").status == 200
    deadline = time.monotonic() + 5
    while mirrored() - before < 90 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)                     # copies still in flight would count too
    assert 90 <= mirrored() - before <= 110, mirrored() - before


def test_a_dead_mirror_never_fails_or_delays_the_main_request(backend_a, tmp_path):
    config = {"sources": [static_source("zone-a", {"svc-a": [backend_a.address]}),
                          static_source("zone-m", {"svc-m": ["127.0.86.5:9"]})],   # nothing listens
              "services": [{"name": "svc-a", "port": 80}, {"name": "svc-m", "port": 80}],
              "routes": [route("mirrored", {}, mirrors=["svc-m"])]}
    proc = GatewayProcess(config, tmp_path).start()
    try:
        with proc.client() as client:
            started = time.monotonic()
            for _ in range(20):
                assert client.request("GET", "/x").status == 200
            assert time.monotonic() - started < 2.0
    finally:
        proc.stop()
