"""User-space instructions per request, counted by callgrind: the gateway beside nginx (and
other commits of the gateway), one case at a time, deterministic to a fraction of a percent.

    python bench/instructions.py                       # every case, this tree and nginx
    python bench/instructions.py --ref b677411         # also that commit's gateway
    python bench/instructions.py --cases h2-c1-m1 --requests 500    # a quick check that it runs

CPU time on this VM moves 5-10% between runs (bench/h2_load.py needs medians of several to
see a 5% change); an instruction count does not.  It leaves out the kernel (syscalls,
loopback TCP) and how fast the instructions run (cache misses), so it says where the user-space
work is, not what a request costs: read it beside bench/h2_load.py's and bench/tls.py's times.

Each proxy runs under ``valgrind --tool=callgrind --instr-atstart=no``: nothing is counted
while it starts; ``callgrind_control`` zeroes the counters after a warm-up, turns counting on
for one h2load run and dumps.  Cases (h2load with prior knowledge to the proxy, as
bench/h2_load.py, access logs off on both):

* ``h2-c1-m1``, ``h2-c1-m100``: GET of a 13-byte file from an nginx backend over HTTP/1.1,
  one stream at a time and 100 at a time on one connection;
* ``grpc-c1-m1``: a gRPC unary call (a 2-byte message) to gateway.devcluster.grpc_backend,
  the gateway's service ``protocol: h2c``, nginx's ``grpc_pass``;
* ``h1-c1``: HTTP/1.1 keep-alive, one connection (the gateway only: nginx's port here speaks
  HTTP/2 alone);
* ``tls1.2-resumed``, ``tls1.2-full``, ``tls1.3-resumed``, ``tls1.3-full``: ``openssl s_time``
  (``-reuse`` or ``-new``, one GET per connection, bench/tls.py's certificate, ciphers and
  nginx settings: tickets, no session cache) for ``--tls-seconds``; per connection.

Needs valgrind (``apt install valgrind``), nginx and h2load as bench/h2_load.py.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.h2_load import BODY, gateway_h2_conf, nginx_h2_conf, speaks_h2c  # noqa: E402
from bench.run import (PYTHON, BenchError, Proc, backend_conf, build_extensions,  # noqa: E402
                       export_ref, free_port)
from bench.tls import CIPHERS, certificate  # noqa: E402

GRPC_MESSAGE = b"\x00\x00\x00\x00\x02hi"        # uncompressed, 2 bytes: the Echo takes any bytes
GRPC_HEADERS = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
CASES = {                           # name: (h2load options, path, x requests, with the gRPC message)
    "h2-c1-m1": (["-c1", "-m1"], "/small", 1, False),
    "h2-c1-m100": (["-c1", "-m100"], "/small", 10, False),
    "grpc-c1-m1": (["-c1", "-m1", *GRPC_HEADERS], "/gateway.test.Echo/Unary", 1, True),
    "h1-c1": (["--h1", "-c1"], "/small", 2, False),
}
GATEWAY_ONLY = {"h1-c1"}
TLS_CASES = {"tls1.2-resumed": ("1.2", True), "tls1.2-full": ("1.2", False),   # name: (version, resumed)
             "tls1.3-resumed": ("1.3", True), "tls1.3-full": ("1.3", False)}


class Counted:
    """A proxy under callgrind; ``count`` runs h2load and gives instructions per request."""

    def __init__(self, name: str, argv: list[str], port: int, tls_port: int, tmp: Path,
                 cwd: Path | None = None) -> None:
        self.name, self.port, self.tls_port, self.tmp = name, port, tls_port, tmp
        self.out = tmp / f"{name.replace('@', '-')}.callgrind"
        self.proc = Proc(name, ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                f"--callgrind-out-file={self.out}.%p", *argv], tmp, cwd=cwd)
        deadline = time.monotonic() + 180            # (slower to start under valgrind)
        while not speaks_h2c(port):
            if time.monotonic() > deadline or not self.proc.alive():
                raise BenchError(f"{name} does not answer h2c:\n{self.proc.log_tail()}")
            time.sleep(0.5)

    def control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.proc.pid)], check=True,
                       capture_output=True, timeout=120)

    def count(self, options: list[str], url_path: str, requests: int, data: Path | None) -> float:
        """``data``: the request body (h2load then POSTs it)."""
        argv = ["h2load", *options, *(["-d", str(data)] if data else []),
                f"http://127.0.0.1:{self.port}{url_path}"]
        h2load([*argv[:1], "-n", "300", *argv[1:]])                  # warm-up, not counted
        return self.counted(lambda: h2load([*argv[:1], "-n", str(requests), *argv[1:]]) or requests)

    def count_tls(self, version: str, resumed: bool, seconds: int) -> float:
        s_time(self.tls_port, version, resumed, 1)                      # warm-up, not counted
        return self.counted(lambda: s_time(self.tls_port, version, resumed, seconds))

    def counted(self, run) -> float:
        """Instructions per request of ``run()``, which returns its requests."""
        before = set(self.tmp.glob(f"{self.out.name}.*"))
        self.control("--zero")
        self.control("--instr=on")
        requests = run()
        self.control("--instr=off")
        self.control("--dump")
        dumps = sorted(set(self.tmp.glob(f"{self.out.name}.*")) - before)
        if not dumps:
            raise BenchError(f"{self.name}: callgrind wrote no dump")
        return total_instructions(dumps[-1]) / requests


def h2load(argv: list[str]) -> None:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out.stdout)
    if out.returncode or not done or done.group(1) != done.group(3):
        raise BenchError(f"h2load failed: {' '.join(argv)}\n{out.stdout[-800:]}{out.stderr[-400:]}")


def s_time(port: int, version: str, resumed: bool, seconds: int) -> int:
    """Connections ``openssl s_time`` made (a handshake and a GET each) in ``seconds``."""
    out = subprocess.run(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-reuse" if resumed else "-new",
                          f"-tls{version.replace('.', '_')}", *CIPHERS[version], "-time", str(seconds),
                          "-www", "/small"], capture_output=True, text=True, timeout=seconds + 120)
    done = re.findall(r"(\d+) connections in [\d.]+s", out.stdout)
    if out.returncode or not done:
        raise BenchError(f"s_time failed: {out.stdout[-600:]}{out.stderr[-400:]}")
    return int(done[-1])


def total_instructions(dump: Path) -> int:
    """The dump's ``totals:`` line (its ``summary:`` may read 0): instructions counted since
    the zeroing."""
    text = dump.read_text(errors="replace")
    match = re.search(r"^totals: (\d+)", text, re.M)
    if match is None:
        raise BenchError(f"{dump}: no totals line")
    return int(match.group(1))


def nginx_conf(tmp: Path, port: int, tls_port: int, backend_port: int, grpc_address: str, cert: Path,
               key: Path) -> str:
    """bench/h2_load.py's nginx in one process (a master's worker would be the one to count),
    with bench/tls.py's HTTPS server beside (tickets, no session cache, as the gateway)."""
    conf = nginx_h2_conf(tmp, port, backend_port, grpc_address).replace("master_process on;",
                                                                        "master_process off;")
    https = f"""    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache none;
        ssl_session_tickets on;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    return conf[:conf.rstrip().rindex("}")] + https


def gateway_conf(tmp: Path, name: str, port: int, tls_port: int, backend_port: int, grpc_address: str,
                 cert: Path, key: Path) -> str:
    """bench/h2_load.py's gateway with an HTTPS listener as bench/tls.py's."""
    conf = yaml.safe_load(gateway_h2_conf(tmp, port, backend_port, grpc_address, name=name.replace("@", "-")))
    conf["tls"] = {"listen": f"127.0.0.1:{tls_port}", "certificates": [{"cert": str(cert), "key": str(key)}]}
    return yaml.safe_dump(conf, sort_keys=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join([*CASES, *TLS_CASES]))
    parser.add_argument("--requests", type=int, default=2000, help="per case (x10 at 100 streams)")
    parser.add_argument("--tls-seconds", type=int, default=10, help="per TLS case (s_time's -time)")
    parser.add_argument("--ref", help="also count the gateway of these commits (comma-separated; each "
                                      "exported and built in the temp dir)")
    args = parser.parse_args(argv)
    for tool in ("valgrind", "callgrind_control", "nginx", "h2load", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/instructions.py needs {tool} "
                             "(apt install valgrind nginx-light nghttp2-client openssl)")
    from gateway.devcluster.grpc_backend import GrpcBackendProcess

    tmp = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    (tmp / "www").mkdir()
    (tmp / "www" / "small").write_bytes(BODY)
    data = tmp / "message.grpc"
    data.write_bytes(GRPC_MESSAGE)
    cert, key = certificate(tmp)
    procs: list[Proc] = []
    grpc_pod = GrpcBackendProcess("127.0.0.3", 0, "b", "echo-b-0").start()
    try:
        backend_port = free_port("127.0.0.2", "127.0.0.3")
        (tmp / "backend.conf").write_text(backend_conf(tmp, backend_port))
        procs.append(Proc("backend", ["nginx", "-p", str(tmp), "-e", "stderr", "-c", str(tmp / "backend.conf")],
                          tmp))
        sources = {"gateway": Path(__file__).resolve().parent.parent}
        for i, ref in enumerate(filter(None, (args.ref or "").split(","))):
            sources[f"gw@{ref[:7]}"] = export_ref(ref, tmp / f"ref-{i}")
            build_extensions(sources[f"gw@{ref[:7]}"])
        targets: list[Counted] = []
        port, tls_port = free_port("127.0.0.1"), free_port("127.0.0.1")
        (tmp / "h2.conf").write_text(nginx_conf(tmp, port, tls_port, backend_port, grpc_pod.address, cert, key))
        targets.append(Counted("nginx", ["nginx", "-p", str(tmp), "-e", "stderr", "-c", str(tmp / "h2.conf")],
                               port, tls_port, tmp))
        for name, src in sources.items():
            port, tls_port = free_port("127.0.0.1"), free_port("127.0.0.1")
            conf = tmp / f"{name.replace('@', '-')}.yaml"
            conf.write_text(gateway_conf(tmp, name, port, tls_port, backend_port, grpc_pod.address, cert, key))
            targets.append(Counted(name, [PYTHON, "-m", "gateway", "run", "--config", str(conf),
                                          "--log-level", "warning"], port, tls_port, tmp, cwd=src))
        procs += [target.proc for target in targets]
        names = [target.name for target in targets]
        print(f"{'case':<15}" + "".join(f"{name:>14}" for name in names) + "   instructions per request")
        for case in filter(None, args.cases.split(",")):
            if case in TLS_CASES:
                counts = [target.count_tls(*TLS_CASES[case], args.tls_seconds) for target in targets]
            else:
                options, url_path, times, with_message = CASES[case]
                counts = [None if case in GATEWAY_ONLY and target.name == "nginx"
                          else target.count(options, url_path, args.requests * times,
                                            data if with_message else None)
                          for target in targets]
            nginx = counts[0]
            cells = [f"{'-':>14}" if n is None else
                     f"{n:>8.0f}" + (f" {n / nginx:>4.2f}x" if nginx and target.name != "nginx" else " " * 6)
                     for n, target in zip(counts, targets)]
            print(f"{case:<15}" + "".join(cells), flush=True)
    finally:
        for proc in reversed(procs):
            proc.stop()
        grpc_pod.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
