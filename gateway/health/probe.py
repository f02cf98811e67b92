"""Active probes: an HTTP GET, a gRPC health check or a TCP connect, bounded by a timeout.

A service with ``tls:`` is probed over TLS with the same settings (CA, SNI, verification)
the data plane connects with (gateway.dataplane): a probe in plain text to a TLS-only
endpoint fails every time, and every endpoint would be flagged.  A failed handshake is a
failed probe, with the reason (wrong CA, name mismatch, not TLS) as its error.

``type: grpc`` asks grpc.health.v1.Health/Check over HTTP/2 (h2c, or h2 by ALPN under
TLS), as Envoy's and Kubernetes' gRPC probes do: it passes when the answer is SERVING.
"""
from __future__ import annotations

import asyncio
import ssl
from typing import NamedTuple

from gateway.config import HealthCheckConfig, UpstreamTls
from gateway.protobuf import read_varint, varint
from gateway.tls import upstream_context


class ProbeTls(NamedTuple):
    context: ssl.SSLContext
    sni: str | None             # None: the endpoint's IP, as the data plane does
    h2_context: ssl.SSLContext  # the same, offering only h2 by ALPN (gRPC probes)


class ProbeTlsContexts:
    """One SSLContext per service TLS settings, built when first needed and then shared by
    every probe of every endpoint with those settings (building one reads the CA file and
    costs ~1 ms of CPU: per probe, that is most of a probe's cost)."""

    def __init__(self) -> None:
        self._contexts: dict[UpstreamTls, ProbeTls] = {}

    def get(self, config: UpstreamTls | None) -> ProbeTls | None:
        if config is None:
            return None
        found = self._contexts.get(config)
        if found is None:
            h2 = upstream_context(config)
            h2.set_alpn_protocols(["h2"])
            found = self._contexts[config] = ProbeTls(upstream_context(config), config.sni, h2)
        return found

    def reset(self) -> None:
        """Forget every context (on new service configs): they are rebuilt on next use, so a
        reload also picks up a renewed CA file, as the data plane's own contexts do."""
        self._contexts.clear()


async def probe(ip: str, port: int, check: HealthCheckConfig, tls: ProbeTls | None = None,
                http2: bool = False) -> str | None:
    """None when the endpoint passes, else a short reason.  ``http2``: the endpoint is spoken
    to over HTTP/2 (services[].protocol), so a ``type: http`` check is made over HTTP/2 too."""
    try:
        return await asyncio.wait_for(_probe(ip, port, check, tls, http2), check.timeout)
    except asyncio.TimeoutError:
        return f"no answer within {check.timeout:g}s"
    except ssl.SSLCertVerificationError as exc:     # before OSError: it is one
        return f"TLS handshake failed: {exc.verify_message or exc.reason}"
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {(exc.reason or str(exc)).replace('_', ' ').lower()}"
    except OSError as exc:
        return exc.strerror or str(exc)


