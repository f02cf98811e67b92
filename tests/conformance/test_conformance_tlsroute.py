"""Gateway API conformance, replayed: TLSRoute (the GATEWAY-TLS profile: TLS listeners in
Passthrough and Terminate mode, routes attached by hostname intersection, their status, and a
BackendTLSPolicy re-encrypting what a Terminate listener decrypted).

Each test is the upstream Go test of the same ShortName (kubernetes-sigs/gateway-api
``conformance/tests/<file>.go``, named in its docstring; Apache-2.0, Copyright The Kubernetes
Authors), with its manifest from ``manifests/``: every ``t.Run`` a case of ``run_cases`` under
its Go name (side by side where Go's subtests are ``t.Parallel``), every assertion the Go one.
Features are checked first as ``ConformanceTest.Run`` does (``features.require``): the replay
does not claim TLSRouteModeMixed, so TLSRouteMixedTerminationSameNamespace is skipped and
TLSRouteListenerMixedTerminationNotSupported runs; it claims TLSRouteModeTerminate, so
TLSRouteListenerTerminateNotSupported applies its manifest and returns, as its Go code does.

The backends: tcp-backend is echo-basic's TCP server (``gateway.devcluster.tcp_echo``: plain on
3000, TLS on 8443 with tls-passthrough-checks-certificate, a certificate for abc.example.com
under the tls-checks-ca-certificate CA), tls-backend and tls-backend-2 the HTTPS echo-basic pods
(tls-checks-certificate). The clients are ``tcputil`` (utils/tcp, and utils/tls's connection
rejection) and ``roundtrip`` (utils/tls's HTTPS request).
"""
from __future__ import annotations

import pytest

import features
import roundtrip as http
import status as k
import tcputil
from harness import GROUP
from harness import INFRA_NS as NS
from roundtrip import ExpectedResponse as E, Request as Req
from status import NN, Condition, ListenerStatus
from tcputil import ExpectedResponse as T

pytestmark = pytest.mark.timeout(300)

INFRA_GATEWAY_NAME = "gateway-conformance-infra-test"      # confsuite.InfrastructureGatewayName
CA_CERT = NN(NS, "tls-checks-ca-certificate")
TLS_ROUTE_KIND = [(GROUP, "TLSRoute")]


def _run(s, short_name: str, manifest: str) -> None:
    """ConformanceTest.Run: the features checked (skip), then the manifests applied."""
    features.require(short_name)
    s.apply(manifest)


def _ca(s) -> bytes:
    """GetConfigMapData(tls-checks-ca-certificate)["ca.crt"]."""
    data = k.get_config_map_data(s, CA_CERT)
    assert "ca.crt" in data, f"ca.crt not found in configmap: {CA_CERT.namespace}/{CA_CERT.name}"
    return data["ca.crt"].encode()


def _single_hostname(hostnames: list[str], what: str = "") -> str:
    assert len(hostnames) == 1, f"unexpected error in test configuration, found {len(hostnames)} {what}hostnames"
    return hostnames[0]


def test_TLSRouteSimpleSameNamespace(conformance):
    """tlsroute-simple-same-namespace.go: a TLSRoute on a Passthrough listener (*.example.com)
    takes a TLS connection for its hostname to tcp-backend's TLS port, undecrypted: the backend
    itself did the handshake, and saw the client's SNI."""
    s = conformance
    _run(s, "TLSRouteSimpleSameNamespace", "tlsroute-simple-same-namespace.yaml")
    route, gw = NN(NS, INFRA_GATEWAY_NAME), NN(NS, "gateway-tlsroute")
    k.namespaces_must_be_ready(s, [NS])
    address, hostnames = k.gateway_and_tlsroutes_must_be_accepted(s, k.gateway_ref(gw), route)
    server = _single_hostname(hostnames)
    ca = _ca(s)
    http.run_cases([("Simple TLS request matching TLSRoute should reach infra-backend",
                     lambda: tcputil.make_tcp_request_and_expect_eventually_valid_response(
                         address, ca, server, True,
                         T(backend_is_tls=True, backend="tcp-backend", namespace=NS, hostname=server)))])


