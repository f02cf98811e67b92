"""Gateway API conformance, replayed: BackendTLSPolicy (TLS from the gateway to a Service's
pods: the CA, the SNI, subjectAltNames, conflicts, invalid references, generations).

Each test is the upstream Go test of the same ShortName (kubernetes-sigs/gateway-api
``conformance/tests/<file>.go``, named in its docstring; Apache-2.0, Copyright The Kubernetes
Authors), with its manifest from ``manifests/``. The TLS backends are the suite's tls-backend
pods (echo-basic serving HTTPS on 8443 with the tls-checks-certificate Secret, played by
``gateway.devcluster.echo_basic`` with ``--tls-cert``); their CA and certificates are the
suite's programmatic resources (``Suite.start``).
"""
from __future__ import annotations

import pytest

import grpcutil
import roundtrip as http
import status as k
from grpcutil import ExpectedResponse as G, RequestMetadata as M
from harness import INFRA_NS as NS
from roundtrip import ExpectedRequest as ER, ExpectedResponse as E, Request as Req, Response as Res
from status import NN, Condition

pytestmark = pytest.mark.timeout(300)

ACCEPTED = Condition("Accepted", "True", "Accepted")
RESOLVED = Condition("ResolvedRefs", "True", "ResolvedRefs")
CONFLICTED = Condition("Accepted", "False", "Conflicted")
SAME_NAMESPACE = NN(NS, "same-namespace")


def _route_address(s, route: str, gw: NN = SAME_NAMESPACE) -> str:
    k.namespaces_must_be_ready(s, [NS])
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw), NN(NS, route))
    k.httproute_must_have_resolved_refs_conditions_true(s, NN(NS, route), gw)
    return address


def _policy_has(s, name: str, *conditions: Condition, gw: NN = SAME_NAMESPACE) -> None:
    for condition in conditions:
        k.backend_tls_policy_must_have_condition(s, NN(NS, name), gw, condition)


def test_BackendTLSPolicy(conformance):
    """backendtlspolicy.go: re-encrypted HTTPS and plain HTTP to a Service with a valid policy are
    answered, the backend seeing the policy's hostname as SNI; a policy whose hostname the
    backend's certificate does not name, and one with another CA, fail; the policy follows its CA
    ConfigMap (missing: NoValidCACertificate/InvalidCACertificateRef; created, emptied, restored)."""
    s = conformance
    s.apply("backendtlspolicy.yaml")
    https = NN(NS, "same-namespace-with-https-listener")

    def reencrypt() -> None:
        address = _route_address(s, "backendtlspolicy-reencrypt", https)
        _policy_has(s, "normative-test", ACCEPTED, RESOLVED, gw=https)
        cert, _ = s.tls_secret(NN(NS, "tls-validity-checks-certificate"))
        assert cert, "missing required server certificate pem for the test"
        http.make_tls_request_and_expect_eventually_consistent_response(
            address, cert, "https-listener.org",
            E(Req(host="https-listener.org", path="/backendtlspolicy", sni="https-listener.org"),
              expected_request=ER(path="/backendtlspolicy", sni="abc.example.com"),
              response=Res(status_codes=[200]), namespace=NS))
    http.run_cases([("Re-encrypt HTTPS request sent to Service with valid BackendTLSPolicy should succeed",
                     reencrypt)], parallel=False)

    address = _route_address(s, "backendtlspolicy")

    def valid() -> None:
        _policy_has(s, "normative-test", ACCEPTED, RESOLVED)
        http.make_request_and_expect_eventually_consistent_response(address, E(
            Req(host="abc.example.com", path="/backendtlspolicy", sni="abc.example.com"),
            response=Res(status_codes=[200]), namespace=NS))

    def failing(policy: str, host: str, path: str) -> None:
        _policy_has(s, policy, ACCEPTED, RESOLVED)
        http.make_request_and_expect_failure(address, E(Req(host=host, path=path, sni="abc.example.com"),
                                                        namespace=NS))

    def reconcile() -> None:
        policy = NN(NS, "reconcile-test")
        _policy_has(s, policy.name, ACCEPTED, RESOLVED)
        shared = s.kube.get("ConfigMap", NN(NS, "tls-checks-ca-certificate"))
        original_ca = shared["data"]["ca.crt"]
        test_cm = NN(NS, "tls-checks-ca-certificate-reconcile-test")
        obj = s.kube.get("BackendTLSPolicy", policy)
        original_refs = obj["spec"]["validation"]["caCertificateRefs"]
        s.kube.merge_patch("BackendTLSPolicy", policy, {"spec": {"validation": {"caCertificateRefs": [
            {"group": "", "kind": "ConfigMap", "name": test_cm.name}]}}})
        invalid = (Condition("Accepted", "False", "NoValidCACertificate"),
                   Condition("ResolvedRefs", "False", "InvalidCACertificateRef"))
        _policy_has(s, policy.name, *invalid)
        s.apply_objects([{"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": test_cm.name, "namespace": NS}, "data": {"ca.crt": original_ca}}])
        _policy_has(s, policy.name, ACCEPTED, RESOLVED)
        s.kube.merge_patch("ConfigMap", test_cm, {"data": {"ca.crt": ""}})
        _policy_has(s, policy.name, *invalid)
        s.kube.merge_patch("ConfigMap", test_cm, {"data": {"ca.crt": original_ca}})
        _policy_has(s, policy.name, ACCEPTED, RESOLVED)
        s.kube.merge_patch("BackendTLSPolicy", policy,
                           {"spec": {"validation": {"caCertificateRefs": original_refs}}})

    http.run_cases([
        ("HTTP request sent to Service with valid BackendTLSPolicy should succeed", valid),
        ("HTTP request sent to Service targeted by BackendTLSPolicy with mismatched hostname should return an "
         "HTTP error", lambda: failing("host-mismatch", "abc.example.org", "/backendtlspolicy-host-mismatch")),
        ("HTTP request send to Service targeted by BackendTLSPolicy with mismatched cert should return HTTP error",
         lambda: failing("cert-mismatch", "abc.example.com", "/backendtlspolicy-cert-mismatch")),
        ("Changing the content of a ConfigMap used by BackendTLSPolicy as CA certificate should be reconciled by "
         "the controller", reconcile)], parallel=False)


