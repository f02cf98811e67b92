"""Routes from Kubernetes: Gateway API objects in the local API server, a real gateway process
watching it with the official client. Each test is one behaviour of the Gateway API spec
(gateway.networking.k8s.io/v1), checked on the traffic and on the status the gateway writes.

Pods are the session backends (127.0.0.2 "zone-a", 127.0.0.3 "zone-b"), listed in
EndpointSlices of Services ``svc-a`` and ``svc-b``. Every wait is bounded.
"""
from __future__ import annotations

import itertools
import statistics
import time
import uuid
from collections import Counter

import pytest
from kubernetes import client, config

from support import Client, GatewayProcess, wait_listening, wait_until
from gateway.devcluster.apiserver import ApiServerProcess

GW = "gateway.networking.k8s.io"
CONTROLLER = "gateway.example/multi-cluster"
NS = "default"


def wait_for(check, timeout: float = 10.0, interval: float = 0.05):
    """``check()``'s first truthy value (an AssertionError inside it means "not yet")."""
    return wait_until(check, timeout, "the check", interval, ignore=(AssertionError,))


def service(name: str, backend_port: int) -> dict:
    return {"metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


def endpoint_slice(name: str, ip: str, port: int) -> dict:
    return {"metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": port}]}


def add_backend_service(api, namespace: str, name: str, backend) -> None:
    ip, port = backend.address.rsplit(":", 1)
    client.CoreV1Api(api).create_namespaced_service(namespace, service(name, int(port)))
    client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(namespace, endpoint_slice(name, ip, int(port)))


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory):
    server = ApiServerProcess(tmp_path_factory.mktemp("api"), name="gwapi", bookmark_interval=0.5).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(apiserver, backend_a, backend_b):
    with config.new_client_from_config(config_file=str(apiserver.kubeconfig), context=apiserver.context) as c:
        custom = client.CustomObjectsApi(c)
        core = client.CoreV1Api(c)
        core.create_namespace({"metadata": {"name": "other", "labels": {"team": "other"}}})
        add_backend_service(c, NS, "svc-a", backend_a)
        add_backend_service(c, NS, "svc-b", backend_b)
        add_backend_service(c, "other", "svc-o", backend_b)
        custom.create_cluster_custom_object(GW, "v1", "gatewayclasses", {
            "metadata": {"name": "multi"}, "spec": {"controllerName": CONTROLLER}})
        custom.create_cluster_custom_object(GW, "v1", "gatewayclasses", {
            "metadata": {"name": "someone-else"}, "spec": {"controllerName": "other.example/ctl"}})
        custom.create_namespaced_custom_object(GW, "v1", NS, "gateways", {
            "metadata": {"name": "gw"},
            "spec": {"gatewayClassName": "multi", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "wild", "port": 8080, "protocol": "HTTP", "hostname": "*.example.com",
                 "allowedRoutes": {"namespaces": {"from": "All"}}},
                {"name": "tcp", "port": 9000, "protocol": "TCP"},
                # GRPCRoutes only; and one for both kinds that no other test uses (an HTTPRoute and
                # a GRPCRoute whose hostnames meet on a listener: the spec accepts the older only)
                {"name": "grpc", "port": 8081, "protocol": "HTTP",
                 "allowedRoutes": {"kinds": [{"kind": "GRPCRoute"}]}},
                {"name": "mixed", "port": 8082, "protocol": "HTTP", "hostname": "*.mixed.test"}]}})
        yield c


def kube_source(apiserver) -> dict:
    return {"name": "cluster-a", "type": "kubernetes", "kubeconfig": str(apiserver.kubeconfig),
            "context": apiserver.context}


# Gateways get addresses from this pool (gateway_api.addresses); "gw" is the only one here.
GW_ADDRESS = "127.0.20.1"


@pytest.fixture(scope="module")
def gw(api, apiserver, tmp_path_factory):
    proc = GatewayProcess({"sources": [kube_source(apiserver)], "workers": 2,
                           "gateway_api": {"addresses": [f"{GW_ADDRESS}-127.0.20.4"]}},
                          tmp_path_factory.mktemp("gw")).start()
    # Requests go to the Gateway's own address and its "http" listener's port.
    wait_listening(GW_ADDRESS, 80, 20, proc.proc)
    proc.host, proc.port = GW_ADDRESS, 80
    yield proc
    proc.stop()


@pytest.fixture
def custom(api):
    return client.CustomObjectsApi(api)


_ids = itertools.count()


