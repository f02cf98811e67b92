"""Gateway API conformance, replayed: HTTPRoute timeouts and retries.

Each test is the upstream Go test of the same ShortName (kubernetes-sigs/gateway-api
``conformance/tests/<file>.go``, named in its docstring; Apache-2.0, Copyright The Kubernetes
Authors), with its manifest from ``manifests/``. The retry tests drive echo-basic's retry
simulation (/retry/...?uuid=&succeedAfter=&responseCode=&delayRetry=) on infra-backend-v3, its
one replica counting the attempts of each uuid.
"""
from __future__ import annotations

import uuid

import pytest

import roundtrip as http
import status as k
from harness import INFRA_BACKEND_V3 as V3
from harness import INFRA_NS as NS
from roundtrip import ExpectedResponse as E, Request as Req, Response as Res
from status import NN

pytestmark = pytest.mark.timeout(300)

SAME_NAMESPACE = NN(NS, "same-namespace")


def accepted(s, route: str) -> str:
    route_nn = NN(NS, route)
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), route_nn)
    k.httproute_must_have_resolved_refs_conditions_true(s, route_nn, SAME_NAMESPACE)
    return address


def test_HTTPRouteTimeoutRequest(conformance):
    """httproute-timeout-request.go"""
    s = conformance
    s.apply("httproute-timeout-request.yaml")
    address = accepted(s, "request-timeout")
    http.expect_responses(address, [
        E(Req(path="/request-timeout"), response=Res(200), namespace=NS),
        E(Req(path="/request-timeout?delay=1s"), response=Res(504), namespace=NS),
        E(Req(path="/disable-request-timeout?delay=1s"), response=Res(200), namespace=NS),
    ])


def test_HTTPRouteTimeoutBackendRequest(conformance):
    """httproute-timeout-backend-request.go"""
    s = conformance
    s.apply("httproute-timeout-backend-request.yaml")
    address = accepted(s, "backend-request-timeout")
    http.expect_responses(address, [
        E(Req(path="/backend-timeout"), response=Res(200), namespace=NS),
        E(Req(path="/backend-timeout?delay=1s"), response=Res(504), namespace=NS),
        E(Req(path="/disable-backend-timeout?delay=1s"), response=Res(200), namespace=NS),
    ])


def assert_consistent_retry_behaviour(address: str, path: str, values: dict[str, str], response: Res) -> None:
    """assertConsistentRetryBehaviour: AwaitConvergence over requests with a fresh uuid each, so
    that the retry simulation counts each probe's attempts on their own."""
    def check(elapsed: float) -> str | None:
        query = http.query_encode({**values, "uuid": str(uuid.uuid4())})
        expected = E(Req(path=f"{path}?{query}"), response=Res(response.status_code, list(response.status_codes)),
                     backend=V3, namespace=NS)
        request = http.make_request(expected, address, "HTTP", "http")
        try:
            c_req, c_res = http.round_trip(request)
        except (OSError, ValueError) as exc:
            return f"request failed, not ready yet: {type(exc).__name__}: {exc} (after {elapsed:.1f}s)"
        return http.compare_round_trip(request, c_req, c_res, expected)
    http.await_convergence(check)


def retry_cases(address: str, cases: list[tuple[str, str, dict, Res]], parallel: bool = True) -> None:
    http.run_cases([(f"{i} request to '{path}' {name}",
                     lambda path=path, values=values, want=want: assert_consistent_retry_behaviour(
                         address, path, values, want))
                    for i, (name, path, values, want) in enumerate(cases)], parallel)


def test_HTTPRouteRetry(conformance):
    """httproute-retry.go"""
    s = conformance
    s.apply("httproute-retry.yaml")
    address = accepted(s, "retries")
    a3, a2 = "/retry/code-500-attempts-3", "/retry/code-all-attempts-2"
    retry_cases(address, [
        ("succeeds after 2 retries when retry is configured for status code 500 and max attempts is 3",
         a3, {"responseCode": "500", "succeedAfter": "2"}, Res(200)),
        ("fails when required retries on 500 exceed max attempts",
         a3, {"responseCode": "500", "succeedAfter": "4"}, Res(500)),
        ("does not retry on 503 when retry is only configured for status code 500",
         a3, {"responseCode": "503", "succeedAfter": "2"}, Res(503)),
        ("succeeds after 1 retry on 500 when retry is configured for all status code and max attempts is 2",
         a2, {"responseCode": "500", "succeedAfter": "1"}, Res(200)),
        ("fails when required retries on 500 exceed max attempts",
         a2, {"responseCode": "500", "succeedAfter": "3"}, Res(500)),
        ("succeeds after 1 retry on 502 when retry is configured for all status code and max attempts is 2",
         a2, {"responseCode": "502", "succeedAfter": "1"}, Res(200)),
        ("fails when required retries on 502 exceed max attempts",
         a2, {"responseCode": "502", "succeedAfter": "3"}, Res(502)),
        ("succeeds after 1 retry on 503 when retry is configured for all status code and max attempts is 2",
         a2, {"responseCode": "503", "succeedAfter": "1"}, Res(200)),
        ("fails when required retries on 503 exceed max attempts",
         a2, {"responseCode": "503", "succeedAfter": "3"}, Res(503)),
        ("succeeds after 1 retry on 504 when retry is configured for all status code and max attempts is 2",
         a2, {"responseCode": "504", "succeedAfter": "1"}, Res(200)),
        ("fails when required retries on 504 exceed max attempts",
         a2, {"responseCode": "504", "succeedAfter": "3"}, Res(504)),
    ])


def test_HTTPRouteRetryConnectionError(conformance):
    """httproute-retry-connection-error.go: the simulation resets the connection (no status)."""
    s = conformance
    s.apply("httproute-retry-connection-error.yaml")
    address = accepted(s, "retries-connection-error")
    path = "/retry/no-status-code-attempts-3"
    retry_cases(address, [
        ("succeeds after 2 retries on connection errors and max attempts is 3",
         path, {"succeedAfter": "2"}, Res(200)),
        ("fails when required retries on connection errors exceed max attempts",
         path, {"succeedAfter": "4"}, Res(status_codes=[500, 503])),
    ], parallel=False)


def test_HTTPRouteRetryWithTimeouts(conformance):
    """httproute-retry-with-timeouts.go"""
    s = conformance
    s.apply("httproute-retry-with-timeouts.yaml")
    address = accepted(s, "retries-with-timeouts")
    backend, request = "/retry/backend-request-timeout-200ms", "/retry/request-timeout-200ms"
    retry_cases(address, [
        ("succeeds after 2 retries on backend timeout with max attempts is 3",
         backend, {"responseCode": "500", "succeedAfter": "2", "delayRetry": "300ms"}, Res(200)),
        ("fails when required retries on backend timeout exceed max attempts",
         backend, {"responseCode": "500", "succeedAfter": "3", "delayRetry": "300ms"}, Res(504)),
        ("succeeds when retries complete within the request timeout",
         request, {"responseCode": "500", "succeedAfter": "1"}, Res(200)),
        ("fails with 504 when retry delays exceed the request timeout",
         request, {"responseCode": "500", "succeedAfter": "4", "delayRetry": "100ms"}, Res(504)),
    ], parallel=False)
