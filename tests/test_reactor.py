"""The reactor's transports on real sockets: asyncio's transport contract without uvloop's.

Each test runs a uvloop loop with a Reactor serving a listening socket on 127.0.0.1 (or ::1);
the client side is a plain non-blocking socket driven by the same loop.
"""
import asyncio
import hashlib
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest
import uvloop

from _speedups.reactor import Reactor
from gateway.config import Address
from gateway.listeners import ReactorServer, bind_listeners


class Recorder(asyncio.Protocol):
    """Keeps every callback, in order, and what arrived."""

    def __init__(self):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.keep_open_on_eof = False
        self.lost = asyncio.get_running_loop().create_future()
        self.got = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        self.data += data
        self.got.set()

    def eof_received(self):
        self.events.append("eof")
        return self.keep_open_on_eof

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


async def serve(host="127.0.0.1", protocols=None):
    """A reactor serving one listening socket, and a client connected to it: (reactor,
    server, client socket, the client's protocol); ``protocols`` gets every protocol made."""
    loop = asyncio.get_running_loop()
    protocols = [] if protocols is None else protocols

    def factory():
        protocols.append(Recorder())
        return protocols[-1]

    reactor = Reactor(loop)
    server = ReactorServer(reactor, bind_listeners(Address(host, 0)), factory)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    client = socket.socket(family)
    client.setblocking(False)
    await loop.sock_connect(client, server.sockets[0].getsockname()[:2])
    for _ in range(200):
        if protocols:
            break
        await asyncio.sleep(0.005)
    return reactor, server, client, protocols[0]


async def receive_all(client, n, timeout=10.0):
    loop, got = asyncio.get_running_loop(), bytearray()
    while len(got) < n:
        chunk = await asyncio.wait_for(loop.sock_recv(client, 1 << 20), timeout)
        if not chunk:
            break
        got += chunk
    return bytes(got)


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def run(coro):
    return uvloop.run(coro)


def test_a_full_buffer_pauses_writing_and_everything_arrives_in_order():
    async def main():
        reactor, server, client, proto = await serve()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        body = os.urandom(8 << 20)
        t = proto.transport
        t.write(body[:100])
        t.writelines([body[100:4096], memoryview(body)[4096:6 << 20]])   # head + view of a body
        t.write(bytearray(body[6 << 20:]))
        assert t.get_write_buffer_size() > 65536 and proto.events == ["made", "pause"]
        got = await receive_all(client, len(body))
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
        await until(lambda: "resume" in proto.events)
        assert t.get_write_buffer_size() == 0
        t.close()
        assert await receive_all(client, 1) == b""         # written, then closed
        assert await proto.lost is None
        assert proto.events == ["made", "pause", "resume", "lost"]
        client.close()
        reactor.close()
    run(main())


def test_many_small_writes_to_a_stalled_reader_arrive_whole_and_in_order():
    async def main():
        reactor, server, client, proto = await serve()
        chunks = [b"%07d:" % i + os.urandom(1000) for i in range(20000)]    # 20 MB
        for chunk in chunks:                        # most of them queue, 64 per writev
            proto.transport.write(chunk)
        expected = b"".join(chunks)
        assert proto.transport.get_write_buffer_size() > 0
        got = await receive_all(client, len(expected))
        assert got == expected
        await until(lambda: proto.transport.get_write_buffer_size() == 0)
        assert proto.events == ["made", "pause", "resume"]
        client.close()
        reactor.close()
    run(main())


def test_connection_lost_comes_in_a_later_callback_and_once():
    async def main():
        reactor, server, client, proto = await serve()
        proto.transport.close()
        proto.transport.close()
        proto.transport.abort()
        assert proto.events == ["made"] and proto.transport.is_closing()
        assert await proto.lost is None
        await asyncio.sleep(0.01)
        assert proto.events == ["made", "lost"]
        proto.transport.write(b"ignored after close")
        client.close()
        reactor.close()
    run(main())


def test_paused_reading_holds_data_until_resumed():
    async def main():
        loop = asyncio.get_running_loop()
        reactor, server, client, proto = await serve()
        proto.transport.pause_reading()
        assert not proto.transport.is_reading()
        await loop.sock_sendall(client, b"held")
        await asyncio.sleep(0.05)
        assert proto.data == b""
        proto.transport.resume_reading()
        await asyncio.wait_for(proto.got.wait(), 5)
        assert proto.data == b"held"
        client.close()
        reactor.close()
    run(main())


def test_half_close_both_ways():
    async def main():
        loop = asyncio.get_running_loop()
        reactor, server, client, proto = await serve()
        proto.keep_open_on_eof = True
        await loop.sock_sendall(client, b"request")
        client.shutdown(socket.SHUT_WR)
        await until(lambda: "eof" in proto.events)
        assert proto.data == b"request" and not proto.transport.is_closing()
        proto.transport.write(b"answer")
        proto.transport.write_eof()
        with pytest.raises(RuntimeError):
            proto.transport.write(b"after EOF")
        assert await receive_all(client, 100) == b"answer"  # then EOF
        proto.transport.close()
        assert await proto.lost is None
        client.close()
        reactor.close()
    run(main())


def test_eof_closes_unless_the_protocol_keeps_it_open():
    async def main():
        reactor, server, client, proto = await serve()
        client.shutdown(socket.SHUT_WR)
        assert await asyncio.wait_for(proto.lost, 5) is None
        assert proto.events == ["made", "eof", "lost"]
        client.close()
        reactor.close()
    run(main())


