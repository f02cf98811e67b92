"""The local API server's Gateway API and Multi-Cluster Services kinds, through the official client.

Custom objects go through ``CustomObjectsApi`` exactly as against a cluster with the CRDs
installed: discovery, create/get/list/patch/replace/delete, the ``/status`` subresource,
``metadata.generation`` and watch.
"""
from __future__ import annotations

import uuid

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from gateway.devcluster.apiserver import ApiServerProcess

GW, MCS = "gateway.networking.k8s.io", "multicluster.x-k8s.io"


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory):
    server = ApiServerProcess(tmp_path_factory.mktemp("api"), name="gw", bookmark_interval=0.5).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api(apiserver):
    with config.new_client_from_config(config_file=str(apiserver.kubeconfig), context=apiserver.context) as c:
        yield c


@pytest.fixture
def custom(api):
    return client.CustomObjectsApi(api)


@pytest.fixture
def namespace(api):
    name = f"g-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


def route(name: str, **spec) -> dict:
    return {"apiVersion": f"{GW}/v1", "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": "gw"}], **spec}}


def test_discovery_lists_the_groups_kinds_and_status_subresources(api):
    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
    assert [v.version for v in groups[GW].versions] == ["v1", "v1beta1"]
    assert groups[GW].preferred_version.version == "v1"
    assert groups[MCS].preferred_version.group_version == f"{MCS}/v1alpha1"
    gw_v1 = client.CustomObjectsApi(api).get_api_resources(GW, "v1")
    names = {r.name: r for r in gw_v1.resources}
    assert set(names) == {"gatewayclasses", "gatewayclasses/status", "gateways", "gateways/status",
                          "httproutes", "httproutes/status", "grpcroutes", "grpcroutes/status",
                          "tlsroutes", "tlsroutes/status", "listenersets", "listenersets/status",
                          "backendtlspolicies", "backendtlspolicies/status"}
    assert not names["gatewayclasses"].namespaced and names["httproutes"].namespaced
    assert names["httproutes/status"].verbs == ["get", "patch", "update"]
    beta = client.CustomObjectsApi(api).get_api_resources(GW, "v1beta1")
    assert [r.kind for r in beta.resources] == ["ReferenceGrant"]
    mcs = client.CustomObjectsApi(api).get_api_resources(MCS, "v1alpha1")
    assert {r.kind for r in mcs.resources} == {"ServiceExport", "ServiceImport"}


