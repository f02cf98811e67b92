"""Multi-cluster Kubernetes service sources, merged same-name services: end to end.

Two local clusters (``gateway.devcluster.LocalCluster``: a real API server process each, driven
with the official ``kubernetes`` client, and httpbin pod processes on loopback addresses):
cluster A's pod on 127.0.0.2, cluster B's on 127.0.0.3, both on the same port. A gateway
process watches both with ``type: kubernetes`` sources and merges ``default/httpbin``.

What the gateway routes is read from two places it writes itself: its JSON log on stderr
("endpoints changed" with each changed service's endpoint list, warnings, errors) and its access log
(``upstream_host``, ``upstream_cluster``). No mocks; every wait is bounded; every process is
stopped by pid in a fixture's finalizer. Module-scoped clusters and gateway; a test that changes
a cluster puts it back and waits until the gateway has seen it.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
import yaml

from support import PYTHON, REPO, GatewayProcess
from gateway.devcluster.cluster import LocalCluster

A_IP, B_IP = "127.0.0.2", "127.0.0.3"
A_EXTRA = ["127.0.0.4", "127.0.0.6"]        # cluster A grows onto these
C_IP = "127.0.0.5"                          # the v1-Endpoints-only cluster
C_EXTRA = "127.0.0.7"
NS = "default"
WEB_SERVICE_PORT = 8000                     # "web": Service port 8000 -> targetPort "http" (the pods' port)
PROP_SERVICE_PORT = 80                      # "prop": Service port 80, slice lists A's and B's pods

SVC = f"{NS}/httpbin"
WEB = f"{NS}/web"
LOG_SOURCE = "gateway.sources.kubernetes"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_propagation", REPO / "bench" / "propagation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module         # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# -- cluster objects written with the kubernetes client ------------------------------------------


def _service(name: str, port: int) -> dict:
    """A selector-less Service whose port maps to the pods' port by name."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]}}


def _slice(name: str, service: str, ips: list[str], port: int) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": NS,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}


def _kube_source(name: str, cluster: LocalCluster, weight: int | None = None, **extra) -> dict:
    src = {"name": name, "type": "kubernetes", "kubeconfig": str(cluster.kubeconfig),
           "context": cluster.context, "namespaces": [NS], **extra}
    if weight is not None:
        src["weight"] = weight
    return src


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    state = tmp_path_factory.mktemp("k8s")
    a = LocalCluster("a", state / "a", [A_IP], port=0, bookmark_interval=0.5)
    b = None
    try:
        a.start()
        # Same pod port in both clusters: one EndpointSlice ("prop") can list pods of both.
        b = LocalCluster("b", state / "b", [B_IP], port=a.port, bookmark_interval=0.5).start()
        for cluster, ip in ((a, A_IP), (b, B_IP)):
            cluster.core_v1().create_namespaced_service(NS, _service("web", WEB_SERVICE_PORT))
            cluster.discovery_v1().create_namespaced_endpoint_slice(NS, _slice("web-1", "web", [ip], a.port))
        a.core_v1().create_namespaced_service(NS, _service("prop", PROP_SERVICE_PORT))
        a.discovery_v1().create_namespaced_endpoint_slice(NS, _slice("prop-1", "prop", [A_IP, B_IP], a.port))
        yield a, b
    finally:
        if b is not None:
            b.close()
        a.close()


@pytest.fixture(scope="module")
def gw(clusters, tmp_path_factory):
    a, b = clusters
    config = {
        "sources": [_kube_source("cluster-a", a), _kube_source("cluster-b", b)],
        # round_robin: the tests assert smooth WRR's exact splits (least_request, the default,
        # also weighs what is in flight).
        "services": [{"name": "httpbin", "port": "http", "lb": {"policy": "round_robin"}},
                     {"name": "web", "port": WEB_SERVICE_PORT, "lb": {"policy": "round_robin"}},
                     {"name": "prop", "port": PROP_SERVICE_PORT, "sources": ["cluster-a"],
                      "lb": {"policy": "round_robin"}}],
        "routes": [{"name": "httpbin", "match": {"path": {"prefix": "/httpbin"}}, "service": "httpbin"},
                   {"name": "web", "match": {"path": {"prefix": "/web"}}, "service": "web"},
                   {"name": "prop", "match": {"path": {"prefix": "/prop"}}, "service": "prop"}],
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("gw-k8s")).start()
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _baseline(request):
    """Every test that uses the shared gateway starts from (and must leave) one pod per cluster."""
    if "gw" not in request.fixturenames:
        yield
        return
    gw = request.getfixturevalue("gw")
    a, b = request.getfixturevalue("clusters")
    wait_table(gw, SVC, {host(A_IP, a), host(B_IP, b)}, timeout=20)
    yield


