"""Gateway API conformance, replayed: HTTPRoute matching and backends.

Each test is the upstream Go test of the same ShortName (kubernetes-sigs/gateway-api
``conformance/tests/<file>.go``, named in its docstring; Apache-2.0, Copyright The Kubernetes
Authors), with its manifest from ``manifests/``: the same objects, requests, expected answers
and conditions. Cases the Go test runs as parallel subtests run side by side here too.
"""
from __future__ import annotations

import pytest

import roundtrip as http
import status as k
from harness import INFRA_BACKEND_V1 as V1, INFRA_BACKEND_V2 as V2, INFRA_BACKEND_V3 as V3
from harness import INFRA_NS as NS
from harness import WEB_BACKEND_NS
from roundtrip import ExpectedResponse as E, Request as Req, Response as Res
from status import NN

pytestmark = pytest.mark.timeout(300)

SAME_NAMESPACE = NN(NS, "same-namespace")


def accepted(s, route: str, gw: NN = SAME_NAMESPACE, resolved: bool = True) -> str:
    """The common opening: GatewayAndHTTPRoutesMustBeAccepted, then HTTPRouteMustHaveResolvedRefsConditionsTrue."""
    route_nn = NN(NS, route)
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw), route_nn)
    if resolved:
        k.httproute_must_have_resolved_refs_conditions_true(s, route_nn, gw)
    return address


def test_HTTPRouteSimpleSameNamespace(conformance):
    """httproute-simple-same-namespace.go"""
    s = conformance
    s.apply("httproute-simple-same-namespace.yaml")
    address = accepted(s, "gateway-conformance-infra-test")
    http.make_request_and_expect_eventually_consistent_response(address, E(
        Req(path="/"), response=Res(200), backend=V1, namespace=NS))


def test_HTTPRouteCrossNamespace(conformance):
    """httproute-cross-namespace.go"""
    s = conformance
    s.apply("httproute-cross-namespace.yaml")
    route, gw = NN(WEB_BACKEND_NS, "cross-namespace"), NN(NS, "backend-namespaces")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw), route)
    k.httproute_must_have_resolved_refs_conditions_true(s, route, gw)
    http.make_request_and_expect_eventually_consistent_response(address, E(
        Req(path="/"), response=Res(200), backend="web-backend", namespace=WEB_BACKEND_NS))


def test_HTTPRouteExactPathMatching(conformance):
    """httproute-exact-path-matching.go"""
    s = conformance
    s.apply("httproute-exact-path-matching.yaml")
    address = accepted(s, "exact-matching")
    http.expect_responses(address, [
        E(Req(path="/one"), backend=V1, namespace=NS),
        E(Req(path="/two"), backend=V2, namespace=NS),
        E(Req(path="/"), response=Res(404)),
        E(Req(path="/one/example"), response=Res(404)),
        E(Req(path="/two/"), response=Res(404)),
        E(Req(path="/Two"), response=Res(404)),
    ])


def test_HTTPRouteHeaderMatching(conformance):
    """httproute-header-matching.go"""
    s = conformance
    s.apply("httproute-header-matching.yaml")
    address = accepted(s, "header-matching")
    http.expect_responses(address, [
        E(Req(path="/", headers={"Version": "one"}), backend=V1, namespace=NS),
        E(Req(path="/", headers={"Version": "two"}), backend=V2, namespace=NS),
        E(Req(path="/", headers={"Version": "two", "Color": "orange"}), backend=V1, namespace=NS),
        E(Req(path="/", headers={"Version": "two", "Color": "blue"}), backend=V2, namespace=NS),
        E(Req(path="/", headers={"Color": "orange"}), response=Res(404)),
        E(Req(path="/", headers={"Some-Other-Header": "one"}), response=Res(404)),
        E(Req(path="/", headers={"Color": "blue"}), backend=V1, namespace=NS),
        E(Req(path="/", headers={"Color": "green"}), backend=V1, namespace=NS),
        E(Req(path="/", headers={"Color": "red"}), backend=V2, namespace=NS),
        E(Req(path="/", headers={"Color": "yellow"}), backend=V2, namespace=NS),
        E(Req(path="/", headers={"Color": "purple"}), response=Res(404)),
    ])