def test_TLSRouteTerminateSimpleSameNamespace(conformance):
    """tlsroute-terminate-simple-same-namespace.go: a TLSRoute on a Terminate listener
    (tls.example.com, tls-terminate-checks-certificate) takes a TLS connection and passes its
    plain bytes to tcp-backend's plain port."""
    s = conformance
    _run(s, "TLSRouteTerminateSimpleSameNamespace", "tlsroute-terminate-simple-same-namespace.yaml")
    route, gw = NN(NS, "tlsroute-terminated-test"), NN(NS, "gateway-tlsroute-terminate")
    k.namespaces_must_be_ready(s, [NS])
    address, hostnames = k.gateway_and_tlsroutes_must_be_accepted(s, k.gateway_ref(gw), route)
    server = _single_hostname(hostnames)
    ca = _ca(s)
    http.run_cases([("Simple TLS request matching terminated TLSRoute should reach tcp-backend with plain text",
                     lambda: tcputil.make_tcp_request_and_expect_eventually_valid_response(
                         address, ca, server, True,
                         T(backend_is_tls=False, backend="tcp-backend", namespace=NS, hostname="")))])


def test_TLSRouteHostnameIntersection(conformance):
    """tlsroute-hostname-intersection.go: on Passthrough listeners with an exact, a more specific
    wildcard, a less specific wildcard and no hostname, routes attach by the intersection of
    their hostnames with the listener's, and connections for the intersection reach their
    backend (tls-backend, tls-backend-2) while another name is rejected."""
    s = conformance
    _run(s, "TLSRouteHostnameIntersection", "tlsroute-hostname-intersection.yaml")
    k.namespaces_must_be_ready(s, [NS])
    server_cert, _ = s.tls_secret(NN(NS, "tls-checks-certificate"))
    assert server_cert, "missing required server certificate pem for the test"

    def reaches(address: str, name: str, backend: str) -> None:
        http.make_tls_request_and_expect_eventually_consistent_response(
            address, server_cert, name, E(Req(host=name, path="/"), backend=backend, namespace=NS))

    def group(gw_name: str, routes: list[str], rejected_name: str, wildcard: bool) -> None:
        gw = NN(NS, gw_name)
        route_nns = [NN(NS, r) for r in routes]
        address, _ = k.gateway_and_tlsroutes_must_be_accepted(s, k.gateway_ref(gw), *route_nns)
        for route in route_nns:
            k.tlsroute_must_have_resolved_refs_conditions_true(s, route, gw)
        cases = [("TLS request matching exact hostnames intersection should reach backend",
                  lambda: reaches(address, "abc.example.com", "tls-backend"))]
        if wildcard:
            cases.append(("TLS request matching wildcard hostnames intersection should reach backend 2",
                          lambda: reaches(address, "other.example.com", "tls-backend-2")))
        cases.append(("TLS request not matching hostnames intersection should not reach backend",
                      lambda: tcputil.make_tls_connection_and_expect_eventually_connection_rejection(
                          address, rejected_name)))
        http.run_cases(cases)                                   # t.Parallel subtests

    http.run_cases([
        ("TLSRoutes intersect with exact listener hostname",
         lambda: group("gw-tlsroute-exact-hostname-x-1", ["tlsroute-more-specific-wc-hostname-x-1"],
                       "non.matching.com", wildcard=False)),
        ("TLSRoutes intersect with more specific wildcard listener hostname",
         lambda: group("gw-tlsroute-more-specific-wc-hostname-x-2",
                       ["tlsroute-exact-hostname-x-2", "tlsroute-less-specific-wc-hostname-x-2"],
                       "non.matching.com", wildcard=True)),
        ("TLSRoutes intersect with less specific wildcard listener hostname",
         lambda: group("gw-tlsroute-less-specific-wc-hostname-x-3",
                       ["tlsroute-exact-hostname-x-3", "tlsroute-more-specific-wc-hostname-x-3"],
                       "non.matching.com", wildcard=True)),
        ("TLSRoutes intersect with empty listener hostname",
         lambda: group("gw-tlsroute-empty-hostname-x-4",
                       ["tlsroute-exact-hostname-x-4", "tlsroute-less-specific-wc-hostname-x-4"],
                       "non.matching.org", wildcard=True))], parallel=False)


