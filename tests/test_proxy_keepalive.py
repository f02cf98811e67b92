"""Upstream keep-alive: many client requests reuse a handful of pooled upstream connections.

Connections are counted from /proc: the gateway pid's socket inodes joined with the
established entries of /proc/net/tcp whose remote address is a backend.  Sampled from a
thread during the run, so connections opened and closed in between are counted too.
"""
from __future__ import annotations

import threading
from collections import Counter

import pytest

from support import GatewayProcess, static_source, upstream_connections

CLIENTS = 10
PER_CLIENT = 100


@pytest.fixture(scope="module")
def gw(backend_a, backend_b, tmp_path_factory):
    config = {
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address]}),
                    static_source("zone-b", {"httpbin": [backend_b.address]})],
        "services": [{"name": "httpbin", "port": 80}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}],
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("keepalive")).start()
    yield proc
    proc.stop()


def test_1000_requests_over_10_connections_reuse_upstream_connections(gw, backend_a, backend_b):
    addresses = [backend_a.address, backend_b.address]
    seen: set = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            try:
                seen.update(upstream_connections(gw.pid, addresses))
            except OSError:
                return

    errors: list[str] = []
    ids = [[f"ka-{c}-{i}" for i in range(PER_CLIENT)] for c in range(CLIENTS)]

    def run(c: int) -> None:
        try:
            with gw.client() as client:
                for rid in ids[c]:
                    resp = client.request("GET", f"/ka/{rid}", {"X-Request-Id": rid})
                    if resp.status != 200 or resp.closes:
                        errors.append(f"{rid}: {resp.status} close={resp.closes}")
        except Exception as exc:
            errors.append(f"client {c}: {exc!r}")

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=run, args=(c,)) for c in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        stop.set()
        sampler.join(timeout=5)
    seen.update(upstream_connections(gw.pid, addresses))
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    entries = gw.log.by_ids([rid for per in ids for rid in per]).values()
    assert len(entries) == CLIENTS * PER_CLIENT
    assert Counter(e["status"] for e in entries) == {200: 1000}
    # 10 client connections at a time, 2 endpoints: at most 10 per endpoint are ever needed.
    assert 1 <= len(seen) <= 20, f"{len(seen)} distinct upstream connections for 1000 requests"
    # Most requests went over a pooled connection (connect time 0 when reused).
    reused = sum(1 for e in entries if e["upstream_connect_ms"] == 0)
    assert reused >= 1000 - 20


def test_http_1_0_clients_reuse_upstream_connections_too(gw):
    """An HTTP/1.0 client (ab, openssl s_time) closes after each response; the upstream was
    asked in HTTP/1.1 and its connection goes back to the pool (one upstream connect in all,
    not one per request: nginx's ``proxy_http_version 1.1`` with ``Connection ""``)."""
    ids = [f"http10-{i}" for i in range(20)]
    for rid in ids:
        with gw.client() as client:
            client.send(f"GET /http10/{rid} HTTP/1.0\r\nHost: gw.test\r\nX-Request-Id: {rid}\r\n\r\n".encode())
            resp = client.read_response()
            assert resp.status == 200 and resp.closes
    entries = gw.log.by_ids(ids).values()
    assert len(entries) == len(ids)
    # Two endpoints: the first request to each may connect; every other reuses a connection.
    assert sum(1 for e in entries if e["upstream_connect_ms"] != 0) <= 2
