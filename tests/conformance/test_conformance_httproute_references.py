"""Gateway API conformance, replayed: HTTPRoute parentRefs, backendRefs, ReferenceGrants and the
status conditions they give.

Each test is the upstream Go test of the same ShortName (kubernetes-sigs/gateway-api
``conformance/tests/<file>.go``, named in its docstring; Apache-2.0, Copyright The Kubernetes
Authors), with its manifest from ``manifests/``.
"""
from __future__ import annotations

import pytest

import roundtrip as http
import status as k
from harness import APP_BACKEND_NS, INFRA_BACKEND_V1 as V1, INFRA_BACKEND_V2 as V2
from harness import INFRA_NS as NS
from harness import WEB_BACKEND_NS
from roundtrip import ExpectedResponse as E, Request as Req, Response as Res
from status import NN, Condition

pytestmark = pytest.mark.timeout(300)

SAME_NAMESPACE = NN(NS, "same-namespace")


def test_HTTPRouteInvalidBackendRefUnknownKind(conformance):
    """httproute-invalid-backendref-unknown-kind.go"""
    s = conformance
    s.apply("httproute-invalid-backendref-unknown-kind.yaml")
    route = NN(NS, "invalid-backend-ref-unknown-kind")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), route)
    k.httproute_must_have_condition(s, route, SAME_NAMESPACE, Condition("ResolvedRefs", "False", "InvalidKind"))
    http.make_request_and_expect_eventually_consistent_response(address, E(
        Req(method="GET", path="/v2"), response=Res(500)))


def test_HTTPRouteInvalidCrossNamespaceBackendRef(conformance):
    """httproute-invalid-cross-namespace-backend-ref.go"""
    s = conformance
    s.apply("httproute-invalid-cross-namespace-backend-ref.yaml")
    route = NN(NS, "invalid-cross-namespace-backend-ref")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), route)
    k.httproute_must_have_condition(s, route, SAME_NAMESPACE, Condition("ResolvedRefs", "False", "RefNotPermitted"))
    http.make_request_and_expect_eventually_consistent_response(address, E(
        Req(method="GET", path="/"), response=Res(500)))


def test_HTTPRouteInvalidCrossNamespaceParentRef(conformance):
    """httproute-invalid-cross-namespace-parent-ref.go"""
    s = conformance
    s.apply("httproute-invalid-cross-namespace-parent-ref.yaml")
    route = NN(WEB_BACKEND_NS, "invalid-cross-namespace-parent-ref")
    k.httproute_must_have_resolved_refs_conditions_true(s, route, SAME_NAMESPACE)
    k.httproute_must_have_condition(s, route, SAME_NAMESPACE,
                                    Condition("Accepted", "False", "NotAllowedByListeners"))
    k.httproute_must_have_no_accepted_parents(s, route)
    k.gateway_must_have_zero_routes(s, SAME_NAMESPACE)


def test_HTTPRouteDisallowedKind(conformance):
    """httproute-disallowed-kind.go"""
    s = conformance
    s.apply("httproute-disallowed-kind.yaml")
    k.namespaces_must_be_ready(s, [NS])
    route, gw = NN(NS, "disallowed-kind"), NN(NS, "tlsroutes-only")
    k.httproute_must_have_resolved_refs_conditions_true(s, route, gw)
    k.httproute_must_have_condition(s, route, gw, Condition("Accepted", "False", "NotAllowedByListeners"))
    k.httproute_must_have_no_accepted_parents(s, route)
    k.gateway_must_have_zero_routes(s, gw)


def test_HTTPRouteInvalidNonExistentBackendRef(conformance):
    """httproute-invalid-nonexistent-backendref.go"""
    s = conformance
    s.apply("httproute-invalid-nonexistent-backendref.yaml")
    route = NN(NS, "invalid-nonexistent-backend-ref")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), route)
    k.httproute_must_have_condition(s, route, SAME_NAMESPACE, Condition("ResolvedRefs", "False", "BackendNotFound"))
    http.make_request_and_expect_eventually_consistent_response(address, E(
        Req(method="GET", path="/"), response=Res(500)))


def test_HTTPRouteInvalidParentRefNotMatchingListenerPort(conformance):
    """httproute-invalid-parentref-not-matching-listener-port.go"""
    s = conformance
    s.apply("httproute-invalid-parentref-not-matching-listener-port.yaml")
    route = NN(NS, "httproute-listener-not-matching-route-port")
    k.httproute_must_have_resolved_refs_conditions_true(s, route, SAME_NAMESPACE)
    k.httproute_must_have_condition(s, route, SAME_NAMESPACE, Condition("Accepted", "False", "NoMatchingParent"))
    k.httproute_must_have_no_accepted_parents(s, route)
    k.gateway_must_have_zero_routes(s, SAME_NAMESPACE)


