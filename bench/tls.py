"""HTTPS side by side: the gateway and nginx terminating TLS in front of the same backend.

    python bench/tls.py                          # 5 s per case, 2 repetitions (quiet machine only)
    python bench/tls.py --duration 1 --repeat 1 --cases full-1.3     # a quick check that it runs
    python bench/tls.py --ref 45d6811            # also that commit's gateway, in the same runs

Layout as bench/run.py: each proxy on CPU 0 (nginx with one worker, the gateway with
``workers: 1``), clients and the nginx backend (a 13-byte file) on CPU 1. Both present the
same ECDSA P-256 certificate, and the clients ask for one cipher (TLS 1.3 TLS_AES_128_GCM_SHA256,
TLS 1.2 ECDHE-ECDSA-AES128-GCM-SHA256): neither server's preference decides it. Cases:

* ``keepalive``: h2load, HTTP/1.1 over TLS (ALPN http/1.1), 50 connections kept open;
* ``full-1.3``, ``full-1.2``: ``openssl s_time -new``: a full handshake and one GET per
  connection, one connection at a time;
* ``resumed-1.3``, ``resumed-1.2``: ``openssl s_time -reuse``: the same with the first
  connection's session resumed (a TLS 1.3 ticket; a TLS 1.2 ticket).

Each line is CPU us of the proxy's processes per request (per connection for the handshake
cases). Access logs are off on both (``--access-log``: the gateway writes its JSON access
log to a file, nginx's stays off, the conservative line of earlier runs).  Both resume
sessions by tickets; ``nginx`` also keeps a shared session cache (``ssl_session_cache
shared``: every new session stored, a TLS 1.3 resumption's too), ``nginx-tkt`` does not
(nginx's default, ``none``, and the gateway's way): like with like.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (NGINX_COMMON, NGINX_HTTP_COMMON, PROXY_CPU, PYTHON, BenchError, Proc,  # noqa: E402
                       backend_conf, build_extensions, export_ref, free_port, gateway_access_log,
                       gateway_on_cpu0, measure, wait_answering)

BODY = b"hello, world\n"
CIPHERS = {"1.3": ["-ciphersuites", "TLS_AES_128_GCM_SHA256"], "1.2": ["-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]}
CASES = ("keepalive", "full-1.3", "full-1.2", "resumed-1.3", "resumed-1.2")


def certificate(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "server.pem", tmp / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=bench.test", "-addext", "subjectAltName=DNS:bench.test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def nginx_conf(tmp: Path, port: int, backend_port: int, cert: Path, key: Path, cache: bool = True,
               name: str = "tls") -> str:
    """``cache``: a shared session cache beside the tickets (else ``none``, nginx's default,
    as the gateway: tickets are the only resumption)."""
    return (f"daemon off;\nmaster_process on;\nuser root;\nworker_processes 1;\npid {tmp}/{name}.pid;\n"
            + NGINX_COMMON.format() + "http {\n" + NGINX_HTTP_COMMON.format(tmp=tmp) + f"""    access_log off;
    upstream backends {{
        server 127.0.0.2:{backend_port};
        keepalive 1024;
    }}
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache {"shared:SSL:10m" if cache else "none"};
        ssl_session_tickets on;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")


def gateway_conf(tmp: Path, port: int, backend_port: int, cert: Path, key: Path, name: str = "gateway-tls",
                 access_log: bool = False) -> str:
    return yaml.safe_dump({
        "listen": f"127.0.0.1:{free_port('127.0.0.1')}", "admin": "off", "workers": 1,
        "timeouts": {"drain": "2s"}, "limits": {"max_requests_per_connection": 100_000_000},
        "tls": {"listen": f"127.0.0.1:{port}", "certificates": [{"cert": str(cert), "key": str(key)}]},
        "access_log": gateway_access_log(tmp, name, access_log),
        "sources": [{"name": "bench", "type": "static", "services": [
            {"name": "backend", "namespace": "default", "endpoints": [f"127.0.0.2:{backend_port}"]}]}],
        "services": [{"name": "backend", "namespace": "default", "port": backend_port}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "default/backend"}],
    }, sort_keys=False)


def s_time(port: int, version: str, reuse: bool, duration: float, server_name: str | None = None) -> int:
    """Connections ``openssl s_time`` completed (a handshake and GET /small each) in ``duration``."""
    sni = ["-servername", server_name] if server_name else []
    out = subprocess.run(["taskset", "-c", "1", "openssl", "s_time", "-connect", f"127.0.0.1:{port}", *sni,
                          "-reuse" if reuse else "-new", f"-tls{version.replace('.', '_')}", *CIPHERS[version],
                          "-time", str(int(duration)), "-www", "/small"],
                         capture_output=True, text=True, timeout=duration + 30)
    match = re.search(r"(\d+) connections in [\d.]+s", out.stdout)
    if out.returncode or not match:
        raise BenchError(f"s_time failed: {out.stdout[-600:]}{out.stderr[-400:]}")
    return int(match.group(1))


