"""Gateway API conformance, replayed: client certificate validation on HTTPS listeners
(``spec.tls.frontend``: the default and per-port validations, AllowInsecureFallback, and the
status of invalid CA certificate references).

Each test is the upstream Go test of the same ShortName (kubernetes-sigs/gateway-api
``conformance/tests/<file>.go``, named in its docstring; Apache-2.0, Copyright The Kubernetes
Authors), with its manifest from ``manifests/``. The client certificates and their CA ConfigMaps
are the suite's programmatic resources (``Suite.start``).
"""
from __future__ import annotations

import pytest

import roundtrip as http
import status as k
from harness import INFRA_BACKEND_V1 as V1
from harness import INFRA_BACKEND_V2 as V2
from harness import INFRA_NS as NS
from roundtrip import ExpectedResponse as E, Request as Req, Response as Res
from status import NN, Condition

pytestmark = pytest.mark.timeout(300)

LISTENER_OK = [Condition("ResolvedRefs", "True"), Condition("Accepted", "True"), Condition("Programmed", "True")]


def _no_valid_ca(reason: str) -> list[Condition]:
    return [Condition("ResolvedRefs", "False", reason), Condition("Accepted", "False", "NoValidCACertificate"),
            Condition("Programmed", "False")]


def _certificates(s) -> tuple[bytes, tuple[bytes, bytes], tuple[bytes, bytes]]:
    """The server certificate, and the (certificate, key) of the default and per-port clients."""
    server, _ = s.tls_secret(NN(NS, "tls-validity-checks-certificate"))
    assert server, "missing required server certificate pem for the test"
    clients = []
    for name in ("tls-validity-checks-client-certificate", "tls-validity-checks-per-port-client-certificate"):
        cert, key = s.tls_secret(NN(NS, name))
        assert cert and key, "missing required client certificate and private keypem for the test"
        clients.append((cert, key))
    return server, clients[0], clients[1]


def _accepted_host(s, gw: NN, *routes: NN) -> str:
    """GatewayAndRoutesMustBeAccepted without the port (the tests use two HTTPS ports)."""
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw), *routes)
    for route in routes:
        k.httproute_must_have_resolved_refs_conditions_true(s, route, gw)
    return address.rpartition(":")[0]


def test_GatewayFrontendClientCertificateValidation(conformance):
    """gateway-with-clientcertificate-validation.go: port 443 validates against the default CA,
    port 8443 against its per-port CA; each accepts its own client's certificate and refuses the
    other's, and each asks for a certificate in the handshake."""
    s = conformance
    s.apply("gateway-with-clientcertificate-validation.yaml")
    gw = NN(NS, "client-validation-default")
    host = _accepted_host(s, gw, NN(NS, "client-certificate-validation-https-test"),
                          NN(NS, "client-certificate-validation-https-test-no-hostname"))
    server, default_client, per_port_client = _certificates(s)

    def port(number: int, name: str, backend: str, valid: tuple, other: tuple) -> None:
        address = f"{host}:{number}"
        http.make_tls_request_and_expect_eventually_consistent_response(
            address, server, name, E(Req(host=name, path="/"), response=Res(200), backend=backend, namespace=NS),
            client_certificate=valid[0], client_key=valid[1])
        http.make_tls_request_and_expect_eventually_consistent_failure_response(
            address, server, name, E(Req(host=name, path="/"), namespace=NS),
            client_certificate=other[0], client_key=other[1])
    http.run_cases([
        ("Validate default configuration", lambda: port(443, "example.org", V1, default_client, per_port_client)),
        ("Validate per port configuration",
         lambda: port(8443, "second-example.org", V2, per_port_client, default_client))], parallel=False)


