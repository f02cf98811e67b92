"""Global rate limits: token buckets in Redis that every replica shares.

Each worker keeps one connection to Redis and pipelines on it: a request under a global
limit sends one ``EVALSHA`` (a GCRA bucket in Lua, on Redis's own clock, so replicas need
not agree on time) and waits for that one answer; the requests of one loop iteration go
out in one write.  RESP is spoken here directly: three reply types and two commands do not
justify a client library on the request path.

When Redis cannot answer (not connected, an error, or no answer within ``timeout``),
``failure_mode`` decides: "open" lets the request through, "closed" answers 503; either
way it is counted (``counters``) and visible in /status and /metrics.  A timed-out
connection is closed (answers would no longer line up) and dialled again, backing off.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Callable

from gateway.config import RedisConfig

log = logging.getLogger("gateway.policy.redis_store")

# KEYS[1]: the bucket; ARGV: microseconds per request, burst x that.  Answers {1, left}
# (allowed) or {0, microseconds until a request is}.
GCRA = b"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local ahead = tat + interval - now
if ahead > window then return {0, ahead - window} end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil(ahead / 1000) + 1)
return {1, math.floor((window - ahead) / interval)}
"""

COUNTER_NAMES = ("checks", "store_failures", "failed_open", "failed_closed")
BACKOFF = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)          # seconds between dials while Redis is away

Answer = Callable[[object], None]   # called with (allowed, number) or None (Redis did not answer)


