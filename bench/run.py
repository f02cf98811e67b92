"""Side-by-side benchmark: this gateway vs nginx, HAProxy, a bare uvloop proxy and an aiohttp
proxy, on one machine, plus the gateway's Python allocations per request (bench/allocs.py).

    /work/venv/bin/python bench/run.py                 # default: 10 s runs, 3 repetitions
    /work/venv/bin/python bench/run.py --quick         # ~1-2 minutes, 1 repetition
    /work/venv/bin/python bench/run.py --targets gateway,nginx --cases c50-small --json out.json

Layout (2 cores): the backends (one nginx, 1 worker, listening on 127.0.0.2:P and 127.0.0.3:P)
and wrk share CPU 1; every proxy target runs with one worker/thread pinned to CPU 0.  For each
run the proxy's CPU time (utime+stime of all its processes, from /proc/<pid>/stat) is read before
and after, and divided by the requests wrk completed: CPU microseconds per request, the figure to
trust on a small, shared, noisy machine.  See bench/README.md for the columns.

Everything started here is stopped by pid in a ``finally`` (also on Ctrl-C / SIGTERM); every wrk
run is bounded in time; all traffic stays on 127.0.0.0/8.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "tests"):              # tests/support (the process helpers) and the
    if str(_path) not in sys.path:                # gateway package it imports free_port from
        sys.path.insert(0, str(_path))

from support import CLK_TCK, cpu_ticks, free_port, process_tree  # noqa: E402  (bench/*.py import them from here too)

PYTHON = sys.executable

PROXY_CPU = "0"          # every proxy target
LOAD_CPU = "1"           # wrk and the backends

SMALL_BODY = b"0123456789abcdefghi\n"                     # 20 bytes
BIG_BODY = (b"0123456789abcdef" * 1024)                    # 16 KiB
BODIES = {"/small": SMALL_BODY, "/16k": BIG_BODY}


@dataclass(frozen=True)
class Case:
    name: str
    connections: int
    path: str
    close: bool = False          # "Connection: close": a new connection per request
    about: str = ""


CASES = {c.name: c for c in (
    Case("c50-small", 50, "/small", about="50 keep-alive connections, 20 B body"),
    Case("c1-small", 1, "/small", about="1 connection: latency"),
    Case("c50-16k", 50, "/16k", about="50 keep-alive connections, 16 KiB body"),
    Case("newconn-small", 10, "/small", close=True,
         about="10 connections, Connection: close (a new TCP connection per request)"),
)}

ALL_TARGETS = ["direct", "gateway", "gateway-nolog", "nginx", "nginx-nolog", "haproxy", "bare", "aiohttp"]
DEFAULT_TARGETS = ["direct", "gateway", "gateway-nolog", "nginx", "haproxy", "bare", "aiohttp"]
TARGET_ABOUT = {
    "direct": "wrk straight at one backend (no proxy); CPU column = the backend nginx",
    "gateway": "this gateway, 1 process, access log to a file (64 KiB buffer, 1 s flush)",
    "gateway-nolog": "this gateway, 1 process, access_log: off",
    "nginx": "nginx proxy_pass, worker_processes 1, keepalive 64, access_log to a file "
             "(buffer=64k flush=1s)",
    "nginx-nolog": "nginx as above with access_log off",
    "haproxy": "HAProxy, nbthread 1, mode http, http-reuse always, roundrobin, no logging",
    "bare": "bench/bare_proxy.py: uvloop + httptools callbacks, round robin, keep-alive pool, "
            "no features (the floor for Python on uvloop)",
    "aiohttp": "bench/aiohttp_proxy.py: aiohttp server + shared ClientSession, uvloop",
}

WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,' ..
    '"write":%.0f,"status":%.0f,"timeout":%.0f,"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f,' ..
    '"mean":%.1f,"max":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
"""


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------- processes

def cpu_delta_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    ticks = sum(after.get(pid, t) - t for pid, t in before.items())
    ticks += sum(t for pid, t in after.items() if pid not in before)   # started during the run
    return ticks / CLK_TCK


def measure(proxy: "Proc", run) -> tuple[int, float]:
    """(what ``run()`` returns: requests or connections done, CPU seconds the proxy's
    processes spent meanwhile)."""
    pids = process_tree(proxy.pid)
    before = cpu_ticks(pids)
    done = run()
    return done, cpu_delta_seconds(before, cpu_ticks(pids))


