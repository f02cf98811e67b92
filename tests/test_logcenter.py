"""``gateway logs``: filters, groups, shares and percentiles; and on a real run's access log, the
same counts as the run's own tally of who answered."""
from __future__ import annotations

import collections
import io
import subprocess
import time

import orjson
import pytest

from gateway import logcenter
from support import PYTHON, REPO, GatewayProcess

pytestmark = pytest.mark.timeout(60)


def _t(second: int, ms: int = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_790_000_000 + second)) + f".{ms:03d}Z"


def entry(second: int, status: int = 200, host: str | None = "10.0.0.1:80", cluster: str = "a",
          route: str | None = "test", ms: float = 1.0, **extra) -> dict:
    return {"time": _t(second), "status": status, "duration_ms": ms, "route": route,
            "upstream_service": "default/httpbin" if route else None,
            "upstream_host": host, "upstream_cluster": cluster if host else None, **extra}


def lines(entries: list[dict], junk: bool = True) -> io.BytesIO:
    data = b"".join(orjson.dumps(e) + b"\n" for e in entries)
    if junk:
        data += b"not json\n" + orjson.dumps({"level": "info", "message": "control plane"}) + b"\n\n"
    return io.BytesIO(data)


def test_percentile_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert [logcenter.percentile(values, p) for p in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert logcenter.percentile([7.0], 99) == 7.0
    assert logcenter.percentile([], 50) is None


def test_group_by_host_counts_shares_statuses_latency():
    entries = ([entry(0, host="10.0.0.1:80", ms=float(i)) for i in range(1, 61)] +
               [entry(1, host="10.0.0.2:80", cluster="b", ms=2.0) for _ in range(39)] +
               [entry(1, status=404, host=None, route=None, ms=0.1)])
    reader = logcenter.Reader()
    s = logcenter.summarize(reader.entries([lines(entries)]), by="upstream_host")
    assert reader.skipped == 2
    assert s["requests"] == 100
    groups = {g["key"]: g for g in s["groups"]}
    assert [g["key"] for g in s["groups"]] == ["10.0.0.1:80", "10.0.0.2:80", "-"]
    assert (groups["10.0.0.1:80"]["requests"], groups["10.0.0.1:80"]["share"]) == (60, 0.6)
    assert groups["10.0.0.1:80"]["upstream_cluster"] == "a"
    assert groups["10.0.0.1:80"]["latency_ms"] == {"p50": 30.0, "p90": 54.0, "p99": 60.0, "max": 60.0}
    assert groups["10.0.0.2:80"]["statuses"] == {"2xx": 39}
    assert groups["-"]["statuses"] == {"4xx": 1}
    assert s["seconds"] == 1.0


def test_filters_and_per_second():
    entries = [entry(0), entry(0, status=503), entry(1, status=502, cluster="b", host="10.0.0.2:80"),
               entry(2, route="other"), entry(2, status=200, cluster="b", host="10.0.0.2:80")]
    codes, classes = logcenter.parse_status_filter("5xx")
    f = logcenter.Filters(codes=codes, classes=classes)
    s = logcenter.summarize((e for e in entries if f(e)), by="upstream_cluster", per="second")
    assert {g["key"]: g["requests"] for g in s["groups"]} == {"a": 1, "b": 1}
    assert [(b["start"], b["groups"]) for b in s["buckets"]] == [
        (_t(0)[:19] + "Z", {"a": 1}), (_t(1)[:19] + "Z", {"b": 1})]

    f = logcenter.Filters(route="test", codes={200}, since=logcenter.entry_time(entry(1)))
    assert [e["time"] for e in entries if f(e)] == [_t(2)]
    assert logcenter.parse_status_filter("4xx,503") == ({503}, {4})
    with pytest.raises(ValueError):
        logcenter.parse_status_filter("oops")
    now = 1_790_000_600.0
    assert logcenter.parse_since("5m", now) == now - 300
    assert logcenter.parse_since(_t(3)[:19] + "Z", now) == 1_790_000_003


def test_cli_reads_stdin_json_and_text():
    data = lines([entry(0), entry(0, host="10.0.0.2:80", cluster="b"), entry(1, status=500)]).getvalue()
    result = subprocess.run([PYTHON, "-m", "gateway", "logs", "-", "--by", "status", "--json"], input=data,
                            capture_output=True, cwd=str(REPO), timeout=30)
    assert result.returncode == 0, result.stderr
    s = orjson.loads(result.stdout)
    assert {g["key"]: g["requests"] for g in s["groups"]} == {"200": 2, "500": 1}
    assert s["skipped_lines"] == 2
    result = subprocess.run([PYTHON, "-m", "gateway", "logs", "--by", "upstream_cluster", "--per", "second"],
                            input=data, capture_output=True, cwd=str(REPO), timeout=30, text=False)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert out.splitlines()[0].startswith("3 requests")
    assert "per second (UTC):" in out
    result = subprocess.run([PYTHON, "-m", "gateway", "logs", "-", "--status", "9zz"], input=data,
                            capture_output=True, cwd=str(REPO), timeout=30)
    assert result.returncode == 1 and b"status filter" in result.stderr


def test_logs_by_upstream_host_match_a_real_run(tmp_path, backend_a, backend_b):
    config = {
        "sources": [
            {"name": "zone-a", "type": "static", "services": [{"name": "httpbin", "endpoints": [backend_a.address]}]},
            {"name": "zone-b", "type": "static", "weight": 300,
             "services": [{"name": "httpbin", "endpoints": [backend_b.address]}]},
        ],
        "services": [{"name": "httpbin", "port": 8000}],
        "routes": [{"name": "test", "match": {"path": {"prefix": "/test"}}, "service": "httpbin"},
                   {"name": "status", "match": {"path": {"prefix": "/status"}}, "service": "httpbin"}],
    }
    g = GatewayProcess(config, tmp_path, "logs").start()
    tally: collections.Counter = collections.Counter()
    clusters: collections.Counter = collections.Counter()
    try:
        with g.client() as c:
            for i in range(80):
                r = c.request("GET", "/test/x" if i % 4 else "/status/503")
                assert r.status in (200, 503)
                tally[r.json()["address"]] += 1
                clusters[r.json()["cluster"]] += 1
            assert c.request("GET", "/nowhere").status == 404
        g.log.wait_count(81)
    finally:
        g.stop()

    def logs(*args: str) -> dict:
        result = subprocess.run([PYTHON, "-m", "gateway", "logs", str(g.log_path), "--json", *args],
                                capture_output=True, cwd=str(REPO), timeout=30)
        assert result.returncode == 0, result.stderr
        return orjson.loads(result.stdout)

    s = logs("--by", "upstream_host")
    assert {k: v for k, v in ((gr["key"], gr["requests"]) for gr in s["groups"]) if k != "-"} == dict(tally)
    assert s["requests"] == 81
    assert {gr["key"]: gr["share"] for gr in s["groups"]}[backend_b.address] == round(tally[backend_b.address] / 81, 4)
    assert all(gr["latency_ms"]["p50"] is not None for gr in s["groups"])
    by_cluster = {gr["key"]: gr["requests"] for gr in logs("--by", "upstream_cluster", "--route", "test")["groups"]}
    assert sum(by_cluster.values()) == 60
    assert {gr["key"]: gr["requests"] for gr in logs("--by", "route", "--status", "5xx")["groups"]} == {"status": 20}
    assert logs("--by", "status", "--since", "5m")["requests"] == 81
    assert logs("--since", "2000-01-01T00:00:00Z", "--service", "httpbin")["requests"] == 80
