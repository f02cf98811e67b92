"""Worker processes of a multi-worker gateway, seen from the control plane.

The control plane (sources, registry, health, admin) runs once, in the main
process; each worker process runs a data plane with its own SO_REUSEPORT
listener (see gateway.worker).  The supervisor starts them, sends them the
data-plane spec, the whole endpoint view once and then each delta (encoded once,
the same bytes to every worker), restarts one that dies, feeds their
passive-health reports to the health manager and their counters to
gateway.stats.  A worker slot that dies before it is ready ``MAX_FAILED_STARTS``
times in a row stops the gateway: a port held open with nobody serving it is
worse than a clear exit.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import socket
import subprocess
import time
from dataclasses import replace
from typing import Callable

from gateway.config import Address, Config
from gateway.listeners import bind_listeners
from gateway.snapshot import Delta, Snapshot
from gateway.stats import Stats
from gateway.wire import MESSAGE_LIMIT, encode, read_message, route_changes, routes_message, spec_message
from gateway.worker import spawn_command

log = logging.getLogger("gateway.supervisor")

RESTART_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)     # seconds, by consecutive quick deaths
MAX_FAILED_STARTS = 5
APPLY_SAMPLES = 1000                # delta -> ack delays kept per worker


class WorkerHandle:
    """One worker process and the socket pair to it."""

    def __init__(self, worker_id: int) -> None:
        self.id = worker_id
        self.proc: subprocess.Popen | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.snapshot_version = 0
        self.ready = False
        self.connections = 0
        self.started = 0.0
        self.quick_deaths = 0
        self.failed_starts = 0              # deaths before ready, in a row
        # Seconds from a delta's publication to this worker's ack: how long a change
        # (a health flip, a watch event) takes to reach it.
        self.apply_delays: collections.deque[float] = collections.deque(maxlen=APPLY_SAMPLES)
        self.listener: socket.socket | None = None     # this slot's listening socket, if held

    def send(self, frame: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(frame)


class WorkerStartError(RuntimeError):
    pass


class Supervisor:
    def __init__(self, count: int, config: Config, log_level: str, *,
                 on_report: Callable[[str, tuple, str | None], None], stats: Stats,
                 snapshot: Callable[[], Snapshot],
                 on_fatal: Callable[[str], None] | None = None, buckets_fd: int | None = None,
                 ticket_keys=None) -> None:
        self.count = count
        self.ticket_keys = ticket_keys      # gateway.tls.TicketKeys: sent to each worker it starts
        self.buckets_fd = buckets_fd        # the replica's rate-limit buckets, every worker maps them
        self.config = config
        self.log_level = log_level
        self.on_report = on_report
        self.stats = stats
        self.snapshot = snapshot            # the whole current view, when a worker needs it
        self.on_fatal = on_fatal
        self.workers = [WorkerHandle(i) for i in range(count)]
        self.stopping = False
        self.restarts = 0
        self._tasks: set[asyncio.Task] = set()
        self._spec = spec_message(config)
        self._starting = False
        self._published: collections.OrderedDict[int, float] = collections.OrderedDict()
        self.listen: Address | None = None

    async def start(self, timeout: float = 30.0) -> None:
        """Start every worker; WorkerStartError (the others stopped) if one dies first."""
        self.listen = self.config.listen
        self._starting = True
        try:
            for handle in self.workers:
                await self._spawn(handle)
            deadline = time.monotonic() + timeout
            while not all(h.ready for h in self.workers):
                failed = [h for h in self.workers if h.failed_starts]
                if failed or time.monotonic() > deadline:
                    await self.stop(0)
                    raise WorkerStartError(
                        f"worker {failed[0].id} exited before it was ready (its error is above)"
                        if failed else f"workers did not become ready within {timeout:g}s")
                await asyncio.sleep(0.02)
        finally:
            self._starting = False

    async def _spawn(self, handle: WorkerHandle) -> None:
        parent, child = socket.socketpair()
        args = [*spawn_command(), "--fd", str(child.fileno()),
                "--id", str(handle.id), "--log-level", self.log_level]
        fds = [child.fileno()]
        if self.buckets_fd is not None:
            args += ["--buckets-fd", str(self.buckets_fd)]
            fds.append(self.buckets_fd)
        listener = self._listener(handle)
        if listener is not None:
            args += ["--listen-fd", str(listener.fileno())]
            fds.append(listener.fileno())
        handle.proc = subprocess.Popen(args, pass_fds=fds)
        child.close()
        handle.started = time.monotonic()
        handle.ready = False
        reader, writer = await asyncio.open_connection(sock=parent, limit=MESSAGE_LIMIT)
        handle.writer = writer
        if self._spec is None:
            self._spec = spec_message(self.config)
        handle.send(self._spec)
        if self.ticket_keys is not None:
            handle.send(encode(self.ticket_keys.message()))
        self._send_full(handle)
        task = asyncio.ensure_future(self._read(handle, reader))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("worker started", extra={"fields": {"worker": handle.id, "pid": handle.proc.pid}})

    def _send_full(self, handle: WorkerHandle) -> None:
        handle.send(encode(self.snapshot().to_wire()))

    async def _read(self, handle: WorkerHandle, reader: asyncio.StreamReader) -> None:
        while (message := await read_message(reader)) is not None:
            kind = message["t"]
            if kind == "report":
                self.on_report(message["s"], tuple(message["e"]), message["k"])
            elif kind == "stats":
                self.stats.receive(handle.id, message)
                handle.connections = message["connections"]
            elif kind == "ack":
                handle.snapshot_version = message["v"]
                published = self._published.get(message["v"])
                if published is not None:
                    handle.apply_delays.append(time.monotonic() - published)
            elif kind == "resync":
                log.warning("worker fell behind; sending the whole view",
                            extra={"fields": {"worker": handle.id, "has": message["have"]}})
                self._send_full(handle)
            elif kind == "ready":
                handle.ready = True
                handle.failed_starts = 0
        await self._on_exit(handle)

    async def _on_exit(self, handle: WorkerHandle) -> None:
        proc = handle.proc
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        was_ready = handle.ready
        self._retire(handle)
        if self.stopping:
            return
        if not was_ready:
            handle.failed_starts += 1
            if self._starting:
                return                      # start() reports it and stops the gateway
        lived = time.monotonic() - handle.started
        handle.quick_deaths = handle.quick_deaths + 1 if lived < 10 else 0
        if handle.failed_starts >= MAX_FAILED_STARTS:
            message = (f"worker {handle.id} failed to start {handle.failed_starts} times in a row "
                       f"(last exit code {code}); stopping the gateway")
            log.error(message)
            self.stopping = True
            if self.on_fatal is not None:
                self.on_fatal(message)
            return
        delay = RESTART_BACKOFF[min(handle.quick_deaths, len(RESTART_BACKOFF) - 1)]
        log.error("worker died; restarting", extra={"fields": {
            "worker": handle.id, "pid": proc.pid, "exit": code, "restart_in_s": delay}})
        self.restarts += 1
        await asyncio.sleep(delay)
        if not self.stopping:
            await self._spawn(handle)

    def _retire(self, handle: WorkerHandle) -> None:
        """Keep a dead worker's counters so that totals never go down."""
        self.stats.retire(handle.id)
        handle.connections = 0
        handle.ready = False
        handle.writer = None

    def publish(self, delta: Delta) -> None:
        self._published[delta.version] = time.monotonic()
        while len(self._published) > APPLY_SAMPLES:
            self._published.popitem(last=False)
        self.broadcast(encode(delta.to_wire()))

    def suspect(self, service_key: str, endpoint_key: tuple) -> None:
        self.broadcast(encode({"t": "suspect", "s": service_key, "e": list(endpoint_key)}))

    def broadcast(self, frame: bytes) -> None:
        for handle in self.workers:
            handle.send(frame)

    def _listener(self, handle: WorkerHandle) -> socket.socket | None:
        """The slot's SO_REUSEPORT listening socket, made once and kept open here.

        A worker serves on a copy.  When it dies, the socket stays open: connections the
        kernel has queued on it (or queues while the worker restarts) wait for the next
        worker of the slot instead of being reset with the dead process's last copy.
        None (the worker binds its own) when the address is not one plain host:port.
        """
        if handle.listener is None and self.listen is not None:
            try:
                handle.listener = _bind_listener(self.listen)
            except OSError as exc:
                log.warning("cannot hold a listening socket; the worker binds its own",
                            extra={"fields": {"listen": str(self.listen), "error": str(exc)}})
        return handle.listener

    def _release_listeners(self) -> None:
        """Close the copies held here: a worker's own copy is then the last one."""
        for handle in self.workers:
            if handle.listener is not None:
                handle.listener.close()
                handle.listener = None

    def reload(self, config: Config, routes_only: bool = False) -> None:
        """Send workers the new spec; with ``routes_only`` (Gateway API route changes) and
        nothing else changed, only those routes.  A reload is always the whole spec: each
        worker then re-reads its certificates too."""
        old, self.config = self.config, config
        if routes_only and replace(config, routes=()) == replace(old, routes=()):
            self._spec = None
            upserts, removed = route_changes(old.routes, config.routes)
            if upserts or removed:
                self.broadcast(routes_message(upserts, removed))
            return
        if config.listen != self.listen:    # workers bind the new address themselves
            self._release_listeners()
            self.listen = config.listen
        self._spec = None                   # encoded when a worker (re)starts
        self.broadcast(spec_message(config))

    def reopen_logs(self) -> None:
        """Each worker reopens its access log file (after logrotate moved it)."""
        self.broadcast(encode({"t": "reopen"}))

    async def stop(self, drain_timeout: float) -> None:
        self.stopping = True
        self._release_listeners()
        self.broadcast(encode({"t": "drain", "timeout": drain_timeout}))
        deadline = time.monotonic() + drain_timeout + 5
        for handle in self.workers:
            proc = handle.proc
            while proc is not None and proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc is not None and proc.poll() is None:
                log.error("worker did not drain in time; killing it", extra={"fields": {"pid": proc.pid}})
                proc.kill()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def status(self) -> list[dict]:
        return [{"id": h.id, "pid": h.proc.pid if h.proc else None, "ready": h.ready,
                 "snapshot_version": h.snapshot_version, "connections": h.connections,
                 "apply_ms": _delays_ms(h.apply_delays)}
                for h in self.workers]


def _bind_listener(address: Address) -> socket.socket | None:
    """A listening socket as the worker's own would be, when the host resolves to exactly
    one address (else None: the worker binds)."""
    socks = bind_listeners(address)
    if len(socks) == 1:
        return socks[0]
    for sock in socks:
        sock.close()
    return None


def _delays_ms(delays) -> dict | None:
    """Median, p99 and max of the recent publish -> ack delays, in ms."""
    if not delays:
        return None
    d = sorted(delays)

    def ms(q: float) -> float:
        return round(d[min(len(d) - 1, int(q * (len(d) - 1) + 0.5))] * 1000, 3)
    return {"samples": len(d), "median": ms(0.5), "p99": ms(0.99), "max": ms(1.0)}
