"""Upstreams for behaviours the devcluster backend does not have, and the backends themselves.

* ``start_backend(host, cluster, pod)``: an httpbin-like devcluster backend process.
* ``two_cluster_pods(n)``: a fixture's body, n backends in each of clusters a and b.
* ``TinyServer``: a one-purpose TCP upstream in a thread (e.g. "accept then close", a 101
  upgrade that echoes bytes), with the handler helpers ``answering`` and ``read_request_head``.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable


def start_backend(host: str, cluster: str, pod: str):
    """A devcluster backend process on ``host`` (any free port); call ``.stop()`` to end it."""
    from gateway.devcluster.backend import BackendProcess
    return BackendProcess(host, 0, cluster, pod).start(timeout=20.0)


def two_cluster_pods(per_cluster: int):
    """Backend processes, a fixture's body: cluster a on 127.0.0.2, .4, ..., b on .3, .5, ...,
    listed a-0, b-0, a-1, b-1, ...; all stopped at the end (stop() thaws a frozen one)."""
    started = []
    try:
        for i in range(per_cluster):
            started.append(start_backend(f"127.0.0.{2 + 2 * i}", "a", f"a-{i}"))
            started.append(start_backend(f"127.0.0.{3 + 2 * i}", "b", f"b-{i}"))
        yield started
    finally:
        for p in started:
            p.stop()


class TinyServer:
    """A TCP server in a thread that runs ``handler(conn)`` per accepted connection.

    Bounded: ``stop()`` closes the listener and every connection, and joins the threads.
    """

    def __init__(self, host: str, handler: Callable[[socket.socket], None]) -> None:
        self.host = host
        self.handler = handler
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(128)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._stopping = threading.Event()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name=f"tiny-{self.port}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(5.0)
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self.listener.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)


def answering(status: int, body: bytes = b""):
    """A TinyServer handler: every request on the connection gets ``status`` and ``body``."""
    def handle(conn: socket.socket) -> None:
        while read_request_head(conn):
            conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
    return handle


def read_request_head(conn: socket.socket, limit: float = 5.0) -> bytes:
    """Read from ``conn`` up to the end of one request head (bounded); b"" if it closed."""
    data = b""
    deadline = time.monotonic() + limit
    while b"\r\n\r\n" not in data and time.monotonic() < deadline and len(data) < 65536:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data
