"""Gateway API conformance, replayed: HTTPRoutes and the Gateways and listeners they attach to
(hostnames, ports, HTTPS, several Gateways).

Each test is the upstream Go test of the same ShortName (kubernetes-sigs/gateway-api
``conformance/tests/<file>.go``, named in its docstring; Apache-2.0, Copyright The Kubernetes
Authors), with its manifest from ``manifests/``.
"""
from __future__ import annotations

import pytest

import roundtrip as http
import status as k
from harness import INFRA_BACKEND_V1 as V1, INFRA_BACKEND_V2 as V2, INFRA_BACKEND_V3 as V3
from harness import INFRA_NS as NS
from roundtrip import ExpectedResponse as E, RedirectRequest, Request as Req, Response as Res
from status import NN, Condition, ListenerStatus, RouteParentStatus

pytestmark = pytest.mark.timeout(300)

HTTPROUTE_KIND = [(k.GROUP, "HTTPRoute")]


def test_HTTPRouteHostnameIntersection(conformance):
    """httproute-hostname-intersection.go"""
    s = conformance
    s.apply("httproute-hostname-intersection.yaml")
    gw = NN(NS, "httproute-hostname-intersection")
    k.namespaces_must_be_ready(s, [NS])

    # "HTTPRoutes that do intersect with listener hostnames"
    routes = [NN(NS, n) for n in ("specific-host-matches-listener-specific-host",
                                  "specific-host-matches-listener-wildcard-host",
                                  "wildcard-host-matches-listener-specific-host",
                                  "wildcard-host-matches-listener-wildcard-host")]
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw), *routes)
    for route in routes:
        k.httproute_must_have_resolved_refs_conditions_true(s, route, gw)
    http.expect_responses(address, [
        # specific-host-matches-listener-specific-host
        E(Req(host="very.specific.com", path="/s1"), backend=V1, namespace=NS),
        # the port in the Host header must not be considered when matching hostnames
        E(Req(host="very.specific.com:1234", path="/s1"), backend=V1, namespace=NS),
        E(Req(host="non.matching.com", path="/s1"), response=Res(404)),
        E(Req(host="foo.nonmatchingwildcard.io", path="/s1"), response=Res(404)),
        E(Req(host="foo.wildcard.io", path="/s1"), response=Res(404)),
        E(Req(host="very.specific.com", path="/non-matching-prefix"), response=Res(404)),
        # specific-host-matches-listener-wildcard-host
        E(Req(host="foo.wildcard.io", path="/s2"), backend=V2, namespace=NS),
        E(Req(host="bar.wildcard.io", path="/s2"), backend=V2, namespace=NS),
        E(Req(host="foo.bar.wildcard.io", path="/s2"), backend=V2, namespace=NS),
        E(Req(host="non.matching.com", path="/s2"), response=Res(404)),
        E(Req(host="wildcard.io", path="/s2"), response=Res(404)),
        E(Req(host="very.specific.com", path="/s2"), response=Res(404)),
        E(Req(host="foo.wildcard.io", path="/non-matching-prefix"), response=Res(404)),
        # wildcard-host-matches-listener-specific-host
        E(Req(host="very.specific.com", path="/s3"), backend=V3, namespace=NS),
        E(Req(host="non.matching.com", path="/s3"), response=Res(404)),
        E(Req(host="foo.specific.com", path="/s3"), response=Res(404)),
        E(Req(host="foo.wildcard.io", path="/s3"), response=Res(404)),
        E(Req(host="very.specific.com", path="/non-matching-prefix"), response=Res(404)),
        # wildcard-host-matches-listener-wildcard-host
        E(Req(host="foo.anotherwildcard.io", path="/s4"), backend=V1, namespace=NS),
        E(Req(host="bar.anotherwildcard.io", path="/s4"), backend=V1, namespace=NS),
        E(Req(host="foo.bar.anotherwildcard.io", path="/s4"), backend=V1, namespace=NS),
        E(Req(host="anotherwildcard.io", path="/s4"), response=Res(404)),
        E(Req(host="foo.wildcard.io", path="/s4"), response=Res(404)),
        E(Req(host="very.specific.com", path="/s4"), response=Res(404)),
        E(Req(host="foo.anotherwildcard.io", path="/non-matching-prefix"), response=Res(404)),
    ])

    # "HTTPRoutes that do not intersect with listener hostnames"
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw))
    k.httproute_must_have_parents(s, NN(NS, "no-intersecting-hosts"), [RouteParentStatus(
        {"group": k.GROUP, "kind": "Gateway", "namespace": gw.namespace, "name": gw.name}, s.controller_name,
        [Condition("Accepted", "False", "NoMatchingListenerHostname")])], namespace_required=True)
    http.expect_responses(address, [
        E(Req(host="specific.but.wrong.com", path="/s5"), response=Res(404)),
        E(Req(host="wildcard.io", path="/s5"), response=Res(404)),
    ])

    # "HTTPRoutes have to be counted in AttachedRoutes only if they are Accepted"
    accepted_resolved = [Condition("Accepted", "True"), Condition("ResolvedRefs", "True")]
    k.gateway_status_must_have_listeners(s, gw, [
        ListenerStatus("listener-1", HTTPROUTE_KIND, accepted_resolved, 2),
        ListenerStatus("listener-2", HTTPROUTE_KIND, accepted_resolved, 1),
        ListenerStatus("listener-3", HTTPROUTE_KIND, accepted_resolved, 1),
    ])

    # "HTTPRoutes intersects with an unspecified hostname listener"
    gw_all = NN(NS, "httproute-hostname-intersection-all")
    route = NN(NS, "httproute-hostname-intersection-all")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw_all), route)
    k.httproute_must_have_resolved_refs_conditions_true(s, route, gw_all)
    http.expect_responses(address, [
        E(Req(host="first.com", path="/"), backend=V2, namespace=NS),
        E(Req(host="sub.first.com", path="/"), backend=V2, namespace=NS),
        E(Req(host="second.com", path="/"), backend=V2, namespace=NS),
        E(Req(host="sub.second.com", path="/"), backend=V2, namespace=NS),
        # not a hostname of the HTTPRoute
        E(Req(host="third.com", path="/"), namespace=NS, response=Res(404)),
        E(Req(host="sub.third.com", path="/"), namespace=NS, response=Res(404)),
    ])


