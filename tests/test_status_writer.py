"""One status writer among replicas: the holder of a coordination.k8s.io Lease writes
Gateway API status, every replica serves.

Three gateway processes (``workers: 2`` each) against one local API server, as three pods
would be; the third disagrees with the others: its credentials may not read Services (403,
so every backendRef is BackendNotFound to it) and it has another address pool (another
``status.addresses``), as a replica of another version or with less RBAC would.  Short
lease timings keep the takeover quick; every wait is bounded.
"""
from __future__ import annotations

import os
import signal
import time

import pytest
from kubernetes import client, config

from support import Client, start_with_admin, wait_listening
from gateway.devcluster.apiserver import ApiServerProcess
from test_gatewayapi import CONTROLLER, GW, NS, add_backend_service, kube_source, wait_for

LEASE = {"lease_duration": "2s", "renew_deadline": "1500ms", "retry_period": "300ms", "namespace": NS}
LEASE_DURATION = 2.0
POOLS = (["127.0.27.1"], ["127.0.27.1"], ["127.0.27.2"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, backend_a):
    server = ApiServerProcess(tmp_path_factory.mktemp("api"), name="writer", bookmark_interval=0.5).start()
    with config.new_client_from_config(config_file=str(server.kubeconfig), context=server.context) as api:
        add_backend_service(api, NS, "svc-a", backend_a)
        custom = client.CustomObjectsApi(api)
        custom.create_cluster_custom_object(GW, "v1", "gatewayclasses", {
            "metadata": {"name": "ours"}, "spec": {"controllerName": CONTROLLER}})
        custom.create_namespaced_custom_object(GW, "v1", NS, "gateways", {
            "metadata": {"name": "gw"}, "spec": {"gatewayClassName": "ours", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"}]}})
        for i in range(3):
            route(custom, f"r{i}", f"/r{i}")
        yield server, custom
    server.stop()


def route(custom, name: str, path: str) -> None:
    custom.create_namespaced_custom_object(GW, "v1", NS, "httproutes", {
        "metadata": {"name": name}, "spec": {"parentRefs": [{"name": "gw"}], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": path}}],
            "backendRefs": [{"name": "svc-a", "port": 80}]}]}})


@pytest.fixture(scope="module")
def replicas(cluster, tmp_path_factory):
    server, _ = cluster
    started = []
    try:
        for i, pool in enumerate(POOLS):
            workdir = tmp_path_factory.mktemp(f"replica{i}")
            source = kube_source(server)
            if i == 2:
                source["kubeconfig"] = str(server.restricted_kubeconfig(workdir / "kubeconfig", ("services",)))
            started.append(start_with_admin(
                {"workers": 2, "sources": [source],
                 "gateway_api": {"addresses": pool, "leader_election": LEASE}},
                workdir, f"replica{i}"))
        yield started
    finally:
        for proc, _ in started:
            proc.stop()


def status_writes(server) -> int:
    return sum(n for name, n in server.state()["writes"].items() if name.endswith("/status"))


def writer(replicas, alive=None) -> list[int]:
    """The replicas that say they write status."""
    return [i for i, (proc, admin) in enumerate(replicas) if (alive is None or i in alive)
            and admin.get("/status")["gateway_api"]["writes_status"]]


def route_generation_seen(custom, name: str) -> int | None:
    obj = custom.get_namespaced_custom_object(GW, "v1", NS, "httproutes", name)
    parents = (obj.get("status") or {}).get("parents") or ()
    observed = [c["observedGeneration"] for p in parents for c in p["conditions"]]
    return min(observed) if observed and min(observed) == obj["metadata"]["generation"] else None


def test_one_replica_writes_and_disagreeing_replicas_do_not_fight(cluster, replicas):
    server, custom = cluster
    leaders = wait_for(lambda: writer(replicas) if len(writer(replicas)) == 1 else None, timeout=20)
    lease = client.CoordinationV1Api(custom.api_client).read_namespaced_lease(
        "gateway.example-multi-cluster-status-writer", NS)
    status = replicas[leaders[0]][1].get("/status")["gateway_api"]["leader_election"]
    assert lease.spec.holder_identity == status["identity"] == status["leader"]
    for name in ("r0", "r1", "r2"):
        wait_for(lambda: route_generation_seen(custom, name))
    # The third replica is refused Services indeed (so it would write BackendNotFound).
    errors = wait_for(lambda: replicas[2][1].get("/status")["gateway_api"]["errors"])
    assert any("services" in loop and "403" in error for loop, error in errors.items()), errors
    # ... and, not seeing every kind, it does not campaign for the Lease.
    assert leaders != [2] and replicas[2][1].get("/status")["gateway_api"]["leader_election"] is None
    # The replicas that can read Services serve.
    wait_listening(POOLS[0][0], 80, 20)
    with Client(POOLS[0][0], 80) as c:
        assert c.request("GET", "/r1").status == 200
    # Settled: nobody writes status while nothing changes, though replica 2 would write
    # BackendNotFound and another address.
    before = status_writes(server)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert status_writes(server) - before <= 1, server.state()["writes"]
        time.sleep(0.2)
    after = status_writes(server)
    print(f"\nthree replicas, one denied Services, settled: {after - before} status writes in 10 s")
    assert [i for i, (_, admin) in enumerate(replicas)
            if admin.get("/status")["gateway_api"]["status_writes"]] == leaders


def test_a_killed_leader_is_replaced_within_the_lease_duration(cluster, replicas):
    server, custom = cluster
    (leader,) = wait_for(lambda: writer(replicas) if len(writer(replicas)) == 1 else None, timeout=20)
    proc = replicas[leader][0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.proc.wait(timeout=10)
    killed = time.monotonic()
    custom.patch_namespaced_custom_object(GW, "v1", NS, "httproutes", "r2", {"spec": {"rules": [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/r2-changed"}}],
        "backendRefs": [{"name": "svc-a", "port": 80}]}]}})
    wait_for(lambda: route_generation_seen(custom, "r2"), timeout=20)
    took = time.monotonic() - killed
    alive = {i for i in range(len(replicas)) if i != leader}
    (successor,) = wait_for(lambda: writer(replicas, alive) or None)
    assert successor != 2                   # the replica that cannot read Services never writes
    print(f"\nleader killed: the next status written by replica {successor} after {took:.2f} s")
    # Expiry is judged by local observation (client-go): up to a jittered retry to see the
    # last renewal, the lease duration, a jittered retry to take it, then the write.
    assert took < LEASE_DURATION + 2 * 0.3 * 2.2 + 1.0, took
