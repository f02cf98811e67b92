"""Path confusion through a real gateway: the route is chosen from the normalized path, and the
backend (the devcluster backend, which echoes the path it received) gets that same path.

Routes: ``/public/`` -> svc-a (zone-a), ``/test`` -> svc-b (zone-b), ``/api/v1/`` rewritten to
``/v2/`` -> svc-a, and ``/`` -> svc-a last.  Each request carries its own X-Request-Id, so the
route that matched, the original and the normalized path are read from its access-log line.
``PATH_CASES`` also feeds the table in ``docs/security.md`` (``test_security_smuggling.py``).
"""
from __future__ import annotations

import itertools
import os
import signal
import time

import pytest
import yaml

from support import GatewayProcess, static_source


def config(backend_a, backend_b, path_settings: dict | None = None) -> dict:
    cfg = {
        "sources": [static_source("zone-a", {"svc-a": [backend_a.address]}),
                    static_source("zone-b", {"svc-b": [backend_b.address]})],
        "services": [{"name": "svc-a", "port": 80}, {"name": "svc-b", "port": 80}],
        "routes": [
            {"name": "public", "match": {"path": {"prefix": "/public/"}}, "service": "svc-a"},
            {"name": "test", "match": {"path": {"prefix": "/test"}}, "service": "svc-b"},
            {"name": "api", "match": {"path": {"prefix": "/api/v1/"}}, "service": "svc-a",
             "rewrite": {"prefix": "/v2/"}},
            {"name": "other", "match": {"path": {"prefix": "/"}}, "service": "svc-a"},
        ],
    }
    if path_settings is not None:
        cfg["http"] = {"path": path_settings}
    return cfg


def start(backend_a, backend_b, tmp_path_factory, name, path_settings=None):
    return GatewayProcess(config(backend_a, backend_b, path_settings), tmp_path_factory.mktemp(name)).start()


@pytest.fixture(scope="module")
def gw(backend_a, backend_b, tmp_path_factory):
    proc = start(backend_a, backend_b, tmp_path_factory, "path-default")
    yield proc
    proc.stop()


_ids = itertools.count()


def through(gw, target: str, method: str = "GET"):
    """(response, access-log entry, what the backend received or None) for one request."""
    rid = f"path-{next(_ids)}"
    with gw.client() as client:
        resp = client.request(method, target, [("X-Request-Id", rid)])
    entry = gw.log.by_ids([rid])[rid]
    seen = None
    if resp.status == 200:
        body = resp.json()
        seen = body["path"] + ("?" + body["query"] if body["query"] else "")
    return resp, entry, seen


