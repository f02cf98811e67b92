"""Memory of one gateway worker serving a 10,000-endpoint service: RSS after loading and after load.

    /work/venv/bin/python bench/memory.py                       # 10,000 endpoints, 100k requests
    /work/venv/bin/python bench/memory.py --requests 1000000 --connections 100
    /work/venv/bin/python bench/memory.py --limit-mib 150       # exit 1 above the target

What runs (everything on loopback, every process stopped by pid at the end):

* backends: nginx (``return 200``, keep-alive; one process per 5,000
  addresses, for the fd limit) listening on 10,000 loopback addresses
  127.1.x.y:P (Linux routes all of 127/8 to ``lo``; one ``listen`` per
  address, so nothing listens beyond loopback);
* the gateway: ``python -m gateway run`` with ``workers: 1`` (one process is
  the worker), two static sources ``zone-a`` and ``zone-b`` listing 5,000 of
  the addresses each for one service (the registry merges an address listed
  by two sources into one endpoint, so they must differ): 10,000 endpoints,
  one route ``/``, access log off, no admin API;
* load: a small asyncio client (uvloop if installed) sending exactly
  ``--requests`` keep-alive GETs over ``--connections`` connections (wrk runs
  for a duration, it cannot stop after a count).  With ``taskset`` and 2+ CPUs
  the gateway runs on CPU 0, nginx and the client on CPU 1, as bench/run.py
  pins them.

It prints the worker's RSS (VmRSS, MiB) after the snapshot is applied and the
first request answered, after the requests, and the number of open file
descriptors (each endpoint that served keeps its pooled keep-alive
connections, up to 64 per endpoint; ``upstream_idle`` is 600 s here so that
they are all still open when measured).  ``--workers N`` would measure each
worker process, but see bench/MICRO.md: workers: N fails to start with 10,000
endpoints today.  Needs nginx (as
bench/run.py).  Exit status: 0, 1 above ``--limit-mib``, 2 if it could not set
up.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from run import Proc, free_port, process_tree  # bench/run.py: one copy of the process helpers
from support import MiB, rss_bytes  # tests/support, on sys.path since run is imported

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GATEWAY_CPU, LOAD_CPU = "0", "1"
ADDRESSES_PER_NGINX = 5000


class SetupError(Exception):
    pass


# -- processes -------------------------------------------------------------------

def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` in MiB (tests/support/memory.py reads it)."""
    return rss_bytes(pid) / MiB


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def pinned(argv: list[str], cpu: str) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", cpu, *argv]
    return argv


# -- the setup -------------------------------------------------------------------

def backend_addresses(count: int) -> list[str]:
    """127.1.0.1 ... : 250 per /24, never .0 or .255."""
    return [f"127.{1 + i // 62_500}.{(i // 250) % 250}.{1 + i % 250}" for i in range(count)]


