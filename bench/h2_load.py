"""HTTP/2 and gRPC side by side: h2load and a grpcio client through nginx and the gateway, on one
machine.

    python bench/h2_load.py                      # 5 s per case, 2 repetitions (quiet machine only)
    python bench/h2_load.py --duration 1 --repeat 1 --cases c1-m1    # a quick check that it runs
    python bench/h2_load.py --ref 4e1f2a0            # also that commit's gateway, in the same runs

Layout as bench/run.py: the proxy on CPU 0, load and backends on CPU 1.  HTTP/2 cases:
h2load with prior knowledge (h2c) to the proxy, which speaks HTTP/1.1 to an nginx backend
(a 13-byte file); ``cN-mM`` is N connections with M concurrent streams each.  gRPC: unary
calls of gateway.devcluster.grpc_backend through ``grpc_pass`` by a grpcio client with 50
calls in flight (nginx ``grpc_pass``; the gateway's service ``protocol: h2c``); ``grpc-bidi``:
its bidirectional streaming Echo, 10 calls held open with 8 messages in flight each (a line's
"req" is then a message echoed).  CPU per request is the proxy's utime+stime over the
requests it served.  Access logs are off on both, as in the issue's figures
(``--access-log``: the gateway writes its JSON access log to a file, nginx's stays off: the
conservative line of earlier runs, ~10% more user-space instructions per HTTP/2 request).
nginx keeps up to 1,024 idle upstream connections:
10 x 100 streams need ~1,000 at once, and with 64 it reconnected all the time (49 us per
request against ~28), a handicapped baseline.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (NGINX_COMMON, NGINX_HTTP_COMMON, PYTHON, BenchError, Proc,  # noqa: E402
                       backend_conf, build_extensions, export_ref, free_port, gateway_access_log, measure)

CASES = {"c1-m1": (1, 1), "c1-m100": (1, 100), "c10-m100": (10, 100)}
BODY = b"hello, world\n"


def nginx_h2_conf(tmp: Path, port: int, backend_port: int, grpc_address: str) -> str:
    return (f"daemon off;\nmaster_process on;\nuser root;\nworker_processes 1;\npid {tmp}/h2.pid;\n"
            + NGINX_COMMON.format() + "http {\n" + NGINX_HTTP_COMMON.format(tmp=tmp) + f"""    access_log off;
    http2_max_concurrent_streams 128;
    upstream backends {{
        server 127.0.0.2:{backend_port};
        keepalive 1024;
    }}
    upstream grpc_backends {{
        server {grpc_address};
        keepalive 1024;
    }}
    server {{
        listen 127.0.0.1:{port} http2 backlog=4096;
        location /gateway.test.Echo/ {{
            grpc_pass grpc://grpc_backends;
        }}
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")


def gateway_h2_conf(tmp: Path, port: int, backend_port: int, grpc_address: str, idle_pool: int | None = None,
                    name: str = "gateway-h2", access_log: bool = False) -> str:
    """The gateway as nginx above: HTTP/1.1 to the file backend, h2c to the gRPC pod.
    ``idle_pool``: its limits.max_idle_upstream_connections (None: the default)."""
    limits = {"max_requests_per_connection": 100_000_000}           # as nginx's keepalive_requests
    if idle_pool is not None:
        limits["max_idle_upstream_connections"] = idle_pool
    return yaml.safe_dump({
        "listen": f"127.0.0.1:{port}", "admin": "off", "timeouts": {"drain": "2s"}, "limits": limits,
        "access_log": gateway_access_log(tmp, name, access_log),
        "sources": [{"name": "bench", "type": "static", "services": [
            {"name": "backend", "namespace": "default", "endpoints": [f"127.0.0.2:{backend_port}"]},
            {"name": "echo", "namespace": "default", "endpoints": [grpc_address]}]}],
        "services": [{"name": "backend", "namespace": "default", "port": backend_port},
                     {"name": "echo", "namespace": "default", "port": int(grpc_address.rsplit(":", 1)[1]),
                      "protocol": "h2c"}],
        "routes": [{"name": "grpc", "match": {"path": {"prefix": "/gateway.test.Echo/"}},
                    "service": "default/echo"},
                   {"name": "all", "match": {"path": {"prefix": "/"}}, "service": "default/backend"}],
    }, sort_keys=False)


def wait_h2c(proc: Proc, port: int) -> None:
    deadline = time.monotonic() + 20
    while not speaks_h2c(port):
        if time.monotonic() > deadline or not proc.alive():
            raise BenchError(f"{proc.name} does not answer h2c:\n{proc.log_tail()}")
        time.sleep(0.1)


def h2load(port: int, connections: int, streams: int, duration: float) -> int:
    """Requests h2load completed with 2xx in ``duration`` seconds."""
    out = subprocess.run(
        ["taskset", "-c", "1", "h2load", "-c", str(connections), "-m", str(streams),
         "-D", str(int(duration)), f"http://127.0.0.1:{port}/small"],
        capture_output=True, text=True, timeout=duration + 30)
    match = re.search(r"status codes: (\d+) 2xx", out.stdout)
    if out.returncode or not match:
        raise BenchError(f"h2load failed: {out.stdout[-800:]}{out.stderr[-400:]}")
    return int(match.group(1))


def grpc_unary(port: int, duration: float, in_flight: int = 50) -> int:
    """Unary calls answered through the proxy in ``duration`` seconds, ``in_flight`` at a time."""
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary("/gateway.test.Echo/Unary", request_serializer=bytes,
                               response_deserializer=bytes)
    done = 0
    lock = threading.Lock()
    stop = time.monotonic() + duration
    slots = threading.Semaphore(in_flight)

    def finished(future) -> None:
        nonlocal done
        if future.exception() is None:
            with lock:
                done += 1
        slots.release()

    while time.monotonic() < stop:
        slots.acquire()
        call.future(b"x", timeout=10).add_done_callback(finished)
    for _ in range(in_flight):
        slots.acquire()
    channel.close()
    return done


def grpc_bidi(port: int, duration: float, calls: int = 10, window: int = 8) -> int:
    """Messages echoed through the proxy in ``duration`` seconds on ``calls`` bidirectional
    streams (one gRPC call each, held open), each with ``window`` messages in flight."""
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.stream_stream("/gateway.test.Echo/Bidi", request_serializer=bytes,
                                 response_deserializer=bytes)
    stop = time.monotonic() + duration
    counts = [0] * calls
    errors: list[BaseException] = []

    def one_call(i: int) -> None:
        room = threading.Semaphore(window)

        def requests():
            while time.monotonic() < stop:
                room.acquire()
                yield b"x"

        try:
            for _ in call(requests(), timeout=duration + 30):
                counts[i] += 1
                room.release()
        except BaseException as exc:        # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=one_call, args=(i,)) for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.close()
    if errors:
        raise BenchError(f"grpc-bidi: {errors[0]!r}")
    return sum(counts)


def speaks_h2c(port: int) -> bool:
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
                          "--max-time", "3", f"http://127.0.0.1:{port}/small"], capture_output=True, text=True)
    return out.stdout == "200"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--no-grpc", action="store_true", help="skip the grpcio unary case")
    parser.add_argument("--access-log", action="store_true",
                        help="the gateways write their JSON access log to a file (nginx's stays off)")
    parser.add_argument("--also-idle-pool", type=int, metavar="N",
                        help="a second gateway beside, keeping N idle upstream connections per endpoint")
    parser.add_argument("--ref", help="also measure the gateway of these commits (comma-separated; each "
                                      "exported and built in the temp dir)")
    args = parser.parse_args(argv)
    for tool in ("nginx", "h2load", "taskset", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/h2_load.py needs {tool} (apt install nginx-light nghttp2-client util-linux curl)")
    from gateway.devcluster.grpc_backend import GrpcBackendProcess

    tmp = Path(tempfile.mkdtemp(prefix="bench-h2-"))
    (tmp / "www").mkdir()
    (tmp / "www" / "small").write_bytes(BODY)
    procs: list[Proc] = []
    grpc_pod = GrpcBackendProcess("127.0.0.3", 0, "b", "echo-b-0").start()
    try:
        backend_port = free_port("127.0.0.2", "127.0.0.3")
        conf = tmp / "backend.conf"
        conf.write_text(backend_conf(tmp, backend_port))
        procs.append(Proc("backend", ["taskset", "-c", "1", "nginx", "-p", str(tmp), "-e", "stderr",
                                      "-c", str(conf)], tmp))
        targets = {}
        port = free_port("127.0.0.1")
        conf = tmp / "h2.conf"
        conf.write_text(nginx_h2_conf(tmp, port, backend_port, grpc_pod.address))
        targets["nginx"] = (Proc("nginx-h2", ["taskset", "-c", "0", "nginx", "-p", str(tmp), "-e", "stderr",
                                              "-c", str(conf)], tmp), port)
        port = free_port("127.0.0.1")
        conf = tmp / "gateway-h2.yaml"
        conf.write_text(gateway_h2_conf(tmp, port, backend_port, grpc_pod.address, access_log=args.access_log))
        targets["gateway"] = (Proc("gateway-h2", ["taskset", "-c", "0", PYTHON, "-m", "gateway", "run",
                                                  "--config", str(conf), "--log-level", "warning"], tmp,
                                   cwd=Path(__file__).resolve().parent.parent), port)
        for i, ref in enumerate(filter(None, (args.ref or "").split(","))):
            src = export_ref(ref, tmp / f"ref-{i}")
            build_extensions(src)
            name, port = f"gw@{ref[:7]}", free_port("127.0.0.1")
            conf = tmp / f"gw-ref-{i}.yaml"
            conf.write_text(gateway_h2_conf(tmp, port, backend_port, grpc_pod.address, name=f"gw-ref-{i}",
                                            access_log=args.access_log))
            targets[name] = (Proc(name, ["taskset", "-c", "0", PYTHON, "-m", "gateway", "run", "--config",
                                         str(conf), "--log-level", "warning"], tmp, cwd=src), port)
        if args.also_idle_pool is not None:
            name, port = f"gw-pool{args.also_idle_pool}", free_port("127.0.0.1")
            conf = tmp / f"{name}.yaml"
            conf.write_text(gateway_h2_conf(tmp, port, backend_port, grpc_pod.address, args.also_idle_pool, name,
                                            args.access_log))
            targets[name] = (Proc(name, ["taskset", "-c", "0", PYTHON, "-m", "gateway", "run", "--config", str(conf),
                                         "--log-level", "warning"], tmp, cwd=Path(__file__).resolve().parent.parent),
                             port)
        procs += [proc for proc, _ in targets.values()]
        for proc, port in targets.values():
            wait_h2c(proc, port)
        print(f"{'target':<10} {'case':<10} {'req/s':>9} {'CPU us/req':>11}")
        runs = [(case, *CASES[case]) for case in filter(None, args.cases.split(","))]   # "": gRPC only
        for case, connections, streams in runs:
            for _ in range(args.repeat):
                for name, (proc, port) in targets.items():      # side by side, alternating
                    n, cpu = measure(proc, lambda: h2load(port, connections, streams, args.duration))
                    print(f"{name:<10} {case:<10} {n / args.duration:>9.0f} {cpu / n * 1e6:>11.1f}")
        for case, run in ((("grpc-c50", grpc_unary), ("grpc-bidi", grpc_bidi)) if not args.no_grpc else ()):
            for _ in range(args.repeat):
                for name, (proc, port) in targets.items():
                    n, cpu = measure(proc, lambda: run(port, args.duration))
                    print(f"{name:<10} {case:<10} {n / args.duration:>9.0f} {cpu / n * 1e6:>11.1f}")
    finally:
        for proc in reversed(procs):
            proc.stop()
        grpc_pod.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