def test_BackendTLSPolicyConflictResolution(conformance):
    """backendtlspolicy-conflict-resolution.go: of two policies on the same Service (and section),
    the older applies and the other is Conflicted; a policy with a section and one without on the
    same Service both apply, each to its port (the backend sees each one's hostname as SNI)."""
    s = conformance
    s.apply("backendtlspolicy-conflict-resolution.yaml")
    address = _route_address(s, "backendtlspolicy-conflict-resolution")

    def pair(first: str, second: str, path: str) -> None:
        _policy_has(s, first, ACCEPTED)
        _policy_has(s, second, CONFLICTED)
        http.make_request_and_expect_eventually_consistent_response(address, E(
            Req(host="abc.example.com", path=path, sni="other.example.com"), response=Res(200), namespace=NS))

    def both() -> None:
        _policy_has(s, "not-conflicted-with-section-name", ACCEPTED)
        _policy_has(s, "not-conflicted-without-section-name", ACCEPTED)
        for path, sni in (("/backendtlspolicy-not-conflicted-with-section-name", "other.example.com"),
                          ("/backendtlspolicy-not-conflicted-without-section-name", "abc.example.com")):
            http.make_request_and_expect_eventually_consistent_response(address, E(
                Req(host="abc.example.com", path=path, sni=sni), response=Res(200), namespace=NS))
    http.run_cases([
        ("Conflicting BackendTLSPolicies targeting the same Service without a section name",
         lambda: pair("conflicted-without-section-name-1", "conflicted-without-section-name-2",
                      "/backendtlspolicy-conflicted-without-section-name")),
        ("Conflicting BackendTLSPolicies targeting the same Service with the same section name",
         lambda: pair("conflicted-with-section-name-1", "conflicted-with-section-name-2",
                      "/backendtlspolicy-conflicted-with-section-name")),
        ("BackendTLSPolicies targeting the same Service with and without a section name", both)], parallel=False)


def test_BackendTLSPolicyInvalidCACertificateRef(conformance):
    """backendtlspolicy-invalid-ca-certificate-ref.go: a policy whose only CA ref is missing, or a
    ConfigMap whose ca.crt is not a certificate: NoValidCACertificate, InvalidCACertificateRef,
    and its Service answered 5xx."""
    s = conformance
    s.apply("backendtlspolicy-invalid-ca-certificate-ref.yaml")
    address = _route_address(s, "backendtlspolicy-invalid-ca-certificate-ref")

    def invalid(policy: str) -> None:
        _policy_has(s, policy, Condition("Accepted", "False", "NoValidCACertificate"),
                    Condition("ResolvedRefs", "False", "InvalidCACertificateRef"))
        http.make_request_and_expect_eventually_consistent_response(address, E(
            Req(host="abc.example.com", path=f"/backendtlspolicy-{policy}"),
            response=Res(status_codes=[500, 502, 503]), namespace=NS))
    http.run_cases([(f"BackendTLSPolicy_{policy}", lambda policy=policy: invalid(policy))
                    for policy in ("nonexistent-ca-certificate-ref", "malformed-ca-certificate-ref")])


