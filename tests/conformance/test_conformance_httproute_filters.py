"""Gateway API conformance, replayed: HTTPRoute filters (redirects, header modifiers, URL
rewrites, request mirrors).

Each test is the upstream Go test of the same ShortName (kubernetes-sigs/gateway-api
``conformance/tests/<file>.go``, named in its docstring; Apache-2.0, Copyright The Kubernetes
Authors), with its manifest from ``manifests/``.
"""
from __future__ import annotations

import math
import uuid
from dataclasses import replace

import pytest

import roundtrip as http
import status as k
from harness import INFRA_BACKEND_V1 as V1, INFRA_BACKEND_V2 as V2, INFRA_BACKEND_V3 as V3
from harness import INFRA_NS as NS
from roundtrip import ExpectedRequest as ER, ExpectedResponse as E, MirroredBackend, RedirectRequest as RR
from roundtrip import Request as Req, Response as Res
from status import NN

pytestmark = pytest.mark.timeout(300)

SAME_NAMESPACE = NN(NS, "same-namespace")


def accepted(s, route: str) -> str:
    route_nn = NN(NS, route)
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), route_nn)
    k.httproute_must_have_resolved_refs_conditions_true(s, route_nn, SAME_NAMESPACE)
    return address


# -- redirects ---------------------------------------------------------------------------------


def redirect(request_path: str, code: int, method: str = "", **location) -> E:
    return E(Req(path=request_path, method=method, unfollow_redirect=True), response=Res(code),
             redirect_request=RR(**location), namespace=NS)


def test_HTTPRouteRedirectHostAndStatus(conformance):
    """httproute-redirect-host-and-status.go"""
    s = conformance
    s.apply("httproute-redirect-host-and-status.yaml")
    address = accepted(s, "redirect-host-and-status")
    http.expect_responses(address, [
        redirect("/hostname-redirect", 302, host="example.org"),
        redirect("/host-and-status", 301, host="example.org"),
    ])


def test_HTTPRouteRedirectPath(conformance):
    """httproute-redirect-path.go"""
    s = conformance
    s.apply("httproute-redirect-path.yaml")
    address = accepted(s, "redirect-path")
    http.expect_responses(address, [
        redirect("/original-prefix/lemon", 302, path="/replacement-prefix/lemon"),
        redirect("/full/path/original", 302, path="/full-path-replacement"),
        redirect("/path-and-host", 302, host="example.org", path="/replacement-prefix"),
        redirect("/path-and-status", 301, path="/replacement-prefix"),
        redirect("/full-path-and-host", 302, host="example.org", path="/replacement-full"),
        redirect("/full-path-and-status", 301, path="/replacement-full"),
    ])


def test_HTTPRouteRedirectPort(conformance):
    """httproute-redirect-port.go"""
    s = conformance
    s.apply("httproute-redirect-port.yaml")
    address = accepted(s, "redirect-port")
    http.expect_responses(address, [
        redirect("/port", 302, port="8083"),
        redirect("/port-and-host", 302, host="example.org", port="8083"),
        redirect("/port-and-status", 301, port="8083"),
        redirect("/port-and-host-and-status", 302, port="8083", host="example.org"),
    ])


def test_HTTPRouteRedirectScheme(conformance):
    """httproute-redirect-scheme.go"""
    s = conformance
    s.apply("httproute-redirect-scheme.yaml")
    address = accepted(s, "redirect-scheme")
    http.expect_responses(address, [
        redirect("/scheme", 302, scheme="https"),
        redirect("/scheme-and-host", 302, host="example.org", scheme="https"),
        redirect("/scheme-and-status", 301, scheme="https"),
        redirect("/scheme-and-host-and-status", 302, scheme="https", host="example.org"),
    ])


def test_HTTPRoute303Redirect(conformance):
    """httproute-303-redirect.go (provisional)"""
    s = conformance
    s.apply("httproute-303-redirect.yaml")
    address = accepted(s, "303-redirect")
    http.expect_responses(address, [redirect("/see-other", 303, method="POST", path="/see-other")])


def test_HTTPRoute307Redirect(conformance):
    """httproute-307-redirect.go (provisional)"""
    s = conformance
    s.apply("httproute-307-redirect.yaml")
    address = accepted(s, "307-redirect")
    http.expect_responses(address, [redirect("/temporary", 307, path="/temporary")])


