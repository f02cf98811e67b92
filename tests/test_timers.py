"""Deadlines fire on time: a route's timeout, the response-head timeout, the request head and
body timeouts and the keep-alive idle timeout, over HTTP/1.1 and HTTP/2, each measured from
the client on connections started a few milliseconds apart (so that they do not all fall on
one tick of a coarse timer) against a gateway with ``workers: 2``.

The deadline ticker these replaced looked at every connection each 100 ms: a deadline fired
0-100 ms late, half of them more than 50 ms late.  The heap fires each within a millisecond or
two on a quiet machine (bench/timers.py measures it); the bound here leaves room for a busy one.
"""
from __future__ import annotations

import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import h2.config
import h2.connection
import h2.events
import pytest

from support import GatewayProcess, static_source, two_cluster_pods

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 0.3           # every deadline under test
SAMPLES = 12            # per kind, started STAGGER apart
STAGGER = 0.009
MEDIAN_LATE = 0.025     # the ticker's median was ~0.05
# How early a deadline may seem: where the client starts its clock before the gateway (it sends,
# then times), not at all; where after (idle: when it has read the answer), by its reading time.
EARLY = {"sent": 0.0005, "read": 0.05}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    for pods in two_cluster_pods(1):
        a, b = pods
        config = {
            "workers": 2,
            "sources": [static_source("a", {"demo/test": [a.address]}),
                        static_source("b", {"demo/test": [b.address]})],
            "services": [{"namespace": "demo", "name": "test", "port": 80}],
            "routes": [{"name": "timed", "match": {"path": {"prefix": "/timed"}},
                        "service": "demo/test", "rewrite": {"prefix": "/"}, "timeout": f"{TIMEOUT}s"},
                       {"name": "rest", "match": {"path": {"prefix": "/"}}, "service": "demo/test"}],
            "timeouts": {"response_header": f"{TIMEOUT}s", "downstream_idle": f"{TIMEOUT}s",
                         "downstream_header": f"{TIMEOUT}s", "body_idle": f"{TIMEOUT}s"},
        }
        gw = GatewayProcess(config, tmp_path_factory.mktemp("timers"), "timers").start()
        try:
            warm_up(gw)
            yield gw
        finally:
            gw.stop()


def warm_up(gw) -> None:
    """Both workers serving before anything is timed: a worker still starting holds the
    connections the kernel gave its socket until it runs (hundreds of milliseconds)."""
    for _ in range(24):
        elapsed, got = answer_after(gw, b"GET /test HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200"), got


def connect(gw) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_closed(s: socket.socket) -> bytes:
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    return got


def answer_after(gw, sent: bytes) -> tuple[float, bytes]:
    """Send ``sent`` and time the gateway's whole answer (it closes after it)."""
    with connect(gw) as s:
        start = time.monotonic()        # before sending: the gateway's clock starts later still
        s.sendall(sent)
        got = read_until_closed(s)
        return time.monotonic() - start, got


def route_timeout(gw):
    return answer_after(gw, b"GET /timed/delay/5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")


def response_header_timeout(gw):
    return answer_after(gw, b"GET /delay/5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")


def header_timeout(gw):
    return answer_after(gw, b"GET /test HTTP/1.1\r\nHost: t\r\n")


def body_idle_timeout(gw):
    return answer_after(gw, b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")


def idle_timeout(gw):
    """A keep-alive connection after its answer: closed when idle for the timeout."""
    with connect(gw) as s:
        s.sendall(b"GET /test HTTP/1.1\r\nHost: t\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        fields, body = head.split(b"\r\n\r\n", 1)
        length = int(fields.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        while len(body) < length:
            body += s.recv(65536)
        start = time.monotonic()
        rest = read_until_closed(s)
        return time.monotonic() - start, head[:12] + rest


def h2_idle_timeout(gw):
    """An HTTP/2 connection with no stream open goes away when idle for the timeout."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    with connect(gw) as s:
        s.sendall(conn.data_to_send())
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", "/test"), (":scheme", "http"),
                                (":authority", "t")], end_stream=True)
        s.sendall(conn.data_to_send())
        ended = False
        while not ended:
            for event in conn.receive_data(s.recv(65536)):
                ended = ended or isinstance(event, h2.events.StreamEnded)
            s.sendall(conn.data_to_send())
        start = time.monotonic()
        while True:
            events = conn.receive_data(s.recv(65536))
            gone = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
            if gone:
                return time.monotonic() - start, b"GOAWAY %d" % gone[0].error_code


def lateness(gw, kind) -> list[tuple[float, bytes]]:
    """``kind`` run SAMPLES times at once, started STAGGER apart: (seconds taken, answer) each."""
    def sample(i: int):
        time.sleep(i * STAGGER)
        return kind(gw)
    with ThreadPoolExecutor(SAMPLES) as pool:
        return list(pool.map(sample, range(SAMPLES)))


@pytest.mark.parametrize("kind, answer, clock_from", [
    (route_timeout, b"HTTP/1.1 504", "sent"),
    (response_header_timeout, b"HTTP/1.1 504", "sent"),
    (header_timeout, b"HTTP/1.1 408", "sent"),
    (body_idle_timeout, b"HTTP/1.1 408", "sent"),
    (idle_timeout, b"HTTP/1.1 200", "read"),
    (h2_idle_timeout, b"GOAWAY 0", "read"),
], ids=["route", "response_header", "downstream_header", "body_idle", "downstream_idle", "h2_idle"])
def test_deadline_fires_on_time(gw, kind, answer, clock_from):
    results = lateness(gw, kind)
    assert all(got.startswith(answer) for _, got in results), [got[:60] for _, got in results]
    late = sorted(elapsed - TIMEOUT for elapsed, _ in results)
    assert late[0] >= -EARLY[clock_from], f"fired early: {late}"
    assert statistics.median(late) < MEDIAN_LATE, f"late by {late}"

