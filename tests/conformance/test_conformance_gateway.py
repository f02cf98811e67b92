"""Gateway API conformance, replayed: Gateways and GatewayClasses (listeners, their status,
certificates and ReferenceGrants, addresses, generations).

Each test is the upstream Go test of the same ShortName (kubernetes-sigs/gateway-api
``conformance/tests/<file>.go``, named in its docstring; Apache-2.0, Copyright The Kubernetes
Authors), with its manifest from ``manifests/``.
"""
from __future__ import annotations

import pytest

import roundtrip as http
import status as k
from harness import INFRA_BACKEND_V1 as V1
from harness import INFRA_NS as NS
from roundtrip import ExpectedResponse as E, Request as Req, Response as Res
from status import NN, Condition, ListenerStatus

pytestmark = pytest.mark.timeout(300)

HTTPROUTE = [(k.GROUP, "HTTPRoute")]
ACCEPTED_RESOLVED = [Condition("Accepted", "True"), Condition("ResolvedRefs", "True")]


def test_GatewayHTTPListenerIsolation(conformance):
    """gateway-http-listener-isolation.go: four listeners on port 80 (no hostname, *.example.com,
    *.foo.example.com, abc.foo.example.com), a route on each; a request is served only by the
    route of the most specific listener matching its Host, with and without route hostnames."""
    s = conformance
    s.apply("gateway-http-listener-isolation.yaml")
    s.apply("gateway-http-listener-isolation-with-hostname-intersection.yaml")
    k.namespaces_must_be_ready(s, [NS])
    cases = [
        # requests to the empty-hostname listener
        E(Req(host="bar.com", path="/empty-hostname"), backend=V1, namespace=NS),
        E(Req(host="bar.com", path="/wildcard-example-com"), response=Res(404)),
        E(Req(host="bar.com", path="/wildcard-foo-example-com"), response=Res(404)),
        E(Req(host="bar.com", path="/abc-foo-example-com"), response=Res(404)),
        # requests to the wildcard-example-com listener
        E(Req(host="bar.example.com", path="/empty-hostname"), response=Res(404)),
        E(Req(host="bar.example.com", path="/wildcard-example-com"), backend=V1, namespace=NS),
        E(Req(host="bar.example.com", path="/wildcard-foo-example-com"), response=Res(404)),
        E(Req(host="bar.example.com", path="/abc-foo-example-com"), response=Res(404)),
        # requests to the foo-wildcard-example-com listener
        E(Req(host="bar.foo.example.com", path="/empty-hostname"), response=Res(404)),
        E(Req(host="bar.foo.example.com", path="/wildcard-example-com"), response=Res(404)),
        E(Req(host="bar.foo.example.com", path="/wildcard-foo-example-com"), backend=V1, namespace=NS),
        E(Req(host="bar.foo.example.com", path="/abc-foo-example-com"), response=Res(404)),
        # requests to the abc-foo-example-com listener
        E(Req(host="abc.foo.example.com", path="/empty-hostname"), response=Res(404)),
        E(Req(host="abc.foo.example.com", path="/wildcard-example-com"), response=Res(404)),
        E(Req(host="abc.foo.example.com", path="/wildcard-foo-example-com"), response=Res(404), namespace=NS),
        E(Req(host="abc.foo.example.com", path="/abc-foo-example-com"), backend=V1, namespace=NS),
    ]

    def subtest(gateway: str, suffix: str) -> None:
        gw = NN(NS, gateway)
        routes = [NN(NS, f"attaches-to-{name}{suffix}") for name in
                  ("empty-hostname", "wildcard-example-com", "wildcard-foo-example-com", "abc-foo-example-com")]
        address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw), *routes)
        for route in routes:
            k.httproute_must_have_resolved_refs_conditions_true(s, route, gw)
        http.expect_responses(address, [E(Req(**vars(tc.request)), response=Res(**vars(tc.response)),
                                          backend=tc.backend, namespace=tc.namespace) for tc in cases])
    http.run_cases([
        ("hostnames are configured only in listeners", lambda: subtest("http-listener-isolation", "")),
        ("intersecting hostnames are configured in listeners and HTTPRoutes",
         lambda: subtest("http-listener-isolation-with-hostname-intersection", "-with-hostname-intersection")),
    ])                                  # one after the other upstream; two Gateways, so side by side here


