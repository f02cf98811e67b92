"""Resource exhaustion against a real gateway process: many idle connections, a client that
never reads its large responses, and an endless upstream body to a slow reader.

Each time the gateway's RSS stays bounded (generous bounds: the point is "bounded", not a
benchmark) and a well-formed client on another connection keeps getting 200s quickly.
"""
from __future__ import annotations

import resource
import socket
import statistics
import time

import pytest

from support import (Client, GatewayProcess, RssSampler, TinyServer, read_request_head, rss_bytes,
                         static_source)

IDLE_CONNECTIONS = 2000
SLOW_HEADS = 200                    # of those, this many trickle a partial head (slowloris)
HEADER_TIMEOUT = 2.0
RSS_LIMIT = 200 * 1024 * 1024       # absolute bound on the gateway's RSS
GROWTH_LIMIT = 100 * 1024 * 1024    # bound on its growth during one attack
FAST = 1.0                          # seconds: the slowest acceptable well-formed request
FAST_MEDIAN = 0.1


def _endless(conn: socket.socket) -> None:
    """Answer any request with a chunked body that never ends (bounded: 60 s or a closed peer)."""
    if not read_request_head(conn):
        return
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b"e" * 65536)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        conn.sendall(chunk)             # blocks while the gateway applies backpressure


@pytest.fixture(scope="module")
def endless():
    server = TinyServer("127.0.0.10", _endless)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(backend_a, endless, tmp_path_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = IDLE_CONNECTIONS * 2 + 1024  # our ends here and the gateway's (it inherits the limit)
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    config = {
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address], "endless": [endless.address]})],
        "services": [{"name": "httpbin", "port": 80}, {"name": "endless", "port": 80}],
        "routes": [
            {"name": "endless", "match": {"path": {"prefix": "/endless"}}, "service": "endless"},
            {"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"},
        ],
        "timeouts": {"downstream_header": f"{HEADER_TIMEOUT}s"},
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("exhaustion")).start()
    yield proc
    proc.stop()
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _well_formed_latencies(gw, n: int = 20, tag: str = "probe") -> list[float]:
    """``n`` requests on one keep-alive connection; each must be a 200."""
    out = []
    with gw.client(timeout=5.0) as client:
        for i in range(n):
            start = time.monotonic()
            resp = client.request("GET", f"/anything/{tag}-{i}")
            out.append(time.monotonic() - start)
            assert resp.status == 200 and not resp.closes
    return out


def _assert_fast(latencies: list[float]) -> None:
    assert max(latencies) < FAST, latencies
    assert statistics.median(latencies) < FAST_MEDIAN, latencies


def test_two_thousand_idle_connections(gw):
    _well_formed_latencies(gw, 5, "warm")
    socks: list[socket.socket] = []
    try:
        with RssSampler(gw.pid) as rss:
            for i in range(IDLE_CONNECTIONS):
                s = socket.create_connection((gw.host, gw.port), timeout=5.0)
                socks.append(s)
                if i < SLOW_HEADS:
                    s.sendall(b"GET /anything/slow HTTP/1.1\r\nHost: gw.test\r\n")    # never finished
            latencies = _well_formed_latencies(gw, 20, "among-idle")
            time.sleep(HEADER_TIMEOUT + 0.5)      # the partial heads time out meanwhile
            latencies += _well_formed_latencies(gw, 20, "after-timeouts")
        _assert_fast(latencies)
        assert rss.peak < RSS_LIMIT and rss.growth < GROWTH_LIMIT, (rss.peak, rss.growth)
        # The trickled heads got their 408 and were closed; the idle ones are still open.
        for s in socks[:SLOW_HEADS]:
            s.settimeout(5.0)
            data = b""
            while True:
                piece = s.recv(65536)
                if not piece:
                    break
                data += piece
            assert data.startswith(b"HTTP/1.1 408 "), data[:60]
        socks[SLOW_HEADS].sendall(b"GET /anything/late HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        socks[SLOW_HEADS].settimeout(5.0)
        assert socks[SLOW_HEADS].recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for s in socks:
            s.close()
    _assert_fast(_well_formed_latencies(gw, 10, "after-close"))


def test_client_that_never_reads_large_responses(gw):
    """50 pipelined 16 MiB downloads that are never read: backpressure, not buffering."""
    size = 16 * 1024 * 1024
    with RssSampler(gw.pid) as rss:
        with gw.client(timeout=5.0) as hog:
            hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            hog.send(b"".join(Client.build("GET", f"/bytes/{size}") for _ in range(50)))
            deadline = time.monotonic() + 3.0
            latencies = []
            while time.monotonic() < deadline:
                latencies += _well_formed_latencies(gw, 5, "beside-hog")
    _assert_fast(latencies)
    assert rss.peak < RSS_LIMIT and rss.growth < GROWTH_LIMIT, (rss.peak, rss.growth)
    _assert_fast(_well_formed_latencies(gw, 10, "after-hog"))


def test_endless_upstream_body_to_slow_reader(gw, endless):
    """An upstream that never ends its body, a client reading 64 KiB every 50 ms."""
    with RssSampler(gw.pid) as rss:
        with gw.client(timeout=5.0) as slow:
            slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            slow.send(Client.build("GET", "/endless"))
            head = slow.read_head()
            assert head.status == 200 and head.header("transfer-encoding") == "chunked"
            received = 0
            latencies = []
            deadline = time.monotonic() + 3.0
            for i in range(1000):
                if time.monotonic() > deadline:
                    break
                received += len(slow.read_some(65536))
                time.sleep(0.05)
                if i % 10 == 0:
                    latencies += _well_formed_latencies(gw, 2, "beside-endless")
            assert received > 0
    _assert_fast(latencies)
    assert rss.peak < RSS_LIMIT and rss.growth < GROWTH_LIMIT, (rss.peak, rss.growth)
    assert rss_bytes(gw.pid) < RSS_LIMIT
    _assert_fast(_well_formed_latencies(gw, 10, "after-endless"))
