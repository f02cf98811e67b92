"""The local cluster against the real kubernetes client: API server, backends, LocalCluster, CLI.

Real processes, real sockets, TLS verified, no mocks. Pods bind 127.0.83.x addresses with
port 0 so that these tests never collide with other suites using 127.0.0.x:8000.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
import urllib3
import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from gateway.devcluster import _process
from gateway.devcluster.apiserver import ApiServer, ApiServerProcess
from gateway.devcluster.backend import BackendProcess, start_backend
from gateway.devcluster.cluster import LocalCluster
from gateway.devcluster.patch import PatchError, json_patch, merge_patch
from gateway.devcluster.selectors import SelectorError, parse_field_selector, parse_label_selector
from gateway.devcluster.store import Expired, Store
from support import (LoopThread, peak_rss_bytes, pid_alive, process_state, rss_bytes, stop_backend,
                     wait_until)

# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory):
    server = ApiServerProcess(tmp_path_factory.mktemp("api"), name="t", bookmark_interval=0.5).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api(apiserver):
    api_client = config.new_client_from_config(config_file=str(apiserver.kubeconfig), context=apiserver.context)
    with api_client:
        yield api_client


@pytest.fixture
def namespace(api):
    """A fresh namespace per test, so tests never see each other's objects."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture
def discovery(api):
    return client.DiscoveryV1Api(api)


def endpoint_slice(name: str, service: str, *ips: str, **extra) -> dict:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/service-name": service, **extra}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
            "ports": [{"name": "http", "port": 8000}]}


def service(name: str, port: int = 8000) -> dict:
    return {"metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": port}]}}


def raw_request(server: ApiServerProcess, method: str, path: str, token: str | None = None,
                body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict | str]:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.ssl_context(), timeout=10)
    try:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        data = response.read()
        ctype = response.getheader("Content-Type", "")
        return response.status, json.loads(data) if ctype.startswith("application/json") else data.decode()
    finally:
        conn.close()


def collect_watch(func, *args, **kwargs) -> list[dict]:
    return [{"type": e["type"], "object": e["raw_object"]} for e in watch.Watch().stream(func, *args, **kwargs)]


def rv_of(event: dict) -> int:
    return int(event["object"]["metadata"]["resourceVersion"])


# -- API server: access ------------------------------------------------------------------------


def test_kubeconfig_loads_with_tls_verification_and_token(apiserver):
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(apiserver.kubeconfig), context="zone-t",
                            client_configuration=configuration)
    assert configuration.host == apiserver.url
    assert configuration.verify_ssl is True
    assert configuration.auth_settings()["BearerToken"]["value"] == f"Bearer {apiserver.token}"
    assert configuration.ssl_ca_cert and os.path.exists(configuration.ssl_ca_cert)
    with client.ApiClient(configuration) as api_client:
        names = [ns.metadata.name for ns in client.CoreV1Api(api_client).list_namespace().items]
    assert {"default", "kube-system"} <= set(names)
    # TLS is real: a client that does not trust the cluster's CA is refused.
    conn = http.client.HTTPSConnection("127.0.0.1", apiserver.port, timeout=5)
    with pytest.raises(ssl_error()):
        conn.request("GET", "/version")
    conn.close()


def ssl_error():
    import ssl
    return ssl.SSLCertVerificationError


def test_wrong_or_missing_token_is_401(apiserver, tmp_path):
    kubeconfig = yaml.safe_load(apiserver.kubeconfig.read_text())
    kubeconfig["users"][0]["user"]["token"] = "wrong"
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(kubeconfig))
    with config.new_client_from_config(config_file=str(tmp_path / "wrong.yaml")) as api_client:
        with pytest.raises(ApiException) as excinfo:
            client.CoreV1Api(api_client).list_namespaced_service("default")
    assert excinfo.value.status == 401
    assert json.loads(excinfo.value.body)["reason"] == "Unauthorized"
    status, body = raw_request(apiserver, "GET", "/api/v1/services")
    assert (status, body["kind"], body["code"]) == (401, "Status", 401)
    assert raw_request(apiserver, "GET", "/healthz") == (200, "ok")     # public, like a real server


def test_discovery_documents(api):
    versions = client.CoreApi(api).get_api_versions()
    assert versions.versions == ["v1"]
    core_resources = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"namespaces", "services", "endpoints"} <= set(core_resources)
    assert core_resources["services"].namespaced and "watch" in core_resources["services"].verbs
    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
    assert groups["discovery.k8s.io"].preferred_version.group_version == "discovery.k8s.io/v1"
    slices = client.DiscoveryV1Api(api).get_api_resources()
    assert slices.group_version == "discovery.k8s.io/v1"
    assert [r.kind for r in slices.resources] == ["EndpointSlice"]
    assert groups["coordination.k8s.io"].preferred_version.group_version == "coordination.k8s.io/v1"
    leases = client.CoordinationV1Api(api).get_api_resources()
    assert [(r.name, r.kind, r.namespaced) for r in leases.resources] == [("leases", "Lease", True)]
    assert client.VersionApi(api).get_code().major == "1"


