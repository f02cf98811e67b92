"""Gateway API conformance, replayed: GRPCRoute (method and header matching, listener hostnames).

Each test is the upstream Go test of the same ShortName (kubernetes-sigs/gateway-api
``conformance/tests/<file>.go``, named in its docstring; Apache-2.0, Copyright The Kubernetes
Authors), with its manifest from ``manifests/``. The gRPC echo pods (grpc-infra-backend-v1..v3
of the base manifests) are played by gateway.devcluster.grpc_backend.
"""
from __future__ import annotations

import grpc
import pytest

import grpcutil
import roundtrip
import status as k
from grpcutil import ExpectedResponse as E, RequestMetadata as M
from harness import INFRA_NS as NS
from status import NN

pytestmark = pytest.mark.timeout(300)

V1, V2, V3 = "grpc-infra-backend-v1", "grpc-infra-backend-v2", "grpc-infra-backend-v3"
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED


def test_GRPCExactMethodMatching(conformance):
    """grpcroute-exact-method-matching.go: Echo goes to v1, EchoTwo to v2, EchoThree matches
    no rule (Unimplemented)."""
    s = conformance
    s.apply("grpcroute-exact-method-matching.yaml")
    address = k.gateway_and_routes_must_be_accepted(s, k.gateway_ref(NN(NS, "same-namespace")), "GRPCRoute",
                                                    NN(NS, "exact-matching"))
    grpcutil.expect_responses(address, [
        E("Echo", backend=V1, namespace=NS),
        E("EchoTwo", backend=V2, namespace=NS),
        E("EchoThree", code=UNIMPLEMENTED),
    ])


def test_GRPCRouteHeaderMatching(conformance):
    """grpcroute-header-matching.go: rules by one or two metadata headers, ORed matches; the
    rule with more header matches wins, then the earlier rule."""
    s = conformance
    s.apply("grpcroute-header-matching.yaml")
    address = k.gateway_and_routes_must_be_accepted(s, k.gateway_ref(NN(NS, "same-namespace")), "GRPCRoute",
                                                    NN(NS, "grpc-header-matching"))
    grpcutil.expect_responses(address, [
        E(request_metadata=M(metadata={"Version": "one"}), backend=V1, namespace=NS),
        E(request_metadata=M(metadata={"Version": "two"}), backend=V2, namespace=NS),
        E(request_metadata=M(metadata={"Version": "two", "Color": "orange"}), backend=V1, namespace=NS),
        E(request_metadata=M(metadata={"Version": "two", "Color": "blue"}), backend=V2, namespace=NS),
        E(request_metadata=M(metadata={"Color": "orange"}), code=UNIMPLEMENTED),
        E(request_metadata=M(metadata={"Some-Other-Header": "one"}), code=UNIMPLEMENTED),
        E(request_metadata=M(metadata={"Color": "blue"}), backend=V1, namespace=NS),
        E(request_metadata=M(metadata={"Color": "green"}), backend=V1, namespace=NS),
        E(request_metadata=M(metadata={"Color": "red"}), backend=V2, namespace=NS),
        E(request_metadata=M(metadata={"Color": "yellow"}), backend=V2, namespace=NS),
        E(request_metadata=M(metadata={"Color": "purple"}), code=UNIMPLEMENTED),
    ])


