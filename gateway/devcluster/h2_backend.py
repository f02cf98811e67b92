"""h2c backends: HTTP/2 "pods" (prior knowledge, no TLS; or h2 over TLS with --cert/--key)
built on the ``h2`` library, for the gateway's upstream HTTP/2.

Endpoints (any method)::

    /bytes/<n>         n bytes with content-length, under flow control
    /stream/<n>        n bytes without content-length, then trailers (x-checksum: sha256)
    /echo              the request body streamed back as it comes (no content-length)
    /upload            consume the body, answer {"received": n, "sha256": hex, "trailers": {...}}
    /delay/<seconds>   answer after <seconds>
    /status/<code>     answer <code> (the identity JSON)
    /big-head/<n>      answer with header fields of n bytes in all (at most 8 KiB each)
    extended CONNECT   (``:protocol websocket``, RFC 8441; not with --no-websocket, which leaves
                       SETTINGS_ENABLE_CONNECT_PROTOCOL out) a WebSocket server on the stream:
                       every message back, the subprotocol "chat" when offered, a close
                       answered with a close and END_STREAM (as a server closes TCP)
    /_backend/stats    {"connections", "open", "peak_streams", "requests"}
    anything else      200 {"cluster", "pod", "method", "path", "headers", "connection"}; with
                       --namespace NS, the echo of the Gateway API conformance suite's echo-basic
                       (gateway.devcluster.echo_basic), a pod of that namespace

Body bytes are deterministic: byte ``i`` is ``i % 256``.  SIGUSR1 sends GOAWAY on every
connection, naming the last stream answered: requests in flight were not processed (they
are dropped), then the connection closes.  ``--max-concurrent-streams`` is advertised in
SETTINGS and enforced (more concurrent streams are refused, and counted in ``peak_streams``
as they came).

Run one with ``python -m gateway.devcluster.h2_backend --host 127.0.0.2 --port 9100 --cluster a
--pod h2-a-0``; it prints ``READY 127.0.0.2:9100 cluster=a pod=h2-a-0 pid=N``.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import ssl
import sys

import orjson

from . import _process
from .backend import BackendProcess

try:
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gateway.devcluster.h2_backend needs h2: pip install 'gateway[test]'") from exc

_PATTERN = bytes(range(256)) * 256      # 64 KiB; byte i is i % 256


class Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.open: set[H2Server] = set()
        self.peak_streams = 0
        self.requests = 0

    def as_json(self) -> bytes:
        return orjson.dumps({"connections": self.connections, "open": len(self.open),
                             "peak_streams": self.peak_streams, "requests": self.requests})


class _Stream:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.body = asyncio.Queue()     # bytes, then None at the end of the request
        self.trailers: dict[str, str] = {}
        self.task: asyncio.Task | None = None


class H2Server(asyncio.Protocol):
    """One client connection; a task per stream (a test server: clarity over speed)."""

    def __init__(self, identity: dict, stats: Stats, max_streams: int, websocket: bool = True) -> None:
        self.identity = identity
        self.stats = stats
        self.max_streams = max_streams
        self.websocket = websocket
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.streams: dict[int, _Stream] = {}
        self.window_open = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self.answered = 0               # the highest stream id answered whole
        self.going_away = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.stats.connections += 1
        self.stats.open.add(self)
        self.conn.initiate_connection()
        settings = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams}
        if self.websocket:
            settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1
        self.conn.update_settings(settings)
        self.flush()

    def connection_lost(self, exc) -> None:
        self.stats.open.discard(self)
        for stream in self.streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self.window_open.set()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            print(f"h2_backend: closing a connection: {exc!r}", file=sys.stderr)
            self.flush()
            self.transport.close()
            return
        for event in events:
            self.on_event(event)
        self.flush()

    def on_event(self, event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self.start_stream(event.stream_id, event.headers, event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.body.put_nowait(event.data)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.trailers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.body.put_nowait(None)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None and stream.task is not None:
                stream.task.cancel()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.window_open.set()

    def start_stream(self, stream_id: int, headers, ended: bool) -> None:
        if self.going_away:
            return
        fields = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                  for k, v in headers}
        stream = self.streams[stream_id] = _Stream(fields)
        self.stats.peak_streams = max(self.stats.peak_streams, len(self.streams))
        if len(self.streams) > self.max_streams:
            del self.streams[stream_id]
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        self.stats.requests += 1
        if ended:
            stream.body.put_nowait(None)
        stream.task = asyncio.get_running_loop().create_task(self.answer(stream_id, stream))

    async def answer(self, stream_id: int, stream: _Stream) -> None:
        path = stream.headers.get(":path", "/")
        parts = path.split("?", 1)[0].split("/")
        try:
            if stream.headers.get(":protocol") == "websocket":
                await self.websocket_echo(stream_id, stream)
            elif "namespace" in self.identity:     # echo-basic: every path is echoed
                await self.read_all(stream)
                await self.respond(stream_id, 200, [("content-type", "application/json")],
                                   orjson.dumps(self.echo_basic(stream)))
            elif parts[1] == "bytes":
                await self.read_all(stream)
                n = int(parts[2])
                await self.respond(stream_id, 200, [("content-length", str(n))], _pattern(n))
            elif parts[1] == "stream":
                await self.read_all(stream)
                body = _pattern(int(parts[2]))
                self.send_headers(stream_id, 200, [])
                await self.send_body(stream_id, body, end=False)
                self.conn.send_headers(stream_id, [("x-checksum", hashlib.sha256(body).hexdigest())],
                                       end_stream=True)
                self.flush()
            elif parts[1] == "echo":
                self.send_headers(stream_id, 200, [])
                while (chunk := await stream.body.get()) is not None:
                    await self.send_body(stream_id, chunk, end=False)
                await self.send_body(stream_id, b"", end=True)
            elif parts[1] == "upload":
                digest, n = hashlib.sha256(), 0
                while (chunk := await stream.body.get()) is not None:
                    digest.update(chunk)
                    n += len(chunk)
                await self.respond(stream_id, 200, [], orjson.dumps({
                    "received": n, "sha256": digest.hexdigest(), "trailers": stream.trailers}))
            elif parts[1] == "big-head":
                await self.read_all(stream)
                n = int(parts[2])
                fields = [(f"x-big-{i}", "x" * min(8192, n - i * 8192)) for i in range(-(-n // 8192))]
                await self.respond(stream_id, 200, fields, b"big")
            elif path == "/_backend/stats":
                await self.respond(stream_id, 200, [], self.stats.as_json())
            else:
                if parts[1] == "delay":
                    await asyncio.sleep(float(parts[2]))
                status = int(parts[2]) if parts[1] == "status" else 200
                body = await self.read_all(stream)
                await self.respond(stream_id, status, [("content-type", "application/json")], orjson.dumps(
                    {**self.identity, "method": stream.headers.get(":method"), "path": path,
                     "headers": {k: v for k, v in stream.headers.items() if not k.startswith(":")},
                     "connection": id(self), "received": len(body)}))
        except (h2.exceptions.StreamClosedError, ConnectionError):
            pass
        finally:
            self.streams.pop(stream_id, None)

    async def websocket_echo(self, stream_id: int, stream: _Stream) -> None:
        """RFC 8441: 200 opens the tunnel; the stream's DATA is the WebSocket's bytes."""
        from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode

        offered = [p.strip() for p in stream.headers.get("sec-websocket-protocol", "").split(",")]
        self.send_headers(stream_id, 200, [("sec-websocket-protocol", "chat")] if "chat" in offered else [])
        frames = FrameProtocol(client=False, extensions=[])
        message: list = []
        while (chunk := await stream.body.get()) is not None:
            frames.receive_bytes(chunk)
            for frame in frames.received_frames():
                if frame.opcode is Opcode.CLOSE:      # answered, then END_STREAM: RFC 8441's TCP close
                    code, reason = frame.payload
                    await self.send_body(stream_id, bytes(frames.close(code or CloseReason.NORMAL_CLOSURE, reason)),
                                         end=True)
                    return
                elif frame.opcode is Opcode.PING:
                    await self.send_body(stream_id, bytes(frames.pong(frame.payload)), end=False)
                elif frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION):
                    message.append(frame.payload)
                    if frame.message_finished:
                        whole = "".join(message) if isinstance(message[0], str) else b"".join(message)
                        message = []
                        await self.send_body(stream_id, bytes(frames.send_data(whole, fin=True)), end=False)
        await self.send_body(stream_id, b"", end=True)

    def echo_basic(self, stream: _Stream) -> dict:
        from .echo_basic import assertions
        fields = [(k, v) for k, v in stream.headers.items() if not k.startswith(":")]
        return assertions(target=stream.headers.get(":path", "/"), host=stream.headers.get(":authority", ""),
                          method=stream.headers.get(":method", ""), proto="HTTP/2.0", fields=fields,
                          namespace=self.identity["namespace"], pod=self.identity["pod"],
                          http_port=self.identity["address"].rsplit(":", 1)[1])

    async def read_all(self, stream: _Stream) -> bytes:
        parts = []
        while (chunk := await stream.body.get()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    def send_headers(self, stream_id: int, status: int, headers: list, end: bool = False) -> None:
        self.conn.send_headers(stream_id, [(":status", str(status)), *headers], end_stream=end)
        self.flush()

    async def respond(self, stream_id: int, status: int, headers: list, body: bytes) -> None:
        self.send_headers(stream_id, status, headers)
        await self.send_body(stream_id, body, end=True)

    async def send_body(self, stream_id: int, body: bytes, end: bool) -> None:
        """As the peer's windows allow (a slow reader stalls this stream only)."""
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.window_open.clear()
                await self.window_open.wait()
                if self.transport.is_closing():
                    raise ConnectionError("closed")
                continue
            self.conn.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(stream_id)
            self.answered = max(self.answered, stream_id)
            self.flush()

    def go_away(self) -> None:
        """GOAWAY naming the last stream answered: the ones in flight are dropped, unprocessed."""
        self.going_away = True
        for stream in self.streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self.conn.close_connection(last_stream_id=self.answered)
        self.flush()
        asyncio.get_running_loop().call_later(0.2, self.transport.close)


