"""Recorded request sequences for the differential test of the request path
(``tests/test_proxy_differential.py``).

``generate(seed, n)`` draws cases from a seeded generator: per client connection, a few
pipelined requests (methods, sized or chunked bodies, HTTP/1.0, ``Connection: close``,
header rewrites by route filters, redirects, path normalization, retries past an endpoint
that refuses connections or answers 503), sometimes ending in a malformed head, the whole
written in random pieces.  ``run_case`` sends one case through a real gateway process in
front of a ``ScriptedBackend`` and returns what the backend received (request heads and
bodies, as bytes on the wire) and what the client read, with volatile values (Date,
generated request ids, ports) normalized.  ``python -m reference.exchange`` (from tests/)
records ``exchange_cases.json``: the behaviour of the implementation it ran against.

A case's bytes are a list of segments, each a string (Latin-1) or ``[offset, n]`` for
``pattern_bytes(offset, n)``, so that large bodies stay small in the fixture.
"""
from __future__ import annotations

import json
import random
import re
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "exchange_cases.json"
sys.path.insert(0, str(HERE.parent))

from support import GatewayProcess, TinyServer, free_port, pattern_bytes, static_source  # noqa: E402
from test_security_smuggling import split_message  # noqa: E402

SEED = 16
CASES = 160
RUN_MIN = 16                            # see _stored
MAX_BODY = 100_000                      # limits.max_body of the gateway under test

GOOD, REFUSED, FAILING = "127.0.0.61", "127.0.0.63", "127.0.0.64"


# -- the backend -------------------------------------------------------------------------------