def _invalid_backend_ref(s, short_name: str, manifest: str, route: NN, gw: NN, reason: str,
                         condition_case: str, rejection_case: str) -> None:
    """TLSRouteInvalidBackendRefNonexistent and ...UnknownKind: both Accepted, the route's
    ResolvedRefs False with ``reason``, and its hostname's connections rejected."""
    _run(s, short_name, manifest)
    k.namespaces_must_be_ready(s, [NS])
    address, hostnames = k.gateway_and_tlsroutes_must_be_accepted(s, k.gateway_ref(gw), route)
    http.run_cases([
        (condition_case, lambda: k.tlsroute_must_have_condition(s, route, gw, Condition("ResolvedRefs", "False",
                                                                                          reason))),
        (rejection_case, lambda: tcputil.make_tls_connection_and_expect_eventually_connection_rejection(
            address, hostnames[0]))], parallel=False)


def test_TLSRouteInvalidBackendRefNonexistent(conformance):
    """tlsroute-invalid-backendref-nonexistent.go: a route whose only backend is a Service that
    does not exist is Accepted with ResolvedRefs False BackendNotFound, and its connections are
    rejected."""
    _invalid_backend_ref(
        conformance, "TLSRouteInvalidBackendRefNonexistent", "tlsroute-invalid-backendref-nonexistent.yaml",
        NN(NS, "invalid-backend-ref-nonexistent"), NN(NS, "gateway-tlsroute-invalid-backend-ref-nonexistent"),
        "BackendNotFound",
        "TLSRoute with only a nonexistent BackendRef has a ResolvedRefs Condition with status False and Reason "
        "BackendNotFound", "TLS connection to nonexistent backend should be rejected")


def test_TLSRouteInvalidBackendRefUnknownKind(conformance):
    """tlsroute-invalid-backendref-unknown-kind.go: a route whose backend is of an unknown kind is
    Accepted with ResolvedRefs False InvalidKind, and its connections are rejected."""
    _invalid_backend_ref(
        conformance, "TLSRouteInvalidBackendRefUnknownKind", "tlsroute-invalid-backendref-unknown-kind.yaml",
        NN(NS, "invalid-backend-ref-unknown-kind"), NN(NS, "gateway-tlsroute-invalid-backend-ref-unknown-kind"),
        "InvalidKind",
        "TLSRoute with Invalid Kind has a ResolvedRefs Condition with status False and Reason InvalidKind",
        "TLS connection to invalid backend with invalid Kind should be rejected")


def test_TLSRouteInvalidNoMatchingListenerHostname(conformance):
    """tlsroute-invalid-no-matching-listener-hostname.go: routes whose hostnames meet neither an
    exact nor a wildcard listener hostname are not Accepted (NoMatchingListenerHostname), have no
    accepted parent, and the Gateways count no route."""
    s = conformance
    _run(s, "TLSRouteInvalidNoMatchingListenerHostname", "tlsroute-invalid-no-matching-listener-hostname.yaml")
    route1, route2 = NN(NS, "tlsroute-hostname-mismatch-1"), NN(NS, "tlsroute-hostname-mismatch-2")
    exact_gw, wildcard_gw = NN(NS, "gateway-tls-exact-hostname"), NN(NS, "gateway-tls-wildcard-hostname")
    k.namespaces_must_be_ready(s, [NS])
    accepted = Condition("Accepted", "False", "NoMatchingListenerHostname")
    http.run_cases([
        ("TLSRoute 1 has Accepted=False for exact hostname Gateway",
         lambda: k.tlsroute_must_have_condition(s, route1, exact_gw, accepted)),
        ("TLSRoute 2 has Accepted=False for wildcard hostname Gateway",
         lambda: k.tlsroute_must_have_condition(s, route2, wildcard_gw, accepted)),
        ("TLSRoute 1 must have no accepted parents", lambda: k.tlsroute_must_have_no_accepted_parents(s, route1)),
        ("TLSRoute 2 must have no accepted parents", lambda: k.tlsroute_must_have_no_accepted_parents(s, route2)),
        ("Exact hostname Gateway must have 0 Routes attached", lambda: k.gateway_must_have_zero_routes(s, exact_gw)),
        ("Wildcard hostname Gateway must have 0 Routes attached",
         lambda: k.gateway_must_have_zero_routes(s, wildcard_gw))], parallel=False)


