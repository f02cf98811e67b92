"""The Gateway API conformance suite's echo server, echo-basic, as a devcluster backend mode.

The suite (kubernetes-sigs/gateway-api ``conformance/``) runs its backends from the image
``gateway-api/conformance/echo-basic`` and reads what they answer: ``pod`` must start with the
backend's name, ``namespace`` must be the expected one, and ``path``, ``host``, ``method`` and
``headers`` are the request as the backend received it. This module answers the same way
(the behaviour of echo-basic's ``echo-basic.go`` as of the suite's last copy of it,
kubernetes-sigs/gateway-api 08eb09d67, Apache-2.0, Copyright The Kubernetes Authors):

    /health            200 "OK"
    /status/<NNN>      <NNN> with no body (400 unless the whole request-target is /status/NNN)
    /retry/...         retry simulation: ?uuid=U&succeedAfter=N fails the first N requests of
                       uuid U, by a TCP reset or, with ?responseCode=C, by answering C (after
                       ?delayRetry=<Go duration>), then echoes
    anything else      the echo: 200 application/json {"path", "host", "method", "proto",
                       "headers", "httpPort", "namespace", "ingress", "service", "pod"};
                       ?delay=<Go duration> waits first

``path`` is the request-target as sent (query included), ``headers`` maps Go's canonical form of
each field name ("x-foo" -> "X-Foo") to the list of its values, Host apart (it is ``host``).
Request field ``X-Echo-Set-Header: Name:value,Other:value`` sets those response fields, and each
echo is logged as echo-basic logs it ("Echoing back request made to <target> to client (<peer>)",
one line appended to ``--log``), which the suite's mirror tests read as the pod's logs.

``/ws`` is echo-basic's WebSocket handler (RFC 6455): each text or binary frame comes back as
it was sent, pings are answered, a close is returned.

HTTPS (echo-basic's 8443 with TLS_SERVER_CERT) is this mode with the backend's ``--tls-cert``:
every echo then carries echo-basic's ``tls`` object (version, the server name the client asked
for, cipher, ALPN, the client's certificate as PEM). HTTP/2 (h2c) echoes are answered by
``gateway.devcluster.h2_backend --namespace`` with :func:`assertions`.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import socket
import ssl
import struct
from urllib.parse import parse_qs

import orjson

from .backend import BackendProcess, Routes, _Connection, _Request, _wait_body_end, main as backend_main

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_STATUS = re.compile(r"^/status/(\d\d\d)$")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def canonical(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey: "x-header-add" -> "X-Header-Add"; a name that is not
    a token is left as it is."""
    if not _TOKEN.match(name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def go_duration(text: str) -> float:
    """Go's time.ParseDuration ("300ms", "1s", "1m30s"), in seconds; ValueError otherwise."""
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.lstrip("+"))
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise ValueError(f"time: invalid duration {text!r}")
    return sign * total


def assertions(*, target: str, host: str, method: str, proto: str, fields, namespace: str, pod: str,
               http_port: str, tls: dict | None = None) -> dict:
    """echo-basic's RequestAssertions for one request (``fields``: (name, value) as received)."""
    headers: dict[str, list[str]] = {}
    for name, value in fields:
        key = canonical(name)
        if key != "Host":                       # Go moves it to Request.Host
            headers.setdefault(key, []).append(value)
    out = {"path": target, "host": host, "method": method, "proto": proto, "headers": headers,
           "httpPort": http_port, "namespace": namespace, "ingress": "", "service": "", "pod": pod}
    if tls is not None:
        out["tls"] = tls
    return out


def tls_assertions(sslobj) -> dict | None:
    """echo-basic's TLSAssertions of a connection (None: plain): the version, the server name the
    client asked for, ALPN's protocol, the cipher, the client's certificate as PEM."""
    if sslobj is None:
        return None
    out = {"version": sslobj.version(), "serverName": getattr(sslobj, "requested_server_name", ""),
           "cipherSuite": sslobj.cipher()[0]}
    peer = sslobj.getpeercert(binary_form=True)
    if peer:
        out["peerCertificates"] = [ssl.DER_cert_to_PEM_cert(peer)]
    if sslobj.selected_alpn_protocol():
        out["negotiatedProtocol"] = sslobj.selected_alpn_protocol()
    return out


