"""Streaming: 64 MiB through the gateway each way without buffering it.

The gateway's RSS is sampled from a thread while the transfer runs; a proxy that buffered a
body would grow by about its size (64 MiB).  The assertion is that it grows by < 32 MiB.
"""
from __future__ import annotations

import hashlib
import socket
import threading
import time

import orjson
import pytest

from support import GatewayProcess, Pacer, RssSampler, encode_chunked, expected_sha256, static_source

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
        # Short, so that a request stuck on a pooled connection fails fast (response heads
        # from the backend take milliseconds).
        "timeouts": {"response_header": "3s"},
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("streaming")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def pattern_digest():
    return expected_sha256(SIZE)


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


def test_pooled_connection_usable_after_slow_downloads(gw):
    """After a download read slowly by the client (the gateway paused reading its upstream
    connection meanwhile), that upstream connection goes back to the pool: it must be able to
    serve the next request.  4 MiB read in 16 KiB pieces at 16 MiB/s: the gateway's last
    write of each response usually finds the client's buffer full."""
    results = []
    size = 4 * 1024 * 1024
    for i in range(12):
        with gw.client(timeout=10) as client:
            client.send(client.build("GET", f"/bytes/{size}"))
            resp = client.read_head()
            got = client.read_body(resp, "GET", lambda b: None, piece=16384,
                                   pace=Pacer(16 * 1024 * 1024))
            after = client.request("GET", f"/anything/after-{i}", {"X-Request-Id": f"after-{i}"})
        results.append((resp.status, got, after.status))
        if after.status != 200:
            break
    assert results == [(200, size, 200)] * 12


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


class SlowAcceptUpstream:
    """An upstream whose connections take ~1 s to establish: its accept queue (listen(0)) is
    held full by one connection of ours, so the gateway's SYN is dropped and retransmitted.

    It answers each request with the size and sha256 of the body it received (reading
    Content-Length bytes, bounded in time), so a body that lost bytes on the way shows.
    """

    def __init__(self, host: str, hold: float = 0.3) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(0)
        self.address = "%s:%d" % self.listener.getsockname()
        self.filler = socket.create_connection(self.listener.getsockname(), timeout=2)
        self.hold = hold
        self._armed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def arm(self) -> None:
        """Start accepting ``hold`` seconds from now (after the gateway's SYN was dropped)."""
        self._armed.set()

    def _run(self) -> None:
        if not self._armed.wait(30) or self._stop.wait(self.hold):
            return
        self.filler.close()                  # its queued connection is accepted and ends at once
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1.5)
                try:
                    self._serve(conn)
                except OSError:
                    pass

    @staticmethod
    def _serve(conn) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return                       # the filler: closed without a request
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        digest = hashlib.sha256(body[:length])
        received = len(body[:length])
        try:
            while received < length:
                chunk = conn.recv(min(65536, length - received))
                if not chunk:
                    break
                digest.update(chunk)
                received += len(chunk)
        except socket.timeout:
            pass
        answer = orjson.dumps({"received": received, "sha256": digest.hexdigest()})
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))

    def stop(self) -> None:
        self._stop.set()
        self._armed.set()
        self.filler.close()
        self.listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def slow_accept():
    server = SlowAcceptUpstream("127.0.0.7")
    yield server
    server.stop()


@pytest.fixture
def slow_gw(slow_accept, tmp_path):
    config = {
        "sources": [static_source("zone-s", {"slow": [slow_accept.address]})],
        "services": [{"name": "slow", "port": 80, "outlier_detection": "off"}],
        "routes": [{"name": "slow", "match": {"path": {"prefix": "/"}}, "service": "slow",
                    "retries": {"attempts": 1}}],
        "timeouts": {"connect": "5s"},
    }
    proc = GatewayProcess(config, tmp_path).start()
    yield proc
    proc.stop()


def test_body_arriving_while_upstream_connect_is_slow_is_forwarded_whole(slow_gw, slow_accept):
    """A POST whose body arrives in two parts (32 KiB with the head, 224 KiB later) while the
    upstream connection is still being established must reach the upstream byte for byte."""
    first = bytes(range(256)) * 128                     # 32 KiB: fits the replay buffer
    rest = hashlib.sha256(b"rest").digest() * 7168      # 224 KiB: overflows it
    body = first + rest
    with slow_gw.client(timeout=15) as client:
        client.send(client.build("POST", "/upload", [("X-Request-Id", "slow-1")]).replace(
            b"\r\n\r\n", b"\r\nContent-Length: %d\r\n\r\n" % len(body), 1) + first)
        slow_accept.arm()
        time.sleep(0.15)                                # the gateway is still connecting
        client.send(rest)
        resp = client.read_response("POST")
    assert resp.status == 200, resp.body[:300]
    got = resp.json()
    assert got["received"] == len(body), f"upstream received {got['received']} of {len(body)} body bytes"
    assert got["sha256"] == hashlib.sha256(body).hexdigest()
    entry = slow_gw.log.by_ids(["slow-1"])["slow-1"]
    assert entry["upstream_connect_ms"] >= 200          # the connect really was slow