def nginx_conf(tmp: Path, addresses: list[str], port: int) -> str:
    listens = "".join(f"        listen {a}:{port} backlog=4096;\n" for a in addresses)
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log stderr error;
worker_rlimit_nofile 65536;
events {{ worker_connections 32768; }}
http {{
    server_tokens off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy_temp;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    scgi_temp_path {tmp}/scgi_temp;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    access_log off;
    server {{
{listens}        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def gateway_conf(port: int, addresses: list[str], backend_port: int, workers: int,
                 upstream_idle: str = "600s") -> str:
    half = len(addresses) // 2
    sources = ""
    for zone, part in (("zone-a", addresses[:half]), ("zone-b", addresses[half:])):
        endpoints = ", ".join(f'"{a}:{backend_port}"' for a in part)
        sources += f"""  - name: {zone}
    type: static
    services:
      - {{name: big, namespace: default, endpoints: [{endpoints}]}}
"""
    return f"""listen: 127.0.0.1:{port}
admin: off
access_log: {{path: off}}
workers: {workers}
timeouts: {{drain: 2s, upstream_idle: {upstream_idle}}}
sources:
{sources}services:
  - {{name: big, namespace: default, port: {backend_port}}}
routes:
  - name: all
    match: {{path: {{prefix: /}}}}
    service: default/big
"""


def http_ok(port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


class Setup:
    """nginx on ``endpoints`` addresses and a gateway with them as ``endpoints`` endpoints."""

    def __init__(self, endpoints: int = 10_000, workers: int = 1, keep_tmp: bool = False,
                 repo: Path = REPO, upstream_idle: str = "600s") -> None:
        if not shutil.which("nginx"):
            raise SetupError("needs nginx for the backend (apt-get install nginx-light)")
        self.endpoints, self.workers, self.keep_tmp, self.repo = endpoints, workers, keep_tmp, repo
        self.upstream_idle = upstream_idle      # 600s: pools stay while memory is measured
        self.tmp = Path(tempfile.mkdtemp(prefix="gwmem-"))
        self.procs: list[Proc] = []
        self.gateway: Proc | None = None
        self.port = 0

    def __enter__(self) -> "Setup":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        addresses = backend_addresses(self.endpoints)
        backend_port = free_port("127.0.0.1")
        # One nginx per 5,000 addresses: a listening socket plus a pooled
        # connection per address must stay under the fd limit (20,000 here).
        for k in range(0, len(addresses), ADDRESSES_PER_NGINX):
            part = addresses[k:k + ADDRESSES_PER_NGINX]
            prefix = self.tmp / f"backend-{k // ADDRESSES_PER_NGINX}"
            prefix.mkdir()
            (prefix / "nginx.conf").write_text(nginx_conf(prefix, part, backend_port))
            backend = self._spawn(prefix.name, pinned(
                ["nginx", "-p", str(prefix), "-e", "stderr", "-c", str(prefix / "nginx.conf")],
                LOAD_CPU))
            self._wait(lambda: self._backend_ok(part[-1], backend_port), backend, 30, prefix.name)
        self.port = free_port("127.0.0.1")
        conf = self.tmp / "gateway.yaml"
        conf.write_text(gateway_conf(self.port, addresses, backend_port, self.workers,
                                     self.upstream_idle))
        self.gateway = self._spawn("gateway", pinned(
            [PYTHON, "-m", "gateway", "run", "--config", str(conf), "--log-level", "warning"],
            GATEWAY_CPU), cwd=self.repo)
        self._wait(lambda: http_ok(self.port), self.gateway, 60, "gateway")

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the gateway itself with ``workers: 1``."""
        tree = process_tree(self.gateway.pid)
        real = [pid for pid in tree if _is_python(pid)]
        if self.workers == 1:
            return real[:1]
        return real[1:]

    def _spawn(self, name: str, argv: list[str], cwd: Path | None = None) -> Proc:
        proc = Proc(name, argv, self.tmp, cwd)
        self.procs.append(proc)
        return proc

    @staticmethod
    def _backend_ok(address: str, port: int) -> bool:
        try:
            with socket.create_connection((address, port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return s.recv(100).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    @staticmethod
    def _wait(check, proc: Proc, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if not proc.alive():
                raise SetupError(f"{what} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
            if time.monotonic() > deadline:
                raise SetupError(f"{what} not ready after {timeout:.0f}s:\n{proc.log_tail()}")
            time.sleep(0.2)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        if self.keep_tmp:
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _is_python(pid: int) -> bool:
    try:
        return "python" in Path(f"/proc/{pid}/comm").read_text() or \
            b"gateway" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# -- load ------------------------------------------------------------------------

def run_load(port: int, requests: int, connections: int) -> tuple[Counter, float]:
    """Send exactly ``requests`` keep-alive GETs over ``connections`` connections.

    An asyncio client, not wrk: wrk runs for a duration, and this counts.
    Returns (answers by status, seconds).
    """
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    affinity = os.sched_getaffinity(0)
    if pinned(["x"], LOAD_CPU) != ["x"]:
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    try:
        start = time.monotonic()
        statuses = runner(_asyncio_load(port, requests, connections))
        return statuses, time.monotonic() - start
    finally:
        os.sched_setaffinity(0, affinity)


async def _asyncio_load(port: int, requests: int, connections: int) -> Counter:
    remaining = [requests]
    statuses: Counter = Counter()
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                statuses[int(head[9:12])] += 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return statuses


# -- main ------------------------------------------------------------------------

def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so that every process started is stopped."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--limit-mib", type=float, default=150.0, help="target RSS per worker")
    parser.add_argument("--keep-tmp", action="store_true")
    parser.add_argument("--repo", type=Path, default=REPO,
                        help="run the gateway (gateway/, built _speedups/) from this directory")
    args = parser.parse_args(argv)
    try:
        with Setup(args.endpoints, args.workers, args.keep_tmp, args.repo) as setup:
            pids = setup.worker_pids()
            loaded = {pid: rss_mib(pid) for pid in pids}
            fds_loaded = {pid: open_fds(pid) for pid in pids}
            statuses, seconds = run_load(setup.port, args.requests, args.connections)
            time.sleep(0.5)
            after = {pid: rss_mib(pid) for pid in pids}
            fds_after = {pid: open_fds(pid) for pid in pids}
    except SetupError as exc:
        print(f"memory: {exc}", file=sys.stderr)
        return 2
    answered = sum(statuses.values())
    print(f"gateway: {args.endpoints} endpoints (2 static sources), workers: {args.workers}, "
          f"{answered} requests in {seconds:.1f} s over {args.connections} connections, "
          f"statuses {dict(sorted(statuses.items()))}")
    worst = 0.0
    for pid in pids:
        worst = max(worst, loaded[pid], after[pid])
        print(f"worker pid {pid}: RSS after loading {loaded[pid]:.1f} MiB ({fds_loaded[pid]} fds), "
              f"after {answered} requests {after[pid]:.1f} MiB ({fds_after[pid]} fds)")
    ok = worst < args.limit_mib and answered >= args.requests
    print(f"{'OK' if ok else 'FAIL'}: largest worker RSS {worst:.1f} MiB, target < {args.limit_mib:g} MiB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
