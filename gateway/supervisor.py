"""Worker processes of a multi-worker gateway, seen from the control plane.

The control plane (sources, registry, health, admin) runs once, in the main
process; each worker process runs a data plane with its own SO_REUSEPORT
listener (see gateway.worker).  The supervisor starts them, sends them the
config and every snapshot, restarts one that dies, feeds their passive-health
reports to the health manager, and adds up their counters.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from typing import Callable

import orjson

from gateway.config import Address, Config
from gateway.snapshot import Snapshot
from gateway.worker import MESSAGE_LIMIT

log = logging.getLogger("gateway.supervisor")

RESTART_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)     # seconds, by consecutive quick deaths


class WorkerHandle:
    """One worker process and the socket pair to it."""

    def __init__(self, worker_id: int) -> None:
        self.id = worker_id
        self.proc: subprocess.Popen | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.snapshot_version = 0
        self.ready = False
        self.stats: dict = {}
        self.started = 0.0
        self.quick_deaths = 0
        self.listener: socket.socket | None = None     # this slot's listening socket, if held

    def send(self, message: dict) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(orjson.dumps(message) + b"\n")


class Supervisor:
    def __init__(self, count: int, config: Config, log_level: str,
                 on_report: Callable[[str, tuple, str | None], None]) -> None:
        self.count = count
        self.config = config
        self.log_level = log_level
        self.on_report = on_report
        self.workers = [WorkerHandle(i) for i in range(count)]
        self.snapshot: Snapshot | None = None
        self.retired: dict = {}             # counters of workers that died, so totals never drop
        self.stopping = False
        self.restarts = 0
        self._tasks: set[asyncio.Task] = set()
        self.listen: Address | None = None

    async def start(self, snapshot: Snapshot, timeout: float = 30.0) -> None:
        self.snapshot = snapshot
        self.listen = self.config.listen
        for handle in self.workers:
            await self._spawn(handle)
        deadline = time.monotonic() + timeout
        while not all(h.ready for h in self.workers):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not become ready")
            await asyncio.sleep(0.02)

    async def _spawn(self, handle: WorkerHandle) -> None:
        parent, child = socket.socketpair()
        args = [sys.executable, "-m", "gateway.worker", "--fd", str(child.fileno()),
                "--id", str(handle.id), "--log-level", self.log_level]
        fds = [child.fileno()]
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
        handle.send(_config_message(self.config))
        handle.send(self.snapshot.to_wire())
        task = asyncio.ensure_future(self._read(handle, reader))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("worker started", extra={"fields": {"worker": handle.id, "pid": handle.proc.pid}})

    async def _read(self, handle: WorkerHandle, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            message = orjson.loads(line)
            kind = message["t"]
            if kind == "report":
                self.on_report(message["s"], tuple(message["e"]), message["k"])
            elif kind == "stats":
                handle.stats = message
                handle.snapshot_version = message["snapshot"]
            elif kind == "ack":
                handle.snapshot_version = message["v"]
            elif kind == "ready":
                handle.ready = True
        await self._on_exit(handle)

    async def _on_exit(self, handle: WorkerHandle) -> None:
        proc = handle.proc
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        self._retire(handle)
        if self.stopping:
            return
        lived = time.monotonic() - handle.started
        handle.quick_deaths = handle.quick_deaths + 1 if lived < 10 else 0
        delay = RESTART_BACKOFF[min(handle.quick_deaths, len(RESTART_BACKOFF) - 1)]
        log.error("worker died; restarting", extra={"fields": {
            "worker": handle.id, "pid": proc.pid, "exit": code, "restart_in_s": delay}})
        self.restarts += 1
        await asyncio.sleep(delay)
        if not self.stopping:
            await self._spawn(handle)

    def _retire(self, handle: WorkerHandle) -> None:
        """Keep a dead worker's counters so that totals never go down."""
        if handle.stats:
            self.retired = _add(self.retired, _counters(handle.stats, gauges=False))
        handle.stats = {}
        handle.ready = False
        handle.writer = None

    def publish(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        message = snapshot.to_wire()
        for handle in self.workers:
            handle.send(message)

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

    def reload(self, config: Config) -> None:
        self.config = config
        if config.listen != self.listen:    # workers bind the new address themselves
            self._release_listeners()
            self.listen = config.listen
        message = _config_message(config)
        for handle in self.workers:
            handle.send(message)

    def reopen_logs(self) -> None:
        """Each worker reopens its access log file (after logrotate moved it)."""
        for handle in self.workers:
            handle.send({"t": "reopen"})

    async def stop(self, drain_timeout: float) -> None:
        self.stopping = True
        self._release_listeners()
        for handle in self.workers:
            handle.send({"t": "drain", "timeout": drain_timeout})
        deadline = time.monotonic() + drain_timeout + 5
        for handle in self.workers:
            proc = handle.proc
            while proc is not None and proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc is not None and proc.poll() is None:
                log.error("worker did not drain in time; killing it", extra={"fields": {"pid": proc.pid}})
                proc.kill()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def totals(self) -> dict:
        """Counters added up over every worker, living and retired."""
        total = self.retired
        for handle in self.workers:
            if handle.stats:
                total = _add(total, _counters(handle.stats))
        return total

    def status(self) -> list[dict]:
        return [{"id": h.id, "pid": h.proc.pid if h.proc else None, "ready": h.ready,
                 "snapshot_version": h.snapshot_version,
                 "connections": h.stats.get("connections", 0)} for h in self.workers]


def _config_message(config: Config) -> dict:
    """The validated document itself: a worker (re)started later must not read a file that
    may have changed, or become invalid, since the control plane validated it."""
    return {"t": "config", "path": config.path, "document": config.document}


def _bind_listener(address: Address) -> socket.socket | None:
    """A listening socket as the worker's own ``create_server(reuse_port=True)`` would make
    it, when the host resolves to exactly one address (else None: the worker binds)."""
    infos = socket.getaddrinfo(address.host or None, address.port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    if len({info[4] for info in infos}) != 1:
        return None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(4096)
    except OSError:
        sock.close()
        raise
    return sock


def _counters(stats: dict, gauges: bool = True) -> dict:
    upstreams = stats.get("upstreams", {})
    if not gauges:      # a dead worker's idle connections are gone; its counts are not
        upstreams = {k: {f: v for f, v in u.items() if f != "idle"} for k, u in upstreams.items()}
    return {"stats": stats.get("stats", {}), "upstreams": upstreams, "routes": stats.get("routes", {})}


def _add(a, b):
    """Add nested counters: numbers add, dicts merge, lists add element-wise."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = _add(out[key], value) if key in out else value
        return out
    if isinstance(a, list) and isinstance(b, list):
        return [x + y for x, y in zip(a, b)]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a + b
    return b
