"""Gateway API conformance, replayed: ListenerSet (an extended feature of every profile: Gateways
that take listeners from ListenerSets as their ``spec.allowedListeners`` allow, the sets'
listeners served on their parent Gateway's address beside its own, conflicts between them,
routes attached to a ListenerSet, and the status of both).

Each test is the upstream Go test of the same ShortName (kubernetes-sigs/gateway-api
``conformance/tests/<file>.go``, named in its docstring; Apache-2.0, Copyright The Kubernetes
Authors), with its manifest from ``manifests/``: every ``t.Run`` a case of ``run_cases`` under
its Go name (side by side where Go's subtests are ``t.Parallel``), every assertion the Go one.
Features are checked first as ``ConformanceTest.Run`` does (``features.require``); the replay
claims ListenerSet. GatewayMustHaveAttachedListeners (``status.attachedListenerSets``) is, as
upstream, a failure that lets the test go on (``suite.errorf``, Go's t.Errorf); every other wait
ends the test when it times out.

The tests' shared expectations are upstream's ``generateSupportedRouteKinds`` (HTTPRoute) and
``generateAcceptedListenerConditions`` (ResolvedRefs, Accepted and Programmed True, any reason):
``HTTPROUTE_KIND`` and ``ACCEPTED_LISTENER`` here.
"""
from __future__ import annotations

import pytest

import features
import roundtrip as http
import status as k
from harness import GROUP
from harness import INFRA_BACKEND_V1 as V1, INFRA_BACKEND_V2 as V2, INFRA_BACKEND_V3 as V3
from harness import INFRA_NS as NS
from roundtrip import ExpectedResponse as E, Request as Req, Response as Res
from status import NN, Condition, ListenerStatus, RouteParentStatus

pytestmark = pytest.mark.timeout(300)

LISTENER_SET = (GROUP, "ListenerSet")          # listenerSetGK
HTTPROUTE_KIND = [(GROUP, "HTTPRoute")]         # generateSupportedRouteKinds()
ACCEPTED_LISTENER = [Condition("ResolvedRefs", "True"), Condition("Accepted", "True"),
                     Condition("Programmed", "True")]          # generateAcceptedListenerConditions()
GATEWAY_ACCEPTED = Condition("Accepted", "True")


def _run(s, short_name: str, manifest: str) -> None:
    """ConformanceTest.Run: the features checked (skip), then the manifests applied."""
    features.require(short_name)
    s.apply(manifest)


def _listenerset_conditions(s, ls: NN, accepted: Condition, programmed: Condition) -> None:
    """The two ListenerSetMustHaveCondition calls every test makes of a ListenerSet."""
    k.listenerset_must_have_condition(s, ls, accepted)
    k.listenerset_must_have_condition(s, ls, programmed)


def _not_allowed(s, ls: NN) -> None:
    """A ListenerSet the Gateway does not allow: Accepted and Programmed False, NotAllowed."""
    _listenerset_conditions(s, ls, Condition("Accepted", "False", "NotAllowed"),
                            Condition("Programmed", "False", "NotAllowed"))


def _accepted(s, ls: NN) -> None:
    """An allowed ListenerSet: Accepted True (Accepted), Programmed True (Programmed)."""
    _listenerset_conditions(s, ls, Condition("Accepted", "True", "Accepted"),
                            Condition("Programmed", "True", "Programmed"))