# -- helpers ------------------------------------------------------------------------------------------


def host(ip: str, cluster: LocalCluster) -> str:
    return f"{ip}:{cluster.port}"


def log_records(gw: GatewayProcess) -> list[dict]:
    """The gateway's JSON log lines (stderr), in order."""
    records = []
    for line in gw.output().splitlines():
        if line.startswith("{"):
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pass                        # a line still being written
    return records


def tables(gw: GatewayProcess, since: int = 0) -> list[dict]:
    """The whole endpoint view after each change the gateway applied whose log line comes
    after the first ``since`` (each "endpoints changed" line names the services it changed)."""
    view: dict = {}
    out = []
    for i, r in enumerate(log_records(gw)):
        if r.get("message") != "endpoints changed":
            continue
        for key, hosts in r["endpoints"].items():
            if hosts is None:
                view.pop(key, None)
            else:
                view[key] = hosts
        if i >= since:
            out.append(dict(view))
    return out


def wait_table(gw: GatewayProcess, service: str, expected: set[str], timeout: float = 10.0) -> list[str]:
    """Wait until the last applied snapshot lists exactly ``expected`` (healthy, once each) for ``service``."""
    deadline = time.monotonic() + timeout
    while True:
        snaps = tables(gw)
        current = snaps[-1].get(service, []) if snaps else []
        if sorted(current) == sorted(expected):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"{service}: gateway serves {current}, expected {sorted(expected)}\n"
                                 f"{gw.output()[-3000:]}")
        time.sleep(0.05)


def wait_log(gw: GatewayProcess, predicate, since: int = 0, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for record in log_records(gw)[since:]:
            if predicate(record):
                return record
        if time.monotonic() > deadline:
            raise AssertionError(f"no such log line within {timeout}s:\n{gw.output()[-3000:]}")
        time.sleep(0.05)


_tags = iter(range(1_000_000))


def send(gw: GatewayProcess, path: str, n: int, connections: int = 2) -> list[dict]:
    """``n`` GETs over keep-alive connections in threads; all must be 200. Their access log lines."""
    tag = next(_tags)
    ids = [[f"t{tag}-{c}-{i}" for i in range(c, n, connections)] for c in range(connections)]
    errors: list[str] = []

    def run(batch: list[str]) -> None:
        try:
            with gw.client() as c:
                for rid in batch:
                    resp = c.request("GET", f"{path}/{rid}", {"X-Request-Id": rid})
                    if resp.status != 200:
                        errors.append(f"{rid}: {resp.status} {resp.body[:200]!r}")
        except Exception as exc:        # noqa: BLE001 - reported below
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(batch,)) for batch in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "requests did not finish within 60 s"
    assert not errors, errors[:5]
    entries = gw.log.by_ids([rid for batch in ids for rid in batch])
    return list(entries.values())


def by(entries: list[dict], key: str) -> Counter:
    return Counter(e.get(key) for e in entries)


class RequestLoop:
    """Requests in a thread (one keep-alive connection, reopened if closed) until ``stop()``."""

    def __init__(self, gw: GatewayProcess, path: str = "/httpbin/loop", limit: float = 60.0) -> None:
        self.gw, self.path, self.limit = gw, path, limit
        self.statuses: Counter = Counter()
        self.clusters: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        conn = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = self.gw.client(timeout=5)
                resp = conn.request("GET", self.path)
                self.statuses[resp.status] += 1
                if resp.status == 200:
                    self.clusters.append((time.monotonic(), resp.json()["cluster"]))
                if resp.closes:
                    conn.close()
                    conn = None
            except Exception as exc:    # noqa: BLE001 - counted as a failure
                self.statuses[type(exc).__name__] += 1
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.002)
        if conn is not None:
            conn.close()

    def __enter__(self) -> "RequestLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def count(self) -> int:
        return sum(self.statuses.values())

    def wait_more(self, n: int, timeout: float = 10.0) -> None:
        """Wait (bounded) until ``n`` more requests have been answered."""
        target = self.count() + n
        deadline = time.monotonic() + timeout
        while self.count() < target and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.count() >= target, f"request loop stalled: {self.statuses}"

    def failures(self) -> dict:
        return {k: v for k, v in self.statuses.items() if not (isinstance(k, int) and 200 <= k < 300)}

    def served_since(self, t: float) -> Counter:
        return Counter(c for when, c in self.clusters if when >= t)