def cpu0_times() -> tuple[int, int]:
    """(busy, steal) clock ticks of the proxy CPU, from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{PROXY_CPU} "):
                v = [int(x) for x in line.split()[1:]]
                # user nice system idle iowait irq softirq steal ...
                return v[0] + v[1] + v[2] + v[5] + v[6], v[7]
    return 0, 0


class Proc:
    """A process we started (in its own session: Ctrl-C on the terminal does not reach it)."""

    def __init__(self, name: str, argv: list[str], logdir: Path, cwd: Path | None = None,
                 env: dict | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                      start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the root pid, wait, then SIGKILL it and any descendant still there."""
        if self.alive():
            tree = process_tree(self.pid)
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            for pid in tree:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                self.popen.wait(2)
            except subprocess.TimeoutExpired:
                pass
        self._log.close()


# --------------------------------------------------------------------------- helpers

def http_get(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(proc: Proc, host: str, port: int, timeout: float = 20.0) -> None:
    """Until both bodies come back right through the target (twice: both backends)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            ok = True
            for path, body in list(BODIES.items()) * 2:
                status, got = http_get(host, port, path)
                if status != 200 or got != body:
                    ok = False
                    last = f"GET {path}: status {status}, {len(got)} bytes"
                    break
            if ok:
                return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(f"{proc.name} not ready after {timeout:.0f}s ({last}):\n{proc.log_tail()}")


def gateway_on_cpu0(name: str, conf: Path, logdir: Path) -> Proc:
    """``gateway run --config conf`` on the proxy CPU, from this checkout."""
    return Proc(name, ["taskset", "-c", str(PROXY_CPU), PYTHON, "-m", "gateway", "run", "--config", str(conf),
                       "--log-level", "warning"], logdir, cwd=Path(__file__).resolve().parent.parent)


def wait_answering(targets: dict, answers, what: str, timeout: float = 30.0, interval: float = 0.1) -> None:
    """Until ``answers(port)`` for every (proc, port) of ``targets``; a proc that exits or stays
    silent is a BenchError saying it does not ``what``."""
    for proc, port in targets.values():
        deadline = time.monotonic() + timeout
        while not answers(port):
            if time.monotonic() > deadline or not proc.alive():
                raise BenchError(f"{proc.name} does not {what}:\n{proc.log_tail()}")
            time.sleep(interval)


def cmd_output(argv: list[str]) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (res.stdout + res.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"


def machine_info(ref: str | None = None) -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    py_pkgs = {}
    for mod in ("uvloop", "aiohttp", "httptools", "Cython"):
        py_pkgs[mod] = cmd_output([PYTHON, "-c", f"import {mod}; print({mod}.__version__)"]).splitlines()[-1]
    commit = cmd_output(["git", "-C", str(REPO), "rev-parse", "--short=12", ref or "HEAD"])
    dirty = "" if ref else cmd_output(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                       "gateway", "_speedups", "setup.py"])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **py_pkgs,
        "nginx": cmd_output(["nginx", "-v"]).splitlines()[0],
        "haproxy": cmd_output(["haproxy", "-v"]).splitlines()[0],
        "wrk": cmd_output(["wrk", "-v"]).splitlines()[0],
        "gateway_commit": commit + (" (+ uncommitted changes in gateway/ or _speedups/)" if dirty
                                    else " (clean export of that commit)" if ref else ""),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def export_ref(ref: str, dest: Path) -> Path:
    """``git archive`` of ``ref`` into ``dest`` (the shared work tree and index are not touched)."""
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref],
                             capture_output=True, timeout=120)
    if archive.returncode != 0:
        raise BenchError(f"git archive {ref}: {archive.stderr.decode(errors='replace')}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, timeout=120)
    return dest


def build_extensions(src: Path, retries: int = 3, wait: float = 60.0) -> None:
    for attempt in range(1, retries + 1):
        res = subprocess.run([PYTHON, "setup.py", "build_ext", "--inplace", "-q"], cwd=src,
                             capture_output=True, text=True, timeout=600)
        if res.returncode == 0:
            return
        print(f"build_ext failed (attempt {attempt}/{retries}):\n{res.stderr[-2000:]}", file=sys.stderr)
        if attempt < retries:
            print(f"retrying in {wait:.0f}s (another engineer's .pyx may be mid-edit)", file=sys.stderr)
            time.sleep(wait)
    raise BenchError("cannot build the Cython extensions")


# --------------------------------------------------------------------------- configs

NGINX_COMMON = """\
error_log stderr error;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
"""

NGINX_HTTP_COMMON = """\
    server_tokens off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy_temp;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    scgi_temp_path {tmp}/scgi_temp;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
"""


def backend_conf(tmp: Path, port: int) -> str:
    return (f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {tmp}/backend.pid;\n"
            + NGINX_COMMON.format() +
            "http {\n" + NGINX_HTTP_COMMON.format(tmp=tmp) +
            f"""    access_log off;
    log_not_found off;
    sendfile on;
    tcp_nodelay on;
    open_file_cache max=16 inactive=600s;
    open_file_cache_valid 600s;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.2:{port} backlog=4096;
        listen 127.0.0.3:{port} backlog=4096;
        root {tmp}/www;
    }}
}}
""")


def nginx_proxy_conf(tmp: Path, name: str, port: int, backend_port: int, access_log: bool,
                     workers: int = 1) -> str:
    log = (f"access_log {tmp}/{name}-access.log combined buffer=64k flush=1s;" if access_log
           else "access_log off;")
    return (f"daemon off;\nmaster_process on;\nuser root;\nworker_processes {workers};\n"
            f"pid {tmp}/{name}.pid;\n" + NGINX_COMMON.format() +
            "http {\n" + NGINX_HTTP_COMMON.format(tmp=tmp) +
            f"""    {log}
    upstream backends {{
        server 127.0.0.2:{backend_port};
        server 127.0.0.3:{backend_port};
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096{" reuseport" if workers > 1 else ""};
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")


def haproxy_conf(port: int, backend_port: int) -> str:
    return f"""global
    nbthread 1
    maxconn 8000

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    balance roundrobin
    http-reuse always
    server b1 127.0.0.2:{backend_port}
    server b2 127.0.0.3:{backend_port}
"""


def gateway_access_log(tmp: Path, name: str, on: bool) -> dict:
    """A bench gateway's ``access_log``: JSON lines to a file, buffered as deployed, or off."""
    if not on:
        return {"path": "off"}
    return {"path": f"{tmp}/{name}-access.log", "buffer": "64KiB", "flush_interval": "1s"}


def gateway_conf(tmp: Path, name: str, port: int, backend_port: int, access_log: bool,
                 workers: int | None, admin: str = "off", extra: str = "") -> str:
    """The benches' gateway: two static backends, one route; ``extra``: more top-level YAML
    lines (bench/tracing.py's ``tracing:``)."""
    log = f"{{path: {tmp}/{name}-access.log, buffer: 64KiB, flush_interval: 1s}}" if access_log else "{path: off}"
    return f"""listen: 127.0.0.1:{port}
admin: {admin}
access_log: {log}
{f"workers: {workers}" if workers is not None else ""}
timeouts: {{drain: 2s}}
{extra}sources:
  - name: bench
    type: static
    services:
      - {{name: backend, namespace: default, endpoints: ["127.0.0.2:{backend_port}", "127.0.0.3:{backend_port}"]}}
services:
  - {{name: backend, namespace: default, port: {backend_port}}}
routes:
  - name: all
    match: {{path: {{prefix: /}}}}
    service: default/backend
"""


def variant_args(description: str, argv=None) -> argparse.Namespace:
    """The options of the benches that compare variants of the gateway side by side
    (bench/tracing.py, bench/edge_policy.py)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 s runs, 1 repetition")
    ap.add_argument("--cases", default="c50-small", help=f"of {', '.join(CASES)}")
    ap.add_argument("--json", help="write every run and the summary here")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.repeat = 3.0, 1
    return args


def ref_args(description: str, duration: float, argv=None) -> argparse.Namespace:
    """The options of the benches that set this work tree beside earlier commits
    (bench/engine.py, bench/timers.py)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--ref", help="also measure these commits (comma-separated; each exported and "
                                  "built in the temp dir)")
    ap.add_argument("--duration", type=float, default=duration, help="seconds per wrk run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 s runs, 1 repetition")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.repeat = 1.0, 1
    return args


def source_trees(bench: "Bench", refs: str | None) -> dict[str, Path]:
    """label -> source directory: each of ``refs`` (comma-separated commits) exported and built
    in the bench's temp dir, then this work tree."""
    trees = {}
    for i, ref in enumerate(filter(None, (refs or "").split(","))):
        trees[ref] = export_ref(ref, bench.tmp / f"ref-{i}")
        build_extensions(trees[ref])
    trees["this tree"] = REPO
    return trees


def start_gateway_from(bench: "Bench", name: str, src: Path, conf) -> "Target":
    """``python -m gateway run`` from ``src`` on the proxy CPU, with the YAML ``conf(port)``."""
    port = free_port("127.0.0.1")
    path = bench.tmp / f"{name}.yaml"
    path.write_text(conf(port))
    proc = bench.spawn(name, [PYTHON, "-m", "gateway", "run", "--config", str(path), "--log-level", "warning"],
                       PROXY_CPU, cwd=src)
    wait_ready(proc, "127.0.0.1", port, timeout=30)
    return Target("gateway", "127.0.0.1", port, proc)


# --------------------------------------------------------------------------- targets

@dataclass
class Target:
    name: str
    host: str
    port: int
    proc: Proc | None            # None: "direct" (the backend is measured instead)
    error: str | None = None     # set when it failed to start or died


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
        self.procs: list[Proc] = []
        self.backend: Proc | None = None
        self.backend_port = 0
        self.lua = self.tmp / "report.lua"
        self.lua.write_text(WRK_LUA)
        self.wrk: subprocess.Popen | None = None
        self.workers_supported: bool | None = None
        self.gateway_dir = REPO          # where `python -m gateway` runs from (--ref: an export)

    # -- lifecycle

    def spawn(self, name: str, argv: list[str], cpus: str, cwd: Path | None = None) -> Proc:
        p = Proc(name, ["taskset", "-c", cpus, *argv], self.tmp, cwd=cwd)
        self.procs.append(p)
        return p

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        if self.wrk is not None and self.wrk.poll() is None:
            self.wrk.kill()
            self.wrk.wait()
        for proc in reversed(list(self.procs)):
            proc.stop()
        self.procs.clear()

    def cleanup(self) -> None:
        self.stop_all()
        if self.args.keep_tmp:
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- backends and targets

    def start_backend(self) -> None:
        www = self.tmp / "www"
        www.mkdir()
        for path, body in BODIES.items():
            (www / path.lstrip("/")).write_bytes(body)
        self.backend_port = free_port("127.0.0.2", "127.0.0.3")
        conf = self.tmp / "backend.conf"
        conf.write_text(backend_conf(self.tmp, self.backend_port))
        self.backend = self.spawn("backend", ["nginx", "-p", str(self.tmp), "-e", "stderr", "-c", str(conf)],
                                  LOAD_CPU)
        for host in ("127.0.0.2", "127.0.0.3"):
            wait_ready(self.backend, host, self.backend_port)

    def check_workers_supported(self) -> bool:
        if self.workers_supported is None:
            conf = self.tmp / "workers-probe.yaml"
            conf.write_text(gateway_conf(self.tmp, "probe", 1, 2, False, 2))
            res = subprocess.run([PYTHON, "-m", "gateway", "validate", "--config", str(conf)],
                                 cwd=self.gateway_dir, capture_output=True, text=True, timeout=60)
            self.workers_supported = res.returncode == 0
            if not self.workers_supported and "workers" not in res.stderr:
                print(f"note: gateway validate failed for another reason:\n{res.stderr}", file=sys.stderr)
        return self.workers_supported

    def start_target(self, name: str, cpus: str = PROXY_CPU, workers: int = 1,
                     label: str | None = None) -> Target:
        label = label or name
        bp = self.backend_port
        if name == "direct":
            return Target(name, "127.0.0.2", bp, None)
        port = free_port("127.0.0.1")
        if name in ("gateway", "gateway-nolog"):
            wk = workers if self.check_workers_supported() else None
            conf = self.tmp / f"{label}.yaml"
            conf.write_text(gateway_conf(self.tmp, label, port, bp, name == "gateway", wk))
            proc = self.spawn(label, [PYTHON, "-m", "gateway", "run", "--config", str(conf),
                                      "--log-level", "warning"], cpus, cwd=self.gateway_dir)
        elif name in ("nginx", "nginx-nolog"):
            conf = self.tmp / f"{label}.conf"
            conf.write_text(nginx_proxy_conf(self.tmp, label, port, bp, name == "nginx", workers))
            proc = self.spawn(label, ["nginx", "-p", str(self.tmp), "-e", "stderr", "-c", str(conf)], cpus)
        elif name == "haproxy":
            conf = self.tmp / f"{label}.cfg"
            conf.write_text(haproxy_conf(port, bp))
            proc = self.spawn(label, ["haproxy", "-db", "-f", str(conf)], cpus)
        elif name in ("aiohttp", "bare"):
            script = "aiohttp_proxy.py" if name == "aiohttp" else "bare_proxy.py"
            proc = self.spawn(label, [PYTHON, str(REPO / "bench" / script),
                                      "--listen", f"127.0.0.1:{port}",
                                      "--backend", f"127.0.0.2:{bp}", "--backend", f"127.0.0.3:{bp}"],
                              cpus)
        else:
            raise BenchError(f"unknown target {name!r}; known: {', '.join(ALL_TARGETS)}")
        target = Target(name, "127.0.0.1", port, proc)
        wait_ready(proc, "127.0.0.1", port, timeout=30)
        return target

    # -- one wrk run

    def run_wrk(self, target: Target, case: Case, duration: float, headers: tuple[str, ...] = ()) -> dict:
        """``headers``: "Name: value" fields every request carries (bench/edge_policy.py's tokens)."""
        measured = target.proc.pid if target.proc is not None else self.backend.pid
        pids = process_tree(measured)
        bpids = process_tree(self.backend.pid)
        argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{case.connections}", f"-d{duration:g}s",
                "--latency", "--timeout", "2s", "-s", str(self.lua)]
        if case.close:
            argv += ["-H", "Connection: close"]
        for header in headers:
            argv += ["-H", header]
        argv.append(f"http://{target.host}:{target.port}{case.path}")
        cpu0 = cpu_ticks(pids)
        bcpu0 = cpu_ticks(bpids)
        core0 = cpu0_times()
        t0 = time.monotonic()
        self.wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            out, _ = self.wrk.communicate(timeout=duration + 20)
        except subprocess.TimeoutExpired:
            self.wrk.kill()
            out, _ = self.wrk.communicate()
            raise BenchError(f"wrk did not finish in {duration + 20:.0f}s:\n{out}")
        finally:
            wall = time.monotonic() - t0
            cpu1 = cpu_ticks(sorted(set(pids) | set(process_tree(measured))))
            bcpu1 = cpu_ticks(bpids)
            core1 = cpu0_times()
        rc, self.wrk = self.wrk.returncode, None
        m = re.search(r"^WRKJSON (\{.*\})$", out, re.M)
        if rc != 0 or not m:
            raise BenchError(f"wrk failed (rc {rc}):\n{out}")
        r = json.loads(m.group(1))
        n = max(r["requests"], 1)
        cpu = cpu_delta_seconds(cpu0, cpu1)
        bcpu = cpu_delta_seconds(bcpu0, bcpu1)
        dur = r["duration_us"] / 1e6
        busy0 = (core1[0] - core0[0]) / CLK_TCK
        others = busy0 - (cpu if target.proc is not None else 0.0)
        return {
            "requests": r["requests"],
            "rps": r["requests"] / dur,
            "p50_us": r["p50"], "p90_us": r["p90"], "p99_us": r["p99"], "p999_us": r["p999"],
            "mean_us": r["mean"], "max_us": r["max"],
            "cpu_us_per_req": cpu * 1e6 / n,
            "cpu_util": cpu / wall,                     # 1.0 = one core fully busy
            "backend_cpu_us_per_req": bcpu * 1e6 / n,
            # CPU 0 (the proxy's core) busy with anything but the target: other users of the machine
            "cpu0_other_util": max(others, 0.0) / wall,
            "cpu0_steal_util": (core1[1] - core0[1]) / CLK_TCK / wall,
            "non2xx": r["status"],
            "socket_errors": {k: r[k] for k in ("connect", "read", "write", "timeout")},
            "bytes": r["bytes"],
            "wrk_output": out if (r["status"] or any(r[k] for k in ("connect", "read", "write", "timeout")))
            else None,
        }


# --------------------------------------------------------------------------- report

def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict], targets: list[str], cases: list[str]) -> dict:
    summary: dict[str, dict[str, dict]] = {}
    for case in cases:
        summary[case] = {}
        for target in targets:
            rs = [r for r in runs if r["case"] == case and r["target"] == target]
            ok = [r for r in rs if "error" not in r]
            row = {"runs": len(ok), "failed_runs": [r["error"] for r in rs if "error" in r]}
            for key in ("rps", "p50_us", "p99_us", "cpu_us_per_req", "cpu_util", "backend_cpu_us_per_req",
                        "cpu0_other_util", "cpu0_steal_util"):
                row[key] = median([r[key] for r in ok])
            if ok:
                row["rps_min"] = min(r["rps"] for r in ok)
                row["rps_max"] = max(r["rps"] for r in ok)
                row["cpu_us_per_req_min"] = min(r["cpu_us_per_req"] for r in ok)
                row["cpu_us_per_req_max"] = max(r["cpu_us_per_req"] for r in ok)
            row["non2xx"] = sum(r["non2xx"] for r in ok)
            row["socket_errors"] = sum(sum(r["socket_errors"].values()) for r in ok)
            row["requests"] = sum(r["requests"] for r in ok)
            summary[case][target] = row
        direct = summary[case].get("direct", {}).get("p50_us")
        for target, row in summary[case].items():
            row["added_p50_us"] = (row["p50_us"] - direct if direct is not None and row["p50_us"] is not None
                                   and target != "direct" else None)
            for ref in ("nginx", "bare", "aiohttp"):
                base = summary[case].get(ref)
                for key, out in (("cpu_us_per_req", f"cpu_x_{ref}"), ("rps", f"rps_x_{ref}")):
                    ok = (base and base.get(key) and row.get(key) is not None and target != "direct")
                    row[out] = row[key] / base[key] if ok else None
    return summary


def fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def render_table(summary: dict, targets: list[str]) -> str:
    head = (f"{'target':<14} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'+p50 µs':>8} {'CPU µs/req':>10} "
            f"{'CPU%':>5} {'CPU×ngx':>7} {'rps×ngx':>7} {'CPU×bare':>8} {'CPU×aio':>7} {'rps×aio':>7} "
            f"{'noise%':>6}  errors")
    lines = []
    for case, rows in summary.items():
        lines.append(f"== {case}: {CASES[case].about}")
        lines.append(head)
        for target in targets:
            row = rows.get(target)
            if row is None:
                continue
            if not row["runs"]:
                reason = row["failed_runs"][0].splitlines()[0] if row["failed_runs"] else "not run"
                lines.append(f"{target:<14} no result: {reason[:90]}")
                continue
            errs = []
            if row["non2xx"]:
                errs.append(f"non-2xx={row['non2xx']}")
            if row["socket_errors"]:
                errs.append(f"socket={row['socket_errors']}")
            if row["failed_runs"]:
                errs.append(f"failed-runs={len(row['failed_runs'])}")
            if row["rps"] < 100:
                errs.append("STALLED? (<100 req/s)")
            cpu = fmt(row["cpu_us_per_req"], ".1f") + ("b" if target == "direct" else "")
            lines.append(
                f"{target:<14} {row['rps']:>8.0f} {row['p50_us'] / 1000:>7.3f} {row['p99_us'] / 1000:>7.3f} "
                f"{fmt(row['added_p50_us'], '+.0f'):>8} {cpu:>10} "
                f"{fmt(row['cpu_util'] and row['cpu_util'] * 100, '.0f'):>5} "
                f"{fmt(row['cpu_x_nginx'], '.2f'):>7} {fmt(row['rps_x_nginx'], '.2f'):>7} "
                f"{fmt(row['cpu_x_bare'], '.2f'):>8} {fmt(row['cpu_x_aiohttp'], '.2f'):>7} {fmt(row['rps_x_aiohttp'], '.2f'):>7} "
                f"{fmt(row['cpu0_other_util'] and row['cpu0_other_util'] * 100, '.0f'):>6}  "
                f"{' '.join(errs) or '-'}")
        lines.append("")
    lines.append("medians over repetitions; b = direct: CPU of the backend nginx (no proxy); "
                 "+p50 = p50 - p50(direct);\n×ngx/×bare/×aio = ratio to nginx/bare/aiohttp (CPU: lower is better); "
                 "CPU% = the target's CPU use (100 = one core); noise% = CPU 0 used by other processes")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Side-by-side proxy benchmark (see bench/README.md)")
    p.add_argument("--quick", action="store_true", help="~1-2 minutes: 1 repetition, 3 s runs")
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 10, --quick 3)")
    p.add_argument("--repeat", type=int, help="repetitions of every case (default 3, --quick 1)")
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                   help=f"comma-separated, from {','.join(ALL_TARGETS)}")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {','.join(CASES)}")
    p.add_argument("--workers", default="1,2",
                   help="gateway worker counts for the scaling table ('' or 'none': skip)")
    p.add_argument("--json", metavar="FILE", help="write every run and the summary as JSON")
    p.add_argument("--no-build", action="store_true", help="do not run setup.py build_ext first")
    p.add_argument("--ref", help="benchmark this git commit (exported to the temp dir and built there) "
                                 "instead of the work tree, which others may be editing")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    p.add_argument("--allocs", type=int, default=20000, metavar="N",
                   help="Python allocations per request over N requests (bench/allocs.py; 0: skip)")
    args = p.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.workers = ([] if args.workers.strip().lower() in ("", "none", "0")
                    else [int(w) for w in args.workers.split(",")])
    for t in args.targets:
        if t not in ALL_TARGETS:
            p.error(f"unknown target {t!r}; known: {', '.join(ALL_TARGETS)}")
    for c in args.cases:
        if c not in CASES:
            p.error(f"unknown case {c!r}; known: {', '.join(CASES)}")
    return args