def test_httproute_defaults_generation_and_status_subresource(custom, namespace):
    created = custom.create_namespaced_custom_object(
        GW, "v1", namespace, "httproutes",
        {**route("r", rules=[{"backendRefs": [{"name": "web", "port": 80}]}]), "status": {"parents": ["x"]}})
    assert created["metadata"]["generation"] == 1
    assert "status" not in created                     # a create cannot set the status
    rule = created["spec"]["rules"][0]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]    # the CRD's default
    assert rule["backendRefs"][0] == {"name": "web", "port": 80, "group": "", "kind": "Service", "weight": 1}

    status = {"parents": [{"parentRef": {"name": "gw"}, "controllerName": "x.example/y",
                           "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                           "message": "", "observedGeneration": 1,
                                           "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]}
    written = custom.patch_namespaced_custom_object_status(GW, "v1", namespace, "httproutes", "r",
                                                           {"status": status, "spec": {"hostnames": ["x"]}})
    assert written["status"] == status
    assert "hostnames" not in written["spec"]          # /status changes only the status
    assert written["metadata"]["generation"] == 1      # and is no spec change

    spec_change = custom.patch_namespaced_custom_object(GW, "v1", namespace, "httproutes", "r",
                                                        {"spec": {"hostnames": ["a.example"]},
                                                         "status": {"parents": []}})
    assert spec_change["metadata"]["generation"] == 2
    assert spec_change["status"] == status             # an object write keeps the status
    label_only = custom.patch_namespaced_custom_object(GW, "v1", namespace, "httproutes", "r",
                                                       {"metadata": {"labels": {"a": "b"}}})
    assert label_only["metadata"]["generation"] == 2   # metadata is not the spec

    replaced = custom.replace_namespaced_custom_object_status(
        GW, "v1", namespace, "httproutes", "r", {**label_only, "status": {"parents": []}})
    assert replaced["status"] == {"parents": []}
    # Unchanged defaults sent again (as a client that read the object does) are no spec change.
    again = custom.replace_namespaced_custom_object(GW, "v1", namespace, "httproutes", "r", replaced)
    assert again["metadata"]["generation"] == 2


def test_stale_status_write_is_a_conflict(custom, namespace):
    created = custom.create_namespaced_custom_object(GW, "v1", namespace, "httproutes", route("r"))
    custom.patch_namespaced_custom_object(GW, "v1", namespace, "httproutes", "r", {"spec": {"hostnames": ["a"]}})
    with pytest.raises(ApiException) as excinfo:
        custom.replace_namespaced_custom_object_status(GW, "v1", namespace, "httproutes", "r",
                                                       {**created, "status": {"parents": []}})
    assert excinfo.value.status == 409


def test_invalid_objects_name_the_field(custom, namespace):
    bad = route("r", rules=[{"matches": [{"path": {"type": "Prefix", "value": "/"}}]}])
    with pytest.raises(ApiException) as excinfo:
        custom.create_namespaced_custom_object(GW, "v1", namespace, "httproutes", bad)
    assert excinfo.value.status == 422
    assert "spec.rules[0].matches[0].path.type" in excinfo.value.body
    with pytest.raises(ApiException) as excinfo:
        custom.create_namespaced_custom_object(GW, "v1", namespace, "gateways", {
            "metadata": {"name": "g"}, "spec": {"gatewayClassName": "c",
                                                "listeners": [{"name": "h", "port": 0, "protocol": "HTTP"}]}})
    assert excinfo.value.status == 422 and "spec.listeners[0].port" in excinfo.value.body


def test_listener_protocol_is_a_pattern_not_an_enum(custom, namespace):
    """The CRD's ProtocolType: any name of its pattern (the implementation then decides, as the
    conformance test GatewayListenerUnsupportedProtocol's "INVALID" needs), not free text."""
    def gateway(name: str, protocol: str) -> dict:
        return {"metadata": {"name": name}, "spec": {"gatewayClassName": "c", "listeners": [
            {"name": "l", "port": 1111, "protocol": protocol}]}}
    for i, protocol in enumerate(("INVALID", "example.com/custom")):
        custom.create_namespaced_custom_object(GW, "v1", namespace, "gateways", gateway(f"p{i}", protocol))
    for protocol in ("", "not valid", "-HTTP"):
        with pytest.raises(ApiException) as excinfo:
            custom.create_namespaced_custom_object(GW, "v1", namespace, "gateways", gateway("bad", protocol))
        assert excinfo.value.status == 422 and "spec.listeners[0].protocol" in excinfo.value.body


def test_cluster_scoped_gatewayclass_and_gateway_defaults(custom, namespace):
    name = f"gc-{uuid.uuid4().hex[:6]}"
    gc = custom.create_cluster_custom_object(GW, "v1", "gatewayclasses", {
        "metadata": {"name": name}, "spec": {"controllerName": "gateway.example/multi-cluster"}})
    assert "namespace" not in gc["metadata"]
    status = {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}
    assert custom.patch_cluster_custom_object_status(GW, "v1", "gatewayclasses", name,
                                                     {"status": status})["status"] == status
    with pytest.raises(ApiException) as excinfo:   # controllerName is immutable, as in the CRD
        custom.patch_cluster_custom_object(GW, "v1", "gatewayclasses", name,
                                           {"spec": {"controllerName": "other/x"}})
    assert excinfo.value.status == 422
    gateway = custom.create_namespaced_custom_object(GW, "v1", namespace, "gateways", {
        "metadata": {"name": "gw"}, "spec": {"gatewayClassName": name,
                                             "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}})
    assert gateway["spec"]["listeners"][0]["allowedRoutes"] == {"namespaces": {"from": "Same"}}


def test_reference_grant_and_mcs_kinds(custom, namespace):
    grant = custom.create_namespaced_custom_object(GW, "v1beta1", namespace, "referencegrants", {
        "metadata": {"name": "allow"},
        "spec": {"from": [{"group": GW, "kind": "HTTPRoute", "namespace": "other"}],
                 "to": [{"group": "", "kind": "Service"}]}})
    assert grant["apiVersion"] == f"{GW}/v1beta1"
    custom.create_namespaced_custom_object(MCS, "v1alpha1", namespace, "serviceexports",
                                           {"metadata": {"name": "web"}})
    imported = custom.create_namespaced_custom_object(MCS, "v1alpha1", namespace, "serviceimports", {
        "metadata": {"name": "web"}, "spec": {"ports": [{"name": "http", "port": 80}]}})
    assert imported["spec"] == {"type": "ClusterSetIP", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    exports = custom.list_namespaced_custom_object(MCS, "v1alpha1", namespace, "serviceexports")
    assert [e["metadata"]["name"] for e in exports["items"]] == ["web"]
    client.CoreV1Api(custom.api_client).delete_namespace(namespace)      # deletes them with it
    assert custom.list_namespaced_custom_object(MCS, "v1alpha1", namespace, "serviceimports")["items"] == []


def test_watch_httproutes_from_a_resource_version(custom, namespace):
    listed = custom.list_namespaced_custom_object(GW, "v1", namespace, "httproutes")
    rv = listed["metadata"]["resourceVersion"]
    custom.create_namespaced_custom_object(GW, "v1", namespace, "httproutes", route("a"))
    custom.patch_namespaced_custom_object_status(GW, "v1", namespace, "httproutes", "a",
                                                 {"status": {"parents": []}})
    custom.delete_namespaced_custom_object(GW, "v1", namespace, "httproutes", "a")
    events = []
    stream = watch.Watch().stream(custom.list_namespaced_custom_object, GW, "v1", namespace, "httproutes",
                                  resource_version=rv, timeout_seconds=2)
    for event in stream:
        events.append((event["type"], event["object"]["metadata"]["name"]))
        if len(events) == 3:
            break
    assert events == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


def test_frontend_tls_validation_is_checked_and_defaulted(custom, namespace):
    """The CRD's rules for spec.tls.frontend: a mode is defaulted to AllowValidOnly, perPort ports
    are unique, caCertificateRefs has 1 to 16 items, the mode is one of two."""
    def gateway(name: str, frontend: dict) -> dict:
        return {"metadata": {"name": name}, "spec": {"gatewayClassName": "c", "tls": {"frontend": frontend},
                                                     "listeners": [{"name": "l", "port": 443, "protocol": "HTTPS"}]}}
    ref = {"kind": "ConfigMap", "group": "", "name": "ca"}
    made = custom.create_namespaced_custom_object(GW, "v1", namespace, "gateways", gateway(
        "ok", {"default": {"validation": {"caCertificateRefs": [ref]}}}))
    assert made["spec"]["tls"]["frontend"]["default"]["validation"]["mode"] == "AllowValidOnly"
    port = {"port": 8443, "tls": {"validation": {"caCertificateRefs": [ref]}}}
    for frontend, field in (
            ({"default": {}, "perPort": [port, port]}, "spec.tls.frontend.perPort"),
            ({"default": {"validation": {"caCertificateRefs": []}}}, "spec.tls.frontend.default.validation"),
            ({"default": {"validation": {"caCertificateRefs": [ref], "mode": "Sometimes"}}},
             "spec.tls.frontend.default.validation.mode"),
            ({"perPort": [port]}, "spec.tls.frontend.default")):
        with pytest.raises(ApiException) as excinfo:
            custom.create_namespaced_custom_object(GW, "v1", namespace, "gateways", gateway("bad", frontend))
        assert excinfo.value.status == 422 and field in excinfo.value.body, excinfo.value.body


def test_tlsroute_defaults_checks_and_status_subresource(custom, namespace):
    """The TLSRoute CRD (v1): backendRefs defaulted as other routes', hostnames required (RFC 1123,
    a wildcard only as the first label, no IPs), exactly one rule, a Service's ref needs a port;
    the status is a subresource and a spec change bumps the generation."""
    def tls_route(name: str, hostnames: list, rules: list | None = None) -> dict:
        return {"apiVersion": f"{GW}/v1", "kind": "TLSRoute", "metadata": {"name": name},
                "spec": {"parentRefs": [{"name": "gw"}], "hostnames": hostnames,
                         "rules": rules if rules is not None else [{"backendRefs": [{"name": "tls", "port": 443}]}]}}
    made = custom.create_namespaced_custom_object(GW, "v1", namespace, "tlsroutes",
                                                  {**tls_route("r", ["abc.example.com", "*.example.com"]),
                                                   "status": {"parents": ["x"]}})
    assert made["metadata"]["generation"] == 1 and "status" not in made
    assert made["spec"]["rules"][0]["backendRefs"] == [{"name": "tls", "port": 443, "group": "", "kind": "Service",
                                                        "weight": 1}]
    status = {"parents": [{"parentRef": {"name": "gw"}, "controllerName": "x.example/y",
                           "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                           "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z",
                                           "message": ""}]}]}
    written = custom.patch_namespaced_custom_object_status(GW, "v1", namespace, "tlsroutes", "r", {"status": status})
    assert written["status"] == status and written["metadata"]["generation"] == 1
    patched = custom.patch_namespaced_custom_object(GW, "v1", namespace, "tlsroutes", "r",
                                                    {"spec": {"hostnames": ["other.example.com"]}})
    assert patched["metadata"]["generation"] == 2 and patched["status"] == status
    for name, spec, field in (
            ("no-hostnames", tls_route("x", []), "spec.hostnames"),
            ("ip", tls_route("x", ["10.0.0.1"]), "spec.hostnames[0]"),
            ("mid-wildcard", tls_route("x", ["a.*.example.com"]), "spec.hostnames[0]"),
            ("bare-wildcard", tls_route("x", ["*"]), "spec.hostnames[0]"),
            ("two-rules", tls_route("x", ["a.example.com"], [{"backendRefs": [{"name": "a", "port": 1}]}] * 2),
             "spec.rules"),
            ("no-backends", tls_route("x", ["a.example.com"], [{"backendRefs": []}]), "spec.rules[0].backendRefs"),
            ("no-port", tls_route("x", ["a.example.com"], [{"backendRefs": [{"name": "a"}]}]),
             "spec.rules[0].backendRefs[0]")):
        with pytest.raises(ApiException) as excinfo:
            custom.create_namespaced_custom_object(GW, "v1", namespace, "tlsroutes", spec)
        assert excinfo.value.status == 422 and field in excinfo.value.body, (name, excinfo.value.body)
    other_kind = tls_route("x", ["a.example.com"], [{"backendRefs": [{"group": "example.com", "kind": "Thing",
                                                                      "name": "a"}]}])
    assert custom.create_namespaced_custom_object(GW, "v1", namespace, "tlsroutes", other_kind)


def test_listenerset_defaults_checks_and_status_subresource(custom, namespace):
    """The ListenerSet CRD (v1): the parentRef's group and kind defaulted to a Gateway's, listeners
    as a Gateway's (allowedRoutes Same, route kinds' group, certificateRefs core Secrets, tls mode
    Terminate) and the CRD's rules on them; the status is a subresource and a spec change bumps
    the generation."""
    def listener_set(name: str, *listeners: dict, parent: dict | None = None) -> dict:
        return {"apiVersion": f"{GW}/v1", "kind": "ListenerSet", "metadata": {"name": name},
                "spec": {"parentRef": parent if parent is not None else {"name": "gw"}, "listeners": list(listeners)}}
    http = {"name": "http", "port": 80, "protocol": "HTTP", "hostname": "a.example.com"}
    https = {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "*.example.com",
             "tls": {"certificateRefs": [{"name": "cert", "namespace": "other"}]},
             "allowedRoutes": {"kinds": [{"kind": "HTTPRoute"}], "namespaces": {"from": "All"}}}
    made = custom.create_namespaced_custom_object(GW, "v1", namespace, "listenersets",
                                                  {**listener_set("ls", http, https), "status": {"listeners": ["x"]}})
    assert made["metadata"]["generation"] == 1 and "status" not in made
    assert made["spec"]["parentRef"] == {"name": "gw", "group": GW, "kind": "Gateway"}
    first, second = made["spec"]["listeners"]
    assert first["allowedRoutes"] == {"namespaces": {"from": "Same"}}
    assert second["allowedRoutes"] == {"kinds": [{"kind": "HTTPRoute", "group": GW}], "namespaces": {"from": "All"}}
    assert second["tls"] == {"certificateRefs": [{"name": "cert", "namespace": "other", "group": "",
                                                  "kind": "Secret"}], "mode": "Terminate"}
    status = {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                              "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
              "listeners": [{"name": "http", "attachedRoutes": 0, "supportedKinds": [], "conditions": []}]}
    written = custom.patch_namespaced_custom_object_status(GW, "v1", namespace, "listenersets", "ls",
                                                           {"status": status})
    assert written["status"] == status and written["metadata"]["generation"] == 1
    patched = custom.patch_namespaced_custom_object(GW, "v1", namespace, "listenersets", "ls",
                                                    {"spec": {"listeners": [http]}})
    assert patched["metadata"]["generation"] == 2 and patched["status"] == status
    passthrough = {"name": "tls", "port": 443, "protocol": "TLS", "tls": {"mode": "Passthrough"}}
    tcp = {"name": "tcp", "port": 80, "protocol": "TCP"}
    assert custom.create_namespaced_custom_object(GW, "v1", namespace, "listenersets",
                                                  listener_set("ok", passthrough, tcp))
    for name, spec, field in (
            ("no-listeners", listener_set("x"), "spec.listeners"),
            ("no-parent-name", listener_set("x", http, parent={"kind": "Gateway"}), "spec.parentRef.name"),
            ("same-name", listener_set("x", http, {**tcp, "name": "http"}), "spec.listeners[1].name"),
            ("bad-name", listener_set("x", {**http, "name": "Upper"}), "spec.listeners[0].name"),
            ("bad-hostname", listener_set("x", {**http, "hostname": "a.*.example.com"}), "spec.listeners[0].hostname"),
            ("port", listener_set("x", {**http, "port": 0}), "spec.listeners[0].port"),
            ("from", listener_set("x", {**http, "allowedRoutes": {"namespaces": {"from": "Some"}}}),
             "spec.listeners[0].allowedRoutes.namespaces.from"),
            ("tls-on-http", listener_set("x", {**http, "tls": {"mode": "Passthrough"}}), "tls must not be specified"),
            ("tls-missing", listener_set("x", {**passthrough, "tls": None}), "spec.listeners[0].tls"),
            ("no-tls", listener_set("x", {k: v for k, v in passthrough.items() if k != "tls"}),
             "tls mode must be set for protocol TLS"),
            ("https-passthrough", listener_set("x", {**https, "tls": {"mode": "Passthrough"}}),
             "tls mode must be Terminate for protocol HTTPS"),
            ("terminate-without-certificates", listener_set("x", {**https, "tls": {}}),
             "certificateRefs or options must be specified when mode is Terminate"),
            ("tcp-hostname", listener_set("x", {**tcp, "hostname": "a.example.com"}),
             "hostname must not be specified"),
            ("same-port-protocol-hostname", listener_set("x", http, {**http, "name": "other"}),
             "Combination of port, protocol and hostname must be unique")):
        with pytest.raises(ApiException) as excinfo:
            custom.create_namespaced_custom_object(GW, "v1", namespace, "listenersets", spec)
        assert excinfo.value.status == 422 and field in excinfo.value.body, (name, excinfo.value.body)


def test_gateway_allowed_listeners_kept_and_defaulted(custom, namespace):
    """A Gateway's spec.allowedListeners is stored (the CRD defaults namespaces.from to None when
    it is given; absent, it stays absent) and from is one of All, Selector, Same, None."""
    def gateway(name: str, **spec) -> dict:
        return {"metadata": {"name": name}, "spec": {"gatewayClassName": "c", **spec, "listeners": [
            {"name": "l", "port": 80, "protocol": "HTTP"}]}}
    selector = {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"allowed": "ns"}}}}
    made = custom.create_namespaced_custom_object(GW, "v1", namespace, "gateways",
                                                  gateway("selector", allowedListeners=selector))
    assert made["spec"]["allowedListeners"] == selector
    for name, given in (("empty", {}), ("no-from", {"namespaces": {}})):
        made = custom.create_namespaced_custom_object(GW, "v1", namespace, "gateways",
                                                      gateway(name, allowedListeners=given))
        assert made["spec"]["allowedListeners"] == {"namespaces": {"from": "None"}}, name
    assert "allowedListeners" not in custom.create_namespaced_custom_object(GW, "v1", namespace, "gateways",
                                                                            gateway("absent"))["spec"]
    with pytest.raises(ApiException) as excinfo:
        custom.create_namespaced_custom_object(GW, "v1", namespace, "gateways",
                                               gateway("bad", allowedListeners={"namespaces": {"from": "Some"}}))
    assert excinfo.value.status == 422 and "spec.allowedListeners.namespaces.from" in excinfo.value.body
