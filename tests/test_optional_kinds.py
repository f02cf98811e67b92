"""Optional kinds found by API discovery: a cluster without the Multi-Cluster Services or the
Gateway API CRDs must not hold a gateway back, and CRDs installed later are followed.

Real processes: local API servers started without some API groups (``absent_groups``, as a
cluster whose CRDs are not installed), the hooks that install or remove a group later, and
gateways (``python -m gateway run``) watching them with the official client. The re-check
interval is set small through ``GATEWAY_DISCOVERY_INTERVAL``. Every wait is bounded; every
process is stopped by its pid.
"""
from __future__ import annotations

import time

import pytest
from kubernetes import client, config

from support import AdminClient, Client, GatewayProcess, free_port
from gateway.devcluster.apiserver import ApiServerProcess
from test_gatewayapi import add_backend_service, kube_source, wait_for

MCS = "multicluster.x-k8s.io"
GW = "gateway.networking.k8s.io"
CONTROLLER = "gateway.example/multi-cluster"
INTERVAL = 0.5          # GATEWAY_DISCOVERY_INTERVAL in these tests (seconds)
# gateway_api.addresses of the test that creates a Gateway: its one Gateway listens there (port 80).
GATEWAY_ADDRESS = "127.0.47.1"
# Not waited for: what a gateway logged when it waited its sync timeout for a kind it could not list.
TIMEOUT_SIGNS = ("sync timeout", "listening before these", "watch failing", "API error 404")


@pytest.fixture
def interval(monkeypatch):
    monkeypatch.setenv("GATEWAY_DISCOVERY_INTERVAL", str(INTERVAL))     # the gateways inherit it
    return INTERVAL


def start_api(tmp_path_factory, name: str, backend, absent=()) -> tuple[ApiServerProcess, object]:
    server = ApiServerProcess(tmp_path_factory.mktemp(name), name=name, absent_groups=absent,
                              bookmark_interval=0.5).start()
    try:
        api = config.new_client_from_config(config_file=str(server.kubeconfig), context=server.context)
        add_backend_service(api, "default", "web", backend)
    except BaseException:
        server.stop()
        raise
    return server, api


@pytest.fixture
def servers(tmp_path_factory, backend_a):
    """Started API servers (and their clients), stopped at the end."""
    started = []

    def start(name: str, absent=()):
        server, api = start_api(tmp_path_factory, name, backend_a, absent)
        started.append((server, api))
        return server, api
    yield start
    for server, api in started:
        api.close()
        server.stop()


def test_discovery_asks_only_for_the_missing_group_versions(servers):
    """``OptionalKinds`` against a cluster without the MCS group: the first answer is one
    ``GET /apis`` plus the resource lists of the group-versions present; then each re-check asks
    for the missing group-version alone, until it is installed; a kind lost (404) is asked for
    again."""
    import threading
    from gateway.sources.discovery import SERVICE_EXPORTS, Kind, OptionalKinds
    server, api = servers("discovery", absent=(MCS,))
    routes, grants = Kind(GW, "v1", "httproutes"), Kind(GW, "v1beta1", "referencegrants")
    seen = []
    kinds = OptionalKinds([SERVICE_EXPORTS, routes, grants], interval=0.1,
                          on_served=lambda kind: seen.append(("served", kind)),
                          on_absent=lambda kind: seen.append(("absent", kind)),
                          on_error=lambda error: seen.append(("error", error)))
    stopping = threading.Event()
    thread = threading.Thread(target=kinds.run, args=(api, stopping), daemon=True)
    thread.start()
    try:
        wait_for(lambda: kinds.asked[f"/apis/{MCS}/v1alpha1"] >= 3)
        assert sorted(seen[:3]) == [("absent", SERVICE_EXPORTS), ("served", routes), ("served", grants)]
        assert kinds.asked["/apis"] == 1
        assert kinds.asked[f"/apis/{GW}/v1"] == kinds.asked[f"/apis/{GW}/v1beta1"] == 1
        assert kinds.state()[str(SERVICE_EXPORTS)] == "absent"

        server.install_group(MCS)
        wait_for(lambda: ("served", SERVICE_EXPORTS) in seen)
        asked = dict(kinds.asked)
        time.sleep(0.5)                                 # nothing missing: nothing asked
        assert dict(kinds.asked) == asked
        assert set(kinds.state().values()) == {"served"}

        kinds.lost(routes)                              # as after a 404 on its list or watch
        wait_for(lambda: seen.count(("served", routes)) == 2)
        assert kinds.asked[f"/apis/{GW}/v1"] == 2 and kinds.asked["/apis"] == 1
        assert not [event for event in seen if event[0] == "error"]
    finally:
        stopping.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def gateway_config(server, **extra) -> dict:
    return {"sources": [kube_source(server)], "services": [{"name": "web", "port": 80}],
            "routes": [{"name": "web", "match": {"path": {"prefix": "/web"}}, "service": "web"}], **extra}