def test_without_endpointslices_the_group_is_404(tmp_path):
    with ApiServerProcess(tmp_path, name="old", endpoint_slices=False) as server, \
            config.new_client_from_config(config_file=str(server.kubeconfig)) as api_client:
        groups = [g.name for g in client.ApisApi(api_client).get_api_versions().groups]
        assert "discovery.k8s.io" not in groups and "gateway.networking.k8s.io" in groups
        for call in (client.DiscoveryV1Api(api_client).get_api_resources,
                     client.DiscoveryV1Api(api_client).list_endpoint_slice_for_all_namespaces):
            with pytest.raises(ApiException) as excinfo:
                call()
            assert excinfo.value.status == 404
        # The fallback the gateway uses: v1 Endpoints.
        endpoints = client.CoreV1Api(api_client).list_namespaced_endpoints("default").items
        assert [e.metadata.name for e in endpoints] == ["kubernetes"]


def test_absent_group_installed_then_removed(tmp_path):
    """A cluster without the MCS CRDs: the group is absent from discovery and 404 on its paths;
    installing it (hook) serves it; removing it deletes its objects (DELETED to watchers, whose
    watches then end) and it is 404 again."""
    mcs = "multicluster.x-k8s.io"
    with ApiServerProcess(tmp_path, name="crds", absent_groups=(mcs,)) as server, \
            config.new_client_from_config(config_file=str(server.kubeconfig)) as api_client:
        apis, custom = client.ApisApi(api_client), client.CustomObjectsApi(api_client)

        def groups() -> set[str]:
            return {g.name for g in apis.get_api_versions().groups}

        assert mcs not in groups() and {"discovery.k8s.io", "gateway.networking.k8s.io"} <= groups()
        for call in (lambda: custom.get_api_resources(mcs, "v1alpha1"),
                     lambda: custom.list_cluster_custom_object(mcs, "v1alpha1", "serviceexports")):
            with pytest.raises(ApiException) as excinfo:
                call()
            assert excinfo.value.status == 404
        assert server.state()["absentGroups"] == [mcs]

        assert server.install_group(mcs)["absentGroups"] == []
        assert mcs in groups()
        assert {r.name for r in custom.get_api_resources(mcs, "v1alpha1").resources} >= {
            "serviceexports", "serviceimports"}
        custom.create_namespaced_custom_object(mcs, "v1alpha1", "default", "serviceexports",
                                               {"metadata": {"name": "web"}})
        listed = custom.list_cluster_custom_object(mcs, "v1alpha1", "serviceexports")
        assert [o["metadata"]["name"] for o in listed["items"]] == ["web"]

        events = []
        stream = watch.Watch().stream(custom.list_cluster_custom_object, mcs, "v1alpha1", "serviceexports",
                                      resource_version=listed["metadata"]["resourceVersion"],
                                      timeout_seconds=30, _request_timeout=30)
        remover = threading.Timer(0.3, lambda: events.append(server.remove_group(mcs)["deleted"]))
        remover.start()
        started = time.monotonic()
        kinds = [(e["type"], e["object"]["metadata"]["name"]) for e in stream]   # ends with the group
        remover.join()
        assert kinds == [("DELETED", "web")] and events == [1] and time.monotonic() - started < 20
        assert mcs not in groups()
        with pytest.raises(ApiException) as excinfo:
            custom.list_cluster_custom_object(mcs, "v1alpha1", "serviceexports")
        assert excinfo.value.status == 404
        with pytest.raises(RuntimeError, match="unknown API group"):
            server.install_group("example.com")


# -- API server: objects -----------------------------------------------------------------------


def test_service_create_get_update_patch_delete(core, namespace):
    created = core.create_namespaced_service(namespace, service("web"))
    meta = created.metadata
    assert meta.uid and meta.creation_timestamp and int(meta.resource_version) > 0
    assert created.spec.cluster_ip.startswith("10.") and created.spec.ports[0].protocol == "TCP"
    assert created.spec.ports[0].target_port == 8000     # defaulted to the port

    with pytest.raises(ApiException) as excinfo:
        core.create_namespaced_service(namespace, service("web"))
    assert (excinfo.value.status, json.loads(excinfo.value.body)["reason"]) == (409, "AlreadyExists")

    fetched = core.read_namespaced_service("web", namespace)
    assert fetched.metadata.uid == meta.uid and fetched.kind == "Service" and fetched.api_version == "v1"

    body = fetched.to_dict(serialize=True)
    body["metadata"]["labels"] = {"tier": "front"}
    updated = core.replace_namespaced_service("web", namespace, body)
    assert int(updated.metadata.resource_version) > int(meta.resource_version)
    assert updated.metadata.uid == meta.uid and updated.spec.cluster_ip == created.spec.cluster_ip

    stale = dict(body, metadata=dict(body["metadata"], resourceVersion=meta.resource_version))
    with pytest.raises(ApiException) as excinfo:
        core.replace_namespaced_service("web", namespace, stale)
    assert (excinfo.value.status, json.loads(excinfo.value.body)["reason"]) == (409, "Conflict")

    merged = core.patch_namespaced_service("web", namespace, {"metadata": {"labels": {"zone": "a"}}})
    assert merged.metadata.labels == {"tier": "front", "zone": "a"}
    patched = core.patch_namespaced_service(
        "web", namespace, [{"op": "replace", "path": "/metadata/labels/zone", "value": "b"}])
    assert patched.metadata.labels["zone"] == "b"
    assert int(patched.metadata.resource_version) > int(merged.metadata.resource_version)
    noop = core.patch_namespaced_service("web", namespace, {"metadata": {"labels": {"zone": "b"}}})
    assert noop.metadata.resource_version == patched.metadata.resource_version  # nothing written

    core.delete_namespaced_service("web", namespace)
    with pytest.raises(ApiException) as excinfo:
        core.read_namespaced_service("web", namespace)
    status = json.loads(excinfo.value.body)
    assert (excinfo.value.status, status["kind"], status["reason"]) == (404, "Status", "NotFound")
    assert status["details"] == {"name": "web", "kind": "services"}


