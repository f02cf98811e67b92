"""Outlier options: which statuses count as "5xx" for passive ejection, and the retry budget
settings.  End to end against a real gateway: an endpoint answering 500 is ejected only
when the service lists 500; with the default list (502, 503, 504) it keeps serving.
"""
from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from support import (AdminClient, GatewayProcess, TinyServer, answering, free_port,
                         start_backend, wait_listening)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    backend = start_backend("127.0.0.2", "a", "a-0")
    failing = TinyServer("127.0.0.4", answering(500))
    admin_port = free_port()
    outlier = {"consecutive_5xx": 2, "base_ejection_time": "30s"}
    config = {
        "admin": f"127.0.0.1:{admin_port}",
        "sources": [{"name": "a", "type": "static", "services": [
            {"name": n, "endpoints": [backend.address, failing.address]} for n in ("counts", "default")]}],
        "services": [
            {"name": "counts", "port": 8000,
             "outlier_detection": {**outlier, "statuses": [500, 502, 503, 504]}},
            {"name": "default", "port": 8000, "outlier_detection": outlier}],
        "routes": [{"name": n, "match": {"path": {"prefix": f"/{n}/"}}, "service": n,
                    "rewrite": {"prefix": "/"}} for n in ("counts", "default")],
        "limits": {"retry_budget_share": "10%", "retry_budget_min": 5},
    }
    g = GatewayProcess(config, tmp_path_factory.mktemp("outlier"), "outlier").start()
    try:
        wait_listening("127.0.0.1", admin_port, 10, g.proc)
        g.admin = AdminClient(admin_port)
        yield g, failing.address
    finally:
        g.stop()
        failing.stop()
        backend.stop()


def _serving(gw, service: str, address: str) -> bool:
    svc = gw.admin.get(f"/services/default/{service}")
    return next(e for e in svc["endpoints"] if e["address"] == address)["serving"]


def test_500_ejects_only_where_listed(gw):
    g, failing = gw
    statuses = {"counts": [], "default": []}
    with g.client() as c:
        for _ in range(10):
            for name in statuses:
                statuses[name].append(c.request("GET", f"/{name}/x").status)
    # "counts": two 500s in a row eject the endpoint; afterwards only the backend answers.
    g.admin.wait("/services/default/counts", lambda s: not next(
        e for e in s["endpoints"] if e["address"] == failing)["serving"])
    assert statuses["counts"].count(500) == 2, statuses
    # "default": a 500 is the application's answer, not an outlier: it keeps serving.
    assert statuses["default"].count(500) == 5, statuses
    assert _serving(g, "default", failing)


def test_retry_budget_settings_are_parsed():
    cfg = parse_config({"limits": {"retry_budget_share": "10%", "retry_budget_min": 5}})
    assert (cfg.limits.retry_budget_share, cfg.limits.retry_budget_min) == (0.1, 5)
    assert (parse_config({}).limits.retry_budget_share, parse_config({}).limits.retry_budget_min) == (0.2, 3)


@pytest.mark.parametrize("config, error", [
    ({"limits": {"retry_budget_share": 2}}, "limits.retry_budget_share:"),
    ({"limits": {"retry_budget_min": -1}}, "limits.retry_budget_min:"),
    ({"services": [{"name": "s", "port": 80, "outlier_detection": {"statuses": [404]}}]},
     "services[0].outlier_detection.statuses[0]:"),
    ({"services": [{"name": "s", "port": 80, "outlier_detection": {"statuses": []}}]},
     "services[0].outlier_detection.statuses: must list"),
])
def test_bad_outlier_and_budget_settings_name_the_key(config, error):
    with pytest.raises(ConfigError) as e:
        parse_config(config)
    assert any(m.startswith(error) for m in e.value.errors), e.value.errors
