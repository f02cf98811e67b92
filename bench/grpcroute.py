"""gRPC through a Gateway API GRPCRoute next to gRPC through a file route (issue #25's target:
the same cost), two gateways side by side on one machine.

    python bench/grpcroute.py                        # 5 s per run, 3 repetitions (quiet machine only)
    python bench/grpcroute.py --duration 1 --repeat 1     # a quick check that it runs

Layout as bench/h2_load.py: each gateway (``workers: 1``) on CPU 0, the grpcio client (unary
calls, 50 in flight: ``bench.h2_load.grpc_unary``) and the gRPC echo pod
(gateway.devcluster.grpc_backend) on CPU 1. ``file-route``: a route matching the service's path
prefix to a ``protocol: h2c`` service, as bench/h2_load.py's gateway; ``grpcroute``: a Gateway
and a GRPCRoute (service match) from the project's local API server, to a Service whose
endpoint is the same pod. Each line is CPU us of the gateway's processes per call; both write
their access log to a file.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.h2_load import grpc_unary  # noqa: E402
from bench.run import Proc, free_port, gateway_on_cpu0, measure, wait_answering  # noqa: E402

GROUP = "gateway.networking.k8s.io"


def file_route_conf(tmp: Path, port: int, grpc_address: str) -> str:
    return yaml.safe_dump({
        "listen": f"127.0.0.1:{port}", "admin": "off", "timeouts": {"drain": "2s"},
        "access_log": {"path": f"{tmp}/file-route-access.log", "buffer": "64KiB", "flush_interval": "1s"},
        "sources": [{"name": "bench", "type": "static", "services": [
            {"name": "echo", "namespace": "default", "endpoints": [grpc_address]}]}],
        "services": [{"name": "echo", "namespace": "default", "port": int(grpc_address.rsplit(":", 1)[1]),
                      "protocol": "h2c"}],
        "routes": [{"name": "grpc", "match": {"path": {"prefix": "/gateway.test.Echo/"}}, "service": "default/echo"}],
    }, sort_keys=False)


def cluster(tmp: Path, port: int, grpc_address: str):
    """The local API server with a Gateway (HTTP listener on ``port``), a GRPCRoute and the Service."""
    from kubernetes import client, config

    from gateway.devcluster.apiserver import ApiServerProcess
    ip, pod_port = grpc_address.rsplit(":", 1)
    server = ApiServerProcess(tmp / "api", name="bench", bookmark_interval=0.5).start()
    with config.new_client_from_config(config_file=str(server.kubeconfig), context=server.context) as api:
        client.CoreV1Api(api).create_namespaced_service("default", {"metadata": {"name": "echo"}, "spec": {
            "ports": [{"name": "grpc", "port": 50051, "targetPort": int(pod_port)}]}})
        client.DiscoveryV1Api(api).create_namespaced_endpoint_slice("default", {
            "metadata": {"name": "echo-1", "labels": {"kubernetes.io/service-name": "echo"}},
            "addressType": "IPv4", "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"name": "grpc", "port": int(pod_port)}]})
        custom = client.CustomObjectsApi(api)
        custom.create_cluster_custom_object(GROUP, "v1", "gatewayclasses", {
            "metadata": {"name": "bench"}, "spec": {"controllerName": "gateway.example/multi-cluster"}})
        custom.create_namespaced_custom_object(GROUP, "v1", "default", "gateways", {
            "metadata": {"name": "bench"}, "spec": {"gatewayClassName": "bench", "listeners": [
                {"name": "grpc", "port": port, "protocol": "HTTP"}]}})
        custom.create_namespaced_custom_object(GROUP, "v1", "default", "grpcroutes", {
            "metadata": {"name": "echo"}, "spec": {"parentRefs": [{"name": "bench"}], "rules": [{
                "matches": [{"method": {"service": "gateway.test.Echo"}}],
                "backendRefs": [{"name": "echo", "port": 50051}]}]}})
    return server


def grpcroute_conf(tmp: Path, server) -> str:
    return yaml.safe_dump({
        "listen": f"127.0.0.1:{free_port('127.0.0.1')}", "admin": "off", "timeouts": {"drain": "2s"},
        "access_log": {"path": f"{tmp}/grpcroute-access.log", "buffer": "64KiB", "flush_interval": "1s"},
        "sources": [{"name": "bench", "type": "kubernetes", "kubeconfig": str(server.kubeconfig),
                     "context": server.context}],
        "gateway_api": {"addresses": ["127.0.0.1"]},
    }, sort_keys=False)


def answers(port: int) -> bool:
    try:
        return grpc_unary(port, 0.2, 1) > 0
    except Exception:           # noqa: BLE001 - not listening yet
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    from gateway.devcluster.grpc_backend import GrpcBackendProcess

    tmp = Path(tempfile.mkdtemp(prefix="bench-grpcroute-"))
    grpc_pod = GrpcBackendProcess("127.0.0.3", 0, "b", "echo-b-0").start()
    procs: list[Proc] = []
    server = None
    try:
        targets = {}
        port = free_port("127.0.0.1")
        conf = tmp / "file-route.yaml"
        conf.write_text(file_route_conf(tmp, port, grpc_pod.address))
        targets["file-route"] = (gateway_on_cpu0("file-route", conf, tmp), port)
        port = free_port("127.0.0.1")
        server = cluster(tmp, port, grpc_pod.address)
        conf = tmp / "grpcroute.yaml"
        conf.write_text(grpcroute_conf(tmp, server))
        targets["grpcroute"] = (gateway_on_cpu0("grpcroute", conf, tmp), port)
        procs += [proc for proc, _ in targets.values()]
        wait_answering(targets, answers, "answer gRPC", interval=0.2)
        for _, port in targets.values():        # warm up
            grpc_unary(port, 2)
        print(f"{'target':<12} {'calls/s':>9} {'CPU us/call':>12}")
        for _ in range(args.repeat):
            for name, (proc, port) in targets.items():      # side by side, alternating
                n, cpu = measure(proc, lambda: grpc_unary(port, args.duration))
                print(f"{name:<12} {n / args.duration:>9.0f} {cpu / n * 1e6:>12.1f}", flush=True)
    finally:
        for proc in reversed(procs):
            proc.stop()
        if server is not None:
            server.stop()
        grpc_pod.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