def test_GRPCRouteListenerHostnameMatching(conformance):
    """grpcroute-listener-hostname-matching.go: four listeners on port 80 (bar.com, foo.bar.com,
    *.bar.com, *.foo.com), a route on each; the :authority picks the listener."""
    s = conformance
    s.apply("grpcroute-listener-hostname-matching.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "grpcroute-listener-hostname-matching")
    k.gateway_and_routes_must_be_accepted(s, k.gateway_ref(gw, "listener-1"), "GRPCRoute", NN(NS, "backend-v1"))
    k.gateway_and_routes_must_be_accepted(s, k.gateway_ref(gw, "listener-2"), "GRPCRoute", NN(NS, "backend-v2"))
    address = k.gateway_and_routes_must_be_accepted(s, k.gateway_ref(gw, "listener-3", "listener-4"), "GRPCRoute",
                                                    NN(NS, "backend-v3"))
    grpcutil.expect_responses(address, [
        E(request_metadata=M(authority="bar.com"), backend=V1, namespace=NS),
        E(request_metadata=M(authority="foo.bar.com"), backend=V2, namespace=NS),
        E(request_metadata=M(authority="baz.bar.com"), backend=V3, namespace=NS),
        E(request_metadata=M(authority="boo.bar.com"), backend=V3, namespace=NS),
        E(request_metadata=M(authority="multiple.prefixes.bar.com"), backend=V3, namespace=NS),
        E(request_metadata=M(authority="multiple.prefixes.foo.com"), backend=V3, namespace=NS),
        E(request_metadata=M(authority="foo.com"), code=UNIMPLEMENTED),
        E(request_metadata=M(authority="no.matching.host"), code=UNIMPLEMENTED),
    ])


def test_GRPCRouteWeight(conformance):
    """grpcroute-weight.go: backendRefs weighted 70/30/0; 500 calls, each backend's share within
    5 points, up to MaxTestRetries tries."""
    s = conformance
    s.apply("grpcroute-weight.yaml")
    address = k.gateway_and_routes_must_be_accepted(s, k.gateway_ref(NN(NS, "same-namespace")), "GRPCRoute",
                                                    NN(NS, "weighted-backends"))
    expected = E("Echo", namespace=NS)
    grpcutil.make_request_and_expect_eventually_consistent_response(address, expected)
    weights = {V1: 0.7, V2: 0.3, V3: 0.0}
    failures = []
    for _ in range(roundtrip.MAX_WEIGHT_TEST_RETRIES):
        failure = roundtrip.test_weighted_distribution(
            lambda: grpcutil.pod_of(address, expected, s.timeouts.consistency), weights)
        if failure is None:
            return
        failures.append(failure)
    pytest.fail(f"Weighted distribution tests failed: {failures}")


def test_GRPCRouteNamedRule(conformance):
    """grpcroute-named-rule.go (provisional): a rule with a name is served as any other."""
    s = conformance
    s.apply("grpcroute-named-rule.yaml")
    address = k.gateway_and_routes_must_be_accepted(s, k.gateway_ref(NN(NS, "same-namespace")), "GRPCRoute",
                                                    NN(NS, "grpc-named-rules"))
    grpcutil.expect_responses(address, [E("Echo", backend=V1, namespace=NS), E("EchoTwo", backend=V2, namespace=NS)])


GRPC_AUTHORITY = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"


def test_GRPCRouteRequestHeaderModifier(conformance):
    """grpcroute-request-header-modifier.go: set, add and remove on the calls' metadata. The
    cases state the metadata the backend should see; upstream's compareResponse checks the
    code, method, namespace and pod, and so does this replay."""
    s = conformance
    s.apply("grpcroute-request-header-modifier.yaml")
    address = k.gateway_and_routes_must_be_accepted(s, k.gateway_ref(NN(NS, "same-namespace")), "GRPCRoute",
                                                    NN(NS, "grpc-request-header-modifier"))

    def case(name: str, method: str, sent: dict, seen: dict, backend: str) -> E:
        return E(method, M(GRPC_AUTHORITY, sent), backend=backend, namespace=NS, headers=seen, test_case_name=name)
    other = {"Some-Other-Header": "this-header-should-be-set"}
    grpcutil.expect_responses(address, [
        case("Set headers -- X-Header-Set should have the original value", "Echo", other,
             {"Some-Other-Header": ["this-header-should-be-set"], "X-Header-Set": ["set-overwrites-values"]}, V1),
        case("Set headers -- X-Header-Set should get overwritten with the original value", "Echo",
             {**other, "X-Header-Set": "this-value-should-be-overwritten"},
             {"Some-Other-Header": ["this-header-should-be-set"], "X-Header-Set": ["set-overwrites-values"]}, V1),
        case("Add headers -- X-Header-Add should have the original value", "Echo", other,
             {"Some-Other-Header": ["this-header-should-be-set"], "X-Header-Add": ["add-appends-values"]}, V1),
        case("Add headers -- X-Header-Add should append the new value to the original value", "Echo",
             {**other, "X-Header-Add": "this-value-should-be-appended"},
             {"Some-Other-Header": ["this-header-should-be-set"],
              "X-Header-Add": ["this-value-should-be-appended", "add-appends-values"]}, V1),
        case("Remove headers -- X-Header-Remove should be removed", "Echo",
             {"X-Header-Remove": "this-should-be-removed"}, {}, V1),
        case("Multiple operations - all header operations should be applied", "EchoTwo",
             {"X-Header-Set-2": "set-header-2", "X-Header-Add-2": "add-header-2",
              "X-Header-Remove-2": "should-be-removed-2", "Some-Other-Header": "another-header-val"},
             {"X-Header-Set-1": ["header-set-1"], "X-Header-Set-2": ["header-set-2"], "X-Header-Add-1": ["header-add-1"],
              "X-Header-Add-2": ["header-add-1,add-header-2"], "Some-Other-Header": ["another-header-val"]}, V2),
        case("Case sensitivity check for header names", "EchoTwo",
             {"x-header-set-1": "original-set-1", "x-header-add-1": "existing-add-1",
              "x-header-remove-1": "should-be-removed-1"},
             {"X-Header-Set-1": ["set-overwrites-values"], "X-Header-Set-2": ["header-set-2"],
              "X-Header-Add-1": ["existing-add-1", "add-appends-values"], "X-Header-Add-2": ["header-add-2"]}, V2),
    ])
