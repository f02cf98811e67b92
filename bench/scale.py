"""Scale: the control plane's cost as the number of services and endpoints grows.

Two local clusters (the project's API server, each in its own process) hold N services with
E endpoints each (one EndpointSlice per service); the gateway watches both, merges the N
services and has N routes.  For each size and each worker count it reports:

* ready: gateway start -> admin ``/ready`` answers 200 (both clusters listed and merged);
* RSS of every gateway process (main and workers) once ready;
* idle CPU: the gateway's processes over ``--idle`` seconds with no traffic and no change;
* propagation: ``--flips`` times, one endpoint of one service flips ready <-> not ready by an
  API write; the time from the write to the first request answered by the new table
  (bench/propagation.py's measure: a keep-alive client polls that service's route);
* CPU per change: ``--flips`` more writes to other services' slices, unpolled and spaced,
  the gateway's CPU over them less its idle CPU, per write;
* churn: ``--churn`` endpoint changes per second spread over the services of cluster B for
  ``--churn-seconds``, while the propagation flips run again: their p99 under churn.

Only the flipped service's two endpoints are real backends (127.0.0.2 and 127.0.0.4, as in
bench/propagation.py); the others are addresses in 127.16.0.0/12 that no request is sent to.
Every process started is stopped by pid; every loop is bounded.

    python bench/scale.py                                   # 2x100x10, 2x1000x10, 2x1000x50
    python bench/scale.py --sizes 2x1000x10 --workers 1 --json
    python bench/scale.py --ref 28410e9 --sizes 2x1000x10   # the same run against a commit
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import propagation  # noqa: E402
from run import Proc, build_extensions, export_ref, free_port, process_tree  # noqa: E402
from support import MiB, rss_bytes  # noqa: E402  (tests/support, on sys.path since run is imported)

NS = "default"
POD_PORT = 8000
REAL_IPS = ("127.0.0.2", "127.0.0.4")
FLIP_SERVICE = "svc-0"


def fake_ip(i: int) -> str:
    """The i-th address of 127.16.0.0/12 (no request ever goes there)."""
    return f"127.{16 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


def service_body(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": POD_PORT}]}}


def slice_body(name: str, ips: list[str], ready: list[bool] | None = None) -> dict:
    ready = ready or [True] * len(ips)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": NS,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": POD_PORT, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": r, "serving": r, "terminating": False}}
                          for ip, r in zip(ips, ready)]}


class Cluster:
    """A local API server process and a client to it."""

    def __init__(self, name: str, state: Path) -> None:
        from gateway.devcluster.apiserver import ApiServerProcess
        self.name = name
        self.api = ApiServerProcess(state / name, name=name, history_size=20000, persist=False).start()
        self.kubeconfig = state / name / "kubeconfig.yaml"
        self.context = f"zone-{name}"
        self._local = threading.local()

    def clients(self):
        """(CoreV1Api, DiscoveryV1Api) of this thread (urllib3 pools are not shared)."""
        if not hasattr(self._local, "apis"):
            from gateway.devcluster.cluster import api_client
            from kubernetes import client
            api = api_client(self.kubeconfig, self.context)
            self._local.apis = (client.CoreV1Api(api), client.DiscoveryV1Api(api))
        return self._local.apis

    def populate(self, services: int, endpoints: int, first_ip: int, real: bool) -> None:
        def create(i: int) -> None:
            core, discovery = self.clients()
            name = f"svc-{i}"
            core.create_namespaced_service(NS, service_body(name))
            if real and name == FLIP_SERVICE:
                ips, ready = list(REAL_IPS), [True, False]
            else:
                base = first_ip + i * endpoints
                ips, ready = [fake_ip(base + j) for j in range(endpoints)], None
            discovery.create_namespaced_endpoint_slice(NS, slice_body(name, ips, ready))
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(create, range(services)))

    def close(self) -> None:
        self.api.stop()


def gateway_config(path: Path, port: int, admin: int, clusters: list[Cluster], services: int,
                   workers: int) -> None:
    lines = [f"listen: 127.0.0.1:{port}", f"admin: 127.0.0.1:{admin}", f"workers: {workers}",
             "access_log: off", "sources:"]
    for c in clusters:
        lines.append(f"  - {{name: cluster-{c.name}, type: kubernetes, kubeconfig: {c.kubeconfig}, "
                     f"context: {c.context}, namespaces: [{NS}]}}")
    lines.append("services:")
    lines += [f"  - {{name: svc-{i}, port: http}}" for i in range(services)]
    lines.append("routes:")
    lines += [f"  - {{name: r{i}, match: {{path: {{prefix: /svc-{i}/}}}}, service: svc-{i}}}"
              for i in range(services)]
    path.write_text("\n".join(lines) + "\n")


def wait_ready(admin: int, proc: Proc, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not proc.alive():
            raise RuntimeError(f"gateway exited:\n{proc.log_tail()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return time.monotonic() - t0
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise TimeoutError(f"not ready within {timeout}s:\n{proc.log_tail()}")


def worker_apply_ms(admin: int) -> float | None:
    """The slowest worker's p99 delay from a delta's publication to its ack (workers: N)."""
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
    try:
        conn.request("GET", "/status")
        workers = json.loads(conn.getresponse().read())["workers"]
    except (OSError, ValueError, KeyError):
        return None
    finally:
        conn.close()
    p99 = [w["apply_ms"]["p99"] for w in workers if w.get("apply_ms")]
    return max(p99) if p99 else None


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` in MiB; 0 once it is gone."""
    try:
        return rss_bytes(pid) / MiB
    except (OSError, RuntimeError):
        return 0.0


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of every thread of ``pids`` from schedstat (nanoseconds: clock ticks of 10 ms
    are too coarse for a change that costs a fraction of a millisecond)."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
    return total / 1e9


