"""Traffic split across clusters: smooth WRR gives exact counts, visible in the access log.

Two "zones" are two static sources whose backends live on different loopback addresses
(127.0.0.2 and 127.0.0.3), so ``upstream_host`` differs by IP as it does across clusters.
"""
from __future__ import annotations

import re
import threading
from collections import Counter

import pytest

from support import GatewayProcess, static_source

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|[+-]\d{2}:\d{2})$")

LOG_FIELDS = ("time", "request_id", "client", "method", "host", "path", "status", "bytes_sent",
              "bytes_received", "duration_ms", "upstream_host", "upstream_cluster",
              "upstream_service", "route", "attempts", "upstream_connect_ms", "upstream_response_ms")


@pytest.fixture(scope="module")
def gw(backend_a, backend_b, tmp_path_factory):
    a, b = backend_a.address, backend_b.address
    config = {
        "sources": [
            static_source("zone-a", {"equal": [a], "weighted": [{"address": a, "weight": 1}],
                                     "bysource": [a]}),
            static_source("zone-b", {"equal": [b], "weighted": [{"address": b, "weight": 3}]}),
            static_source("zone-c", {"bysource": [b]}, weight=300),
        ],
        # round_robin: the splits asserted are smooth WRR's exact ones (least_request, the
        # default, also weighs what is in flight).
        "services": [
            {"name": "equal", "port": 80, "sources": ["zone-a", "zone-b"], "lb": {"policy": "round_robin"}},
            {"name": "weighted", "port": 80, "sources": ["zone-a", "zone-b"], "lb": {"policy": "round_robin"}},
            {"name": "bysource", "port": 80, "sources": ["zone-a", "zone-c"], "lb": {"policy": "round_robin"}},
        ],
        "routes": [
            {"name": "equal", "match": {"path": {"prefix": "/equal"}}, "service": "equal"},
            {"name": "weighted", "match": {"path": {"prefix": "/weighted"}}, "service": "weighted"},
            {"name": "bysource", "match": {"path": {"prefix": "/bysource"}}, "service": "default/bysource"},
        ],
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("split")).start()
    yield proc
    proc.stop()


def send_many(gw, path: str, total: int, connections: int = 4, tag: str = "") -> list[str]:
    """``total`` GETs over ``connections`` keep-alive connections in threads; returns request ids."""
    per = total // connections
    ids = [[f"{tag}-{c}-{i}" for i in range(per)] for c in range(connections)]
    errors: list[str] = []

    def run(c: int) -> None:
        try:
            with gw.client() as client:
                for rid in ids[c]:
                    resp = client.request("GET", f"{path}/{rid}", {"X-Request-Id": rid})
                    if resp.status != 200:
                        errors.append(f"{rid}: {resp.status} {resp.body[:200]!r}")
        except Exception as exc:   # reported below, the thread must not raise
            errors.append(f"connection {c}: {exc!r}")

    threads = [threading.Thread(target=run, args=(c,)) for c in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "client threads did not finish in 60s"
    assert errors == []
    return [rid for per_conn in ids for rid in per_conn]


def test_equal_endpoints_split_500_500(gw, backend_a, backend_b):
    ids = send_many(gw, "/equal", 1000, tag="eq")
    entries = list(gw.log.by_ids(ids).values())
    assert len(entries) == 1000
    assert Counter(e["upstream_host"] for e in entries) == {backend_a.address: 500, backend_b.address: 500}
    assert Counter(e["upstream_cluster"] for e in entries) == {"zone-a": 500, "zone-b": 500}
    assert {e["upstream_service"] for e in entries} == {"default/equal"}
    assert {e["route"] for e in entries} == {"equal"}
    assert {e["status"] for e in entries} == {200}
    assert {e["attempts"] for e in entries} == {1}


def test_endpoint_weights_1_to_3(gw, backend_a, backend_b):
    ids = send_many(gw, "/weighted", 1000, tag="w")
    entries = list(gw.log.by_ids(ids).values())
    assert Counter(e["upstream_host"] for e in entries) == {backend_a.address: 250, backend_b.address: 750}
    assert Counter(e["upstream_cluster"] for e in entries) == {"zone-a": 250, "zone-b": 750}


def test_source_weights_100_vs_300(gw, backend_a, backend_b):
    ids = send_many(gw, "/bysource", 1000, tag="s")
    entries = list(gw.log.by_ids(ids).values())
    assert Counter(e["upstream_host"] for e in entries) == {backend_a.address: 250, backend_b.address: 750}
    assert Counter(e["upstream_cluster"] for e in entries) == {"zone-a": 250, "zone-c": 750}


def test_access_log_line_has_every_field(gw, backend_a, backend_b):
    rid = "fields-1"
    with gw.client() as client:
        resp = client.request("POST", "/equal/fields?x=1", {"X-Request-Id": rid, "Host": "api.example.com"},
                              body=b"0123456789")
    assert resp.status == 200
    echoed = resp.json()
    entry = gw.log.by_ids([rid])[rid]
    for name in LOG_FIELDS:
        assert name in entry, f"access log line lacks {name!r}: {entry}"
    assert RFC3339_MS.match(entry["time"]), entry["time"]
    assert entry["request_id"] == rid
    assert entry["client"] == "127.0.0.1"
    assert entry["method"] == "POST"
    assert entry["host"] == "api.example.com"
    assert entry["path"] == "/equal/fields?x=1"
    assert entry["status"] == 200
    assert entry["bytes_sent"] > len(resp.body)          # head + body
    assert entry["bytes_received"] >= 10                 # at least the body
    assert isinstance(entry["duration_ms"], (int, float)) and entry["duration_ms"] >= 0
    assert entry["upstream_host"] == echoed["address"]
    assert entry["upstream_cluster"] == {backend_a.address: "zone-a", backend_b.address: "zone-b"}[echoed["address"]]
    assert entry["upstream_service"] == "default/equal"
    assert entry["route"] == "equal"
    assert entry["attempts"] == 1
    assert isinstance(entry["upstream_connect_ms"], (int, float)) and entry["upstream_connect_ms"] >= 0
    assert isinstance(entry["upstream_response_ms"], (int, float)) and entry["upstream_response_ms"] >= 0
    assert "error" not in entry
    assert "tried_hosts" not in entry