def test_HTTPRoute308Redirect(conformance):
    """httproute-308-redirect.go (provisional)"""
    s = conformance
    s.apply("httproute-308-redirect.yaml")
    address = accepted(s, "308-redirect")
    http.expect_responses(address, [redirect("/permanent", 308, path="/permanent")])


# -- header modifiers --------------------------------------------------------------------------


def test_HTTPRouteRequestHeaderModifier(conformance):
    """httproute-request-header-modifier.go (HTTPRouteRequestHeaderModifier)"""
    request_header_modifier(conformance, "httproute-request-header-modifier.yaml")


def test_HTTPRouteBackendRequestHeaderModifier(conformance):
    """httproute-request-header-modifier.go (HTTPRouteBackendRequestHeaderModifier): the same
    test, its filters on each rule's backendRef"""
    request_header_modifier(conformance, "httproute-request-header-modifier-backend.yaml")


def test_HTTPRouteRequestHeaderModifierBackendWeights(conformance):
    """httproute-request-header-modifier-backend-weights.go: two backendRefs of weight 10, each
    setting "Backend" to its own name; 100 requests, each must reach the pod its header names."""
    s = conformance
    s.apply("httproute-request-header-modifier-backend-weights.yaml")
    address = accepted(s, "request-header-modifier-backend-weights")
    expected = E(Req(path="/"), response=Res(200), namespace=NS)
    request = http.make_request(expected, address, "HTTP", "http")
    http.make_request_and_expect_eventually_consistent_response(address, expected)
    for _ in range(100):
        captured, _ = http.round_trip(request)
        backends = (captured.headers or {}).get("Backend") or []
        assert len(backends) == 1, f"expected a single 'Backend' header to have been set, got {len(backends)}"
        assert captured.pod.startswith(backends[0]), (
            f"expected the backendRef to have set the correct headers and sent the request to the correct pod, "
            f"got {captured.pod!r}, want {backends[0]!r}")


def request_header_modifier(s, manifest: str) -> None:
    s.apply(manifest)
    address = accepted(s, "request-header-modifier")
    http.expect_responses(address, [
        E(Req(path="/set", headers={"Some-Other-Header": "val"}),
          expected_request=ER(path="/set", headers={"Some-Other-Header": "val",
                                                    "X-Header-Set": "set-overwrites-values"}),
          backend=V1, namespace=NS),
        E(Req(path="/set", headers={"Some-Other-Header": "val", "X-Header-Set": "some-other-value"}),
          expected_request=ER(path="/set", headers={"Some-Other-Header": "val",
                                                    "X-Header-Set": "set-overwrites-values"}),
          backend=V1, namespace=NS),
        E(Req(path="/add", headers={"Some-Other-Header": "val"}),
          expected_request=ER(path="/add", headers={"Some-Other-Header": "val", "X-Header-Add": "add-appends-values"}),
          backend=V1, namespace=NS),
        E(Req(path="/add", headers={"Some-Other-Header": "val", "X-Header-Add": "some-other-value"}),
          expected_request=ER(path="/add", headers={"Some-Other-Header": "val",
                                                    "X-Header-Add": "some-other-value,add-appends-values"}),
          backend=V1, namespace=NS),
        E(Req(path="/remove", headers={"X-Header-Remove": "val"}),
          expected_request=ER(path="/remove", absent_headers=["X-Header-Remove"]),
          backend=V1, namespace=NS),
        E(Req(path="/multiple", headers={"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2",
                                         "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val"}),
          expected_request=ER(path="/multiple", headers={
              "X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2", "X-Header-Add-1": "header-add-1",
              "X-Header-Add-2": "add-val-2,header-add-2", "X-Header-Add-3": "header-add-3",
              "Another-Header": "another-header-val"},
              absent_headers=["X-Header-Remove-1", "X-Header-Remove-2"]),
          backend=V1, namespace=NS),
        # the filter uses canonical header names, the request lower-case ones
        E(Req(path="/case-insensitivity", headers={"x-header-set": "original-val-set",
                                                   "x-header-add": "original-val-add",
                                                   "x-header-remove": "original-val-remove",
                                                   "Another-Header": "another-header-val"}),
          expected_request=ER(path="/case-insensitivity", headers={
              "X-Header-Set": "header-set", "X-Header-Add": "original-val-add,header-add",
              "Another-Header": "another-header-val"},
              absent_headers=["x-header-remove", "X-Header-Remove"]),
          backend=V1, namespace=NS),
    ])


