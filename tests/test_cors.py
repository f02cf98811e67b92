"""CORS on a route from the file (``routes[].cors``; HTTPRoute's CORS filter is replayed from
the conformance suite in tests/conformance/test_conformance_httproute_cors.py): a real gateway
with ``workers: 2``, devcluster backends, HTTP/1.1 and HTTP/2 clients.

* A preflight from an allowed origin is answered by the gateway (200, no body, the
  Access-Control-Allow-* fields, Vary: Origin); the backend never sees it.
* From an origin not allowed: 200 without CORS fields (the browser then refuses).
* An allowed request goes to the backend; its answer carries the route's CORS fields, and
  an upstream's own Access-Control-* fields are replaced, not doubled.
* A bad ``cors`` section is refused with its key path.
"""
from __future__ import annotations

import pytest

from support import Client, GatewayProcess, start_backend, static_source
from h2client import H2Client

pytestmark = pytest.mark.timeout(60)

ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    backend = start_backend("127.0.0.2", "zone-a", "cors-0")
    cors = {"allow_origins": [ORIGIN, "https://*.example.org"], "allow_methods": ["GET", "PUT"],
            "allow_headers": ["x-token"], "expose_headers": ["x-request-id"], "allow_credentials": True,
            "max_age": 600}
    config = {
        "workers": 2,
        "sources": [static_source("zone-a", {"web": [backend.address]})],
        "services": [{"name": "web", "port": 80}],
        "routes": [{"name": "api", "match": {"path": {"prefix": "/api"}}, "service": "web", "cors": cors,
                    # as if the upstream sent its own: the route's CORS fields replace it
                    "response_headers": {"set": [{"name": "Access-Control-Allow-Origin", "value": "*"}]}},
                   {"name": "rest", "match": {"path": {"prefix": "/"}}, "service": "web"}],
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("cors")).start()
    yield proc, backend
    proc.stop()
    backend.stop()


def preflight(origin: str, method: str = "PUT") -> dict:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": "x-token",
            "X-Request-Id": f"pre-{origin}"}


def test_a_preflight_from_an_allowed_origin_is_answered_by_the_gateway(gw):
    g, backend = gw
    with Client(g.host, g.port) as c:
        for origin in (ORIGIN, "https://a.b.example.org"):
            r = c.request("OPTIONS", "/api/items", preflight(origin))
            assert r.status == 200 and r.body == b"", (r.status, r.body)
            assert r.header("access-control-allow-origin") == origin
            assert r.header("access-control-allow-methods") == "GET, PUT"
            assert r.header("access-control-allow-headers") == "x-token"
            assert r.header("access-control-allow-credentials") == "true"
            assert r.header("access-control-max-age") == "600"
            assert r.header("vary") == "Origin"
    entries = g.log.by_ids([f"pre-{ORIGIN}"])
    assert entries[f"pre-{ORIGIN}"]["status"] == 200 and "error" not in entries[f"pre-{ORIGIN}"]
    assert "upstream_host" not in entries[f"pre-{ORIGIN}"] or not entries[f"pre-{ORIGIN}"]["upstream_host"]


def test_a_preflight_from_another_origin_gets_no_cors_fields(gw):
    g, _ = gw
    with Client(g.host, g.port) as c:
        for origin in ("https://evil.example", "https://example.org", "https://x.example.org:8443"):
            r = c.request("OPTIONS", "/api/items", preflight(origin))
            assert r.status == 200
            assert not [k for k, _ in r.headers if k.lower().startswith("access-control-")], r.headers


def test_an_allowed_request_gets_the_routes_fields_and_not_the_upstreams(gw):
    g, backend = gw
    with Client(g.host, g.port) as c:
        r = c.request("GET", "/api/items", {"Origin": ORIGIN})
        assert r.status == 200 and r.json()["pod"] == "cors-0"
        assert [v for k, v in r.headers if k.lower() == "access-control-allow-origin"] == [ORIGIN]
        assert r.header("access-control-allow-credentials") == "true"
        assert r.header("access-control-expose-headers") == "x-request-id"
        other = c.request("GET", "/api/items", {"Origin": "https://evil.example"})
        assert other.status == 200 and other.header("access-control-allow-credentials") is None
        plain = c.request("OPTIONS", "/api/items")          # not a preflight: proxied
        assert plain.status == 200 and plain.json()["method"] == "OPTIONS"
        elsewhere = c.request("OPTIONS", "/other", preflight(ORIGIN))     # a route without CORS
        assert elsewhere.json()["path"] == "/other"


def test_a_preflight_over_http2(gw):
    g, _ = gw
    with H2Client(g.host, g.port) as c:
        sid = c.request("OPTIONS", "/api/items", [(k.lower(), v) for k, v in preflight(ORIGIN).items()])
        (answer,) = c.wait(sid)
    assert answer.status == 200 and bytes(answer.body) == b""
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert answer.headers["access-control-allow-methods"] == "GET, PUT"


def test_a_bad_cors_section_names_its_key_path():
    from gateway.config import ConfigError, parse_config
    with pytest.raises(ConfigError) as err:
        parse_config({"services": [{"name": "s", "port": 80}],
                      "routes": [{"name": "r", "service": "s",
                                  "cors": {"allow_origins": ["app.example.com"], "max_age": -1, "origins": []}}]})
    assert err.value.errors == [
        'routes[0].cors: unknown key "origins" (did you mean "allow_origins"?)',
        'routes[0].cors.allow_origins[0]: must be "*" or an origin like "https://www.example.com" or '
        '"https://*.example.com", got "app.example.com"',
        "routes[0].cors.max_age: must be an integer from 0 to 86400"]
