"""Malformed requests get 400 and a closed connection; other clients are not disturbed."""
from __future__ import annotations

import threading
import time

import pytest

from support import GatewayProcess, static_source

MALFORMED = {
    "bare-lf": b"GET /anything HTTP/1.1\nHost: gw.test\n\n",
    "bare-lf-in-header": b"GET /anything HTTP/1.1\r\nHost: gw.test\nX-A: b\r\n\r\n",
    "cl-and-te": (b"POST /echo HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "te-and-cl": (b"POST /echo HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 5\r\n\r\n0\r\n\r\n"),
    "duplicate-cl": b"POST /echo HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "bad-cl": b"POST /echo HTTP/1.1\r\nHost: gw.test\r\nContent-Length: -1\r\n\r\n",
    "bad-method-chars": b"G(T /anything HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    "obs-fold": b"GET /anything HTTP/1.1\r\nHost: gw.test\r\nX-Folded: a\r\n  b\r\n\r\n",
    "space-before-colon": b"GET /anything HTTP/1.1\r\nHost : gw.test\r\n\r\n",
    "absolute-form": b"GET http://gw.test/anything HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    "missing-host": b"GET /anything HTTP/1.1\r\n\r\n",
    "bad-chunk-size": b"POST /echo HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


@pytest.fixture(scope="module")
def gw(backend_a, tmp_path_factory):
    config = {
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address]})],
        "services": [{"name": "httpbin", "port": 80}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}],
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("malformed")).start()
    yield proc
    proc.stop()


class SteadyClient:
    """A well-formed keep-alive client requesting in a loop (bounded) while malformed ones run."""

    def __init__(self, gw) -> None:
        self.gw = gw
        self.ok = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            with self.gw.client() as client:
                for i in range(20000):
                    if self._stop.is_set():
                        return
                    resp = client.request("GET", f"/anything/steady-{i}")
                    if resp.status != 200 or resp.closes:
                        self.errors.append(f"request {i}: {resp.status}")
                        return
                    self.ok += 1
        except Exception as exc:
            self.errors.append(repr(exc))

    def __enter__(self) -> "SteadyClient":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=20)
        assert not self._thread.is_alive()


@pytest.fixture(scope="module")
def steady(gw):
    with SteadyClient(gw) as client:
        yield client
    assert client.errors == []


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_gets_400_and_close(gw, steady, name):
    before = steady.ok
    with gw.client(timeout=5.0) as client:
        client.send(MALFORMED[name])
        resp = client.read_response("GET")
        assert resp.status == 400, (resp.status, resp.body)
        assert resp.closes
        assert resp.body                  # a short text naming the problem
        assert client.wait_closed(5.0), "connection left open after a malformed request"
    assert steady.errors == []
    # the well-formed client kept being served meanwhile (bounded wait for a few more answers)
    deadline = time.monotonic() + 5
    while steady.ok < before + 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert steady.ok >= before + 3, "the well-formed keep-alive client stalled"


def test_malformed_request_after_a_good_one_on_same_connection(gw, steady):
    with gw.client(timeout=5.0) as client:
        good = client.request("GET", "/anything/good")
        assert good.status == 200
        client.send(MALFORMED["obs-fold"])
        resp = client.read_response("GET")
        assert resp.status == 400
        assert client.wait_closed(5.0)
    assert steady.errors == []


def test_rejections_are_logged(gw, steady):
    entries = gw.log.matching(lambda e: e.get("status") == 400, n=len(MALFORMED))
    assert all(e.get("error") for e in entries)
