"""Exemplars: a latency bucket of ``gateway_request_duration_seconds`` links to a traced
request (OpenMetrics), checked with the prometheus_client OpenMetrics parser (strict: the
whole exposition must be valid OpenMetrics) and by a real Prometheus with exemplar storage
on, through its /api/v1/query_exemplars.  ``workers: 2``: the requests land on either
worker, the exemplars of both reach /metrics.

The requests carry their own sampled ``traceparent``, so the trace ids an exemplar may name
are known: each must be one of them, never a made-up one.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_004_families

from support import Client, free_port, stop_process, wait_listening, wait_until
from test_grafana_dashboard import _wait_ready
from test_tracing import _config as tracing_config
from test_workers import start_gateway

PROMETHEUS = shutil.which("prometheus")
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")      # what Prometheus 2.42 sends

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def traced(tmp_path_factory, backend_a, backend_b):
    """A gateway (2 workers, every request traced, spans to a port where nothing listens)
    and the trace ids of requests sent through it."""
    tmp = tmp_path_factory.mktemp("exemplars")
    nowhere = f"http://127.0.0.1:{free_port()}/v1/traces"
    g, admin = start_gateway(tmp, tracing_config(backend_a, backend_b, nowhere, 1.0))
    sent = set()

    def send(n: int) -> None:
        for _ in range(n):
            trace_id = os.urandom(16).hex()
            sent.add(trace_id)
            with Client(g.host, g.port) as c:     # a connection each: both workers serve
                path = "/delay/0.03" if len(sent) % 3 == 0 else "/get"    # two buckets at least
                r = c.request("GET", path, {"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"})
                assert r.status == 200
    g.send, g.sent, g.tmp = send, sent, tmp
    yield g, admin
    g.stop()


def _metrics(admin, accept: str | None) -> tuple[str, str]:
    status, headers, body = admin.request("GET", "/metrics", headers={"Accept": accept} if accept else {})
    assert status == 200
    return headers["content-type"], body.decode()


def _exemplars(text: str) -> dict[tuple, tuple[str, float]]:
    """(labels of a duration bucket) -> (trace id, value), from an OpenMetrics exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):      # raises on anything not OpenMetrics
        if fam.name == "gateway_request_duration_seconds":
            for s in fam.samples:
                if s.exemplar is not None:
                    out[tuple(sorted(s.labels.items()))] = (s.exemplar.labels["trace_id"], s.exemplar.value)
    return out


def test_openmetrics_buckets_carry_the_trace_ids_of_traced_requests(traced):
    g, admin = traced
    g.send(30)
    found = wait_until(lambda: len({dict(k)["cluster"] for k in _exemplars(_metrics(admin, PROMETHEUS_ACCEPT)[1])}) == 2
                       and _exemplars(_metrics(admin, PROMETHEUS_ACCEPT)[1]), timeout=15,
                       message="exemplars from both clusters in /metrics")
    ctype, text = _metrics(admin, PROMETHEUS_ACCEPT)
    assert ctype == "application/openmetrics-text; version=1.0.0; charset=utf-8" and text.endswith("# EOF\n")
    for labels, (trace_id, value) in found.items():
        assert trace_id in g.sent, trace_id
        bound = dict(labels)["le"]
        assert bound == "+Inf" or value <= float(bound), (labels, value)     # the exemplar fits its bucket
    assert {dict(k)["le"] for k in found} >= {"0.05"} and len({dict(k)["le"] for k in found}) >= 2, found
    # Counters keep their _total samples under a family named without it.
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "gateway_requests" in names and "gateway_requests_total" not in names


def test_the_004_text_format_is_unchanged_without_the_accept(traced):
    g, admin = traced
    g.send(3)
    ctype, text = _metrics(admin, None)
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    assert "# {" not in text and "# EOF" not in text
    assert any(f.name == "gateway_request_duration_seconds" for f in text_004_families(text))


@pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus binary (apt-get install prometheus)")
def test_a_real_prometheus_stores_the_exemplars(traced):
    g, admin = traced
    tmp, port = g.tmp, free_port()
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "gateway", "static_configs": [{"targets": [f"127.0.0.1:{admin.port}"]}]}]}))
    start = time.time()
    with open(tmp / "prometheus.out", "wb") as out:
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                                 "--enable-feature=exemplar-storage"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_listening("127.0.0.1", port, 30, prom)
        _wait_ready(port, prom)

        def stored() -> list[str]:
            g.send(5)       # exemplars are scraped when they change: keep new ones coming
            query = urllib.parse.urlencode({"query": "gateway_request_duration_seconds_bucket",
                                            "start": f"{start - 60:.3f}", "end": f"{time.time() + 60:.3f}"})
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query_exemplars?{query}", timeout=10) as r:
                body = json.loads(r.read())
            assert body["status"] == "success", body
            return [e["labels"]["trace_id"] for series in body["data"] for e in series["exemplars"]]
        trace_ids = wait_until(stored, timeout=60, message="exemplars stored by Prometheus")
        assert set(trace_ids) <= g.sent, set(trace_ids) - g.sent
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query=up", timeout=10) as r:
            assert json.loads(r.read())["data"]["result"][0]["value"][1] == "1"     # the scrape is healthy
    finally:
        stop_process(prom)
