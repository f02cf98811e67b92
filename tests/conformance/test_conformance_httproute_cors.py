"""Gateway API conformance, replayed: the HTTPRoute CORS filter (HTTPRouteCORS).

The upstream Go test (kubernetes-sigs/gateway-api ``conformance/tests/httproute-cors.go``;
Apache-2.0, Copyright The Kubernetes Authors) with its manifest from ``manifests/``: every
case as it states it, the preflights answered by the gateway itself (no echo body, hence
the empty expected request and namespace), the other requests by infra-backend-v1.
"""
from __future__ import annotations

import pytest

import roundtrip as http
import status as k
from harness import INFRA_NS as NS
from roundtrip import ExpectedRequest as ER, ExpectedResponse as E, Request as Req, Response as Res
from status import NN

pytestmark = pytest.mark.timeout(300)

SAME_NAMESPACE = NN(NS, "same-namespace")
PREFLIGHT_ANSWERED = ER(method="OPTIONS")       # host, path, headers empty: no echo of a request


def preflight(name: str, path: str, headers: dict, response: Res) -> E:
    return E(Req(path=path, method="OPTIONS", headers=headers), expected_request=PREFLIGHT_ANSWERED,
             namespace="", response=response, test_case_name=name)


def request(name: str, path: str, method: str, headers: dict, response: Res) -> E:
    return E(Req(path=path, method=method, headers=headers), namespace=NS, response=response, test_case_name=name)


ALLOWED_1 = {
    "access-control-allow-methods": ["GET, OPTIONS", "OPTIONS, GET"],
    "access-control-allow-headers": ["x-header-1, x-header-2", "x-header-2, x-header-1"],
    "access-control-expose-headers": ["x-header-3, x-header-4", "x-header-4, x-header-3"],
    "access-control-max-age": ["3600"],
    "access-control-allow-credentials": ["true"],
}
ASKING_1 = {"access-control-request-method": "GET", "access-control-request-headers": "x-header-1, x-header-2"}