def test_HTTPRouteListenerHostnameMatching(conformance):
    """httproute-listener-hostname-matching.go"""
    s = conformance
    s.apply("httproute-listener-hostname-matching.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "httproute-listener-hostname-matching")
    r1, r2, r3 = NN(NS, "backend-v1"), NN(NS, "backend-v2"), NN(NS, "backend-v3")
    k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw, "listener-1"), r1)
    k.httproute_must_have_resolved_refs_conditions_true(s, r1, gw)
    k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw, "listener-2"), r2)
    k.httproute_must_have_resolved_refs_conditions_true(s, r2, gw)
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw, "listener-3", "listener-4"), r3)
    k.httproute_must_have_resolved_refs_conditions_true(s, r3, gw)
    http.expect_responses(address, [
        E(Req(host="bar.com", path="/"), backend=V1, namespace=NS),
        E(Req(host="foo.bar.com", path="/"), backend=V2, namespace=NS),
        E(Req(host="baz.bar.com", path="/"), backend=V3, namespace=NS),
        E(Req(host="boo.bar.com", path="/"), backend=V3, namespace=NS),
        E(Req(host="multiple.prefixes.bar.com", path="/"), backend=V3, namespace=NS),
        E(Req(host="multiple.prefixes.foo.com", path="/"), backend=V3, namespace=NS),
        E(Req(host="foo.com", path="/"), response=Res(404)),
        E(Req(host="no.matching.host", path="/"), response=Res(404)),
    ])


def test_HTTPRouteListenerPortMatching(conformance):
    """httproute-listener-port-matching.go: listeners on 80, 8080 and 8090, a route per port; a
    request goes to the Gateway's address at the port its Host header names (80 when none)."""
    s = conformance
    s.apply("httproute-listener-port-matching.yaml")
    k.namespaces_must_be_ready(s, [NS])
    gw = NN(NS, "httproute-listener-port-matching")
    r1, r2, r3 = NN(NS, "backend-v1"), NN(NS, "backend-v2"), NN(NS, "backend-v3")
    address_80 = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw, "listener-1"), r1)
    k.httproute_must_have_resolved_refs_conditions_true(s, r1, gw)
    address_8080 = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw, "listener-2"), r2)
    k.httproute_must_have_resolved_refs_conditions_true(s, r2, gw)
    address_8090 = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw, "listener-4"), r3)
    k.httproute_must_have_resolved_refs_conditions_true(s, r3, gw)
    cases = [
        E(Req(host="foo.com", path="/"), backend=V1, namespace=NS),
        E(Req(host="foo.com:8080", path="/"), backend=V2, namespace=NS),
        E(Req(host="bar.com:8080", path="/"), backend=V2, namespace=NS),
        E(Req(host="foo.com:8090", path="/"), backend=V3, namespace=NS),
        E(Req(host="bar.com:8090", path="/"), response=Res(404)),
    ]

    def address_for(tc: E) -> str:
        port = tc.request.host.partition(":")[2]
        return {"8080": address_8080, "8090": address_8090}.get(port, address_80)
    http.run_cases([(tc.case_name(i), lambda tc=tc: http.make_request_and_expect_eventually_consistent_response(
        address_for(tc), tc)) for i, tc in enumerate(cases)])