# (target, status, route, what the backend receives, why): the default settings
# (normalize, merge_slashes, escaped_slashes: reject, forward: normalized).
PATH_CASES = [
    ("/public/../test/x", 200, "test", "/test/x", "dot segments removed (RFC 3986 5.2.4)"),
    ("/public/%2e%2e/test", 200, "test", "/test", "%2e is an unreserved '.': decoded, then removed"),
    ("/public/%2E%2E/test", 200, "test", "/test", "hex digits in either case"),
    ("/public/.%2e/test", 200, "test", "/test", "half-encoded '..'"),
    ("/public/./x", 200, "public", "/public/x", "'.' removed"),
    ("/public//x", 200, "public", "/public/x", "merge_slashes"),
    ("//public///x", 200, "public", "/public/x", "merge_slashes, at the start too"),
    ("/public/a//../../test", 200, "test", "/test", "slashes merged before '..' is applied"),
    ("/..", 200, "other", "/", "'..' at the root stays at the root"),
    ("/../test/x", 200, "test", "/test/x", "climbing above the root: /x, as RFC 3986 5.2.4 says"),
    ("/%2e%2e/test", 200, "test", "/test", "encoded '..' at the root"),
    ("/public/..%2ftest", 400, None, None, "escaped slash: rejected (escaped_slashes: reject)"),
    ("/public/..%2Ftest", 400, None, None, "escaped slash, upper case"),
    ("/public/..%5ctest", 400, None, None, "escaped backslash"),
    ("/public/..\\test", 400, None, None, "raw backslash (a separator to some servers)"),
    ("/public/%252e%252e/test", 200, "public", "/public/%252e%252e/test",
     "double encoding: %25 is not unreserved, decoded never, so not twice"),
    ("/public/%c0%ae%c0%ae/test", 200, "public", "/public/%C0%AE%C0%AE/test",
     "overlong UTF-8 '.': not unreserved, left encoded (hex upper-cased, RFC 3986 6.2.2.1)"),
    ("/public/%00", 400, None, None, "encoded NUL"),
    ("/public/%zz", 400, None, None, "'%' without two hex digits"),
    ("/public/x%2", 400, None, None, "truncated escape"),
    ("/public/%41%7e%2d", 200, "public", "/public/A~-", "unreserved escapes decoded (RFC 3986 2.3)"),
    ("/test/a?q=%2e%2e/x&b=..//", 200, "test", "/test/a?q=%2e%2e/x&b=..//", "the query is untouched"),
    ("/test/%2e/a?q=%2e", 200, "test", "/test/a?q=%2e", "path normalized, query untouched"),
    ("/api/v1/../v1/users", 200, "api", "/v2/users", "rewrite applies to the normalized path"),
    ("/api/v1/%2e/users", 200, "api", "/v2/users", "rewrite after an encoded '.'"),
    ("/public/.well-known/x", 200, "public", "/public/.well-known/x", "a segment starting with '.' is kept"),
]


@pytest.mark.parametrize("target, status, route, upstream, why", PATH_CASES,
                         ids=[c[0] for c in PATH_CASES])
def test_default_normalization(gw, target, status, route, upstream, why):
    resp, entry, seen = through(gw, target)
    assert resp.status == status, (resp.status, resp.body)
    assert entry["route"] == route
    assert entry["path"] == target                  # the access log keeps what the client sent
    if status == 200:
        assert seen == upstream
        expected_route_backend = "zone-b" if route == "test" else "zone-a"
        assert resp.json()["cluster"] == expected_route_backend
        if upstream != target and route != "api":
            assert entry["normalized_path"] == upstream
        elif route != "api":
            assert "normalized_path" not in entry
    else:
        assert entry["upstream_host"] is None, "a refused path reached an upstream"
        assert entry["error"] and resp.header("server") == "gateway"


def test_refused_path_keeps_the_connection(gw):
    """The framing of a request with a refused path is known: the connection stays usable."""
    with gw.client() as client:
        assert client.request("GET", "/public/%00").status == 400
        resp = client.request("GET", "/public/ok")
        assert resp.status == 200 and resp.json()["path"] == "/public/ok"


def test_refused_path_answer_to_head_has_no_body(gw):
    """An answer to HEAD carries Content-Length but no body, or the next response is misread."""
    with gw.client() as client:
        resp = client.request("HEAD", "/public/%2f")
        assert resp.status == 400 and resp.body == b"" and int(resp.header("content-length")) > 0
        resp = client.request("HEAD", "/nowhere/%2e%2e/public/x")
        assert resp.status == 200
        resp = client.request("GET", "/public/next")
        assert resp.status == 200 and resp.json()["path"] == "/public/next"


def test_refused_path_with_a_body_closes(gw):
    with gw.client() as client:
        client.send(b"POST /public/%2f HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\n")
        resp = client.read_response("POST")
        assert resp.status == 400 and resp.closes


@pytest.fixture(scope="module")
def gw_keep(backend_a, backend_b, tmp_path_factory):
    proc = start(backend_a, backend_b, tmp_path_factory, "path-keep",
                 {"escaped_slashes": "keep", "merge_slashes": False, "forward": "original"})
    yield proc
    proc.stop()