def h2load_keepalive(port: int, duration: float) -> int:
    out = subprocess.run(["taskset", "-c", "1", "h2load", "--h1", "-c", "50", "-D", str(int(duration)),
                          "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256", "--tls13-ciphers", "TLS_AES_128_GCM_SHA256",
                          f"https://127.0.0.1:{port}/small"], capture_output=True, text=True, timeout=duration + 30)
    match = re.search(r"status codes: (\d+) 2xx", out.stdout)
    if out.returncode or not match:
        raise BenchError(f"h2load failed: {out.stdout[-800:]}{out.stderr[-400:]}")
    return int(match.group(1))


def run_case(case: str, port: int, duration: float) -> int:
    if case == "keepalive":
        return h2load_keepalive(port, duration)
    kind, version = case.split("-")
    return s_time(port, version, kind == "resumed", duration)


def answers(port: int) -> bool:
    out = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
                          f"https://127.0.0.1:{port}/small"], capture_output=True, text=True)
    return out.stdout == "200"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--access-log", action="store_true",
                        help="the gateways write their JSON access log to a file (nginx's stays off)")
    parser.add_argument("--ref", help="also measure the gateway of these commits (comma-separated; each "
                                      "exported and built in the temp dir)")
    args = parser.parse_args(argv)
    for tool in ("nginx", "h2load", "taskset", "curl", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/tls.py needs {tool} (apt install nginx-light nghttp2-client util-linux curl openssl)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    (tmp / "www").mkdir()
    (tmp / "www" / "small").write_bytes(BODY)
    cert, key = certificate(tmp)
    procs: list[Proc] = []
    try:
        backend_port = free_port("127.0.0.2")
        conf = tmp / "backend.conf"
        conf.write_text(backend_conf(tmp, backend_port))
        procs.append(Proc("backend", ["taskset", "-c", "1", "nginx", "-p", str(tmp), "-e", "stderr",
                                      "-c", str(conf)], tmp))
        targets = {}
        port = free_port("127.0.0.1")
        conf = tmp / "tls.conf"
        conf.write_text(nginx_conf(tmp, port, backend_port, cert, key))
        targets["nginx"] = (Proc("nginx-tls", ["taskset", "-c", "0", "nginx", "-p", str(tmp), "-e", "stderr",
                                               "-c", str(conf)], tmp), port)
        port = free_port("127.0.0.1")
        conf = tmp / "tls-tickets.conf"
        conf.write_text(nginx_conf(tmp, port, backend_port, cert, key, cache=False, name="tls-tickets"))
        targets["nginx-tkt"] = (Proc("nginx-tls-tickets", ["taskset", "-c", "0", "nginx", "-p", str(tmp), "-e",
                                                           "stderr", "-c", str(conf)], tmp), port)
        port = free_port("127.0.0.1")
        conf = tmp / "gateway-tls.yaml"
        conf.write_text(gateway_conf(tmp, port, backend_port, cert, key, access_log=args.access_log))
        targets["gateway"] = (gateway_on_cpu0("gateway-tls", conf, tmp), port)
        for i, ref in enumerate(filter(None, (args.ref or "").split(","))):
            src = export_ref(ref, tmp / f"ref-{i}")
            build_extensions(src)
            name, port = f"gw@{ref[:7]}", free_port("127.0.0.1")
            conf = tmp / f"gw-ref-{i}.yaml"
            conf.write_text(gateway_conf(tmp, port, backend_port, cert, key, f"gw-ref-{i}", args.access_log))
            targets[name] = (Proc(name, ["taskset", "-c", str(PROXY_CPU), PYTHON, "-m", "gateway", "run", "--config",
                                         str(conf), "--log-level", "warning"], tmp, cwd=src), port)
        procs += [proc for proc, _ in targets.values()]
        wait_answering(targets, answers, "answer HTTPS", timeout=20)
        for _, port in targets.values():        # warm up (the gateway's first seconds cost more)
            h2load_keepalive(port, 2)
        print(f"{'target':<10} {'case':<12} {'per s':>9} {'CPU us':>9}")
        for case in args.cases.split(","):
            for _ in range(args.repeat):
                for name, (proc, port) in targets.items():      # side by side, alternating
                    n, cpu = measure(proc, lambda: run_case(case, port, args.duration))
                    print(f"{name:<10} {case:<12} {n / args.duration:>9.0f} {cpu / n * 1e6:>9.1f}", flush=True)
    finally:
        for proc in reversed(procs):
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