def test_GatewayListenerUnsupportedProtocol(conformance):
    """gateway-invalid-listeners-unsupported-protocol.go"""
    s = conformance
    s.apply("gateway-invalid-listeners-unsupported-protocol.yaml")
    invalid = ListenerStatus("invalid", [], [Condition("Accepted", "False", "UnsupportedProtocol")], 0)

    def only_unsupported() -> None:
        gw = NN(NS, "gateway-only-unsupported-protocols")
        k.gateway_must_have_latest_conditions(s, gw)
        k.gateway_must_have_condition(s, gw, Condition("Accepted", "False", "ListenersNotValid"))
        k.gateway_status_must_have_listeners(s, gw, [invalid])

    def supported_and_unsupported() -> None:
        gw = NN(NS, "gateway-supported-and-unsupported-protocols")
        k.gateway_must_have_latest_conditions(s, gw)
        k.gateway_must_have_condition(s, gw, Condition("Accepted", "True", "ListenersNotValid"))
        k.gateway_status_must_have_listeners(s, gw, [
            ListenerStatus("http", HTTPROUTE, [Condition("Accepted", "True", "Accepted")], 0), invalid])
    http.run_cases([
        ("Gateway with no accepted listeners should not be accepted and the listener should have the Accepted "
         "condition set to False with reason UnsupportedProtocol", only_unsupported),
        ("Gateway with at least one accepted listeners should be accepted and the listeners should have the "
         "Accepted condition set accordingly", supported_and_unsupported),
    ])


def test_GatewayInvalidParametersRef(conformance):
    """gateway-invalid-parameters-ref.go"""
    s = conformance
    s.apply("gateway-invalid-parameters-ref.yaml")
    gw = NN(NS, "gateway-invalid-parameters-ref")
    k.gateway_must_have_latest_conditions(s, gw)
    k.gateway_must_have_condition(s, gw, Condition("Accepted", "False", "InvalidParameters"))


def test_GatewayInvalidRouteKind(conformance):
    """gateway-invalid-route-kind.go"""
    s = conformance
    s.apply("gateway-invalid-route-kind.yaml")
    invalid_kinds = [Condition("ResolvedRefs", "False", "InvalidRouteKinds")]
    k.gateway_status_must_have_listeners(s, NN(NS, "gateway-only-invalid-route-kind"), [
        ListenerStatus("http", [], invalid_kinds, 0)])
    k.gateway_status_must_have_listeners(s, NN(NS, "gateway-supported-and-invalid-route-kind"), [
        ListenerStatus("http", HTTPROUTE, invalid_kinds, 0)])


def test_GatewayInvalidTLSConfiguration(conformance):
    """gateway-invalid-tls-configuration.go: a missing Secret, a certificateRef of another group,
    of another kind, and a malformed Secret: listener ResolvedRefs=False/InvalidCertificateRef."""
    s = conformance
    s.apply("gateway-invalid-tls-configuration.yaml")
    listeners = [ListenerStatus("https", HTTPROUTE, [Condition("ResolvedRefs", "False", "InvalidCertificateRef")], 0)]
    http.run_cases([
        (name, lambda gw=gw: k.gateway_status_must_have_listeners(s, NN(NS, gw), listeners))
        for name, gw in (
            ("Nonexistent secret referenced as CertificateRef in a Gateway listener",
             "gateway-certificate-nonexistent-secret"),
            ("Unsupported group resource referenced as CertificateRef in a Gateway listener",
             "gateway-certificate-unsupported-group"),
            ("Unsupported kind resource referenced as CertificateRef in a Gateway listener",
             "gateway-certificate-unsupported-kind"),
            ("Malformed secret referenced as CertificateRef in a Gateway listener",
             "gateway-certificate-malformed-secret"))])


