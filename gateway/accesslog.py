"""The access log: one JSON line per request, written off the event loop.

Lines are encoded with orjson on the loop (about a microsecond), gathered in
memory and handed to a writer thread when the buffer passes its size or every
``flush_interval``, so a slow disk or a blocked stdout pipe never stalls the
request path.  If the writer falls behind by more than ``max_backlog`` bytes,
new lines are dropped and counted rather than growing memory without bound.
"""
from __future__ import annotations

import sys
import threading
from queue import SimpleQueue
from typing import BinaryIO

import orjson

_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE


class AccessLog:
    def __init__(self, loop, path: str, buffer_bytes: int = 64 * 1024,
                 flush_interval: float = 1.0, max_backlog: int = 64 * 1024 * 1024) -> None:
        self._loop = loop
        self._path = path
        self.limit = buffer_bytes
        self._interval = flush_interval
        self._max_backlog = max_backlog
        self.parts: list[bytes] = []     # the proxy appends rendered lines here directly
        self._size = 0
        self._backlog = 0                   # bytes handed to the writer, not yet written
        self._lock = threading.Lock()
        self._queue: SimpleQueue[bytes | None] = SimpleQueue()
        self.dropped = 0
        self._thread = threading.Thread(target=self._write_loop, name="access-log", daemon=True)
        self._thread.start()
        self._timer = loop.call_later(flush_interval, self._periodic_flush)

    def log(self, entry: dict) -> None:
        """Log a line made in Python (the request path renders its own, see _speedups.proxy)."""
        line = orjson.dumps(entry, option=_APPEND_NEWLINE)
        self.parts.append(line)
        self._size += len(line)
        if self._size >= self.limit:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        data = b"".join(self.parts)
        self.parts.clear()              # in place: the proxy holds this list
        self._size = 0
        with self._lock:
            if self._backlog + len(data) > self._max_backlog:
                self.dropped += data.count(b"\n")
                return
            self._backlog += len(data)
        self._queue.put(data)

    def _periodic_flush(self) -> None:
        self.flush()
        self._timer = self._loop.call_later(self._interval, self._periodic_flush)

    def close(self) -> None:
        """Flush what is buffered and wait for the writer to finish."""
        self._timer.cancel()
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _open(self) -> tuple[BinaryIO, bool]:
        if self._path == "stdout":
            return sys.stdout.buffer, False
        if self._path == "stderr":
            return sys.stderr.buffer, False
        return open(self._path, "ab"), True

    def _write_loop(self) -> None:
        out, owned = self._open()
        try:
            while (data := self._queue.get()) is not None:
                try:
                    out.write(data)
                    out.flush()
                except (OSError, ValueError):
                    self.dropped += data.count(b"\n")   # e.g. stdout closed by the reader
                with self._lock:
                    self._backlog -= len(data)
        finally:
            if owned:
                out.close()