def status_of(gw, path: str = "/web", at: tuple[str, int] | None = None) -> int | str:
    """The status of one request to the file's listener, or ``at`` a Gateway's (the backend's
    address when 200; "refused" while nothing listens there)."""
    try:
        with Client(*(at or (gw.host, gw.port))) as c:
            r = c.request("GET", path)
    except ConnectionRefusedError:
        return "refused"
    return r.json()["address"] if r.status == 200 else r.status


def assert_no_sync_timeout(gw) -> None:
    out = gw.output()
    for sign in TIMEOUT_SIGNS:
        assert sign not in out, f"{sign!r} in the gateway's log:\n{out[-3000:]}"


def time_to_ready(config_: dict, workdir) -> tuple[float, GatewayProcess]:
    """Seconds from starting the gateway to its admin readiness answering ready."""
    admin = free_port()
    gw = GatewayProcess({**config_, "admin": f"127.0.0.1:{admin}"}, workdir)
    started = time.monotonic()
    gw.start(timeout=30)
    try:
        admin_client = AdminClient(admin)
        admin_client.wait_up(gw.proc, timeout=30)
        wait_for(lambda: admin_client.request("GET", "/ready")[0] == 200, timeout=30, interval=0.01)
        return time.monotonic() - started, gw
    except BaseException:
        gw.stop()
        raise


def test_ready_as_fast_without_the_mcs_crds(servers, backend_a, tmp_path):
    """(a) With workers: 2, a gateway_api section and a kubernetes source, a cluster without the
    MCS group (no ServiceImport kind) makes the gateway ready without waiting for the sync
    timeout, as one with it does: the event checked is the log line a sync timeout writes,
    not a stopwatch (start times on a busy machine vary by seconds either way)."""
    with_mcs, _ = servers("with-mcs")
    without_mcs, _ = servers("without-mcs", absent=(MCS,))
    times: dict[str, float] = {}
    for label, server in (("without", without_mcs), ("with", with_mcs)):
        elapsed, gw = time_to_ready(gateway_config(server, workers=2, gateway_api={}), tmp_path / label)
        try:
            assert wait_for(lambda: status_of(gw) == backend_a.address)
            assert_no_sync_timeout(gw)
        finally:
            gw.stop()
        times[label] = elapsed
    print(f"\nready with the MCS CRDs: {times['with']:.2f} s, without: {times['without']:.2f} s")