def echo_response_fields(fields) -> list[tuple[str, str]]:
    """The response fields asked for by X-Echo-Set-Header (writeEchoResponseHeaders): each value
    is "Name:value" pairs separated by commas; a name given twice gets its values joined by ","."""
    out: dict[str, str] = {}
    for name, value in fields:
        if canonical(name) != "X-Echo-Set-Header":
            continue
        for pair in value.split(","):
            key, _, val = pair.strip().partition(":")
            if not key:                         # Go's Header.Write skips invalid (empty) names
                continue
            out[key] = f"{out[key]},{val.strip()}" if key in out else val
    return list(out.items())


class EchoBasic:
    """One pod's identity and state: its namespace and name, the log, the retry counters."""

    def __init__(self, namespace: str, pod: str, log_path: str | None) -> None:
        self.namespace = namespace
        self.pod = pod
        self.log = open(log_path, "a", buffering=1) if log_path else None
        self.attempts: dict[str, int] = {}
        self.retry_lock = asyncio.Lock()       # echo-basic holds one mutex over a whole attempt


def routes(namespace: str, pod: str, log_path: str | None = None) -> Routes:
    """The backend route table of an echo-basic pod."""
    ctx = EchoBasic(namespace, pod, log_path)

    async def health(conn: _Connection, req: _Request) -> None:
        await _wait_body_end(conn, req)
        conn.send(req, 200, b"OK", content_type="text/plain; charset=utf-8")

    async def status(conn: _Connection, req: _Request) -> None:
        match = _STATUS.match(req.target)
        await _wait_body_end(conn, req)
        conn.send(req, int(match.group(1)) if match else 400, b"", content_type=None)

    async def echo(conn: _Connection, req: _Request) -> None:
        query = parse_qs(req.query)
        if not await _delay(conn, req, query, "delay"):
            return
        peer = conn.transport.get_extra_info("peername") or ("", 0)
        if ctx.log is not None:
            ctx.log.write(f"Echoing back request made to {req.target} to client ({peer[0]}:{peer[1]})\n")
        host = next((v for k, v in req.fields if k.lower() == "host"), "")
        body = orjson.dumps(assertions(target=req.target, host=host, method=req.method, proto="HTTP/1.1",
                                       fields=req.fields, namespace=ctx.namespace, pod=ctx.pod,
                                       http_port=str(conn.backend.port),
                                       tls=tls_assertions(conn.transport.get_extra_info("ssl_object"))),
                            option=orjson.OPT_INDENT_2)
        await _wait_body_end(conn, req)
        conn.send(req, 200, body, [*echo_response_fields(req.fields), ("X-Content-Type-Options", "nosniff")])

    async def retry(conn: _Connection, req: _Request) -> None:
        query = parse_qs(req.query)
        uuid = (query.get("uuid") or [""])[0]
        try:
            succeed_after = int((query.get("succeedAfter") or [""])[0])
        except ValueError:
            succeed_after = None
        if not uuid or succeed_after is None:
            await _wait_body_end(conn, req)
            conn.send(req, 400, b"uuid is required" if not uuid else b"succeedAfter is required",
                      content_type="text/plain; charset=utf-8")
            return
        try:
            code = int((query.get("responseCode") or [""])[0])
        except ValueError:
            code = None                         # TCP failure mode: reset the connection
        async with ctx.retry_lock:
            if ctx.attempts.get(uuid, 0) < succeed_after:
                ctx.attempts[uuid] = ctx.attempts.get(uuid, 0) + 1
                if not await _delay(conn, req, query, "delayRetry"):
                    return
                if code is None:
                    sock = conn.transport.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.transport.abort()      # SO_LINGER 0: the close sends RST
                    raise ConnectionResetError("retry simulation: connection reset")
                await _wait_body_end(conn, req)
                conn.send(req, code, b"", content_type=None)
                return
        await echo(conn, req)

    return Routes((("/health", health, False), ("/status/", status, False), ("/retry/", retry, False),
                   ("/ws", websocket, False)), echo)