def get(gw, path, host="gw.test", headers=()):
    """Through the listener the Host is for: "wild" (port 8080) for *.example.com, else "http"."""
    rid = f"ga-{next(_ids)}"
    with Client(gw.host, 8080 if host.endswith(".example.com") else gw.port) as c:
        resp = c.request("GET", path, [("X-Request-Id", rid), *headers], host=host)
    return resp


def httproute(name: str, rules: list, parent: dict | None = None, **spec) -> dict:
    return {"metadata": {"name": name},
            "spec": {"parentRefs": [parent or {"name": "gw", "sectionName": "http"}], "rules": rules, **spec}}


def rule(path: str = "/", kind: str = "PathPrefix", backends=(("svc-a", 1),), **extra) -> dict:
    return {"matches": [{"path": {"type": kind, "value": path}}],
            "backendRefs": [{"name": n, "port": 80, "weight": w} for n, w in backends], **extra}


def create(custom, route: dict, namespace: str = NS) -> dict:
    return custom.create_namespaced_custom_object(GW, "v1", namespace, "httproutes", route)


def parent_status(custom, name: str, namespace: str = NS, generation: int | None = None) -> dict:
    """Our status.parents entry's conditions by type, once written (for ``generation`` if given)."""
    def ready():
        obj = custom.get_namespaced_custom_object(GW, "v1", namespace, "httproutes", name)
        ours = [p for p in (obj.get("status") or {}).get("parents") or () if p["controllerName"] == CONTROLLER]
        if not ours:
            return None
        conditions = {c["type"]: c for c in ours[0]["conditions"]}
        wanted = generation or obj["metadata"]["generation"]
        if any(c["observedGeneration"] != wanted for c in conditions.values()):
            return None
        return conditions
    return wait_for(ready)


def address(gw, path, host="gw.test", headers=()):
    """The backend that answered, or the status when the gateway answered itself."""
    resp = get(gw, path, host, headers)
    return resp.json()["address"] if resp.status == 200 else resp.status


def served_by(gw, path, backend, host="gw.test"):
    return wait_for(lambda: address(gw, path, host) == backend.address)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# -- status of the class and the Gateway ------------------------------------------------------


def test_gatewayclass_accepted_only_for_our_controller(gw, custom):
    def accepted():
        status = custom.get_cluster_custom_object(GW, "v1", "gatewayclasses", "multi").get("status") or {}
        return {c["type"]: c for c in status.get("conditions") or ()}.get("Accepted")
    condition = wait_for(accepted)
    assert (condition["status"], condition["reason"], condition["observedGeneration"]) == ("True", "Accepted", 1)
    assert condition["lastTransitionTime"]
    other = custom.get_cluster_custom_object(GW, "v1", "gatewayclasses", "someone-else")
    assert "status" not in other or not other["status"].get("conditions")


def test_gateway_status_listeners_and_programmed(gw, custom):
    def status():
        s = custom.get_namespaced_custom_object(GW, "v1", NS, "gateways", "gw").get("status") or {}
        return s if s.get("listeners") else None
    s = wait_for(status)
    conditions = {c["type"]: c for c in s["conditions"]}
    assert conditions["Programmed"]["status"] == "True" and conditions["Accepted"]["status"] == "True"
    listeners = {l["name"]: l for l in s["listeners"]}
    assert listeners["http"]["supportedKinds"] == [{"group": GW, "kind": "HTTPRoute"}, {"group": GW, "kind": "GRPCRoute"}]
    tcp = {c["type"]: c for c in listeners["tcp"]["conditions"]}
    assert (tcp["Accepted"]["status"], tcp["Accepted"]["reason"]) == ("False", "UnsupportedProtocol")


# -- matching ------------------------------------------------------------------------------


def test_route_arrives_and_status_says_accepted_and_resolved(gw, custom, backend_a):
    name = unique("basic")
    create(custom, httproute(name, [rule(f"/{name}")]))
    served_by(gw, f"/{name}/x", backend_a)
    assert get(gw, f"/{name}x").status == 404                 # PathPrefix is segment-wise
    conditions = parent_status(custom, name)
    assert (conditions["Accepted"]["status"], conditions["Accepted"]["reason"]) == ("True", "Accepted")
    assert (conditions["ResolvedRefs"]["status"], conditions["ResolvedRefs"]["reason"]) == ("True", "ResolvedRefs")


