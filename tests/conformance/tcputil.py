"""The TCP side of the Gateway API conformance suite's client, ported from its Go helpers:
``conformance/utils/tcp`` (a conversation with echo-basic's TCP server through the Gateway) and
``conformance/utils/tls``'s ``MakeTLSConnectionAndExpectEventuallyConnectionRejection`` (a TLS
handshake the Gateway must refuse), from kubernetes-sigs/gateway-api (Apache-2.0, Copyright The
Kubernetes Authors; commit in ``harness.UPSTREAM_COMMIT``). tls.go's HTTPS request is
``roundtrip.make_tls_request_and_expect_eventually_consistent_response``.

The TLS client is Go's ``tls.Config{ServerName, MinVersion: TLS 1.2, RootCAs}``: the given PEM
certificates are the trust anchors (any of them, a CA or the very certificate presented, as Go's
pool takes them; none given: the system's), and the presented certificate must name the server
name by Go's hostname rules. The waits are testify's ``assert.Eventually`` as the Go code calls
it (a first attempt after one poll interval, up to MaxTimeToConsistency); as in Go, an
assertion that fails in an attempt that then runs to its end fails the test even if the waiting
goes on, and an I/O error (or an undecodable answer) only makes the attempt "not yet".
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass

import orjson

from roundtrip import TIMEOUTS, Timeouts, go_hostname_matches

WELCOME = "Gateway API Test TCP Server\n"      # tcpserver.WelcomeMessage


@dataclass
class ExpectedResponse:
    """tcp.ExpectedResponse."""
    backend_is_tls: bool = False
    backend: str = ""               # the pod's name must start with "<backend>-"
    namespace: str = ""
    tls_protocol: str = ""          # optional: the backend's negotiated (ALPN) protocol
    hostname: str = ""              # optional: the SNI the backend saw


# -- Go's TLS client ---------------------------------------------------------------------------


def client_context(root_pem: bytes = b"") -> ssl.SSLContext:
    """tls.Config{MinVersion: VersionTLS12, RootCAs}: ``root_pem``'s certificates as trust
    anchors (Go trusts any certificate of its pool, a leaf too: OpenSSL's partial chains), else
    the system's. The server name is checked after the handshake (``check_server_name``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    if root_pem:
        ctx.load_verify_locations(cadata=root_pem.decode())      # ssl.SSLError: AppendCertsFromPEM false
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    else:
        ctx.load_default_certs()
    return ctx


def check_server_name(sock: ssl.SSLSocket, server_name: str) -> None:
    """crypto/x509 VerifyHostname: an IP against the IP SANs, a name against the DNS SANs
    (Go's wildcard rules; the common name is never used)."""
    sans = (sock.getpeercert() or {}).get("subjectAltName", ())
    try:
        ip = ipaddress.ip_address(server_name)
    except ValueError:
        ip = None
    if ip is not None:
        ok = any(kind == "IP Address" and ipaddress.ip_address(value.strip()) == ip for kind, value in sans)
    else:
        ok = any(kind == "DNS" and go_hostname_matches(value, server_name) for kind, value in sans)
    if not ok:
        names = [value for kind, value in sans if kind in ("DNS", "IP Address")]
        raise ssl.SSLCertVerificationError(f"x509: certificate is valid for {', '.join(names) or 'no names'}, "
                                           f"not {server_name}")


def dial(address: str, timeout: float, ctx: ssl.SSLContext | None = None, server_name: str = "") -> socket.socket:
    """net.Dialer / tls.Dialer DialContext: connected (and handshaken, and verified) within
    ``timeout`` seconds, or an OSError (ssl.SSLError for TLS)."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=max(timeout, 0.001))
    if ctx is None:
        return sock
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        tls = ctx.wrap_socket(sock, server_hostname=server_name or host.strip("[]"))
    except BaseException:
        sock.close()
        raise
    try:
        check_server_name(tls, server_name or host.strip("[]"))
    except BaseException:
        tls.close()
        raise
    return tls


class _Lines:
    """bufio.Reader.ReadString('\\n') on a connection with a deadline (conn.SetDeadline)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = b""

    def read_line(self) -> str:
        while b"\n" not in self.buf:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("i/o timeout")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"EOF (after {self.buf!r})")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace") + "\n"

    def send(self, text: str) -> None:
        self.sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
        self.sock.sendall(text.encode())