def test_invalid_objects_are_422_and_missing_namespace_404(core, discovery, namespace):
    for bad in ({"metadata": {"name": "Bad_Name"}, "spec": {"ports": [{"port": 80}]}},
                {"metadata": {"name": "noports"}, "spec": {}},
                {"metadata": {"name": "bigport"}, "spec": {"ports": [{"port": 70000}]}}):
        with pytest.raises(ApiException) as excinfo:
            core.create_namespaced_service(namespace, bad)
        assert (excinfo.value.status, json.loads(excinfo.value.body)["reason"]) == (422, "Invalid")
    with pytest.raises(ApiException) as excinfo:
        discovery.create_namespaced_endpoint_slice(namespace, {"metadata": {"name": "x"},
                                                               "addressType": "IPv4",
                                                               "endpoints": [{"addresses": ["nope"]}]})
    assert excinfo.value.status == 422
    with pytest.raises(ApiException) as excinfo:
        core.create_namespaced_service("no-such-namespace", service("web"))
    assert excinfo.value.status == 404


def test_endpointslices_with_label_and_field_selectors(discovery, namespace):
    discovery.create_namespaced_endpoint_slice(namespace, endpoint_slice("web-1", "web", "127.0.0.2", track="stable"))
    discovery.create_namespaced_endpoint_slice(namespace, endpoint_slice("web-2", "web", "127.0.0.4"))
    discovery.create_namespaced_endpoint_slice(namespace, endpoint_slice("api-1", "api", "127.0.0.3"))
    generated = discovery.create_namespaced_endpoint_slice(
        namespace, {**endpoint_slice("", "gen"), "metadata": {"generateName": "gen-",
                                                              "labels": {"kubernetes.io/service-name": "gen"}}})
    assert generated.metadata.name.startswith("gen-") and len(generated.metadata.name) == 9
    assert generated.endpoints is None      # empty lists come back as null, as from a real server

    def names(**kwargs) -> list[str]:
        return [s.metadata.name for s in discovery.list_namespaced_endpoint_slice(namespace, **kwargs).items]

    assert names(label_selector="kubernetes.io/service-name=web") == ["web-1", "web-2"]
    assert names(label_selector="kubernetes.io/service-name!=web") == ["api-1", generated.metadata.name]
    assert names(label_selector="track") == ["web-1"]
    assert names(label_selector="!track,kubernetes.io/service-name in (web,api)") == ["api-1", "web-2"]
    assert names(field_selector="metadata.name=web-2") == ["web-2"]
    everywhere = discovery.list_endpoint_slice_for_all_namespaces(label_selector="kubernetes.io/service-name=web")
    assert [(s.metadata.namespace, s.metadata.name) for s in everywhere.items] == \
        [(namespace, "web-1"), (namespace, "web-2")]
    assert everywhere.kind == "EndpointSliceList" and int(everywhere.metadata.resource_version) > 0
    assert everywhere.items[0].endpoints[0].addresses == ["127.0.0.2"]   # loopback accepted

    updated = discovery.patch_namespaced_endpoint_slice("web-2", namespace, {"endpoints": [
        {"addresses": ["127.0.0.5"], "conditions": {"ready": False}}]})
    assert [e.addresses for e in updated.endpoints] == [["127.0.0.5"]]
    discovery.delete_namespaced_endpoint_slice("web-2", namespace)
    assert names(label_selector="kubernetes.io/service-name=web") == ["web-1"]


def test_lease_create_update_conflict_patch_watch_delete(apiserver, api, namespace):
    """What leader election relies on: a stale update is 409, and times are MicroTime in UTC."""
    leases = client.CoordinationV1Api(api)
    start_rv = leases.list_namespaced_lease(namespace).metadata.resource_version
    created = leases.create_namespaced_lease(namespace, {
        "metadata": {"name": "writer"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0,
                 "acquireTime": "2026-12-06T04:10:30.123456Z", "renewTime": "2026-12-06T06:10:31+02:00"}})
    assert (created.kind, created.api_version) == ("Lease", "coordination.k8s.io/v1")
    assert created.metadata.generation is None          # a built-in kind, not a custom resource
    raw = api.sanitize_for_serialization(leases.read_namespaced_lease("writer", namespace))
    _, stored = raw_request(apiserver, "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/writer",
                            apiserver.token)     # as sent: the client's models parse the times
    assert stored["spec"]["acquireTime"] == "2026-12-06T04:10:30.123456Z"
    assert stored["spec"]["renewTime"] == "2026-12-06T04:10:31.000000Z"    # UTC, six digits

    taken = dict(raw, spec={**raw["spec"], "holderIdentity": "b", "leaseTransitions": 1})
    updated = leases.replace_namespaced_lease("writer", namespace, taken)
    assert updated.spec.holder_identity == "b" and updated.spec.lease_transitions == 1
    with pytest.raises(ApiException) as excinfo:        # the same resourceVersion again: stale
        leases.replace_namespaced_lease("writer", namespace, dict(taken, spec={**taken["spec"],
                                                                              "holderIdentity": "c"}))
    assert (excinfo.value.status, json.loads(excinfo.value.body)["reason"]) == (409, "Conflict")
    assert json.loads(excinfo.value.body)["details"] == {"name": "writer", "group": "coordination.k8s.io",
                                                         "kind": "leases"}
    patched = leases.patch_namespaced_lease("writer", namespace, {"spec": {"leaseDurationSeconds": 1}})
    assert patched.spec.lease_duration_seconds == 1 and patched.spec.holder_identity == "b"
    for bad in ({"leaseDurationSeconds": 0}, {"leaseTransitions": -1}, {"renewTime": "yesterday"}):
        with pytest.raises(ApiException) as excinfo:
            leases.patch_namespaced_lease("writer", namespace, {"spec": bad})
        assert (excinfo.value.status, json.loads(excinfo.value.body)["reason"]) == (422, "Invalid")

    leases.delete_namespaced_lease("writer", namespace)
    events = collect_watch(leases.list_namespaced_lease, namespace, resource_version=start_rv,
                           timeout_seconds=1)
    assert [(e["type"], e["object"]["spec"]["holderIdentity"]) for e in events] == \
        [("ADDED", "a"), ("MODIFIED", "b"), ("MODIFIED", "b"), ("DELETED", "b")]