def test_observed_generation_follows_a_spec_change(gw, custom, backend_b):
    name = unique("gen")
    create(custom, httproute(name, [rule(f"/{name}")]))
    parent_status(custom, name, generation=1)
    custom.patch_namespaced_custom_object(GW, "v1", NS, "httproutes", name,
                                          {"spec": {"rules": [rule(f"/{name}", backends=(("svc-b", 1),))]}})
    served_by(gw, f"/{name}", backend_b)
    assert parent_status(custom, name, generation=2)["Accepted"]["status"] == "True"


def test_exact_and_regex_paths(gw, custom, backend_a, backend_b):
    name = unique("paths")
    create(custom, httproute(name, [rule(f"/{name}/exact", "Exact", (("svc-b", 1),)),
                                    rule(f"/{name}/v[0-9]+$", "RegularExpression", (("svc-a", 1),))]))
    served_by(gw, f"/{name}/exact", backend_b)
    assert get(gw, f"/{name}/exact/more").status == 404
    served_by(gw, f"/{name}/v12", backend_a)
    assert get(gw, f"/{name}/vx").status == 404


@pytest.mark.parametrize("where", ["headers", "queryParams"])
def test_an_invalid_header_or_query_regex_is_not_accepted_and_breaks_nothing(gw, custom, backend_a, where):
    """The translation checks every regex as the file's loader does (one validator): the
    route is Accepted=False, never handed to the data plane, and other routes keep serving."""
    name = unique("badre")
    create(custom, httproute(name, [
        {"matches": [{"path": {"type": "PathPrefix", "value": f"/{name}"},
                      where: [{"type": "RegularExpression", "name": "x", "value": "(["}]}],
         "backendRefs": [{"name": "svc-a", "port": 80}]}]))
    accepted = parent_status(custom, name)["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "UnsupportedValue")
    assert "invalid regular expression" in accepted["message"]
    good = unique("good")
    create(custom, httproute(good, [rule(f"/{good}")]))
    served_by(gw, f"/{good}", backend_a)


def test_header_query_and_method_matches(gw, custom, backend_a, backend_b):
    name = unique("hqm")
    create(custom, httproute(name, [
        {"matches": [{"path": {"type": "PathPrefix", "value": f"/{name}"},
                      "headers": [{"name": "X-Env", "value": "prod"}],
                      "queryParams": [{"name": "v", "value": "2"}], "method": "GET"}],
         "backendRefs": [{"name": "svc-b", "port": 80}]},
        rule(f"/{name}")]))
    wait_for(lambda: address(gw, f"/{name}?v=2", headers=[("X-Env", "prod")]) == backend_b.address)
    assert address(gw, f"/{name}?v=2") == backend_a.address           # header missing
    assert address(gw, f"/{name}?v=3", headers=[("X-Env", "prod")]) == backend_a.address


def test_precedence_across_routes_not_creation_order(gw, custom, backend_a, backend_b):
    base = unique("prec")
    create(custom, httproute(f"{base}-old", [rule(f"/{base}")]))                   # older, shorter prefix
    create(custom, httproute(f"{base}-new", [rule(f"/{base}/deep", backends=(("svc-b", 1),))]))
    served_by(gw, f"/{base}/deep/x", backend_b)                                     # longest prefix wins
    served_by(gw, f"/{base}/other", backend_a)


def test_hostname_intersection_with_listener(gw, custom, backend_a):
    name = unique("hosts")
    create(custom, httproute(name, [rule(f"/{name}")], parent={"name": "gw", "sectionName": "wild"},
                             hostnames=["a.example.com", "other.test"]))
    served_by(gw, f"/{name}", backend_a, host="a.example.com")
    assert get(gw, f"/{name}", host="other.test").status == 404      # outside the listener's *.example.com
    assert get(gw, f"/{name}", host="b.example.com").status == 404   # not a route hostname


def test_weights_1_to_3(gw, custom, backend_a, backend_b):
    name = unique("split")
    create(custom, httproute(name, [rule(f"/{name}", backends=(("svc-a", 1), ("svc-b", 3)))]))
    wait_for(lambda: get(gw, f"/{name}").status == 200)
    with gw.client() as c:
        seen = Counter(c.request("GET", f"/{name}/{i}").json()["address"] for i in range(400))
    assert seen == {backend_a.address: 100, backend_b.address: 300}


# -- filters --------------------------------------------------------------------------------


def test_filters_header_modifiers_redirect_rewrite(gw, custom, backend_a):
    name = unique("filters")
    create(custom, httproute(name, [
        {**rule(f"/{name}/hdr"), "filters": [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "X-Set", "value": "1"}],
                                                                       "remove": ["X-Drop"]}},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "X-Resp", "value": "r"}]}}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": f"/{name}/old"}}], "filters": [
            {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301,
                                                            "path": {"type": "ReplacePrefixMatch",
                                                                     "replacePrefixMatch": "/new"}}}]},
        {**rule(f"/{name}/rw"), "filters": [
            {"type": "URLRewrite", "urlRewrite": {"hostname": "internal.svc",
                                                  "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]},
    ]))
    resp = wait_for(lambda: (r := get(gw, f"/{name}/hdr", headers=[("X-Drop", "x")])).status == 200 and r)
    headers = {k.lower(): v for k, v in resp.json()["headers"].items()}
    assert headers["x-set"] == "1" and "x-drop" not in headers
    assert resp.header("X-Resp") == "r"
    redirect = get(gw, f"/{name}/old/page?q=1")
    assert (redirect.status, redirect.header("Location")) == (301, "https://gw.test/new/page?q=1")
    body = get(gw, f"/{name}/rw/a/b").json()
    assert body["path"] == "/a/b"
    assert {k.lower(): v for k, v in body["headers"].items()}["host"] == "internal.svc"


def test_request_mirror_fraction(gw, custom, backend_a, backend_b):
    """RequestMirror fraction 1/4: svc-b gets a copy of 50 of 200 requests (within 10%)."""
    name = unique("mirror")
    create(custom, httproute(name, [{**rule(f"/{name}"), "filters": [
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "svc-b", "port": 80},
                                                    "fraction": {"numerator": 1, "denominator": 4}}}]}]))
    served_by(gw, f"/{name}/warm", backend_a)

    def mirrored() -> int:
        return backend_b.stats()["paths"].get(f"/{name}", 0)
    before = mirrored()
    with gw.client() as c:
        for i in range(200):
            assert c.request("GET", f"/{name}/{i}", host="gw.test").status == 200
    wait_for(lambda: mirrored() - before >= 45, timeout=5)
    time.sleep(0.3)                     # copies still in flight would count too
    assert 45 <= mirrored() - before <= 55, mirrored() - before


