"""A blocking HTTP/2 client over a raw socket (h2c with prior knowledge), frame by frame.

Frames are built and parsed with ``hyperframe`` and header blocks with ``hpack``, not with
``h2``'s state machine (as ``h2client`` is): the attack tests send what a well-behaved client
never would (floods, endless CONTINUATION, resets, streams past the limit), and the flow tests
open windows only as the bytes are read.

* ``FrameClient(host, port, settings=..., auto_window=...)``: connects and sends the preface;
  ``request`` opens a stream, ``response`` reads it to its end; ``pump`` reads what arrived.
* Each stream is a ``H2Stream``: status, headers, body (or a ``sink``), reset code, ended.
* The server's GOAWAY is kept in ``goaway`` (``error_code``, ``last_stream_id``); ``closed``
  turns true on EOF or a reset.

Every read has a deadline; nothing here loops without a bound.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from hpack import Decoder, Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535
MAX_FRAME = 16384

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 7, 8, 9, 11


@dataclass
class H2Stream:
    id: int
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    received: int = 0
    sink: Callable[[bytes], None] | None = None
    ended: bool = False
    reset: int | None = None            # the error code of the server's RST_STREAM
    send_window: int = DEFAULT_WINDOW

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


class FrameClient:
    """One HTTP/2 connection; ``settings`` are this side's (e.g. {4: 0}: a zero window)."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, settings: dict[int, int] | None = None,
                 auto_window: bool = True, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:          # before connect: a small window keeps the kernel from reading for us
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.auto_window = auto_window
        self.encoder, self.decoder = Encoder(), Decoder()
        self.buf = bytearray()
        self.streams: dict[int, H2Stream] = {}
        self.next_id = 1
        self.goaway: GoAwayFrame | None = None
        self.closed = False
        self.server_settings: dict[int, int] = {}
        self.conn_send_window = DEFAULT_WINDOW
        self.pending_block: tuple[int, bytearray, bool] | None = None   # HEADERS awaiting CONTINUATION
        self.sock.sendall(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())

    def __enter__(self) -> "FrameClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # -- sending ---------------------------------------------------------------------------

    def send(self, *frames: Frame) -> None:
        self.sock.sendall(b"".join(f.serialize() for f in frames))

    def head_block(self, path: str, method: str = "GET", headers=(), authority: str = "gw.test") -> bytes:
        fields = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)]
        return self.encoder.encode(fields + list(headers))

    def open_stream(self, sink: Callable[[bytes], None] | None = None) -> H2Stream:
        stream = H2Stream(self.next_id, sink=sink)
        stream.send_window = self.server_settings.get(4, DEFAULT_WINDOW)
        self.streams[stream.id] = stream
        self.next_id += 2
        return stream

    def request(self, path: str, method: str = "GET", headers=(), body: bytes | None = None,
                end_stream: bool = True, authority: str = "gw.test",
                sink: Callable[[bytes], None] | None = None) -> H2Stream:
        """Open a stream with a request head (and a small body sent at once)."""
        stream = self.open_stream(sink)
        flags = ["END_HEADERS"]
        if end_stream and body is None:
            flags.append("END_STREAM")
        self.send(HeadersFrame(stream.id, self.head_block(path, method, headers, authority), flags=flags))
        if body is not None:
            self.send(DataFrame(stream.id, body, flags=["END_STREAM"] if end_stream else []))
        return stream

    def request_all(self, paths: list[str]) -> list[H2Stream]:
        """GET each of ``paths`` on a stream of its own, all the heads in one write."""
        streams = [self.open_stream() for _ in paths]
        self.send(*(HeadersFrame(s.id, self.head_block(path), flags=["END_HEADERS", "END_STREAM"])
                    for s, path in zip(streams, paths)))
        return streams

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        self.send(RstStreamFrame(stream_id, error_code=code))

    def send_body(self, stream: H2Stream, pieces, deadline: float) -> None:
        """Send ``pieces`` (an iterable of bytes) on ``stream`` as the server's windows allow,
        then END_STREAM.  The windows open only as the server passes the bytes on."""
        for piece in pieces:
            view = memoryview(piece)
            while view:
                while min(stream.send_window, self.conn_send_window) <= 0:
                    assert time.monotonic() < deadline, "upload: the server's window stayed shut"
                    assert not stream.done and not self.closed, (stream.reset, self.goaway)
                    self.pump(0.5)
                n = min(len(view), stream.send_window, self.conn_send_window, MAX_FRAME)
                self.sock.sendall(DataFrame(stream.id, bytes(view[:n])).serialize())
                stream.send_window -= n
                self.conn_send_window -= n
                view = view[n:]
        self.send(DataFrame(stream.id, b"", flags=["END_STREAM"]))

    def open_window(self, stream_id: int, n: int) -> None:
        if n:
            self.send(WindowUpdateFrame(0, window_increment=n), WindowUpdateFrame(stream_id, window_increment=n))

    # -- receiving -------------------------------------------------------------------------

    def pump(self, timeout: float | None = None, size: int = 65536) -> list[Frame]:
        """Read once (waiting at most ``timeout``) and handle the whole frames that arrived."""
        if self.closed:
            return []
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(size)
        except (socket.timeout, BlockingIOError):
            return []
        except ConnectionResetError:
            data = b""
        finally:
            self.sock.settimeout(self.timeout)
        if not data:
            self.closed = True
            return []
        self.buf += data
        return [self.handle(f) for f in self.parse_frames()]

    def parse_frames(self) -> list[Frame]:
        frames = []
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                break
            frame.parse_body(memoryview(bytes(self.buf[9:9 + length])))
            del self.buf[:9 + length]
            frames.append(frame)
        return frames

    def handle(self, frame: Frame) -> Frame:
        if isinstance(frame, SettingsFrame):
            if "ACK" not in frame.flags:
                self.apply_settings(frame.settings)
                self.send(SettingsFrame(0, flags=["ACK"]))
        elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
            self.header_fragment(frame)
        elif isinstance(frame, DataFrame):
            self.data(frame)
        elif isinstance(frame, RstStreamFrame):
            if frame.stream_id in self.streams:
                self.streams[frame.stream_id].reset = frame.error_code
        elif isinstance(frame, GoAwayFrame):
            self.goaway = frame
        elif isinstance(frame, WindowUpdateFrame):
            if frame.stream_id == 0:
                self.conn_send_window += frame.window_increment
            elif frame.stream_id in self.streams:
                self.streams[frame.stream_id].send_window += frame.window_increment
        elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
            self.send(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]))
        return frame

    def apply_settings(self, settings: dict[int, int]) -> None:
        if 4 in settings:               # INITIAL_WINDOW_SIZE: open streams' windows move by the difference
            delta = settings[4] - self.server_settings.get(4, DEFAULT_WINDOW)
            for stream in self.streams.values():
                stream.send_window += delta
        self.server_settings.update(settings)

    def header_fragment(self, frame: Frame) -> None:
        if isinstance(frame, HeadersFrame):
            self.pending_block = (frame.stream_id, bytearray(frame.data), "END_STREAM" in frame.flags)
        elif self.pending_block is not None:
            self.pending_block[1].extend(frame.data)
        if "END_HEADERS" not in frame.flags or self.pending_block is None:
            return
        stream_id, block, end = self.pending_block
        self.pending_block = None
        fields = self.decoder.decode(bytes(block), raw=True)
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if stream.status is None and fields and fields[0][0] == b":status":
            stream.status = int(fields[0][1])
            stream.headers = [(k, v) for k, v in fields if k != b":status"]
        else:
            stream.headers += fields    # trailers
        stream.ended = stream.ended or end

    def data(self, frame: DataFrame) -> None:
        stream = self.streams.get(frame.stream_id)
        n = frame.flow_controlled_length
        if stream is not None:
            stream.received += len(frame.data)
            if stream.sink is not None:
                stream.sink(frame.data)
            else:
                stream.body += frame.data
            stream.ended = stream.ended or "END_STREAM" in frame.flags
        if self.auto_window and n:
            self.open_window(frame.stream_id, n)

    def response(self, stream: H2Stream, timeout: float = 10.0) -> H2Stream:
        """Read until ``stream`` ended or was reset (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not stream.done:
            assert not self.closed, f"connection closed before stream {stream.id} ended ({self.goaway})"
            left = deadline - time.monotonic()
            assert left > 0, f"stream {stream.id} did not end in {timeout}s"
            self.pump(min(left, 1.0))
        return stream

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """True once the server closed the connection (frames before that are handled)."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.pump(max(0.01, min(deadline - time.monotonic(), 1.0)))
        return self.closed

    def get(self, path: str, timeout: float = 10.0, **kw) -> H2Stream:
        return self.response(self.request(path, **kw), timeout)
