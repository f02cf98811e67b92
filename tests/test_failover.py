"""Automatic failover end to end: two local clusters, the gateway, keep-alive clients, no failed request.

Cluster A (pods 127.0.0.2[, .4, .6]) and cluster B (pods 127.0.0.3[, ...]) are real
``LocalCluster``s: an API server process each, watched by the gateway through the real
``kubernetes`` client, and backend pod processes.  The gateway is configured as ``gateway
demo`` configures it (active HTTP checks every 500 ms, retries: 3 attempts, on_timeout,
per_try_timeout 1 s).  Several client threads send GET requests on keep-alive connections,
each tagged with its own X-Request-Id, across the fault in cluster A and its repair; every
request is then joined to its access log line (``upstream_cluster``, ``tried_hosts``).

Each failure mode must lose no request: no non-2xx status and no connection error.  The
split by ``upstream_cluster`` is 50/50 before the fault, 100% B from the last request tried
on A until the repair, and 50/50 again once every pod of A serves.  Per mode the time from
the fault to the last request sent to A and the slowest request are printed (run with -s).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.demo import break_cluster, repair_cluster
from gateway.devcluster.cluster import LocalCluster
from support import Client, GatewayProcess

THREADS = 4
RATE_PER_THREAD = 200                   # requests/s per client: ~800/s, leaving CPU for the rest
MAX_REQUESTS_PER_THREAD = 50_000        # a bound; time ends the loop long before
BEFORE = 1.5                            # seconds of traffic before the fault
DURING = 3.0                            # seconds from the fault to the repair
AFTER = 1.5                             # seconds of traffic once A serves again
BACK_WITHIN = 10.0                      # A must serve again this soon after the repair
MIN_REQUESTS = 2000
SPLIT_TOLERANCE = 0.05
LAST_ON_A_WITHIN = 2.5                  # the fault must be noticed this soon


# -- the clients ---------------------------------------------------------------------------------


@dataclass
class Result:
    request_id: str
    sent: float                 # time.time() before the request was written
    done: float                 # time.time() when the response (or the error) was complete
    status: int | None
    error: str | None = None
    cluster: str | None = None  # who answered, from the backend's body ("a" / "b") ...
    pod: str | None = None      # ... and which pod


@dataclass
class Load:
    """THREADS clients, each sending GET requests one after another on a keep-alive connection
    (reconnecting only when the gateway closes it), until ``stop()`` or a bound is reached."""

    host: str
    port: int
    tag: str
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, deadline: float) -> "Load":
        for n in range(THREADS):
            t = threading.Thread(target=self._run, args=(n, deadline), name=f"load-{n}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def stop(self) -> list[Result]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        assert not any(t.is_alive() for t in self._threads), "a client thread did not stop"
        with self._lock:
            return sorted(self.results, key=lambda r: r.sent)

    def snapshot(self) -> list[Result]:
        with self._lock:
            return list(self.results)

    def _run(self, n: int, deadline: float) -> None:
        conn: Client | None = None
        mine: list[Result] = []
        try:
            for i in range(MAX_REQUESTS_PER_THREAD):
                if self._stop.is_set() or time.time() > deadline:
                    break
                rid = f"{self.tag}-{n}-{i}"
                sent = time.time()
                try:
                    if conn is None:
                        conn = Client(self.host, self.port, timeout=10.0)
                    resp = conn.request("GET", f"/test/{i}", headers={"X-Request-Id": rid})
                    body = resp.json() if resp.status == 200 else {}
                    result = Result(rid, sent, time.time(), resp.status, cluster=body.get("cluster"),
                                    pod=body.get("pod"))
                    if resp.closes:
                        conn.close()
                        conn = None
                except (OSError, ValueError) as exc:
                    result = Result(rid, sent, time.time(), None, error=repr(exc))
                    if conn is not None:
                        conn.close()
                        conn = None
                mine.append(result)
                pause = sent + 1.0 / RATE_PER_THREAD - time.time()
                if pause > 0:
                    time.sleep(pause)
                if len(mine) >= 64:
                    with self._lock:
                        self.results.extend(mine)
                    mine = []
        finally:
            if conn is not None:
                conn.close()
            with self._lock:
                self.results.extend(mine)


# -- the setup -----------------------------------------------------------------------------------


def gateway_config(a: LocalCluster, b: LocalCluster) -> dict:
    """The gateway config ``gateway demo`` writes (see ``_write_config`` in gateway/demo.py)."""
    return {
        "sources": [
            {"name": f"cluster-{c.name}", "type": "kubernetes", "kubeconfig": str(c.kubeconfig),
             "namespaces": ["default"]}
            for c in (a, b)
        ],
        "services": [{
            "name": "httpbin", "port": "http",
            "health_check": {"type": "http", "path": "/healthz", "interval": "500ms", "timeout": "300ms",
                             "jitter": "50ms", "healthy_threshold": 2, "unhealthy_threshold": 2},
        }],
        "routes": [{
            "name": "test", "match": {"path": {"prefix": "/test"}}, "service": "default/httpbin",
            "retries": {"attempts": 3, "on_timeout": True, "per_try_timeout": "1s"},
        }],
    }


def wait_both_clusters_serve(gw: GatewayProcess, timeout: float = 15.0) -> None:
    """Bounded warm-up: requests until both clusters have answered."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    with gw.client() as c:
        while seen != {"a", "b"}:
            assert time.monotonic() < deadline, f"only clusters {seen} answered after {timeout}s"
            resp = c.request("GET", "/test/warmup")
            if resp.status == 200:
                seen.add(resp.json()["cluster"])
            else:
                time.sleep(0.1)


