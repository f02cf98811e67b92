"""RequestMirror: a copy of a request sent to another service, its answer thrown away.

Fire and forget, off the request path: the proxy hands over the request head it built
(bodiless requests only) and returns at once; this opens a connection to an endpoint the
mirror service's table picks, writes the copy, reads until the answer's head (or the
connection's end) and closes. It is bounded so that a slow or dead mirror cannot pile up
connections: at most ``max_in_flight`` copies per worker at once (more are dropped and
counted) and ``timeout`` seconds each.

A share below 1 (RequestMirror ``percent`` / ``fraction``) is kept exactly rather than drawn:
each request adds the share to a credit and a copy goes whenever the credit reaches 1 (error
diffusion), so 10% is every tenth request of a worker, with no random draw per request.
"""
from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("gateway.mirror")


class _MirrorProtocol(asyncio.Protocol):
    """Writes the copy, waits for the first bytes of an answer, closes."""

    def __init__(self, mirror: "Mirror", data: bytes) -> None:
        self.mirror, self.data = mirror, data
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.data)
        self.timer = asyncio.get_running_loop().call_later(self.mirror.timeout, transport.abort)

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data or len(data) > 65536:
            self.mirror.answered += 1
            self.transport.close()

    def connection_lost(self, exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.mirror.done()


class Mirror:
    """Callable the proxy calls with a request head; sends it to ``service``'s endpoints."""

    def __init__(self, loop: asyncio.AbstractEventLoop, service, fraction: float = 1.0,
                 max_in_flight: int = 64, timeout: float = 5.0) -> None:
        self.loop, self.service = loop, service
        self.fraction, self._credit = fraction, 0.0
        self.max_in_flight, self.timeout = max_in_flight, timeout
        self.in_flight = 0
        self.sent = self.dropped = self.failed = self.answered = self.skipped = 0

    def __call__(self, head: bytes) -> None:
        if self.fraction < 1.0:
            self._credit += self.fraction
            if self._credit < 1.0:
                self.skipped += 1       # not this request's turn
                return
            self._credit -= 1.0
        table = self.service.table
        index = table.pick(None)
        if index < 0 or self.in_flight >= self.max_in_flight:
            self.dropped += 1
            return
        upstream = table.endpoint(index)
        self.in_flight += 1
        self.sent += 1
        connecting = self.loop.create_connection(lambda: _MirrorProtocol(self, head), upstream.ip, upstream.port)
        task = self.loop.create_task(asyncio.wait_for(connecting, self.timeout))
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:
            self.failed += 1
            self.done()

    def done(self) -> None:
        self.in_flight -= 1