def test_GatewayFrontendClientCertificateValidationInsecureFallback(conformance):
    """gateway-with-clientcertificate-validation-insecure-fallback.go: with AllowInsecureFallback
    the Gateway says InsecureFrontendValidationMode, and either port serves a client with its own
    certificate, with the other port's, and with none (a certificate is still asked for)."""
    s = conformance
    s.apply("gateway-with-clientcertificate-validation-insecure-fallback.yaml")
    gw = NN(NS, "client-validation-insecure-fallback")
    host = _accepted_host(s, gw, NN(NS, "client-cert-validation-insecure-fallback-test"),
                          NN(NS, "client-cert-validation-insecure-fallback-test-no-hostname"))
    k.gateway_must_have_condition(s, gw, Condition("InsecureFrontendValidationMode", "True", "ConfigurationChanged"))
    server, default_client, per_port_client = _certificates(s)
    cases = []
    for number, name, backend, (own, other) in ((443, "example.org", V1, (default_client, per_port_client)),
                                                (8443, "second-example.org", V2, (per_port_client, default_client))):
        expected = E(Req(host=name, path="/"), response=Res(200), backend=backend, namespace=NS)
        for what, client in (("matching", own), ("non-matching", other), ("without", (b"", b""))):
            cases.append((f"port {number}: {what} client certificate", lambda a=f"{host}:{number}", n=name,
                          e=expected, c=client: http.make_tls_request_and_expect_eventually_consistent_response(
                              a, server, n, e, client_certificate=c[0], client_key=c[1])))
    http.run_cases(cases, parallel=False)


def test_GatewayFrontendInvalidDefaultClientCertificateValidation(conformance):
    """gateway-invalid-default-frontend-client-certificate-validation.go: a default validation
    naming a missing ConfigMap leaves the HTTP listener (whose port has a valid per-port
    validation, which HTTP ignores) serving, and makes the HTTPS listener refuse: ResolvedRefs
    InvalidCACertificateRef, Accepted NoValidCACertificate, not Programmed, requests fail."""
    s = conformance
    s.apply("gateway-invalid-default-frontend-client-certificate-validation.yaml")
    gw = NN(NS, "invalid-default-client-validation-config")
    host = k.wait_for_gateway_address(s, gw).rpartition(":")[0]
    server, _, _ = _certificates(s)

    def http_listener() -> None:
        k.gateway_listeners_must_have_conditions(s, gw, LISTENER_OK, ("http",))
        http.make_request_and_expect_eventually_consistent_response(
            f"{host}:80", E(Req(host="example.org", path="/"), response=Res(200), backend=V1, namespace=NS))

    def https_listener() -> None:
        k.gateway_listeners_must_have_conditions(s, gw, _no_valid_ca("InvalidCACertificateRef"), ("https",))
        http.make_tls_request_and_expect_eventually_consistent_failure_response(
            f"{host}:443", server, "example.org", E(Req(host="example.org", path="/"), namespace=NS))
    http.run_cases([("Validate tls configuration does not impact HTTP listener", http_listener),
                    ("Validate that invalid default configuration is impacting HTTPS listener", https_listener)],
                   parallel=False)


def test_GatewayInvalidFrontendClientCertificateValidation(conformance):
    """gateway-with-invalid-clientcertificate-validation.go: per-port validations naming a missing
    ConfigMap, a Service, and a ConfigMap of another namespace without a ReferenceGrant make only
    their own listener invalid (InvalidCACertificateRef, InvalidCACertificateKind, RefNotPermitted;
    NoValidCACertificate), the default's listener stays valid."""
    s = conformance
    s.apply("gateway-with-invalid-clientcertificate-validation.yaml")
    gw = NN(NS, "gateway-with-invalid-client-cert-validation")
    cases = [("default valid configuration", "https", LISTENER_OK),
             ("unresolved reference", "https-unresolved", _no_valid_ca("InvalidCACertificateRef")),
             ("invalid kind", "https-invalid-kind", _no_valid_ca("InvalidCACertificateKind")),
             ("reference grant missing", "https-grant-missing", _no_valid_ca("RefNotPermitted"))]
    http.run_cases([(name, lambda listener=listener, conditions=conditions:
                     k.gateway_listeners_must_have_conditions(s, gw, conditions, (listener,)))
                    for name, listener, conditions in cases], parallel=False)
