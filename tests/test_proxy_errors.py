"""Errors the gateway answers itself (404/502/503/504) and the failures it hides by retrying.

* Refused endpoint: 127.0.0.4:<free port>, where nothing listens.
* "Closer": a tiny upstream on 127.0.0.5 that reads a request head and closes without answering.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest

from support import GatewayProcess, TinyServer, free_port, read_request_head, static_source

REFUSED = f"127.0.0.4:{free_port('127.0.0.4')}"


def _close_after_head(conn) -> None:
    read_request_head(conn)


@pytest.fixture(scope="module")
def closer():
    server = TinyServer("127.0.0.5", _close_after_head)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(backend_a, backend_b, closer, tmp_path_factory):
    a, b = backend_a.address, backend_b.address
    config = {
        "sources": [
            static_source("zone-a", {"httpbin": [a], "refused-only": [REFUSED],
                                     "failover-get": [REFUSED, a], "failover-post": [REFUSED, a],
                                     "failover-log": [REFUSED, a], "failover-ejecting": [REFUSED, a],
                                     "failover-big": [REFUSED, a],
                                     "closer-pair": [closer.address, b], "empty": []}),
            static_source("zone-x", {"elsewhere": [b]}),
        ],
        "services": [
            {"name": "httpbin", "port": 80, "sources": ["zone-a"]},
            {"name": "refused-only", "port": 80},
            # Passive ejection off: every other request keeps going to the refused endpoint.
            # round_robin: smooth WRR 1:1 sends every other request to the refused endpoint.
            {"name": "failover-get", "port": 80, "outlier_detection": "off", "lb": {"policy": "round_robin"}},
            {"name": "failover-post", "port": 80, "outlier_detection": "off", "lb": {"policy": "round_robin"}},
            {"name": "failover-log", "port": 80, "outlier_detection": "off"},
            {"name": "failover-ejecting", "port": 80},      # default outlier detection
            {"name": "failover-big", "port": 80, "outlier_detection": "off"},
            {"name": "closer-pair", "port": 80, "outlier_detection": "off"},
            {"name": "empty", "port": 80},
            {"name": "unlisted", "port": 80, "sources": ["zone-x"]},
        ],
        "routes": [
            {"name": "refused", "match": {"path": {"prefix": "/refused"}}, "service": "refused-only",
             "retries": {"attempts": 1}},
            {"name": "empty", "match": {"path": {"prefix": "/empty"}}, "service": "empty"},
            {"name": "unlisted", "match": {"path": {"prefix": "/unlisted"}}, "service": "unlisted"},
            {"name": "slow", "match": {"path": {"prefix": "/delay/"}}, "service": "httpbin",
             "timeout": "500ms"},
            *({"name": name, "match": {"path": {"prefix": f"/{name}/"}}, "service": name,
               "retries": {"attempts": 2}}
              for name in ("failover-get", "failover-post", "failover-log", "failover-ejecting")),
            {"name": "failover-big", "match": {"path": {"prefix": "/failover-big/"}},
             "service": "failover-big", "retries": {"attempts": 2}, "rewrite": {"prefix": "/"}},
            {"name": "closer", "match": {"path": {"prefix": "/closer"}}, "service": "closer-pair",
             "retries": {"attempts": 2}},
        ],
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("errors")).start()
    yield proc
    proc.stop()


def assert_error_response(resp, status: int, rid: str | None, *words: str) -> None:
    """A gateway-made error: the status, a short text body naming it, X-Request-Id."""
    assert resp.status == status, (resp.status, resp.body[:300])
    assert (resp.header("content-type") or "").startswith("text/plain"), resp.headers
    text = resp.body.decode()
    assert 0 < len(text) < 300, text
    for word in words:
        assert word.lower() in text.lower(), f"{word!r} not in error body {text!r}"
    request_id = resp.header("x-request-id")
    assert request_id, f"no X-Request-Id in {resp.headers}"
    if rid is not None:
        assert request_id == rid


def test_no_route_404(gw):
    # This config has no catch-all route: "/nothing" matches none.
    with gw.client() as client:
        resp = client.request("GET", "/nothing/here", {"X-Request-Id": "e-404"})
        assert_error_response(resp, 404, "e-404", "route")
        # no request id sent: one is generated, the same in the response and in the log
        resp2 = client.request("GET", "/nothing/again")
        assert_error_response(resp2, 404, None, "route")
    entry = gw.log.matching(lambda e: e.get("path") == "/nothing/again")[0]
    assert entry["status"] == 404
    assert entry["request_id"] == resp2.header("x-request-id")
    assert entry["error"]
    assert gw.log.by_ids(["e-404"])["e-404"]["status"] == 404


def test_refused_endpoint_attempts_1_is_503(gw):
    """Not reached (or reset before a response byte): 503, as Envoy answers and Gateway API's
    conformance expects; 502 is for an answer that cannot be used."""
    with gw.client() as client:
        resp = client.request("GET", "/refused/x", {"X-Request-Id": "e-503"})
        assert_error_response(resp, 503, "e-503", REFUSED.split(":")[0])
        again = client.request("GET", "/refused/y", {"X-Request-Id": "e-503b"})   # keep-alive after it
        assert again.status == 503
    entry = gw.log.by_ids(["e-503"])["e-503"]
    assert entry["status"] == 503
    assert entry["attempts"] == 1
    assert entry["upstream_host"] == REFUSED
    assert "error" in entry and entry["error"]


@pytest.mark.parametrize("path", ["/empty/x", "/unlisted/x"])
def test_service_without_endpoints_503(gw, path):
    rid = "e-503" + path.replace("/", "-")
    with gw.client() as client:
        resp = client.request("GET", path, {"X-Request-Id": rid})
    assert_error_response(resp, 503, rid, "endpoint")
    entry = gw.log.by_ids([rid])[rid]
    assert entry["status"] == 503
    assert entry["upstream_host"] is None
    assert entry["error"]


def test_route_timeout_504(gw):
    with gw.client() as client:
        t0 = time.monotonic()
        resp = client.request("GET", "/delay/3", {"X-Request-Id": "e-504"})
        elapsed = time.monotonic() - t0
        assert_error_response(resp, 504, "e-504", "time")
        assert 0.45 <= elapsed < 1.5, elapsed
    entry = gw.log.by_ids(["e-504"])["e-504"]
    assert entry["status"] == 504
    assert entry["error"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_refused_endpoint_is_retried_on_the_other_one(gw, backend_a, method):
    """Equal weights, ejection off: 100 of 200 requests try the refused endpoint first, and
    are retried (POST too: a refused connect means the request was never sent)."""
    ids = [f"fo-{method}-{i}" for i in range(200)]
    statuses = Counter()
    with gw.client() as client:
        for rid in ids:
            body = b"payload-%d" % len(rid) if method == "POST" else None
            resp = client.request(method, f"/failover-{method.lower()}/{rid}", {"X-Request-Id": rid},
                                  body=body)
            statuses[resp.status] += 1
            if resp.status == 200:
                assert resp.json()["address"] == backend_a.address
    assert statuses == {200: 200}, "client-visible errors with a refused endpoint and attempts 2"
    entries = gw.log.by_ids(ids)
    assert {e["upstream_host"] for e in entries.values()} == {backend_a.address}
    retried = [e for e in entries.values() if e["attempts"] == 2]
    assert len(retried) == 100, "smooth WRR 1:1 sends every other request to the refused endpoint"
    for e in entries.values():
        if e["attempts"] == 2:
            assert e.get("tried_hosts") and e["tried_hosts"][-1] == backend_a.address, e
        else:
            assert e["attempts"] == 1 and "tried_hosts" not in e, e


def test_large_post_to_refused_endpoint_is_retried_whole(gw, backend_a):
    """A refused connect means nothing was sent, whatever the body size: a 200 KiB POST (more
    than the gateway keeps for replays) still goes to the other endpoint, whole."""
    body = bytes(range(256)) * 800                      # 200 KiB
    ids = [f"fo-big-{i}" for i in range(6)]
    results = []
    with gw.client() as client:
        for rid in ids:
            resp = client.request("POST", "/failover-big/upload", {"X-Request-Id": rid}, body=body)
            results.append((resp.status, resp.json().get("received") if resp.status == 200 else resp.body))
            if resp.closes:
                break
    assert results == [(200, len(body))] * len(ids)
    entries = gw.log.by_ids(ids).values()
    assert sum(1 for e in entries if e["attempts"] == 2) == 3


def test_upstream_closing_without_answer_get_is_retried(gw, closer, backend_b):
    ids = [f"cl-get-{i}" for i in range(20)]
    before = closer.accepted
    with gw.client() as client:
        for rid in ids:
            resp = client.request("GET", f"/closer/{rid}", {"X-Request-Id": rid})
            assert resp.status == 200, resp.body[:300]
            assert resp.json()["address"] == backend_b.address
    entries = gw.log.by_ids(ids).values()
    retried = [e for e in entries if e["attempts"] == 2]
    assert retried and closer.accepted > before
    for e in retried:
        assert e["upstream_host"] == backend_b.address
        assert e.get("tried_hosts") and e["tried_hosts"][-1] == backend_b.address, e


def test_upstream_closing_without_answer_post_is_not_retried(gw, closer, backend_b):
    failed = []
    ids = []
    with gw.client() as client:
        for i in range(6):
            rid = f"cl-post-{i}"
            ids.append(rid)
            resp = client.request("POST", f"/closer/{rid}", {"X-Request-Id": rid}, body=b"not idempotent")
            if resp.status == 503:
                assert_error_response(resp, 503, rid)
                failed.append(rid)
                if resp.closes:
                    break
            else:
                assert resp.status == 200 and resp.json()["address"] == backend_b.address
    assert failed, "no POST was sent to the closing upstream"
    entries = gw.log.by_ids(ids)
    for rid in failed:
        e = entries[rid]
        assert e["status"] == 503 and e["attempts"] == 1, e
        assert e["upstream_host"] == closer.address
        assert "tried_hosts" not in e
        assert e["error"]
    for rid, e in entries.items():
        if rid not in failed:
            assert e["status"] == 200 and e["attempts"] == 1, e


def test_tried_hosts_names_every_endpoint_tried_in_order(gw, backend_a):
    """After a retry the log says where the request went: the failed endpoint, then the one
    that answered (as nginx's $upstream_addr does); ``upstream_host`` is the last of them."""
    ids = [f"th-{i}" for i in range(4)]
    with gw.client() as client:
        for rid in ids:
            assert client.request("GET", f"/failover-log/{rid}", {"X-Request-Id": rid}).status == 200
    retried = [e for e in gw.log.by_ids(ids).values() if e["attempts"] == 2]
    assert retried
    for e in retried:
        assert e["tried_hosts"] == [REFUSED, backend_a.address], e
        assert e["upstream_host"] == e["tried_hosts"][-1]


def test_refused_endpoint_with_passive_ejection_no_client_errors(gw, backend_a):
    """Default outlier detection: the refused endpoint is ejected after a few failures;
    meanwhile retries hide them, so the client sees 200 for all 200 requests."""
    ids = [f"ej-{i}" for i in range(200)]
    with gw.client() as client:
        statuses = Counter(client.request("GET", f"/failover-ejecting/{rid}", {"X-Request-Id": rid}).status
                           for rid in ids)
    assert statuses == {200: 200}
    entries = gw.log.by_ids(ids).values()
    retried = [e for e in entries if e["attempts"] == 2]
    assert 1 <= len(retried) < 100, "ejection should stop the refused endpoint from being tried"
    assert {e["upstream_host"] for e in entries} == {backend_a.address}
