"""Circuit breakers per service, against a real gateway (workers: 1, so the counts are exact).

Each limit is hit exactly: N + k requests held open at once on N + k client connections
(the backend's /delay keeps them in flight) give N answers and k 503s that name the limit
in the body and in X-Gateway-Overloaded; /metrics counts them by limit; a service without
limits on the same backend is unaffected meanwhile.
"""
from __future__ import annotations

import time

import pytest

from gateway.config import ConfigError, parse_config
from support import (AdminClient, GatewayProcess, TinyServer, answering, free_port,
                         start_backend, wait_listening)

pytestmark = pytest.mark.timeout(60)

DELAY = 1.0


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    backend = start_backend("127.0.0.2", "a", "a-0")
    failing = TinyServer("127.0.0.4", answering(503))
    admin_port = free_port()

    def service(name: str, limits: dict | None, **extra) -> dict:
        svc = {"name": name, "port": 8000, "outlier_detection": "off", **extra}
        if limits:
            svc["circuit_breakers"] = limits
        return svc

    def route(name: str, **extra) -> dict:
        return {"name": name, "match": {"path": {"prefix": f"/{name}/"}}, "service": name,
                "rewrite": {"prefix": "/"}, **extra}

    names = ("requests", "connections", "retries", "other")
    config = {
        "admin": f"127.0.0.1:{admin_port}",
        "workers": 1,
        "sources": [
            {"name": "a", "type": "static",
             "services": [{"name": n, "endpoints": [backend.address]} for n in names]},
            # For "retries": an endpoint at a better level that always answers 503, so that
            # every request retries (on_5xx) on the backend and stays a retry for DELAY.
            {"name": "failing", "type": "static",
             "services": [{"name": "retries", "endpoints": [failing.address]}]},
        ],
        "services": [service("requests", {"max_requests": 3}),
                     service("connections", {"max_connections": 2}),
                     service("retries", {"max_retries": 2}, priorities={"failing": 0, "a": 1}),
                     service("other", None)],
        "routes": [route("requests"), route("connections"),
                   route("retries", retries={"attempts": 2, "on_5xx": True}), route("other")],
    }
    g = GatewayProcess(config, tmp_path_factory.mktemp("breakers"), "breakers").start()
    try:
        wait_listening("127.0.0.1", admin_port, 10, g.proc)
        g.admin = AdminClient(admin_port)
        yield g
    finally:
        g.stop()
        failing.stop()
        backend.stop()


def _at_once(gw, path: str, n: int) -> list:
    """n requests written on n connections before any is read: all in flight together."""
    clients = [gw.client(timeout=10) for _ in range(n)]
    try:
        for c in clients:
            c.send(c.build("GET", path))
            time.sleep(0.02)        # in order, so that which ones overflow is the last ones
        return [c.read_response("GET") for c in clients]
    finally:
        for c in clients:
            c.close()


def _overflows(gw) -> dict[str, float]:
    text = gw.admin.request("GET", "/metrics")[2].decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("gateway_circuit_breaker_overflows_total{"):
            out[line.split('limit="')[1].split('"')[0]] = float(line.split()[-1])
    return out


@pytest.mark.parametrize("service, limit, allowed", [
    ("requests", "max_requests", 3),
    ("connections", "max_connections", 2),
    ("retries", "max_retries", 2),
])
def test_limit_is_hit_exactly(gw, service, limit, allowed):
    before = _overflows(gw).get(limit, 0)
    with gw.client() as other:
        answers = _at_once(gw, f"/{service}/delay/{DELAY}", allowed + 2)
        r = other.request("GET", "/other/x")     # meanwhile: no limit there
        assert r.status == 200
    statuses = [r.status for r in answers]
    assert statuses == [200] * allowed + [503, 503], statuses
    for r in answers[allowed:]:
        assert r.header("x-gateway-overloaded") == limit
        assert f"service default/{service} is at {limit} ({allowed})".encode() in r.body
    deadline = time.monotonic() + 5           # workers report their counters once a second
    while _overflows(gw).get(limit, 0) < before + 2:
        assert time.monotonic() < deadline, _overflows(gw)
        time.sleep(0.1)
    assert _overflows(gw)[limit] == before + 2


def test_limits_free_up_again(gw):
    # Everything from the test above has finished: the full allowance is there again.
    answers = _at_once(gw, f"/requests/delay/0.3", 3)
    assert [r.status for r in answers] == [200, 200, 200]
    state = gw.admin.get("/services/default/requests")["circuit_breakers"]
    assert state["max_requests"] == 3 and state["max_connections"] == 0


@pytest.mark.parametrize("value, error", [
    ({"max_requests": 0}, "services[0].circuit_breakers.max_requests:"),
    ({"max_request": 1}, "services[0].circuit_breakers: unknown key"),
    ("lots", "services[0].circuit_breakers: must be a mapping"),
])
def test_bad_limits_name_the_key(value, error):
    cfg = {"sources": [{"name": "a", "type": "static",
                        "services": [{"name": "s", "endpoints": ["127.0.0.2:80"]}]}],
           "services": [{"name": "s", "port": 80, "circuit_breakers": value}], "routes": []}
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    assert any(m.startswith(error) for m in e.value.errors), e.value.errors
