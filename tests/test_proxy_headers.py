"""Request headers as the upstream sees them (the backend's /headers echoes what it received)."""
from __future__ import annotations

import re

import pytest

from support import GatewayProcess, static_source


@pytest.fixture(scope="module")
def gw(backend_a, tmp_path_factory):
    config = {
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address]})],
        "services": [{"name": "httpbin", "port": 80}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}],
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("headers")).start()
    yield proc
    proc.stop()


def upstream_headers(gw, headers, host="api.example.com", target="/headers") -> dict[str, str]:
    """The headers the backend received (names lower-cased), for one request with ``headers``."""
    with gw.client() as client:
        resp = client.request("GET", target, headers, host=host)
    assert resp.status == 200, resp.body[:300]
    return {k.lower(): v for k, v in resp.json()["headers"].items()}


def test_forwarding_headers_added_and_appended(gw):
    seen = upstream_headers(gw, [("X-Forwarded-For", "203.0.113.7"), ("Via", "1.0 edge"),
                                 ("X-Request-Id", "hdr-kept-1"), ("X-Custom", "v1")])
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "api.example.com"
    assert seen["x-request-id"] == "hdr-kept-1"
    via = seen["via"]
    assert via.startswith("1.0 edge, 1.1 ") and len(via) > len("1.0 edge, 1.1 "), via
    assert seen["host"] == "api.example.com"
    assert seen["x-custom"] == "v1"
    assert gw.log.by_ids(["hdr-kept-1"])["hdr-kept-1"]["host"] == "api.example.com"


def test_forwarding_headers_without_incoming_ones(gw):
    seen = upstream_headers(gw, [], host="plain.example.com:8080")
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "plain.example.com:8080"
    assert seen["host"] == "plain.example.com:8080"
    assert seen["via"].startswith("1.1 ")


def test_client_cannot_set_forwarded_proto_or_host(gw):
    seen = upstream_headers(gw, [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.example")])
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "api.example.com"


def test_request_id_generated_when_absent_and_logged(gw):
    seen = upstream_headers(gw, [], target="/headers?gen=1")
    rid = seen.get("x-request-id")
    assert rid, "no X-Request-Id generated"
    # a second request gets another id
    assert upstream_headers(gw, [], target="/headers?gen=2").get("x-request-id") not in (None, rid)
    entries = gw.log.matching(lambda e: e.get("path") == "/headers?gen=1")
    assert len(entries) == 1
    assert entries[0]["request_id"] == rid


def test_the_log_lines_numbers_are_written_as_json_numbers(gw):
    upstream_headers(gw, [], target="/headers?fmt=1")
    gw.log.matching(lambda e: e.get("path") == "/headers?fmt=1")
    line = next(raw for raw in gw.log.path.read_text().splitlines() if '"/headers?fmt=1"' in raw)
    # RFC 3339 with milliseconds; ms with exactly three decimals; integers without any
    assert re.match(r'\{"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"', line), line
    for field in ("duration_ms", "upstream_response_ms"):
        assert re.search(rf'"{field}":(0|[1-9]\d*)\.\d{{3}}[,}}]', line), (field, line)
    assert re.search(r'"upstream_connect_ms":(0|[1-9]\d*)\.\d{3}[,}]', line), line
    for field in ("status", "bytes_sent", "bytes_received", "attempts"):
        assert re.search(rf'"{field}":[1-9]\d*[,}}]', line), (field, line)


def test_hop_by_hop_headers_not_forwarded(gw):
    seen = upstream_headers(gw, [("Connection", "keep-alive, X-Secret-Hop"), ("X-Secret-Hop", "s"),
                                 ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
                                 ("Proxy-Connection", "keep-alive"), ("Trailer", "X-T"),
                                 ("X-End-To-End", "kept")])
    for name in ("x-secret-hop", "keep-alive", "te", "proxy-connection", "trailer"):
        assert name not in seen, f"hop-by-hop {name!r} was forwarded: {seen}"
    assert "x-secret-hop" not in seen.get("connection", "").lower()
    assert seen["x-end-to-end"] == "kept"


def test_response_carries_no_hop_by_hop_headers_from_gateway_internals(gw):
    with gw.client() as client:
        resp = client.request("GET", "/anything/resp", [("X-Request-Id", "hdr-resp")])
    assert resp.status == 200
    assert resp.header("keep-alive") is None
    assert resp.header("transfer-encoding") is None or resp.header("content-length") is None
