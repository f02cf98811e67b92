"""Streaming: 64 MiB through the gateway each way without buffering it.

The gateway's RSS is sampled from a thread while the transfer runs; a proxy that buffered a
body would grow by about its size (64 MiB).  The assertion is that it grows by < 32 MiB.
"""
from __future__ import annotations

import hashlib
import threading
import time

import pytest

from gatewaytest import GatewayProcess, RssSampler, encode_chunked, static_source

SIZE = 64 * 1024 * 1024
RSS_LIMIT = 32 * 1024 * 1024
PIECE = 64 * 1024


@pytest.fixture(scope="module")
def gw(backend_a, tmp_path_factory):
    config = {
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address]})],
        "services": [{"name": "httpbin", "port": 80}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin",
                    "timeout": "60s"}],
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("streaming")).start()
    yield proc
    proc.stop()


def expected_sha256(n: int) -> str:
    block = bytes(range(256)) * 256      # 64 KiB, a multiple of 256: the pattern continues
    digest = hashlib.sha256()
    full, rest = divmod(n, len(block))
    for _ in range(full):
        digest.update(block)
    digest.update(block[:rest])
    return digest.hexdigest()


@pytest.fixture(scope="module")
def pattern_digest():
    return expected_sha256(SIZE)


class Pacer:
    """Sleeps so that reading proceeds at about ``rate`` bytes/s (a slow client)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.done = 0

    def __call__(self, n: int) -> None:
        self.done += n
        ahead = self.done / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(min(ahead, 0.5))


@pytest.mark.parametrize("path", ["/bytes", "/stream"])
def test_download_64mib_slow_reader(gw, pattern_digest, path):
    with gw.client(timeout=30) as client, RssSampler(gw.pid) as rss:
        client.send(client.build("GET", f"{path}/{SIZE}", {"X-Request-Id": f"dl{path}"}))
        resp = client.read_head()
        assert resp.status == 200
        if path == "/bytes":
            assert resp.header("content-length") == str(SIZE)
        else:
            assert resp.header("transfer-encoding") == "chunked"
        digest = hashlib.sha256()
        # ~16 MiB/s: far slower than the backend writes, so the gateway must push back.
        size = client.read_body(resp, "GET", digest.update, piece=PIECE, pace=Pacer(16 * 1024 * 1024))
        # the connection is still usable afterwards
        after = client.request("GET", "/anything/after")
        assert after.status == 200
    assert size == SIZE
    assert digest.hexdigest() == pattern_digest
    assert rss.growth < RSS_LIMIT, f"gateway RSS grew by {rss.growth / 2**20:.1f} MiB"
    entry = gw.log.by_ids([f"dl{path}"])[f"dl{path}"]
    assert entry["status"] == 200
    assert entry["bytes_sent"] >= SIZE


def generate_upload(sink, chunked: bool) -> str:
    """Send 64 MiB of pseudo-random-ish bytes through ``sink``; return their sha256."""
    digest = hashlib.sha256()
    block = hashlib.sha256(b"seed").digest() * 8192           # 256 KiB
    sent = 0
    i = 0
    while sent < SIZE:
        piece = bytes([i % 251]) + block[1:]
        i += 1
        digest.update(piece)
        sink(encode_chunked([piece])[:-5] if chunked else piece)   # one chunk, no terminator
        sent += len(piece)
    if chunked:
        sink(b"0\r\n\r\n")
    return digest.hexdigest()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_64mib(gw, chunked):
    rid = f"up-{'chunked' if chunked else 'cl'}"
    headers = [("X-Request-Id", rid), ("Content-Type", "application/octet-stream")]
    headers.append(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(SIZE)))
    with gw.client(timeout=30) as client, RssSampler(gw.pid) as rss:
        client.send(client.build("POST", "/upload", headers))
        digest = generate_upload(client.send, chunked)
        resp = client.read_response("POST")
    assert resp.status == 200, resp.body[:300]
    body = resp.json()
    assert body["received"] == SIZE
    assert body["sha256"] == digest
    assert rss.growth < RSS_LIMIT, f"gateway RSS grew by {rss.growth / 2**20:.1f} MiB"
    entry = gw.log.by_ids([rid])[rid]
    assert entry["status"] == 200
    assert entry["bytes_received"] >= SIZE