def _pattern(n: int) -> bytes:
    return (_PATTERN * (n // len(_PATTERN) + 1))[:n]


class H2BackendProcess(BackendProcess):
    """An h2c (or, with a certificate, h2) backend in its own process."""

    module = "gateway.devcluster.h2_backend"

    def __init__(self, host: str, port: int, cluster: str, pod: str, max_streams: int = 100,
                 cert: str | None = None, key: str | None = None, namespace: str | None = None,
                 websocket: bool = True) -> None:
        super().__init__(host, port, cluster, pod)
        self.max_streams = max_streams
        self.cert, self.key = cert, key
        self.namespace = namespace
        self.websocket = websocket

    def options(self) -> list[str]:
        tls = ["--cert", self.cert, "--key", self.key] if self.cert else []
        echo = ["--namespace", self.namespace] if self.namespace is not None else []
        websocket = [] if self.websocket else ["--no-websocket"]
        return ["--max-concurrent-streams", str(self.max_streams), *tls, *echo, *websocket]

    def go_away(self) -> None:
        self.send_signal(signal.SIGUSR1)


async def start(host: str, port: int, cluster: str, pod: str, max_streams: int = 100,
                tls: ssl.SSLContext | None = None, namespace: str | None = None, websocket: bool = True):
    stats = Stats()
    identity = {"cluster": cluster, "pod": pod, "address": f"{host}:{port}"}
    if namespace is not None:
        identity["namespace"] = namespace
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: H2Server(identity, stats, max_streams, websocket), host, port,
                                      ssl=tls)
    identity["address"] = f"{host}:{server.sockets[0].getsockname()[1]}"
    return server, stats


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
        tls.set_alpn_protocols(["h2"])
    server, stats = await start(args.host, args.port, args.cluster, args.pod,
                                args.max_concurrent_streams, tls, args.namespace, not args.no_websocket)
    loop.add_signal_handler(signal.SIGUSR1, lambda: [conn.go_away() for conn in list(stats.open)])
    done = _process.stop_requested(loop, args.parent_pid)
    port = server.sockets[0].getsockname()[1]
    _process.announce(f"{args.host}:{port} cluster={args.cluster} pod={args.pod} pid={os.getpid()}")
    await done.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="an h2c backend pod of the local clusters")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--pod", required=True)
    parser.add_argument("--max-concurrent-streams", type=int, default=100)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--no-websocket", action="store_true",
                        help="leave SETTINGS_ENABLE_CONNECT_PROTOCOL out: no WebSocket over HTTP/2")
    parser.add_argument("--namespace", help="answer as the Gateway API conformance suite's echo-basic, "
                                             "a pod of this namespace")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
