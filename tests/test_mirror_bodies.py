"""RequestMirror of requests with bodies: the mirror gets the head and the whole body.

The mirror is a TinyServer that records what it receives; the main backend is a devcluster
backend that echoes.  Bodies sized and chunked up to 64 KiB are mirrored byte for byte;
a larger body is not mirrored (and the main request is unaffected either way).
"""
from __future__ import annotations

import threading
import time

import pytest

from support import GatewayProcess, TinyServer, encode_chunked, static_source

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """A mirror endpoint: reads whole requests (Content-Length or chunked), answers 204."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes]] = []       # (head, body as on the wire)
        self.lock = threading.Lock()
        self.server = TinyServer("127.0.87.4", self.handle)

    def handle(self, conn) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    return
                data += more
            head, _, data = data.partition(b"\r\n\r\n")
            lower = head.lower()
            if b"transfer-encoding: chunked" in lower:
                while not data.endswith(b"0\r\n\r\n"):
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                body, data = data, b""
            else:
                length = 0
                for line in lower.split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(data) < length:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                body, data = data[:length], data[length:]
            with self.lock:
                self.requests.append((head, body))
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[bytes, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    break
            time.sleep(0.02)
        with self.lock:
            return list(self.requests)


@pytest.fixture
def mirrored(backend_a, tmp_path):
    recorder = Recorder()
    config = {"sources": [static_source("zone-a", {"svc-a": [backend_a.address]}),
                          static_source("zone-m", {"svc-m": [recorder.server.address]})],
              "services": [{"name": "svc-a", "port": 80}, {"name": "svc-m", "port": 80}],
              "routes": [{"name": "mirrored", "match": {}, "service": "svc-a", "mirrors": ["svc-m"]}]}
    proc = GatewayProcess(config, tmp_path).start()
    try:
        yield proc, recorder
    finally:
        proc.stop()
        recorder.server.stop()


def test_a_sized_body_is_mirrored_whole(mirrored):
    proc, recorder = mirrored
    body = bytes(range(256)) * 200                  # 51,200 bytes
    with proc.client() as client:
        resp = client.request("POST", "/upload", body=body)
        assert resp.status == 200 and resp.json()["received"] == len(body)
    [(head, got)] = recorder.wait(1)
    assert head.startswith(b"POST /upload HTTP/1.1") and got == body


def test_a_chunked_body_is_mirrored_with_its_framing(mirrored):
    proc, recorder = mirrored
    pieces = [b"a" * 1000, b"b" * 3000, b"c" * 10]
    with proc.client() as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + encode_chunked(pieces))
        resp = client.read_response()
        assert resp.status == 200 and resp.body == b"".join(pieces)
    [(head, got)] = recorder.wait(1)
    assert b"transfer-encoding: chunked" in head.lower()
    assert got == encode_chunked(pieces)


def test_a_body_over_64_kib_is_not_mirrored_and_the_request_is_served(mirrored):
    proc, recorder = mirrored
    with proc.client() as client:
        resp = client.request("POST", "/upload", body=b"x" * 70_000)
        assert resp.status == 200 and resp.json()["received"] == 70_000
        assert client.request("GET", "/after").status == 200
    requests = recorder.wait(1)
    assert [head.split(b"\r\n")[0] for head, _ in requests] == [b"GET /after HTTP/1.1"]