def assert_even(entries: list[dict]) -> None:
    """Both clusters serve, evenly: smooth WRR over two equal weights alternates, give or take
    the current weights the endpoints carried from the table before (kept across snapshots)."""
    counts = by(entries, "upstream_cluster")
    assert set(counts) == {"cluster-a", "cluster-b"}, counts
    assert abs(counts["cluster-a"] - counts["cluster-b"]) <= 2, counts


def assert_tables_complete(gw: GatewayProcess, since: int, expected: set[str]) -> None:
    """Every snapshot applied after log line ``since`` has each expected endpoint exactly once."""
    for table in tables(gw, since):
        hosts = table.get(SVC, [])
        assert len(hosts) == len(set(hosts)), f"duplicated endpoint: {hosts}"
        assert set(hosts) == expected, f"a snapshot served {hosts}, expected {sorted(expected)}"


# -- merged service, split and weights --------------------------------------------------------


def test_merged_service_has_both_clusters_and_splits_500_500(gw, clusters):
    a, b = clusters
    entries = send(gw, "/httpbin/split", 1000)
    assert by(entries, "upstream_cluster") == {"cluster-a": 500, "cluster-b": 500}
    assert by(entries, "upstream_host") == {host(A_IP, a): 500, host(B_IP, b): 500}
    assert by(entries, "upstream_service") == {SVC: 1000}


def test_source_weights_100_300_split_250_750(clusters, tmp_path):
    a, b = clusters
    config = {
        "sources": [_kube_source("cluster-a", a, weight=100), _kube_source("cluster-b", b, weight=300)],
        "services": [{"name": "httpbin", "port": "http", "lb": {"policy": "round_robin"}}],   # exact WRR
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}],
    }
    proc = GatewayProcess(config, tmp_path, "weights").start()
    try:
        wait_table(proc, SVC, {host(A_IP, a), host(B_IP, b)})
        entries = send(proc, "/weighted", 1000)
        assert by(entries, "upstream_cluster") == {"cluster-a": 250, "cluster-b": 750}
        assert by(entries, "upstream_host") == {host(A_IP, a): 250, host(B_IP, b): 750}
    finally:
        proc.stop()


# -- deletions ----------------------------------------------------------------------------------------


def test_deleted_endpointslice_sends_everything_to_the_other_cluster(gw, clusters):
    a, b = clusters
    discovery = a.discovery_v1()
    name = a.layout.slice_name
    saved = a.api_client.sanitize_for_serialization(discovery.read_namespaced_endpoint_slice(name, NS))
    discovery.delete_namespaced_endpoint_slice(name, NS)
    try:
        a.core_v1().read_namespaced_service("httpbin", NS)      # the Service stays
        wait_table(gw, SVC, {host(B_IP, b)})
        entries = send(gw, "/httpbin/sliceless", 200)
        assert by(entries, "upstream_cluster") == {"cluster-b": 200}
    finally:
        for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            saved["metadata"].pop(key, None)
        discovery.create_namespaced_endpoint_slice(NS, saved)
    wait_table(gw, SVC, {host(A_IP, a), host(B_IP, b)})
    assert_even(send(gw, "/httpbin/slice-back", 200))


def test_deleted_service_sends_everything_to_the_other_cluster(gw, clusters):
    a, b = clusters
    a.remove_service()
    try:
        wait_table(gw, SVC, {host(B_IP, b)})
        entries = send(gw, "/httpbin/serviceless", 200)
        assert by(entries, "upstream_cluster") == {"cluster-b": 200}
    finally:
        a.restore_service()
    wait_table(gw, SVC, {host(A_IP, a), host(B_IP, b)})
    assert_even(send(gw, "/httpbin/service-back", 200))


