"""HTTP/2 flow control through a real gateway process (h2c with prior knowledge).

* 64 MiB down one stream to a reader that opens its windows only as it reads, slowly, and
  64 MiB up one stream to an upstream that reads slowly: the bytes arrive intact and the
  gateway's RSS grows by less than a quarter of the body (it never holds a body whole).
* A client's RST_STREAM mid-response lets the upstream go; the connection's other streams
  go on.
* SIGTERM: GOAWAY first, the stream in flight completes, a stream opened after the GOAWAY is
  not taken, and the connection closes after.
"""
from __future__ import annotations

import hashlib
import os
import signal
import time

import orjson
import pytest

from support import (GatewayProcess, Pacer, RssSampler, expected_sha256, pattern_bytes, start_backend,
                         static_source, upstream_connections)
from h2frames import CANCEL, NO_ERROR, FrameClient

SIZE = 64 * 1024 * 1024
RSS_LIMIT = 16 * 1024 * 1024
RATE = 16 * 1024 * 1024             # bytes/s: the slow reader, and the slow upstream
PIECE = 16 * 1024                   # the slow reader's reads


@pytest.fixture(scope="module")
def backends():
    """One backend for the transfers, one only for the reset downloads (to count its
    upstream connections)."""
    main = start_backend("127.0.0.2", "h2", "flow-0")
    big = start_backend("127.0.0.4", "h2", "big-0")
    yield main, big
    main.stop()
    big.stop()


def gateway_config(main, big) -> dict:
    return {
        "sources": [static_source("zone-a", {"httpbin": [main.address], "big": [big.address]})],
        "services": [{"name": "httpbin", "port": 80}, {"name": "big", "port": 80}],
        "routes": [
            {"name": "big", "match": {"host": ["big.test"]}, "service": "big", "timeout": "60s"},
            {"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin", "timeout": "60s"},
        ],
    }


@pytest.fixture(scope="module")
def gw(backends, tmp_path_factory):
    proc = GatewayProcess(gateway_config(*backends), tmp_path_factory.mktemp("h2-flow")).start()
    yield proc
    proc.stop()


@pytest.fixture
def client(gw):
    with FrameClient(gw.host, gw.port, timeout=30, auto_window=False) as conn:
        yield conn


def read_slowly(client: FrameClient, stream, deadline: float) -> None:
    """Read ``stream`` to its end PIECE bytes at a time at about RATE, opening the windows
    by exactly what was read (the gateway may send no more than that ahead)."""
    pace = Pacer(RATE)
    while not stream.done:
        assert time.monotonic() < deadline and not client.closed, (stream.received, client.goaway)
        before = stream.received
        client.pump(2.0, size=PIECE)
        read = stream.received - before
        client.open_window(stream.id, read)
        pace(read)


@pytest.mark.parametrize("path", ["/bytes", "/stream"])
def test_download_64mib_to_a_slow_reader(gw, client, path):
    """/bytes has a content-length, /stream is chunked upstream (de-chunked into DATA)."""
    digest = hashlib.sha256()
    with RssSampler(gw.pid) as rss:
        stream = client.request(f"{path}/{SIZE}", headers=[("x-request-id", f"h2-down{path}")],
                                sink=digest.update)
        read_slowly(client, stream, time.monotonic() + 60)
    print(f"h2 download {path}: 64 MiB at {RATE >> 20} MiB/s, RSS +{rss.growth / 2**20:.1f} MiB")
    assert stream.status == 200 and stream.ended and stream.reset is None
    assert stream.received == SIZE
    assert digest.hexdigest() == expected_sha256(SIZE)
    assert rss.growth < RSS_LIMIT, f"gateway RSS grew by {rss.growth / 2**20:.1f} MiB"
    assert gw.log.by_ids([f"h2-down{path}"])[f"h2-down{path}"]["bytes_sent"] >= SIZE


