"""HTTPS connections on the reactor (``_speedups.tls_transport``): OpenSSL on the socket itself.

What a transport of its own must get right beyond what test_tls checks: writes the socket
cannot take at once (OpenSSL wants the same bytes again), reading paused by the upstream's
pace while OpenSSL holds decrypted bytes, a request that arrives with the handshake's last
flight, the handshake's deadline, bytes that are not TLS, and the close_notify that ends a
connection.  A gateway with ``workers: 2`` and a TLS listener, its upstream the test backend.
"""
from __future__ import annotations

import asyncio
import fcntl
import hashlib
import socket
import ssl
import subprocess
import termios
import time

import pytest
import uvloop

from _speedups.reactor import Reactor
from gateway.config import Address
from gateway.listeners import ReactorServer, bind_listeners
from support import (PYTHON, REPO, AdminClient, GatewayProcess, Pki, free_port, start_with_admin, static_source,
                     wait_listening)

pytestmark = pytest.mark.timeout(60)

PATTERN = bytes(range(256))         # the backend's /bytes/N: byte i is i % 256


class Gateway:
    gw: GatewayProcess
    port: int
    admin: AdminClient
    client_ctx: ssl.SSLContext


@pytest.fixture(scope="module")
def gateway(backend_a, tmp_path_factory):
    pki = Pki(tmp_path_factory.mktemp("pki"))
    leaf = pki.leaf("tls.test")
    port = free_port()
    config = {
        "workers": 2,
        "timeouts": {"downstream_header": "1s"},        # also the handshake's deadline
        "tls": {"listen": f"127.0.0.1:{port}", "certificates": [{"cert": str(leaf.cert), "key": str(leaf.key)}]},
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address]})],
        "services": [{"name": "httpbin", "port": 80}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}],
    }
    gw, admin = start_with_admin(config, tmp_path_factory.mktemp("tls-transport"), "tls-transport")
    try:
        wait_listening("127.0.0.1", port, 10, gw.proc)
        setup = Gateway()
        setup.gw, setup.port, setup.admin = gw, port, admin
        setup.client_ctx = ssl.create_default_context(cafile=str(pki.ca))
        yield setup
    finally:
        gw.stop()


def connect(gateway: Gateway, rcvbuf: int | None = None, suppress_ragged_eofs: bool = True) -> ssl.SSLSocket:
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)     # before connect: the window
    raw.settimeout(20)
    raw.connect(("127.0.0.1", gateway.port))
    return gateway.client_ctx.wrap_socket(raw, server_hostname="tls.test", suppress_ragged_eofs=suppress_ragged_eofs)


def read_until_closed(tls: ssl.SSLSocket) -> bytes:
    out = bytearray()
    while chunk := tls.recv(65536):
        out += chunk
    return bytes(out)