def test_a_reset_reaches_connection_lost_as_the_error():
    async def main():
        reactor, server, client, proto = await serve()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()                                      # RST
        assert isinstance(await asyncio.wait_for(proto.lost, 5), ConnectionResetError)
        client.close()
        reactor.close()
    run(main())


def test_a_reset_while_reading_is_paused_does_not_spin_the_loop():
    async def main():
        reactor, server, client, proto = await serve()
        proto.transport.pause_reading()
        await asyncio.sleep(0.02)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        await asyncio.sleep(0.05)           # the hang-up is seen
        woken = reactor.wakeups
        await asyncio.sleep(0.5)
        # A hang-up cannot be masked: without parking, the loop would wake for it nonstop.
        assert reactor.wakeups - woken == 0
        proto.transport.resume_reading()
        assert isinstance(await asyncio.wait_for(proto.lost, 5), ConnectionResetError)
        client.close()
        reactor.close()
    run(main())


def test_a_failing_callback_closes_that_connection_and_is_reported():
    async def main():
        loop = asyncio.get_running_loop()
        reported = []
        loop.set_exception_handler(lambda loop, context: reported.append(context))
        reactor, server, client, proto = await serve()

        def broken(data):
            raise ValueError("bug")
        proto.data_received = broken
        await loop.sock_sendall(client, b"x")
        assert isinstance(await asyncio.wait_for(proto.lost, 5), ValueError)
        assert reported and isinstance(reported[0]["exception"], ValueError)
        assert await receive_all(client, 1) == b""
        client.close()
        reactor.close()
    run(main())


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_peer_and_local_addresses_as_asyncio_reports_them(host):
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6")

    async def main():
        reactor, server, client, proto = await serve(host)
        assert proto.transport.get_extra_info("peername") == client.getsockname()
        assert proto.transport.get_extra_info("sockname") == client.getpeername()
        assert proto.transport.get_extra_info("socket", "none") == "none"
        client.close()
        reactor.close()
    run(main())


def test_a_closed_listener_accepts_nothing_and_adopts_what_was_queued():
    async def main():
        protocols = []
        reactor, server, client, proto = await serve(protocols=protocols)
        address = server.sockets[0].getsockname()
        dup = socket.socket(fileno=os.dup(server.sockets[0].fileno()))
        server.close()
        assert server.sockets == []
        late = socket.create_connection(address)         # queued on the duplicate only
        await asyncio.sleep(0.05)
        assert len(protocols) == 1
        conn, _ = dup.accept()
        dup.close()
        server.adopt(conn)
        late.sendall(b"hello")
        await until(lambda: len(protocols) == 2 and protocols[1].data == b"hello")
        assert protocols[1].transport.get_extra_info("peername") == late.getsockname()
        late.close()
        client.close()
        reactor.close()
    run(main())


def test_a_burst_of_connections_is_accepted_in_a_few_wakeups():
    """One connection is accepted per readiness while they come one at a time; a listener
    still ready at the next wakeup takes its queue in a batch, not one per loop turn."""
    async def main():
        protocols = []
        reactor, server, client, proto = await serve(protocols=protocols)
        address = server.sockets[0].getsockname()
        burst = []
        for _ in range(150):                    # queued by the kernel, none accepted yet
            sock = socket.socket()
            sock.connect(address)
            burst.append(sock)
        woken = reactor.wakeups
        await until(lambda: len(protocols) == 1 + len(burst))
        assert reactor.wakeups - woken <= 8, reactor.wakeups - woken    # one at a time: 150
        for sock in burst:
            sock.close()
        client.close()
        reactor.close()
    run(main())


def test_running_out_of_descriptors_pauses_accepting_then_resumes():
    # In a child: the file descriptor limit is lowered there only.
    script = textwrap.dedent("""
        import asyncio, os, resource, socket, uvloop
        from _speedups.reactor import Reactor
        from gateway.config import Address
        from gateway.listeners import ReactorServer, bind_listeners

        class Echo(asyncio.Protocol):
            def connection_made(self, t): self.t = t
            def data_received(self, d): self.t.write(d)

        async def main():
            loop = asyncio.get_running_loop()
            errors = []
            loop.set_exception_handler(lambda l, c: errors.append(c["message"]))
            reactor = Reactor(loop)
            server = ReactorServer(reactor, bind_listeners(Address("127.0.0.1", 0)), Echo)
            address = server.sockets[0].getsockname()
            spare = [socket.socket() for _ in range(6)]     # freed later, for accepting
            clients = [socket.socket() for _ in range(6)]
            used = len(os.listdir("/proc/self/fd"))
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (used + 2, hard))   # two accepts
            for c in clients:
                c.setblocking(False)
                await loop.sock_connect(c, address)         # the kernel completes them all
            woken = reactor.wakeups
            await asyncio.sleep(0.5)            # paused 100 ms at a time: ~5 wakeups, not 1000s
            spun = reactor.wakeups - woken
            for s in spare: s.close()
            for c in clients:
                await loop.sock_sendall(c, b"ping")
            answers = [await asyncio.wait_for(loop.sock_recv(c, 4), 5) for c in clients]
            print(len(clients), answers.count(b"ping"), "accepting connections paused" in errors,
                  spun <= 10)
        uvloop.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    clients, echoed, paused, calm = out.stdout.split()
    assert clients == echoed == "6", out.stdout
    assert paused == "True" and calm == "True", out.stdout
