"""HTTPRoutes at scale: status writes, start-up and the cost of one route change.

A local API server, one backend, one Gateway and N HTTPRoutes attached to it (one path
each), a gateway (``workers: 2``) watching them.  Measured:

* ``settle``: from the first HTTPRoute created to the last one served, and the status
  writes (the API server's own count of ``/status`` writes) until none came for a second;
* ``changes``: K times, one HTTPRoute's path changed with one API write; the time until
  the new path is answered on 8 new connections in a row (the workers take connections by
  SO_REUSEPORT, so both have it by then), the status writes it caused, and the CPU time the
  gateway's processes (control plane and workers) spent per change: over all the changes,
  less what the idle gateway uses in as long (measured for ``IDLE_WINDOW`` first);
* the control plane's RSS once settled;
* ``start``: the gateway started again with every route there already, until the last
  one is served (``start_served_s``), and the control plane's RSS then; the memory per
  route is the difference between the largest and smallest route counts.

Run alone on the machine (no tests or builds beside it)::

    python bench/httproutes.py --routes 20 2000 --changes 20 [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from kubernetes import client, config  # noqa: E402

from support import (CLK_TCK, Client, GatewayProcess, cpu_ticks, process_tree, rss_bytes,  # noqa: E402
                     start_backend, wait_listening)
from gateway.devcluster.apiserver import ApiServerProcess  # noqa: E402

GW = "gateway.networking.k8s.io"
NS = "default"
ADDRESS = "127.0.30.1"
PORT = 8000
IDLE_WINDOW = 5.0       # seconds of an idle gateway measured, for its CPU rate


def gateway_cpu(pid: int) -> float:
    """CPU seconds used so far by the gateway and its workers."""
    return sum(cpu_ticks(process_tree(pid)).values()) / CLK_TCK


def status_writes(server) -> int:
    return sum(n for name, n in server.state()["writes"].items() if name.endswith("/status"))


def quiet_writes(server, quiet: float = 1.0, timeout: float = 600.0) -> int:
    deadline = time.monotonic() + timeout
    last, since = status_writes(server), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = status_writes(server)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise TimeoutError("status writes did not settle")


def answers(path: str) -> bool:
    try:
        with Client(ADDRESS, PORT, timeout=5) as c:
            return c.request("GET", path).status == 200
    except OSError:
        return False


def served_everywhere(path: str, timeout: float = 120.0) -> float:
    """Seconds until ``path`` is answered 200 on 8 new connections in a row."""
    start, streak = time.monotonic(), 0
    while streak < 8:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{path} not served in {timeout}s")
        streak = streak + 1 if answers(path) else 0
        if not streak:
            time.sleep(0.002)
    return time.monotonic() - start


def httproute(name: str, path: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"parentRefs": [{"name": "gw"}], "rules": [{
        "matches": [{"path": {"type": "PathPrefix", "value": path}}],
        "backendRefs": [{"name": "svc", "port": 80}]}]}}


def run(routes: int, changes: int, workdir: Path, backend) -> dict:
    server = ApiServerProcess(workdir / f"api-{routes}", name=f"routes{routes}", persist=False).start()
    gateway = None
    try:
        with config.new_client_from_config(config_file=str(server.kubeconfig), context=server.context) as api:
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            ip, port = backend.address.rsplit(":", 1)
            core.create_namespaced_service(NS, {"metadata": {"name": "svc"}, "spec": {
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
            client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(NS, {
                "metadata": {"name": "svc-1", "labels": {"kubernetes.io/service-name": "svc"}},
                "addressType": "IPv4", "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
                "ports": [{"name": "http", "port": int(port)}]})
            custom.create_cluster_custom_object(GW, "v1", "gatewayclasses", {
                "metadata": {"name": "ours"}, "spec": {"controllerName": "gateway.example/multi-cluster"}})
            custom.create_namespaced_custom_object(GW, "v1", NS, "gateways", {
                "metadata": {"name": "gw"}, "spec": {"gatewayClassName": "ours", "listeners": [
                    {"name": "http", "port": PORT, "protocol": "HTTP"}]}})
            settings = {
                "workers": 2, "access_log": None,
                "sources": [{"name": "local", "type": "kubernetes", "kubeconfig": str(server.kubeconfig),
                             "context": server.context}],
                "gateway_api": {"addresses": [ADDRESS]}}
            gateway = GatewayProcess(settings, workdir / f"gw-{routes}").start()
            wait_listening(ADDRESS, PORT, 30, gateway.proc)
            writes_before = quiet_writes(server)
            cpu_before = gateway_cpu(gateway.pid)
            start = time.monotonic()
            for i in range(routes):
                custom.create_namespaced_custom_object(GW, "v1", NS, "httproutes", httproute(f"r{i}", f"/r{i}"))
            created = time.monotonic() - start
            served_everywhere(f"/r{routes - 1}")
            all_served = time.monotonic() - start
            settle_writes = quiet_writes(server) - writes_before
            settle_cpu = gateway_cpu(gateway.pid) - cpu_before
            rss = rss_bytes(gateway.pid)
            # The CPU an idle gateway uses (stats every second, timers), to take out of the changes'.
            idle_from, idle_cpu = time.monotonic(), gateway_cpu(gateway.pid)
            time.sleep(IDLE_WINDOW)
            idle_rate = (gateway_cpu(gateway.pid) - idle_cpu) / (time.monotonic() - idle_from)
            delays, writes = [], []
            last_path = f"/r{routes - 1}"           # the last route's path, for the start below
            changes_from, changes_cpu = time.monotonic(), gateway_cpu(gateway.pid)
            for k in range(changes):
                before_writes = status_writes(server)
                path = f"/changed-{k}"
                t0 = time.monotonic()
                custom.patch_namespaced_custom_object(GW, "v1", NS, "httproutes", f"r{k % routes}",
                                                      {"spec": httproute("", path)["spec"]})
                served_everywhere(path)
                if k % routes == routes - 1:
                    last_path = path
                delays.append(time.monotonic() - t0)
                writes.append(quiet_writes(server) - before_writes)
            # Over all the changes: the clock ticks of /proc are 10 ms, coarser than one change.
            change_cpu = (gateway_cpu(gateway.pid) - changes_cpu
                          - idle_rate * (time.monotonic() - changes_from)) / changes
            # A start with every route there already: until the last one is served.
            gateway.stop()
            t0 = time.monotonic()
            gateway = GatewayProcess(settings, workdir / f"gw-{routes}-restart").start(timeout=120)
            served_everywhere(last_path)
            start_served = time.monotonic() - t0
            start_rss = rss_bytes(gateway.pid)
            ordered = sorted(delays)
            return {
                "routes": routes, "create_s": round(created, 2), "all_served_s": round(all_served, 2),
                "settle_status_writes": settle_writes, "settle_cpu_s": round(settle_cpu, 2),
                "control_plane_rss_mib": round(rss / 2 ** 20, 1),
                "start_served_s": round(start_served, 2),
                "start_rss_mib": round(start_rss / 2 ** 20, 1),
                "change_p50_ms": round(statistics.median(delays) * 1000, 1),
                "change_p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 1),
                "change_status_writes_max": max(writes),
                "change_cpu_ms": round(change_cpu * 1000, 1),
            }
    finally:
        if gateway is not None:
            gateway.stop()
        server.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, nargs="+", default=[20, 2000])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-httproutes-") as tmp:
        backend = start_backend("127.0.0.2", "zone-a", "a0")
        try:
            results = [run(n, args.changes, Path(tmp), backend) for n in args.routes]
        finally:
            backend.stop()
    if args.json:
        print(json.dumps(results))
    else:
        keys = list(results[0])
        print(" | ".join(keys))
        for r in results:
            print(" | ".join(str(r[k]) for k in keys))
        if len(results) > 1:
            first, last = results[0], results[-1]
            per_route = (last["start_rss_mib"] - first["start_rss_mib"]) * 1024 / (last["routes"] - first["routes"])
            print(f"control plane memory per route (started with them): {per_route:.1f} KiB; CPU per change "
                  f"{last['change_cpu_ms'] / max(first['change_cpu_ms'], 0.1):.2f}x the "
                  f"{first['routes']}-route case")
    return 0


if __name__ == "__main__":
    sys.exit(main())