def test_list_pagination_is_a_consistent_snapshot(apiserver, core, namespace):
    for i in range(7):
        core.create_namespaced_endpoints(namespace, {"metadata": {"name": f"ep-{i}"}})
    first = core.list_namespaced_endpoints(namespace, limit=3)
    assert [e.metadata.name for e in first.items] == ["ep-0", "ep-1", "ep-2"]
    assert first.metadata.remaining_item_count == 4 and first.metadata._continue
    core.create_namespaced_endpoints(namespace, {"metadata": {"name": "ep-3a"}})   # after the snapshot
    core.delete_namespaced_endpoints("ep-5", namespace)
    second = core.list_namespaced_endpoints(namespace, limit=3, _continue=first.metadata._continue)
    third = core.list_namespaced_endpoints(namespace, limit=3, _continue=second.metadata._continue)
    assert [e.metadata.name for e in second.items + third.items] == ["ep-3", "ep-4", "ep-5", "ep-6"]
    assert third.metadata._continue is None
    assert second.metadata.resource_version == first.metadata.resource_version
    apiserver.expire_history()
    with pytest.raises(ApiException) as excinfo:
        core.list_namespaced_endpoints(namespace, limit=3, _continue=first.metadata._continue)
    assert (excinfo.value.status, json.loads(excinfo.value.body)["reason"]) == (410, "Expired")


# -- API server: watch -------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_watch_streams_events_in_order_with_bookmarks(discovery, namespace):
    start_rv = discovery.list_namespaced_endpoint_slice(namespace).metadata.resource_version

    def write() -> None:
        time.sleep(0.3)
        discovery.create_namespaced_endpoint_slice(namespace, endpoint_slice("web-a", "web", "127.0.0.2"))
        discovery.create_namespaced_endpoint_slice(namespace, endpoint_slice("other", "api", "127.0.0.9"))
        discovery.patch_namespaced_endpoint_slice("web-a", namespace, {"endpoints": [{"addresses": ["127.0.0.4"]}]})
        time.sleep(0.7)     # at least one bookmark between the writes
        discovery.delete_namespaced_endpoint_slice("web-a", namespace)

    writer = threading.Thread(target=write)
    writer.start()
    started = time.monotonic()
    events = collect_watch(discovery.list_namespaced_endpoint_slice, namespace,
                           label_selector="kubernetes.io/service-name=web", resource_version=start_rv,
                           allow_watch_bookmarks=True, timeout_seconds=2)
    writer.join()
    assert 1.9 < time.monotonic() - started < 3.5     # timeoutSeconds ends the stream cleanly
    changes = [e for e in events if e["type"] != "BOOKMARK"]
    assert [e["type"] for e in changes] == ["ADDED", "MODIFIED", "DELETED"]
    assert changes[1]["object"]["endpoints"][0]["addresses"] == ["127.0.0.4"]
    assert [rv_of(e) for e in changes] == sorted({rv_of(e) for e in changes})   # strictly increasing
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and set(bookmarks[0]["object"]) == {"kind", "apiVersion", "metadata"}
    assert bookmarks[0]["object"]["kind"] == "EndpointSlice"
    versions = [rv_of(e) for e in events]
    assert versions == sorted(versions) and versions[0] > int(start_rv)   # bookmarks never go back