def test_HTTPRouteMultipleGateways(conformance):
    """httproute-multiple-gateways.go: a route shared by same-namespace and all-namespaces, and
    a dedicated '/' route on each that only its own Gateway serves."""
    s = conformance
    s.apply("httproute-multiple-gateways.yaml")
    shared = NN(NS, "multiple-gateways-shared-route")

    def gateway(name: str, dedicated: str, backend: str) -> None:
        gw = NN(NS, name)
        address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw), shared, NN(NS, dedicated))
        http.run_cases([
            ("shared route is accessible and routed to infra-backend-v1",
             lambda: http.make_request_and_expect_eventually_consistent_response(address, E(
                 Req(path="/shared"), response=Res(200), backend=V1, namespace=NS))),
            (f"dedicated route is accessible and routed to {backend}",
             lambda: http.make_request_and_expect_eventually_consistent_response(address, E(
                 Req(path="/"), response=Res(200), backend=backend, namespace=NS))),
        ], parallel=False)
    http.run_cases([
        ("Gateway same-namespace", lambda: gateway("same-namespace", "same-namespace-dedicated-route", V2)),
        ("Gateway all-namespaces", lambda: gateway("all-namespaces", "all-namespaces-dedicated-route", V3)),
    ])


def test_HTTPRouteHTTPSListener(conformance):
    """httproute-https-listener.go: HTTPS to same-namespace-with-https-listener, verified against
    the tls-validity-checks-certificate Secret, server name = Host."""
    s = conformance
    s.apply("httproute-https-listener.yaml")
    route, route_no_host = NN(NS, "httproute-https-test"), NN(NS, "httproute-https-test-no-hostname")
    gw = NN(NS, "same-namespace-with-https-listener")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw), route, route_no_host)
    k.httproute_must_have_resolved_refs_conditions_true(s, route, gw)
    k.httproute_must_have_resolved_refs_conditions_true(s, route_no_host, gw)
    cert, _ = s.tls_secret(NN(NS, "tls-validity-checks-certificate"))
    assert cert, "missing required server certificate pem for the test"
    cases = [("example.org", 200, V1), ("unknown-example.org", 404, ""), ("second-example.org", 200, V2)]
    subtests = []
    for i, (host, code, backend) in enumerate(cases):
        expected = E(Req(host=host, path="/"), response=Res(code), backend=backend, namespace=NS)
        subtests.append((expected.case_name(i), lambda host=host, expected=expected:
                         http.make_tls_request_and_expect_eventually_consistent_response(
                             address, cert, host, expected)))
    http.run_cases(subtests, parallel=False)


def test_HTTPRouteHTTPSListenerDetectMisdirectedRequests(conformance):
    """httproute-https-listener-detect-misdirected-requests.go: HTTP/2 over TLS with a server name
    (SNI) and a Host that differ; 421 when they belong to different listeners."""
    s = conformance
    s.apply("httproute-https-listener-detect-misdirected-requests.yaml")
    routes = [NN(NS, f"https-listener-detect-misdirected-requests-test-{i}") for i in range(1, 5)]
    gw = NN(NS, "same-namespace-with-https-listener")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw), *routes)
    for route in routes:
        k.httproute_must_have_resolved_refs_conditions_true(s, route, gw)
    cert, _ = s.tls_secret(NN(NS, "tls-validity-checks-certificate"))
    assert cert, "missing required server certificate pem for the test"
    cases = [
        ("example.org", "example.org", 200, V1),
        ("example.org", "second-example.org", 421, ""),
        ("example.org", "unknown-example.org", 404, ""),
        ("second-example.org", "second-example.org", 200, V2),
        ("second-example.org", "example.org", 421, ""),
        ("second-example.org", "unknown-example.org", 421, ""),
        ("third-example.wildcard.org", "third-example.wildcard.org", 200, V3),
        ("third-example.wildcard.org", "fith-example.wildcard.org", 200, V3),
        ("third-example.wildcard.org", "fourth-example.wildcard.org", 421, ""),
        ("third-example.wildcard.org", "second-example.org", 421, ""),
        ("third-example.wildcard.org", "unknown-example.org", 421, ""),
        # infra-backend-v4 does not exist: infra-backend-v1 serves the fourth HTTPRoute
        ("fourth-example.wildcard.org", "fourth-example.wildcard.org", 200, V1),
        ("fourth-example.wildcard.org", "fith-example.wildcard.org", 421, ""),
        ("unknown-example.org", "example.org", 200, V1),
        ("unknown-example.org", "unknown-example.org", 404, ""),
    ]
    subtests = []
    for i, (server_name, host, code, backend) in enumerate(cases):
        expected = E(Req(host=host, path="/detect-misdirected-requests", protocol=http.H2),
                     response=Res(status_codes=[code]), backend=backend, namespace=NS)
        subtests.append((expected.case_name(i), lambda expected=expected, server_name=server_name:
                         http.make_tls_request_and_expect_eventually_consistent_response(
                             address, cert, server_name, expected)))
    http.run_cases(subtests)           # sequential upstream; independent, so side by side here