def test_GatewayModifyListeners(conformance):
    """gateway-modify-listeners.go: a listener added to, then one removed from, a Gateway; the
    listener statuses follow, with the one route attached to each remaining listener."""
    s = conformance
    s.apply("gateway-modify-listeners.yaml")

    def add_listener() -> None:
        gw = NN(NS, "gateway-add-listener")
        k.namespaces_must_be_ready(s, [NS])
        k.gateway_must_have_latest_conditions(s, gw)
        original = s.kube.get("Gateway", gw)
        listeners = original["spec"]["listeners"] + [{
            "name": "http", "port": 80, "protocol": "HTTP", "hostname": "data.test.com",
            "allowedRoutes": {"namespaces": {"from": "All"}}}]
        s.kube.merge_patch("Gateway", gw, {"spec": {"listeners": listeners}})     # client.MergeFrom(original)
        k.namespaces_must_be_ready(s, [NS])
        k.gateway_status_must_have_listeners(s, gw, [ListenerStatus("https", HTTPROUTE, ACCEPTED_RESOLVED, 1),
                                                     ListenerStatus("http", HTTPROUTE, ACCEPTED_RESOLVED, 1)])
        k.gateway_must_have_latest_conditions(s, gw)
        updated = s.kube.get("Gateway", gw)
        assert original["metadata"]["generation"] != updated["metadata"]["generation"], \
            "generation should change after an update"

    def remove_listener() -> None:
        gw = NN(NS, "gateway-remove-listener")
        k.namespaces_must_be_ready(s, [NS])
        k.gateway_must_have_latest_conditions(s, gw)
        original = s.kube.get("Gateway", gw)
        assert len(original["spec"]["listeners"]) == 2, "the gateway must have 2 listeners"
        listeners = [l for l in original["spec"]["listeners"] if l["name"] == "http"]
        s.kube.merge_patch("Gateway", gw, {"spec": {"listeners": listeners}})
        k.namespaces_must_be_ready(s, [NS])
        k.gateway_status_must_have_listeners(s, gw, [ListenerStatus("http", HTTPROUTE, ACCEPTED_RESOLVED, 1)])
        k.gateway_must_have_latest_conditions(s, gw)
        updated = s.kube.get("Gateway", gw)
        assert original["metadata"]["generation"] != updated["metadata"]["generation"], \
            "generation should change after an update"
    http.run_cases([
        ("should be able to add a listener that then becomes available for routing traffic", add_listener),
        ("should be able to remove listeners, which would then stop routing the relevant traffic", remove_listener),
    ], parallel=False)


def test_GatewayNameMaximumLength(conformance):
    """gateway-name-maximum-length.go: a 253-character Gateway name is reconciled."""
    s = conformance
    s.apply("gateway-name-maximum-length.yaml")
    prefix = "gateway-name-maximum-length-"
    k.gateway_must_have_latest_conditions(s, NN(NS, prefix + "a" * (253 - len(prefix))))


def test_GatewayObservedGenerationBump(conformance):
    """gateway-observed-generation-bump.go"""
    s = conformance
    s.apply("gateway-observed-generation-bump.yaml")
    gw = NN(NS, "gateway-observed-generation-bump")
    k.namespaces_must_be_ready(s, [NS])
    k.gateway_must_have_latest_conditions(s, gw)
    original = s.kube.get("Gateway", gw)
    listeners = original["spec"]["listeners"] + [{
        "name": "alternate", "hostname": "foo.com", "port": 80, "protocol": "HTTP",
        "allowedRoutes": {"namespaces": {"from": "All"}}}]
    s.kube.merge_patch("Gateway", gw, {"spec": {"listeners": listeners}})
    k.namespaces_must_be_ready(s, [NS])
    k.gateway_must_have_latest_conditions(s, gw)
    updated = s.kube.get("Gateway", gw)
    assert original["metadata"]["generation"] != updated["metadata"]["generation"], \
        "generation should change after an update"