# -- references and their status ------------------------------------------------------------


def test_unknown_backend_is_backend_not_found_and_500(gw, custom):
    name = unique("missing")
    create(custom, httproute(name, [rule(f"/{name}", backends=(("no-such-service", 1),))]))
    conditions = parent_status(custom, name)
    assert (conditions["ResolvedRefs"]["status"], conditions["ResolvedRefs"]["reason"]) == ("False", "BackendNotFound")
    assert conditions["Accepted"]["status"] == "True"      # the route is accepted, its ref is not resolved
    assert wait_for(lambda: get(gw, f"/{name}").status == 500)


def test_an_invalid_backend_beside_a_valid_one_gets_500_for_its_share(gw, custom):
    """The spec: requests that would have gone to an invalid backendRef get 500; the rest
    are served (weights 1:1 here, so about half of each)."""
    name = unique("partly")
    create(custom, httproute(name, [rule(f"/{name}", backends=(("svc-a", 1), ("no-such-service", 1)))]))
    assert parent_status(custom, name)["ResolvedRefs"]["reason"] == "BackendNotFound"
    assert wait_for(lambda: get(gw, f"/{name}").status in (200, 500))
    statuses = [get(gw, f"/{name}").status for _ in range(200)]
    assert set(statuses) == {200, 500}, set(statuses)
    assert 0.4 <= statuses.count(500) / len(statuses) <= 0.6, statuses.count(500)


def test_invalid_backend_kind(gw, custom):
    name = unique("kind")
    route = httproute(name, [rule(f"/{name}")])
    route["spec"]["rules"][0]["backendRefs"][0].update(group="example.com", kind="Bucket")
    create(custom, route)
    assert parent_status(custom, name)["ResolvedRefs"]["reason"] == "InvalidKind"