@dataclass
class Run:
    mode: str
    results: list[Result]
    log: dict[str, dict]        # request id -> access log line
    a_hosts: set[str]
    start: float
    fault: float
    repair: float
    back: float                 # send time from which every pod of A answered again after the repair
    end: float

    def cluster_of(self, r: Result) -> str | None:
        return self.log[r.request_id].get("upstream_cluster")

    def touched_a(self, r: Result) -> bool:
        """Answered by A, or tried on A before a retry went elsewhere (as demo.py counts it)."""
        e = self.log[r.request_id]
        return e.get("upstream_cluster") == "cluster-a" or bool(self.a_hosts & set(e.get("tried_hosts", ())))

    def sent_between(self, lo: float, hi: float) -> list[Result]:
        return [r for r in self.results if lo <= r.sent < hi]

    def share_a(self, results: list[Result]) -> float:
        assert results
        return sum(1 for r in results if self.cluster_of(r) == "cluster-a") / len(results)


def run_failover(tmp_path: Path, mode: str, a_pods: int = 1, b_pods: int = 1) -> Run:
    a_ips = [f"127.0.0.{2 + 2 * i}" for i in range(a_pods)]
    b_ips = [f"127.0.0.{3 + 2 * i}" for i in range(b_pods)]
    a = LocalCluster("a", tmp_path / "cluster-a", a_ips, port=0)
    b = LocalCluster("b", tmp_path / "cluster-b", b_ips, port=0)
    gw = load = None
    try:
        a.start()
        b.start()
        gw = GatewayProcess(gateway_config(a, b), tmp_path).start()
        wait_both_clusters_serve(gw)
        a_hosts = {f"{ip}:{a.port}" for ip in a_ips}
        start = time.time()
        load = Load(gw.host, gw.port, mode).start(deadline=start + BEFORE + DURING + BACK_WITHIN + AFTER + 5)
        time.sleep(BEFORE)
        fault = time.time()
        break_cluster("crash" if mode == "panic" else mode, a)
        time.sleep(max(0.0, fault + DURING - time.time()))
        repair = time.time()
        repair_cluster("crash" if mode == "panic" else mode, a)
        back = None
        limit = time.time() + BACK_WITHIN
        while back is None and time.time() < limit:
            back = all_serving_since(load.snapshot(), repair, "a", a_pods)
            time.sleep(0.1)
        if back is not None:
            time.sleep(max(0.0, back + AFTER - time.time()))
        results = load.stop()
        end = time.time()
        load = None
        log = gw.log.by_ids([r.request_id for r in results if r.status is not None], timeout=10)
    except BaseException:
        if gw is not None:
            print(gw.output()[-3000:])
        raise
    finally:
        if load is not None:
            load.stop()
        if gw is not None:
            gw.stop()
        a.close()
        b.close()
    run = Run(mode, results, log, a_hosts, start, fault, repair, back or end, end)
    run_report(run, gw)
    assert back is not None, f"cluster A did not serve again within {BACK_WITHIN}s of the repair"
    return run


