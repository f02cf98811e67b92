"""Session persistence (GEP-1619): a route's ``session_persistence`` (an HTTPRoute or GRPCRoute
rule's ``sessionPersistence``) keeps a client's requests on the endpoint its first went to,
across both clusters, through a token in a cookie or a header; an endpoint that stops serving
hands its sessions over; an ended session (absolute or idle timeout) starts again.

Two real backends in two clusters (static sources "zone-a" and "zone-b"), one gateway process
per test with its route; the token is read and, for the timeouts, made with the same code the
gateway uses (``_speedups.service.SessionPolicy``), so no test waits for a clock.
"""
from __future__ import annotations

import json
import time

import pytest

from _speedups.service import SessionPolicy
from support import GatewayProcess, start_backend, static_source

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def backends():
    a, b = start_backend("127.0.0.2", "zone-a", "sp-a-0"), start_backend("127.0.0.3", "zone-b", "sp-b-0")
    yield {"zone-a": a, "zone-b": b}
    for backend in (a, b):
        backend.stop()


def gateway(tmp_path, backends, session: dict) -> GatewayProcess:
    return GatewayProcess({
        "workers": 2,
        "sources": [static_source(zone, {"app": [backend.address]}) for zone, backend in backends.items()],
        "services": [{"name": "app", "port": 80}],
        "routes": [{"name": "sticky", "match": {"path": {"prefix": "/"}}, "service": "app",
                    "session_persistence": session}],
    }, tmp_path).start()


def address_of(response) -> str:
    """The endpoint that answered (the backend says its address)."""
    return json.loads(response.body)["address"]


def cookie_of(response, name: str = "sid") -> str | None:
    set_cookie = response.header("set-cookie")
    if set_cookie is None:
        return None
    assert set_cookie.startswith(f"{name}="), set_cookie
    return set_cookie.split(";")[0]


def test_a_cookie_keeps_each_client_on_its_first_endpoint(tmp_path, backends):
    gw = gateway(tmp_path, backends, {"name": "sid"})
    try:
        firsts = {}
        for _ in range(20):
            with gw.client() as client:
                first = client.request("GET", "/anything")
                cookie = cookie_of(first)
                assert cookie and "Path=/" in first.header("set-cookie") and "HttpOnly" in first.header("set-cookie")
                assert "Max-Age" not in first.header("set-cookie")      # a browser-session cookie
                later = [client.request("GET", "/anything", headers={"Cookie": f"theme=dark; {cookie}"})
                         for _ in range(5)]
                assert {address_of(r) for r in later} == {address_of(first)}
                assert all(r.header("set-cookie") is None for r in later)   # the token stays right
                firsts[address_of(first)] = firsts.get(address_of(first), 0) + 1
        assert set(firsts) == {b.address for b in backends.values()}, firsts   # sessions spread
    finally:
        gw.stop()


def test_a_session_whose_endpoint_stops_moves_to_the_other_cluster_and_stays(tmp_path, backends):
    gw = gateway(tmp_path, backends, {"name": "sid"})
    try:
        with gw.client() as client:
            for _ in range(40):         # a session on zone-a's endpoint
                first = client.request("GET", "/anything")
                if address_of(first) == backends["zone-a"].address:
                    break
            cookie = cookie_of(first)
            assert address_of(first) == backends["zone-a"].address and cookie
        backends["zone-a"].stop()
        with gw.client() as client:
            moved = client.request("GET", "/anything", headers={"Cookie": cookie})
            assert moved.status == 200 and address_of(moved) == backends["zone-b"].address
            new_cookie = cookie_of(moved)
            assert new_cookie and new_cookie != cookie          # the token now names zone-b's endpoint
            again = [client.request("GET", "/anything", headers={"Cookie": new_cookie}) for _ in range(5)]
        assert {(r.status, address_of(r)) for r in again} == {(200, backends["zone-b"].address)}
    finally:
        gw.stop()