TOOL_PACKAGES = {"wrk": "wrk", "nginx": "nginx-light", "haproxy": "haproxy", "taskset": "util-linux"}


def check_tools() -> None:
    """Install the missing load generator and reference proxies from the OS packages."""
    missing = [t for t in TOOL_PACKAGES if shutil.which(t) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        packages = sorted({TOOL_PACKAGES[t] for t in missing})
        print(f"installing {' '.join(packages)} with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        missing = [t for t in TOOL_PACKAGES if shutil.which(t) is None]
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)} "
                         f"(apt-get install -y {' '.join(TOOL_PACKAGES[t] for t in missing)})")
    if (os.cpu_count() or 1) < 2:
        raise BenchError("needs 2 CPUs (proxies on CPU 0, wrk and backends on CPU 1)")


def main(argv=None) -> int:
    args = parse_args(argv)
    check_tools()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    bench = Bench(args)
    try:
        if args.ref:
            bench.gateway_dir = export_ref(args.ref, bench.tmp / "src")
        if (args.ref or not args.no_build) and (any(t.startswith("gateway") for t in args.targets)
                                                 or args.workers):
            build_extensions(bench.gateway_dir)
    except BaseException:
        bench.cleanup()
        raise
    info = machine_info(args.ref)
    print("machine: {nproc} CPUs, {cpu_model}, kernel {kernel}".format(**info))
    print(f"versions: {info['nginx']}; {info['haproxy']}; {info['wrk']}; python {info['python']}; "
          f"uvloop {info['uvloop']}; aiohttp {info['aiohttp']}; gateway {info['gateway_commit']}")
    print(f"date: {info['date']}; load average at start: {' '.join(info['loadavg_at_start'])}")
    print(f"runs: {args.repeat} x {len(args.cases)} cases x {len(args.targets)} targets, "
          f"{args.duration:g}s each; proxies pinned to CPU {PROXY_CPU}, wrk + backends to CPU {LOAD_CPU}\n")

    runs: list[dict] = []
    scaling: dict = {}
    allocs = None
    interrupted = False
    try:
        bench.start_backend()
        targets: dict[str, Target] = {}
        for name in args.targets:
            try:
                targets[name] = bench.start_target(name)
            except BenchError as exc:
                print(f"!! {name} did not start: {exc}", file=sys.stderr)
                targets[name] = Target(name, "", 0, None, error=f"did not start: {exc}")
        # warm-up: connections, pools, caches (not measured)
        warm = min(1.0 if args.quick else 2.0, args.duration)
        for name, target in targets.items():
            if target.error is None:
                for case in ("c50-small", "c50-16k"):
                    try:
                        bench.run_wrk(target, CASES[case], warm)
                    except BenchError as exc:
                        print(f"!! warm-up {name} {case}: {exc}", file=sys.stderr)

        total = args.repeat * len(args.cases) * len(targets)
        done = 0
        order = list(targets)
        for rep in range(args.repeat):
            rotated = order[rep % len(order):] + order[:rep % len(order)]   # vary who goes first
            for case_name in args.cases:
                case = CASES[case_name]
                for name in rotated:
                    target = targets[name]
                    done += 1
                    run = {"rep": rep, "case": case_name, "target": name}
                    if target.error is not None:
                        run["error"] = target.error
                        runs.append(run)
                        continue
                    try:
                        run.update(bench.run_wrk(target, case, args.duration))
                    except BenchError as exc:
                        run["error"] = str(exc)
                    if target.proc is not None and not target.proc.alive():
                        target.error = (f"exited with {target.proc.popen.returncode} during {case_name}:\n"
                                        f"{target.proc.log_tail()}")
                        run.setdefault("error", target.error)
                        print(f"!! {name} died: {target.error}", file=sys.stderr)
                    runs.append(run)
                    if "error" in run:
                        print(f"[{done:>3}/{total}] rep {rep + 1} {case_name:<14} {name:<14} "
                              f"ERROR {run['error'].splitlines()[0][:100]}", flush=True)
                    else:
                        errs = run["non2xx"] + sum(run["socket_errors"].values())
                        print(f"[{done:>3}/{total}] rep {rep + 1} {case_name:<14} {name:<14} "
                              f"{run['rps']:>8.0f} req/s  p50 {run['p50_us'] / 1000:6.3f} ms  "
                              f"p99 {run['p99_us'] / 1000:6.3f} ms  {run['cpu_us_per_req']:6.1f} µs/req  "
                              f"cpu {run['cpu_util'] * 100:3.0f}%  noise {run['cpu0_other_util'] * 100:3.0f}%" + (f"  ERRORS {errs}" if errs else ""),
                              flush=True)
                        if run["wrk_output"]:
                            print("    " + "\n    ".join(l for l in run["wrk_output"].splitlines()
                                                         if "error" in l.lower() or "Non-2xx" in l))
                    time.sleep(0.5)
        for target in targets.values():
            if target.proc is not None:
                bench.stop(target.proc)

        if args.workers:
            scaling = run_scaling(bench, args)
        # Before cleanup: a --ref export lives in the temp dir.
        allocs = run_allocs(bench.gateway_dir, args.allocs) if args.allocs else None
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping everything", file=sys.stderr)
    finally:
        bench.cleanup()

    info["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    summary = summarize(runs, args.targets, args.cases)
    print(f"\nload average at end: {' '.join(info['loadavg_at_end'])}")
    print(render_table(summary, args.targets))
    if scaling:
        print()
        print(render_scaling(scaling))
    if allocs:
        print("\nPython allocations per proxied keep-alive request (bench/allocs.py, "
              f"{allocs['requests']} requests): gateway {allocs['gateway']['allocs_per_request']:.1f}, "
              f"gateway-nolog {allocs['gateway-nolog']['allocs_per_request']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": info, "settings": {"duration_s": args.duration, "repeat": args.repeat,
                                          "targets": args.targets, "cases": args.cases,
                                          "target_about": {t: TARGET_ABOUT[t] for t in args.targets},
                                          "proxy_cpu": PROXY_CPU, "load_cpu": LOAD_CPU},
            "summary": summary, "scaling": scaling, "allocs": allocs, "runs": runs,
            "interrupted": interrupted},
            indent=1, default=str))
        print(f"\nwrote {args.json}")
    return 130 if interrupted else 0


