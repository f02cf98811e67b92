"""The access log: one JSON line per request, written off the event loop.

Lines are encoded with orjson on the loop (about a microsecond), gathered in
memory and handed to a writer thread when the buffer passes its size or every
``flush_interval``, so a slow disk or a blocked stdout pipe never stalls the
request path.  If the writer falls behind by more than ``max_backlog`` bytes,
new lines are dropped and counted rather than growing memory without bound.

With ``otlp_endpoint``, the writer hands each chunk it wrote to a gateway.otlplogs exporter
too (its own thread and bounded queue: a slow collector never holds the file).

``reopen()`` (SIGUSR1, for logrotate) and ``replace_access_log`` (a reload with new
access_log settings) lose no line and write none twice: what was logged before goes,
in order, to the file that was open; what is logged after, to the new one.  Both work
by message through the writer's queue, so the writer switches files between two writes.
"""
from __future__ import annotations

import logging
import sys
import threading
from queue import SimpleQueue
from typing import BinaryIO

import orjson

from gateway.otlplogs import LogExporter

_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE
_REOPEN = object()                  # queued: close the file and open the path again

log = logging.getLogger("gateway.accesslog")


class AccessLog:
    def __init__(self, loop, path: str, buffer_bytes: int = 64 * 1024,
                 flush_interval: float = 1.0, max_backlog: int = 64 * 1024 * 1024,
                 otlp_endpoint: str | None = None) -> None:
        self._loop = loop
        self.exporter = LogExporter(otlp_endpoint) if otlp_endpoint else None
        self._path = path
        self.limit = buffer_bytes
        self._interval = flush_interval
        self._max_backlog = max_backlog
        self.parts: list[bytes] = []     # the proxy appends rendered lines here directly
        # Set by the request path (_speedups/accesslog.pyx): moves the lines it renders into
        # its own buffer into ``parts``; called before every flush and Python-made line.
        self.spill = None
        self._size = 0
        self._backlog = 0                   # bytes handed to the writer, not yet written
        self._lock = threading.Lock()
        self._queue: SimpleQueue = SimpleQueue()     # bytes, _REOPEN, or None (the end)
        self.dropped = 0
        self._thread = threading.Thread(target=self._write_loop, name="access-log", daemon=True)
        self._thread.start()
        self._timer = loop.call_later(flush_interval, self._periodic_flush)

    def log(self, entry: dict) -> None:
        """Log a line made in Python (the request path renders its own, see _speedups/accesslog.pyx)."""
        line = orjson.dumps(entry, option=_APPEND_NEWLINE)
        if self.spill is not None:
            self.spill()                # the request path's lines first: in order
        self.parts.append(line)
        self._size += len(line)
        if self._size >= self.limit:
            self.flush()

    def flush(self) -> None:
        if self.spill is not None:
            self.spill()
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

    @property
    def path(self) -> str:
        return self._path

    def reopen(self) -> None:
        """Write what is buffered to the file open now, then open the path again (a new file
        if logrotate moved the old one away).  stdout and stderr are not reopened."""
        self.flush()
        self._queue.put(_REOPEN)

    def close(self, wait: bool = True) -> None:
        """Flush what is buffered; the writer writes it, closes the file and ends.
        ``wait``: block until it has (a reload does not hold the event loop for a disk)."""
        self._timer.cancel()
        self.flush()
        self._queue.put(None)
        if wait:
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
                if data is _REOPEN:
                    out, owned = self._reopen(out, owned)
                    continue
                try:
                    out.write(data)
                    out.flush()
                except (OSError, ValueError):
                    self.dropped += data.count(b"\n")   # e.g. stdout closed by the reader
                with self._lock:
                    self._backlog -= len(data)
                if self.exporter is not None:
                    self.exporter.offer(data)
        finally:
            if owned:
                out.close()
            if self.exporter is not None:
                self.exporter.close()

    def _reopen(self, out: BinaryIO, owned: bool) -> tuple[BinaryIO, bool]:
        if not owned:
            return out, owned
        try:
            fresh = open(self._path, "ab")
        except OSError as exc:      # keep writing where we were rather than lose lines
            log.error("cannot reopen the access log; still writing to the open file",
                      extra={"fields": {"path": self._path, "error": str(exc)}})
            return out, owned
        out.close()
        return fresh, True


def replace_access_log(ctx, current: AccessLog | None, config, loop) -> AccessLog | None:
    """New access_log settings (a reload): the proxy logs to a new AccessLog from now on,
    and the old one writes what it holds, then closes its file (no line lost, none twice)."""
    fresh = None
    if config.path is not None:
        fresh = AccessLog(loop, config.path, config.buffer_bytes, config.flush_interval,
                          otlp_endpoint=config.otlp_endpoint)
    ctx.set_access_log(fresh)           # first: lines logged from here on go to the new one
    if current is not None:
        current.close(wait=False)
    log.info("access log settings applied", extra={"fields": {
        "path": config.path, "buffer": config.buffer_bytes, "flush_interval": config.flush_interval}})
    return fresh
