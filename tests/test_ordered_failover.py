"""Ordered failover over N clusters (issue #26, point 5): ``failover: [zone-b, zone-c]`` puts
the service's other clusters first, then zone B, then zone C.  Three clusters of one pod each
(real processes), ``workers: 2``, TCP checks every 200 ms: all requests go to A; A killed:
all to B; B killed too: all to C; A back: all to A again; no request fails on the way.
"""
from __future__ import annotations

import signal
import time

import pytest

from gateway.config import ConfigError, parse_config
from support import start_backend, start_with_admin, static_source
from failoverload import Load, failures

SOURCES = [{"name": n, "type": "static", "services": []} for n in ("zone-a", "zone-b", "zone-c")]


def test_failover_list_orders_the_levels_and_names_bad_keys():
    cfg = parse_config({"sources": SOURCES, "services": [{"name": "w", "port": 80, "failover": ["zone-c", "zone-b"]}]})
    assert cfg.services[0].priorities == (("zone-a", 0), ("zone-b", 2), ("zone-c", 1))
    for extra, error in [({"failover": ["zone-x"]}, 'services[0].failover[0]: unknown source "zone-x"'),
                         ({"failover": ["zone-b"], "prefer": ["zone-a"]},
                          "services[0].failover: use one of prefer, priorities or failover"),
                         ({"failover": [3]}, "services[0].failover[0]")]:
        with pytest.raises(ConfigError) as err:
            parse_config({"sources": SOURCES, "services": [{"name": "w", "port": 80, **extra}]})
        assert error in str(err.value)


def _only(load: Load, n: int, since: float) -> set[str]:
    """Who answered the requests sent after ``since`` (at least n of them)."""
    load.wait_count(load.count() + n, timeout=30)
    return {s.cluster for s in list(load.samples) if s.sent >= since}


def _wait_only(load: Load, cluster: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        since = time.monotonic()
        got = _only(load, 200, since)
        if got == {cluster}:
            return
        assert time.monotonic() < deadline, f"still answered by {got}, expected only {cluster}"


def test_three_clusters_fail_over_in_order_and_back(tmp_path):
    pods = {z: start_backend(f"127.0.0.{28 + i}", z, f"{z}-0") for i, z in enumerate(("zone-a", "zone-b", "zone-c"))}
    config = {
        "workers": 2,
        "sources": [static_source(z, {"web": [p.address]}) for z, p in pods.items()],
        "services": [{"name": "web", "port": 8000, "failover": ["zone-b", "zone-c"],
                      "health_check": {"type": "tcp", "interval": "200ms", "timeout": "150ms",
                                       "jitter": "20ms", "healthy_threshold": 1, "unhealthy_threshold": 1}}],
        "routes": [{"name": "web", "match": {"path": {"prefix": "/"}}, "service": "web"}],
    }
    gw, admin = start_with_admin(config, tmp_path, "ordered")
    load = Load(gw.host, gw.port, threads=4, deadline=90)
    try:
        load.start()
        _wait_only(load, "zone-a")
        levels = admin.get("/services/default/web")["levels"]
        assert [(lv["clusters"], lv["load_pct"]) for lv in levels] == [
            (["zone-a"], 100.0), (["zone-b"], 0.0), (["zone-c"], 0.0)]
        pods["zone-a"].send_signal(signal.SIGKILL)
        _wait_only(load, "zone-b")
        pods["zone-b"].send_signal(signal.SIGKILL)
        _wait_only(load, "zone-c")
        pods["zone-a"].start()
        _wait_only(load, "zone-a")
        samples = load.stop()
        assert not failures(samples), failures(samples)[:5]
    finally:
        load.stop()
        gw.stop()
        for p in pods.values():
            p.stop()
