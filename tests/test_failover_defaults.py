"""Failover that needs no tuning (issue #26, point 1): the README's defaults and the shipped
deploy ConfigMap lose (almost) nothing when a zone fails in the gray or vanishes.

Two zones of one pod each, real backend processes, ``workers: 2``, keep-alive clients:
* gray: zone A answers 503 to 30% of requests (counted, not drawn); idempotent requests must
  fail at most 0.1% of the time, with the defaults and with the ConfigMap's service and route
  (its sources replaced by static ones: the test has no in-cluster API);
* blackhole: zone A's pod lives in a network namespace this test makes; nftables drops its
  packets while requests are in flight to it.  With no active health check (the default), no
  request fails and the slowest takes at most 5 s (it waited 13 s before: the response
  timeout was its only bound).
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from gateway.config import parse_config
from gateway.devcluster import blackhole
from gateway.devcluster.backend import BackendProcess
from failoverload import Load, failures, last_sent_to
from support import GatewayProcess, free_port, start_backend, static_source

REPO = Path(__file__).resolve().parent.parent
GRAY_REQUESTS = 3000
MAX_FAILED_SHARE = 0.001


def _fault(backend, query: str) -> None:
    import urllib.request
    with urllib.request.urlopen(f"http://{backend.host}:{backend.port}/_backend/fault?{query}",
                                timeout=5) as resp:
        assert resp.status == 200


def _two_zone_config(a: str, b: str, service: dict | None = None, route: dict | None = None) -> dict:
    return {
        "workers": 2,
        "sources": [static_source("zone-a", {"httpbin": [a]}), static_source("zone-b", {"httpbin": [b]})],
        "services": [{"name": "httpbin", "port": 8000, **(service or {})}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin", **(route or {})}],
    }


def _shipped_service_and_route() -> tuple[dict, dict]:
    """The deploy ConfigMap's httpbin service and route settings (what a user gets)."""
    doc = yaml.safe_load((REPO / "deploy/kubernetes/configmap.yaml").read_text())
    cfg = yaml.safe_load(doc["data"]["gateway.yaml"])
    assert cfg["workers"] == 2
    service = {k: v for k, v in cfg["services"][0].items() if k not in ("name", "namespace", "port")}
    route = {k: v for k, v in cfg["routes"][0].items() if k not in ("name", "match", "service")}
    return service, route


def test_defaults_retry_5xx_eject_on_5xx_and_bound_a_vanished_peer():
    cfg = parse_config({"sources": [{"name": "a", "type": "static", "services": []}],
                        "services": [{"name": "web", "port": 80}],
                        "routes": [{"name": "r", "service": "web"}]})
    route, svc = cfg.routes[0], cfg.services[0]
    assert route.retries.on_5xx and route.retries.attempts == 2
    assert svc.outlier_detection.consecutive_5xx == 5
    assert svc.lb.policy == "least_request"
    assert cfg.timeouts.upstream_unresponsive == 3.0


@pytest.fixture(scope="module")
def gray_zone():
    a = start_backend("127.0.0.22", "zone-a", "a-0")
    b = start_backend("127.0.0.23", "zone-b", "b-0")
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("which", ["defaults", "shipped"])
def test_gray_zone_30_percent_503_costs_at_most_0_1_percent(tmp_path, gray_zone, which):
    a, b = gray_zone
    service, route = _shipped_service_and_route() if which == "shipped" else ({}, {})
    gw = GatewayProcess(_two_zone_config(a.address, b.address, service, route), tmp_path, which).start()
    load = None
    try:
        _fault(a, "status=503&share=0.3")
        load = Load(gw.host, gw.port, threads=4, max_requests=GRAY_REQUESTS // 4, deadline=90).start()
        load.wait_count(GRAY_REQUESTS, timeout=90)
        samples = load.stop()
    finally:
        _fault(a, "")
        if load is not None:
            load.stop()
        gw.stop()
    failed = failures(samples)
    share_a = sum(s.cluster == "zone-a" for s in samples) / len(samples)
    print(f"\n{which}: {len(samples)} requests, {len(failed)} failed, zone A answered {share_a:.1%}")
    assert len(samples) == GRAY_REQUESTS
    assert len(failed) <= MAX_FAILED_SHARE * len(samples), failed[:5]


@pytest.mark.skipif(blackhole.available() is not None, reason=str(blackhole.available()))
def test_blackholed_zone_without_active_checks_loses_nothing_and_bounds_the_slowest(tmp_path):
    b = start_backend("127.0.0.23", "zone-b", "b-0")
    with blackhole.Blackhole("bh") as hole:
        a = BackendProcess(hole.address, 8000, "zone-a", "a-0", netns=hole.ns).start()
        gw = GatewayProcess(_two_zone_config(f"{hole.address}:8000", b.address), tmp_path).start()
        load = Load(gw.host, gw.port, path="/delay/0.2", threads=6, deadline=60)
        try:
            load.start()
            load.wait_count(60, timeout=30)             # both zones serve, connections pooled
            dropped_at = time.monotonic()
            hole.drop()
            end = time.monotonic() + 30
            while load.count() < 60 + 150 and time.monotonic() < end:
                time.sleep(0.05)
            samples = load.stop()
        finally:
            load.stop()
            hole.restore()
            gw.stop()
            a.stop()
            b.stop()
    failed = failures(samples)
    caught = [s for s in samples if s.sent < dropped_at < s.done]
    slowest = max(s.seconds for s in samples)
    last_a = last_sent_to([s for s in samples if s.sent >= dropped_at], "zone-a")
    print(f"\nblackhole: {len(samples)} requests, {len(failed)} failed, {len(caught)} in flight at the "
          f"drop, slowest {slowest:.2f} s, zone A answered after the drop: {last_a is not None}")
    assert not failed, failed[:5]
    assert caught, "no request was in flight when the zone vanished"
    assert slowest <= 5.0
