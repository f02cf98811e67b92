"""Failover, measured (issue #26, point 7): three zones, one failure kind at a time, with the
README's defaults and with the shipped deploy ConfigMap's service and route settings.

    python bench/failover.py --quick                      # a check that it runs (gray, blackhole, api; ~1 min)
    python bench/failover.py                              # the full table (run on a quiet machine)
    python bench/failover.py --kinds gray,blackhole --configs defaults

Zones A, B, C: one backend pod each (A's in a network namespace this bench makes, so that it
can be blackholed with nftables; needs root, ip and nft), the gateway with ``workers: 2``,
keep-alive client threads sending GET (idempotent) requests.  Failure kinds, all done to A:

    crash      A's pod SIGKILLed                  (repair: started again)
    graceful   A's pod SIGTERMed                  (repair: started again)
    blackhole  every packet of A's namespace dropped
    gray       A answers 503 to 30% of requests
    slow       A answers 300 ms late
    api        A's API server killed (the control plane loses the cluster: its endpoints
               are kept, health checks decide; A's pod is fine, so A should keep serving)
               (repair: the API server started again, same port and data)
    gone       A's pod killed, its namespace blackholed and its API server killed (a whole
               zone gone)

For ``api`` and ``gone`` zone A is a ``kubernetes`` source: a local API server
(gateway/devcluster/apiserver.py, a real process speaking the Kubernetes API over TLS) holds
its Service and EndpointSlice; the other kinds use static sources.

Per kind and config: requests, client-visible failures (status >= 500 or a connection
error), time from the fault to the last new request A answered (the whole fault's length:
A was never taken out, as it should not be in an API outage), p99 and max latency while
the fault lasts, the time from the repair to A's first answer, and zone A's source and
health-domain state (``/sources``) at the end of the fault.  Printed as a Markdown
table; ``--out FILE`` writes it too.  Every loop is bounded in requests and time.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from failoverload import Load, failures  # noqa: E402
from support import GatewayProcess, free_port, start_backend, static_source  # noqa: E402

from gateway.devcluster import blackhole  # noqa: E402
from gateway.devcluster.backend import BackendProcess  # noqa: E402

KINDS = ("crash", "graceful", "blackhole", "gray", "slow", "api", "gone")
KUBERNETES_KINDS = ("api", "gone")      # zone A from a local API server


def start_zone_a_api(workdir: Path, address: str, port: int):
    """A local API server holding zone A's Service httpbin (port ``port``) and its
    EndpointSlice (``address``); the gateway's source for zone A reads it."""
    from kubernetes import client, config as kube_config
    from gateway.devcluster.apiserver import ApiServerProcess
    server = ApiServerProcess(workdir / "api-zone-a", name="zone-a", bookmark_interval=0.5).start()
    try:
        with kube_config.new_client_from_config(config_file=str(server.kubeconfig),
                                                context=server.context) as api:
            client.CoreV1Api(api).create_namespaced_service("default", {
                "metadata": {"name": "httpbin"},
                "spec": {"ports": [{"name": "http", "port": port, "targetPort": port}]}})
            client.DiscoveryV1Api(api).create_namespaced_endpoint_slice("default", {
                "metadata": {"name": "httpbin-1", "labels": {"kubernetes.io/service-name": "httpbin"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
                "ports": [{"name": "http", "port": port}]})
    except BaseException:
        server.stop()
        raise
    return server


def zone_a_state(admin_port: int) -> str:
    """Zone A as /sources shows it at the end of the fault: the source's state and the
    cluster's health-domain state (e.g. stale / control-plane-lost during an API outage)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/sources", timeout=5) as resp:
            rows = {r["name"]: r for r in json.loads(resp.read())}
    except OSError as exc:
        return f"? ({exc})"
    a = rows.get("zone-a", {})
    return f"{a.get('state')} / {(a.get('health_domain') or {}).get('state')}"


def wait_answered_by(gw, cluster: str, timeout: float = 30.0) -> None:
    """Until ``cluster`` answers a request through the gateway (its source has been read)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with gw.client(timeout=5) as c:
                for _ in range(20):
                    r = c.request("GET", "/anything")
                    if r.status == 200 and r.json().get("cluster") == cluster:
                        return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/failover.py: {cluster} never answered in {timeout}s")
        time.sleep(0.2)


def shipped() -> tuple[dict, dict]:
    doc = yaml.safe_load((REPO / "deploy/kubernetes/configmap.yaml").read_text())
    cfg = yaml.safe_load(doc["data"]["gateway.yaml"])
    service = {k: v for k, v in cfg["services"][0].items() if k not in ("name", "namespace", "port")}
    route = {k: v for k, v in cfg["routes"][0].items() if k not in ("name", "match", "service")}
    return service, route


def fault(pod, query: str) -> None:
    with urllib.request.urlopen(f"http://{pod.host}:{pod.port}/_backend/fault?{query}", timeout=5):
        pass


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_one(kind: str, which: str, hole: blackhole.Blackhole, phases: tuple[float, float, float],
            threads: int, workdir: Path) -> dict:
    before, during, after = phases
    a = BackendProcess(hole.address, 8000, "zone-a", "a-0", netns=hole.ns).start()
    b = start_backend("127.0.0.33", "zone-b", "b-0")
    c = start_backend("127.0.0.34", "zone-c", "c-0")
    service, route = shipped() if which == "shipped" else ({}, {})
    work = workdir / f"{kind}-{which}"
    work.mkdir(parents=True, exist_ok=True)
    api = start_zone_a_api(work, hole.address, 8000) if kind in KUBERNETES_KINDS else None
    source_a = (static_source("zone-a", {"httpbin": [f"{hole.address}:8000"]}) if api is None else
                {"name": "zone-a", "type": "kubernetes", "kubeconfig": str(api.kubeconfig),
                 "context": api.context, "namespaces": ["default"]})
    admin = free_port()
    config = {
        "workers": 2,
        "admin": f"127.0.0.1:{admin}",
        "sources": [source_a,
                    static_source("zone-b", {"httpbin": [b.address]}),
                    static_source("zone-c", {"httpbin": [c.address]})],
        "services": [{"name": "httpbin", "port": 8000, **service}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin", **route}],
    }
    gw = GatewayProcess(config, work, "gw").start()
    load = Load(gw.host, gw.port, threads=threads, deadline=before + during + after + 60,
                max_requests=200_000)
    try:
        wait_answered_by(gw, "zone-a")
        load.start()
        time.sleep(before)
        t_fault = time.monotonic()
        if kind == "crash":
            a.send_signal(signal.SIGKILL)
        elif kind == "graceful":
            a.send_signal(signal.SIGTERM)
        elif kind == "blackhole":
            hole.drop()
        elif kind == "gray":
            fault(a, "status=503&share=0.3")
        elif kind == "slow":
            fault(a, "delay=0.3")
        elif kind == "api":
            api.kill()
        elif kind == "gone":
            a.send_signal(signal.SIGKILL)
            hole.drop()
            api.kill()
        time.sleep(during)
        a_state = zone_a_state(admin)
        t_repair = time.monotonic()
        if kind in ("crash", "graceful"):
            a.start()
        elif kind == "blackhole":
            hole.restore()
        elif kind in ("gray", "slow"):
            fault(a, "")
        elif kind == "api":
            api.start()
        elif kind == "gone":
            hole.restore()
            a.start()
            api.start()
        time.sleep(after)
        samples = load.stop()
    finally:
        load.stop()
        hole.restore()
        gw.stop()
        for p in (a, b, c):
            p.stop()
        if api is not None:
            api.stop()
    while_failed = [s for s in samples if t_fault <= s.sent < t_repair]
    last_a = max((s.sent for s in while_failed if s.cluster == "zone-a"), default=None)
    back = min((s.sent for s in samples if s.sent >= t_repair and s.cluster == "zone-a"), default=None)
    lat = [s.seconds for s in while_failed]
    return {"kind": kind, "config": which, "requests": len(samples), "failed": len(failures(samples)),
            "to_zero_s": None if last_a is None else round(last_a - t_fault, 2),
            "p99_ms": round(percentile(lat, 0.99) * 1000, 1), "max_ms": round(max(lat, default=0) * 1000, 1),
            "back_s": None if back is None else round(back - t_repair, 2), "a_state": a_state}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short phases, three kinds, defaults only")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--configs", default="defaults,shipped")
    ap.add_argument("--phases", default="3,10,10", help="seconds before, during, after the fault")
    ap.add_argument("--threads", type=int, default=6)
    ap.add_argument("--out", help="also write the table here (Markdown)")
    ap.add_argument("--workdir", default=f"/tmp/gateway-bench-failover-{os.getpid()}")
    args = ap.parse_args()
    why = blackhole.available()
    if why:
        sys.exit(f"bench/failover.py {why}")
    kinds, configs = args.kinds.split(","), args.configs.split(",")
    phases = tuple(float(x) for x in args.phases.split(","))
    if args.quick:
        kinds, configs, phases = ["gray", "blackhole", "api"], ["defaults"], (1.5, 4.0, 3.0)
    rows = []
    with blackhole.Blackhole("bench") as hole:
        for which in configs:
            for kind in kinds:
                row = run_one(kind, which, hole, phases, args.threads, Path(args.workdir))
                print(row, flush=True)
                rows.append(row)
    head = ("| kind | config | requests | failed | to 0% (s) | p99 during (ms) | max during (ms) | back (s) "
            "| zone A at the end of the fault |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head] + [f"| {r['kind']} | {r['config']} | {r['requests']} | {r['failed']} | "
                      f"{'-' if r['to_zero_s'] is None else r['to_zero_s']} | {r['p99_ms']} | {r['max_ms']} | "
                      f"{'never' if r['back_s'] is None else r['back_s']} | {r['a_state']} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
