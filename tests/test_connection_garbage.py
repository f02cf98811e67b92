"""A closed client connection is freed by reference counting: it leaves no cycle for the
cyclic collector (which, at one request per connection, ran every few dozen connections),
and nothing in the context's deadline heap (which would hold it to its idle deadline).
In one process: a uvloop loop with a backend and the gateway's data plane on real sockets,
the client connections served as the plain port serves them (the reactor, which makes the
upstream connections too) and as uvloop's transports do (the TLS port's)."""
from __future__ import annotations

import asyncio
import gc

import pytest
import uvloop

from _speedups.reactor import Reactor
from gateway.config import Address, parse_config
from gateway.dataplane import DataPlane, ProxyContext
from gateway.listeners import ReactorServer, bind_listeners
from gateway.snapshot import EndpointSpec, Snapshot

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Backend(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if b"\r\n\r\n" in data:
            self.transport.write(ANSWER)


class OneRequest(asyncio.Protocol):
    def __init__(self, request: bytes, done: asyncio.Future) -> None:
        self.request, self.done, self.received = request, done, b""

    def connection_made(self, transport):
        transport.write(self.request)

    def data_received(self, data):
        self.received += data

    def connection_lost(self, exc):
        self.done.set_result(self.received)


async def garbage_per_connection(request: bytes, connections: int,
                                 transports: str) -> tuple[float, list[bytes], int]:
    loop = asyncio.get_running_loop()
    backend = await loop.create_server(Backend, "127.0.0.1", 0)
    config = parse_config({
        "listen": "127.0.0.1:8080", "admin": None,
        "sources": [{"name": "zone-a", "type": "static", "services": []}],
        "services": [{"name": "svc", "namespace": "default", "port": 80}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "default/svc"}],
    })
    ctx = ProxyContext(loop, config.limits, config.timeouts)
    plane = DataPlane(ctx)
    plane.apply_config(config)
    plane.apply_full(Snapshot(1, {"default/svc": (
        EndpointSpec("zone-a", "127.0.0.1", backend.sockets[0].getsockname()[1], 1),)}))
    if transports == "reactor":
        reactor = ctx.reactor = Reactor(loop)       # upstream connections made on it too
        server = ReactorServer(reactor, bind_listeners(Address("127.0.0.1", 0)), ctx.protocol_factory)
    else:
        server = await loop.create_server(ctx.protocol_factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def one() -> bytes:
        done = loop.create_future()
        await loop.create_connection(lambda: OneRequest(request, done), "127.0.0.1", port)
        return await asyncio.wait_for(done, 5)

    answers = [await one() for _ in range(20)]       # warm: the upstream pool, caches
    await asyncio.sleep(0.05)
    gc.collect()
    gc.disable()
    try:
        answers += [await one() for _ in range(connections)]
        await asyncio.sleep(0.05)                    # every connection_lost has run
        found = gc.collect()
        timers_left = ctx.timers_pending()
    finally:
        gc.enable()
    server.close()
    if transports == "reactor":
        reactor.close()
    plane.close_all_upstreams()
    backend.close()
    await asyncio.sleep(0.05)
    return found / connections, answers, timers_left


TRANSPORTS = pytest.mark.parametrize("transports", ["reactor", "uvloop"])


@TRANSPORTS
def test_a_connection_closed_after_its_request_leaves_no_cycle(transports):
    per_connection, answers, timers_left = uvloop.run(garbage_per_connection(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 200, transports))
    assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") and a.endswith(b"ok") for a in answers)
    assert per_connection < 0.05, f"{per_connection:.2f} unreachable objects per connection"
    assert timers_left == 0


@TRANSPORTS
def test_a_connection_refused_by_its_head_leaves_no_cycle(transports):
    per_connection, answers, timers_left = uvloop.run(garbage_per_connection(b"BAD\r\n\r\n", 100, transports))
    assert all(a.startswith(b"HTTP/1.1 400 ") for a in answers)
    assert per_connection < 0.05, f"{per_connection:.2f} unreachable objects per connection"
    assert timers_left == 0