def _eventually(attempt, timeouts: Timeouts, what: str) -> None:
    """testify's assert.Eventually(condition, MaxTimeToConsistency, DefaultPollInterval): the
    condition is first tried one tick after the start; "Condition never satisfied" once the time
    is up. ``attempt(remaining)`` answers None when satisfied, else why not (the failure names
    the last answer and the first few different ones)."""
    deadline = time.monotonic() + timeouts.consistency
    seen: dict[str, None] = {}
    last = "never tried"
    while True:
        time.sleep(timeouts.poll)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"Condition never satisfied ({what}); last: {last}; "
                                 f"seen: {' | '.join(list(seen)[:5])}")
        last = attempt(remaining)
        if last is None:
            return
        seen.setdefault(last)


# -- tcp.MakeTCPRequestAndExpectEventuallyValidResponse ----------------------------------------


def _decode_assertions(message: str) -> dict:
    """json.Unmarshal into tcpserver.TCPAssertions: ValueError for what Go cannot decode."""
    payload = orjson.loads(message)
    if not isinstance(payload, dict):
        raise ValueError(f"json: cannot unmarshal {type(payload).__name__} into TCPAssertions")
    for key in ("namespace", "ingress", "service", "pod", "tcpport", "tlsport"):
        if payload.get(key) is not None and not isinstance(payload[key], str):
            raise ValueError(f"json: cannot unmarshal {payload[key]!r} into field {key} of type string")
    if payload.get("isTLS") is not None and not isinstance(payload["isTLS"], bool):
        raise ValueError(f"json: cannot unmarshal {payload['isTLS']!r} into field isTLS of type bool")
    tls = payload.get("tls")
    if tls is not None:
        if not isinstance(tls, dict):
            raise ValueError(f"json: cannot unmarshal {tls!r} into field tls of type TLSAssertions")
        for key in ("version", "serverName", "negotiatedProtocol", "curves", "cipherSuite"):
            if tls.get(key) is not None and not isinstance(tls[key], str):
                raise ValueError(f"json: cannot unmarshal {tls[key]!r} into field tls.{key} of type string")
    return payload


def _assert_test_message(payload: dict, expected: ExpectedResponse, failures: list[str]) -> None:
    """assertTestMessage: namespace, the pod's prefix, and (when expected) the backend's SNI and
    negotiated protocol. Go dereferences the TLS assertions for those: without any it panics,
    which fails the test at once."""
    namespace, pod = payload.get("namespace") or "", payload.get("pod") or ""
    if namespace != expected.namespace:
        failures.append(f"namespace does not match: expected {expected.namespace!r}, got {namespace!r}")
    if not pod.startswith(f"{expected.backend}-"):
        failures.append(f"backend name does not match with pod prefix. pod={pod} and backend={expected.backend}")
    if (expected.hostname or expected.tls_protocol) and payload.get("tls") is None:
        raise AssertionError(f"the backend saw no TLS (no tls in its answer: {payload}), "
                             f"expected serverName {expected.hostname!r}" + "".join(failures and
                                                                                   [f"; also: {failures}"]))
    if expected.hostname and payload["tls"].get("serverName", "") != expected.hostname:
        failures.append(f"SNI at the backend: expected {expected.hostname!r}, got "
                        f"{payload['tls'].get('serverName', '')!r}")
    if expected.tls_protocol and payload["tls"].get("negotiatedProtocol", "") != expected.tls_protocol:
        failures.append(f"negotiated protocol: expected {expected.tls_protocol!r}, got "
                        f"{payload['tls'].get('negotiatedProtocol', '')!r}")