@pytest.mark.timeout(20)
def test_watch_without_version_starts_with_current_objects(core, namespace):
    core.create_namespaced_service(namespace, service("one"))
    core.create_namespaced_service(namespace, service("two"))
    stream = watch.Watch()
    seen = []
    for event in stream.stream(core.list_namespaced_service, namespace, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 2:
            stream.stop()
    assert seen == [("ADDED", "one"), ("ADDED", "two")]


@pytest.mark.timeout(20)
def test_watch_reports_objects_entering_and_leaving_a_selector(core, namespace):
    rv = core.create_namespaced_service(namespace, service("web")).metadata.resource_version

    def relabel() -> None:
        time.sleep(0.2)
        core.patch_namespaced_service("web", namespace, {"metadata": {"labels": {"expose": "yes"}}})
        core.patch_namespaced_service("web", namespace, {"metadata": {"labels": {"expose": "no"}}})

    writer = threading.Thread(target=relabel)
    writer.start()
    events = collect_watch(core.list_namespaced_service, namespace, label_selector="expose=yes",
                           resource_version=rv, timeout_seconds=1)
    writer.join()
    assert [(e["type"], e["object"]["metadata"]["labels"]["expose"]) for e in events] == \
        [("ADDED", "yes"), ("DELETED", "yes")]


@pytest.mark.timeout(20)
def test_watch_from_expired_version_gets_410(apiserver, core, namespace):
    old_rv = core.create_namespaced_service(namespace, service("web")).metadata.resource_version
    apiserver.expire_history()
    # With timeout_seconds the client does not retry: the ERROR event becomes ApiException(410).
    with pytest.raises(ApiException) as excinfo:
        collect_watch(core.list_namespaced_service, namespace, resource_version=old_rv, timeout_seconds=5)
    assert excinfo.value.status == 410 and "Expired" in excinfo.value.reason
    # Without it the client retries once from the same version, gets 410 again, then raises.
    with pytest.raises(ApiException) as excinfo:
        for _ in watch.Watch().stream(core.list_namespaced_service, namespace, resource_version=old_rv):
            pass
    assert excinfo.value.status == 410
    # A list pinned to the expired version is 410 as well; the current one still works.
    with pytest.raises(ApiException) as excinfo:
        core.list_namespaced_service(namespace, resource_version=old_rv, resource_version_match="Exact")
    assert excinfo.value.status == 410
    current = core.list_namespaced_service(namespace).metadata.resource_version
    assert collect_watch(core.list_namespaced_service, namespace, resource_version=current, timeout_seconds=1) == []


@pytest.mark.timeout(20)
def test_dropped_watches_break_the_client_stream(apiserver, core, namespace):
    rv = core.list_namespaced_service(namespace).metadata.resource_version
    outcome = {}

    def consume(graceful: bool) -> None:
        try:
            outcome[graceful] = collect_watch(core.list_namespaced_service, namespace,
                                              resource_version=rv, timeout_seconds=10)
        except Exception as exc:       # noqa: BLE001 - the test looks at what the client raises
            outcome[graceful] = exc

    for graceful in (False, True):
        consumer = threading.Thread(target=consume, args=(graceful,))
        consumer.start()
        wait_until(lambda: apiserver.state()["watches"] >= 1, message="watch registered")
        started = time.monotonic()
        assert apiserver.drop_watches(graceful=graceful) >= 1
        consumer.join(5)
        assert time.monotonic() - started < 2
    assert isinstance(outcome[False], urllib3.exceptions.ProtocolError)   # cut mid-stream
    assert outcome[True] == []                                            # ended cleanly


@pytest.mark.timeout(30)
def test_restart_keeps_objects_versions_and_history(tmp_path):
    server = ApiServerProcess(tmp_path, name="r").start()
    try:
        with config.new_client_from_config(config_file=str(server.kubeconfig)) as api_client:
            core = client.CoreV1Api(api_client)
            created = core.create_namespaced_service("default", service("web"))
            list_rv = core.list_namespaced_service("default").metadata.resource_version
            port, url = server.port, server.url
            server.kill()                               # SIGKILL: nothing flushed on exit
            with pytest.raises(urllib3.exceptions.MaxRetryError):
                urllib3.PoolManager(retries=0).request("GET", url + "/healthz")
            server.start()
            assert (server.port, server.url) == (port, url)
            again = core.read_namespaced_service("web", "default")
            assert (again.metadata.uid, again.metadata.resource_version) == \
                (created.metadata.uid, created.metadata.resource_version)
            assert core.list_namespaced_service("default").metadata.resource_version == list_rv
            core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"a": "b"}}})
            server.restart()                            # SIGTERM this time
            # A watch from before both restarts resumes from the persisted history.
            events = collect_watch(core.list_namespaced_service, "default",
                                   resource_version=created.metadata.resource_version, timeout_seconds=1)
            assert [e["type"] for e in events] == ["MODIFIED"]
            assert rv_of(events[0]) > int(list_rv)
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_pause_makes_the_api_unreachable_then_back(apiserver, core):
    rv = core.list_namespace().metadata.resource_version
    apiserver.pause(seconds=1.0)
    refused = wait_until(lambda: not _port_open(apiserver.port), timeout=2, message="listener closed")
    assert refused
    wait_until(lambda: _port_open(apiserver.port), timeout=5, message="listener back")
    assert core.list_namespace().metadata.resource_version == rv   # same data
    apiserver.pause()                       # SIGUSR1 / SIGUSR2: until resumed
    wait_until(lambda: not _port_open(apiserver.port), timeout=2, message="listener closed")
    apiserver.resume()
    wait_until(lambda: _port_open(apiserver.port), timeout=5, message="listener back")


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_errors_are_status_objects(apiserver):
    token = apiserver.token
    status, body = raw_request(apiserver, "POST", "/api/v1/namespaces/default/services", token,
                               body=b"{not json", headers={"Content-Type": "application/json"})
    assert (status, body["reason"]) == (400, "BadRequest")
    status, body = raw_request(apiserver, "PATCH", "/api/v1/namespaces/default/services/kubernetes", token,
                               body=b"{}", headers={"Content-Type": "application/apply-patch+yaml"})
    assert status == 415
    status, body = raw_request(apiserver, "GET", "/api/v1/namespaces/default/widgets", token)
    assert (status, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    status, body = raw_request(apiserver, "GET", "/api/v1/services?labelSelector=a%20in%20(", token)
    assert status == 400
    status, body = raw_request(apiserver, "GET", "/api/v1/services?watch=1&resourceVersion=999999999", token)
    assert status == 504


def test_in_process_server_hooks(tmp_path):
    """The same server in this process, driven through its Python API."""
    with LoopThread() as loop:
        server = loop.run(ApiServer(tmp_path, name="inproc", bookmark_interval=0.2).start())
        try:
            with config.new_client_from_config(config_file=str(server.kubeconfig_path)) as api_client:
                core = client.CoreV1Api(api_client)
                rv = core.list_namespaced_service("default").metadata.resource_version
                loop.call(server.expire_history)
                with pytest.raises(ApiException) as excinfo:
                    collect_watch(core.list_namespaced_service, "default", resource_version=rv, timeout_seconds=1)
                assert excinfo.value.status == 410
                loop.run(server.pause())
                assert server.paused and not _port_open(server.port)
                loop.run(server.resume())
                assert core.read_namespaced_service("kubernetes", "default").spec.cluster_ip == "10.96.0.1"
        finally:
            loop.run(server.close())


def test_store_history_window_and_past_lists():
    store = Store(None, history_size=3)
    created = store.create("services", {"metadata": {"name": "a", "namespace": "n"}})
    for value in ("1", "2", "3"):
        store.update("services", {**created, "metadata": {**created["metadata"], "labels": {"v": value}}},
                     store.get("services", ("n", "a")))
    assert [e.rv for e in store.events_after(2)] == [3, 4]
    with pytest.raises(Expired):                 # event 1 fell out of the 3-event window
        store.events_after(0)
    assert store.items_at("services", 2)[0]["metadata"]["labels"] == {"v": "1"}
    store.delete("services", store.get("services", ("n", "a")))
    assert store.items("services") == [] and store.items_at("services", 4)[0]["metadata"]["labels"] == {"v": "3"}


def test_selectors_and_patches():
    labels = {"metadata": {"labels": {"app": "web", "tier": "2"}}}
    for text, expected in (("app=web", True), ("app==web,tier", True), ("app!=web", False),
                           ("!tier", False), ("app in (api, web)", True), ("app notin (web)", False),
                           ("tier>1", True), ("tier<2", False), ("missing!=x", True), ("", True)):
        assert parse_label_selector(text)(labels) is expected, text
    with pytest.raises(SelectorError):
        parse_field_selector("spec.nodeName=x", frozenset({"metadata.name"}))
    doc = {"a": {"b": 1, "c": [1, 2]}}
    assert merge_patch(doc, {"a": {"b": None, "d": 2}}) == {"a": {"c": [1, 2], "d": 2}}
    assert json_patch(doc, [{"op": "add", "path": "/a/c/-", "value": 3},
                            {"op": "move", "from": "/a/b", "path": "/e"},
                            {"op": "test", "path": "/e", "value": 1}]) == {"a": {"c": [1, 2, 3]}, "e": 1}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/nope"}])


# -- backends --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend():
    process = BackendProcess("127.0.83.2", 0, "a", "httpbin-a-0").start()
    try:
        yield process
    finally:
        process.stop()


def get(backend_or_address, path: str, method: str = "GET", **kwargs) -> tuple[http.client.HTTPResponse, bytes]:
    host, port = getattr(backend_or_address, "address", backend_or_address).rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, **kwargs)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def test_backend_identity_echoes_headers(backend):
    conn = http.client.HTTPConnection("127.0.83.2", backend.port, timeout=5)
    try:
        for path in ("/anything/x?y=1", "/"):        # two requests on one keep-alive connection
            conn.request("POST", path, body=b"ignored", headers={
                "X-Forwarded-For": "10.0.0.1", "Via": "1.1 gateway", "X-Request-Id": "abc"})
            response = conn.getresponse()
            body = json.loads(response.read())
            assert response.status == 200 and not response.will_close
    finally:
        conn.close()
    assert body["cluster"] == "a" and body["pod"] == "httpbin-a-0"
    assert body["address"] == f"127.0.83.2:{backend.port}" and body["method"] == "POST" and body["path"] == "/"
    assert body["headers"]["X-Forwarded-For"] == "10.0.0.1" and body["headers"]["Via"] == "1.1 gateway"
    assert body["headers"]["X-Request-Id"] == "abc" and body["headers"]["Host"] == f"127.0.83.2:{backend.port}"
    response, data = get(backend, "/headers", headers={"X-Test": "1"})
    assert json.loads(data)["headers"]["X-Test"] == "1"