def test_HTTPRouteResponseHeaderModifier(conformance):
    """httproute-response-header-modifier.go: the echo server sets the response fields each
    case asks for (X-Echo-Set-Header), the route's filter changes them."""
    s = conformance
    s.apply("httproute-response-header-modifier.yaml")
    address = accepted(s, "response-header-modifier")
    http.expect_responses(address, [
        E(Req(path="/set"), backend_set_response_headers={"Some-Other-Header": "val"},
          response=Res(headers={"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}),
          backend=V1, namespace=NS),
        E(Req(path="/set"),
          backend_set_response_headers={"Some-Other-Header": "val", "X-Header-Set": "some-other-value"},
          response=Res(headers={"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}),
          backend=V1, namespace=NS),
        E(Req(path="/add"), backend_set_response_headers={"Some-Other-Header": "val"},
          response=Res(headers={"Some-Other-Header": "val", "X-Header-Add": "add-appends-values"}),
          backend=V1, namespace=NS),
        E(Req(path="/add"),
          backend_set_response_headers={"Some-Other-Header": "val", "X-Header-Add": "some-other-value"},
          response=Res(headers={"Some-Other-Header": "val", "X-Header-Add": "some-other-value,add-appends-values"}),
          backend=V1, namespace=NS),
        E(Req(path="/remove"), backend_set_response_headers={"X-Header-Remove": "val"},
          response=Res(absent_headers=["X-Header-Remove"]), backend=V1, namespace=NS),
        E(Req(path="/multiple"),
          backend_set_response_headers={"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2",
                                        "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val",
                                        "X-Header-Remove-1": "val"},
          response=Res(headers={"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2",
                                "X-Header-Add-1": "header-add-1", "X-Header-Add-2": "add-val-2,header-add-2",
                                "X-Header-Add-3": "header-add-3", "Another-Header": "another-header-val"},
                       absent_headers=["X-Header-Remove-1", "X-Header-Remove-2"]),
          backend=V1, namespace=NS),
        E(Req(path="/case-insensitivity"),
          backend_set_response_headers={"x-header-set": "original-val-set", "x-header-add": "original-val-add",
                                        "x-header-remove": "original-val-remove",
                                        "Another-Header": "another-header-val"},
          response=Res(headers={"X-Header-Set": "header-set", "X-Header-Add": "original-val-add,header-add",
                                "X-Lowercase-Add": "lowercase-add", "X-Mixedcase-Add-1": "mixedcase-add-1",
                                "X-Mixedcase-Add-2": "mixedcase-add-2", "X-Uppercase-Add": "uppercase-add",
                                "Another-Header": "another-header-val"},
                       absent_headers=["x-header-remove", "X-Header-Remove"]),
          backend=V1, namespace=NS),
        E(Req(path="/response-and-request-header-modifiers",
              headers={"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1",
                       "X-Header-Echo": "echo"}),
          backend_set_response_headers={"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2",
                                        "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val",
                                        "X-Header-Remove-1": "remove-val-1", "X-Header-Echo": "echo"},
          expected_request=ER(path="/response-and-request-header-modifiers", headers={
              "X-Header-Add": "header-val-1", "X-Header-Set": "set-overwrites-values",
              "X-Header-Add-Append": "append-val-1,header-val-2", "X-Header-Echo": "echo"},
              absent_headers=["X-Header-Remove"]),
          response=Res(headers={"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2",
                                "X-Header-Add-1": "header-add-1", "X-Header-Add-2": "add-val-2,header-add-2",
                                "Another-Header": "another-header-val", "X-Header-Echo": "echo"},
                       absent_headers=["X-Header-Remove-1", "X-Header-Remove-2"]),
          backend=V1, namespace=NS),
    ])


# -- URL rewrites --------------------------------------------------------------------------------

MODIFIED = {"X-Header-Add": "header-val-1", "X-Header-Add-Append": "append-val-1,header-val-2",
            "X-Header-Set": "set-overwrites-values"}


def test_HTTPRouteRewriteHost(conformance):
    """httproute-rewrite-host.go"""
    s = conformance
    s.apply("httproute-rewrite-host.yaml")
    address = accepted(s, "rewrite-host")
    http.expect_responses(address, [
        E(Req(path="/one", host="rewrite.example"), expected_request=ER(path="/one", host="one.example.org"),
          backend=V1, namespace=NS),
        E(Req(path="/two", host="rewrite.example"), expected_request=ER(path="/two", host="example.org"),
          backend=V2, namespace=NS),
        E(Req(path="/rewrite-host-and-modify-headers", host="rewrite.example",
              headers={"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1"}),
          expected_request=ER(path="/rewrite-host-and-modify-headers", host="test.example.org", headers=MODIFIED,
                              absent_headers=["X-Header-Remove"]),
          backend=V2, namespace=NS),
    ])


def test_HTTPRouteRewritePath(conformance):
    """httproute-rewrite-path.go"""
    s = conformance
    s.apply("httproute-rewrite-path.yaml")
    address = accepted(s, "rewrite-path")
    sent = {"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1", "X-Header-Set": "set-val"}
    http.expect_responses(address, [
        E(Req(path="/prefix/one/two"), expected_request=ER(path="/one/two"), backend=V1, namespace=NS),
        E(Req(path="/strip-prefix/three"), expected_request=ER(path="/three"), backend=V1, namespace=NS),
        E(Req(path="/strip-prefix"), expected_request=ER(path="/"), backend=V1, namespace=NS),
        E(Req(path="/full/one/two"), expected_request=ER(path="/one"), backend=V1, namespace=NS),
        E(Req(path="/full/rewrite-path-and-modify-headers/test", headers=sent),
          expected_request=ER(path="/test", headers=MODIFIED, absent_headers=["X-Header-Remove"]),
          backend=V1, namespace=NS),
        E(Req(path="/prefix/rewrite-path-and-modify-headers/one", headers=sent),
          expected_request=ER(path="/prefix/one", headers=MODIFIED, absent_headers=["X-Header-Remove"]),
          backend=V1, namespace=NS),
    ])


def test_HTTPRouteBackendURLRewrite(conformance):
    """httproute-backend-url-rewrite.go: URLRewrite on a backendRef"""
    s = conformance
    s.apply("httproute-backend-url-rewrite.yaml")
    address = accepted(s, "backend-url-rewrite")
    http.expect_responses(address, [
        E(Req(path="/full/original"), expected_request=ER(path="/rewritten-full"), backend=V1, namespace=NS),
        E(Req(path="/prefix/original"), expected_request=ER(path="/rewritten-prefix/original"), backend=V1,
          namespace=NS),
    ])


def test_HTTPRouteBackendRequestRedirect(conformance):
    """httproute-backend-request-redirect.go: RequestRedirect on a backendRef"""
    s = conformance
    s.apply("httproute-backend-request-redirect.yaml")
    address = accepted(s, "backend-request-redirect")
    http.expect_responses(address, [
        E(Req(path="/full/original", unfollow_redirect=True), response=Res(302),
          redirect_request=RR(path="/redirected-full"), namespace=NS),
        E(Req(path="/prefix/original", unfollow_redirect=True), response=Res(302),
          redirect_request=RR(path="/redirected-prefix/original"), namespace=NS),
    ])


# -- request mirrors -------------------------------------------------------------------------------


def mirrored_cases(s, address: str, cases: list[E]) -> None:
    """The mirror tests' loop: a request id per case, the mirror pods' logs watched from before
    the requests, the request made, then the mirrored copies looked for."""
    def run(tc: E) -> None:
        tc.add_request_id_query_param(str(uuid.uuid4()))
        wait_for_mirrors = http.expect_mirrored_request(s.cluster.logs, tc.mirrored_to, tc.request.path)
        try:
            http.make_request_and_expect_eventually_consistent_response(address, tc)
        finally:
            wait_for_mirrors()
    http.run_cases([(tc.case_name(i), lambda tc=tc: run(tc)) for i, tc in enumerate(cases)])


def test_HTTPRouteRequestMirror(conformance):
    """httproute-request-mirror.go"""
    s = conformance
    s.apply("httproute-request-mirror.yaml")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), NN(NS, "request-mirror"))
    mirror = [MirroredBackend(V2, NS)]
    mirrored_cases(s, address, [
        E(Req(path="/mirror"), expected_request=ER(path="/mirror"), backend=V1, mirrored_to=mirror, namespace=NS),
        E(Req(path="/mirror-and-modify-headers",
              headers={"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1"}),
          expected_request=ER(path="/mirror-and-modify-headers", headers=MODIFIED, absent_headers=["X-Header-Remove"]),
          namespace=NS, backend=V1, mirrored_to=mirror),
    ])


def test_HTTPRouteRequestMultipleMirrors(conformance):
    """httproute-request-multiple-mirrors.go"""
    s = conformance
    s.apply("httproute-request-multiple-mirrors.yaml")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE),
                                                        NN(NS, "request-multiple-mirrors"))
    mirrors = [MirroredBackend(V2, NS), MirroredBackend(V3, NS)]
    mirrored_cases(s, address, [
        E(Req(path="/multi-mirror"), expected_request=ER(path="/multi-mirror"), backend=V1, mirrored_to=mirrors,
          namespace=NS),
        E(Req(path="/multi-mirror-and-modify-request-headers",
              headers={"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1"}),
          expected_request=ER(path="/multi-mirror-and-modify-request-headers", headers=MODIFIED,
                              absent_headers=["X-Header-Remove"]),
          namespace=NS, backend=V1, mirrored_to=mirrors),
    ])


