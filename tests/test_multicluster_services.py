"""KEP-1645 Multi-Cluster Services: ``multicluster: {merge: exported}`` against two local API
servers (real processes, the official client), and an HTTPRoute backendRef to a ServiceImport.

Cluster A lists backend_a (127.0.0.2), cluster B backend_b (127.0.0.3) under the same Service
``default/web``. With ``merge: exported`` a cluster's endpoints join only while that cluster
has a ServiceExport ``default/web``. Every wait is bounded.
"""
from __future__ import annotations

from collections import Counter

import pytest
from kubernetes import client, config

from support import GatewayProcess
from gateway.devcluster.apiserver import ApiServerProcess
from test_gatewayapi import add_backend_service, kube_source, wait_for

MCS = "multicluster.x-k8s.io"


@pytest.fixture(scope="module")
def clusters(tmp_path_factory, backend_a, backend_b):
    servers, clients = [], []
    try:
        for name, backend in (("mcs-a", backend_a), ("mcs-b", backend_b)):
            server = ApiServerProcess(tmp_path_factory.mktemp(name), name=name, bookmark_interval=0.5).start()
            servers.append(server)
            api = config.new_client_from_config(config_file=str(server.kubeconfig), context=server.context)
            clients.append(api)
            add_backend_service(api, "default", "web", backend)
        yield list(zip(servers, clients))
    finally:
        for api in clients:
            api.close()
        for server in servers:
            server.stop()


def source(name, server):
    return {**kube_source(server), "name": name}


def spread(gw, n=40) -> Counter:
    """Which backends answered n requests; a gateway still without endpoints counts its 503s
    (callers wait for the spread they expect, which must not stop at the first 503)."""
    try:
        with gw.client() as c:
            answers = [c.request("GET", f"/web/{i}") for i in range(n)]
    except ConnectionRefusedError:      # a Gateway's listener not bound yet
        return Counter()
    return Counter(r.json()["address"] if r.status == 200 else r.status for r in answers)


def export(api, present: bool) -> None:
    custom = client.CustomObjectsApi(api)
    if present:
        custom.create_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceexports",
                                               {"metadata": {"name": "web"}})
    else:
        custom.delete_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceexports", "web")


def test_merge_exported_takes_only_exporting_clusters(clusters, backend_a, backend_b, tmp_path):
    (a, api_a), (b, api_b) = clusters
    export(api_a, True)
    gw = GatewayProcess({"multicluster": {"merge": "exported"},
                         "sources": [source("cluster-a", a), source("cluster-b", b)],
                         "services": [{"name": "web", "port": 80}],
                         "routes": [{"name": "web", "match": {"path": {"prefix": "/web"}}, "service": "web"}]},
                        tmp_path).start()
    try:
        # B has the same Service but no ServiceExport: not in the clusterset (KEP-1645).
        assert wait_for(lambda: set(spread(gw)) == {backend_a.address})
        export(api_b, True)
        assert wait_for(lambda: set(spread(gw)) == {backend_a.address, backend_b.address})
        export(api_a, False)
        assert wait_for(lambda: set(spread(gw)) == {backend_b.address})
    finally:
        gw.stop()
        for api in (api_a, api_b):
            try:
                export(api, False)
            except client.ApiException:
                pass


def test_merge_all_takes_every_cluster_without_exports(clusters, backend_a, backend_b, tmp_path):
    (a, _), (b, _) = clusters
    gw = GatewayProcess({"sources": [source("cluster-a", a), source("cluster-b", b)],
                         "services": [{"name": "web", "port": 80}],
                         "routes": [{"name": "web", "match": {"path": {"prefix": "/web"}}, "service": "web"}]},
                        tmp_path).start()
    try:
        assert wait_for(lambda: set(spread(gw)) == {backend_a.address, backend_b.address})
    finally:
        gw.stop()


def test_httproute_to_a_service_import_uses_the_merged_service(clusters, backend_a, backend_b, tmp_path):
    (a, api_a), (b, api_b) = clusters
    for api in (api_a, api_b):
        export(api, True)
    custom = client.CustomObjectsApi(api_a)
    gw_group = "gateway.networking.k8s.io"
    custom.create_cluster_custom_object(gw_group, "v1", "gatewayclasses", {
        "metadata": {"name": "mcs"}, "spec": {"controllerName": "gateway.example/multi-cluster"}})
    custom.create_namespaced_custom_object(gw_group, "v1", "default", "gateways", {
        "metadata": {"name": "gw"}, "spec": {"gatewayClassName": "mcs",
                                             "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}})
    custom.create_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceimports", {
        "metadata": {"name": "web"}, "spec": {"ports": [{"name": "http", "port": 80}]}})
    custom.create_namespaced_custom_object(gw_group, "v1", "default", "httproutes", {
        "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/web"}}],
            "backendRefs": [{"group": MCS, "kind": "ServiceImport", "name": "web", "port": 80}]}]}})
    gw = GatewayProcess({"multicluster": {"merge": "exported"},
                         "gateway_api": {"sources": ["cluster-a"], "addresses": ["127.0.25.1"]},
                         "sources": [source("cluster-a", a), source("cluster-b", b)]}, tmp_path).start()
    gw.host, gw.port = "127.0.25.1", 80                  # the Gateway's address and listener
    try:
        assert wait_for(lambda: set(spread(gw)) == {backend_a.address, backend_b.address})
    finally:
        gw.stop()
        for api in (api_a, api_b):
            export(api, False)


