"""The floor: a bare callback proxy on uvloop + httptools, with no feature of the gateway.

    python bench/bare_proxy.py --listen 127.0.0.1:8080 --backend 127.0.0.2:8000 --backend 127.0.0.3:8000

Round robin over the backends, a keep-alive pool per backend, one request at a time per
client connection; httptools parses the request (the head is rebuilt without Connection)
and finds where each response ends (its bytes go to the client as they come).  No
routing, header rewriting, health, retries, timeouts, limits or log; request bodies with
Content-Length only.  ``bench/run.py``'s "bare" target: the gateway's cost above it is
what its features cost, what is left under it is Python on uvloop.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools

import httptools
import uvloop

HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"upgrade"))


class Backend:
    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port, self.idle = host, int(port), []

    def lend(self, client: "Client") -> None:
        if self.idle:
            client.attach(self.idle.pop())
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.create_connection(lambda: Upstream(self), self.host, self.port))
        task.add_done_callback(lambda t: client.transport.close() if t.exception()
                               else client.attach(t.result()[1]))


class Upstream(asyncio.Protocol):
    def __init__(self, backend: Backend) -> None:
        self.backend, self.client, self.parser = backend, None, httptools.HttpResponseParser(self)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        self.backend.idle.append(self)
        client.response_done()

    def connection_lost(self, exc) -> None:
        if self in self.backend.idle:
            self.backend.idle.remove(self)
        if self.client is not None:
            self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, backends) -> None:
        self.backends, self.up, self.waiting = backends, None, []
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.head = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in HOP_BY_HOP:
            self.head += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        next(self.backends).lend(self)
        self.send(b"%s %s HTTP/1.1\r\n%s\r\n" % (self.parser.get_method(), self.url, b"".join(self.head)))

    def on_body(self, body: bytes) -> None:
        self.send(body)

    def send(self, data: bytes) -> None:
        if self.up is not None:
            self.up.transport.write(data)
        else:
            self.waiting.append(data)       # the connection to the backend is being made

    def attach(self, up: Upstream) -> None:
        self.up, up.client = up, self
        up.transport.writelines(self.waiting)
        self.waiting = []

    def response_done(self) -> None:
        self.up = None
        if not self.keep_alive:
            self.transport.close()


async def serve(listen: str, backends: list[str]) -> None:
    host, _, port = listen.rpartition(":")
    pool = itertools.cycle([Backend(b) for b in backends])
    server = await asyncio.get_running_loop().create_server(lambda: Client(pool), host, int(port),
                                                            backlog=4096)
    await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--backend", action="append", required=True)
    args = ap.parse_args()
    uvloop.run(serve(args.listen, args.backend))


if __name__ == "__main__":
    main()