def answer(method: bytes, fields: list[tuple[bytes, bytes]]) -> tuple[bytes, bool]:
    """The backend's response to one request, from its X-Answer header; (bytes, close after)."""
    spec = dict(fields).get(b"x-answer", b"len:2").decode()
    kind, _, arg = spec.partition(":")
    head_only = method == b"HEAD"
    if kind == "len":
        n = int(arg)
        body = b"" if head_only else pattern_bytes(7, n)
        return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Backend: good\r\n"
                b"X-Request-Id: from-backend\r\nContent-Length: %d\r\n\r\n" % n + body), False
    if kind == "chunked":
        count, size = (int(x) for x in arg.split("x"))
        body = b"" if head_only else b"".join(
            b"%x\r\n" % size + pattern_bytes(i, size) + b"\r\n" for i in range(count)) + b"0\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Backend: good\r\n\r\n" + body, False
    if kind == "status":
        status = int(arg)
        if status in (204, 304):
            return b"HTTP/1.1 %d Whatever\r\nX-Backend: good\r\n\r\n" % status, False
        return b"HTTP/1.1 %d Whatever\r\nContent-Length: 5\r\n\r\n%s" % (
            status, b"" if head_only else b"nope\n"), False
    if kind == "close":
        return (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
                + (b"" if head_only else pattern_bytes(3, int(arg)))), True
    if kind == "interim":
        return (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n" + (b"" if head_only else b"yes")), False
    raise ValueError(f"unknown X-Answer {spec!r}")


class ScriptedBackend:
    """A TCP upstream answering each request as its X-Answer header says; with ``record``,
    every request (head and raw body) is kept, in arrival order; ``status`` answers every
    request with that status instead (an endpoint that fails)."""

    def __init__(self, host: str, status: int = 0) -> None:
        self.status = status
        self.lock = threading.Lock()
        self.received: list[bytes] = []
        self.server = TinyServer(host, self._handle)

    @property
    def address(self) -> str:
        return self.server.address

    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(120.0)
        buf = bytearray()
        while True:
            data = sock.recv(65536)
            if not data:
                return
            buf += data
            while (msg := split_message(buf)) is not None:
                head, fields, body, used = msg
                raw = bytes(buf[:used])
                del buf[:used]
                if self.status:
                    sock.sendall(b"HTTP/1.1 %d Failing\r\nContent-Length: 0\r\n\r\n" % self.status)
                    continue
                with self.lock:
                    self.received.append(raw)
                out, close = answer(head.split(b" ", 2)[0], fields)
                sock.sendall(out)
                if close:
                    sock.shutdown(socket.SHUT_WR)
                    return

    def mark(self) -> int:
        with self.lock:
            return len(self.received)

    def since(self, mark: int) -> list[bytes]:
        with self.lock:
            return self.received[mark:]

    def stop(self) -> None:
        self.server.stop()


# -- the gateway -------------------------------------------------------------------------------


def gateway_config(good: str, refused: str, failing: str) -> dict:
    rec = {"name": "rec", "port": 80, "outlier_detection": "off"}
    return {
        "sources": [static_source("zone-a", {"rec": [good], "retry": [good, refused],
                                             "r5": [good, failing]})],
        "services": [rec, {**rec, "name": "retry"}, {**rec, "name": "r5"}],
        "limits": {"max_body": MAX_BODY},
        "timeouts": {"body_idle": "2s", "downstream_header": "2s"},
        "routes": [
            {"name": "filt", "match": {"path": {"segment_prefix": "/filt"}}, "service": "rec",
             "request_headers": {"set": [{"name": "X-Set", "value": "set"}],
                                 "add": [{"name": "X-Add", "value": "added"}], "remove": ["X-Drop"]},
             "response_headers": {"set": {"X-Gw": "yes"}, "add": {"X-More": "1"},
                                  "remove": ["X-Backend"]}},
            {"name": "rw", "match": {"path": {"prefix": "/rw/"}}, "service": "rec",
             "rewrite": {"prefix": "/inner/"}},
            {"name": "rwhost", "match": {"path": {"segment_prefix": "/rwhost"}}, "service": "rec",
             "rewrite": {"full_path": "/replaced", "host": "upstream.internal"}},
            {"name": "redir", "match": {"path": {"segment_prefix": "/old"}},
             "redirect": {"scheme": "https", "status": 301}},
            {"name": "retry", "match": {"path": {"prefix": "/retry"}}, "service": "retry",
             "retries": {"attempts": 3}},
            {"name": "r5", "match": {"path": {"prefix": "/r5"}}, "service": "r5",
             "retries": {"attempts": 3, "on_5xx": True}},
            {"name": "plain", "match": {"path": {"prefix": "/plain"}}, "service": "rec",
             "retries": {"attempts": 1}},
        ],
    }


@dataclass
class Harness:
    """A gateway process in front of the scripted backends, for ``run_case``."""

    gw: GatewayProcess
    good: ScriptedBackend


@contextmanager
def harness(workdir: Path):
    good = ScriptedBackend(GOOD)
    failing = ScriptedBackend(FAILING, status=503)
    try:
        refused = f"{REFUSED}:{free_port(REFUSED)}"
        gw = GatewayProcess(gateway_config(good.address, refused, failing.address), workdir,
                            "differential").start()
        try:
            yield Harness(gw, good)
        finally:
            gw.stop()
    finally:
        good.stop()
        failing.stop()


# -- cases -------------------------------------------------------------------------------------


def _body_segments(rng: random.Random, n: int, chunked: bool) -> list:
    if not chunked:
        return [[rng.randrange(256), n]] if n else []
    out: list = []
    left = n
    while left > 0:
        size = min(left, rng.choice((1, 10, 100, 1000, 5000, 40000)))
        ext = rng.choice(("", "", ";ext=1"))
        out += [f"{size:x}{ext}\r\n", [rng.randrange(256), size], "\r\n"]
        left -= size
    out.append(rng.choice(("0\r\n\r\n", "0\r\n\r\n", "0\r\nX-Trailer: t\r\n\r\n")))
    return out


PATHS = ("/plain/a", "/plain/b?q=1&r=%41", "/plain/./x/../y", "/plain//double", "/plain/%7euser",
         "/filt/x", "/filt", "/rw/deep/path?k=v", "/rwhost/anything", "/old/page?x=1",
         "/retry/one", "/r5/five", "/nowhere", "/plain/esc%2Fslash")
ANSWERS = ("len:0", "len:2", "len:300", "len:20000", "len:70000", "chunked:3x100",
           "chunked:2x9000", "status:404", "status:500", "status:204", "status:304",
           "close:500", "interim")
MALFORMED = (
    "GET /plain/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    "GET /plain/x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
    "GET /plain/x HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n  b\r\n\r\n",
    "G@T /plain/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /plain/x HTTP/2.0\r\nHost: a\r\n\r\n",
    "GET /plain/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "GET /plain/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n",
    "GET /" + "u" * 9000 + " HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /plain/x HTTP/1.1\r\nHost: a\r\n" + "".join(f"X-{i}: v\r\n" for i in range(101)) + "\r\n",
    "POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "GET /plain/x HTTP/1.1\nHost: a\n\n",
)


def _request(rng: random.Random, number: int, last: bool) -> tuple[list, bool]:
    """One request's segments; True when the connection cannot continue after it."""
    path = rng.choice(PATHS)
    method = rng.choice(("GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"))
    if path.startswith("/r5"):
        method = rng.choice(("GET", "HEAD"))     # a 503 is retried only for idempotent requests
    minor = 0 if rng.random() < 0.08 else 1
    headers = []
    if minor == 1 or rng.random() < 0.5:
        headers.append(("Host", rng.choice(("gw.test", "a.example.com:8080", "x"))))
    headers.append(("X-Answer", rng.choice(ANSWERS)))
    if rng.random() < 0.3:
        headers.append(("X-Request-Id", f"client-{number}"))
    if rng.random() < 0.2:
        headers.append(("X-Drop", "gone"))
    if rng.random() < 0.2:
        headers.append(("X-Forwarded-For", "10.9.8.7"))
    for i in range(rng.choice((0, 0, 1, 3))):
        headers.append((f"X-Extra-{i}", "v" * rng.choice((1, 20, 80))))
    closing = last and rng.random() < 0.4
    if closing:
        headers.append(("Connection", "close"))
    body: list = []
    if method in ("POST", "PUT") or rng.random() < 0.1:
        n = rng.choice((0, 1, 100, 3000, 20000, 70000, 120000))
        chunked = minor == 1 and rng.random() < 0.4
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            headers.append(("Content-Length", str(n)))
        body = _body_segments(rng, n, chunked)
    head = f"{method} {path} HTTP/1.{minor}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return [head, *body], closing or minor == 0


def generate(seed: int = SEED, n: int = CASES) -> list[dict]:
    rng = random.Random(seed)
    cases = []
    for number in range(n):
        segments: list = []
        count = rng.choice((1, 1, 2, 3, 5))
        for i in range(count):
            seg, ends = _request(rng, number * 10 + i, i == count - 1)
            segments += seg
            if ends:
                break
        if rng.random() < 0.12:
            segments.append(rng.choice(MALFORMED))
        size = len(render(segments))
        cuts = sorted(rng.sample(range(1, size), min(size - 1, rng.choice((0, 0, 1, 3, 8)))))
        cases.append({"name": f"case-{number}", "send": segments, "cuts": cuts})
    return cases


def render(segments: list) -> bytes:
    return b"".join(s.encode("latin-1") if isinstance(s, str) else pattern_bytes(*s) for s in segments)


# -- running one case --------------------------------------------------------------------------


_DATE = re.compile(rb"\r\nDate: [^\r]*")
_GENERATED_ID = re.compile(rb"\b[0-9a-f]{8}-[0-9a-f]+\b")
_PORT = re.compile(rb"(127\.0\.0\.\d+):\d+")


def normalize(data: bytes) -> bytes:
    data = _DATE.sub(b"\r\nDate: <date>", data)
    data = _GENERATED_ID.sub(b"<request-id>", data)
    return _PORT.sub(rb"\1:<port>", data)


def _stored(data: bytes) -> str:
    """A recorded stream as kept in the fixture: Latin-1 text where each run of 16 or more
    bytes counting up by one (the bodies here are ``pattern_bytes``) is written
    ``<run FIRST+LEN>``, so that the fixture stays small and readable, yet any changed,
    missing or added byte changes it."""
    out = []
    i, n = 0, len(data)
    while i < n:
        j = i + 1
        while j < n and data[j] == (data[j - 1] + 1) & 0xFF:
            j += 1
        if j - i >= RUN_MIN:
            out.append(f"<run {data[i]}+{j - i}>")
            i = j
        else:
            out.append(data[i:j].decode("latin-1"))
            i = j
    return "".join(out)


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            # Closing with request bytes unread resets (RFC 9293 3.6.1); whether any were
            # still unread when the gateway closed is timing, so a reset is an end like EOF.
            break
        if not data:
            break
        out += data
    else:
        out += b"<timeout>"
    return bytes(out)


def run_case(harness: Harness, case: dict, timeout: float = 15.0) -> dict:
    """Send the case on one connection, half-close, read to the end; what both sides saw."""
    data = render(case["send"])
    mark = harness.good.mark()
    with socket.create_connection((harness.gw.host, harness.gw.port), timeout=timeout) as sock:
        start = 0
        try:
            for cut in [*case["cuts"], len(data)]:
                sock.sendall(data[start:cut])
                start = cut
                time.sleep(0.002)
            sock.shutdown(socket.SHUT_WR)
        except OSError:                 # EPIPE, ECONNRESET, ENOTCONN
            pass                        # the gateway closed first (a malformed head): read what it said
        received = _read_all(sock, timeout)
    # Every request the gateway forwarded was answered before the client saw its response;
    # one cut short by the client's half-close gets a moment to arrive.
    time.sleep(0.02)
    upstream = [normalize(r) for r in harness.good.since(mark)]
    return {"client": _stored(normalize(received)), "upstream": [_stored(r) for r in upstream]}


def record(path: Path = FIXTURE) -> None:
    import tempfile
    cases = generate()
    with tempfile.TemporaryDirectory() as tmp, harness(Path(tmp)) as h:
        for case in cases:
            case["expect"] = run_case(h, case)
    path.write_text(json.dumps({"seed": SEED, "cases": cases}, indent=1) + "\n")
    print(f"recorded {len(cases)} cases into {path}")


if __name__ == "__main__":
    record()
