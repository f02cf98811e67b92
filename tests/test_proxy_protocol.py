"""HTTP/1.x behaviour through the gateway: pipelining, HTTP/1.0, Connection: close, chunked
request bodies, Expect: 100-continue, upgrade tunnels (101), HEAD."""
from __future__ import annotations

import socket
import time

import pytest

from support import (GatewayProcess, TinyServer, encode_chunked, http10_get, pattern_bytes,
                     read_request_head, static_source)

GREETING = b"hello-from-upstream"


def _upgrade_echo(conn: socket.socket) -> None:
    """Answer an upgrade request with 101, greet, then echo raw bytes until EOF."""
    head = read_request_head(conn)
    if not head:
        return
    lower = head.lower()
    if b"upgrade: websocket" not in lower or b"connection: upgrade" not in lower:
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return
    rest = head[head.find(b"\r\n\r\n") + 4:]
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n" + GREETING)
    if rest:
        conn.sendall(rest)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(data)


@pytest.fixture(scope="module")
def ws_upstream():
    server = TinyServer("127.0.0.6", _upgrade_echo)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(backend_a, ws_upstream, tmp_path_factory):
    config = {
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address],
                                             "ws": [ws_upstream.address]})],
        "services": [{"name": "httpbin", "port": 80}, {"name": "ws", "port": 80}],
        "routes": [
            {"name": "ws", "match": {"path": {"prefix": "/ws"}}, "service": "ws"},
            {"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"},
        ],
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("protocol")).start()
    yield proc
    proc.stop()


def test_pipelined_requests_answered_in_order(gw):
    with gw.client() as client:
        client.send(client.build("GET", "/anything/one")
                    + client.build("POST", "/echo", body=b"second-body")
                    + client.build("GET", "/anything/three"))
        first = client.read_response("GET")
        second = client.read_response("POST")
        third = client.read_response("GET")
        assert (first.status, second.status, third.status) == (200, 200, 200)
        assert first.json()["path"] == "/anything/one"
        assert second.body == b"second-body"
        assert third.json()["path"] == "/anything/three"
        # still usable
        assert client.request("GET", "/anything/four").json()["path"] == "/anything/four"


def test_http10_request_answered_and_closed(gw):
    with gw.client() as client:
        resp = client.request("GET", "/anything/http10", host=None, version="HTTP/1.0")
        assert resp.status == 200
        assert resp.json()["path"] == "/anything/http10"
        assert resp.closes
        assert client.wait_closed(5.0), "HTTP/1.0 connection without keep-alive was not closed"


def test_a_chunked_response_reaches_an_http10_client_as_payload(gw):
    """HTTP/1.0 has no chunked coding (RFC 9112 6.1): the upstream's chunks are unwrapped and
    the close ends the body."""
    head, body = http10_get(gw.port, "/stream/70000")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == pattern_bytes(0, 70000)


def test_connection_close_honoured(gw):
    with gw.client() as client:
        resp = client.request("GET", "/anything/close", [("Connection", "close")])
        assert resp.status == 200
        assert "close" in (resp.header("connection") or "").lower()
        assert client.wait_closed(5.0)
        assert client.extra == b""


def test_chunked_request_body_forwarded(gw):
    pieces = [b"alpha-", b"x" * 70000, b"-omega", b"\r\n\x00binary"]
    with gw.client() as client:
        client.send(client.build("POST", "/echo", [("Transfer-Encoding", "chunked")])
                    + encode_chunked(pieces))
        resp = client.read_response("POST")
        assert resp.status == 200
        assert resp.body == b"".join(pieces)
        # and a Content-Length one on the same connection
        resp2 = client.request("PUT", "/echo", body=b"sized body")
        assert (resp2.status, resp2.body) == (200, b"sized body")


def test_expect_100_continue(gw):
    body = b"b" * 100_000
    with gw.client(timeout=5.0) as client:
        client.send(client.build("POST", "/upload", [("Expect", "100-continue"),
                                                     ("Content-Length", str(len(body)))]))
        interim = client.read_head()       # before any body byte is sent
        assert interim.status == 100
        client.send(body)
        resp = client.read_response("POST")
        assert resp.status == 200
        assert resp.json()["received"] == len(body)


def test_upgrade_tunnel_echoes_both_ways(gw, ws_upstream):
    with gw.client(timeout=5.0) as client:
        client.send(client.build("GET", "/ws/chat", [
            ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("X-Request-Id", "ws-1")]))
        head = client.read_head()
        assert head.status == 101
        assert (head.header("upgrade") or "").lower() == "websocket"
        assert "upgrade" in (head.header("connection") or "").lower()
        assert client.read_exact(len(GREETING)) == GREETING      # upstream -> client
        for message in (b"ping-1", b"\x81\x05hello", b"z" * 200_000):
            client.send(message)                                 # client -> upstream -> client
            assert client.read_exact(len(message)) == message
        client.sock.shutdown(socket.SHUT_WR)                     # half-close travels through
        assert client.wait_closed(5.0)
    entry = gw.log.by_ids(["ws-1"])["ws-1"]
    assert entry["status"] == 101
    assert entry["upstream_host"] == ws_upstream.address
    # the tunnel's bytes are counted, both ways (200,000 of them each way, and the rest)
    assert entry["bytes_sent"] > 200_000 and entry["bytes_received"] > 200_000, entry


def test_head_has_no_body_and_keeps_connection(gw):
    with gw.client() as client:
        resp = client.request("HEAD", "/bytes/1000")
        assert resp.status == 200
        assert resp.header("content-length") == "1000"
        assert resp.body == b""
        resp = client.request("HEAD", "/stream/5000")
        assert resp.status == 200
        assert resp.body == b""
        nxt = client.request("GET", "/anything/after-head")
        assert nxt.status == 200 and nxt.json()["path"] == "/anything/after-head"
        assert client.request("GET", "/bytes/10").body == bytes(range(10))


def test_keep_alive_connection_serves_many_requests(gw):
    with gw.client() as client:
        for i in range(50):
            resp = client.request("GET", f"/anything/{i}")
            assert resp.status == 200 and not resp.closes
            assert resp.json()["path"] == f"/anything/{i}"


def test_client_half_close_after_request_still_gets_answer(gw):
    with gw.client() as client:
        client.send(client.build("GET", "/anything/halfclose"))
        client.sock.shutdown(socket.SHUT_WR)
        resp = client.read_response("GET")
        assert resp.status == 200 and resp.json()["path"] == "/anything/halfclose"
        assert client.wait_closed(5.0)