def test_a_header_session_and_its_absolute_timeout(tmp_path, backends):
    gw = gateway(tmp_path, backends, {"name": "X-Session", "type": "header", "absolute_timeout": "1h"})
    policy = SessionPolicy("X-Session", True, 3600.0)
    try:
        with gw.client() as client:
            first = client.request("GET", "/anything")
            token = first.header("x-session")
            assert token and first.header("set-cookie") is None
            key, started = policy.endpoint_of(token.encode(), time.time())
            assert f"{key[1]}:{key[2]}" == address_of(first)
            later = [client.request("GET", "/anything", headers={"X-Session": token}) for _ in range(5)]
            assert {address_of(r) for r in later} == {address_of(first)}
            assert all(r.header("x-session") is None for r in later)
            # The same endpoint, but a session begun two hours ago: over; a new one begins.
            old = policy.token_for(key, time.time() - 7200, time.time() - 7200).decode()
            fresh = client.request("GET", "/anything", headers={"X-Session": old})
            renewed = fresh.header("x-session")
            assert renewed and renewed != old
            assert policy.endpoint_of(renewed.encode(), time.time())[1] > time.time() - 60
    finally:
        gw.stop()


def test_an_idle_timeout_renews_the_token_and_ends_a_quiet_session(tmp_path, backends):
    gw = gateway(tmp_path, backends, {"name": "sid", "idle_timeout": "10m"})
    policy = SessionPolicy("sid", False, 0.0, 600.0)
    try:
        with gw.client() as client:
            first = client.request("GET", "/anything")
            cookie = cookie_of(first)
            key, started = policy.endpoint_of(cookie.split("=", 1)[1].encode(), time.time())
            again = client.request("GET", "/anything", headers={"Cookie": cookie})
            assert address_of(again) == address_of(first)
            renewed = cookie_of(again)      # idle time is counted: every answer renews the token
            assert renewed and policy.endpoint_of(renewed.split("=", 1)[1].encode(), time.time())[1] == started
            # Last used 20 minutes ago: the session is over; the answer starts a new one.
            quiet = policy.token_for(key, time.time() - 1800, time.time() - 1200).decode()
            after = client.request("GET", "/anything", headers={"Cookie": f"sid={quiet}"})
            new = cookie_of(after).split("=", 1)[1].encode()
            assert policy.endpoint_of(new, time.time())[1] > time.time() - 60
    finally:
        gw.stop()


def test_a_bad_session_setting_names_its_key(tmp_path):
    from gateway.config import ConfigError, parse_config
    with pytest.raises(ConfigError) as err:
        parse_config({"services": [{"name": "app", "port": 80}],
                      "routes": [{"name": "r", "service": "app",
                                  "session_persistence": {"name": "a b", "idle_timeout": "soon"}}]})
    assert "routes[0].session_persistence.name" in str(err.value)
    assert "routes[0].session_persistence.idle_timeout" in str(err.value)


def test_an_httproute_rule_sessionpersistence_becomes_the_route_setting():
    """GEP-1619's fields map onto the file route's; a bad one is Accepted=False UnsupportedValue
    naming its key (the route is not served half-applied)."""
    from gateway.config import SessionPersistence
    from gateway.gatewayapi.translate import Addressing, World, translate
    controller = "gateway.example/multi-cluster"
    world = World(controller)
    world.classes["c"] = {"metadata": {"name": "c", "generation": 1}, "spec": {"controllerName": controller}}
    world.gateways[("ns", "gw")] = {"metadata": {"name": "gw", "namespace": "ns", "generation": 1}, "spec": {
        "gatewayClassName": "c", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}
    world.services[("ns", "app")] = [{"port": 80}]

    def route(name: str, session: dict) -> dict:
        return {"metadata": {"name": name, "namespace": "ns", "generation": 1, "creationTimestamp": name},
                "spec": {"parentRefs": [{"name": "gw"}], "rules": [{
                    "backendRefs": [{"name": "app", "port": 80}], "sessionPersistence": session}]}}
    world.routes[("ns", "good")] = route("good", {"sessionName": "sid", "type": "Cookie", "absoluteTimeout": "1h",
                                                  "idleTimeout": "10m", "cookieConfig": {"lifetimeType": "Permanent"}})
    world.routes[("ns", "bad")] = route("bad", {"sessionName": "a b"})
    t = translate(world, addressing=Addressing(("127.0.0.1",)))
    good = next(rc for rc in t.routes if rc.name.startswith("ns.good."))
    assert good.session == SessionPersistence("sid", "cookie", 3600.0, 600.0, permanent=True)
    assert not any(rc.name.startswith("ns.bad.") for rc in t.routes)
    accepted = t.route_status[("ns", "bad")][0]["conditions"][0]
    assert (accepted["status"], accepted["reason"]) == ("False", "UnsupportedValue")
    assert "rules[0].sessionPersistence.sessionName" in accepted["message"]