def test_GatewayOptionalAddressValue(conformance):
    """gateway-optional-address-value.go (provisional): the Gateway gets an address in status.
    (The suite's Applier drops spec.addresses entries that are neither placeholders nor of the
    fake invalid type, so the Gateway applied has no spec.addresses; see harness.prepare.)"""
    s = conformance
    s.apply("gateway-optional-address-value.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "gateway-without-address-value")
    k.gateway_must_have_latest_conditions(s, gw)
    assert s.kube.get("Gateway", gw) is not None
    k.wait_for_gateway_address(s, gw, "http")


def test_GatewaySecretInvalidReferenceGrant(conformance):
    """gateway-secret-invalid-reference-grant.go"""
    s = conformance
    s.apply("gateway-secret-invalid-reference-grant.yaml")
    k.gateway_status_must_have_listeners(s, NN(NS, "gateway-secret-invalid-reference-grant"), [
        ListenerStatus("https", HTTPROUTE, [Condition("ResolvedRefs", "False", "RefNotPermitted")], 0)])


def test_GatewaySecretMissingReferenceGrant(conformance):
    """gateway-secret-missing-reference-grant.go"""
    s = conformance
    s.apply("gateway-secret-missing-reference-grant.yaml")
    k.gateway_status_must_have_listeners(s, NN(NS, "gateway-secret-missing-reference-grant"), [
        ListenerStatus("https", HTTPROUTE, [Condition("ResolvedRefs", "False", "RefNotPermitted")], 0)])


def test_GatewaySecretReferenceGrantAllInNamespace(conformance):
    """gateway-secret-reference-grant-all-in-namespace.go"""
    s = conformance
    s.apply("gateway-secret-reference-grant-all-in-namespace.yaml")
    k.gateway_status_must_have_listeners(s, NN(NS, "gateway-secret-reference-grant-all-in-namespace"), [
        ListenerStatus("https", HTTPROUTE, [Condition("Programmed", "True", "Programmed"),
                                            Condition("ResolvedRefs", "True")], 0)])


def test_GatewaySecretReferenceGrantSpecific(conformance):
    """gateway-secret-reference-grant-specific.go"""
    s = conformance
    s.apply("gateway-secret-reference-grant-specific.yaml")
    k.gateway_status_must_have_listeners(s, NN(NS, "gateway-secret-reference-grant-specific"), [
        ListenerStatus("https", HTTPROUTE, [Condition("Programmed", "True", "Programmed"),
                                            Condition("ResolvedRefs", "True")], 0)])


def test_GatewayStaticAddresses(conformance):
    """gateway-static-addresses.go: addresses of an invalid type, an unusable one and a usable one
    (Suite.static_addresses); the Gateway is refused, then not
    programmed, then programmed with only the usable address in status."""
    s = conformance
    s.apply("gateway-static-addresses.yaml")
    gw = NN(NS, "gateway-static-addresses")
    k.gateway_must_have_latest_conditions(s, gw)
    current = s.kube.get("Gateway", gw)
    addresses = current["spec"].get("addresses") or []
    assert len(addresses) == 3, f"expected 3 addresses on the Gateway, one invalid, one usable and one " \
                                f"unusable. somehow got {len(addresses)}"
    invalid, unusable, usable = addresses
    k.gateway_must_have_condition(s, gw, Condition("Accepted", "False", "UnsupportedAddress"))

    remaining = [a for a in addresses if a["value"] != invalid["value"]]
    s.kube.merge_patch("Gateway", gw, {"spec": {"addresses": remaining}})
    k.gateway_must_have_latest_conditions(s, gw)
    k.gateway_must_have_condition(s, gw, Condition("Accepted", "True", "Accepted"))
    k.gateway_must_have_condition(s, gw, Condition("Programmed", "False", "AddressNotUsable"))

    remaining = [a for a in remaining if a["value"] != unusable["value"]]
    s.kube.merge_patch("Gateway", gw, {"spec": {"addresses": remaining}})
    k.gateway_must_have_latest_conditions(s, gw)
    k.gateway_must_have_condition(s, gw, Condition("Accepted", "True", "Accepted"))
    k.gateway_must_have_condition(s, gw, Condition("Programmed", "True", "Programmed"))
    k.gateway_status_must_have_listeners(s, gw, [ListenerStatus("http", HTTPROUTE, ACCEPTED_RESOLVED, 0)])
    def one_address():
        g = s.kube.get("Gateway", gw)
        return g if len((g.get("status") or {}).get("addresses") or []) == 1 else None
    current = k.poll(one_address, s.timeouts.condition, "expected only 1 status address on Gateway")
    values = [a["value"] for a in current["status"]["addresses"]]
    assert unusable["value"] not in values, "should not contain the unusable address"
    assert invalid["value"] not in values, "should not contain the invalid address"
    assert usable["value"] in values, "should contain the usable address"
    for address in current["status"]["addresses"]:
        if address["value"] == usable["value"]:
            assert address.get("type") == usable.get("type"), "expected address type to match the usable address"


def test_GatewayWithAttachedRoutes(conformance):
    """gateway-with-attached-routes.go (GatewayWithAttachedRoutes)"""
    s = conformance
    s.apply("gateway-with-attached-routes.yaml")

    def one_route() -> None:
        k.gateway_status_must_have_listeners(s, NN(NS, "gateway-with-one-attached-route"), [
            ListenerStatus("http", HTTPROUTE, ACCEPTED_RESOLVED, 1)])

    def two_routes() -> None:
        gw = NN(NS, "gateway-with-two-attached-routes")
        k.gateway_status_must_have_listeners(s, gw, [ListenerStatus("http", HTTPROUTE, ACCEPTED_RESOLVED, 2)])
        k.httproute_must_have_condition(s, NN(NS, "http-route-not-accepted"), gw,
                                        Condition("Accepted", "False", "NoMatchingListenerHostname"))

    def unresolved() -> None:
        gw = NN(NS, "unresolved-gateway-with-one-attached-unresolved-route")
        k.gateway_status_must_have_listeners(s, gw, [ListenerStatus(
            "tls", HTTPROUTE, [Condition("Programmed", "False"), Condition("ResolvedRefs", "False")], 1)])
        k.httproute_must_have_condition(s, NN(NS, "http-route-4"), gw, Condition("ResolvedRefs", "False"))
    http.run_cases([
        ("Gateway listener should have one valid http routes attached", one_route),
        ("Gateway listener should have two valid http routes attached", two_routes),
        ("Gateway listener should have AttachedRoutes set even when Gateway has unresolved refs", unresolved),
    ], parallel=False)


def test_GatewayWithAttachedRoutesWithPort8080(conformance):
    """gateway-with-attached-routes.go (GatewayWithAttachedRoutesWithPort8080)"""
    s = conformance
    s.apply("gateway-with-attached-routes-with-port-8080.yaml")
    k.gateway_status_must_have_listeners(s, NN(NS, "gateway-with-two-listeners-and-one-attached-route"), [
        ListenerStatus("http-unattached", HTTPROUTE, ACCEPTED_RESOLVED, 0),
        ListenerStatus("http", HTTPROUTE, ACCEPTED_RESOLVED, 1)])


def test_GatewayClassObservedGenerationBump(conformance):
    """gatewayclass-observed-generation-bump.go"""
    s = conformance
    s.apply("gatewayclass-observed-generation-bump.yaml")
    name = "gatewayclass-observed-generation-bump"
    k.gwc_must_have_accepted_condition(s, name)
    original = s.kube.get("GatewayClass", NN("", name))
    k.gatewayclass_must_have_latest_conditions(s, name)
    s.kube.merge_patch("GatewayClass", NN("", name), {"spec": {"description": "new"}})
    k.gwc_must_have_accepted_condition(s, name)
    k.gatewayclass_must_have_latest_conditions(s, name)
    updated = s.kube.get("GatewayClass", NN("", name))
    assert original["metadata"]["generation"] != updated["metadata"]["generation"], \
        "generation should change after an update"