def test_HTTPRouteRedirectPortAndScheme(conformance):
    """httproute-redirect-port-and-scheme.go: redirects without a port take the listener's port
    (80, 8080, 443) unless a scheme is given, whose well-known port they take then."""
    s = conformance
    s.apply("httproute-redirect-port-and-scheme.yaml")
    gw80, gw8080 = NN(NS, "same-namespace"), NN(NS, "same-namespace-with-http-listener-on-8080")
    gw443 = NN(NS, "same-namespace-with-https-listener")
    r80, r8080 = NN(NS, "http-route-for-listener-on-port-80"), NN(NS, "http-route-for-listener-on-port-8080")
    r443 = NN(NS, "http-route-for-listener-on-port-443")
    address_80 = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw80), r80)
    k.httproute_must_have_resolved_refs_conditions_true(s, r80, gw80)
    address_8080 = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw8080), r8080)
    k.httproute_must_have_resolved_refs_conditions_true(s, r8080, gw8080)
    address_443 = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(gw443), r443)
    k.httproute_must_have_resolved_refs_conditions_true(s, r443, gw443)
    cert, _ = s.tls_secret(NN(NS, "tls-validity-checks-certificate"))
    assert cert, "missing required server certificate pem for the test"

    def redirect(path: str, scheme: str, port: str = "", host: str = "") -> E:
        return E(Req(host=host, path=path, unfollow_redirect=True), response=Res(302),
                 redirect_request=RedirectRequest(scheme=scheme, port=port, host="example.org"), namespace=NS)

    on_80 = [redirect("/scheme-nil-and-port-nil", "http"),
             redirect("/scheme-nil-and-port-80", "http"),
             redirect("/scheme-nil-and-port-8080", "http", "8080"),
             redirect("/scheme-https-and-port-nil", "https"),
             redirect("/scheme-https-and-port-443", "https"),
             redirect("/scheme-https-and-port-8443", "https", "8443")]
    on_8080 = [redirect("/scheme-nil-and-port-nil", "http", "8080"),
               redirect("/scheme-nil-and-port-80", "http"),
               redirect("/scheme-https-and-port-nil", "https")]
    on_443 = [redirect("/scheme-nil-and-port-nil", "https", host="example.org"),
              redirect("/scheme-nil-and-port-443", "https", host="example.org"),
              redirect("/scheme-nil-and-port-8443", "https", "8443", host="example.org"),
              redirect("/scheme-http-and-port-nil", "http", host="example.org"),
              redirect("/scheme-http-and-port-80", "http", host="example.org"),
              redirect("/scheme-http-and-port-8080", "http", "8080", host="example.org")]
    http.run_cases(
        [(f"http-listener-on-80/{tc.case_name(i)}",
          lambda tc=tc: http.make_request_and_expect_eventually_consistent_response(address_80, tc))
         for i, tc in enumerate(on_80)]
        + [(f"http-listener-on-8080/{tc.case_name(i)}",
            lambda tc=tc: http.make_request_and_expect_eventually_consistent_response(address_8080, tc))
           for i, tc in enumerate(on_8080)]
        + [(f"https-listener-on-443/{tc.case_name(i)}",
            lambda tc=tc: http.make_tls_request_and_expect_eventually_consistent_response(
                address_443, cert, "example.org", tc))
           for i, tc in enumerate(on_443)])