def test_grpcroute_status_accepted_and_an_unsupported_filter(gw, custom):
    """GRPCRoutes get their status as HTTPRoutes do (served: tests/conformance, GRPCRoute tests);
    a filter this gateway does not apply makes the route not accepted, naming the filter."""
    def grpc_status(name: str) -> dict:
        def written():
            obj = custom.get_namespaced_custom_object(GW, "v1", NS, "grpcroutes", name)
            ours = [p for p in (obj.get("status") or {}).get("parents") or () if p["controllerName"] == CONTROLLER]
            return {c["type"]: c for c in ours[0]["conditions"]} if ours else None
        return wait_for(written)
    good, odd = unique("grpc"), unique("grpc-ext")
    rule_ = {"matches": [{"method": {"service": "gateway.test.Echo", "method": "Unary"}}],
             "backendRefs": [{"name": "svc-a", "port": 80}]}
    # A hostname of their own: a GRPCRoute for any host would take the listener from every
    # newer HTTPRoute (the spec's HTTPRoute/GRPCRoute conflict rule, tested below).
    for name, extra in ((good, {}), (odd, {"filters": [{"type": "ExtensionRef", "extensionRef": {
            "group": "example.com", "kind": "Thing", "name": "x"}}]})):
        custom.create_namespaced_custom_object(GW, "v1", NS, "grpcroutes", {
            "metadata": {"name": name}, "spec": {"parentRefs": [{"name": "gw", "sectionName": "grpc"}],
                                                 "rules": [{**rule_, **extra}]}})
    conditions = grpc_status(good)
    assert conditions["Accepted"]["status"] == "True" and conditions["ResolvedRefs"]["status"] == "True"
    conditions = grpc_status(odd)
    assert (conditions["Accepted"]["status"], conditions["Accepted"]["reason"]) == ("False", "UnsupportedValue")
    assert "ExtensionRef" in conditions["Accepted"]["message"]
    # An HTTPRoute to a listener that takes GRPCRoutes only.
    name = unique("http-on-grpc")
    create(custom, httproute(name, [rule(f"/{name}")], parent={"name": "gw", "sectionName": "grpc"}))
    accepted = parent_status(custom, name)["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "NotAllowedByListeners")


def test_an_httproute_and_an_older_grpcroute_on_one_hostname(gw, custom, backend_a, backend_b):
    """The spec accepts exactly one of an HTTPRoute and a GRPCRoute whose hostnames intersect on
    a listener: the older. The newer HTTPRoute is not accepted and not served there; once the
    GRPCRoute is gone it is. (Listener "mixed", *.mixed.test on port 8082, is this test's.)"""
    host = f"{unique('both')}.mixed.test"
    # Created within one second, the two tie on age: then "namespace/name" decides, so the
    # GRPCRoute's name sorts first too.
    grpc_name, http_name = unique("a-older-grpc"), unique("b-newer-http")
    mixed = {"name": "gw", "sectionName": "mixed"}

    def answered_by() -> str | int:
        with Client(gw.host, 8082) as c:
            resp = c.request("GET", "/only-http", [], host=host)
        return resp.json()["address"] if resp.status == 200 else resp.status
    custom.create_namespaced_custom_object(GW, "v1", NS, "grpcroutes", {
        "metadata": {"name": grpc_name},
        "spec": {"parentRefs": [mixed], "hostnames": [host], "rules": [{"backendRefs": [{"name": "svc-a", "port": 80}]}]}})
    wait_for(lambda: answered_by() == backend_a.address)
    create(custom, httproute(http_name, [rule("/only-http", "Exact", backends=(("svc-b", 1),))], parent=mixed,
                             hostnames=[host]))
    accepted = parent_status(custom, http_name)["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "HostnameConflict")
    assert grpc_name in accepted["message"]
    assert answered_by() == backend_a.address           # the GRPCRoute's
    custom.delete_namespaced_custom_object(GW, "v1", NS, "grpcroutes", grpc_name)
    wait_for(lambda: answered_by() == backend_b.address)
    wait_for(lambda: parent_status(custom, http_name)["Accepted"]["status"] == "True")


def test_cross_namespace_backend_needs_a_reference_grant(gw, custom, backend_b):
    name = unique("xns")
    route = httproute(name, [rule(f"/{name}", backends=(("svc-o", 1),))])
    route["spec"]["rules"][0]["backendRefs"][0]["namespace"] = "other"
    create(custom, route)
    conditions = parent_status(custom, name)
    assert (conditions["ResolvedRefs"]["status"], conditions["ResolvedRefs"]["reason"]) == ("False", "RefNotPermitted")
    assert wait_for(lambda: get(gw, f"/{name}").status == 500)
    custom.create_namespaced_custom_object(GW, "v1beta1", "other", "referencegrants", {
        "metadata": {"name": unique("grant")},
        "spec": {"from": [{"group": GW, "kind": "HTTPRoute", "namespace": NS}],
                 "to": [{"group": "", "kind": "Service", "name": "svc-o"}]}})
    served_by(gw, f"/{name}", backend_b)
    assert wait_for(lambda: parent_status(custom, name)["ResolvedRefs"]["status"] == "True")


def test_route_not_allowed_by_listener(gw, custom):
    name = unique("notallowed")
    create(custom, httproute(name, [rule(f"/{name}")],
                             parent={"name": "gw", "namespace": NS, "sectionName": "http"}), namespace="other")
    conditions = parent_status(custom, name, namespace="other")
    assert (conditions["Accepted"]["status"], conditions["Accepted"]["reason"]) == ("False", "NotAllowedByListeners")
    assert get(gw, f"/{name}").status == 404


def test_no_matching_parent_section(gw, custom):
    name = unique("nosection")
    create(custom, httproute(name, [rule(f"/{name}")], parent={"name": "gw", "sectionName": "nope"}))
    conditions = parent_status(custom, name)
    assert (conditions["Accepted"]["status"], conditions["Accepted"]["reason"]) == ("False", "NoMatchingParent")


def test_route_of_another_controllers_gateway_gets_no_status_from_us(gw, custom):
    custom.create_namespaced_custom_object(GW, "v1", NS, "gateways", {
        "metadata": {"name": "foreign"}, "spec": {"gatewayClassName": "someone-else",
                                                  "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}})
    name = unique("foreign")
    create(custom, httproute(name, [rule(f"/{name}")], parent={"name": "foreign"}))
    marker = unique("marker")                       # a later route we do report on: we have seen both
    create(custom, httproute(marker, [rule(f"/{marker}")]))
    parent_status(custom, marker)
    obj = custom.get_namespaced_custom_object(GW, "v1", NS, "httproutes", name)
    assert not (obj.get("status") or {}).get("parents")
    assert get(gw, f"/{name}").status == 404


def test_deleted_route_stops_serving(gw, custom, backend_a):
    name = unique("gone")
    create(custom, httproute(name, [rule(f"/{name}")]))
    served_by(gw, f"/{name}", backend_a)
    custom.delete_namespaced_custom_object(GW, "v1", NS, "httproutes", name)
    wait_for(lambda: get(gw, f"/{name}").status == 404)


def test_propagation_httproute_change_to_first_request(gw, custom, backend_a, backend_b):
    """HTTPRoute write -> the first request the gateway routes by it: median and max of 20."""
    name = unique("prop")
    create(custom, httproute(name, [rule(f"/{name}")]))
    served_by(gw, f"/{name}", backend_a)
    delays = []
    for i in range(20):
        target = backend_b if i % 2 == 0 else backend_a
        started = time.monotonic()
        custom.patch_namespaced_custom_object(GW, "v1", NS, "httproutes", name, {"spec": {"rules": [
            rule(f"/{name}", backends=(("svc-b" if target is backend_b else "svc-a", 1),))]}})
        wait_for(lambda: address(gw, f"/{name}") == target.address, interval=0.002)
        delays.append(time.monotonic() - started)
    print(f"\nHTTPRoute change -> first request: median {statistics.median(delays) * 1000:.0f} ms, "
          f"max {max(delays) * 1000:.0f} ms over {len(delays)} changes")
    assert max(delays) < 5.0


def test_two_ports_of_one_service_are_two_services(gw, custom, api, backend_a, backend_b):
    """Rules to ports 80 and 81 of one Service reach each its own port's endpoints (a port
    other than the Service's first is the service "namespace/name:port" in the data plane)."""
    name = unique("two-ports")
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    core.create_namespaced_service(NS, {"metadata": {"name": name}, "spec": {"ports": [
        {"name": "a", "port": 80, "targetPort": "a"}, {"name": "b", "port": 81, "targetPort": "b"}]}})
    for port_name, backend in (("a", backend_a), ("b", backend_b)):
        ip, port = backend.address.rsplit(":", 1)
        discovery.create_namespaced_endpoint_slice(NS, {
            "metadata": {"name": f"{name}-{port_name}", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"name": port_name, "port": int(port)}]})
    route = unique("r-two-ports")
    create(custom, httproute(route, [
        {"matches": [{"path": {"type": "PathPrefix", "value": f"/{route}/a"}}],
         "backendRefs": [{"name": name, "port": 80}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": f"/{route}/b"}}],
         "backendRefs": [{"name": name, "port": 81}]}]))
    served_by(gw, f"/{route}/a", backend_a)
    served_by(gw, f"/{route}/b", backend_b)
    assert {address(gw, f"/{route}/{p}") for p in "ab" for _ in range(3)} == {backend_a.address, backend_b.address}
    assert parent_status(custom, route)["ResolvedRefs"]["status"] == "True"
