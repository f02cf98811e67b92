"""HTTP/2 from clients: h2c with prior knowledge on the plain listener, ALPN h2 on the TLS one,
each stream balanced on its own over both clusters' HTTP/1.1 pods.

Real clients: curl (--http2-prior-knowledge, --http2 over TLS) and the ``h2`` library over a
socket (tests/h2client.py), against a real gateway process and devcluster backends.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections import Counter

import orjson
import pytest

from support import (GatewayProcess, TinyServer, free_port, pattern_bytes, read_request_head,
                         static_source, two_cluster_pods)
from h2client import H2Client
from support import Pki
from test_tls import client_context

pytestmark = pytest.mark.timeout(90)

GRPC = [("content-type", "application/grpc"), ("te", "trailers")]


def config(pods, **extra) -> dict:
    a, b = pods
    prefixes = ["/test", "/bytes", "/stream", "/echo", "/upload", "/delay", "/headers", "/status"]
    return {
        "sources": [static_source("a", {"demo/test": [a.address], "demo/rr": [a.address],
                                        "demo/empty": []}),
                    static_source("b", {"demo/test": [b.address], "demo/rr": [b.address]})],
        "services": [{"namespace": "demo", "name": "test", "port": 80},
                     {"namespace": "demo", "name": "rr", "port": 80, "lb": {"policy": "round_robin"}},
                     {"namespace": "demo", "name": "empty", "port": 80}],
        "routes": [{"name": p.strip("/"), "match": {"path": {"prefix": p}}, "service": "demo/test"}
                   for p in prefixes]
        + [{"name": "empty", "match": {"path": {"prefix": "/empty"}}, "service": "demo/empty"},
           {"name": "rr", "match": {"path": {"prefix": "/rr"}}, "service": "demo/rr"}],
        **extra,
    }


@pytest.fixture(scope="module")
def pods():
    yield from two_cluster_pods(1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def gw(pods, pki, tmp_path_factory):
    leaf = pki.leaf("gw.test")
    tls_port = free_port()
    gw = GatewayProcess(config(pods, tls={"listen": f"127.0.0.1:{tls_port}",
                                          "certificates": [{"cert": str(leaf.cert), "key": str(leaf.key)}]}),
                        tmp_path_factory.mktemp("h2"), "h2").start()
    gw.tls_port = tls_port
    yield gw
    gw.stop()


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, timeout=20)


def test_curl_prior_knowledge_gets_and_posts_through_to_http1_pods(gw):
    url = f"http://127.0.0.1:{gw.port}"
    got = curl("--http2-prior-knowledge", "-w", "%{http_version}", f"{url}/test")
    body, version = got.stdout[:-1], got.stdout[-1:]
    assert got.returncode == 0 and version == b"2", got
    seen = orjson.loads(body)
    assert seen["method"] == "GET" and seen["headers"]["Host"] == f"127.0.0.1:{gw.port}"
    assert seen["headers"]["X-Forwarded-Proto"] == "http"
    # A sized body goes with its Content-Length; one of unknown length (-T -) chunked.
    sized = orjson.loads(curl("--http2-prior-knowledge", "--data-binary", "a" * 5000, f"{url}/upload").stdout)
    assert sized == {**sized, "received": 5000, "sha256": hashlib.sha256(b"a" * 5000).hexdigest()}
    data = pattern_bytes(0, 300_000)
    streamed = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-T", "-", f"{url}/upload"],
                              input=data, capture_output=True, timeout=20)
    assert orjson.loads(streamed.stdout)["sha256"] == hashlib.sha256(data).hexdigest(), streamed


def test_alpn_h2_on_the_tls_listener(gw, pki):
    got = curl("--http2", "--cacert", str(pki.ca), "--resolve", f"gw.test:{gw.tls_port}:127.0.0.1",
               "-w", "%{http_version}", f"https://gw.test:{gw.tls_port}/headers")
    assert got.returncode == 0 and got.stdout.endswith(b"2"), got
    assert orjson.loads(got.stdout[:-1])["headers"]["X-Forwarded-Proto"] == "https"
    with H2Client("127.0.0.1", gw.tls_port, client_context(pki.ca), "gw.test") as c:
        assert c.get("/test").status == 200


def test_the_streams_of_one_connection_are_balanced_over_both_clusters(gw):
    # round_robin, so the split is exact: each stream is its own pick, not the connection's.
    # (The default least_request rightly leans toward the faster pod on a busy machine.)
    with H2Client("127.0.0.1", gw.port) as c:
        sids = [c.request("GET", f"/rr?i={i}") for i in range(100)]   # all open at once
        answers = c.wait(*sids)
    assert [a.status for a in answers] == [200] * 100
    clusters = Counter(orjson.loads(bytes(a.body))["cluster"] for a in answers)
    assert clusters == {"a": 50, "b": 50}, clusters


def test_response_bodies_sized_and_chunked_arrive_whole(gw):
    with H2Client("127.0.0.1", gw.port) as c:
        sized, chunked = c.wait(c.request("GET", "/bytes/300000"), c.request("GET", "/stream/300000"))
    assert sized.status == chunked.status == 200
    assert bytes(sized.body) == bytes(chunked.body) == pattern_bytes(0, 300_000)
    assert sized.headers["content-length"] == "300000"
    assert "content-length" not in chunked.headers and "transfer-encoding" not in chunked.headers


def test_a_request_body_of_unknown_length_is_echoed_back(gw):
    body = os.urandom(1 << 20)
    with H2Client("127.0.0.1", gw.port) as c:
        sid = c.request("POST", "/echo", end=False)
        c.send_body(sid, body)
        answer, = c.wait(sid)
    assert answer.status == 200 and bytes(answer.body) == body


def test_the_gateways_errors_are_text_for_http_and_grpc_status_for_grpc_calls(gw):
    with H2Client("127.0.0.1", gw.port) as c:
        plain, grpc_404, plain_503, grpc_503 = c.wait(
            c.request("GET", "/nowhere"), c.request("POST", "/nowhere", GRPC),
            c.request("GET", "/empty"), c.request("POST", "/empty", GRPC))
    assert plain.status == 404 and bytes(plain.body) == b"no route matches this request\n"
    assert plain_503.status == 503 and plain.headers["content-type"].startswith("text/plain")
    # gRPC clients read the status from a trailers-only answer: HTTP 200, grpc-status.
    assert grpc_404.status == 200 and grpc_404.grpc_status == "12" and not grpc_404.body
    assert grpc_503.status == 200 and grpc_503.grpc_status == "14"
    assert grpc_503.headers["grpc-message"] == "no healthy endpoint for service demo/empty"
    assert grpc_503.headers["content-type"] == "application/grpc"


def test_grpc_timeout_is_the_deadline_and_ends_deadline_exceeded(gw):
    with H2Client("127.0.0.1", gw.port) as c:
        started = time.monotonic()
        answer = c.get("/delay/3", [*GRPC, ("grpc-timeout", "300m")])
        took = time.monotonic() - started
    assert answer.grpc_status == "4", answer
    assert 0.25 < took < 2.0, took
    entry = gw.log.matching(lambda e: e["path"] == "/delay/3")[-1]
    assert entry["protocol"] == "HTTP/2" and entry["grpc_status"] == 4 and entry["status"] == 504


def test_a_stream_reset_by_the_client_ends_alone(gw):
    with H2Client("127.0.0.1", gw.port) as c:
        slow = c.request("GET", "/delay/2?reset-me")
        time.sleep(0.2)
        c.conn.reset_stream(slow)
        c.flush()
        assert c.get("/test").status == 200     # the connection goes on
    entry = gw.log.matching(lambda e: e["path"] == "/delay/2?reset-me")[0]
    assert entry["status"] == 499, entry


def test_a_malformed_request_gets_its_4xx_and_its_neighbours_are_answered(gw):
    with H2Client("127.0.0.1", gw.port) as c:
        ok_before = c.request("GET", "/test")
        bad = c.request("GET", "/test", [("x-big", "v" * 70_000)])   # over max_request_head
        ok_after = c.request("GET", "/test")
        before, rejected, after = c.wait(ok_before, bad, ok_after)
    assert before.status == after.status == 200
    assert rejected.status == 431, rejected          # RFC 9113 10.5.1, that stream alone


def _until_closed(client) -> list:
    """The frames the server sends until it closes the connection (bounded)."""
    frames, deadline = [], time.monotonic() + 5
    while not client.closed and time.monotonic() < deadline:
        frames += client.pump(0.5)
    return frames


def test_a_stream_id_lower_than_an_earlier_one_is_a_connection_error(gw):
    """RFC 9113 5.1.1: HEADERS on stream 3 after stream 5 opened: GOAWAY(PROTOCOL_ERROR)."""
    from h2frames import PROTOCOL_ERROR, FrameClient
    from hyperframe.frame import HeadersFrame
    with FrameClient("127.0.0.1", gw.port) as c:
        c.send(HeadersFrame(5, c.head_block("/test"), flags=["END_HEADERS", "END_STREAM"]),
               HeadersFrame(3, c.head_block("/test"), flags=["END_HEADERS", "END_STREAM"]))
        _until_closed(c)
        assert c.goaway is not None and c.goaway.error_code == PROTOCOL_ERROR


def answer_to(port: int, data: bytes) -> bytes:
    """All a connection sent back after ``data``, to its close."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def goaway_code(out: bytes) -> int | None:
    """The error code of the GOAWAY among ``out``'s HTTP/2 frames (None: no GOAWAY, or not frames)."""
    from hyperframe.frame import Frame, GoAwayFrame
    while len(out) >= 9:
        frame, length = Frame.parse_frame_header(out[:9])
        frame.parse_body(memoryview(out[9:9 + length]))
        if isinstance(frame, GoAwayFrame):
            return frame.error_code
        out = out[9 + length:]
    return None