def tree_cpu(pid: int, seconds: float) -> float:
    """Share of one core the process tree used over ``seconds`` (sleeping meanwhile)."""
    pids = process_tree(pid)
    before, t0 = cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pids) - before) / (time.monotonic() - t0)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class Churn(threading.Thread):
    """``rate`` writes a second, each flipping one fake endpoint of a random service in cluster B."""

    def __init__(self, cluster: Cluster, services: int, endpoints: int, first_ip: int, rate: float,
                 seconds: float) -> None:
        super().__init__(daemon=True)
        self.cluster, self.services, self.endpoints = cluster, services, endpoints
        self.first_ip, self.rate, self.seconds = first_ip, rate, seconds
        self.writes = 0
        self.stop = threading.Event()

    def run(self) -> None:
        _, discovery = self.cluster.clients()
        rng = random.Random(7)
        state: dict[str, list[bool]] = {}
        start = time.monotonic()
        while not self.stop.is_set() and time.monotonic() - start < self.seconds:
            i = rng.randrange(self.services)
            name = f"svc-{i}"
            ready = state.setdefault(name, [True] * self.endpoints)
            j = rng.randrange(self.endpoints)
            ready[j] = not ready[j]
            discovery.patch_namespaced_endpoint_slice(name, NS, [
                {"op": "replace", "path": f"/endpoints/{j}/conditions",
                 "value": {"ready": ready[j], "serving": ready[j], "terminating": False}}],
                _content_type="application/json-patch+json")
            self.writes += 1
            next_at = start + self.writes / self.rate
            self.stop.wait(max(0.0, next_at - time.monotonic()))


def cpu_per_change(gw: Proc, cluster: Cluster, services: int, endpoints: int, changes: int,
                   idle_share: float, gap: float) -> float:
    """ms of gateway CPU per endpoint change (writes ``gap`` apart, nobody polling; the gap
    must outlast one change's processing or the gateway coalesces them)."""
    _, discovery = cluster.clients()
    pids = process_tree(gw.pid)
    before, t0 = cpu_seconds(pids), time.monotonic()
    for k in range(changes):
        name = f"svc-{1 + (k // 2) % (services - 1)}"
        ready = k % 2 == 1          # each service: one endpoint out, then back
        discovery.patch_namespaced_endpoint_slice(name, NS, [
            {"op": "replace", "path": "/endpoints/0/conditions",
             "value": {"ready": ready, "serving": ready, "terminating": False}}],
            _content_type="application/json-patch+json")
        time.sleep(gap)
    time.sleep(max(0.3, gap))
    used = cpu_seconds(pids) - before - idle_share * (time.monotonic() - t0)
    if os.environ.get("SCALE_DEBUG"):
        print(f"cpu_per_change: pids {pids} used {used:.4f}s idle {idle_share:.4f} "
              f"elapsed {time.monotonic() - t0:.2f}s", file=sys.stderr)
    return max(0.0, used) / changes * 1000