def test_HTTPRouteMatching(conformance):
    """httproute-matching.go"""
    s = conformance
    s.apply("httproute-matching.yaml")
    address = accepted(s, "matching")
    http.expect_responses(address, [
        E(Req(path="/"), backend=V1, namespace=NS),
        E(Req(path="/example"), backend=V1, namespace=NS),
        E(Req(path="/", headers={"Version": "one"}), backend=V1, namespace=NS),
        E(Req(path="/v2"), backend=V2, namespace=NS),
        E(Req(path="/v2/example"), backend=V2, namespace=NS),
        E(Req(path="/", headers={"Version": "two"}), backend=V2, namespace=NS),
        E(Req(path="/v2/"), backend=V2, namespace=NS),
        E(Req(path="/v2example"), backend=V1, namespace=NS),       # not a path segment prefix of /v2
        E(Req(path="/foo/v2/example"), backend=V1, namespace=NS),
    ])


def test_HTTPRouteMatchingAcrossRoutes(conformance):
    """httproute-matching-across-routes.go"""
    s = conformance
    s.apply("httproute-matching-across-routes.yaml")
    r1, r2 = NN(NS, "matching-part1"), NN(NS, "matching-part2")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), r1, r2)
    k.httproute_must_have_resolved_refs_conditions_true(s, r1, SAME_NAMESPACE)
    k.httproute_must_have_resolved_refs_conditions_true(s, r2, SAME_NAMESPACE)
    http.expect_responses(address, [
        E(Req(host="example.com", path="/"), backend=V1, namespace=NS),
        E(Req(host="example.com", path="/example"), backend=V1, namespace=NS),
        E(Req(host="example.net", path="/example"), backend=V1, namespace=NS),
        E(Req(host="example.com", path="/example", headers={"Version": "one"}), backend=V1, namespace=NS),
        E(Req(host="example.com", path="/v2"), backend=V2, namespace=NS),
        E(Req(host="example.net", path="/v2"), backend=V1, namespace=NS),   # v2 matches are limited to example.com
        E(Req(host="example.com", path="/v2/example"), backend=V2, namespace=NS),
        E(Req(host="example.com", path="/", headers={"Version": "two"}), backend=V2, namespace=NS),
    ])


def test_HTTPRouteMethodMatching(conformance):
    """httproute-method-matching.go"""
    s = conformance
    s.apply("httproute-method-matching.yaml")
    address = accepted(s, "method-matching")
    http.expect_responses(address, [
        E(Req(method="POST", path="/"), backend=V1, namespace=NS),
        E(Req(method="GET", path="/"), backend=V2, namespace=NS),
        E(Req(method="HEAD", path="/"), response=Res(404)),
        # combinations of method matching with other core matches
        E(Req(path="/path1", method="GET"), backend=V1, namespace=NS),
        E(Req(headers={"version": "one"}, path="/", method="PUT"), backend=V2, namespace=NS),
        E(Req(headers={"version": "two"}, path="/path2", method="POST"), backend=V3, namespace=NS),
        # matches OR'd together match with only one of them used
        E(Req(path="/path3", method="PATCH"), backend=V1, namespace=NS),
        E(Req(headers={"version": "three"}, path="/path4", method="DELETE"), backend=V1, namespace=NS),
        # match types AND'ed together do not match with a subset of them
        E(Req(path="/", method="PUT"), response=Res(404)),
        E(Req(path="/path4", method="DELETE"), response=Res(404)),
        # precedence across several matching rules
        E(Req(path="/path5", method="PATCH"), backend=V1, namespace=NS),
        E(Req(headers={"version": "four"}, path="/", method="PATCH"), backend=V2, namespace=NS),
    ])


