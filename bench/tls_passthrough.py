"""TLS passthrough side by side: the gateway's TLSRoute listener and nginx's stream module
(``ssl_preread``), each routing by the ClientHello's SNI to the same TLS backend.

    python bench/tls_passthrough.py                  # 5 s per case, 2 repetitions (quiet machine only)
    python bench/tls_passthrough.py --duration 1 --repeat 1     # a quick check that it runs

Layout as bench/run.py: each proxy on CPU 0 (nginx with one worker, the gateway with
``workers: 1``), the clients and the backend (nginx terminating TLS, a 13-byte file) on CPU 1.
The gateway gets its Gateway (a TLS listener in Passthrough mode), TLSRoute and Service from
the project's local API server, as in a cluster. Cases:

* ``connections``: a new connection, a full TLS 1.3 handshake with the backend (SNI bench.test)
  and one GET per connection, one connection at a time, by a Python client (``--client``;
  ``openssl s_time`` sends no SNI): what a proxy pays per connection: peeking the ClientHello,
  picking an endpoint, connecting, splicing, closing;
* ``keepalive``: h2load, HTTP/1.1 over TLS, 50 connections kept open (what it pays per byte
  copied both ways).

Each line is CPU us of the proxy's processes per connection (``connections``) or per request
(``keepalive``). The gateway writes its access log (one line per connection) to a file;
nginx's stream log is off.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (NGINX_COMMON, NGINX_HTTP_COMMON, PYTHON, BenchError, Proc, free_port,  # noqa: E402
                       gateway_on_cpu0, measure, wait_answering)
from bench.tls import BODY, certificate  # noqa: E402

SNI = "bench.test"
CASES = ("connections", "keepalive")


def backend_conf(tmp: Path, port: int, cert: Path, key: Path) -> str:
    """nginx terminating TLS for the file in www/ (the TLS backend both proxies pass to)."""
    return (f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {tmp}/backend.pid;\n"
            + NGINX_COMMON.format() + "http {\n" + NGINX_HTTP_COMMON.format(tmp=tmp) + f"""    access_log off;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.2:{port} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets on;
        root {tmp}/www;
    }}
}}
""")


def nginx_conf(tmp: Path, port: int, backend_port: int) -> str:
    return (f"daemon off;\nmaster_process on;\nuser root;\nworker_processes 1;\npid {tmp}/stream.pid;\n"
            f"load_module modules/ngx_stream_module.so;\n" + NGINX_COMMON.format() + f"""stream {{
    map $ssl_preread_server_name $backend {{
        {SNI} 127.0.0.2:{backend_port};
        default 127.0.0.9:1;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        ssl_preread on;
        proxy_pass $backend;
    }}
}}
""")


def cluster(tmp: Path, port: int, backend_port: int):
    """The local API server with the gateway's Gateway, TLSRoute and the backend's Service."""
    from kubernetes import client, config

    from gateway.devcluster.apiserver import ApiServerProcess
    server = ApiServerProcess(tmp / "api", name="bench", bookmark_interval=0.5).start()
    with config.new_client_from_config(config_file=str(server.kubeconfig), context=server.context) as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        core.create_namespaced_service("default", {"metadata": {"name": "backend"}, "spec": {
            "ports": [{"name": "tls", "port": 443, "targetPort": backend_port}]}})
        client.DiscoveryV1Api(api).create_namespaced_endpoint_slice("default", {
            "metadata": {"name": "backend-1", "labels": {"kubernetes.io/service-name": "backend"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["127.0.0.2"], "conditions": {"ready": True}}],
            "ports": [{"name": "tls", "port": backend_port}]})
        group = "gateway.networking.k8s.io"
        custom.create_cluster_custom_object(group, "v1", "gatewayclasses", {
            "metadata": {"name": "bench"}, "spec": {"controllerName": "gateway.example/multi-cluster"}})
        custom.create_namespaced_custom_object(group, "v1", "default", "gateways", {
            "metadata": {"name": "bench"}, "spec": {"gatewayClassName": "bench", "listeners": [
                {"name": "tls", "port": port, "protocol": "TLS", "tls": {"mode": "Passthrough"}}]}})
        custom.create_namespaced_custom_object(group, "v1", "default", "tlsroutes", {
            "metadata": {"name": "bench"}, "spec": {"parentRefs": [{"name": "bench"}], "hostnames": [SNI],
                                                    "rules": [{"backendRefs": [{"name": "backend", "port": 443}]}]}})
    return server


def gateway_conf(tmp: Path, server) -> str:
    return yaml.safe_dump({
        "listen": f"127.0.0.1:{free_port('127.0.0.1')}", "admin": "off", "workers": 1,
        "timeouts": {"drain": "2s"},
        "access_log": {"path": f"{tmp}/gateway-access.log", "buffer": "64KiB", "flush_interval": "1s"},
        "sources": [{"name": "bench", "type": "kubernetes", "kubeconfig": str(server.kubeconfig),
                     "context": server.context}],
        "gateway_api": {"addresses": ["127.0.0.1"]},
    }, sort_keys=False)


def h2load_keepalive(port: int, duration: float) -> int:
    out = subprocess.run(["taskset", "-c", "1", "h2load", "--h1", "-c", "50", "-D", str(int(duration)),
                          f"--connect-to=127.0.0.1:{port}", f"https://{SNI}:{port}/small"],
                         capture_output=True, text=True, timeout=duration + 30)
    for line in out.stdout.splitlines():
        if line.startswith("status codes:"):
            return int(line.split()[2])
    raise BenchError(f"h2load failed: {out.stdout[-800:]}{out.stderr[-400:]}")


def answers(port: int) -> bool:
    out = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
                          "--resolve", f"{SNI}:{port}:127.0.0.1", f"https://{SNI}:{port}/small"],
                         capture_output=True, text=True)
    return out.stdout == "200"


def connections(port: int, duration: float) -> int:
    """Connections the client (on CPU 1) completed in ``duration``: handshake, GET, close."""
    out = subprocess.run(["taskset", "-c", "1", PYTHON, __file__, "--client", str(port), str(duration)],
                         capture_output=True, text=True, timeout=duration + 30)
    if out.returncode:
        raise BenchError(f"client failed: {out.stderr[-600:]}")
    return int(out.stdout)


def client(port: int, duration: float) -> int:
    import socket
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    request = f"GET /small HTTP/1.1\r\nHost: {SNI}\r\nConnection: close\r\n\r\n".encode()
    done, deadline = 0, time.monotonic() + duration
    while time.monotonic() < deadline:
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                 server_hostname=SNI) as conn:
            conn.sendall(request)
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
            if not answer.endswith(BODY):
                raise BenchError(f"unexpected answer {answer[:200]!r}")
        done += 1
    return done


def run_case(case: str, port: int, duration: float) -> int:
    if case == "keepalive":
        return h2load_keepalive(port, duration)
    return connections(port, duration)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--client", nargs=2, metavar=("PORT", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        print(client(int(args.client[0]), float(args.client[1])))
        return 0
    for tool in ("nginx", "h2load", "taskset", "curl", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/tls_passthrough.py needs {tool} (apt install nginx-light libnginx-mod-stream "
                             f"nghttp2-client util-linux curl openssl)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-passthrough-"))
    (tmp / "www").mkdir()
    (tmp / "www" / "small").write_bytes(BODY)
    cert, key = certificate(tmp)
    procs: list[Proc] = []
    server = None
    try:
        backend_port = free_port("127.0.0.2")
        conf = tmp / "backend.conf"
        conf.write_text(backend_conf(tmp, backend_port, cert, key))
        procs.append(Proc("backend", ["taskset", "-c", "1", "nginx", "-p", str(tmp), "-e", "stderr",
                                      "-c", str(conf)], tmp))
        targets = {}
        port = free_port("127.0.0.1")
        conf = tmp / "stream.conf"
        conf.write_text(nginx_conf(tmp, port, backend_port))
        targets["nginx"] = (Proc("nginx-stream", ["taskset", "-c", "0", "nginx", "-p", "/usr/lib/nginx/",
                                                  "-e", "stderr", "-c", str(conf)], tmp), port)
        port = free_port("127.0.0.1")
        server = cluster(tmp, port, backend_port)
        conf = tmp / "gateway.yaml"
        conf.write_text(gateway_conf(tmp, server))
        targets["gateway"] = (gateway_on_cpu0("gateway", conf, tmp), port)
        procs += [proc for proc, _ in targets.values()]
        wait_answering(targets, answers, "pass TLS through")
        for _, port in targets.values():        # warm up
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
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