def test_backend_status_delay_and_close(backend):
    response, data = get(backend, "/status/503")
    assert response.status == 503 and json.loads(data)["pod"] == "httpbin-a-0"
    response, data = get(backend, "/status/204")
    assert response.status == 204 and data == b""
    assert get(backend, "/status/abc")[0].status == 400
    # /delay does not block the server: a parallel request is answered at once.
    delayed = {}
    thread = threading.Thread(target=lambda: delayed.update(result=get(backend, "/delay/0.6")))
    started = time.monotonic()
    thread.start()
    time.sleep(0.1)
    assert get(backend, "/fast")[0].status == 200
    assert time.monotonic() - started < 0.5
    thread.join()
    assert delayed["result"][0].status == 200 and time.monotonic() - started >= 0.6
    response, _ = get(backend, "/close")
    assert response.getheader("Connection") == "close"


def test_backend_pipelined_requests_answer_in_order(backend):
    with socket.create_connection(("127.0.83.2", backend.port), timeout=5) as sock:
        sock.sendall(b"GET /delay/0.2 HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}"):
            data += sock.recv(65536)
    assert data.index(b'"/delay/0.2"') < data.index(b'"/second"')


@pytest.mark.timeout(60)
def test_backend_streams_64_mib_without_buffering_it(backend):
    size = 64 * 1024 * 1024
    before = rss_bytes(backend.pid)
    with socket.create_connection(("127.0.83.2", backend.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET /bytes/{size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        head, body_start = head.split(b"\r\n\r\n", 1)
        assert f"Content-Length: {size}".encode() in head
        received, digest = len(body_start), hashlib.sha256(body_start)
        time.sleep(0.5)     # a slow reader: an unthrottled server would queue everything now
        while received < size:
            chunk = sock.recv(1024 * 1024)
            assert chunk
            received += len(chunk)
            digest.update(chunk)
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(bytes(range(256)) * (size // 256)).hexdigest()
    assert peak_rss_bytes(backend.pid) - before < 16 * 1024 * 1024


def test_backend_chunked_stream_echo_and_upload(backend):
    response, data = get(backend, "/stream/100000")
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert data == (bytes(range(256)) * 400)[:100000]
    payload = os.urandom(3 * 1024 * 1024 + 17)

    def pieces():
        for i in range(0, len(payload), 100_000):
            yield payload[i:i + 100_000]

    response, data = get(backend, "/echo", method="PUT", body=pieces(), encode_chunked=True,
                         headers={"Transfer-Encoding": "chunked", "Content-Type": "application/x-test"})
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.getheader("Content-Type") == "application/x-test" and data == payload
    response, data = get(backend, "/echo", method="POST", body=payload[:1000])
    assert response.getheader("Content-Length") == "1000" and data == payload[:1000]
    response, data = get(backend, "/upload", method="POST", body=payload)
    assert json.loads(data)["received"] == len(payload)
    assert json.loads(data)["sha256"] == hashlib.sha256(payload).hexdigest()


def test_backend_counters_over_http_and_in_process():
    with BackendProcess("127.0.83.3", 0, "b", "p") as process:
        for path in ("/healthz", "/healthz", "/status/200", "/"):
            get(process, path)
        stats = process.stats()
        assert stats == {"requests": 4, "paths": {"/healthz": 2, "/status": 1, "/": 1}}
    with LoopThread() as loop:
        backend = loop.run(start_backend("127.0.83.3", 0, "b", "in-process"))
        get(backend, "/healthz")
        get(backend, "/_backend/stats")          # not counted
        assert (backend.stats.total, backend.stats.by_prefix["/healthz"]) == (1, 1)
        loop.run(stop_backend(backend))


def test_backend_process_freeze_and_kill():
    process = BackendProcess("127.0.83.4", 0, "c", "p").start()
    try:
        process.freeze()
        wait_until(lambda: process_state(process.pid) == "T", message="stopped")
        with pytest.raises(socket.timeout):
            conn = http.client.HTTPConnection("127.0.83.4", process.port, timeout=0.5)
            try:
                conn.request("GET", "/")        # the kernel accepts, nobody answers
                conn.getresponse()
            finally:
                conn.close()
        process.thaw()
        assert get(process, "/")[0].status == 200
        process.kill()
        assert not process.running
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.83.4", process.port), timeout=1)
    finally:
        process.stop()


# -- the cluster and its CLI -----------------------------------------------------------------


def _slice_conditions(cluster: LocalCluster) -> dict[str, dict]:
    slices = cluster.discovery_v1().list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=httpbin").items
    return {e.addresses[0]: {"ready": e.conditions.ready, "terminating": e.conditions.terminating}
            for s in slices for e in s.endpoints or ()}


def _endpoint_ips(cluster: LocalCluster) -> tuple[list[str], list[str]]:
    subsets = cluster.core_v1().read_namespaced_endpoints("httpbin", "default").subsets or []
    ready = [a.ip for s in subsets for a in s.addresses or ()]
    not_ready = [a.ip for s in subsets for a in s.not_ready_addresses or ()]
    return ready, not_ready


@pytest.mark.timeout(60)
def test_local_cluster_lifecycle(tmp_path):
    ips = ["127.0.83.10", "127.0.83.11"]
    cluster = LocalCluster("x", tmp_path, ips, port=0)
    with cluster:
        port = cluster.port
        svc = cluster.core_v1().read_namespaced_service("httpbin", "default")
        assert (svc.spec.ports[0].name, svc.spec.ports[0].port, svc.spec.ports[0].target_port) == ("http", port, port)
        assert _slice_conditions(cluster) == {ip: {"ready": True, "terminating": False} for ip in ips}
        assert _endpoint_ips(cluster) == (ips, [])
        pods = {json.loads(get(f"{ip}:{port}", "/")[1])["pod"] for ip in ips}
        assert pods == {"httpbin-x-0", "httpbin-x-1"}

        cluster.set_ready(ips[1], False)
        assert _slice_conditions(cluster)[ips[1]]["ready"] is False
        assert _endpoint_ips(cluster) == ([ips[0]], [ips[1]])
        cluster.set_ready(ips[1], True)
        cluster.set_terminating(ips[1])
        assert _slice_conditions(cluster)[ips[1]] == {"ready": False, "terminating": True}
        assert _endpoint_ips(cluster) == ([ips[0]], [])

        cluster.scale(1)
        assert list(_slice_conditions(cluster)) == [ips[0]]
        assert not _port_open(port, ips[1])
        cluster.scale(2)
        assert _slice_conditions(cluster)[ips[1]] == {"ready": True, "terminating": False}
        assert _port_open(port, ips[1])

        pids = [b.pid for b in cluster.backends.values()]
        cluster.kill_backends(signal.SIGKILL)
        assert not any(pid_alive(pid) for pid in pids) and not _port_open(port, ips[0])
        assert len(_slice_conditions(cluster)) == 2           # the API does not notice a crash
        cluster.start_backends()
        assert all(_port_open(port, ip) for ip in ips)

        cluster.remove_service()
        with pytest.raises(ApiException):
            cluster.core_v1().read_namespaced_service("httpbin", "default")
        assert _slice_conditions(cluster) == {} and not _port_open(port, ips[0])
        cluster.restore_service()
        assert len(_slice_conditions(cluster)) == 2 and _port_open(port, ips[0])

        rv = cluster.core_v1().read_namespaced_service("httpbin", "default").metadata.resource_version
        url = cluster.api_url
        cluster.stop_api()
        assert not _port_open(cluster.api.port)
        cluster.start_api()
        assert cluster.api_url == url
        assert cluster.core_v1().read_namespaced_service("httpbin", "default").metadata.resource_version == rv
        all_pids = [cluster.api.pid] + [b.pid for b in cluster.backends.values()]
    wait_until(lambda: not any(pid_alive(pid) for pid in all_pids), timeout=5, message="all processes gone")


@pytest.mark.timeout(60)
def test_cli_up_remove_and_restore_service(tmp_path):
    def devcluster(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gateway.devcluster", *args], env=_process.child_env(),
                              capture_output=True, text=True, timeout=30)

    up = subprocess.Popen([sys.executable, "-m", "gateway.devcluster", "up", "--name", "cli",
                           "--pods", "127.0.83.20,127.0.83.21", "--port", "0", "--state-dir", str(tmp_path)],
                          stdout=subprocess.PIPE, text=True, env=_process.child_env())
    try:
        lines = [up.stdout.readline(), up.stdout.readline()]
        kubeconfig = lines[1].split("kubeconfig: ", 1)[1].strip()
        assert kubeconfig == str(tmp_path / "kubeconfig.yaml")
        with config.new_client_from_config(config_file=kubeconfig, context="zone-cli") as api_client:
            core = client.CoreV1Api(api_client)
            assert core.read_namespaced_service("httpbin", "default").spec.ports[0].name == "http"
            assert devcluster("remove-service", "--kubeconfig", kubeconfig).returncode == 0
            with pytest.raises(ApiException):
                core.read_namespaced_service("httpbin", "default")
            restored = devcluster("restore-service", "--kubeconfig", kubeconfig)
            assert restored.returncode == 0, restored.stderr
            slices = client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice(
                "default", label_selector="kubernetes.io/service-name=httpbin").items
            assert sorted(e.addresses[0] for e in slices[0].endpoints) == ["127.0.83.20", "127.0.83.21"]
            api_pid = cluster_state(kubeconfig)["pid"]
        up.send_signal(signal.SIGTERM)
        assert up.wait(15) == 0
        assert not pid_alive(api_pid)
        assert not _port_open(int(lines[0].split(":")[-1].split(",")[0]), "127.0.83.20")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        up.stdout.close()


def cluster_state(kubeconfig: str) -> dict:
    """GET /_devcluster/state of the cluster a kubeconfig points at."""
    import ssl
    from pathlib import Path

    state_dir = Path(kubeconfig).parent
    server = yaml.safe_load(Path(kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(state_dir / "ca.crt"))
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
    try:
        token = (state_dir / "token").read_text().strip()
        conn.request("GET", "/_devcluster/state", headers={"Authorization": f"Bearer {token}"})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def test_configmaps_keep_string_data_and_refuse_bad_keys_and_base64(core, namespace):
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "ca"},
                                                            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\n"}})
    assert core.read_namespaced_config_map("ca", namespace).data == {"ca.crt": "-----BEGIN CERTIFICATE-----\n"}
    assert created.metadata.resource_version
    for bad, field in (({"data": {"bad key": "x"}}, "data[bad key]"),
                       ({"binaryData": {"k": "not base64!"}}, "binaryData[k]"),
                       ({"data": {"k": "a"}, "binaryData": {"k": "YQ=="}}, "data[k]")):
        with pytest.raises(ApiException) as excinfo:
            core.create_namespaced_config_map(namespace, {"metadata": {"name": "bad"}, **bad})
        assert excinfo.value.status == 422 and field in excinfo.value.body, excinfo.value.body
