"""WebSocket over HTTP/2 (RFC 8441) from clients to HTTP/1.1 WebSocket upstreams, and to
HTTP/2 upstreams that enable it.

The gateway's h2 listeners advertise SETTINGS_ENABLE_CONNECT_PROTOCOL; an extended CONNECT
(``:protocol websocket``) goes upstream as an HTTP/1.1 Upgrade and the stream then carries
the WebSocket's bytes both ways.  To an HTTP/2 upstream (gateway.devcluster.h2_backend,
built on the ``h2`` library) a WebSocket, from either kind of client, goes as an extended
CONNECT when the upstream's SETTINGS enable it, and is answered 502 when they do not.  The upstream is a real WebSocket server (the ``websockets``
library) in a thread; the clients are tests/h2frames.py (frame by frame) with ``wsproto``
framing the messages, and headless Chromium on the TLS listener (ALPN h2).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import socket
import struct
import threading
import time

import pytest
from hyperframe.frame import DataFrame, HeadersFrame
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, TextMessage

from h2frames import CANCEL, FrameClient, H2Stream
from support import (GatewayProcess, LoopThread, Pki, TinyServer, free_port, read_request_head, rss_bytes,
                     static_source, wait_until)

pytestmark = pytest.mark.timeout(120)

ENABLE_CONNECT_PROTOCOL = 0x8
CONNECT_ERROR = 0xA
FLOOD_MESSAGE = 256 * 1024

PAGE = b"""<!doctype html><title>loading</title><script>
const sizes = [5, 70000, 300000];
const path = new URLSearchParams(location.search).get("ws") || "/ws/echo?from=chromium";
const ws = new WebSocket("wss://" + location.host + path, ["chat"]);
ws.binaryType = "arraybuffer";
let got = [];
function noise(n) {   // not compressible: the byte counts stay what was sent
  const a = new Uint8Array(n); let x = n;
  for (let i = 0; i < n; i++) { x = (x * 1103515245 + 12345) & 0x7fffffff; a[i] = x >> 16; }
  return a;
}
ws.onopen = () => { ws.send("hello from chromium"); for (const n of sizes) ws.send(noise(n)); };
ws.onmessage = (e) => {
  got.push(typeof e.data === "string" ? e.data : e.data.byteLength);
  if (got.length === 1 + sizes.length) ws.close(1000, "done");
};
ws.onclose = (e) => {
  document.title = ["closed", e.code, ws.protocol, ws.extensions.split(";")[0], JSON.stringify(got)].join(" ");
};
ws.onerror = () => { document.title = "error"; };
</script>"""


class WsUpstream:
    """A WebSocket server (``websockets``) on 127.0.0.7, by path:

    /ws/echo   every message back; the subprotocol "chat" when offered
    /ws/close  one message answered "bye", then a clean close
    /ws/reset  one message, then a TCP reset
    /ws/flood  ?n= bytes sent in FLOOD_MESSAGE messages, progress in ``flood_sent``
    /ws/slow   reads nothing until ``release`` is set, then reports what it read
    /forbidden 403, /plain 200 without an upgrade, /page the Chromium test's page
    """

    def __init__(self) -> None:
        from websockets.asyncio.server import serve

        self.loop = LoopThread()
        self.requests: dict[str, dict[str, str]] = {}   # x-request-id -> request fields
        self.closed: set[str] = set()                    # x-request-ids whose connection ended
        self.flood_sent = 0
        self.release = threading.Event()
        self.port = free_port("127.0.0.7")

        async def start():
            return await serve(self.handle, "127.0.0.7", self.port,
                               select_subprotocol=lambda _, offered: "chat" if "chat" in offered else None,
                               process_request=self.process_request, max_size=None, max_queue=4,
                               ping_interval=None)
        self.server = self.loop.run(start())

    @property
    def address(self) -> str:
        return f"127.0.0.7:{self.port}"

    def stop(self) -> None:
        self.server.close()
        self.loop.close()

    def process_request(self, connection, request):
        if request.path == "/forbidden":
            return connection.respond(403, "no WebSocket for you\n")
        if request.path == "/plain":
            return connection.respond(200, "a plain answer, no upgrade\n")
        if request.path.startswith("/page"):
            response = connection.respond(200, "")
            del response.headers["Content-Type"], response.headers["Content-Length"]
            response.headers["Content-Type"] = "text/html"
            response.headers["Content-Length"] = str(len(PAGE))
            response.body = PAGE
            return response
        if request.path == "/hello":
            return connection.respond(200, "hello\n")
        return None

    async def handle(self, ws) -> None:
        fields = {k.lower(): v for k, v in ws.request.headers.raw_items()}
        rid = fields.get("x-request-id", "-")
        self.requests[rid] = fields
        path = ws.request.path.split("?")[0]
        try:
            if path == "/ws/echo":
                async for message in ws:
                    await ws.send(message)
            elif path == "/ws/close":
                await ws.recv()
                await ws.send("bye")
                await ws.close(1000, "bye")
            elif path == "/ws/reset":
                await ws.recv()
                sock = ws.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                ws.transport.abort()            # SO_LINGER 0: RST
            elif path == "/ws/flood":
                n = int(ws.request.path.partition("n=")[2])
                chunk = bytes(FLOOD_MESSAGE)
                for _ in range(n // FLOOD_MESSAGE):
                    await ws.send(chunk)
                    self.flood_sent += FLOOD_MESSAGE
                await ws.close()
            elif path == "/ws/slow":
                while not self.release.is_set():
                    await asyncio.sleep(0.05)
                total, digest = 0, hashlib.sha256()
                async for message in ws:
                    if message == "end":
                        break
                    total += len(message)
                    digest.update(message)
                await ws.send(f"{total} {digest.hexdigest()}")
                await ws.close()
        finally:
            self.closed.add(rid)


@pytest.fixture(scope="module")
def upstream():
    server = WsUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def _wrong_accept(conn: socket.socket) -> None:
    """A 101 whose Sec-WebSocket-Accept is not the one for the key sent."""
    if read_request_head(conn):
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
        conn.recv(1)


@pytest.fixture(scope="module")
def wrong_accept():
    server = TinyServer("127.0.0.7", _wrong_accept)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def h2_upstream():
    from gateway.devcluster.h2_backend import H2BackendProcess
    backend = H2BackendProcess("127.0.0.7", 0, "a", "h2-0").start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def h2_upstream_without_websocket():
    from gateway.devcluster.h2_backend import H2BackendProcess
    backend = H2BackendProcess("127.0.0.7", 0, "a", "h2-plain-0", websocket=False).start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def gw(upstream, wrong_accept, h2_upstream, h2_upstream_without_websocket, pki, tmp_path_factory):
    leaf = pki.leaf("gw.test")
    tls_port = free_port()
    config = {
        "sources": [static_source("a", {"ws": [upstream.address], "wrong": [wrong_accept.address],
                                        "h2up": [h2_upstream.address],
                                        "h2plain": [h2_upstream_without_websocket.address]})],
        "services": [{"name": "ws", "port": 80}, {"name": "wrong", "port": 80},
                     {"name": "h2up", "port": 80, "protocol": "h2c"},
                     {"name": "h2plain", "port": 80, "protocol": "h2c"}],
        "routes": [{"name": "wrong", "match": {"path": {"prefix": "/wrong-accept"}}, "service": "wrong"},
                   {"name": "h2up", "match": {"path": {"prefix": "/h2up"}}, "service": "h2up"},
                   {"name": "h2plain", "match": {"path": {"prefix": "/h2plain"}}, "service": "h2plain"},
                   {"name": "ws", "match": {"path": {"prefix": "/"}}, "service": "ws"}],
        "tls": {"listen": f"127.0.0.1:{tls_port}",
                "certificates": [{"cert": str(leaf.cert), "key": str(leaf.key)}]},
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("h2ws"), "h2ws").start()
    proc.tls_port, proc.leaf = tls_port, leaf
    yield proc
    proc.stop()


# -- a WebSocket client over one stream (h2frames + wsproto) ----------------------------------

class WsStream:
    """A WebSocket over an extended CONNECT stream of a FrameClient."""

    def __init__(self, client: FrameClient, path: str, rid: str, protocols=(), headers=()) -> None:
        self.client = client
        self.ws = Connection(ConnectionType.CLIENT)
        self.messages: list[str | bytes] = []
        self.closed: CloseConnection | None = None
        self._parts: list = []
        self.stream: H2Stream = client.open_stream(sink=self._feed)
        fields = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                  (":authority", "gw.test"), (":path", path), ("sec-websocket-version", "13"),
                  ("x-request-id", rid)]
        if protocols:
            fields.append(("sec-websocket-protocol", ", ".join(protocols)))
        client.send(HeadersFrame(self.stream.id, client.encoder.encode(fields + list(headers)),
                                 flags=["END_HEADERS"]))

    def _feed(self, data: bytes) -> None:
        if self.stream.status != 200:
            self.stream.body += data            # an answer other than the tunnel: its body
            return
        if not data or self.ws.state.name == "CLOSED":
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, Message):
                self._parts.append(event.data)
                if event.message_finished:
                    first = self._parts[0]
                    self.messages.append("".join(self._parts) if isinstance(first, str) else b"".join(self._parts))
                    self._parts = []
            elif isinstance(event, CloseConnection):
                self.closed = event
                if self.ws.state.name == "REMOTE_CLOSING":
                    self.send_raw(self.ws.send(event.response()))

    def wait_head(self, timeout: float = 10.0) -> H2Stream:
        deadline = time.monotonic() + timeout
        while self.stream.status is None and not self.stream.done:
            assert time.monotonic() < deadline, "no response head"
            assert not self.client.closed, self.client.goaway
            self.client.pump(0.5)
        return self.stream

    def send_raw(self, data: bytes, end_stream: bool = False) -> None:
        """Frame bytes as DATA within the windows (the server's, stream and connection)."""
        self.client.send_body(self.stream, [data], time.monotonic() + 20) if end_stream else \
            self._send(data)

    def _send(self, data: bytes) -> None:
        c, s = self.client, self.stream
        view = memoryview(data)
        deadline = time.monotonic() + 20
        while view:
            while min(s.send_window, c.conn_send_window) <= 0:
                assert time.monotonic() < deadline, "the server's window stayed shut"
                c.pump(0.2)
            n = min(len(view), s.send_window, c.conn_send_window, 16384)
            c.sock.sendall(DataFrame(s.id, bytes(view[:n])).serialize())
            s.send_window -= n
            c.conn_send_window -= n
            view = view[n:]

    def send(self, message: str | bytes) -> None:
        event = TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        self._send(self.ws.send(event))

    def receive(self, count: int = 1, timeout: float = 10.0) -> list[str | bytes]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{len(self.messages)} of {count} messages"
            assert not self.stream.done, (self.stream.reset, self.messages)
            self.client.pump(0.5)
        got, self.messages = self.messages[:count], self.messages[count:]
        return got

    def close(self) -> None:
        """The closing handshake, then END_STREAM from this side."""
        self._send(self.ws.send(CloseConnection(code=1000, reason="done")))
        self.client.send(DataFrame(self.stream.id, b"", flags=["END_STREAM"]))


def connect(gw, **kw) -> FrameClient:
    client = FrameClient("127.0.0.1", gw.port, **kw)
    deadline = time.monotonic() + 5
    while not client.server_settings:
        assert time.monotonic() < deadline, "no SETTINGS from the server"
        client.pump(0.5)
    return client


def wait_done(client: FrameClient, stream: H2Stream, timeout: float = 10.0) -> H2Stream:
    return client.response(stream, timeout)


# -- the tests ---------------------------------------------------------------------------------

def test_settings_allow_extended_connect(gw):
    with connect(gw) as c:
        assert c.server_settings.get(ENABLE_CONNECT_PROTOCOL) == 1, c.server_settings


def test_messages_echo_both_ways_and_the_upstream_sees_an_upgrade(gw, upstream):
    with connect(gw) as c:
        ws = WsStream(c, "/ws/echo?x=1", "ws-echo", protocols=["chat", "superchat"])
        head = ws.wait_head()
        assert head.status == 200 and not head.done, (head.status, head.headers, bytes(head.body))
        fields = dict(head.headers)
        assert fields.get(b"sec-websocket-protocol") == b"chat"
        assert b"sec-websocket-accept" not in fields and b"upgrade" not in fields
        assert b"content-length" not in fields
        for message in ("hello", b"\x00\x01binary", "é" * 1000):
            ws.send(message)
            assert ws.receive() == [message]
        ws.close()
        wait_done(c, ws.stream)
        assert ws.stream.ended and ws.stream.reset is None
        assert ws.closed is not None and ws.closed.code == 1000
    seen = upstream.requests["ws-echo"]
    assert seen["upgrade"].lower() == "websocket" and "upgrade" in seen["connection"].lower()
    assert seen["sec-websocket-version"] == "13" and len(seen["sec-websocket-key"]) == 24
    assert seen["sec-websocket-protocol"] == "chat, superchat"
    assert seen["x-forwarded-proto"] == "http"
    entry = gw.log.by_ids(["ws-echo"])["ws-echo"]
    assert entry["status"] == 200 and entry["protocol"] == "HTTP/2", entry
    assert entry["path"] == "/ws/echo?x=1" and entry["method"] == "GET", entry
    assert entry["bytes_sent"] > 2000 and entry["bytes_received"] > 2000, entry


def test_a_key_the_client_sent_is_used_and_its_accept_passed_back(gw, upstream):
    """RFC 8441 clients send no Sec-WebSocket-Key, but some do (niquests) and check the
    Accept: their key goes upstream and the Accept comes back; without one, no Accept."""
    key = base64.b64encode(b"sixteen byte key").decode()
    with connect(gw) as c:
        ws = WsStream(c, "/ws/echo", "ws-key", headers=[("sec-websocket-key", key)])
        head = ws.wait_head()
        assert head.status == 200
        accept = base64.b64encode(hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        assert head.header(b"sec-websocket-accept") == accept
        ws.send("keyed")
        assert ws.receive() == ["keyed"]
        c.reset(ws.stream.id, CANCEL)
    assert upstream.requests["ws-key"]["sec-websocket-key"] == key


def test_a_101_with_the_wrong_accept_is_a_502(gw):
    with connect(gw) as c:
        ws = WsStream(c, "/wrong-accept", "ws-wrong")
        head = wait_done(c, ws.wait_head())
        assert head.status == 502 and b"Sec-WebSocket-Accept" in bytes(head.body), bytes(head.body)
    assert gw.log.by_ids(["ws-wrong"])["ws-wrong"]["status"] == 502


def test_a_websocket_goes_to_an_http2_upstream_as_an_extended_connect(gw):
    """RFC 8441 on both sides: the upstream's 200 opens the tunnel, messages larger than the
    windows echo whole, the closing handshake and END_STREAM end it cleanly."""
    with connect(gw) as c:
        ws = WsStream(c, "/h2up/ws?x=1", "ws-h2up", protocols=["chat"])
        head = ws.wait_head()
        assert head.status == 200 and not head.done, (head.status, bytes(head.body))
        assert head.header(b"sec-websocket-protocol") == b"chat"
        assert head.header(b"sec-websocket-accept") is None     # the client sent no key
        for message in ("hello h2", b"\x00\x01" * 150_000, "é" * 1000):
            ws.send(message)
            assert ws.receive(timeout=20) == [message]
        ws.close()
        wait_done(c, ws.stream)
        assert ws.stream.ended and ws.stream.reset is None
        assert ws.closed is not None and ws.closed.code == 1000
    entry = gw.log.by_ids(["ws-h2up"])["ws-h2up"]
    assert entry["status"] == 200 and entry["protocol"] == "HTTP/2" and entry["method"] == "GET", entry
    assert entry["bytes_sent"] > 300_000 and entry["bytes_received"] > 300_000, entry


def test_an_http1_websocket_client_reaches_an_http2_upstream(gw):
    """The ``websockets`` client's Upgrade becomes an extended CONNECT; its 101 carries the
    Accept of its key (the library checks it), the subprotocol the upstream chose."""
    from websockets.sync.client import connect as ws_connect
    with ws_connect(f"ws://127.0.0.1:{gw.port}/h2up/ws", subprotocols=["chat"],
                    additional_headers={"x-request-id": "ws-h1-to-h2"}, open_timeout=10,
                    close_timeout=60) as ws:
        assert ws.subprotocol == "chat"
        for message in ("from HTTP/1.1", b"\xff" * 70_000):
            ws.send(message)
            assert ws.recv(timeout=10) == message
    assert ws.close_code == 1000
    entry = gw.log.by_ids(["ws-h1-to-h2"])["ws-h1-to-h2"]
    assert entry["status"] == 101 and "protocol" not in entry, entry     # (logged for HTTP/2 only)
    # The upstream's END_STREAM after its close frame closed the client's TCP connection:
    # the client did not wait out its close_timeout (it did, for 10 s, before the backend sent it).
    assert entry["duration_ms"] < 30_000, entry


def test_an_http2_upstream_that_does_not_enable_extended_connect_is_a_502(gw):
    """Its SETTINGS leave ENABLE_CONNECT_PROTOCOL out: the WebSocket is answered 502 saying
    so, from HTTP/2 and HTTP/1.1 clients alike; its plain requests go on (not a failure)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect as ws_connect
    with connect(gw) as c:
        head = wait_done(c, WsStream(c, "/h2plain/ws", "ws-h2plain").wait_head())
        assert head.status == 502 and b"RFC 8441" in bytes(head.body), bytes(head.body)
        assert c.get("/h2plain/status/200").status == 200
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://127.0.0.1:{gw.port}/h2plain/ws", open_timeout=10)
    assert refused.value.response.status_code == 502
    entry = gw.log.by_ids(["ws-h2plain"])["ws-h2plain"]
    assert entry["status"] == 502 and "extended CONNECT" in entry["error"], entry


def test_messages_larger_than_the_windows_arrive_whole(gw):
    big = bytes(range(256)) * 1200                      # 300 KiB: past 64 KiB stream windows
    with connect(gw) as c:
        ws = WsStream(c, "/ws/echo", "ws-big")
        assert ws.wait_head().status == 200, bytes(c.response(ws.stream).body)
        ws.send(big)
        ws.send("after")
        assert ws.receive(2, timeout=20) == [big, "after"]
        ws.close()
        wait_done(c, ws.stream)
    entry = gw.log.by_ids(["ws-big"])["ws-big"]
    assert entry["bytes_sent"] >= len(big) and entry["bytes_received"] >= len(big), entry


def test_the_upstream_closing_ends_the_stream(gw, upstream):
    with connect(gw) as c:
        ws = WsStream(c, "/ws/close", "ws-close")
        assert ws.wait_head().status == 200
        ws.send("hi")
        assert ws.receive() == ["bye"]
        wait_done(c, ws.stream)
        assert ws.stream.ended and ws.stream.reset is None     # END_STREAM, not a reset
        assert ws.closed is not None and ws.closed.code == 1000
        assert c.get("/hello").status == 200                  # the connection goes on
    entry = gw.log.by_ids(["ws-close"])["ws-close"]
    assert entry["status"] == 200 and "error" not in entry, entry


def test_an_upstream_reset_resets_the_stream(gw):
    with connect(gw) as c:
        ws = WsStream(c, "/ws/reset", "ws-reset")
        assert ws.wait_head().status == 200
        ws.send("hi")
        wait_done(c, ws.stream)
        assert ws.stream.reset == CONNECT_ERROR, (ws.stream.reset, ws.stream.ended)
        assert c.get("/hello").status == 200
    entry = gw.log.by_ids(["ws-reset"])["ws-reset"]
    assert entry["status"] == 200 and "reset" in entry["error"], entry


def test_a_client_reset_closes_the_upstream_connection(gw, upstream):
    with connect(gw) as c:
        ws = WsStream(c, "/ws/echo", "ws-client-reset")
        assert ws.wait_head().status == 200
        ws.send("one")
        assert ws.receive() == ["one"]
        c.reset(ws.stream.id, CANCEL)
        wait_until(lambda: "ws-client-reset" in upstream.closed, timeout=5)
        assert c.get("/hello").status == 200
    entry = gw.log.by_ids(["ws-client-reset"])["ws-client-reset"]
    assert entry["status"] == 200 and entry["protocol"] == "HTTP/2", entry


def test_a_half_close_from_the_client_reaches_the_upstream(gw, upstream):
    """END_STREAM without a closing handshake: the upstream reads EOF and closes its side."""
    with connect(gw) as c:
        ws = WsStream(c, "/ws/echo", "ws-half")
        assert ws.wait_head().status == 200
        ws.send("one")
        assert ws.receive() == ["one"]
        c.send(DataFrame(ws.stream.id, b"", flags=["END_STREAM"]))
        wait_until(lambda: "ws-half" in upstream.closed, timeout=5)
        wait_done(c, ws.stream)
        assert ws.stream.ended and ws.stream.reset is None


def test_an_upgrade_refused_upstream_is_answered_as_such(gw):
    with connect(gw) as c:
        forbidden = WsStream(c, "/forbidden", "ws-403").wait_head()
        wait_done(c, forbidden)
        assert forbidden.status == 403 and bytes(forbidden.body) == b"no WebSocket for you\n"
        # A 200 that is no upgrade would read as the tunnel opened: 502 (RFC 8441 section 5)
        plain = WsStream(c, "/plain", "ws-plain").wait_head()
        wait_done(c, plain)
        assert plain.status == 502 and b"not 101" in bytes(plain.body), bytes(plain.body)
        # CONNECT without :protocol, and a protocol other than websocket: not supported
        stream = c.open_stream()
        c.send(HeadersFrame(stream.id, c.encoder.encode(
            [(":method", "CONNECT"), (":authority", "gw.test:443")]), flags=["END_HEADERS"]))
        assert wait_done(c, stream).status == 501
        other = c.open_stream()
        c.send(HeadersFrame(other.id, c.encoder.encode(
            [(":method", "CONNECT"), (":protocol", "connect-udp"), (":scheme", "http"),
             (":authority", "gw.test"), (":path", "/ws/echo")]), flags=["END_HEADERS"]))
        assert wait_done(c, other).status == 501
        assert c.get("/hello").status == 200
    entries = gw.log.by_ids(["ws-403", "ws-plain"])
    assert entries["ws-403"]["status"] == 403 and entries["ws-plain"]["status"] == 502


def test_tunnels_and_requests_side_by_side_on_one_connection(gw):
    with connect(gw) as c:
        sockets = [WsStream(c, "/ws/echo", f"ws-side-{i}") for i in range(4)]
        gets = [c.request("/hello") for _ in range(3)]
        for ws in sockets:
            assert ws.wait_head().status == 200
        for round_ in range(3):
            for i, ws in enumerate(sockets):
                ws.send(f"{i}:{round_}")
            more = [c.request("/hello")]
            for i, ws in enumerate(sockets):
                assert ws.receive() == [f"{i}:{round_}"]
            gets += more
        for stream in gets:
            assert wait_done(c, stream).status == 200 and bytes(stream.body) == b"hello\n"
        for ws in sockets:
            ws.close()
        for ws in sockets:
            wait_done(c, ws.stream)
            assert ws.stream.ended and ws.stream.reset is None


def test_the_h2_library_over_tls_opens_an_extended_connect(gw, pki):
    """The ``h2`` state machine (which allows :protocol only after the server's SETTINGS
    enabled it) on the TLS listener, ALPN h2, with wsproto framing the messages."""
    from h2client import H2Client
    from test_tls import client_context
    ws = Connection(ConnectionType.CLIENT)
    with H2Client("127.0.0.1", gw.tls_port, client_context(pki.ca), "gw.test") as c:
        deadline = time.monotonic() + 5
        while not c.conn.remote_settings.enable_connect_protocol:
            assert time.monotonic() < deadline and c.read_some(deadline), "SETTINGS without ENABLE_CONNECT_PROTOCOL"
        sid = c.request("CONNECT", "/ws/echo?lib=h2", [(":protocol", "websocket"),
                                                      ("sec-websocket-version", "13"),
                                                      ("x-request-id", "ws-h2lib")], end=False)
        answer = c.answers[sid]
        while answer.status is None:
            assert time.monotonic() < deadline and not answer.done and c.read_some(deadline)
        assert answer.status == 200, answer
        c.send_body(sid, ws.send(TextMessage(data="over TLS")), end=False)
        got: list = []
        while not got:
            assert time.monotonic() < deadline and c.read_some(deadline)
            ws.receive_data(bytes(answer.body))
            answer.body.clear()
            got += [e.data for e in ws.events() if isinstance(e, TextMessage)]
        assert got == ["over TLS"]
        c.send_body(sid, ws.send(CloseConnection(code=1000)), end=True)
        c.wait(sid)
        assert answer.ended and answer.reset is None
    entry = gw.log.by_ids(["ws-h2lib"])["ws-h2lib"]
    assert entry["status"] == 200 and entry["protocol"] == "HTTP/2", entry


MiB = 1 << 20


def test_a_slow_client_stalls_the_upstream(gw, upstream):
    """The client opens no window: the gateway sends a window's worth, queues a little, and
    stops reading the upstream, whose sends stall; nothing piles up in the gateway."""
    total = 48 * MiB
    with connect(gw, auto_window=False) as c:
        ws = WsStream(c, f"/ws/flood?n={total}", "ws-flood")
        assert ws.wait_head().status == 200
        rss_before = rss_bytes(gw.pid)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            c.pump(0.2)
        stalled, grown = upstream.flood_sent, rss_bytes(gw.pid) - rss_before
        print(f"stalled at {stalled / MiB:.1f} MiB, gateway RSS +{grown / MiB:.1f} MiB")
        assert ws.stream.received <= 65535
        assert stalled < 16 * MiB, stalled
        assert grown < 8 * MiB, grown
        c.auto_window = True                            # now read it all
        c.open_window(ws.stream.id, ws.stream.received)
        got = 0
        deadline = time.monotonic() + 60
        while got < total:
            assert time.monotonic() < deadline, f"{got} of {total} bytes"
            assert not ws.stream.reset, ws.stream.reset
            c.pump(0.5)
            got += sum(len(m) for m in ws.messages)
            ws.messages.clear()
        wait_done(c, ws.stream)
        assert ws.stream.ended and upstream.flood_sent == total


def test_a_slow_upstream_stalls_the_client(gw, upstream):
    """The upstream reads nothing for a while: the stream's window stays shut once the
    upstream connection's buffers are full; then every byte arrives, in order."""
    message = bytes(range(256)) * 256                  # 64 KiB
    total = 32 * MiB
    wire = b"".join(Connection(ConnectionType.CLIENT).send(BytesMessage(data=message))
                    for _ in range(total // len(message)))
    upstream.release.clear()
    with connect(gw) as c:
        ws = WsStream(c, "/ws/slow", "ws-slow")
        assert ws.wait_head().status == 200
        s, view, sent = ws.stream, memoryview(wire), 0
        shut_since = None
        while sent < len(wire):
            if min(s.send_window, c.conn_send_window) <= 0:
                shut_since = shut_since or time.monotonic()
                if time.monotonic() - shut_since > 1.0:
                    break                               # stalled for a second
                c.pump(0.1)
                continue
            shut_since = None
            n = min(len(wire) - sent, s.send_window, c.conn_send_window, 16384)
            c.sock.sendall(DataFrame(s.id, bytes(view[sent:sent + n])).serialize())
            s.send_window -= n
            c.conn_send_window -= n
            sent += n
        print(f"the client stalled after {sent / MiB:.1f} MiB")
        assert sent < 16 * MiB, sent
        upstream.release.set()
        ws._send(bytes(view[sent:]))
        ws.send("end")
        digest = hashlib.sha256(message * (total // len(message))).hexdigest()
        assert ws.receive(timeout=30) == [f"{total} {digest}"]
        wait_done(c, ws.stream)


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _spki_sha256(cert_path) -> str:
    """The certificate's SPKI hash as --ignore-certificate-errors-spki-list takes it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def chromium_title(gw, page: str) -> str:
    """The title the page at ``page`` ends with in headless Chromium (the TLS listener, h2)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} missing: install Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", "--host-resolver-rules=MAP gw.test 127.0.0.1",
                 f"--ignore-certificate-errors-spki-list={_spki_sha256(gw.leaf.cert)}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        driver.get(f"https://gw.test:{gw.tls_port}{page}")
        wait_until(lambda: driver.title.startswith(("closed", "error")), timeout=20)
        return driver.title
    finally:
        driver.quit()


def test_chromium_opens_its_websocket_over_the_h2_connection(gw):
    """A page loaded over h2 (ALPN on the TLS listener) opens wss:// to the same origin:
    Chromium sends it as an extended CONNECT on that connection, since the SETTINGS allow it."""
    title = chromium_title(gw, "/page")
    # the subprotocol and permessage-deflate were negotiated through the gateway
    assert title == 'closed 1000 chat permessage-deflate ["hello from chromium",5,70000,300000]', title
    page, = gw.log.matching(lambda e: e.get("path") == "/page")
    ws, = gw.log.matching(lambda e: e.get("path") == "/ws/echo?from=chromium")
    assert page.get("protocol") == "HTTP/2", page
    assert ws.get("protocol") == "HTTP/2" and ws["status"] == 200, ws
    assert ws["bytes_received"] > 300_000 and ws["bytes_sent"] > 300_000, ws   # (deflated)


def test_chromium_reaches_an_http2_websocket_upstream(gw):
    """The same page's WebSocket routed to the HTTP/2 upstream: RFC 8441 on both legs (that
    upstream offers no permessage-deflate, so the messages go as they are)."""
    title = chromium_title(gw, "/page?ws=/h2up/ws?from=chromium")
    assert title == 'closed 1000 chat ["hello from chromium",5,70000,300000]', title   # no extension
    ws, = gw.log.matching(lambda e: e.get("path") == "/h2up/ws?from=chromium")
    assert ws.get("protocol") == "HTTP/2" and ws["status"] == 200, ws
    assert ws["bytes_received"] > 370_000 and ws["bytes_sent"] > 370_000, ws