def test_TLSRouteInvalidNoMatchingListener(conformance):
    """tlsroute-invalid-no-matching-listener.go: a TLSRoute attached to an HTTP or an HTTPS
    listener is NotAllowedByListeners, one naming a section the Gateway does not have is
    NoMatchingParent; none has an accepted parent, and the HTTP and HTTPS Gateways count no
    route."""
    s = conformance
    _run(s, "TLSRouteInvalidNoMatchingListener", "tlsroute-invalid-no-matching-listener.yaml")
    route_http = NN(NS, "tlsroute-not-allowed-protocol-http")
    route_https = NN(NS, "tlsroute-not-allowed-protocol-https")
    route_section = NN(NS, "tlsroute-no-matching-section-name")
    gw_passthrough = NN(NS, "gateway-tlsroute-tls-passthrough-only")
    gw_http, gw_https = NN(NS, "gateway-tlsroute-http-only"), NN(NS, "gateway-tlsroute-https-only")
    k.namespaces_must_be_ready(s, [NS])
    no_matching_parent = Condition("Accepted", "False", "NoMatchingParent")
    not_allowed = Condition("Accepted", "False", "NotAllowedByListeners")
    http.run_cases([
        ("TLSRoute rejected when listener protocol is HTTP",
         lambda: k.tlsroute_must_have_condition(s, route_http, gw_http, not_allowed)),
        ("TLSRoute rejected when listener protocol is HTTPS",
         lambda: k.tlsroute_must_have_condition(s, route_https, gw_https, not_allowed)),
        ("TLSRoute rejected when sectionName not found",
         lambda: k.tlsroute_must_have_condition(s, route_section, gw_passthrough, no_matching_parent)),
        ("TLSRoute (HTTP listener) should not have Parents accepted",
         lambda: k.tlsroute_must_have_no_accepted_parents(s, route_http)),
        ("TLSRoute (HTTPS listener) should not have Parents accepted",
         lambda: k.tlsroute_must_have_no_accepted_parents(s, route_https)),
        ("TLSRoute (wrong sectionName) should not have Parents accepted",
         lambda: k.tlsroute_must_have_no_accepted_parents(s, route_section)),
        ("Gateway HTTP-only should have 0 Routes attached", lambda: k.gateway_must_have_zero_routes(s, gw_http)),
        ("Gateway HTTPS-only should have 0 Routes attached", lambda: k.gateway_must_have_zero_routes(s, gw_https))],
        parallel=False)


def test_TLSRouteInvalidReferenceGrant(conformance):
    """tlsroute-invalid-reference-grant.go: a route to a Service of another namespace whose
    ReferenceGrants all miss (wrong namespace, from group, from kind, from namespace, to group,
    to kind, to name) is Accepted with ResolvedRefs False RefNotPermitted."""
    s = conformance
    _run(s, "TLSRouteInvalidReferenceGrant", "tlsroute-invalid-reference-grant.yaml")
    route, gw = NN(NS, INFRA_GATEWAY_NAME), NN(NS, "gateway-tlsroute-referencegrant")
    k.gateway_and_tlsroutes_must_be_accepted(s, k.gateway_ref(gw), route)
    http.run_cases([
        ("TLSRoute with BackendRef in another namespace and no ReferenceGrant covering the Service has a "
         "ResolvedRefs Condition with status False and Reason RefNotPermitted",
         lambda: k.tlsroute_must_have_condition(s, route, gw, Condition("ResolvedRefs", "False", "RefNotPermitted")))])