@pytest.mark.parametrize("target, route, upstream", [
    # kept: a byte of its segment, never a separator, so "..%2Ftest" is no dot segment
    ("/public/..%2ftest", "public", "/public/..%2ftest"),
    ("/public/a\\b", "public", "/public/a\\b"),
    # matched on the normalized path, the client's bytes forwarded
    ("/public/%2e%2e/test", "test", "/public/%2e%2e/test"),
    ("/public//x", "public", "/public//x"),         # merge_slashes off
    # a rewrite needs the prefix it matched: it is applied to the normalized path
    ("/api/v1/%2e/x?q=1", "api", "/v2/x?q=1"),
])
def test_keep_escaped_slashes_and_forward_original(gw_keep, target, route, upstream):
    resp, entry, seen = through(gw_keep, target)
    assert resp.status == 200, resp.body
    assert (entry["route"], seen, entry["path"]) == (route, upstream, target)


def test_keep_still_refuses_nul_and_bad_escapes(gw_keep):
    assert through(gw_keep, "/public/%00")[0].status == 400
    assert through(gw_keep, "/public/%g0")[0].status == 400


@pytest.fixture(scope="module")
def gw_redirect(backend_a, backend_b, tmp_path_factory):
    proc = start(backend_a, backend_b, tmp_path_factory, "path-redirect",
                 {"escaped_slashes": "unescape_and_redirect"})
    yield proc
    proc.stop()


@pytest.mark.parametrize("target, location", [
    ("/public/..%2ftest?x=%2f", "/test?x=%2f"),
    ("/public/a%2Fb", "/public/a/b"),
    ("/public/a%5cb", "/public/a/b"),
    ("/public/a\\b", "/public/a/b"),
])
def test_unescape_and_redirect(gw_redirect, target, location):
    resp, entry, _ = through(gw_redirect, target)
    assert resp.status == 307 and resp.header("location") == location
    assert entry["upstream_host"] is None and entry["normalized_path"] == location
    # Following the redirect lands on the route of the path the client is sent to.
    resp, entry, seen = through(gw_redirect, location)
    assert resp.status == 200 and seen == location
    assert entry["route"] == ("test" if location.startswith("/test") else "public")


@pytest.fixture(scope="module")
def gw_off(backend_a, backend_b, tmp_path_factory):
    proc = start(backend_a, backend_b, tmp_path_factory, "path-off",
                 {"normalize": False, "merge_slashes": False, "escaped_slashes": "keep"})
    yield proc
    proc.stop()


def test_normalization_off_is_the_old_behaviour(gw_off):
    """Turned off, the path is matched and forwarded as received: this is the bypass."""
    for target in ("/public/../test/x", "/public/%2e%2e/test", "/public/..%2ftest", "/public//x"):
        resp, entry, seen = through(gw_off, target)
        assert (resp.status, entry["route"], seen) == (200, "public", target)
        assert "normalized_path" not in entry


def test_settings_reach_every_worker_and_follow_a_reload(backend_a, backend_b, tmp_path):
    """With two worker processes, http.path comes from the config each worker gets, and a
    SIGHUP with other settings changes the answer in every one of them."""
    cfg = config(backend_a, backend_b, {"escaped_slashes": "keep"})
    cfg["workers"] = 2
    g = GatewayProcess(cfg, tmp_path).start()
    try:
        def answers(n: int = 12) -> set[int]:
            # Fresh connections, so that SO_REUSEPORT spreads them over both workers.
            return {through(g, "/public/..%2ftest")[0].status for _ in range(n)}

        assert answers() == {200}
        g.config["http"] = {"path": {"escaped_slashes": "reject"}}
        g.config_path.write_text(yaml.safe_dump(g.config, sort_keys=False))
        os.kill(g.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while answers(4) != {400}:
            assert time.monotonic() < deadline, "the reload did not change the path policy"
            time.sleep(0.1)
        assert answers(20) == {400}
    finally:
        g.stop()
