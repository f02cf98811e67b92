"""Active probes: an HTTP GET or a TCP connect, bounded by a timeout."""
from __future__ import annotations

import asyncio

from gateway.config import HealthCheckConfig


async def probe(ip: str, port: int, check: HealthCheckConfig) -> str | None:
    """None when the endpoint passes, else a short reason."""
    try:
        return await asyncio.wait_for(_probe(ip, port, check), check.timeout)
    except asyncio.TimeoutError:
        return f"no answer within {check.timeout:g}s"
    except OSError as exc:
        return exc.strerror or str(exc)


async def _probe(ip: str, port: int, check: HealthCheckConfig) -> str | None:
    reader, writer = await asyncio.open_connection(ip, port)
    try:
        if check.type == "tcp":
            return None
        host = check.host or (f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
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