def test_HTTPRouteInvalidParentRefNotMatchingSectionName(conformance):
    """httproute-invalid-parentref-not-matching-section-name.go"""
    s = conformance
    s.apply("httproute-invalid-parentref-not-matching-section-name.yaml")
    route = NN(NS, "httproute-listener-not-matching-section-name")
    k.httproute_must_have_condition(s, route, SAME_NAMESPACE, Condition("Accepted", "False", "NoMatchingParent"))
    k.httproute_must_have_no_accepted_parents(s, route)
    k.gateway_must_have_zero_routes(s, SAME_NAMESPACE)


def test_HTTPRouteInvalidParentRefSectionNameNotMatchingPort(conformance):
    """httproute-invalid-parentref-section-name-not-matching-port.go"""
    s = conformance
    s.apply("httproute-invalid-parentref-section-name-not-matching-port.yaml")
    route = NN(NS, "httproute-listener-section-name-not-matching-port")
    gw = NN(NS, "gateway-with-one-not-matching-port-and-section-name-route")
    k.httproute_must_have_condition(s, route, gw, Condition("Accepted", "False", "NoMatchingParent"))
    k.httproute_must_have_no_accepted_parents(s, route)
    k.gateway_must_have_zero_routes(s, gw)


def test_HTTPRouteInvalidReferenceGrant(conformance):
    """httproute-invalid-reference-grant.go: ReferenceGrants that each get one field wrong."""
    s = conformance
    s.apply("httproute-invalid-reference-grant.yaml")
    route = NN(NS, "reference-grant")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), route)
    k.httproute_must_have_condition(s, route, SAME_NAMESPACE, Condition("ResolvedRefs", "False", "RefNotPermitted"))
    http.make_request_and_expect_eventually_consistent_response(address, E(
        Req(method="GET", path="/"), response=Res(500), backend="web-backend", namespace=WEB_BACKEND_NS))


def test_HTTPRoutePartiallyInvalidViaInvalidReferenceGrant(conformance):
    """httproute-partially-invalid-via-invalid-reference-grant.go"""
    s = conformance
    s.apply("httproute-partially-invalid-via-invalid-reference-grant.yaml")
    route = NN(NS, "invalid-reference-grant")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), route)
    k.httproute_must_have_condition(s, route, SAME_NAMESPACE, Condition("ResolvedRefs", "False", "RefNotPermitted"))
    http.make_request_and_expect_eventually_consistent_response(address, E(
        Req(method="GET", path="/v2"), response=Res(500)))
    http.make_request_and_expect_eventually_consistent_response(address, E(
        Req(method="GET", path="/"), response=Res(200), backend="app-backend-v1", namespace=APP_BACKEND_NS))


def test_HTTPRouteReferenceGrant(conformance):
    """httproute-reference-grant.go: served with the grant, 500 once it is deleted."""
    s = conformance
    s.apply("httproute-reference-grant.yaml")
    route = NN(NS, "reference-grant")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), route)
    k.httproute_must_have_resolved_refs_conditions_true(s, route, SAME_NAMESPACE)
    http.make_request_and_expect_eventually_consistent_response(address, E(
        Req(method="GET", path="/"), response=Res(200), backend="web-backend", namespace=WEB_BACKEND_NS))
    s.kube.delete("ReferenceGrant", NN(WEB_BACKEND_NS, "reference-grant"))
    http.make_request_and_expect_eventually_consistent_response(address, E(
        Req(method="GET", path="/"), response=Res(500)))


def test_HTTPRouteNoBackendRefs(conformance):
    """httproute-omitted-backendrefs.go: rules with omitted or empty backendRefs answer 500."""
    s = conformance
    s.apply("httproute-omitted-backendrefs.yaml")
    route = NN(NS, "omitted-backendrefs")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), route)
    k.httproute_must_have_resolved_refs_conditions_true(s, route, SAME_NAMESPACE)
    http.expect_responses(address, [
        E(Req(path="/forward"), backend=V1, namespace=NS),
        E(Req(path="/omitted-no-forward"), response=Res(500)),
        E(Req(path="/empty-no-forward"), response=Res(500)),
    ])


def test_HTTPRouteObservedGenerationBump(conformance):
    """httproute-observed-generation-bump.go: a spec change (the backend's name) bumps the
    generation, and every parent condition follows it."""
    s = conformance
    s.apply("httproute-observed-generation-bump.yaml")
    route = NN(NS, "observed-generation-bump")
    k.namespaces_must_be_ready(s, [NS])
    original = s.kube.get("HTTPRoute", route)
    k.httproute_must_have_latest_conditions(s, route)
    rules = original["spec"]["rules"]
    rules[0]["backendRefs"][0]["name"] = V2
    s.kube.merge_patch("HTTPRoute", route, {"spec": {"rules": rules}})      # client.MergeFrom(original)
    k.httproute_must_have_condition(s, route, SAME_NAMESPACE, Condition("Accepted", "True"))
    k.httproute_must_have_resolved_refs_conditions_true(s, route, SAME_NAMESPACE)
    k.httproute_must_have_latest_conditions(s, route)
    updated = s.kube.get("HTTPRoute", route)
    assert original["metadata"]["generation"] != updated["metadata"]["generation"], \
        "generation should change after an update"