def test_ListenerSetDefaultNotAllowed(conformance):
    """listenerset-default-not-allowed.go: a Gateway without spec.allowedListeners takes no
    ListenerSet: it is Accepted with 0 attached ListenerSets, and the set naming it is neither
    Accepted nor Programmed (NotAllowed)."""
    s = conformance
    _run(s, "ListenerSetDefaultNotAllowed", "listenerset-default-not-allowed.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "gateway-default-does-not-allow-listenerset")
    k.gateway_must_have_condition(s, gw, GATEWAY_ACCEPTED)
    k.gateway_must_have_attached_listeners(s, gw, 0)
    _not_allowed(s, NN(NS, "listenerset-default-not-allowed"))


def test_ListenerSetAllowedNamespaceNone(conformance):
    """listenerset-allowed-namespace-none.go: allowedListeners from None: no ListenerSet
    attached, the one naming the Gateway NotAllowed."""
    s = conformance
    _run(s, "ListenerSetAllowedNamespaceNone", "listenerset-allowed-namespace-none.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "gateway-does-not-allow-listenerset")
    k.gateway_must_have_condition(s, gw, GATEWAY_ACCEPTED)
    k.gateway_must_have_attached_listeners(s, gw, 0)
    _not_allowed(s, NN(NS, "listenerset-not-allowed"))


def test_ListenerSetAllowedNamespaceSame(conformance):
    """listenerset-allowed-namespace-same.go: allowedListeners from Same: the ListenerSet of the
    Gateway's namespace is attached (Accepted, Programmed, its listener ready), the one of
    another namespace is NotAllowed."""
    s = conformance
    _run(s, "ListenerSetAllowedNamespaceSame", "listenerset-allowed-namespace-same.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "gateway-allows-listenerset-in-same-namespace")
    k.gateway_must_have_condition(s, gw, GATEWAY_ACCEPTED)
    k.gateway_must_have_attached_listeners(s, gw, 1)
    ls = NN(NS, "listenerset-in-same-namespace")
    _accepted(s, ls)
    k.listenerset_listeners_must_have_conditions(s, ls, ACCEPTED_LISTENER, ("listenerset-in-same-namespace-listener",))
    _not_allowed(s, NN("gateway-api-listenerset-not-allowed-ns", "listenerset-in-different-namespace"))


def test_ListenerSetAllowedNamespaceSelector(conformance):
    """listenerset-allowed-namespace-selector.go: allowedListeners from Selector: the ListenerSet
    of a namespace with the label is attached, the one of a namespace without it is NotAllowed."""
    s = conformance
    _run(s, "ListenerSetAllowedNamespaceSelector", "listenerset-allowed-namespace-selector.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "gateway-allows-listenerset-in-selected-namespace")
    k.gateway_must_have_condition(s, gw, GATEWAY_ACCEPTED)
    k.gateway_must_have_attached_listeners(s, gw, 1)
    ls = NN("gateway-api-listenerset-selector-allowed-ns", "listenerset-in-selected-namespace")
    _accepted(s, ls)
    k.listenerset_listeners_must_have_conditions(s, ls, ACCEPTED_LISTENER,
                                                 ("listenerset-in-selected-namespace-listener",))
    _not_allowed(s, NN("gateway-api-listenerset-selector-not-allowed-ns", "listenerset-not-in-selected-namespace"))


def test_ListenerSetAllowedRoutesNamespaces(conformance):
    """listenerset-allowed-routes-namespaces.go: a ListenerSet's listeners take routes from All
    namespaces, the Same namespace (the ListenerSet's, not the Gateway's) or namespaces with a
    label (Selector), counted in attachedRoutes and served on the Gateway's address; a route of
    another namespace is NotAllowedByListeners for a cross-namespace set's Same listener."""
    s = conformance
    _run(s, "ListenerSetAllowedRoutesNamespaces", "listenerset-allowed-routes-namespaces.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "gateway-with-listener-sets-test-allowed-routes")
    address = k.wait_for_gateway_address(s, gw, "gateway-listener")
    k.gateway_must_have_condition(s, gw, GATEWAY_ACCEPTED)
    k.gateway_must_have_attached_listeners(s, gw, 2)

    def same_namespace() -> None:
        ls = NN(NS, "listenerset-test-allowed-routes-namespaces")
        routes = [NN(NS, "route-in-same-namespace"),
                  NN("gateway-api-routes-allowed-ns", "route-in-selected-namespace"),
                  NN("gateway-api-routes-not-allowed-ns", "route-not-in-selected-namespace")]
        k.routes_and_parent_must_be_accepted(s, k.resource_ref(LISTENER_SET, ls), "HTTPRoute", *routes)
        k.listenerset_status_must_have_listeners(s, ls, [
            # route-in-same-namespace, route-in-selected-namespace, route-not-in-selected-namespace
            ListenerStatus("listener-set-listener-allowed-routes-all", HTTPROUTE_KIND, ACCEPTED_LISTENER, 3),
            # route-in-same-namespace
            ListenerStatus("listener-set-listener-allowed-routes-same", HTTPROUTE_KIND, ACCEPTED_LISTENER, 1),
            # route-in-selected-namespace
            ListenerStatus("listener-set-listener-allowed-routes-selector", HTTPROUTE_KIND, ACCEPTED_LISTENER, 1),
        ])
        all_, same, selector = (f"listener-set-listener-allowed-routes-{x}.com" for x in ("all", "same", "selector"))
        http.expect_responses(address, [
            # every route on the All listener
            E(Req(host=all_, path="/route-in-same-namespace"), backend=V1, namespace=NS),
            E(Req(host=all_, path="/route-in-selected-namespace"), backend=V2, namespace=NS),
            E(Req(host=all_, path="/route-not-in-selected-namespace"), backend=V3, namespace=NS),
            # only the route of the same namespace on the Same listener
            E(Req(host=same, path="/route-in-same-namespace"), backend=V1, namespace=NS),
            E(Req(host=same, path="/route-in-selected-namespace"), response=Res(404)),
            E(Req(host=same, path="/route-not-in-selected-namespace"), response=Res(404)),
            # only the route of the selected namespace on the Selector listener
            E(Req(host=selector, path="/route-in-same-namespace"), response=Res(404)),
            E(Req(host=selector, path="/route-in-selected-namespace"), backend=V2, namespace=NS),
            E(Req(host=selector, path="/route-not-in-selected-namespace"), response=Res(404)),
        ])

    def cross_namespace() -> None:
        ls_ns = "gateway-api-ls-cross-ns"
        ls = NN(ls_ns, "listenerset-test-allowed-routes-cross-ns")
        k.routes_and_parent_must_be_accepted(s, k.resource_ref(LISTENER_SET, ls), "HTTPRoute",
                                             NN(ls_ns, "route-in-listenerset-namespace"))
        k.httproute_must_have_condition(s, NN(NS, "route-in-gateway-namespace"), ls,
                                        Condition("Accepted", "False", "NotAllowedByListeners"))
        k.listenerset_status_must_have_listeners(s, ls, [
            # only route-in-listenerset-namespace (the ListenerSet's namespace)
            ListenerStatus("listener-set-listener-allowed-routes-cross-ns-same", HTTPROUTE_KIND, ACCEPTED_LISTENER, 1),
        ])
        host = "listener-set-listener-allowed-routes-cross-ns-same.com"
        http.expect_responses(address, [
            E(Req(host=host, path="/route-in-listenerset-namespace"), backend=V1, namespace=NS),
            E(Req(host=host, path="/route-in-gateway-namespace"), response=Res(404)),
        ])

    http.run_cases([("Same-namespace ListenerSet", same_namespace),
                    ("Cross-namespace ListenerSet", cross_namespace)], parallel=False)


def test_ListenerSetAllowedRoutesSupportedKinds(conformance):
    """listenerset-allowed-routes-supported-kinds.go: a ListenerSet's TLS (Passthrough) listener
    that allows only HTTPRoutes has ResolvedRefs False, InvalidRouteKinds."""
    s = conformance
    _run(s, "ListenerSetAllowedRoutesSupportedKinds", "listenerset-allowed-routes-supported-kinds.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "gateway-with-listener-sets-test-supported-route-kinds")
    k.gateway_must_have_condition(s, gw, GATEWAY_ACCEPTED)
    k.listenerset_listeners_must_have_conditions(s, NN(NS, "listenerset-test-allowed-routes-supported-kinds"),
                                                 [Condition("ResolvedRefs", "False", "InvalidRouteKinds")],
                                                 ("listener-set-listener-allowed-routes-tls-only",))


def _listener_precedence(s, short_name: str, what: str, reason: str) -> None:
    """ListenerSetHostnameConflict (``what`` "hostname") and ListenerSetProtocolConflict
    ("protocol"): the same Gateway and four ListenerSets, a listener of each conflicting with
    the Gateway's (the Gateway's wins) or with an older set's (the older one's wins). A set with
    another valid listener stays Accepted and Programmed, one whose only listener lost is
    ListenersNotValid; the losers are Accepted and Programmed False and Conflicted, ``reason``."""
    _run(s, short_name, f"listenerset-{what}-conflict.yaml")
    k.namespaces_must_be_ready(s, [NS])
    conflicted = [Condition("Accepted", "False", reason), Condition("Programmed", "False", reason),
                  Condition("Conflicted", "True", reason)]
    with_gateway = f"{what}-conflict-with-gateway-listener"
    with_listener_set = f"{what}-conflict-with-listener-set-listener"
    gw = NN(NS, f"gateway-with-listenerset-{what}-conflict")
    k.gateway_must_have_condition(s, gw, GATEWAY_ACCEPTED)
    k.gateway_listeners_must_have_conditions(s, gw, ACCEPTED_LISTENER, ("gateway-listener",))
    # The first conflicted listener is accepted based on Listener precedence.
    k.gateway_listeners_must_have_conditions(s, gw, ACCEPTED_LISTENER, (with_gateway,))
    # Accepted (a valid listener each): ...-with-gateway-1, ...-with-listener-set-1; not
    # accepted (none): ...-with-gateway-2, ...-with-listener-set-2.
    k.gateway_must_have_attached_listeners(s, gw, 2)
    valid = (Condition("Accepted", "True"), Condition("Programmed", "True", "Programmed"))
    not_valid = (Condition("Accepted", "False", "ListenersNotValid"),
                 Condition("Programmed", "False", "ListenersNotValid"))

    ls = NN(NS, f"listenerset-with-{what}-conflict-with-gateway-1")
    _listenerset_conditions(s, ls, *valid)
    k.listenerset_listeners_must_have_conditions(s, ls, ACCEPTED_LISTENER, ("listener-set-1-listener",))
    k.listenerset_listeners_must_have_conditions(s, ls, conflicted, (with_gateway,))
    # The first conflicted listener is accepted based on Listener precedence.
    k.listenerset_listeners_must_have_conditions(s, ls, ACCEPTED_LISTENER, (with_listener_set,))

    ls = NN(NS, f"listenerset-with-{what}-conflict-with-gateway-2")
    _listenerset_conditions(s, ls, *not_valid)
    k.listenerset_listeners_must_have_conditions(s, ls, conflicted, (with_gateway,))

    ls = NN(NS, f"listenerset-with-{what}-conflict-with-listener-set-1")
    _listenerset_conditions(s, ls, *valid)
    k.listenerset_listeners_must_have_conditions(s, ls, ACCEPTED_LISTENER, ("listener-set-2-listener",))
    k.listenerset_listeners_must_have_conditions(s, ls, conflicted, (with_listener_set,))

    ls = NN(NS, f"listenerset-with-{what}-conflict-with-listener-set-2")
    _listenerset_conditions(s, ls, *not_valid)
    k.listenerset_listeners_must_have_conditions(s, ls, conflicted, (with_listener_set,))


def test_ListenerSetHostnameConflict(conformance):
    """listenerset-hostname-conflict.go: ListenerSet listeners with the port, protocol and
    hostname of a Gateway listener or of an older set's listener are HostnameConflict."""
    _listener_precedence(conformance, "ListenerSetHostnameConflict", "hostname", "HostnameConflict")


def test_ListenerSetProtocolConflict(conformance):
    """listenerset-protocol-conflict.go: ListenerSet TCP listeners on the port of HTTP listeners
    (the Gateway's, an older set's) are ProtocolConflict."""
    _listener_precedence(conformance, "ListenerSetProtocolConflict", "protocol", "ProtocolConflict")


def test_ListenerSetReferenceGrant(conformance):
    """listenerset-reference-grant.go: a ListenerSet's HTTPS listener may use a certificate of
    another namespace only under a ReferenceGrant from ListenerSets of its own namespace (the
    Gateway's grant does not extend to it): with one, ResolvedRefs and the set Accepted and
    Programmed; without, RefNotPermitted and the set ListenersNotValid."""
    s = conformance
    _run(s, "ListenerSetReferenceGrant", "listenerset-reference-grant.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "gateway-with-listener-sets-test-reference-grant")
    k.gateway_must_have_condition(s, gw, GATEWAY_ACCEPTED)
    # Upstream does not check the attached count here: implementations may differ on sets
    # missing a ReferenceGrant.
    ls = NN(NS, "listenerset-with-reference-grant")
    _listenerset_conditions(s, ls, Condition("Accepted", "True"), Condition("Programmed", "True"))
    k.listenerset_listeners_must_have_conditions(s, ls, [Condition("ResolvedRefs", "True")],
                                                 ("listenerset-with-reference-grant-listener",))
    ls = NN("gateway-api-listener-sets-test-reference-grant-ns", "listenerset-without-reference-grant")
    _listenerset_conditions(s, ls, Condition("Accepted", "False", "ListenersNotValid"),
                            Condition("Programmed", "False", "ListenersNotValid"))
    k.listenerset_listeners_must_have_conditions(s, ls, [Condition("ResolvedRefs", "False", "RefNotPermitted")],
                                                 ("listenerset-without-reference-grant-listener",))


def test_ListenerSetHTTPRouting(conformance):
    """listenerset-http-routing.go: routes attach to a Gateway (its own listeners, or one by
    sectionName) or to a ListenerSet (its listeners, or one by sectionName), never across:
    each host of the Gateway's and the two sets' listeners answers only its parents' routes."""
    s = conformance
    _run(s, "ListenerSetHTTPRouting", "listenerset-http-routing.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "gateway-with-listener-sets-http-routing")
    gw_routes = [NN(NS, n) for n in ("attaches-to-all-listeners", "gateway-route", "gateway-section-route")]
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw, "gateway-listener"), *gw_routes)
    k.gateway_must_have_attached_listeners(s, gw, 2)

    ls = NN(NS, "listener-set-http-routing-1")
    ls_routes = [NN(NS, n) for n in ("attaches-to-all-listeners", "listener-set-http-routing-1-route",
                                     "listener-set-http-routing-1-section-route")]
    k.routes_and_parent_must_be_accepted(s, k.resource_ref(LISTENER_SET, ls), "HTTPRoute", *ls_routes)
    k.listenerset_status_must_have_listeners(s, ls, [
        # attaches-to-all-listeners, listener-set-http-routing-1-route, listener-set-http-routing-1-section-route
        ListenerStatus("listener-set-http-routing-1-listener-1", HTTPROUTE_KIND, ACCEPTED_LISTENER, 3),
        # attaches-to-all-listeners, listener-set-http-routing-1-route
        ListenerStatus("listener-set-http-routing-1-listener-2", HTTPROUTE_KIND, ACCEPTED_LISTENER, 2),
    ])

    ls = NN(NS, "listener-set-http-routing-2")
    ls_routes = [NN(NS, n) for n in ("attaches-to-all-listeners", "listener-set-http-routing-2-route")]
    k.routes_and_parent_must_be_accepted(s, k.resource_ref(LISTENER_SET, ls), "HTTPRoute", *ls_routes)
    k.listenerset_status_must_have_listeners(s, ls, [
        # attaches-to-all-listeners, listener-set-http-routing-2-route (both)
        ListenerStatus("listener-set-http-routing-2-listener-1", HTTPROUTE_KIND, ACCEPTED_LISTENER, 2),
        ListenerStatus("listener-set-http-routing-2-listener-2", HTTPROUTE_KIND, ACCEPTED_LISTENER, 2),
    ])

    gw1, gw2 = "gateway-listener-1.com", "gateway-listener-2.com"
    ls11, ls12 = "listener-set-http-routing-1-listener-1.com", "listener-set-http-routing-1-listener-2.com"
    ls21, ls22 = "listener-set-http-routing-2-listener-1.com", "listener-set-http-routing-2-listener-2.com"
    not_found = Res(404)
    http.expect_responses(address, [
        # the route attached to every resource: everywhere
        E(Req(host=gw1, path="/route"), backend=V1, namespace=NS),
        E(Req(host=gw2, path="/route"), backend=V1, namespace=NS),
        E(Req(host=ls11, path="/route"), backend=V1, namespace=NS),
        E(Req(host=ls12, path="/route"), backend=V1, namespace=NS),
        E(Req(host=ls21, path="/route"), backend=V1, namespace=NS),
        E(Req(host=ls22, path="/route"), backend=V1, namespace=NS),
        # gateway-route: on the Gateway's listeners only
        E(Req(host=gw1, path="/gateway-route"), backend=V2, namespace=NS),
        E(Req(host=gw2, path="/gateway-route"), backend=V2, namespace=NS),
        E(Req(host=ls11, path="/gateway-route"), response=not_found),
        E(Req(host=ls12, path="/gateway-route"), response=not_found),
        E(Req(host=ls21, path="/gateway-route"), response=not_found),
        E(Req(host=ls22, path="/gateway-route"), response=not_found),
        # gateway-section-route: on gateway-listener-1 only
        E(Req(host=gw1, path="/gateway-section-route"), backend=V3, namespace=NS),
        E(Req(host=gw2, path="/gateway-section-route"), response=not_found),
        E(Req(host=ls11, path="/gateway-section-route"), response=not_found),
        E(Req(host=ls12, path="/gateway-section-route"), response=not_found),
        E(Req(host=ls21, path="/gateway-section-route"), response=not_found),
        E(Req(host=ls22, path="/gateway-section-route"), response=not_found),
        # listener-set-http-routing-1-route: on listener-set-http-routing-1's listeners only
        E(Req(host=gw1, path="/listener-set-http-routing-1-route"), response=not_found),
        E(Req(host=gw2, path="/listener-set-http-routing-1-route"), response=not_found),
        E(Req(host=ls11, path="/listener-set-http-routing-1-route"), backend=V2, namespace=NS),
        E(Req(host=ls12, path="/listener-set-http-routing-1-route"), backend=V2, namespace=NS),
        E(Req(host=ls21, path="/listener-set-http-routing-1-route"), response=not_found),
        E(Req(host=ls22, path="/listener-set-http-routing-1-route"), response=not_found),
        # listener-set-http-routing-1-section-route: on listener-set-http-routing-1-listener-1 only
        E(Req(host=gw1, path="/listener-set-http-routing-1-section-route"), response=not_found),
        E(Req(host=gw2, path="/listener-set-http-routing-1-section-route"), response=not_found),
        E(Req(host=ls11, path="/listener-set-http-routing-1-section-route"), backend=V3, namespace=NS),
        E(Req(host=ls12, path="/listener-set-http-routing-1-section-route"), response=not_found),
        E(Req(host=ls21, path="/listener-set-http-routing-1-section-route"), response=not_found),
        E(Req(host=ls22, path="/listener-set-http-routing-1-section-route"), response=not_found),
        # listener-set-http-routing-2-route: on listener-set-http-routing-2's listeners only
        E(Req(host=gw1, path="/listener-set-http-routing-2-route"), response=not_found),
        E(Req(host=gw2, path="/listener-set-http-routing-2-route"), response=not_found),
        E(Req(host=ls11, path="/listener-set-http-routing-2-route"), response=not_found),
        E(Req(host=ls12, path="/listener-set-http-routing-2-route"), response=not_found),
        E(Req(host=ls21, path="/listener-set-http-routing-2-route"), backend=V2, namespace=NS),
        E(Req(host=ls22, path="/listener-set-http-routing-2-route"), backend=V2, namespace=NS),
    ])


def test_ListenerSetGatewayParentSectionNameNotFound(conformance):
    """listenerset-gateway-parent-section-name-not-found.go: a Gateway parentRef's sectionName
    does not find a listener of the Gateway's ListenerSets (NoMatchingParent); the same name
    through a ListenerSet parentRef does."""
    s = conformance
    _run(s, "ListenerSetGatewayParentSectionNameNotFound", "listenerset-gateway-parent-section-name-not-found.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "gateway-section-name")
    address = k.wait_for_gateway_address(s, gw, "gw-listener")
    k.gateway_must_have_condition(s, gw, GATEWAY_ACCEPTED)
    k.gateway_must_have_attached_listeners(s, gw, 1)
    ls = NN(NS, "listenerset-section-name")
    k.routes_and_parent_must_be_accepted(s, k.resource_ref(LISTENER_SET, ls), "HTTPRoute",
                                         NN(NS, "route-via-listenerset"))
    k.httproute_must_have_condition(s, NN(NS, "route-via-gateway"), gw,
                                    Condition("Accepted", "False", "NoMatchingParent"))
    http.make_request_and_expect_eventually_consistent_response(
        address, E(Req(host="ls-section-name.com", path="/goodsection"), backend=V1, namespace=NS))
    http.make_request_and_expect_eventually_consistent_response(
        address, E(Req(host="gw-section.com", path="/badsection"), response=Res(404)))


def test_ListenerSetDualParentRefIndependence(conformance):
    """listenerset-dual-parentref-independence.go: a route with a Gateway and a ListenerSet
    parentRef has each judged on its own: both Accepted (served on both hosts), or, with a
    sectionName only the ListenerSet has, the Gateway's NoMatchingParent and the ListenerSet's
    Accepted (served on the set's host only)."""
    s = conformance
    _run(s, "ListenerSetDualParentRefIndependence", "listenerset-dual-parentref-independence.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "gateway-dual-parentref")
    address = k.wait_for_gateway_address(s, gw, "gw-dual-parentref-listener")
    k.gateway_must_have_condition(s, gw, GATEWAY_ACCEPTED)
    k.gateway_must_have_attached_listeners(s, gw, 1)
    ls = NN(NS, "ls-dual-parentref")
    k.listenerset_status_must_have_listeners(s, ls, [
        ListenerStatus("ls-dual-parentref-listener", HTTPROUTE_KIND, ACCEPTED_LISTENER, 2)])

    def both_accepted() -> None:
        route = NN(NS, "route-dual-parentref-both")
        k.httproute_must_have_condition(s, route, gw, Condition("Accepted", "True"))
        k.httproute_must_have_condition(s, route, ls, Condition("Accepted", "True"))
        http.expect_responses(address, [
            E(Req(host="gw-dual.com", path="/dualboth"), backend=V1, namespace=NS),
            E(Req(host="ls-dual.com", path="/dualboth"), backend=V1, namespace=NS),
        ])

    def one_accepted() -> None:
        route = NN(NS, "route-dual-parentref-one")
        k.httproute_must_have_condition(s, route, gw, Condition("Accepted", "False", "NoMatchingParent"))
        k.httproute_must_have_condition(s, route, ls, Condition("Accepted", "True"))
        k.routes_and_parent_must_be_accepted(s, k.resource_ref(LISTENER_SET, ls), "HTTPRoute", route)
        http.expect_responses(address, [
            E(Req(host="ls-dual.com", path="/dualone"), backend=V2, namespace=NS),
            E(Req(host="gw-dual.com", path="/dualone"), response=Res(404)),
        ])

    http.run_cases([("Both parentRefs are Accepted", both_accepted),
                    ("One of two parentRefs is Accepted", one_accepted)], parallel=False)


def test_ListenerSetRouteStatusScopedToParentRef(conformance):
    """listenerset-route-status-scoped-to-parentref.go: a route's status.parents has an entry
    for the parentRef it declares, of its kind: Gateway for the Gateway-only route, ListenerSet
    for the ListenerSet-only one (which alone counts on the set's listener)."""
    s = conformance
    _run(s, "ListenerSetRouteStatusScopedToParentRef", "listenerset-route-status-scoped-to-parentref.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "gateway-parentref")
    k.gateway_must_have_condition(s, gw, GATEWAY_ACCEPTED)
    k.gateway_must_have_attached_listeners(s, gw, 1)
    ls = NN(NS, "listenerset-parentref")
    ls_ref = k.resource_ref(LISTENER_SET, ls)
    k.listenerset_status_must_have_listeners(s, ls, [
        ListenerStatus("listenerset-parentref-listener", HTTPROUTE_KIND, ACCEPTED_LISTENER, 1)])

    def parent(kind: str, name: str) -> RouteParentStatus:
        return RouteParentStatus({"group": GROUP, "kind": kind, "name": name, "namespace": NS}, s.controller_name,
                                 [Condition("Accepted", "True")])

    def gateway_only() -> None:
        route = NN(NS, "route-parentref-gwonly")
        k.httproute_must_have_condition(s, route, gw, Condition("Accepted", "True"))
        k.httproute_must_have_parents(s, route, [parent("Gateway", "gateway-parentref")], namespace_required=True)

    def listenerset_only() -> None:
        route = NN(NS, "route-parentref-lsonly")
        k.routes_and_parent_must_be_accepted(s, ls_ref, "HTTPRoute", route)
        k.httproute_must_have_parents(s, route, [parent("ListenerSet", "listenerset-parentref")],
                                      namespace_required=True)

    http.run_cases([("Gateway-only parentRef", gateway_only),
                    ("ListenerSet-only parentRef", listenerset_only)], parallel=False)