def run_allocs(src: Path, requests: int) -> dict | None:
    """bench/allocs.py (this tree's) against the build in ``src`` (the tree or a --ref export):
    deterministic, so it runs after the timed runs, on any CPU."""
    out = Path(tempfile.mkdtemp(prefix="gwallocs-")) / "allocs.json"
    try:
        res = subprocess.run([PYTHON, str(REPO / "bench" / "allocs.py"), "--src", str(src),
                              "--requests", str(requests), "--json", str(out)],
                             capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            print(f"!! allocs.py failed:\n{res.stderr[-2000:]}", file=sys.stderr)
            return None
        return json.loads(out.read_text())
    except subprocess.TimeoutExpired:
        print("!! allocs.py did not finish in 600 s", file=sys.stderr)
        return None
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def run_scaling(bench: Bench, args) -> dict:
    """Gateway (access log off) with 1 and 2 workers, nginx with 1 and 2 worker_processes as reference.

    Both may use both CPUs here (taskset -c 0,1); wrk stays on CPU 1, so expect limited scaling
    on a 2-core machine: the figure is what one more worker buys when it has to share.
    """
    print("\n-- multi-worker scaling (c50-small, proxies on CPUs 0-1, wrk on CPU 1)")
    if not bench.check_workers_supported():
        print("skipped: workers not supported yet (gateway validate rejects `workers`)")
        return {"skipped": "workers not supported yet"}
    case = CASES["c50-small"]
    results: dict[str, dict[int, list[dict]]] = {"gateway-nolog": {}, "nginx-nolog": {}}
    for rep in range(args.repeat):
        for workers in args.workers:
            for name in results:
                label = f"scale-{name}-w{workers}"
                try:
                    target = bench.start_target(name, cpus="0,1", workers=workers, label=label)
                except BenchError as exc:
                    results[name].setdefault(workers, []).append({"error": str(exc)})
                    print(f"!! {label}: {exc}", file=sys.stderr)
                    continue
                try:
                    bench.run_wrk(target, case, min(1.0 if args.quick else 2.0, args.duration))  # warm-up
                    r = bench.run_wrk(target, case, args.duration)
                    r["processes"] = len(process_tree(target.proc.pid))
                except BenchError as exc:
                    r = {"error": str(exc)}
                finally:
                    bench.stop(target.proc)
                results[name].setdefault(workers, []).append(r)
                if "error" in r:
                    print(f"   {label}: ERROR {r['error'].splitlines()[0][:100]}")
                else:
                    print(f"   {label}: {r['rps']:.0f} req/s, {r['cpu_us_per_req']:.1f} µs/req, "
                          f"cpu {r['cpu_util'] * 100:.0f}%, {r['processes']} processes, "
                          f"errors {r['non2xx'] + sum(r['socket_errors'].values())}", flush=True)
                time.sleep(0.5)
    out = {}
    for name, by_workers in results.items():
        out[name] = {}
        for workers, rs in by_workers.items():
            ok = [r for r in rs if "error" not in r]
            out[name][workers] = {
                "rps": median([r["rps"] for r in ok]), "cpu_us_per_req": median([r["cpu_us_per_req"] for r in ok]),
                "cpu_util": median([r["cpu_util"] for r in ok]), "p99_us": median([r["p99_us"] for r in ok]),
                "errors": sum(r["non2xx"] + sum(r["socket_errors"].values()) for r in ok),
                "failed_runs": [r["error"] for r in rs if "error" in r]}
    return out


def render_scaling(scaling: dict) -> str:
    if "skipped" in scaling:
        return f"multi-worker scaling: skipped: {scaling['skipped']}"
    lines = ["multi-worker scaling (c50-small; proxies may use CPUs 0-1, wrk + backends on CPU 1; report only)",
             f"{'target':<14} {'workers':>7} {'req/s':>8} {'×1 worker':>9} {'p99 ms':>7} {'CPU µs/req':>10} "
             f"{'CPU%':>5}  errors"]
    for name, by_workers in scaling.items():
        base = by_workers.get(min(by_workers), {}).get("rps") if by_workers else None
        for workers, row in sorted(by_workers.items()):
            if row["rps"] is None:
                lines.append(f"{name:<14} {workers:>7} no result: {(row['failed_runs'] or ['?'])[0][:80]}")
                continue
            lines.append(f"{name:<14} {workers:>7} {row['rps']:>8.0f} {fmt(base and row['rps'] / base, '.2f'):>9} "
                         f"{row['p99_us'] / 1000:>7.3f} {row['cpu_us_per_req']:>10.1f} "
                         f"{row['cpu_util'] * 100:>5.0f}  {row['errors'] or '-'}")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(2)