# -- scaling, readiness, termination ----------------------------------------------------------------


def test_scale_up_and_down_not_ready_and_terminating_endpoints(gw, clusters):
    a, b = clusters
    a2, a4, a6, b3 = host(A_IP, a), host(A_EXTRA[0], a), host(A_EXTRA[1], a), host(B_IP, b)
    try:
        a.scale(3, ips=A_EXTRA)
        wait_table(gw, SVC, {a2, a4, a6, b3})
        counts = by(send(gw, "/httpbin/scaled", 400), "upstream_host")
        assert set(counts) == {a2, a4, a6, b3}
        assert all(98 <= n <= 102 for n in counts.values()), counts

        a.set_ready(A_EXTRA[0], False)
        wait_table(gw, SVC, {a2, a6, b3})
        counts = by(send(gw, "/httpbin/not-ready", 300), "upstream_host")
        assert a4 not in counts and set(counts) == {a2, a6, b3}, counts

        a.set_terminating(A_EXTRA[1])
        ep = {e.addresses[0]: e.conditions
              for e in a.discovery_v1().read_namespaced_endpoint_slice(a.layout.slice_name, NS).endpoints}
        assert (ep[A_EXTRA[1]].serving, ep[A_EXTRA[1]].ready, ep[A_EXTRA[1]].terminating) == (True, False, True)
        wait_table(gw, SVC, {a2, b3})
        entries = send(gw, "/httpbin/terminating", 200)
        assert set(by(entries, "upstream_host")) == {a2, b3}, by(entries, "upstream_host")
        assert_even(entries)
    finally:
        a.scale(1)
    wait_table(gw, SVC, {a2, b3})
    assert_even(send(gw, "/httpbin/scaled-back", 200))


# -- ports --------------------------------------------------------------------------------------------


def test_port_name_and_service_port_number_resolve_to_the_target_port(gw, clusters):
    a, b = clusters
    assert a.port != WEB_SERVICE_PORT
    # port: http (a name) on httpbin; port: 8000 (the Service's port, targetPort "http") on web.
    assert sorted(wait_table(gw, WEB, {host(A_IP, a), host(B_IP, b)})) == sorted(wait_table(
        gw, SVC, {host(A_IP, a), host(B_IP, b)}))
    entries = send(gw, "/web/x", 100)
    assert set(by(entries, "upstream_host")) == {host(A_IP, a), host(B_IP, b)}
    assert_even(entries)
    assert by(entries, "upstream_service") == {WEB: 100}
    wait_table(gw, f"{NS}/prop", {host(A_IP, a), host(B_IP, b)})    # port: 80, both pods in A's slice


# -- watch robustness ----------------------------------------------------------------------------


def test_api_server_restart_loses_nothing_and_the_watch_resumes(gw, clusters):
    a, b = clusters
    both = {host(A_IP, a), host(B_IP, b)}
    mark = len(log_records(gw))
    with RequestLoop(gw) as loop:
        loop.wait_more(10)
        a.stop_api()
        loop.wait_more(10)
        a.start_api()
        wait_log(gw, lambda r: r.get("message") == "cluster API reachable again"
                 and r.get("source") == "cluster-a", since=mark)
        t = time.monotonic()
        loop.wait_more(20)
    assert not loop.failures(), loop.failures()
    assert set(loop.served_since(t)) == {"a", "b"}
    assert_tables_complete(gw, mark, both)
    # The watch resumed: a change written after the restart reaches the gateway.
    try:
        a.scale(2, ips=A_EXTRA[:1])
        wait_table(gw, SVC, both | {host(A_EXTRA[0], a)})
    finally:
        a.scale(1)
    wait_table(gw, SVC, both)