def test_TLSRouteListenerMixedTerminationNotSupported(conformance):
    """tlsroute-listener-mixed-termination-not-supported.go: without TLSRouteModeMixed, a
    Terminate and a Passthrough TLS listener on one port both have Accepted False
    ProtocolConflict (no supported kinds, no routes)."""
    s = conformance
    _run(s, "TLSRouteListenerMixedTerminationNotSupported", "tlsroute-listener-mixed-termination-not-supported.yaml")
    if features.supports("TLSRouteModeMixed"):
        return      # "not executed when an implementation claims to support mixed termination"
    gw = NN(NS, "gateway-tlsroute-mixed-termination-not-supported")
    conflict = [Condition("Accepted", "False", "ProtocolConflict")]
    http.run_cases([("Listener with unsupported mixed Terminate/Passthrough must have Accepted=False with "
                     "Reason=ProtocolConflict",
                     lambda: k.gateway_status_must_have_listeners(s, gw, [
                         ListenerStatus("tls-terminate", [], conflict, 0),
                         ListenerStatus("tls-passthrough", [], conflict, 0)]))])


def test_TLSRouteListenerPassthroughSupportedKinds(conformance):
    """tlsroute-listener-passthrough-supported-kinds.go: a Passthrough listener allowing TCPRoute
    and TLSRoute supports TLSRoute only: ResolvedRefs False InvalidRouteKinds."""
    s = conformance
    _run(s, "TLSRouteListenerPassthroughSupportedKinds", "tlsroute-listener-passthrough-supported-kinds.yaml")
    gw = NN(NS, "gateway-tlsroute-passthrough-supported-kind")
    http.run_cases([("TLS listener should have a false ResolvedRefs condition with reason InvalidRouteKinds for "
                     "TCPRoute, and TLSRoute must be put in the supportedKinds",
                     lambda: k.gateway_status_must_have_listeners(s, gw, [
                         ListenerStatus("tls-passthrough", TLS_ROUTE_KIND,
                                        [Condition("ResolvedRefs", "False", "InvalidRouteKinds")], 0)]))])


def test_TLSRouteListenerTerminateNotSupported(conformance):
    """tlsroute-listener-terminate-not-supported.go: without TLSRouteModeTerminate, a Terminate
    TLS listener has Accepted False UnsupportedValue. The replay claims TLSRouteModeTerminate,
    so, as the Go test does then, it applies the manifest and returns."""
    s = conformance
    _run(s, "TLSRouteListenerTerminateNotSupported", "tlsroute-listener-terminate-not-supported.yaml")
    if features.supports("TLSRouteModeTerminate"):
        return
    gw = NN(NS, "gateway-tlsroute-terminate-unsupported")
    http.run_cases([("Listener with unsupported mode Terminate must have Accepted=False with Reason=UnsupportedValue",
                     lambda: k.gateway_status_must_have_listeners(s, gw, [
                         ListenerStatus("tls-terminate", [], [Condition("Accepted", "False", "UnsupportedValue")],
                                        0)]))])


def test_TLSRouteListenerTerminateSupportedKinds(conformance):
    """tlsroute-listener-terminate-supported-kinds.go: a Terminate TLS listener is Accepted and
    supports TLSRoute."""
    s = conformance
    _run(s, "TLSRouteListenerTerminateSupportedKinds", "tlsroute-listener-terminate-supported-kinds.yaml")
    gw = NN(NS, "gateway-tlsroute-terminate-supported")
    http.run_cases([("Listener with mode Terminate must have TLSRoute in SupportedKinds",
                     lambda: k.gateway_status_must_have_listeners(s, gw, [
                         ListenerStatus("tls-terminate", TLS_ROUTE_KIND, [Condition("Accepted", "True", "Accepted")],
                                        0)]))])