async def _probe(ip: str, port: int, check: HealthCheckConfig, tls: ProbeTls | None,
                 http2: bool) -> str | None:
    if tls is None:
        reader, writer = await asyncio.open_connection(ip, port)
    else:
        context = tls.h2_context if check.type == "grpc" or http2 else tls.context
        reader, writer = await asyncio.open_connection(ip, port, ssl=context,
                                                       server_hostname=tls.sni or ip)
    try:
        if check.type == "tcp":
            return None
        host = check.host or (tls.sni if tls is not None and tls.sni else None) or (
            f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
        if check.type == "grpc":
            return await grpc_health_check(reader, writer, host, check.grpc_service)
        if http2:
            return await http2_health_check(reader, writer, host, check)
        writer.write(f"GET {check.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gateway-health-check\r\n"
                     "Connection: close\r\n\r\n".encode())
        line = await reader.readline()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            return "not an HTTP response" if line else "connection closed without a response"
        status = int(parts[1])
        if any(low <= status <= high for low, high in check.expected_statuses):
            return None
        return f"status {status}"
    finally:
        writer.close()


# -- gRPC: grpc.health.v1.Health/Check ----------------------------------------------------------

# HealthCheckResponse.ServingStatus (grpc/health/v1/health.proto)
SERVING_STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


class _HealthAnswer:
    """An H2Session handler that collects the one stream's answer."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.done = asyncio.get_running_loop().create_future()
        self.session = None

    def h2_headers(self, sid, headers, end_stream):
        self.headers.update(headers)
        if end_stream:
            self._finish()

    def h2_data(self, sid, data):
        self.body += data
        self.session.consume(sid, len(data))

    def h2_trailers(self, sid, headers):
        self.headers.update(headers)

    def h2_end(self, sid):
        self._finish()

    def h2_close(self, sid, error_code):
        if not self.done.done():
            self.done.set_result(f"stream reset (HTTP/2 error {error_code})" if error_code else None)

    def h2_drained(self, sid):
        pass

    def _finish(self):
        if not self.done.done():
            self.done.set_result(None)


async def grpc_health_check(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            authority: str, service: str) -> str | None:
    """One Health/Check call on a new HTTP/2 connection: None if SERVING, else why not."""
    answer = await _h2_request(reader, writer, [
        (b":method", b"POST"), (b":scheme", _scheme(writer)),
        (b":authority", authority.encode()), (b":path", b"/grpc.health.v1.Health/Check"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers"),
        (b"user-agent", b"gateway-health-check")], grpc_message(_health_request(service)))
    problem = answer.done.result()
    return problem if problem is not None else _health_verdict(answer.headers, bytes(answer.body))


async def http2_health_check(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             authority: str, check: HealthCheckConfig) -> str | None:
    """A ``type: http`` check of an endpoint spoken to over HTTP/2: GET the path, judge :status."""
    answer = await _h2_request(reader, writer, [
        (b":method", b"GET"), (b":scheme", _scheme(writer)), (b":authority", authority.encode()),
        (b":path", check.path.encode()), (b"user-agent", b"gateway-health-check")], None)
    problem = answer.done.result()
    if problem is not None:
        return problem
    status = answer.headers.get(b":status", b"")
    if not status.isdigit():
        return "not an HTTP response"
    if any(low <= int(status) <= high for low, high in check.expected_statuses):
        return None
    return f"status {int(status)}"


def _scheme(writer: asyncio.StreamWriter) -> bytes:
    return b"https" if writer.get_extra_info("sslcontext") else b"http"


async def _h2_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: list, body: bytes | None) -> _HealthAnswer:
    """One request on a new HTTP/2 connection; its answer once complete (or why not)."""
    from _speedups.h2 import H2Error, H2Session

    answer = _HealthAnswer()
    session = answer.session = H2Session(answer, server=False)
    sid = session.submit_request(headers, end_stream=body is None)
    if body is not None:
        session.send_data(sid, body, end_stream=True)
    writer.write(session.output())
    while not answer.done.done():
        data = await reader.read(65536)
        if not data:
            answer.done.set_result("connection closed without an answer")
            break
        try:
            session.receive(data)
        except H2Error as exc:
            answer.done.set_result(f"not an HTTP/2 answer: {exc}")
            break
        writer.write(session.output())
    return answer


def _health_verdict(headers: dict[bytes, bytes], body: bytes) -> str | None:
    status = headers.get(b":status", b"")
    if status != b"200":
        return f"status {status.decode() or 'missing'}"
    code = headers.get(b"grpc-status")
    if code is None:
        return "no grpc-status"
    if code != b"0":
        message = headers.get(b"grpc-message", b"").decode(errors="replace")
        return f"grpc-status {code.decode()}" + (f": {message}" if message else "")
    serving = _serving_status(body)
    return None if serving == 1 else SERVING_STATUSES.get(serving, f"serving status {serving}")


def grpc_message(payload: bytes) -> bytes:
    """A gRPC length-prefixed message, uncompressed."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def _health_request(service: str) -> bytes:
    """HealthCheckRequest{service}: field 1, length-delimited (empty when "")."""
    name = service.encode()
    return b"\x0a" + varint(len(name)) + name if name else b""


def _serving_status(body: bytes) -> int | None:
    """HealthCheckResponse.status (field 1, varint) from the first message; None if absent."""
    if len(body) < 5:
        return None
    message = body[5:5 + int.from_bytes(body[1:5], "big")]
    i = 0
    while i < len(message):
        key, i = read_varint(message, i)
        if key == 0x08:
            value, i = read_varint(message, i)
            return value
        if key & 7 == 0:
            _, i = read_varint(message, i)
        elif key & 7 == 2:
            length, i = read_varint(message, i)
            i += length
        else:
            return None         # not a HealthCheckResponse
    return 0                    # proto3: a field at its default (UNKNOWN) is not sent