def test_dropped_watches_and_an_api_restart_resume_without_a_list(gw, clusters):
    """A LIST of a big cluster is the expensive call: a dropped watch, or an API server that
    restarts with its history, resumes from the last version seen; only 410 relists."""
    a, b = clusters
    both = {host(A_IP, a), host(B_IP, b)}
    listed = a.api.state()["lists"]        # since this API process started
    assert a.api.drop_watches() >= 2
    a.set_ready(A_IP, False)                # written while the watches reconnect
    try:
        wait_table(gw, SVC, {host(B_IP, b)})
    finally:
        a.set_ready(A_IP, True)
    wait_table(gw, SVC, both)
    assert a.api.state()["lists"] == listed, "a dropped watch relisted"
    a.stop_api()
    time.sleep(1.0)                         # a few reconnect attempts against a closed port
    a.start_api()                           # a new process: its LIST counts start at zero
    a.set_ready(A_IP, False)
    try:
        wait_table(gw, SVC, {host(B_IP, b)})
    finally:
        a.set_ready(A_IP, True)
    wait_table(gw, SVC, both)
    deadline = time.monotonic() + 10        # both watches back (one may still be in backoff)
    while a.api.state()["watches"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert a.api.state()["lists"] == {}, "the restart relisted"


def test_forced_410_relists_without_a_window_of_zero_endpoints(gw, clusters):
    a, b = clusters
    both = {host(A_IP, a), host(B_IP, b)}
    mark = len(log_records(gw))
    with RequestLoop(gw) as loop:
        loop.wait_more(20)
        listed = a.api.state()["lists"]     # before: a watcher may relist at once
        a.api.expire_history()
        dropped = a.api.drop_watches(graceful=True)     # the watchers come back with an old version
        assert dropped >= 2
        wait_log(gw, lambda r: r.get("message", "").startswith("watch expired (410")
                 and r.get("source") == "cluster-a", since=mark)
        t = time.monotonic()
        loop.wait_more(20)
    assert not loop.failures(), loop.failures()
    assert set(loop.served_since(t)) == {"a", "b"}
    assert_tables_complete(gw, mark, both)
    assert not [r for r in log_records(gw)[mark:] if r.get("level") in ("warning", "error")
                and r.get("logger") == LOG_SOURCE], "a 410 is routine: no warning"
    # Relisted (once per resource watched) and watching again.
    deadline = time.monotonic() + 10
    while True:
        relisted = a.api.state()["lists"]
        if all(relisted.get(r, 0) > listed.get(r, 0) for r in ("endpointslices", "services")) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    time.sleep(0.5)                         # no second relist follows
    relisted = a.api.state()["lists"]
    assert relisted.get("endpointslices", 0) == listed.get("endpointslices", 0) + 1, (listed, relisted)
    assert relisted.get("services", 0) == listed.get("services", 0) + 1, (listed, relisted)
    try:
        a.set_ready(A_IP, False)
        wait_table(gw, SVC, {host(B_IP, b)})
    finally:
        a.set_ready(A_IP, True)
    wait_table(gw, SVC, both)


def test_api_server_down_keeps_endpoints_stale_and_warns_once(gw, clusters):
    a, b = clusters
    both = {host(A_IP, a), host(B_IP, b)}
    mark = len(log_records(gw))
    try:
        with RequestLoop(gw) as loop:
            loop.wait_more(10)
            a.stop_api()
            time.sleep(2.5)             # several reconnect attempts (backoff from 0.2 s)
            loop.wait_more(10)
        assert not loop.failures(), loop.failures()
        assert set(loop.served_since(0)) == {"a", "b"}
        assert_tables_complete(gw, mark, both)
        warnings = [r for r in log_records(gw)[mark:]
                    if r.get("level") == "warning" and r.get("logger") == LOG_SOURCE]
        assert len(warnings) == 1, warnings
        assert warnings[0]["source"] == "cluster-a"
        assert "stale" in warnings[0]["message"] and "unreachable" in warnings[0]["message"]
        assert warnings[0].get("error")
    finally:
        a.start_api()
    wait_log(gw, lambda r: r.get("message") == "cluster API reachable again"
             and r.get("source") == "cluster-a", since=mark)
    assert len([r for r in log_records(gw)[mark:] if r.get("level") == "warning"]) == 1
    wait_table(gw, SVC, both)


# -- v1 Endpoints fallback ----------------------------------------------------------------------


def test_v1_endpoints_fallback_serves(tmp_path):
    c = LocalCluster("c", tmp_path / "c", [C_IP], port=0, endpoint_slices=False, bookmark_interval=0.5)
    proc = None
    try:
        c.start()
        config = {"sources": [_kube_source("cluster-c", c)],
                  "services": [{"name": "httpbin", "port": "http"}],
                  "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}]}
        proc = GatewayProcess(config, tmp_path, "fallback").start()
        wait_log(proc, lambda r: "watching v1 Endpoints" in r.get("message", "")
                 and r.get("source") == "cluster-c")
        wait_table(proc, SVC, {host(C_IP, c)})
        assert by(send(proc, "/v1", 50), "upstream_host") == {host(C_IP, c): 50}
        c.scale(2, ips=[C_EXTRA])
        wait_table(proc, SVC, {host(C_IP, c), host(C_EXTRA, c)})
        c.set_ready(C_EXTRA, False)                     # notReadyAddresses get no traffic
        wait_table(proc, SVC, {host(C_IP, c)})
        assert by(send(proc, "/v1-not-ready", 50), "upstream_host") == {host(C_IP, c): 50}
    finally:
        if proc is not None:
            proc.stop()
        c.close()


# -- bad input ------------------------------------------------------------------------------------


def _validate(config: dict, path: Path) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run([PYTHON, "-m", "gateway", "validate", "--config", str(path)], cwd=str(REPO),
                          capture_output=True, text=True, timeout=60)


def test_validate_names_a_missing_kubeconfig_and_an_unknown_context(clusters, tmp_path):
    a, b = clusters
    missing = tmp_path / "nowhere" / "kubeconfig.yaml"
    config = {"listen": "127.0.0.1:8080",                 # validate only: nothing binds
              "sources": [_kube_source("cluster-a", a, context="no-such-context"),
                          {"name": "cluster-b", "type": "kubernetes", "kubeconfig": str(missing)}],
              "services": [{"name": "httpbin", "port": "http"}],
              "routes": [{"name": "all", "service": "httpbin"}]}
    result = _validate(config, tmp_path / "bad.yaml")
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert any("sources[0].context" in l and "no-such-context" in l and "not found" in l
               and a.context in l for l in lines), result.stderr
    assert any("sources[1].kubeconfig" in l and "not found" in l and str(missing) in l
               for l in lines), result.stderr
    config["sources"][0]["context"] = a.context
    config["sources"][1]["kubeconfig"] = str(b.kubeconfig)
    ok = _validate(config, tmp_path / "good.yaml")
    assert ok.returncode == 0, ok.stderr


def test_wrong_token_fails_one_source_while_the_other_serves(clusters, tmp_path):
    a, b = clusters
    doc = yaml.safe_load(Path(b.kubeconfig).read_text())
    for user in doc["users"]:
        user["user"]["token"] = "wrong-token"
    bad = tmp_path / "bad-kubeconfig.yaml"
    bad.write_text(yaml.safe_dump(doc))
    shutil.copymode(b.kubeconfig, bad)
    config = {"sources": [_kube_source("cluster-a", a),
                          {**_kube_source("cluster-b", b), "kubeconfig": str(bad)}],
              "services": [{"name": "httpbin", "port": "http"}],
              "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}]}
    proc = GatewayProcess(config, tmp_path, "badtoken").start()
    try:
        wait_table(proc, SVC, {host(A_IP, a)})
        assert by(send(proc, "/token", 100), "upstream_cluster") == {"cluster-a": 100}
        failure = wait_log(proc, lambda r: r.get("level") in ("error", "warning")
                           and r.get("source") == "cluster-b")
        error = failure.get("error", "")
        assert "401" in error and "Unauthorized" in error, failure
        assert "\n" not in error and "headers" not in error, failure      # one clear line
        assert not [r for r in log_records(proc) if r.get("level") in ("error", "warning")
                    and r.get("source") == "cluster-a"]
    finally:
        proc.stop()


# -- propagation delay -----------------------------------------------------------------------------


def test_propagation_delay_is_bounded(gw, clusters):
    a, _ = clusters
    bench = _load_bench()
    result = bench.measure(a.discovery_v1(), NS, "prop-1", gw.host, gw.port, "/prop", changes=10,
                           timeout=5.0)
    assert len(result.delays) == 10
    assert result.max < 2.0, result.summary()
