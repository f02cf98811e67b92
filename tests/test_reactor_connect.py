"""Reactor.connect: the gateway's plain upstream connections, made on the reactor's epoll set
instead of by uvloop's create_connection (a coroutine and a Task each).  Real sockets in one
uvloop loop: a connection made and used both ways, a refused one, one whose SYN is never
answered (an accept queue held full) timing out, and a name, which is the loop's to resolve.
"""
from __future__ import annotations

import asyncio
import errno
import socket
import time

import uvloop

from _speedups.reactor import Reactor


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data.upper())


class Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.received = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.events.append("connection_made")

    def data_received(self, data):
        self.received.set_result(data)

    def connection_lost(self, exc):
        self.events.append("connection_lost")


async def connect(reactor: Reactor, host: str, port: int, timeout: float = 5.0):
    """Start a connect; (what connect returned, the future of on_done's arguments, the protocol,
    whether on_done came before connect returned)."""
    done = asyncio.get_running_loop().create_future()
    protocol = Client()
    connector = reactor.connect(host, port, protocol, timeout,
                                lambda token, transport, exc: done.set_result((token, transport, exc)),
                                ("token", 7))
    return connector, done, protocol, done.done()


def test_a_connection_is_made_and_carries_bytes_both_ways():
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reactor = Reactor(loop)
        connector, done, protocol, early = await connect(reactor, "127.0.0.1", port)
        token, transport, exc = await asyncio.wait_for(done, 5)
        assert not early and connector is not None and token == ("token", 7) and exc is None
        assert protocol.events == ["connection_made"]           # before on_done
        assert transport.get_extra_info("peername") == ("127.0.0.1", port)
        transport.write(b"hello")
        assert await asyncio.wait_for(protocol.received, 5) == b"HELLO"
        transport.close()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert protocol.events == ["connection_made", "connection_lost"]
        reactor.close()
        server.close()
    uvloop.run(main())


def test_a_refused_connect_is_reported_in_a_later_callback():
    async def main():
        loop = asyncio.get_running_loop()
        with socket.socket() as s:                  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        reactor = Reactor(loop)
        connector, done, protocol, early = await connect(reactor, "127.0.0.1", port)
        c, transport, exc = await asyncio.wait_for(done, 5)
        assert not early and transport is None and protocol.events == []
        assert isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED, exc
        reactor.close()
    uvloop.run(main())


def test_an_unanswered_connect_times_out_at_its_deadline():
    async def main():
        loop = asyncio.get_running_loop()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        # One connection fills the accept queue: the kernel drops the next SYNs.
        filler = socket.create_connection(listener.getsockname(), timeout=2)
        reactor = Reactor(loop)
        try:
            started = time.monotonic()
            _, done, protocol, _ = await connect(reactor, *listener.getsockname(), timeout=0.3)
            c, transport, exc = await asyncio.wait_for(done, 5)
            took = time.monotonic() - started
            assert transport is None and protocol.events == []
            assert isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT, exc
            assert 0.3 <= took < 2.0, took
        finally:
            reactor.close()
            filler.close()
            listener.close()
    uvloop.run(main())


def test_a_name_is_left_to_the_loop():
    async def main():
        reactor = Reactor(asyncio.get_running_loop())
        connector = reactor.connect("localhost", 80, Client(), 1.0, lambda *a: None, None)
        assert connector is None
        reactor.close()
    uvloop.run(main())