def test_TLSRouteMixedTerminationSameNamespace(conformance):
    """tlsroute-mixed-termination-same-namespace.go (TLSRouteModeMixed, not claimed: skipped): a
    Terminate and a Passthrough listener on one port both Accepted with a route each; the
    terminated connection reaches tcp-backend's plain port, the passed-through one its TLS port."""
    s = conformance
    _run(s, "TLSRouteMixedTerminationSameNamespace", "tlsroute-mixed-termination-same-namespace.yaml")
    route_terminate = NN(NS, "gateway-conformance-mixed-terminateroute")
    route_passthrough = NN(NS, "gateway-conformance-mixed-passthroughroute")
    gw = NN(NS, "gateway-tlsroute-mixed-termination")
    k.namespaces_must_be_ready(s, [NS])
    address, hostnames_passthrough = k.gateway_and_tlsroutes_must_be_accepted(s, k.gateway_ref(gw), route_passthrough)
    accepted = [Condition("Accepted", "True", "Accepted")]
    k.gateway_status_must_have_listeners(s, gw, [ListenerStatus("tls-terminate", TLS_ROUTE_KIND, accepted, 1),
                                                 ListenerStatus("tls-passthrough", TLS_ROUTE_KIND, accepted, 1)])
    server_passthrough = _single_hostname(hostnames_passthrough, "passthrough ")
    _, hostnames_terminate = k.gateway_and_tlsroutes_must_be_accepted(s, k.gateway_ref(gw), route_terminate)
    server_terminate = _single_hostname(hostnames_terminate, "terminate ")
    ca = _ca(s)
    http.run_cases([
        ("Simple TLS request matching terminated TLSRoute should reach tcp-backend unencrypted",
         lambda: tcputil.make_tcp_request_and_expect_eventually_valid_response(
             address, ca, server_terminate, True,
             T(backend_is_tls=False, backend="tcp-backend", namespace=NS, hostname=""))),
        ("Simple TLS request matching TLSRoute Passthrough should reach infra-backend",
         lambda: tcputil.make_tcp_request_and_expect_eventually_valid_response(
             address, ca, server_passthrough, True,
             T(backend_is_tls=True, backend="tcp-backend", namespace=NS, hostname=server_passthrough)))])


def test_BackendTLSPolicyTLSRouteTerminate(conformance):
    """backendtlspolicy-tlsroute-terminate.go: what a Terminate listener decrypted is encrypted
    again to a Service a BackendTLSPolicy targets (its section btls: tcp-backend's TLS port),
    with the policy's hostname (abc.example.com) as SNI; the policy is Accepted and ResolvedRefs
    for the Gateway."""
    s = conformance
    _run(s, "BackendTLSPolicyTLSRouteTerminate", "backendtlspolicy-tlsroute-terminate.yaml")
    route, gw = NN(NS, "backendtlspolicy-tlsroute-terminate"), NN(NS, "gateway-btls-tlsroute-terminate")
    policy = NN(NS, "btls-tlsroute-terminate-test")
    k.namespaces_must_be_ready(s, [NS])
    address, hostnames = k.gateway_and_tlsroutes_must_be_accepted(s, k.gateway_ref(gw), route)
    server = _single_hostname(hostnames)
    k.backend_tls_policy_must_have_condition(s, policy, gw, Condition("Accepted", "True", "Accepted"))
    k.backend_tls_policy_must_have_condition(s, policy, gw, Condition("ResolvedRefs", "True", "ResolvedRefs"))
    ca = _ca(s)
    http.run_cases([("TLS request matching terminated TLSRoute with BackendTLSPolicy should reach backend with "
                     "re-encrypted TLS",
                     lambda: tcputil.make_tcp_request_and_expect_eventually_valid_response(
                         address, ca, server, True,
                         T(backend_is_tls=True, backend="tcp-backend", namespace=NS, hostname="abc.example.com")))])