def test_BackendTLSPolicyInvalidKind(conformance):
    """backendtlspolicy-invalid-kind.go: a CA ref of an unknown kind: NoValidCACertificate,
    ResolvedRefs InvalidKind, and its Service answered 5xx."""
    s = conformance
    s.apply("backendtlspolicy-invalid-kind.yaml")
    address = _route_address(s, "backendtlspolicy-invalid-kind-test")
    _policy_has(s, "invalid-kind", Condition("Accepted", "False", "NoValidCACertificate"),
                Condition("ResolvedRefs", "False", "InvalidKind"))
    http.make_request_and_expect_eventually_consistent_response(address, E(
        Req(host="abc.example.com", path="/backendtlspolicy-invalid-kind"),
        response=Res(status_codes=[500, 502, 503]), namespace=NS))


def test_BackendTLSPolicyObservedGenerationBump(conformance):
    """backendtlspolicy-observed-generation-bump.go: a changed hostname bumps the generation and
    every ancestor condition follows it."""
    s = conformance
    s.apply("backendtlspolicy-observed-generation-bump.yaml")
    policy = NN(NS, "observed-generation-bump")
    k.namespaces_must_be_ready(s, [NS])
    original = s.kube.get("BackendTLSPolicy", policy)
    k.backend_tls_policy_must_have_latest_conditions(original)
    s.kube.merge_patch("BackendTLSPolicy", policy, {"spec": {"validation": {"hostname": "foo.example.com"}}})
    k.backend_tls_policy_must_have_condition(s, policy, SAME_NAMESPACE, Condition("Accepted", "True"))
    updated = s.kube.get("BackendTLSPolicy", policy)
    k.backend_tls_policy_must_have_latest_conditions(updated)
    assert original["metadata"]["generation"] != updated["metadata"]["generation"], \
        "generation should change after an update"


def test_BackendTLSPolicySANValidation(conformance):
    """backendtlspolicy-san.go: subjectAltNames authenticate the backend instead of the hostname:
    a DNS name, a URI, or either of two that the certificate has is answered; ones it does not
    have fail."""
    s = conformance
    s.apply("backendtlspolicy-san.yaml")
    address = _route_address(s, "backendtlspolicy-san-test")

    def case(policy: str, succeeds: bool) -> None:
        _policy_has(s, policy, ACCEPTED)
        request = Req(host="abc.example.com", path=f"/backendtlspolicy-{policy}", sni="abc.example.com")
        if succeeds:
            http.make_request_and_expect_eventually_consistent_response(
                address, E(request, response=Res(status_codes=[200]), namespace=NS))
        else:
            http.make_request_and_expect_failure(address, E(request, namespace=NS))
    http.run_cases([
        ("HTTP request sent to Service with valid BackendTLSPolicy containing dns SAN should succeed",
         lambda: case("san-dns", True)),
        ("HTTP request sent to Service targeted by BackendTLSPolicy with mismatched dns SAN should return an "
         "HTTP error", lambda: case("san-dns-mismatch", False)),
        ("HTTP request sent to Service with valid BackendTLSPolicy containing uri SAN should succeed",
         lambda: case("san-uri", True)),
        ("HTTP request sent to Service targeted by BackendTLSPolicy with mismatched uri SAN should return an "
         "HTTP error", lambda: case("san-uri-mismatch", False)),
        ("HTTP request sent to Service with valid BackendTLSPolicy containing multi SAN should succeed",
         lambda: case("multiple-sans", True)),
        ("HTTP request sent to Service targeted by BackendTLSPolicy with mismatched multi SAN should return an "
         "HTTP error", lambda: case("multiple-mismatch-sans", False))], parallel=False)