_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def websocket(conn: _Connection, req: _Request) -> None:
    """The WebSocket handshake (RFC 6455 §4.2.2), then an echo of every frame until closed."""
    fields = {k.lower(): v for k, v in req.fields}
    key = fields.get("sec-websocket-key", "")
    if fields.get("upgrade", "").lower() != "websocket" or not key:
        await _wait_body_end(conn, req)
        conn.send(req, 400, b"a WebSocket handshake is expected here", content_type="text/plain; charset=utf-8")
        return
    accept = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()
    conn.transport.write(conn.head(101, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                         ("Sec-WebSocket-Accept", accept)]))
    await conn.switch_protocol(_WebSocketEcho(conn.transport).feed)


websocket.takes_upgrade = True


class _WebSocketEcho:
    """Client frames in (masked), the same frames out (unmasked); ping -> pong, close -> close."""

    def __init__(self, transport) -> None:
        self.transport = transport
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            frame = self._frame()
            if frame is None:
                return
            first, payload = frame
            opcode = first & 0x0F
            if opcode == 0x8:                   # close: answer it, then end
                self.transport.write(self._encode(first, payload[:2]))
                self.transport.close()
                return
            self.transport.write(self._encode(0x8A if opcode == 0x9 else first, payload))

    def _frame(self) -> tuple[int, bytes] | None:
        if len(self.buf) < 2:
            return None
        first, second = self.buf[0], self.buf[1]
        size, at = second & 0x7F, 2
        if size == 126:
            if len(self.buf) < 4:
                return None
            size, at = struct.unpack(">H", self.buf[2:4])[0], 4
        elif size == 127:
            if len(self.buf) < 10:
                return None
            size, at = struct.unpack(">Q", self.buf[2:10])[0], 10
        mask = b""
        if second & 0x80:
            mask, at = bytes(self.buf[at:at + 4]), at + 4
        if len(self.buf) < at + size:
            return None
        payload = bytes(self.buf[at:at + size])
        del self.buf[:at + size]
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return first, payload

    @staticmethod
    def _encode(first: int, payload: bytes) -> bytes:
        n = len(payload)
        if n < 126:
            return bytes((first, n)) + payload
        if n < 1 << 16:
            return bytes((first, 126)) + struct.pack(">H", n) + payload
        return bytes((first, 127)) + struct.pack(">Q", n) + payload


async def _delay(conn: _Connection, req: _Request, query: dict, key: str) -> bool:
    """Sleep for the Go duration in ``key``; False (after a 500 answer) when it does not parse."""
    value = (query.get(key) or [""])[0]
    if not value:
        return True
    try:
        seconds = go_duration(value)
    except ValueError as exc:
        await _wait_body_end(conn, req)
        conn.send(req, 500, orjson.dumps({"message": str(exc)}), [("X-Content-Type-Options", "nosniff")])
        return False
    await asyncio.sleep(max(seconds, 0.0))
    return True


class EchoBasicProcess(BackendProcess):
    """An echo-basic pod in its own process: ``port`` as echo-basic's HTTP_PORT (3000), its echo
    log appended to ``log``."""

    module = "gateway.devcluster.echo_basic"

    def __init__(self, host: str, port: int, namespace: str, pod: str, log: str | None = None,
                 tls: tuple[str, str, str | None] | None = None) -> None:
        super().__init__(host, port, "conformance", pod, tls=tls)
        self.namespace = namespace
        self.log = log

    def options(self) -> list[str]:
        return ["--namespace", self.namespace, *(["--log", self.log] if self.log else [])]


def _arguments(parser) -> None:
    parser.add_argument("--namespace", required=True, help="the namespace of the pod it plays")
    parser.add_argument("--log", help="append echo-basic's log lines to this file")


def main(argv: list[str] | None = None) -> None:
    backend_main(argv, description=__doc__.split("\n", 1)[0], more_arguments=_arguments,
                 routes=lambda args: routes(args.namespace, args.pod, args.log))


if __name__ == "__main__":
    main()
