"""A blocking HTTP/1.1 client over a raw socket, for tests and benchmarks that must control
every byte: ``Client`` (keep-alive, pipelining, Content-Length / chunked / until-close bodies,
1xx, trailers, raw bytes for malformed requests, waiting for the server to close), its
``Response``, ``PeerClosed``; and the body helpers ``encode_chunked``, ``pattern_bytes`` (the
devcluster backend's bodies), ``expected_sha256`` and ``Pacer`` (a slow reader).
"""
from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import orjson


class PeerClosed(ConnectionError):
    """The server closed the connection (EOF) while a response was expected."""


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    interim: list["Response"] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)   # a chunked body's

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def json(self):
        return orjson.loads(self.body)

    def upstream_saw(self, name: str) -> list[str]:
        """The values of the field ``name`` (any case) that the devcluster backend's echo says
        it received; the echo keys fields as sent, so "X-User" and "x-user" are two entries."""
        lname = name.lower()
        return [v for k, v in self.json()["headers"].items() if k.lower() == lname]

    @property
    def closes(self) -> bool:
        conn = (self.header("connection") or "").lower()
        return "close" in conn or (self.version == "HTTP/1.0" and "keep-alive" not in conn)


class Client:
    """One client connection.  ``request`` sends and reads; lower-level pieces are public."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, source: str | None = None) -> None:
        # ``source``: the local address to connect from (any of 127/8 on loopback), so that a
        # test can be a client from a chosen address.
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.timeout = timeout

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # sending

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    @staticmethod
    def build(method: str, target: str, headers: list[tuple[str, str]] | dict | None = None,
              body: bytes | None = None, host: str | None = "gw.test", version: str = "HTTP/1.1",
              chunked: bool = False) -> bytes:
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        names = {k.lower() for k, _ in items}
        lines = [f"{method} {target} {version}"]
        if host is not None and "host" not in names:
            lines.append(f"Host: {host}")
        lines += [f"{k}: {v}" for k, v in items]
        payload = b""
        if chunked:
            lines.append("Transfer-Encoding: chunked")
            payload = encode_chunked([body] if body else [])
        elif body is not None:
            if "content-length" not in names:
                lines.append(f"Content-Length: {len(body)}")
            payload = body
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload

    def request(self, method: str, target: str, headers=None, body: bytes | None = None,
                host: str | None = "gw.test", version: str = "HTTP/1.1", chunked: bool = False) -> Response:
        self.send(self.build(method, target, headers, body, host, version, chunked))
        return self.read_response(method)

    # receiving

    def _fill(self, size: int = 65536) -> None:
        data = self.sock.recv(size)
        if not data:
            raise PeerClosed("connection closed by the server")
        self.buf += data

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_line(self, limit: int = 65536) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                return self._take(i + 2)[:-2]
            if len(self.buf) > limit:
                raise ValueError("line too long")
            self._fill()

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill(max(65536, n - len(self.buf)))
        return self._take(n)

    def read_some(self, size: int = 65536) -> bytes:
        """Whatever is buffered or arrives next (at most ``size``); b"" on EOF."""
        if not self.buf:
            data = self.sock.recv(size)
            return data
        return self._take(min(size, len(self.buf)))

    def read_head(self) -> Response:
        """One response head (1xx included)."""
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise ValueError("response head too large")
            self._fill()
        end = self.buf.find(b"\r\n\r\n")
        raw = self._take(end + 4).decode("latin-1")
        lines = raw.split("\r\n")[:-2]
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
        return Response(version, int(code), reason, headers)

    def read_response(self, method: str = "GET") -> Response:
        """The next final response with its body; 1xx heads are kept in ``interim``."""
        interim = []
        while True:
            resp = self.read_head()
            if resp.status >= 200 or resp.status == 101:
                break
            interim.append(resp)
        resp.interim = interim
        parts: list[bytes] = []
        self.read_body(resp, method, parts.append)
        resp.body = b"".join(parts)
        return resp

    def read_body(self, resp: Response, method: str, sink: Callable[[bytes], None],
                  piece: int = 1 << 20, pace: Callable[[int], None] | None = None) -> int:
        """Stream ``resp``'s body to ``sink`` in pieces of at most ``piece`` bytes.

        ``pace(n)`` is called after each piece (a slow reader sleeps there).  Returns the size.
        """
        total = 0
        if method == "HEAD" or resp.status in (101, 204, 304) or 100 <= resp.status < 200:
            return 0
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")

        def deliver(n: int) -> None:
            nonlocal total
            while n:
                if not self.buf:
                    self._fill(min(piece, max(n, 1)))
                take = min(n, len(self.buf), piece)
                sink(self._take(take))
                total += take
                n -= take
                if pace is not None:
                    pace(take)

        if "chunked" in te:
            while True:
                size_line = self.read_line()
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while line := self.read_line():     # trailers up to the blank line
                        name, _, value = line.decode("latin-1").partition(":")
                        resp.trailers.append((name.strip(), value.strip()))
                    return total
                deliver(size)
                if self.read_line() != b"":
                    raise ValueError("chunk not followed by CRLF")
        if cl is not None:
            deliver(int(cl))
            return total
        # until close
        while True:
            if not self.buf:
                data = self.sock.recv(piece)
                if not data:
                    return total
                self.buf += data
            n = len(self.buf)
            sink(self._take(n))
            total += n
            if pace is not None:
                pace(n)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (EOF or reset) within ``timeout``;
        bytes arriving before that are kept in ``extra``."""
        self.extra = bytes(self.buf)
        self.buf.clear()
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.extra += data
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(self.timeout)


def http10_get(port: int, target: str, host: str = "gw.test") -> tuple[bytes, bytes]:
    """(head, body) of an HTTP/1.0 GET to 127.0.0.1:``port``, the body read until the server
    closes (what an HTTP/1.0 client knows of a body without a length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head, body


def encode_chunked(pieces: Iterable[bytes]) -> bytes:
    out = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p]
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def pattern_bytes(offset: int, n: int) -> bytes:
    """The devcluster backend's body bytes: byte ``i`` is ``i % 256``."""
    base = bytes(range(256))
    start = offset % 256
    reps = (start + n) // 256 + 1
    return (base * reps)[start:start + n]


def expected_sha256(n: int) -> str:
    """The sha256 of ``pattern_bytes(0, n)``, computed 64 KiB at a time."""
    block = bytes(range(256)) * 256      # 64 KiB, a multiple of 256: the pattern continues
    digest = hashlib.sha256()
    full, rest = divmod(n, len(block))
    for _ in range(full):
        digest.update(block)
    digest.update(block[:rest])
    return digest.hexdigest()


class Pacer:
    """Sleeps so that reading proceeds at about ``rate`` bytes/s (a slow client)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.done = 0

    def __call__(self, n: int) -> None:
        self.done += n
        ahead = self.done / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(min(ahead, 0.5))