def test_clusters_disagreeing_on_ports_show_a_conflict(clusters, backend_a, tmp_path):
    import json
    import urllib.request
    from support import free_port
    (a, api_a), (b, api_b) = clusters
    for api, port in ((api_a, 80), (api_b, 81)):
        client.CoreV1Api(api).create_namespaced_service("default", {
            "metadata": {"name": "ports"}, "spec": {"ports": [{"name": "http", "port": port}]}})
    admin = free_port()
    gw = GatewayProcess({"admin": f"127.0.0.1:{admin}",
                         "sources": [source("cluster-a", a), source("cluster-b", b)],
                         "services": [{"name": "ports", "port": "http"}, {"name": "web", "port": 80}],
                         "routes": [{"name": "web", "match": {}, "service": "web"}]}, tmp_path).start()
    try:
        from support import AdminClient
        AdminClient(admin).wait_up(gw.proc)     # the proxy listens before the admin API does
        def conflict():
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/services/default/ports", timeout=5) as r:
                return json.loads(r.read()).get("port_conflict")
        assert wait_for(conflict) == {"cluster-a": {"http": 80}, "cluster-b": {"http": 81}}
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/services/default/web", timeout=5) as r:
            assert "port_conflict" not in json.loads(r.read())
    finally:
        gw.stop()


def export_conditions(api, name: str) -> dict:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(MCS, "v1alpha1", "default",
                                                                     "serviceexports", name)
    return {c["type"]: (c["status"], c["reason"]) for c in (obj.get("status") or {}).get("conditions") or ()}


def test_service_export_conditions_valid_ready_and_port_conflict(clusters, tmp_path):
    """KEP-1645 / mcs-api: Valid, Ready and Conflict (PortConflict when the exporting clusters'
    Services disagree on ports, on every exporting cluster's ServiceExport)."""
    (a, api_a), (b, api_b) = clusters
    custom = [client.CustomObjectsApi(api) for api in (api_a, api_b)]
    client.CoreV1Api(api_a).create_namespaced_service("default", {
        "metadata": {"name": "conf"}, "spec": {"ports": [{"name": "http", "port": 80}]}})
    for c in custom:        # B exports a name it has no Service for yet
        c.create_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceexports", {"metadata": {"name": "conf"}})
    gw = GatewayProcess({"multicluster": {"merge": "exported"},
                         "sources": [source("cluster-a", a), source("cluster-b", b)],
                         "services": [{"name": "conf", "port": "http"}],
                         "routes": [{"name": "conf", "match": {}, "service": "conf"}]}, tmp_path).start()
    try:
        ok = {"Valid": ("True", "Valid"), "Ready": ("True", "Exported"), "Conflict": ("False", "NoConflicts")}
        assert wait_for(lambda: export_conditions(api_a, "conf") == ok)
        assert wait_for(lambda: export_conditions(api_b, "conf") == {
            "Valid": ("False", "NoService"), "Ready": ("False", "Pending"), "Conflict": ("False", "NoConflicts")})
        client.CoreV1Api(api_b).create_namespaced_service("default", {
            "metadata": {"name": "conf"}, "spec": {"ports": [{"name": "http", "port": 8080}]}})
        conflict = {**ok, "Conflict": ("True", "PortConflict")}
        for api in (api_a, api_b):
            assert wait_for(lambda: export_conditions(api, "conf") == conflict)
        obj = custom[0].get_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceexports", "conf")
        (message,) = [c["message"] for c in obj["status"]["conditions"] if c["type"] == "Conflict"]
        assert "cluster-a: http=80" in message and "cluster-b: http=8080" in message
        client.CoreV1Api(api_b).patch_namespaced_service("conf", "default", {
            "spec": {"ports": [{"name": "http", "port": 80}]}})
        for api in (api_a, api_b):
            assert wait_for(lambda: export_conditions(api, "conf") == ok)
    finally:
        gw.stop()