def test_GatewayTLSBackendClientCertificate(conformance):
    """gateway-tls-backend-client-certificate.go: a Gateway's spec.tls.backend.clientCertificateRef
    is presented to a TLS backend that asks for client certificates (ResolvedRefs on the Gateway,
    the backend showing the certificate it was given)."""
    s = conformance
    s.apply("gateway-tls-backend-client-certificate.yaml")
    gw = NN(NS, "gateway-tls-backend-client-certificate")
    address = _route_address(s, "gateway-tls-backend-client-certificate", gw)
    k.backend_tls_policy_must_have_condition(s, NN(NS, "gateway-tls-backend-client-certificate-test"), gw, ACCEPTED)
    k.gateway_must_have_condition(s, gw, Condition("ResolvedRefs", "True", "ResolvedRefs"))
    client_cert, _ = s.tls_secret(NN(NS, "tls-checks-client-certificate"))
    assert client_cert, "missing required server certificate pem for the test"

    def presented() -> None:
        http.make_request_and_expect_eventually_consistent_response(address, E(
            Req(host="abc.example.com", path="/", sni="abc.example.com", client_cert=client_cert.decode()),
            response=Res(status_codes=[200]), namespace=NS))
    http.run_cases([("HTTP request sent to Service using TLS should succeed and the configured client "
                     "certificate should be presented.", presented)], parallel=False)


def test_GatewayInvalidTLSBackendConfiguration(conformance):
    """gateway-invalid-tls-backend-configuration.go: a clientCertificateRef to a missing Secret,
    another group or kind, a malformed Secret (InvalidClientCertificateRef) or another namespace
    without a grant (RefNotPermitted): the Gateway's ResolvedRefs is False, Accepted stays True."""
    s = conformance
    s.apply("gateway-invalid-tls-backend-configuration.yaml")
    cases = [("Nonexistent secret referenced as ClientCertificateRef in Gateway backend TLS configuration",
              "gateway-client-certificate-nonexistent-secret", "InvalidClientCertificateRef"),
             ("Unsupported group resource referenced as ClientCertificateRef in Gateway backend TLS configuration",
              "gateway-client-certificate-unsupported-group", "InvalidClientCertificateRef"),
             ("Unsupported kind resource referenced as ClientCertificateRef inGateway backend TLS configuration",
              "gateway-client-certificate-unsupported-kind", "InvalidClientCertificateRef"),
             ("Malformed secret referenced as ClientCertificateRef in Gateway backend TLS configuration",
              "gateway-client-certificate-malformed-secret", "InvalidClientCertificateRef"),
             ("Secret referenced from another namespace without any ReferenceGrant as ClientCertificateRef in "
              "Gateway backend TLS configuration", "gateway-client-certificate-missing-reference-grant",
              "RefNotPermitted")]

    def case(name: str, reason: str) -> None:
        gw = NN(NS, name)
        k.gateway_must_have_latest_conditions(s, gw)
        k.gateway_must_have_condition(s, gw, Condition("ResolvedRefs", "False", reason))
        k.gateway_must_have_condition(s, gw, Condition("Accepted", "True", "Accepted"))
    http.run_cases([(title, lambda name=name, reason=reason: case(name, reason)) for title, name, reason in cases])


def test_BackendTLSPolicyGRPCRoute(conformance):
    """backendtlspolicy-grpcroute.go: a GRPCRoute's backend with a valid policy is called over TLS
    (gRPC over TLS on the pod's 8443); a policy whose hostname the certificate does not name, or
    with another CA, makes calls fail."""
    s = conformance
    s.apply("backendtlspolicy-grpcroute.yaml")
    k.namespaces_must_be_ready(s, [NS])
    route = NN(NS, "backendtlspolicy-grpcroute")
    address = k.gateway_and_routes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), "GRPCRoute", route)

    def valid() -> None:
        _policy_has(s, "grpc-normative-test", ACCEPTED, RESOLVED)
        grpcutil.make_request_and_expect_eventually_consistent_response(address, G(
            "Echo", M(authority="abc.example.com"), backend="grpc-infra-backend-v1", namespace=NS))

    def host_mismatch() -> None:
        _policy_has(s, "grpc-host-mismatch", ACCEPTED, RESOLVED)
        grpcutil.make_request_and_expect_eventually_consistent_failure(address, G(
            "EchoTwo", M(authority="abc.example.com")))

    def cert_mismatch() -> None:
        k.gateway_and_routes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), "GRPCRoute",
                                              NN(NS, "backendtlspolicy-grpcroute-cert-mismatch"))
        _policy_has(s, "grpc-cert-mismatch", ACCEPTED, RESOLVED)
        grpcutil.make_request_and_expect_eventually_consistent_failure(address, G(
            "Echo", M(authority="cert-mismatch.example.com")))
    http.run_cases([
        ("gRPC request sent to Service with valid BackendTLSPolicy should succeed", valid),
        ("gRPC request sent to Service targeted by BackendTLSPolicy with mismatched hostname should fail",
         host_mismatch),
        ("gRPC request sent to Service targeted by BackendTLSPolicy with mismatched cert should fail",
         cert_mismatch)], parallel=False)