def test_without_the_gateway_api_group_file_routes_serve_at_once(servers, backend_a, tmp_path, interval):
    """(b) No Gateway API CRDs: the gateway serves its file routes at once; the CRDs installed
    later are found by the re-check, and an HTTPRoute then serves; the CRDs deleted again stop
    its routes (and its Gateway's listener) and leave the kinds pending, so installing them once
    more is followed too."""
    server, api = servers("no-gwapi", absent=(GW,))
    gateway = (GATEWAY_ADDRESS, 80)                 # the Gateway's address and its listener's port
    elapsed, gw = time_to_ready(gateway_config(server, gateway_api={"addresses": [GATEWAY_ADDRESS]}),
                                tmp_path / "gw")
    try:
        print(f"\nready without the Gateway API CRDs: {elapsed:.2f} s")
        assert elapsed < 8.0            # the sync timeout is 10 s
        assert status_of(gw) == backend_a.address
        assert_no_sync_timeout(gw)

        def install_and_route() -> float:
            server.install_group(GW)
            custom = client.CustomObjectsApi(api)
            custom.create_cluster_custom_object(GW, "v1", "gatewayclasses", {
                "metadata": {"name": "multi"}, "spec": {"controllerName": CONTROLLER}})
            custom.create_namespaced_custom_object(GW, "v1", "default", "gateways", {
                "metadata": {"name": "gw"}, "spec": {"gatewayClassName": "multi", "listeners": [
                    {"name": "http", "port": 80, "protocol": "HTTP"}]}})
            created = time.monotonic()
            custom.create_namespaced_custom_object(GW, "v1", "default", "httproutes", {
                "metadata": {"name": "later"}, "spec": {"parentRefs": [{"name": "gw"}], "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/later"}}],
                    "backendRefs": [{"name": "web", "port": 80}]}]}})
            wait_for(lambda: status_of(gw, "/later", gateway) == backend_a.address, timeout=interval + 15)
            return time.monotonic() - created

        followed = install_and_route()
        print(f"HTTPRoute served {followed:.2f} s after its CRDs appeared (re-check every {interval} s)")
        assert followed <= interval + 5.0
        assert status_of(gw) == backend_a.address                 # the file route still serves

        server.remove_group(GW)         # as deleting the CRDs: the Gateway and route go, the kinds are pending
        assert wait_for(lambda: status_of(gw, "/later", gateway) in ("refused", 404), timeout=15)
        assert status_of(gw) == backend_a.address
        followed = install_and_route()
        print(f"and {followed:.2f} s after they were installed again")
        assert followed <= interval + 5.0
        assert "API error 404" not in gw.output()       # a 404 ends the loop: no retries, no warning
    finally:
        gw.stop()


def export(api, name: str = "web") -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceexports",
                                                                  {"metadata": {"name": name}})


def test_mcs_installed_later_is_followed(servers, backend_a, tmp_path, interval):
    """(c) ``merge: exported`` against a cluster without the MCS CRDs: ready at once, exporting
    nothing; the CRDs installed and a ServiceExport created, the service serves within the
    re-check interval (plus a margin); the CRDs deleted, it exports nothing again, and so on."""
    server, api = servers("mcs-later", absent=(MCS,))
    elapsed, gw = time_to_ready(gateway_config(server, multicluster={"merge": "exported"}), tmp_path / "gw")
    try:
        print(f"\nready (merge: exported) without the MCS CRDs: {elapsed:.2f} s")
        assert elapsed < 8.0
        assert status_of(gw) == 503     # the Service is there, but nothing is exported
        assert_no_sync_timeout(gw)

        def install_and_export() -> float:
            server.install_group(MCS)
            created = time.monotonic()
            export(api)
            wait_for(lambda: status_of(gw) == backend_a.address, timeout=interval + 15)
            return time.monotonic() - created

        followed = install_and_export()
        print(f"exported service served {followed:.2f} s after the CRDs appeared (re-check every {interval} s)")
        assert followed <= interval + 5.0

        server.remove_group(MCS)        # the ServiceExport is deleted with its CRD
        assert wait_for(lambda: status_of(gw) == 503, timeout=15)
        followed = install_and_export()
        print(f"and {followed:.2f} s after they were installed again")
        assert followed <= interval + 5.0
        out = gw.output()
        assert "listening before these" not in out and "API error 404" not in out
    finally:
        gw.stop()