def test_upload_64mib_to_a_slow_upstream(gw, client):
    """The upstream reads at RATE: the gateway's windows open only as it takes the bytes, so
    the client cannot push the body into the gateway's memory."""
    digest = hashlib.sha256()

    def pieces():
        for offset in range(0, SIZE, 1 << 20):
            piece = pattern_bytes(offset, 1 << 20)
            digest.update(piece)
            yield piece
    with RssSampler(gw.pid) as rss:
        stream = client.request(f"/upload?rate={RATE}", method="POST", end_stream=False,
                                headers=[("x-request-id", "h2-up"), ("content-type", "application/octet-stream")])
        started = time.monotonic()
        client.send_body(stream, pieces(), started + 60)
        client.auto_window = True       # the small JSON answer
        client.response(stream, timeout=30)
    elapsed = time.monotonic() - started
    print(f"h2 upload: 64 MiB in {elapsed:.1f} s to an upstream reading {RATE >> 20} MiB/s, "
          f"RSS +{rss.growth / 2**20:.1f} MiB")
    assert stream.status == 200, (stream.status, stream.reset, bytes(stream.body[:200]))
    answer = orjson.loads(stream.body)
    assert answer["received"] == SIZE
    assert answer["sha256"] == digest.hexdigest()
    assert elapsed > 0.8 * SIZE / RATE          # the upstream's pace held the client back
    assert rss.growth < RSS_LIMIT, f"gateway RSS grew by {rss.growth / 2**20:.1f} MiB"


def big_connections(gw, big) -> int:
    return len(upstream_connections(gw.pid, [big.address]))


def test_reset_mid_response_releases_the_upstream(gw, backends):
    """Two big downloads and a slow request on one connection: the client resets one
    download after 1 MiB.  Its upstream connection is closed (an unfinished response cannot
    go back to the pool), the other download and the slow request complete."""
    _, big = backends
    with FrameClient(gw.host, gw.port, timeout=30) as client:
        size = 8 * 1024 * 1024
        doomed = client.request(f"/bytes/{SIZE}", authority="big.test", headers=[("x-request-id", "h2-doomed")],
                                sink=lambda b: None)
        other = client.request(f"/bytes/{size}", authority="big.test", sink=lambda b: None)
        slow = client.request("/delay/0.5")
        deadline = time.monotonic() + 10
        while doomed.received < 1 << 20:
            assert time.monotonic() < deadline, doomed.received
            client.pump(1.0)
        assert big_connections(gw, big) == 2
        client.reset(doomed.id, CANCEL)
        client.response(other, timeout=30)
        client.response(slow)
        assert (other.status, other.received, slow.status) == (200, size, 200)
        deadline = time.monotonic() + 10
        while big_connections(gw, big) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert big_connections(gw, big) <= 1, "the reset stream's upstream connection is still open"
        assert client.get("/anything/after-reset").status == 200
        assert client.goaway is None and not doomed.ended
    entry = gw.log.by_ids(["h2-doomed"])["h2-doomed"]
    assert entry["bytes_sent"] < SIZE, entry


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drain_goaway(backends, tmp_path, workers):
    """SIGTERM: GOAWAY (NO_ERROR) naming the last stream taken; that stream, in flight,
    completes; a stream opened after the GOAWAY is not taken; then the connection closes.
    With workers: 2 the supervisor passes the drain on to the worker holding the connection."""
    config = gateway_config(*backends)
    config["timeouts"] = {"drain": "5s"}
    config["workers"] = workers
    gw = GatewayProcess(config, tmp_path).start()
    try:
        with FrameClient(gw.host, gw.port) as client:
            assert client.get("/anything/ready").status == 200     # a worker serves by now
            in_flight = client.request("/delay/1", headers=[("x-request-id", "h2-in-flight")])
            client.pump(0.3)            # taken: the gateway reads it before the signal
            os.kill(gw.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while client.goaway is None:
                assert time.monotonic() < deadline and not client.closed, "no GOAWAY after SIGTERM"
                client.pump(0.5)
            assert client.goaway.error_code == NO_ERROR
            assert client.goaway.last_stream_id == in_flight.id
            late = client.request("/anything/late")
            client.response(in_flight)
            assert in_flight.status == 200
            assert client.wait_closed(5), "the connection stayed open after its last stream"
            assert late.status is None and not late.done
        gw.proc.wait(timeout=10)
    finally:
        gw.stop()
    assert [e["path"] for e in gw.log.entries()] == ["/anything/ready", "/delay/1"]
