"""An OTLP/HTTP collector as the exporters' threads talk to it (gateway.tracing for spans,
gateway.otlplogs for the access log): one kept connection, a protobuf body POSTed, a 2xx
answer or an OSError; a failed exchange closes the connection and the next one dials again.
"""
from __future__ import annotations

import http.client
from urllib.parse import urlsplit


class Collector:
    def __init__(self, endpoint: str, default_path: str, timeout: float) -> None:
        url = urlsplit(endpoint)
        self.endpoint = endpoint
        self._https = url.scheme == "https"
        self._host, self._port = url.hostname, url.port or (443 if self._https else 80)
        self._path = (url.path or default_path) + (f"?{url.query}" if url.query else "")
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> None:
        """Send one export request; OSError when the collector did not take it."""
        try:
            if self._conn is None:
                cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
                self._conn = cls(self._host, self._port, timeout=self._timeout)
            self._conn.request("POST", self._path, body, {"Content-Type": "application/x-protobuf"})
            response = self._conn.getresponse()
            response.read()
            if not 200 <= response.status < 300:
                raise OSError(f"collector answered {response.status}")
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise OSError(str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