def test_HTTPRouteRequestPercentageMirror(conformance):
    """httproute-request-percentage-mirror.go (provisional): 500 requests a check, 10 at a time;
    the mirrored count of each within 3 standard deviations of Binomial(500, p); up to 5 checks."""
    s = conformance
    s.apply("httproute-request-percentage-mirror.yaml")
    route = NN(NS, "request-percentage-mirror")
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), route)
    k.httproute_must_have_resolved_refs_conditions_true(s, route, SAME_NAMESPACE)
    total, checks, tolerance_std_devs = 500, 5, 3.0
    one_success = replace(http.TIMEOUTS, consecutive=1)

    def distribution(expected: E) -> str | None:
        """testMirroredRequestsDistribution (the pods' logs are read once, as upstream)."""
        errors = []
        for mirror in expected.mirrored_to:
            pattern = http.mirror_log_regexp(expected.request.path)
            count = sum(1 for line in s.cluster.logs(mirror.namespace, mirror.name) if pattern.search(line))
            p = mirror.percent / 100
            margin = tolerance_std_devs * math.sqrt(total * p * (1 - p))
            if not total * p - margin <= count <= total * p + margin:
                errors.append(f"pod {mirror.name} did not meet the mirroring percentage within tolerance. "
                              f"Expected between {total * p - margin} and {total * p + margin}, but got {count}")
        return "; ".join(errors) or None

    def run(expected: E) -> None:
        http.make_request_and_expect_eventually_consistent_response(address, expected)
        failures = []
        for _ in range(checks):
            expected.add_request_id_query_param(str(uuid.uuid4()))
            http.run_cases([(f"request {i}", lambda: http.make_request_and_expect_eventually_consistent_response(
                address, expected, one_success)) for i in range(total)], at_once=10)
            if (error := distribution(expected)) is None:
                return
            failures.append(error)      # (upstream then sleeps 2 s; the next check's fresh id makes it moot)
        raise AssertionError(f"Percentage based mirror distribution tests failed: {failures}")

    cases = [
        E(Req(path="/percent-mirror"), namespace=NS, expected_request=ER(path="/percent-mirror"), backend=V1,
          mirrored_to=[MirroredBackend(V2, NS, percent=20)]),
        E(Req(path="/percent-mirror-fraction"), namespace=NS, expected_request=ER(path="/percent-mirror-fraction"),
          backend=V1, mirrored_to=[MirroredBackend(V2, NS, percent=50)]),
        E(Req(path="/percent-mirror-and-modify-headers",
              headers={"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1"}),
          expected_request=ER(path="/percent-mirror-and-modify-headers", headers=MODIFIED,
                              absent_headers=["X-Header-Remove"]),
          namespace=NS, backend=V1, mirrored_to=[MirroredBackend(V2, NS, percent=35)]),
    ]
    http.run_cases([(tc.case_name(i), lambda tc=tc: run(tc)) for i, tc in enumerate(cases)], parallel=False)
