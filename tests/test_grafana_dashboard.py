"""deploy/grafana/gateway-dashboard.json, checked by a real Prometheus (Debian's
``prometheus`` package; scripts/test.sh installs it): Prometheus scrapes a running gateway
(``workers: 2``) under traffic, and every query of every panel returns data through
Prometheus's HTTP API (/api/v1/query), with a number in it, not only NaN.

The traffic makes every panel's subject happen: two clusters answer (traffic share,
latency per cluster), a third holds a dead endpoint (connect failures, retries to another
cluster, outlier ejections that end after a second and happen again), ``/close`` makes the
gateway open new upstream connections (connect time), tracing exports to a port where no
collector listens (dropped spans).
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from support import REPO, Client, PeerClosed, free_port, static_source, stop_process, wait_listening
from test_workers import start_gateway

DASHBOARD = REPO / "deploy" / "grafana" / "gateway-dashboard.json"
PROMETHEUS = shutil.which("prometheus")

pytestmark = pytest.mark.timeout(180)


def _queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, Grafana's variables filled in as
    Grafana does for "All" services and a short dashboard range."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = (target["expr"].replace("$__rate_interval", "15s")
                    .replace('service=~"$service"', 'service=~".*"'))
            assert "$" not in expr, expr
            out.append((panel["title"], expr))
    return out


def test_dashboard_is_importable_json():
    dash = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in dash["panels"]]
    for wanted in ("Traffic share per cluster", "Failover events", "Request duration p50 per cluster",
                   "Request duration p99 per cluster", "Errors by cause", "Ejected endpoints", "Retry rate"):
        assert wanted in titles
    assert len({p["id"] for p in dash["panels"]}) == len(titles)
    for panel in dash["panels"]:        # the latency panels show exemplars (trace links)
        if panel["title"].startswith("Request duration"):
            assert all(t.get("exemplar") is True for t in panel["targets"]), panel["title"]
    assert dash["__inputs"][0]["pluginId"] == "prometheus"


def _traffic(host: str, port: int, stop: threading.Event) -> None:
    paths = ["/get", "/get", "/get", "/close", "/delay/0.01"]
    i = 0
    while not stop.is_set():
        try:
            with Client(host, port, timeout=10) as c:
                for _ in range(20):
                    if stop.is_set():
                        return
                    c.request("GET", paths[i % len(paths)])
                    i += 1
        except (OSError, PeerClosed):
            time.sleep(0.05)


def _query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Prometheus answers 503 until its storage is up: wait for /-/ready (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "prometheus exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, "prometheus not ready"
        time.sleep(0.2)


def _has_number(result: list) -> bool:
    return any(not math.isnan(float(r["value"][1])) for r in result)


@pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus binary (apt-get install prometheus)")
def test_every_panel_query_returns_data_from_a_real_prometheus(tmp_path, backend_a, backend_b):
    dead = f"127.0.0.4:{free_port('127.0.0.4')}"
    cfg = {
        "workers": 2,
        "admin": f"127.0.0.1:{free_port()}",
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address]}),
                    static_source("zone-b", {"httpbin": [backend_b.address]}),
                    static_source("zone-dead", {"httpbin": [dead]})],
        "services": [{"name": "httpbin", "port": 8000,
                      "outlier_detection": {"consecutive_failures": 2, "base_ejection_time": "1s",
                                            "max_ejection_time": "1s"}}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin",
                    "retries": {"attempts": 3}}],
        "tracing": {"endpoint": f"http://127.0.0.1:{free_port()}/v1/traces", "sample_ratio": 1.0,
                    "flush_interval": "200ms"},
    }
    g, admin = start_gateway(tmp_path, cfg)
    prom_port = free_port()
    scrape = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": "gateway", "metrics_path": "/metrics",
                                  "static_configs": [{"targets": [f"127.0.0.1:{admin.port}"]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(scrape))
    stop = threading.Event()
    threads = [threading.Thread(target=_traffic, args=(g.host, g.port, stop), daemon=True)
               for _ in range(3)]
    prom = None
    try:
        for t in threads:
            t.start()
        with open(tmp_path / "prometheus.out", "wb") as out:
            prom = subprocess.Popen(
                [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        wait_listening("127.0.0.1", prom_port, 30, prom)
        _wait_ready(prom_port, prom)
        queries = _queries()
        pending = dict.fromkeys(queries)
        deadline = time.monotonic() + 90
        while pending and time.monotonic() < deadline:
            for q in list(pending):
                result = _query(prom_port, q[1])
                pending[q] = result
                if _has_number(result):
                    del pending[q]
            time.sleep(0.5)
        assert not pending, {f"{title}: {expr}": result for (title, expr), result in pending.items()}
        # The scrape itself was healthy all along.
        up = _query(prom_port, 'up{job="gateway"}')
        assert up and up[0]["value"][1] == "1"
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        if prom is not None:
            stop_process(prom)
        g.stop()
