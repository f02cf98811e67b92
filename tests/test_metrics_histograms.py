"""The per (route, service, cluster) histograms and the by-cause counters of /metrics add up,
with one worker and with two: every request sent is counted once in
gateway_request_duration_seconds, under the cluster that answered; each failed attempt on
the dead endpoint is a failure and a retry by that cause; buckets are cumulative.  Parsed
with prometheus_client's parser (what a scrape would read)."""
from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import Client, free_port, static_source
from test_workers import start_gateway

pytestmark = pytest.mark.timeout(120)

REQUESTS = 40


def _samples(admin) -> dict[str, list]:
    text = admin.request("GET", "/metrics")[2].decode()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _total(samples, name: str, **labels) -> float:
    return sum(s.value for s in samples.get(name, ())
               if all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.mark.parametrize("workers", [1, 2])
def test_histograms_and_causes_add_up(tmp_path, backend_a, backend_b, workers):
    dead = f"127.0.0.4:{free_port('127.0.0.4')}"
    cfg = {
        "workers": workers,
        "admin": f"127.0.0.1:{free_port()}",
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address]}),
                    static_source("zone-b", {"httpbin": [backend_b.address]}),
                    static_source("zone-dead", {"httpbin": [dead]})],
        "services": [{"name": "httpbin", "port": 8000, "outlier_detection": "off"}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin",
                    "retries": {"attempts": 3}}],
    }
    g, admin = start_gateway(tmp_path, cfg)
    try:
        for i in range(REQUESTS):               # new connections: either worker may serve
            with Client(g.host, g.port) as c:
                assert c.request("GET", "/get" if i % 2 else "/close").status == 200
        deadline = time.monotonic() + 15
        while True:                             # workers report every second
            s = _samples(admin)
            if _total(s, "gateway_request_duration_seconds_count") >= REQUESTS:
                break
            assert time.monotonic() < deadline, _total(s, "gateway_request_duration_seconds_count")
            time.sleep(0.1)
        labels = {"route": "all", "service": "default/httpbin"}
        assert _total(s, "gateway_request_duration_seconds_count", **labels) == REQUESTS
        answered = {c: _total(s, "gateway_request_duration_seconds_count", cluster=c, **labels)
                    for c in ("zone-a", "zone-b", "zone-dead")}
        assert answered["zone-dead"] == 0 and answered["zone-a"] > 0 and answered["zone-b"] > 0
        assert _total(s, "gateway_upstream_response_duration_seconds_count", **labels) == REQUESTS
        # /close makes the gateway connect again: new connections are timed.
        assert _total(s, "gateway_upstream_connect_duration_seconds_count", **labels) >= REQUESTS // 2
        failed = _total(s, "gateway_upstream_attempt_failures_total", cluster="zone-dead",
                        cause="connect_failed", **labels)
        retried = _total(s, "gateway_retries_by_cause_total", cluster="zone-dead",
                         cause="connect_failed", **labels)
        assert failed >= 1 and failed == retried
        assert _total(s, "gateway_retries_by_cause_total") == _total(s, "gateway_retries_total")
        assert _total(s, "gateway_upstream_attempt_failures_total") == failed
        # Buckets are cumulative and end at the count.
        for name in ("gateway_request_duration_seconds", "gateway_upstream_response_duration_seconds"):
            for cluster in ("zone-a", "zone-b"):
                buckets = sorted(((float(b.labels["le"]), b.value) for b in s[name + "_bucket"]
                                  if b.labels["cluster"] == cluster), key=lambda x: x[0])
                values = [v for _, v in buckets]
                assert values == sorted(values) and buckets[-1][0] == float("inf")
                assert values[-1] == _total(s, name + "_count", cluster=cluster)
                assert _total(s, name + "_sum", cluster=cluster) > 0
    finally:
        g.stop()