def all_serving_since(results: list[Result], since: float, cluster: str, pods: int) -> float | None:
    """The send time by which each of the cluster's pods has answered a request sent after
    ``since`` (its pods' health checks pass one by one), or None while one has not yet."""
    first: dict[str, float] = {}
    for r in results:
        if r.sent >= since and r.cluster == cluster:
            first[r.pod] = min(first.get(r.pod, r.sent), r.sent)
    return max(first.values()) if len(first) == pods else None


def run_report(run: Run, gw: GatewayProcess) -> None:
    failed = [r for r in run.results if r.status != 200]
    on_a = [r.sent for r in run.sent_between(run.fault, run.repair) if run.touched_a(r)]
    last_a = max(on_a, default=run.fault)
    latencies = [r.done - r.sent for r in run.results]
    slowest = sorted(run.results, key=lambda r: r.sent - r.done)[:3]
    for r in slowest:
        print(f"slow: sent at fault{r.sent - run.fault:+.3f}s took {(r.done - r.sent) * 1000:.1f} ms",
              run.log.get(r.request_id))
    during = [r.done - r.sent for r in run.sent_between(run.fault - 1.0, run.repair)]
    retried = sum(1 for e in run.log.values() if e.get("attempts", 1) > 1)
    print(f"\nFAILOVER mode={run.mode} requests={len(run.results)} failed={len(failed)} "
          f"fault_to_last_request_on_a_s={last_a - run.fault:.3f} requests_on_a_after_fault={len(on_a)} "
          f"max_latency_ms={max(latencies) * 1000:.1f} max_latency_during_fault_ms={max(during) * 1000:.1f} "
          f"retried={retried} repair_to_all_of_a_s={run.back - run.repair:.3f} "
          f"rate={len(run.results) / (run.end - run.start):.0f}/s")
    if failed:
        for r in failed[:20]:
            print("FAILED", r, run.log.get(r.request_id))
        print(gw.output()[-5000:])


def check_run(run: Run, share_a: float) -> None:
    results = run.results
    assert len(results) >= MIN_REQUESTS, f"only {len(results)} requests"
    errors = [r for r in results if r.status is None]
    assert not errors, f"{len(errors)} connection errors, first: {errors[:3]}"
    bad = [(r.status, run.log[r.request_id].get("error")) for r in results if not 200 <= r.status < 300]
    assert not bad, f"{len(bad)} non-2xx responses, first: {bad[:5]}"
    # The access log agrees with the backend that answered.
    for r in results:
        assert run.cluster_of(r) == f"cluster-{r.cluster}", (r, run.log[r.request_id])

    before = run.sent_between(run.start, run.fault)
    assert len(before) >= 200
    assert run.share_a(before) == pytest.approx(share_a, abs=SPLIT_TOLERANCE)

    on_a = [r.sent for r in run.sent_between(run.fault, run.repair) if run.touched_a(r)]
    last_a = max(on_a, default=run.fault)
    assert last_a - run.fault < LAST_ON_A_WITHIN, f"still sent to A {last_a - run.fault:.2f}s after the fault"
    only_b = run.sent_between(last_a + 1e-6, run.repair)
    assert len(only_b) >= 200, f"only {len(only_b)} requests between the last one on A and the repair"
    assert {run.cluster_of(r) for r in only_b} == {"cluster-b"}
    assert not any(run.log[r.request_id].get("tried_hosts") for r in only_b), "retries while A was out"

    after = run.sent_between(run.back, run.end)
    assert len(after) >= 200, f"only {len(after)} requests after A came back"
    assert run.share_a(after) == pytest.approx(share_a, abs=SPLIT_TOLERANCE)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["graceful", "crash", "down", "hang"])
def test_failover_loses_no_request(tmp_path, mode):
    run = run_failover(tmp_path, mode)
    check_run(run, share_a=0.5)


@pytest.mark.timeout(60)
def test_panic_three_dead_pods_in_a_send_everything_to_bs_single_pod(tmp_path):
    """3 pods in A + 1 in B, A crashes: 1 healthy of 4 is below the panic threshold (0.5),
    but panic routing must not send traffic back to the dead cluster: all of it goes to
    B's one pod, and no request fails."""
    run = run_failover(tmp_path, "panic", a_pods=3, b_pods=1)
    check_run(run, share_a=0.75)
    during = run.sent_between(run.fault + LAST_ON_A_WITHIN, run.repair)
    assert len(during) >= 100
    hosts = {run.log[r.request_id]["upstream_host"] for r in during}
    assert len(hosts) == 1 and hosts.pop().startswith("127.0.0.3:")