def one_size(args, src: Path, state: Path, n_clusters: int, services: int, endpoints: int) -> list[dict]:
    results = []
    clusters = [Cluster(name, state) for name in "ab"[:n_clusters]]
    backends = []
    try:
        t0 = time.monotonic()
        for k, c in enumerate(clusters):
            c.populate(services, endpoints, first_ip=k * services * endpoints, real=(k == 0))
        populate_s = time.monotonic() - t0
        from gateway.devcluster.backend import BackendProcess
        backends = [BackendProcess(ip, POD_PORT, "a", f"p{i}").start(timeout=20) for i, ip in enumerate(REAL_IPS)]
        for workers in args.workers:
            port, admin = free_port("127.0.0.1"), free_port("127.0.0.1")
            config = state / f"gateway-{workers}.yaml"
            gateway_config(config, port, admin, clusters, services, workers)
            gw = Proc(f"gateway-{services}x{endpoints}-w{workers}",
                      [sys.executable, "-m", "gateway", "run", "--config", str(config), "--log-level", "warning"],
                      state, cwd=src)
            try:
                ready_s = wait_ready(admin, gw, timeout=300)
                time.sleep(2.0)                     # first reports, warm-up
                rss = {pid: round(rss_mib(pid), 1) for pid in process_tree(gw.pid)}
                idle = tree_cpu(gw.pid, args.idle)
                _, discovery = clusters[0].clients()
                prop = propagation.measure(discovery, NS, FLIP_SERVICE, "127.0.0.1", port,
                                           f"/{FLIP_SERVICE}/x", changes=args.flips)
                apply_ms = worker_apply_ms(admin)
                cpu_change = cpu_per_change(gw, clusters[-1], services, endpoints, 4 * args.flips, idle,
                                            args.change_gap)
                churn = Churn(clusters[-1], services, endpoints, 0, args.churn, args.churn_seconds)
                pids = process_tree(gw.pid)
                before, tc = cpu_seconds(pids), time.monotonic()
                churn.start()
                time.sleep(0.5)
                try:
                    under = propagation.measure(discovery, NS, FLIP_SERVICE, "127.0.0.1", port,
                                                f"/{FLIP_SERVICE}/x", changes=args.flips).delays
                except TimeoutError as exc:     # a gateway that cannot keep up with the churn
                    print(f"under churn: {exc}", file=sys.stderr)
                    under = None
                churn.stop.set()
                churn.join(10)
                churn_rate = churn.writes / (time.monotonic() - tc)
                churn_cpu = (cpu_seconds(pids) - before) / (time.monotonic() - tc)
                results.append({
                    "clusters": n_clusters, "services": services, "endpoints_per_service": endpoints,
                    "endpoints": n_clusters * services * endpoints, "workers": workers,
                    "populate_s": round(populate_s, 1), "ready_s": round(ready_s, 2),
                    "rss_mib": rss, "rss_total_mib": round(sum(rss.values()), 1),
                    "idle_cpu_pct": round(idle * 100, 2),
                    "propagation_ms": _ms(prop.delays),
                    "cpu_per_change_ms": round(cpu_change, 3),
                    "worker_apply_p99_ms": apply_ms,
                    "churn_per_s": round(churn_rate, 1), "churn_cpu_pct": round(churn_cpu * 100, 1),
                    "propagation_under_churn_ms": _ms(under) if under else None,
                })
                print(json.dumps(results[-1]), flush=True)
            finally:
                gw.stop()
    finally:
        for b in backends:
            b.stop()
        for c in clusters:
            c.close()
    return results


def _ms(delays: list[float]) -> dict:
    return {"median": round(statistics.median(delays) * 1000, 2),
            "p99": round(percentile(delays, 0.99) * 1000, 2), "max": round(max(delays) * 1000, 2)}


def render(rows: list[dict]) -> str:
    head = ("| endpoints | services | workers | ready s | RSS MiB (per process) | idle CPU % | "
            "propagation ms med / p99 / max | to every worker p99 ms | CPU ms / change | churn /s | "
            "p99 under churn ms |")
    out = [head, "|" + "---|" * 11]
    for r in rows:
        p, u = r["propagation_ms"], r["propagation_under_churn_ms"] or {"p99": "timeout (5 s)"}
        out.append(f"| {r['endpoints']:,} | {r['clusters']}x{r['services']:,} | {r['workers']} | "
                   f"{r['ready_s']} | {r['rss_total_mib']} ({', '.join(str(v) for v in r['rss_mib'].values())}) | "
                   f"{r['idle_cpu_pct']} | {p['median']} / {p['p99']} / {p['max']} | "
                   f"{r.get('worker_apply_p99_ms') or '-'} | {r['cpu_per_change_ms']} | {r['churn_per_s']} | {u['p99']} |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2x100x10,2x1000x10,2x1000x50",
                        help="clusters x services x endpoints per service, comma separated")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--flips", type=int, default=50)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    parser.add_argument("--churn", type=float, default=100.0, help="endpoint changes per second")
    parser.add_argument("--churn-seconds", type=float, default=30.0, help="upper bound")
    parser.add_argument("--change-gap", type=float, default=0.02,
                        help="seconds between the writes of the CPU-per-change measurement")
    parser.add_argument("--ref", help="measure this commit instead of the working tree (exported, built)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))     # run the finally blocks: stop by pid
    rows = []
    with tempfile.TemporaryDirectory(prefix="gateway-scale-") as tmp:
        src = REPO
        if args.ref:
            src = export_ref(args.ref, Path(tmp) / "src")
            build_extensions(src)
        for size in args.sizes.split(","):
            n, s, e = (int(x) for x in size.split("x"))
            state = Path(tmp) / size
            state.mkdir()
            rows += one_size(args, src, state, n, s, e)
    print(json.dumps(rows) if args.json else render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