def test_an_http2_request_line_with_a_wrong_preface_gets_goaway_an_http1_one_a_400(gw):
    """RFC 9113 3.4: a client that starts HTTP/2's preface and gets the rest wrong gets a
    connection error PROTOCOL_ERROR; a line that is not HTTP/2's stays an HTTP/1.1 request."""
    from h2frames import PROTOCOL_ERROR
    assert goaway_code(answer_to(gw.port, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")) == PROTOCOL_ERROR
    assert answer_to(gw.port, b"INVALID CONNECTION PREFACE\r\n\r\n").startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("cleartext", ["h2c", "http1"])
def test_http_cleartext_makes_the_plain_port_speak_one_protocol(pods, tmp_path, cleartext):
    """``http.cleartext: h2c``: every client is an HTTP/2 one, so any other first bytes are a
    bad preface (GOAWAY PROTOCOL_ERROR, as h2spec's 3.5 case 2 wants of an h2c server);
    ``http1``: HTTP/2's preface is only a request line HTTP/1.1 does not know."""
    from h2frames import PROTOCOL_ERROR
    gw = GatewayProcess(config(pods, http={"cleartext": cleartext}), tmp_path, cleartext).start()
    try:
        invalid = answer_to(gw.port, b"INVALID CONNECTION PREFACE\r\n\r\n")
        http1 = answer_to(gw.port, b"GET /test HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        if cleartext == "h2c":
            assert goaway_code(invalid) == goaway_code(http1) == PROTOCOL_ERROR, (invalid, http1)
            with H2Client("127.0.0.1", gw.port) as c:
                assert c.get("/test").status == 200
        else:
            assert invalid.startswith(b"HTTP/1.1 400 ") and http1.startswith(b"HTTP/1.1 200 ")
            preface = answer_to(gw.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            assert preface.startswith(b"HTTP/1.1 ") and not preface.startswith(b"HTTP/1.1 2"), preface
    finally:
        gw.stop()


def test_drain_sends_goaway_and_lets_the_streams_in_flight_finish(pods, tmp_path):
    gw = GatewayProcess(config(pods, timeouts={"drain": "5s"}), tmp_path, "drain").start()
    try:
        # nghttp prints every frame (the h2 library drops a stream's answer after a GOAWAY)
        client = subprocess.Popen(["nghttp", "-v", "-t", "10", f"http://127.0.0.1:{gw.port}/delay/1"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(0.3)
        os.kill(gw.pid, signal.SIGTERM)
        frames = client.communicate(timeout=15)[0].decode()
        assert "recv GOAWAY frame" in frames and "error_code=NO_ERROR" in frames, frames
        assert frames.index("recv GOAWAY frame") < frames.index(":status: 200"), frames
        assert '"path":"/delay/1"' in frames     # the backend's answer, whole
        gw.proc.wait(timeout=10)
        assert gw.proc.returncode == 0
    finally:
        gw.stop()


def test_with_two_workers(pods, tmp_path):
    gw = GatewayProcess(config(pods, workers=2), tmp_path, "w2").start()
    try:
        clusters = Counter()
        for _ in range(4):
            with H2Client("127.0.0.1", gw.port) as c:
                answers = c.wait(*[c.request("GET", "/rr") for _ in range(20)])
                assert [a.status for a in answers] == [200] * 20
                clusters.update(orjson.loads(bytes(a.body))["cluster"] for a in answers)
        # round_robin per worker: 20 streams alternate, whichever worker took the connection.
        assert clusters == {"a": 40, "b": 40}, clusters
    finally:
        gw.stop()


def test_100_continue_reaches_a_client_that_waits_for_it(gw):
    # curl sends the body only after "100 Continue" (or its timeout: 5 s here).
    started = time.monotonic()
    got = curl("--http2-prior-knowledge", "-H", "Expect: 100-continue", "--expect100-timeout", "5",
               "--data-binary", "b" * 2000, "-w", " %{http_code}", f"http://127.0.0.1:{gw.port}/upload")
    took = time.monotonic() - started
    assert got.stdout.endswith(b" 200") and b'"received":2000' in got.stdout, got
    assert took < 2.0, took


def test_an_http1_upstreams_chunked_trailers_reach_an_http2_client(tmp_path):
    def chunked_with_trailers(conn) -> None:
        while read_request_head(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc123\r\nConnection: x\r\n\r\n")

    server = TinyServer("127.0.0.2", chunked_with_trailers)
    gw = GatewayProcess({"sources": [static_source("a", {"demo/t": [server.address]})],
                         "services": [{"namespace": "demo", "name": "t", "port": 80}],
                         "routes": [{"name": "t", "match": {"path": {"prefix": "/"}}, "service": "demo/t"}]},
                        tmp_path, "trailers").start()
    try:
        with H2Client("127.0.0.1", gw.port) as c:
            answer = c.get("/t")
        assert answer.status == 200 and bytes(answer.body) == b"hello world"
        assert answer.trailers == {"x-checksum": "abc123"}     # hop-by-hop "connection" left out
    finally:
        gw.stop()
        server.stop()


def test_an_http1_upstreams_head_reaches_an_http2_client_field_by_field(tmp_path):
    """Names lower-cased (RFC 9113 §8.2.2: the client's h2 library refuses any other), repeated
    fields each in its place, hop-by-hop ones left out: a head passed on as it came (its field
    lines straight to the HPACK encoder) and one the proxy changed (a Connection-listed name)."""
    heads = {b"/as-it-came": b"", b"/changed": b"Connection: X-Hop\r\nX-Hop: 1\r\n"}

    def mixed_case_head(conn) -> None:
        while head := read_request_head(conn):
            path = head.split(b" ", 2)[1]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\n"
                         b"X-Mixed-Case:  padded value \t\r\nKeep-Alive: timeout=5\r\n"
                         + heads[path] + b"SET-COOKIE: b=2\r\nVary: Accept\r\n\r\nok")

    server = TinyServer("127.0.0.2", mixed_case_head)
    gw = GatewayProcess({"sources": [static_source("a", {"demo/t": [server.address]})],
                         "services": [{"namespace": "demo", "name": "t", "port": 80}],
                         "routes": [{"name": "t", "match": {"path": {"prefix": "/"}}, "service": "demo/t"}]},
                        tmp_path, "h1-head").start()
    try:
        with H2Client("127.0.0.1", gw.port) as c:
            for path in heads:
                answer = c.get(path.decode())
                assert answer.status == 200 and bytes(answer.body) == b"ok"
                assert sorted(answer.fields[1:]) == sorted([
                    ("content-length", "2"), ("set-cookie", "a=1"), ("x-mixed-case", "padded value"),
                    ("set-cookie", "b=2"), ("vary", "Accept")]), (path, answer.fields)
                cookies = [value for name, value in answer.fields if name == "set-cookie"]
                assert cookies == ["a=1", "b=2"], cookies
    finally:
        gw.stop()
        server.stop()


def test_an_http2_clients_trailers_reach_an_http1_upstream_in_the_last_chunk(tmp_path):
    received = []

    def record_chunked_request(conn) -> None:
        head, _, body = read_request_head(conn).partition(b"\r\n\r\n")
        while b"0\r\n" not in body or not body.endswith(b"\r\n\r\n"):     # to the last chunk's end
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk
        received.append((head, body))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = TinyServer("127.0.0.2", record_chunked_request)
    gw = GatewayProcess({"sources": [static_source("a", {"demo/t": [server.address]})],
                         "services": [{"namespace": "demo", "name": "t", "port": 80}],
                         "routes": [{"name": "t", "match": {"path": {"prefix": "/"}}, "service": "demo/t"}]},
                        tmp_path, "trailers-in").start()
    try:
        with H2Client("127.0.0.1", gw.port) as c:
            sid = c.request("POST", "/t", [("te", "trailers")], b"hello", end=False)
            c.conn.send_headers(sid, [("x-checksum", "abc123"), ("authorization", "Bearer late")],
                                end_stream=True)
            c.flush()
            answer, = c.wait(sid)
        assert answer.status == 200 and bytes(answer.body) == b"ok"
        head, body = received[0]
        assert b"transfer-encoding: chunked" in head.lower()
        # the trailer in the last chunk; authorization is no trailer (RFC 9110 6.5.1): left out
        assert body == b"5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n", body
    finally:
        gw.stop()
        server.stop()


def test_an_upload_stalled_by_a_slow_upstream_does_not_stall_the_connections_other_uploads(gw):
    # The stalled stream's window stays shut; the connection's must not shut with it.  With
    # a connection window no larger than a stream's, the other upload would get the window
    # back only as fast as the slow upstream reads (4 KiB/s): over a minute for its 300 KB,
    # far past the answer's timeout.
    with H2Client("127.0.0.1", gw.port) as c:
        slow = c.request("POST", "/upload?rate=4096", end=False)
        chunk = b"s" * 16384
        deadline = time.monotonic() + 20
        last_progress = time.monotonic()
        while time.monotonic() - last_progress < 1.0 and time.monotonic() < deadline:
            if c.conn.local_flow_control_window(slow) >= len(chunk):
                c.conn.send_data(slow, chunk)
                c.flush()
                last_progress = time.monotonic()
            else:
                try:
                    c.read_some(time.monotonic() + 0.1)
                except TimeoutError:
                    pass
        assert time.monotonic() < deadline, "the slow upload never stalled"
        fast = c.request("POST", "/upload", end=False)
        c.send_body(fast, b"f" * 300_000)
        answer, = c.wait(fast, timeout=10)
        assert answer.status == 200 and b'"received":300000' in bytes(answer.body)
        c.conn.reset_stream(slow)
        c.flush()


def test_headers_on_a_stream_id_the_client_skipped_is_a_connection_error(gw):
    """RFC 9113 §5.1.1: opening stream 5 closes idle streams 1 and 3; HEADERS on 3 afterwards
    is a connection error PROTOCOL_ERROR (h2spec 5.1.1/2).  Trailers on a stream still open
    below the highest one are not: its HEADERS were seen."""
    from hyperframe.frame import DataFrame, HeadersFrame
    from h2frames import PROTOCOL_ERROR, FrameClient
    with FrameClient(gw.host, gw.port, auto_window=False) as c:     # no writes after the GOAWAY
        c.next_id = 5
        first = c.request("/test/five")
        c.send(HeadersFrame(3, c.head_block("/test/three"), flags=["END_HEADERS", "END_STREAM"]))
        deadline = time.monotonic() + 10
        while c.goaway is None and not c.closed and time.monotonic() < deadline:
            c.pump(1)
        assert c.goaway is not None and c.goaway.error_code == PROTOCOL_ERROR, (c.goaway, first)
        assert c.goaway.last_stream_id == 5
    with FrameClient(gw.host, gw.port) as c:
        upload = c.request("/echo", method="POST", body=b"part", end_stream=False)
        later = c.request("/test/later")
        c.send(DataFrame(upload.id, b"-rest"),
               HeadersFrame(upload.id, c.encoder.encode([("x-trailer", "1")]), flags=["END_HEADERS", "END_STREAM"]))
        c.response(later, timeout=10)
        c.response(upload, timeout=10)
        assert (later.status, upload.status, c.goaway) == (200, 200, None)
        assert bytes(upload.body) == b"part-rest"
