"""``gateway devcluster ...``: run a local cluster, and remove or restore its Service.

The gateway's CLI mounts this with ``add_arguments(subparser)`` and ``main(args)``; it also runs
alone as ``python -m gateway.devcluster ...``::

    gateway devcluster up --name a --pods 127.0.0.2,127.0.0.4 --state-dir /tmp/a
    gateway devcluster remove-service --kubeconfig /tmp/a/kubeconfig.yaml
    gateway devcluster restore-service --kubeconfig /tmp/a/kubeconfig.yaml

``up`` prints the kubeconfig path and stays up until SIGINT or SIGTERM. ``remove-service`` and
``restore-service`` talk to the API server with the kubernetes client, like ``kubectl delete``
and ``kubectl apply``: the pods of a running ``up`` keep running, only the Service and its
endpoints go away and come back (``restore-service`` reads the pods from ``cluster.json``
beside the kubeconfig).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="devcluster_command", metavar="COMMAND", required=True)

    up = commands.add_parser("up", help="run an API server and backend pods until interrupted")
    up.add_argument("--name", required=True, help="cluster name; the kubeconfig context is zone-<name>")
    up.add_argument("--pods", required=True, type=_ip_list,
                    help="comma-separated loopback IPs, one pod each (e.g. 127.0.0.2,127.0.0.4)")
    up.add_argument("--state-dir", required=True, type=Path,
                    help="certificates, data and kubeconfig.yaml (reused by a later run)")
    up.add_argument("--port", type=int, default=8000, help="the pods' port (default 8000)")
    up.add_argument("--api-port", type=int, default=0, help="the API server's port (default: any)")
    up.add_argument("--no-endpointslices", action="store_true",
                    help="serve without discovery.k8s.io (clients must use v1 Endpoints)")
    up.add_argument("--absent-group", action="append", default=[], metavar="GROUP",
                    help="serve without this API group, as if its CRDs were not installed "
                         "(repeatable; e.g. multicluster.x-k8s.io)")

    for name, help_text in (("remove-service", "delete the Service, its EndpointSlices and Endpoints"),
                            ("restore-service", "recreate the Service and its endpoints")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--kubeconfig", required=True, type=Path)
        command.add_argument("--context", help="default: the kubeconfig's current context")
        command.add_argument("--namespace", default="default")
        command.add_argument("--service", default="httpbin")


def _ip_list(text: str) -> list[str]:
    import ipaddress

    ips = [part.strip() for part in text.split(",") if part.strip()]
    for ip in ips:
        if not ipaddress.ip_address(ip).is_loopback:
            raise argparse.ArgumentTypeError(f"{ip} is not a loopback address")
    return ips


def main(args: argparse.Namespace) -> int:
    command = args.devcluster_command
    if command == "up":
        return _up(args)
    if command == "remove-service":
        return _remove_service(args)
    if command == "restore-service":
        return _restore_service(args)
    raise SystemExit(f"unknown devcluster command {command!r}")


def _up(args: argparse.Namespace) -> int:
    from .cluster import LocalCluster

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = LocalCluster(args.name, args.state_dir, args.pods, args.port,
                           endpoint_slices=not args.no_endpointslices, api_port=args.api_port,
                           absent_groups=args.absent_group)
    with cluster:
        pods = ", ".join(f"{pod.name}={pod.ip}:{cluster.port}" for pod in cluster.pods)
        print(f"cluster {args.name}: api {cluster.api_url}, context {cluster.context}, pods {pods}")
        print(f"kubeconfig: {cluster.kubeconfig}", flush=True)
        while not stop.wait(1.0):
            pass
    return 0


def _client(args: argparse.Namespace):
    from .cluster import api_client

    return api_client(args.kubeconfig, args.context)


def _remove_service(args: argparse.Namespace) -> int:
    from .cluster import delete_service_objects

    with _client(args) as api:
        delete_service_objects(api, args.namespace, args.service)
    print(f"removed service {args.namespace}/{args.service}")
    return 0


def _restore_service(args: argparse.Namespace) -> int:
    from .cluster import LAYOUT_FILE, ServiceLayout, apply_service_objects

    layout_file = args.kubeconfig.parent / LAYOUT_FILE
    if not layout_file.exists():
        print(f"no {LAYOUT_FILE} beside {args.kubeconfig}: was it written by 'devcluster up'?",
              file=sys.stderr)
        return 2
    layout = ServiceLayout.load(layout_file)
    layout.namespace, layout.service = args.namespace, args.service
    with _client(args) as api:
        apply_service_objects(api, layout)
    layout.save(layout_file)
    print(f"restored service {args.namespace}/{args.service}: {', '.join(layout_pod_ips(layout))}")
    return 0


def layout_pod_ips(layout) -> list[str]:
    return [f"{pod.ip}:{layout.port}" for pod in layout.pods]