def command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class RespReader:
    """Replies out of a byte stream: integers, bulk strings, errors and arrays of those."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list:
        self.buffer += data
        replies = []
        while True:
            reply, end = self._parse(0)
            if end < 0:
                break
            del self.buffer[:end]
            replies.append(reply)
        return replies

    def _parse(self, start: int) -> tuple[object, int]:
        line_end = self.buffer.find(b"\r\n", start)
        if line_end < 0:
            return None, -1
        kind, text, after = self.buffer[start:start + 1], bytes(self.buffer[start + 1:line_end]), line_end + 2
        if kind == b":":
            return int(text), after
        if kind in (b"+", b"-"):
            return (text if kind == b"+" else RedisError(text.decode(errors="replace"))), after
        if kind == b"$":
            n = int(text)
            if n < 0:
                return None, after
            if len(self.buffer) < after + n + 2:
                return None, -1
            return bytes(self.buffer[after:after + n]), after + n + 2
        if kind == b"*":
            items = []
            for _ in range(int(text)):
                item, after = self._parse(after)
                if after < 0:
                    return None, -1
                items.append(item)
            return items, after
        raise ValueError(f"not a RESP reply: {bytes(self.buffer[start:start + 20])!r}")


class RedisError(Exception):
    pass


class _Connection(asyncio.Protocol):
    def __init__(self, store: "RedisStore") -> None:
        self.store = store
        self.reader = RespReader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.store.conn is not self:
            return                      # a connection given up on: its late replies are no one's
        try:
            replies = self.reader.feed(data)
        except ValueError as exc:
            self.store.broken(self, str(exc))
            return
        for reply in replies:
            self.store.answered(reply)

    def connection_lost(self, exc) -> None:
        self.store.broken(self, str(exc) if exc else "closed by Redis")


class RedisStore:
    """One worker's connection to the global limits' Redis."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cfg: RedisConfig) -> None:
        self.loop, self.cfg = loop, cfg
        self.fail_open = cfg.failure_mode == "open"
        self.prefix = cfg.key_prefix.encode()
        self.conn: _Connection | None = None
        self.waiting: collections.deque[tuple[Answer, float]] = collections.deque()
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.sha: bytes | None = None
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self.error: str | None = "not connected yet"
        self.dials = 0
        self.closed = False
        self.watchdog = loop.call_later(cfg.timeout, self._expire)
        self._dial()

    # -- the request path --------------------------------------------------------------------

    def take(self, bucket: bytes, interval_us: int, window_us: int, answer: Answer) -> None:
        """Ask for one request from ``bucket``; ``answer`` gets (allowed, left or wait
        microseconds), or None when Redis cannot say (then failure_mode applies)."""
        self.counters["checks"] += 1
        if self.conn is None or self.sha is None:
            self.counters["store_failures"] += 1
            answer(None)
            return
        self._send(command(b"EVALSHA", self.sha, b"1", self.prefix + bucket,
                           b"%d" % interval_us, b"%d" % window_us), answer)

    def _send(self, request: bytes, answer: Answer | None) -> None:
        """Queued for this loop iteration's one write; answers come in the same order."""
        self.out.append(request)
        self.waiting.append((answer, time.monotonic() + self.cfg.timeout))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def failed(self) -> None:
        """The exchange applied the failure mode to a None answer: counted."""
        self.counters["failed_open" if self.fail_open else "failed_closed"] += 1

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.out and self.conn is not None and self.conn.transport is not None:
            self.conn.transport.write(b"".join(self.out))
        self.out.clear()

    # -- answers, failures ------------------------------------------------------------------

    def answered(self, reply: object) -> None:
        if not self.waiting:
            return
        answer, _ = self.waiting.popleft()
        if answer is None:              # the reply to SCRIPT LOAD
            if isinstance(reply, bytes):
                self.sha, self.error = reply, None
                log.info("rate limit store connected", extra={"fields": {"redis": self.where}})
            else:
                self.error = f"SCRIPT LOAD: {reply}"[:200]
            return
        if isinstance(reply, list) and len(reply) == 2:
            answer((reply[0] == 1, reply[1]))
            return
        if isinstance(reply, RedisError) and str(reply).startswith("NOSCRIPT") and self.sha is not None:
            self.sha = None             # Redis lost its scripts (a restart, SCRIPT FLUSH): load it again
            self._send_script()
        self.counters["store_failures"] += 1
        self.error = str(reply)[:200]
        answer(None)

    def _expire(self) -> None:
        """Answers overdue: fail them, and drop the connection (later replies would go to
        the wrong requests)."""
        now = time.monotonic()
        conn = self.conn
        if self.waiting and self.waiting[0][1] < now and conn is not None:
            self.broken(conn, f"no answer within {self.cfg.timeout * 1000:g} ms")
            if conn.transport is not None:
                conn.transport.abort()
        if not self.closed:
            self.watchdog = self.loop.call_later(self.cfg.timeout / 2, self._expire)

    def broken(self, conn: _Connection, why: str) -> None:
        if conn is not self.conn:
            return
        self.conn, self.sha, self.error = None, None, why
        waiting, self.waiting = self.waiting, collections.deque()
        self.out.clear()
        log.warning("rate limit store unreachable", extra={"fields": {"redis": self.where, "error": why}})
        for answer, _ in waiting:
            if answer is not None:
                self.counters["store_failures"] += 1
                answer(None)
        if not self.closed:
            self.loop.call_later(BACKOFF[min(self.dials, len(BACKOFF) - 1)], self._dial)

    # -- the connection ---------------------------------------------------------------------

    @property
    def where(self) -> str:
        host, port = self.cfg.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _dial(self) -> None:
        if self.closed:
            return
        self.dials += 1
        task = self.loop.create_task(self._connect())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _connect(self) -> None:
        host, port = self.cfg.address
        conn = _Connection(self)
        try:
            await asyncio.wait_for(self.loop.create_connection(lambda: conn, host, port), timeout=2.0)
        except (OSError, asyncio.TimeoutError) as exc:
            self.error = f"connect: {exc or 'timed out'}"
            if not self.closed:
                self.loop.call_later(BACKOFF[min(self.dials, len(BACKOFF) - 1)], self._dial)
            return
        if self.closed:
            conn.transport.close()
            return
        self.conn, self.dials = conn, 0
        self._send_script()

    def _send_script(self) -> None:
        self._send(command(b"SCRIPT", b"LOAD", GCRA), None)

    def status(self) -> dict:
        return {"redis": self.where, "connected": self.sha is not None, "failure_mode": self.cfg.failure_mode,
                "error": self.error, **self.counters}

    def close(self) -> None:
        self.closed = True
        self.watchdog.cancel()
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()