def test_HTTPRouteCORS(conformance):
    """httproute-cors.go"""
    s = conformance
    s.apply("httproute-cors.yaml")
    routes = [NN(NS, name) for name in ("cors-multiple-origins-methods-headers", "cors-wildcard-methods",
                                        "cors-wildcard-origin", "cors-wildcard-methods-headers")]
    address = k.gateway_and_httproutes_must_be_accepted(s, k.gateway_ref(SAME_NAMESPACE), routes[0], routes[1])
    for route in routes:
        k.httproute_must_have_resolved_refs_conditions_true(s, route, SAME_NAMESPACE)
    http.expect_responses(address, [
        preflight("CORS preflight request from an exact matching origin should be allowed", "/cors-1",
                  {"Origin": "https://www.foo.com", **ASKING_1},
                  Res(status_codes=[200, 204], ignore_whitespace=True, valid_header_values={
                      "access-control-allow-origin": ["https://www.foo.com"], **ALLOWED_1})),
        preflight("CORS preflight request from a wildcard matching origin should be allowed", "/cors-1",
                  {"Origin": "https://www.bar.com", **ASKING_1},
                  Res(status_codes=[200, 204], ignore_whitespace=True, valid_header_values={
                      "access-control-allow-origin": ["https://www.bar.com"], **ALLOWED_1})),
        preflight("CORS preflight request from a wildcard matching any number of periods left to '*' should be "
                  "allowed", "/cors-1", {"Origin": "https://xpto.www.bar.com", **ASKING_1},
                  Res(status_codes=[200, 204], ignore_whitespace=True, valid_header_values={
                      "access-control-allow-origin": ["https://xpto.www.bar.com"], **ALLOWED_1})),
        preflight("CORS preflight request from a non-matching origin should not be allowed", "/cors-1",
                  {"Origin": "https://foobar.com", "access-control-request-method": "GET"},
                  Res(status_codes=[200, 204, 403], absent_headers=["access-control-allow-origin"])),
        request("Simple request from an exact matching origin should be allowed", "/cors-1", "GET",
                {"Origin": "https://www.foo.com", **ASKING_1},
                Res(status_code=200, headers={"access-control-allow-origin": "https://www.foo.com"})),
        request("Simple request from a wildcard matching origin should be allowed", "/cors-1", "GET",
                {"Origin": "https://www.bar.com", **ASKING_1},
                Res(status_code=200, headers={"access-control-allow-origin": "https://www.bar.com"})),
        request("Simple request from a non-matching origin should not be allowed", "/cors-1", "GET",
                {"Origin": "https://foobar.com", "access-control-request-method": "GET"},
                Res(absent_headers=["access-control-allow-origin"])),
        preflight("CORS preflight request with POST method should be allowed by allowMethods with wildcard",
                  "/cors-2", {"Origin": "https://www.foo.com", "access-control-request-method": "POST"},
                  Res(status_codes=[200, 204], valid_header_values={"access-control-allow-methods": ["POST", "*"]},
                      headers={"access-control-allow-origin": "https://www.foo.com"},
                      absent_headers=["access-control-allow-credentials"])),
        preflight("CORS preflight request should not receive access-control-allow-credentials header without "
                  "access-control-allow-credentials set to true", "/cors-2",
                  {"Origin": "https://www.foo.com", "access-control-request-method": "POST"},
                  Res(status_codes=[200, 204], absent_headers=["Access-Control-Allow-Credentials"])),
        preflight("CORS preflight request from a wildcard origin should return header with '*' or with the "
                  "requested Origin", "/cors-wildcard-origin",
                  {"Origin": "https://foobar.com", "access-control-request-method": "PUT"},
                  Res(status_codes=[200, 204], valid_header_values={
                      "access-control-allow-origin": ["https://foobar.com", "*"],
                      "access-control-allow-methods": ["PUT"]},
                      absent_headers=["Access-Control-Allow-Credentials"])),
        preflight("CORS preflight request from a wildcard origin containing a port should return header with "
                  "'*' or with the requested Origin", "/cors-wildcard-origin",
                  {"Origin": "https://foobar.com:12345", "access-control-request-method": "PUT"},
                  Res(status_codes=[200, 204], valid_header_values={
                      "access-control-allow-origin": ["https://foobar.com:12345", "*"],
                      "access-control-allow-methods": ["PUT"]},
                      absent_headers=["Access-Control-Allow-Credentials"])),
        request("Request from a wildcard origin containing a port should return header with '*' or with the "
                "requested Origin", "/cors-wildcard-origin", "PUT", {"Origin": "https://foobar.com:12345"},
                Res(status_code=200, valid_header_values={
                    "access-control-allow-origin": ["https://foobar.com:12345", "*"]})),
        request("Simple request from a wildcard origin should return header with '*' or with the requested "
                "Origin", "/cors-wildcard-origin", "PUT", {"Origin": "https://foobar.com"},
                Res(status_code=200, valid_header_values={"access-control-allow-origin": ["https://foobar.com", "*"]},
                    absent_headers=["Access-Control-Allow-Credentials"])),
        preflight("CORS preflight request requesting specific method and headers should be allowed and always "
                  "echo the origin with allowCredentials set to true", "/cors-wildcard-methods-headers",
                  {"Origin": "https://other.foo.com", "access-control-request-method": "PUT",
                   "access-control-request-headers": "x-header-1, x-header-2"},
                  Res(status_codes=[200, 204], ignore_whitespace=True, valid_header_values={
                      "access-control-allow-origin": ["https://other.foo.com"],
                      "access-control-allow-methods": ["PUT"],
                      "access-control-allow-headers": ["x-header-1, x-header-2", "x-header-2, x-header-1"],
                      "access-control-allow-credentials": ["true"]})),
        preflight("CORS preflight request requesting specific method and headers should hide "
                  "access-control-allow-credentials headers with allowCredentials set to false",
                  "/cors-wildcard-methods-headers-unauth",
                  {"Origin": "https://other.foo.com", "access-control-request-method": "PUT",
                   "access-control-request-headers": "x-header-1, x-header-2"},
                  Res(status_codes=[200, 204], ignore_whitespace=True, valid_header_values={
                      "access-control-allow-origin": ["https://other.foo.com", "*"],
                      "access-control-allow-methods": ["PUT", "*"],
                      "access-control-allow-headers": ["x-header-1, x-header-2", "x-header-2, x-header-1", "*"]},
                      absent_headers=["access-control-allow-credentials"])),
        request("CORS request should receive access-control-allow-credentials header with allowCredentials set "
                "to true", "/cors-wildcard-methods-headers", "GET", {"Origin": "https://other.foo.com"},
                Res(status_code=200, valid_header_values={"access-control-allow-origin": ["https://other.foo.com"],
                                                          "access-control-allow-credentials": ["true"]})),
        request("CORS request should not receive access-control-allow-credentials header without "
                "allowCredentials set to true", "/cors-wildcard-methods-headers-unauth", "GET",
                {"Origin": "https://other.foo.com"},
                Res(status_code=200, valid_header_values={"access-control-allow-origin": ["https://other.foo.com", "*"]},
                    absent_headers=["access-control-allow-credentials"])),
    ])
