"""Retries on chosen statuses and with a backoff; ring_hash on a cookie the gateway sets.

Two plain HTTP servers (TinyServer) stand for the endpoints of one service: one answers
every request with a fixed status, the other 200 with its name.  ``retries.statuses``
sends idempotent requests answered with a listed status to the other endpoint (never a
POST); ``retries.backoff`` makes the retry wait; the HTTPRoute's ``retry.codes`` and
``retry.backoff`` (GEP-1731) translate to the same settings.  ``lb.cookie`` gives a client
without the cookie a Set-Cookie, and every request carrying it lands on one endpoint.
"""
from __future__ import annotations

import time

import pytest

from gateway.config import ConfigError, RetryPolicy, parse_config
from gateway.gatewayapi.translate import _retry
from support import GatewayProcess, TinyServer, answering, static_source

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pair():
    """(failing, healthy) servers; the failing one's status is set per test."""
    servers = {}

    def make(status: int):
        servers["bad"] = TinyServer("127.0.0.2", answering(status, b"bad"))
        servers["good"] = TinyServer("127.0.0.3", answering(200, b"good"))
        return servers["bad"], servers["good"]
    yield make
    for server in servers.values():
        server.stop()


def start(tmp_path, bad, good, retries: dict, lb: dict | None = None) -> GatewayProcess:
    config = {
        "sources": [static_source("a", {"app": [bad.address]}),
                    static_source("b", {"app": [good.address]})],
        "services": [{"name": "app", "port": 80, **({"lb": lb} if lb else {})}],
        "routes": [{"name": "app", "match": {"path": {"prefix": "/"}}, "service": "app",
                    "retries": retries}],
    }
    return GatewayProcess(config, tmp_path, "retry").start()


def spread(g: GatewayProcess, method: str, n: int = 20) -> tuple[dict, float]:
    """Statuses and bodies of n requests, and the slowest one's duration."""
    seen, slowest = {}, 0.0
    with g.client() as client:
        for _ in range(n):
            t0 = time.monotonic()
            resp = client.request(method, "/x", body=b"" if method == "POST" else None)
            slowest = max(slowest, time.monotonic() - t0)
            key = (resp.status, resp.body.decode())
            seen[key] = seen.get(key, 0) + 1
    return seen, slowest


def test_a_listed_status_is_retried_on_the_other_endpoint(tmp_path, pair):
    bad, good = pair(500)
    g = start(tmp_path, bad, good, {"attempts": 2, "statuses": [500]})
    try:
        seen, _ = spread(g, "GET")
        assert seen == {(200, "good"): 20}, seen
        posts, _ = spread(g, "POST")            # not idempotent: the 500 is the answer
        assert posts.get((500, "bad"), 0) >= 5 and set(posts) <= {(500, "bad"), (200, "good")}, posts
    finally:
        g.stop()


def test_an_unlisted_status_is_passed_through(tmp_path, pair):
    bad, good = pair(500)
    g = start(tmp_path, bad, good, {"attempts": 2, "on_5xx": True})     # 502/503/504 only
    try:
        seen, _ = spread(g, "GET")
        assert seen.get((500, "bad"), 0) >= 5, seen
    finally:
        g.stop()


def test_backoff_delays_the_retry(tmp_path, pair):
    bad, good = pair(429)
    g = start(tmp_path, bad, good, {"attempts": 2, "statuses": [429], "backoff": "300ms"})
    try:
        t0 = time.monotonic()
        seen, slowest = spread(g, "GET", n=6)
        assert seen == {(200, "good"): 6}, seen
        # Half the requests try "bad" first and wait 300 ms before the retry.
        assert slowest >= 0.3, slowest
        assert time.monotonic() - t0 < 6 * 0.3 + 2
    finally:
        g.stop()


def test_retry_settings_from_the_file_and_from_an_httproute():
    cfg = parse_config({"services": [{"name": "s", "port": 80}],
                        "routes": [{"name": "r", "service": "s",
                                    "retries": {"statuses": [429, 500], "backoff": "25ms", "on_5xx": True}}]})
    retries = cfg.routes[0].retries
    assert retries.retry_statuses == {429, 500, 502, 503, 504} and retries.backoff == 0.025
    # An HTTPRoute's codes are the ones retried (GEP-1731), not the file's default 502/503/504.
    from_route = _retry({"attempts": 3, "codes": [500, 503], "backoff": "100ms"}, None)
    # ... and a try past timeouts.backendRequest is retried (HTTPRouteRetryWithTimeouts).
    assert from_route == RetryPolicy(attempts=4, statuses=(500, 503), backoff=0.1, on_5xx=False, on_timeout=True)
    assert from_route.retry_statuses == {500, 503}
    with pytest.raises(ConfigError) as err:
        parse_config({"services": [{"name": "s", "port": 80}],
                      "routes": [{"name": "r", "service": "s", "retries": {"statuses": [200]}}]})
    assert "routes[0].retries.statuses[0]" in str(err.value)


# -- ring_hash on a cookie -------------------------------------------------------------------------


def test_a_hash_cookie_is_set_once_and_keeps_the_client_on_one_endpoint(tmp_path, pair):
    one, two = pair(200)                        # both answer 200, with their names
    g = start(tmp_path, one, two, {"attempts": 1},
              lb={"policy": "ring_hash", "cookie": {"name": "gw-affinity", "ttl": "1h"}})
    try:
        owners, cookies = {}, set()
        for _ in range(30):
            with g.client() as client:
                first = client.request("GET", "/x")
                set_cookie = first.header("set-cookie")
                assert set_cookie and set_cookie.startswith("gw-affinity="), first.headers
                assert "Max-Age=3600" in set_cookie and "HttpOnly" in set_cookie
                cookie = set_cookie.split(";")[0]
                cookies.add(cookie)
                later = [client.request("GET", "/x", headers={"Cookie": f"theme=dark; {cookie}"})
                         for _ in range(5)]
                assert all(r.header("set-cookie") is None for r in later)
                assert {r.body for r in later} == {first.body}, (first.body, [r.body for r in later])
                owners[first.body] = owners.get(first.body, 0) + 1
        assert len(cookies) == 30
        assert set(owners) == {b"bad", b"good"}, owners     # new clients spread over both
    finally:
        g.stop()


def test_bad_cookie_settings_name_the_key():
    with pytest.raises(ConfigError) as err:
        parse_config({"services": [{"name": "s", "port": 80,
                                    "lb": {"policy": "ring_hash", "cookie": {"ttl": "1h"}}}]})
    assert "services[0].lb.cookie.name: is required" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"services": [{"name": "s", "port": 80,
                                    "lb": {"policy": "ring_hash", "header": "x", "cookie": {"name": "c"}}}]})
    assert "services[0].lb.cookie" in str(err.value)