def split_response(data: bytes) -> tuple[bytes, bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, data[:300]
    return head, body


def get(gateway: Gateway, path: str) -> bytes:
    with connect(gateway) as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n".encode())
        head, body = split_response(read_until_closed(tls))
    assert head.startswith(b"HTTP/1.1 200 "), head
    return body


def test_gateway_status_shows_the_https_listener(gateway):
    status, _, body = gateway.admin.request("GET", "/status")
    assert status == 200 and body["tls_listen"] == f"127.0.0.1:{gateway.port}"
    out = subprocess.run([PYTHON, "-m", "gateway", "status", "--admin", f"http://127.0.0.1:{gateway.admin.port}"],
                         cwd=str(REPO), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert f"https 127.0.0.1:{gateway.port}" in out.stdout, out.stdout


def test_a_body_the_client_reads_slowly_arrives_whole(gateway):
    """8 MiB to a client with a 4 KiB receive buffer: most of the gateway's writes find the
    socket full, and OpenSSL must be given the same bytes again each time."""
    size = 8 << 20
    with connect(gateway, rcvbuf=4096) as tls:
        tls.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n" % size)
        head, body = split_response(read_until_closed(tls))
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert len(body) == size
    assert body == PATTERN * (size // 256)


def test_an_upload_paced_by_a_slow_upstream_arrives_whole(gateway):
    """4 MiB to an upstream that reads 16 MB/s: the gateway pauses reading the client while
    OpenSSL may hold records it decrypted ahead; they are delivered when reading resumes."""
    body = hashlib.sha256(b"seed").digest() * (4 << 20 >> 5)
    with connect(gateway) as tls:
        tls.sendall(b"POST /upload?rate=16000000 HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head, answer = split_response(read_until_closed(tls))
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b'"received":%d' % len(body) in answer
    assert hashlib.sha256(body).hexdigest().encode() in answer


def test_a_request_sent_with_the_last_handshake_flight_is_answered(gateway):
    """The client's Finished and its request in one TCP segment: the request is OpenSSL's
    (read ahead with the Finished), not the socket's, when the handshake completes."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = gateway.client_ctx.wrap_bio(incoming, outgoing, server_hostname="tls.test")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        while True:
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out := outgoing.read():
                    sock.sendall(out)
                data = sock.recv(65536)
                assert data, "the gateway closed during the handshake"
                incoming.write(data)
        client.write(b"GET /anything/together HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n")
        sock.sendall(outgoing.read())               # the Finished and the request, at once
        answer = bytearray()
        while True:
            try:
                chunk = client.read(65536)
                if not chunk:                       # the gateway's close_notify
                    break
                answer += chunk
                continue
            except ssl.SSLWantReadError:
                pass
            data = sock.recv(65536)
            if not data:
                break
            incoming.write(data)
    head, body = split_response(bytes(answer))
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"/anything/together" in body


def test_a_response_ends_with_close_notify(gateway):
    """``Connection: close``: the client reads a close_notify, not a bare TCP end (with
    ``suppress_ragged_eofs`` off, a missing one is an SSLEOFError)."""
    with connect(gateway, suppress_ragged_eofs=False) as tls:
        tls.sendall(b"GET /anything/bye HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n")
        head, body = split_response(read_until_closed(tls))
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"/anything/bye" in body


def test_a_client_that_never_says_hello_is_closed_at_the_deadline(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as silent:
        assert silent.recv(1) == b""            # closed by the gateway (1 s), well before 20 s
    assert b"/anything/after" in get(gateway, "/anything/after")


def test_plain_http_on_the_tls_port_is_refused_and_neighbours_go_on(gateway):
    with connect(gateway) as neighbour:
        neighbour.sendall(b"GET /anything/1 HTTP/1.1\r\nHost: tls.test\r\n\r\n")
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: tls.test\r\n\r\n")
            try:
                rest = plain.recv(65536)
                while rest and not rest.startswith(b"HTTP"):     # an alert record, then the end
                    rest = plain.recv(65536)
            except ConnectionResetError:
                rest = b""
            assert not rest.startswith(b"HTTP")
        neighbour.sendall(b"GET /anything/2 HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n")
        answers = read_until_closed(neighbour)
    assert answers.count(b"HTTP/1.1 200 ") == 2 and b"/anything/2" in answers


# -- in process: a TlsListener on a reactor, a protocol that pauses ----------------------------

READ_SIZE = 262144          # the reactor's buffer: what one data_received holds at most


class Pausing(asyncio.Protocol):
    """Pauses reading once connected, and again after each delivery."""

    def __init__(self) -> None:
        self.transport = None
        self.data = bytearray()
        self.deliveries = 0
        self.got = asyncio.Event()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.deliveries += 1
        self.transport.pause_reading()
        self.got.set()

    def connection_lost(self, exc) -> None:
        pass


async def _until(condition, what: str) -> None:
    for _ in range(2000):                   # 10 s at most, polled
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def _contexts(pki: Pki) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for tls.test, and a client's that trusts it."""
    leaf = pki.leaf("tls.test")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(leaf.cert), str(leaf.key))
    return server_ctx, ssl.create_default_context(cafile=str(pki.ca))


async def _held_records_reach_a_protocol_that_resumes(pki: Pki) -> None:
    loop = asyncio.get_running_loop()
    server_ctx, client_ctx = _contexts(pki)
    reactor = Reactor(loop)
    protocols: list[Pausing] = []
    socks = bind_listeners(Address("127.0.0.1", 0))
    socks[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)    # room for all of it, unread
    server = ReactorServer(reactor, socks, lambda: protocols.append(Pausing()) or protocols[-1], server_ctx, 5.0)
    client = socket.socket()
    client.setblocking(False)
    try:
        await loop.sock_connect(client, server.sockets[0].getsockname())
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_ctx.wrap_bio(incoming, outgoing, server_hostname="tls.test")
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out := outgoing.read():
                    await loop.sock_sendall(client, out)
                incoming.write(await loop.sock_recv(client, 65536))
        await loop.sock_sendall(client, outgoing.read())
        await _until(lambda: protocols, "the handshake")
        protocol = protocols[0]
        # A short record, then full ones: the last record read does not fit the reactor's
        # buffer, and what is left of it stays in OpenSSL, decrypted, with the socket empty.
        head = b"the head" * 16
        payload = head + bytes(range(256)) * (READ_SIZE // 256)
        tls.write(head)
        for start in range(len(head), len(payload), 16384):
            tls.write(payload[start:start + 16384])
        await loop.sock_sendall(client, outgoing.read())
        # All in the gateway's socket (acknowledged) before it reads any of it.
        await _until(lambda: fcntl.ioctl(client, termios.TIOCOUTQ, b"\0" * 4) == b"\0" * 4, "the ACKs")
        protocol.transport.resume_reading()
        await asyncio.wait_for(protocol.got.wait(), 10)
        assert len(protocol.data) == READ_SIZE           # paused again: the rest is OpenSSL's
        protocol.got.clear()
        protocol.transport.resume_reading()             # no socket event will come for it
        await asyncio.wait_for(protocol.got.wait(), 10)
        assert bytes(protocol.data) == payload
    finally:
        client.close()
        server.close()
        reactor.close()


def test_records_openssl_holds_reach_a_protocol_that_resumes_reading(tmp_path):
    uvloop.run(_held_records_reach_a_protocol_that_resumes(Pki(tmp_path / "pki")))


class Echo(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _deadlines_close_only_unfinished_handshakes(pki: Pki) -> None:
    loop = asyncio.get_running_loop()
    server_ctx, client_ctx = _contexts(pki)
    reactor = Reactor(loop)
    timeout = 0.5
    server = ReactorServer(reactor, bind_listeners(Address("127.0.0.1", 0)), Echo, server_ctx, timeout)
    host, port = server.sockets[0].getsockname()[:2]

    async def finished():
        return await asyncio.open_connection(host, port, ssl=client_ctx, server_hostname="tls.test")

    async def silent():
        # Timed from before the connect: the server may accept before the client hears of it.
        started = time.monotonic()
        return await asyncio.open_connection(host, port), started

    async def closed_at(reader) -> float:
        assert await asyncio.wait_for(reader.read(), 10) == b""
        return time.monotonic()

    writers = []
    try:
        # In accept order (the listener's queue): finished, silent, finished, silent, finished
        # (the last one's handshake shows the silent one before it was accepted).
        first = await finished()
        (early, early_writer), early_at = await silent()
        second = await finished()
        (late, late_writer), late_at = await silent()
        third = await finished()
        writers += [early_writer, late_writer] + [writer for _, writer in (first, second, third)]
        server.close()                      # accepted connections keep their deadlines
        assert await closed_at(early) - early_at >= timeout
        assert await closed_at(late) - late_at >= timeout
        for reader, writer in (first, second, third):   # past both deadlines, still served
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
    finally:
        for writer in writers:              # (a writer let go closes its connection)
            writer.close()
        server.close()
        reactor.close()


def test_handshake_deadlines_close_only_the_unfinished_ones(tmp_path):
    """One timer per listener serves every handshake's deadline (they come in accept order):
    the silent connections are closed, no sooner than their deadline, even after the
    listener closed; the finished handshakes before and between them are left alone."""
    uvloop.run(_deadlines_close_only_unfinished_handshakes(Pki(tmp_path / "pki")))