def test_HTTPRouteQueryParamMatching(conformance):
    """httproute-query-param-matching.go"""
    s = conformance
    s.apply("httproute-query-param-matching.yaml")
    address = accepted(s, "query-param-matching")
    http.expect_responses(address, [
        E(Req(path="/?animal=whale"), backend=V1, namespace=NS),
        E(Req(path="/?animal=dolphin"), backend=V2, namespace=NS),
        E(Req(path="/?animal=dolphin&color=blue"), backend=V3, namespace=NS),
        E(Req(path="/?ANIMAL=Whale"), backend=V3, namespace=NS),
        E(Req(path="/?animal=whale&otherparam=irrelevant"), backend=V1, namespace=NS),
        E(Req(path="/?animal=dolphin&color=yellow"), backend=V2, namespace=NS),
        E(Req(path="/?color=blue"), response=Res(404)),
        E(Req(path="/?animal=dog"), response=Res(404)),
        E(Req(path="/?animal=whaledolphin"), response=Res(404)),
        E(Req(path="/"), response=Res(404)),
        # combinations of query param matching with other core matches
        E(Req(path="/path1?animal=whale"), backend=V1, namespace=NS),
        E(Req(headers={"version": "one"}, path="/?animal=whale"), backend=V2, namespace=NS),
        E(Req(headers={"version": "two"}, path="/path2?animal=whale"), backend=V3, namespace=NS),
        # matches OR'd together match with only one of them used
        E(Req(path="/path3?animal=shark"), backend=V1, namespace=NS),
        E(Req(headers={"version": "three"}, path="/path4?animal=kraken"), backend=V1, namespace=NS),
        # match types AND'ed together do not match with a subset of them
        E(Req(path="/?animal=shark"), response=Res(404)),
        E(Req(path="/path4?animal=kraken"), response=Res(404)),
        # precedence across several matching rules
        E(Req(path="/path5?animal=hydra"), backend=V1, namespace=NS),
        E(Req(headers={"version": "four"}, path="/?animal=hydra"), backend=V3, namespace=NS),
    ])


def test_HTTPRoutePathMatchOrder(conformance):
    """httproute-path-match-order.go"""
    s = conformance
    s.apply("httproute-path-match-order.yaml")
    address = accepted(s, "path-matching-order")
    http.expect_responses(address, [
        E(Req(path="/match/exact/one"), backend=V3, namespace=NS),
        E(Req(path="/match/exact"), backend=V2, namespace=NS),
        E(Req(path="/match"), backend=V1, namespace=NS),
        E(Req(path="/match/prefix/one/any"), backend=V2, namespace=NS),
        E(Req(path="/match/prefix/any"), backend=V1, namespace=NS),
        E(Req(path="/match/any"), backend=V3, namespace=NS),
    ])


def test_HTTPRouteNamedRule(conformance):
    """httproute-named-rule.go (provisional)"""
    s = conformance
    s.apply("httproute-named-rule.yaml")
    address = accepted(s, "http-named-rules")
    http.expect_responses(address, [
        E(Req(path="/named"), response=Res(200), namespace=NS),
        E(Req(path="/unnamed"), response=Res(200), namespace=NS),
    ])


def test_HTTPRouteServiceTypes(conformance):
    """httproute-service-types.go: a Service with EndpointSlices written by hand, a headless one
    with a selector, and a headless one with hand-written slices; the hand-written slices are
    patched with the infra-backend-v1 pods' addresses, as the Go test does."""
    s = conformance
    s.apply("httproute-service-types.yaml")
    address = accepted(s, "service-types")
    deployment = s.cluster.deployments[NN(NS, V1)]
    pods = s.cluster.pods(NS, deployment.selector)
    assert pods, "Expected 'infra-backend-v1' to have running Pods"
    for prefix in ("manual-endpointslices", "headless-manual-endpointslices"):     # setupEndpointSlices
        for suffix, family in (("ip4", 4), ("ip6", 6)):
            name = NN(NS, f"{prefix}-{suffix}")
            assert s.kube.get("EndpointSlice", name) is not None, f"Unable to fetch EndpointSlice {name}"
            endpoints = [{"addresses": [pod.ip], "conditions": {"ready": True, "serving": True, "terminating": False},
                          "targetRef": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace}}
                         for pod in pods if (":" in pod.ip) == (family == 6)]
            if endpoints:
                s.kube.merge_patch("EndpointSlice", name, {"endpoints": endpoints})
    http.expect_responses(address, [E(Req(path=f"/{path}"), response=Res(200), backend=V1, namespace=NS)
                                    for path in ("manual-endpointslices", "headless-manual-endpointslices",
                                                 "headless")])


