"""A blocking HTTP/2 test client over a real socket (h2c prior knowledge, or TLS with ALPN h2),
built on the ``h2`` library: it sends what a test asks, frame by frame if need be, and
collects each stream's answer (head, body, trailers, reset) as it comes."""
from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events


@dataclass
class StreamAnswer:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    fields: list[tuple[str, str]] = field(default_factory=list)     # the head as it came
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    reset: int | None = None            # RST_STREAM error code
    ended: bool = False

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    @property
    def grpc_status(self) -> str | None:
        """From the trailers, or from the head of a trailers-only answer."""
        return self.trailers.get("grpc-status", self.headers.get("grpc-status"))


class H2Client:
    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None,
                 server_name: str | None = None, timeout: float = 10.0, auto_ack: bool = True,
                 source: str | None = None) -> None:
        raw = socket.create_connection((host, port), timeout=timeout,
                                       source_address=(source, 0) if source is not None else None)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
            raw = tls.wrap_socket(raw, server_hostname=server_name)
            assert raw.selected_alpn_protocol() == "h2", raw.selected_alpn_protocol()
        self.sock = raw
        self.timeout = timeout
        self.authority = f"{host}:{port}"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.answers: dict[int, StreamAnswer] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.auto_ack = auto_ack                # give back window as data is read
        self.flush()

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def request(self, method: str, path: str, headers: list[tuple[str, str]] = (),
                body: bytes | None = None, end: bool = True) -> int:
        """Open a stream; ``end``: the request ends here (with ``body`` if any)."""
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"), (":authority", self.authority),
                  (":path", path), *headers]
        self.conn.send_headers(sid, fields, end_stream=end and not body)
        self.answers[sid] = StreamAnswer()
        if body:
            self.send_body(sid, body, end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True) -> None:
        """Send ``body`` as the windows allow (reading the peer meanwhile)."""
        view = memoryview(body)
        deadline = time.monotonic() + self.timeout
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.read_some(deadline)
                continue
            self.conn.send_data(sid, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def read_some(self, deadline: float) -> bool:
        """Read once and handle the events; False when the connection closed."""
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self.handle(event)
        self.flush()
        return True

    def handle(self, event) -> None:
        answer = self.answers.get(getattr(event, "stream_id", 0))
        if isinstance(event, h2.events.ResponseReceived):
            answer.fields = list(event.headers)
            answer.headers = dict(event.headers)
            answer.status = int(answer.headers.pop(":status"))
        elif isinstance(event, h2.events.DataReceived):
            answer.body += event.data
            if self.auto_ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            answer.trailers = dict(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            answer.ended = True
        elif isinstance(event, h2.events.StreamReset):
            if answer is not None:
                answer.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def wait(self, *sids: int, timeout: float | None = None) -> list[StreamAnswer]:
        """Read until every stream in ``sids`` (default: all) is answered or reset."""
        sids = sids or tuple(self.answers)
        deadline = time.monotonic() + (timeout or self.timeout)
        while not all(self.answers[s].done for s in sids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"streams not answered: {[s for s in sids if not self.answers[s].done]}")
            if not self.read_some(deadline):
                break
        return [self.answers[s] for s in sids]

    def get(self, path: str, headers: list[tuple[str, str]] = ()) -> StreamAnswer:
        return self.wait(self.request("GET", path, headers))[0]

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self.flush()
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> "H2Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
