"""Active probes: an HTTP GET or a TCP connect, bounded by a timeout.

A service with ``tls:`` is probed over TLS with the same settings (CA, SNI, verification)
the data plane connects with (gateway.dataplane): a probe in plain text to a TLS-only
endpoint fails every time, and every endpoint would be flagged.  A failed handshake is a
failed probe, with the reason (wrong CA, name mismatch, not TLS) as its error.
"""
from __future__ import annotations

import asyncio
import ssl
from typing import NamedTuple

from gateway.config import HealthCheckConfig, UpstreamTls
from gateway.tls import upstream_context


class ProbeTls(NamedTuple):
    context: ssl.SSLContext
    sni: str | None             # None: the endpoint's IP, as the data plane does


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
            found = self._contexts[config] = ProbeTls(upstream_context(config), config.sni)
        return found

    def reset(self) -> None:
        """Forget every context (on new service configs): they are rebuilt on next use, so a
        reload also picks up a renewed CA file, as the data plane's own contexts do."""
        self._contexts.clear()


async def probe(ip: str, port: int, check: HealthCheckConfig, tls: ProbeTls | None = None) -> str | None:
    """None when the endpoint passes, else a short reason."""
    try:
        return await asyncio.wait_for(_probe(ip, port, check, tls), check.timeout)
    except asyncio.TimeoutError:
        return f"no answer within {check.timeout:g}s"
    except ssl.SSLCertVerificationError as exc:     # before OSError: it is one
        return f"TLS handshake failed: {exc.verify_message or exc.reason}"
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {(exc.reason or str(exc)).replace('_', ' ').lower()}"
    except OSError as exc:
        return exc.strerror or str(exc)


async def _probe(ip: str, port: int, check: HealthCheckConfig, tls: ProbeTls | None) -> str | None:
    if tls is None:
        reader, writer = await asyncio.open_connection(ip, port)
    else:
        reader, writer = await asyncio.open_connection(ip, port, ssl=tls.context,
                                                       server_hostname=tls.sni or ip)
    try:
        if check.type == "tcp":
            return None
        host = check.host or (tls.sni if tls is not None and tls.sni else None) or (
            f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
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