def test_HTTPRouteWeight(conformance):
    """httproute-weight.go: 70/30/0 over infra-backend-v1/v2/v3, 500 requests within 5 points,
    the distribution check tried up to 10 times."""
    s = conformance
    s.apply("httproute-weight.yaml")
    address = accepted(s, "weighted-backends")
    expected = E(Req(path="/"), response=Res(status_codes=[200]), namespace=NS)
    http.make_request_and_expect_eventually_consistent_response(address, expected)
    weights = {V1: 0.7, V2: 0.3, V3: 0.0}

    def send() -> str:
        unique = http.add_entropy(expected)
        request = http.make_request(unique, address, "HTTP", "http")
        c_req, c_res = http.round_trip(request)
        if (error := http.compare_round_trip(request, c_req, c_res, expected)) is not None:
            raise AssertionError(f"response expectation failed for request: {error}")
        return c_req.pod

    errors = []
    for _ in range(http.MAX_WEIGHT_TEST_RETRIES):
        if (error := http.test_weighted_distribution(send, weights)) is None:
            return
        errors.append(error)
    pytest.fail(f"Weighted distribution tests failed: {errors}")


def test_HTTPRouteBackendProtocolH2C(conformance):
    """httproute-backend-protocol-h2c.go: an h2c prior-knowledge request to a backendRef whose
    Service port has appProtocol kubernetes.io/h2c (infra-backend-v1:8081 -> 3001)."""
    s = conformance
    s.apply("httproute-backend-protocol-h2c.yaml")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE),
                                                        NN(NS, "backend-protocol-h2c"))
    http.make_request_and_expect_eventually_consistent_response(address, E(
        Req(path="/", protocol=http.H2C_PRIOR_KNOWLEDGE), response=Res(200), backend=V1, namespace=NS))



def test_HTTPRouteBackendProtocolWebSocket(conformance):
    """httproute-backend-protocol-websocket.go: a WebSocket through a backendRef whose Service
    port has appProtocol kubernetes.io/ws (infra-backend-v1:8082 -> 3000, echo-basic's /ws): a
    text and a binary message each come back as sent (golang.org/x/net/websocket's Dial there,
    the websocket-client library here)."""
    import websocket
    s = conformance
    s.apply("httproute-backend-protocol-websocket.yaml")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE),
                                                        NN(NS, "backend-protocol-ws"))

    def check(elapsed: float) -> str | None:
        try:
            ws = websocket.create_connection(f"ws://{address}/ws", timeout=5,
                                             origin="ws://gateway/TestConformance/HTTPRouteBackendProtocolWebSocket")
        except (OSError, websocket.WebSocketException) as exc:
            return f"failed to dial: {exc}"
        try:
            ws.send("Websocket Support!")
            if (reply := ws.recv()) != "Websocket Support!":
                return f"unexpected reply - want: 'Websocket Support!' got: {reply!r}"
            ws.send_binary(bytes([1, 2, 3, 4, 5, 6, 7]))
            if (reply := ws.recv()) != bytes([1, 2, 3, 4, 5, 6, 7]):
                return f"unexpected reply - want: b'\\x01..\\x07' got: {reply!r}"
            return None
        except (OSError, websocket.WebSocketException) as exc:
            return f"failed to exchange frames: {exc}"
        finally:
            ws.close()
    http.await_convergence(check)