def wait_for_valid_tcp_response(connect, address: str, expected: ExpectedResponse,
                                timeouts: Timeouts = TIMEOUTS) -> None:
    """WaitForValidTCPResponse: a new connection per attempt (``connect(address, timeout)``),
    each checking the welcome, PING/PONG, IS_TLS and the TEST answer."""
    failures: list[str] = []

    def attempt(remaining: float) -> str | None:
        try:
            sock = connect(address, min(timeouts.request, remaining))
        except (OSError, ValueError) as exc:         # ssl.SSLError is an OSError
            return f"client could not connect: {type(exc).__name__}: {exc}; retrying"
        lines = _Lines(sock, time.monotonic() + timeouts.request)
        try:
            message = lines.read_line()
            if message != WELCOME:
                failures.append(f"TCPServer welcome message does not match: expected {WELCOME!r}, got {message!r}")
            lines.send("PING\n")
            message = lines.read_line()
            if message != "PONG\n":
                failures.append(f"PING: expected 'PONG\\n', got {message!r}")
            lines.send("IS_TLS\n")
            message = lines.read_line()
            want = "true" if expected.backend_is_tls else "false"
            if message.removesuffix("\n") != want:
                failures.append(f"IS_TLS: expected {want!r}, got {message.removesuffix(chr(10))!r}")
            lines.send("TEST\n")
            payload = _decode_assertions(lines.read_line())
        except (OSError, EOFError, ValueError) as exc:
            return f"an error occurred during assertion, will retry: {type(exc).__name__}: {exc}"
        finally:
            sock.close()
        _assert_test_message(payload, expected, failures)
        return None

    _eventually(attempt, timeouts, f"a valid TCP response from {address}")
    if failures:
        raise AssertionError("; ".join(failures))


def make_tcp_request_and_expect_eventually_valid_response(address: str, server_certificate: bytes, server_name: str,
                                                          use_tls: bool, expected: ExpectedResponse,
                                                          timeouts: Timeouts = TIMEOUTS) -> None:
    """tcp.MakeTCPRequestAndExpectEventuallyValidResponse: over TLS (``use_tls``) with
    ``server_name`` as SNI, trusting ``server_certificate`` (PEM; empty: the system's CAs),
    else plain TCP."""
    if use_tls:
        ctx = client_context(server_certificate)

        def connect(addr: str, timeout: float) -> socket.socket:
            return dial(addr, timeout, ctx, server_name)
    else:
        def connect(addr: str, timeout: float) -> socket.socket:
            return dial(addr, timeout)
    wait_for_valid_tcp_response(connect, address, expected, timeouts)


# -- tls.MakeTLSConnectionAndExpectEventuallyConnectionRejection --------------------------------


def is_connection_rejected(exc: BaseException) -> bool:
    """isConnectionRejected: the handshake met the end of the connection (io.EOF,
    io.ErrUnexpectedEOF: the peer closed, or sent close_notify) or a reset (ECONNRESET). An
    alert, a refused connection, a timeout or a certificate Go cannot verify are not."""
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, EOFError)):
        return True
    if isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) == "UNEXPECTED_EOF_WHILE_READING":
        return True
    if "connection reset by peer" in str(exc).lower():
        return True
    return isinstance(exc, OSError) and exc.errno == errno.ECONNRESET


def make_tls_connection_and_expect_eventually_connection_rejection(address: str, server_name: str,
                                                                   timeouts: Timeouts = TIMEOUTS) -> None:
    """MakeTLSConnectionAndExpectEventuallyConnectionRejection: TLS handshakes (SNI
    ``server_name``, TLS 1.2 at least, the system's CAs) until one is rejected: the Gateway
    accepted the TCP connection and then closed or reset it."""
    ctx = client_context()

    def attempt(remaining: float) -> str | None:
        try:
            sock = dial(address, min(timeouts.request, remaining), ctx, server_name)
        except (OSError, EOFError, ValueError) as exc:
            if is_connection_rejected(exc):
                return None
            return f"client could not connect: {type(exc).__name__}: {exc}; retrying"
        sock.close()
        return "client could connect"

    _eventually(attempt, timeouts, f"the TLS connection to {address} (SNI {server_name}) to be rejected")
