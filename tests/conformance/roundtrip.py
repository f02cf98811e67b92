"""The client side of the Gateway API conformance suite, ported from its Go helpers:
``conformance/utils/roundtripper`` (one request, what the echo server says it received),
``conformance/utils/http`` (ExpectedResponse, CompareRoundTrip, AwaitConvergence,
MakeRequestAndExpectEventuallyConsistentResponse), ``conformance/utils/tls`` (the same over TLS)
and ``conformance/utils/weight`` (the weighted distribution check), from
kubernetes-sigs/gateway-api (Apache-2.0, Copyright The Kubernetes Authors; commit in
``harness.UPSTREAM_COMMIT``).

The requests are the ones Go's client makes: a new connection each (the suite disables
keep-alive, so ``Connection: close``), ``User-Agent: Go-http-client/1.1``, ``Accept-Encoding:
gzip``, ``Content-Length: 0`` on a body-less POST/PUT/PATCH, header names in Go's canonical form
and the empty ``X-Echo-Set-Header`` the suite always sends. HTTP/2 (h2 over TLS, h2c prior
knowledge) goes through ``tests/h2client.py``. TLS is checked as Go's ``tls.Config{ServerName,
RootCAs: the Secret's certificate}`` checks it: the self-signed certificate must be the one
presented, and it must name the server name by Go's hostname rules (``*.org`` covers
``example.org``, which OpenSSL's own check would refuse).
"""
from __future__ import annotations

import concurrent.futures
import math
import os
import re
import secrets
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable
from urllib.parse import urlencode, urlsplit

import orjson

from support import Client
from h2client import H2Client, StreamAnswer

HTTPS = "HTTPS"
H2 = "H2"
H2C_PRIOR_KNOWLEDGE = "H2C_PRIOR_KNOWLEDGE"
REQUEST_ID_PARAM = "gateway-api-conformance-request-id"


@dataclass(frozen=True)
class Timeouts:
    """The suite's TimeoutConfig (``conformance/utils/config/timeout.go``) as this harness uses it.

    Upstream defaults are maxima for slow cloud load balancers (30 s to consistency, 60-180 s for
    a condition); here every change is applied within about 25 ms (README, "Routes from
    Kubernetes"), so 15 s and 20 s are still hundreds of times the usual wait while keeping a
    failing (xfail) test short. ``GATEWAY_CONFORMANCE_TIMEOUT_SCALE`` multiplies them."""
    poll: float = 0.1                   # DefaultPollInterval
    consecutive: int = 3                # RequiredConsecutiveSuccesses
    consistency: float = 15.0           # MaxTimeToConsistency
    condition: float = 20.0             # GatewayMustHaveCondition, HTTPRouteMustHaveCondition, listeners, ...
    request: float = 10.0               # RequestTimeout (one request)
    delete: float = 30.0                # DeleteTimeout

    @classmethod
    def from_env(cls) -> "Timeouts":
        scale = float(os.environ.get("GATEWAY_CONFORMANCE_TIMEOUT_SCALE", "1"))
        base = cls()
        return replace(base, consistency=base.consistency * scale, condition=base.condition * scale,
                       delete=base.delete * scale)


TIMEOUTS = Timeouts.from_env()


# -- what a test expects (conformance/utils/http/http.go) ------------------------------------


@dataclass
class Request:
    host: str = ""
    method: str = ""
    path: str = ""
    headers: dict[str, str] | None = None
    unfollow_redirect: bool = False
    protocol: str = ""
    body: str = ""
    sni: str = ""                       # as expected: the server name the backend was asked for
    client_cert: str = ""               # as expected: a PEM certificate the backend was shown


@dataclass
class ExpectedRequest(Request):
    absent_headers: list[str] = field(default_factory=list)
    http_port: str = ""


@dataclass
class Response:
    status_code: int = 0                # deprecated upstream, merged into status_codes
    status_codes: list[int] = field(default_factory=list)
    headers: dict[str, str] | None = None
    valid_header_values: dict[str, list[str]] | None = None
    absent_headers: list[str] = field(default_factory=list)
    protocol: str = ""
    ignore_whitespace: bool = False


@dataclass
class RedirectRequest:
    scheme: str = ""
    host: str = ""
    port: str = ""
    path: str = ""


@dataclass
class MirroredBackend:
    name: str
    namespace: str
    percent: int | None = None


@dataclass
class ExpectedResponse:
    request: Request
    expected_request: ExpectedRequest | None = None
    redirect_request: RedirectRequest | None = None
    backend_set_response_headers: dict[str, str] | None = None
    response: Response = field(default_factory=Response)
    backend: str = ""
    namespace: str = ""
    mirrored_to: list[MirroredBackend] = field(default_factory=list)
    test_case_name: str = ""

    def case_name(self, i: int) -> str:
        """GetTestCaseName."""
        if self.test_case_name:
            return self.test_case_name
        with_headers = " with headers" if self.request.headers is not None else ""
        name = f"{i} request to '{self.request.host}{self.request.path}'{with_headers}"
        if self.backend:
            return f"{name} should go to {self.backend}"
        return f"{name} should receive one of {self.response.status_codes or [self.response.status_code or 200]}"

    def add_request_id_query_param(self, request_id: str) -> None:
        """AddRequestIDQueryParam: the request (and the expected request) get
        ?gateway-api-conformance-request-id=<id>, so that echo logs name this request only."""
        path = _add_query_param(self.request.path, REQUEST_ID_PARAM, request_id)
        if self.expected_request is not None:
            if self.expected_request.path == "":
                self.expected_request.path = path
            else:
                self.expected_request.path = _add_query_param(self.expected_request.path, REQUEST_ID_PARAM,
                                                              request_id)
        self.request.path = path


def _add_query_param(raw: str, name: str, value: str) -> str:
    """Go's url.Values Set + Encode: the parameter replaces any of that name, keys sorted."""
    path, _, query = raw.partition("?")
    pairs = [p.partition("=") for p in query.split("&") if p] if query else []
    values: dict[str, list[str]] = {}
    for k, _, v in pairs:
        values.setdefault(k, []).append(v)
    values[name] = [value]
    encoded = "&".join(f"{k}={v}" for k in sorted(values) for v in values[k])
    return f"{path}?{encoded}"


def query_encode(values: dict[str, str]) -> str:
    """Go's url.Values.Encode for single values: keys sorted, query-escaped."""
    return urlencode(sorted(values.items()))


# -- one round trip (conformance/utils/roundtripper) -------------------------------------------


@dataclass
class RtRequest:
    """roundtripper.Request: where to connect, and the request to make there."""
    address: str                        # the Gateway's "host:port"
    scheme: str
    url_host: str                       # CalculateHost: the URL's host (":80"/":443" dropped)
    method: str
    path: str                           # with its query
    host: str                           # the Host header ("" -> url_host)
    protocol: str
    headers: dict[str, str]
    unfollow_redirect: bool = False
    body: str = ""
    server_name: str = ""
    server_certificate: bytes = b""
    # tls.go's client certificate, given when the server asks for one (GetClientCertificateHook),
    # and ``certificate_requested`` set when it did
    client_certificate: bytes = b""
    client_key: bytes = field(default=b"", repr=False)
    certificate_requested: threading.Event = field(default_factory=threading.Event, repr=False)


@dataclass
class CapturedRequest:
    path: str = ""
    host: str = ""
    method: str = ""
    protocol: str = ""
    headers: dict[str, list[str]] | None = None
    http_port: str = ""
    namespace: str = ""
    pod: str = ""
    tls_server_name: str = ""           # echo-basic's "tls" object, when the backend spoke TLS
    tls_peer_certificates: list[str] = field(default_factory=list)


@dataclass
class CapturedResponse:
    status_code: int
    protocol: str
    headers: dict[str, list[str]]       # by lower-case name, values in arrival order
    redirect: RedirectRequest | None = None


def canonical(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey (req.Header.Set canonicalizes the names a test gives)."""
    if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
        return name
    return "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


def calculate_host(address: str, scheme: str) -> str:
    host, _, port = address.rpartition(":")
    if (scheme == "http" and port == "80") or (scheme == "https" and port == "443"):
        return host
    return address


def make_request(expected: ExpectedResponse, address: str, protocol: str, scheme: str) -> RtRequest:
    """MakeRequest; like the Go function it fills ``expected``'s defaults in (method, status codes)."""
    if not expected.request.method:
        expected.request.method = "GET"
    resp = expected.response
    if resp.status_code and resp.status_code not in resp.status_codes:
        resp.status_codes.append(resp.status_code)
    if not resp.status_codes:
        resp.status_codes = [200]
    if not expected.request.protocol:
        expected.request.protocol = protocol
    headers = {canonical(k): v for k, v in (expected.request.headers or {}).items()}
    backend_sets = expected.backend_set_response_headers or {}
    headers["X-Echo-Set-Header"] = ",".join(f"{k}:{v}" for k, v in backend_sets.items())
    return RtRequest(address=address, scheme=scheme, url_host=calculate_host(address, scheme),
                     method=expected.request.method, path=expected.request.path, host=expected.request.host,
                     protocol=expected.request.protocol, headers=headers,
                     unfollow_redirect=expected.request.unfollow_redirect, body=expected.request.body)


_DER_CACHE: dict[bytes, tuple[bytes, list[str]]] = {}
_DER_LOCK = threading.Lock()


def _certificate(pem: bytes) -> tuple[bytes, list[str]]:
    """(DER, DNS names) of a PEM certificate."""
    with _DER_LOCK:
        if pem not in _DER_CACHE:
            der = ssl.PEM_cert_to_DER_cert(pem.decode())
            with tempfile.NamedTemporaryFile("wb", suffix=".pem") as f:
                f.write(pem)
                f.flush()
                decoded = ssl._ssl._test_decode_cert(f.name)     # the stdlib's own decoder
            names = [v for k, v in decoded.get("subjectAltName", ()) if k == "DNS"]
            _DER_CACHE[pem] = (der, names)
        return _DER_CACHE[pem]


def go_hostname_matches(pattern: str, host: str) -> bool:
    """crypto/x509 matchHostnames: same number of labels, "*" only as the whole first one."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if not pattern or not host:
        return False
    p, h = pattern.split("."), host.split(".")
    if len(p) != len(h) or any(not part for part in p):
        return False
    return all((i == 0 and pp == "*") or pp == hp for i, (pp, hp) in enumerate(zip(p, h)))


def _verify_peer(sock: ssl.SSLSocket, request: RtRequest) -> None:
    if not request.server_name:
        raise ssl.SSLError("https request has no server name configured")
    der, names = _certificate(request.server_certificate)
    if sock.getpeercert(binary_form=True) != der:
        raise ssl.SSLError("x509: certificate signed by unknown authority")
    if not any(go_hostname_matches(n, request.server_name) for n in names):
        raise ssl.SSLError(f"x509: certificate is not valid for {request.server_name}")


def _tls_context(request: RtRequest, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False          # checked by _verify_peer, with Go's rules
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if request.client_certificate:
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            for path, pem in ((cert, request.client_certificate), (key, request.client_key)):
                with open(path, "wb") as f:
                    f.write(pem)
            ctx.load_cert_chain(cert, key)
        # Go calls GetClientCertificateHook when a CertificateRequest arrives; OpenSSL's message
        # callback sees the (decrypted) handshake messages.
        ctx._msg_callback = lambda _conn, direction, _version, _type, msg_type, _data: (
            request.certificate_requested.set()
            if direction == "read" and msg_type == ssl._TLSMessageType.CERTIFICATE_REQUEST else None)
    return ctx


def round_trip(request: RtRequest) -> tuple[CapturedRequest, CapturedResponse]:
    """CaptureRoundTrip: OSError/ssl.SSLError/ValueError when no response came."""
    if request.protocol in (H2, H2C_PRIOR_KNOWLEDGE):
        status, proto, headers, body = _h2_round_trip(request)
    else:
        status, proto, headers, body = _h1_round_trip(request)
    captured = CapturedRequest()
    content_type = (headers.get("content-type") or [""])[0]
    if content_type == "application/json":
        data = orjson.loads(body)       # invalid JSON: an error, the request is "not ready"
        tls = data.get("tls") or {}
        captured = CapturedRequest(path=data.get("path", ""), host=data.get("host", ""),
                                   method=data.get("method", ""), protocol=data.get("proto", ""),
                                   headers=data.get("headers"), http_port=data.get("httpPort", ""),
                                   namespace=data.get("namespace", ""), pod=data.get("pod", ""),
                                   tls_server_name=tls.get("serverName", ""),
                                   tls_peer_certificates=tls.get("peerCertificates") or [])
    else:
        captured.method = request.method    # "assume it made the right request"
    response = CapturedResponse(status, proto, headers)
    if is_redirect(status):
        location = (headers.get("location") or [None])[0]
        if location is None:
            raise ValueError("http: no Location header in response")
        url = urlsplit(location if "://" in location else f"{request.scheme}://{request.url_host}{location}")
        response.redirect = RedirectRequest(scheme=url.scheme, host=url.hostname or "",
                                            port=str(url.port) if url.port else "", path=url.path)
    return captured, response


def _connect_target(request: RtRequest) -> tuple[str, int]:
    host, _, port = request.address.rpartition(":")
    return host.strip("[]"), int(port)


def _h1_round_trip(request: RtRequest) -> tuple[int, str, dict[str, list[str]], bytes]:
    host, port = _connect_target(request)
    client = Client(host, port, timeout=TIMEOUTS.request)
    try:
        if request.protocol == HTTPS:
            client.sock = _tls_context(request).wrap_socket(client.sock, server_hostname=request.server_name or None)
            _verify_peer(client.sock, request)
        fields = [("User-Agent", "Go-http-client/1.1")]
        body = request.body.encode()
        if body or request.method in ("POST", "PUT", "PATCH"):
            fields.append(("Content-Length", str(len(body))))
        fields += sorted(request.headers.items())
        fields.append(("Connection", "close"))
        if request.method != "HEAD":
            fields.append(("Accept-Encoding", "gzip"))
        resp = client.request(request.method, request.path, fields, body or None,
                              host=request.host or request.url_host)
    finally:
        client.close()
    headers: dict[str, list[str]] = {}
    for name, value in resp.headers:
        headers.setdefault(name.lower(), []).append(value)
    return resp.status, resp.version, headers, resp.body


def _h2_round_trip(request: RtRequest) -> tuple[int, str, dict[str, list[str]], bytes]:
    host, port = _connect_target(request)
    tls = _tls_context(request, ["h2"]) if request.protocol == H2 else None
    try:
        client = H2Client(host, port, tls=tls, server_name=request.server_name or None, timeout=TIMEOUTS.request)
    except AssertionError as exc:       # h2client asserts that ALPN chose h2
        raise ConnectionError(f"http2: unexpected ALPN protocol: {exc}") from None
    try:
        if tls is not None:
            _verify_peer(client.sock, request)
        sid = client.conn.get_next_available_stream_id()
        fields = [(":method", request.method), (":scheme", request.scheme),
                  (":authority", request.host or request.url_host), (":path", request.path),
                  *((k.lower(), v) for k, v in sorted(request.headers.items())),
                  ("user-agent", "Go-http-client/2.0"), ("accept-encoding", "gzip")]
        body = request.body.encode()
        client.conn.send_headers(sid, fields, end_stream=not body)
        client.answers[sid] = StreamAnswer()
        if body:
            client.send_body(sid, body)
        client.flush()
        (answer,) = client.wait(sid)
    finally:
        client.close()
    if answer.status is None:
        raise ConnectionResetError(f"stream reset ({answer.reset}) before a response")
    return answer.status, "HTTP/2.0", {k.lower(): [v] for k, v in answer.headers.items()}, bytes(answer.body)


def is_redirect(status: int) -> bool:
    return status in (300, 301, 302, 303, 304, 305, 307, 308)


def is_timeout_error(status: int) -> bool:
    return status in (408, 504)


# -- the comparison (CompareRoundTrip) ---------------------------------------------------------


def compare_round_trip(request: RtRequest, c_req: CapturedRequest, c_res: CapturedResponse,
                       expected: ExpectedResponse) -> str | None:
    """None when the answer is the expected one, else why not (Go's error text)."""
    codes = expected.response.status_codes
    if is_timeout_error(c_res.status_code) and any(is_timeout_error(c) for c in codes):
        return None
    if c_res.status_code not in codes:
        return f"expected status code to be one of {codes}, got {c_res.status_code}"
    if expected.response.protocol and expected.response.protocol != c_res.protocol:
        return f"expected protocol to be {expected.response.protocol}, got {c_res.protocol}"
    if c_res.status_code in (200, 204):
        want = expected.expected_request
        if want is None:
            r = expected.request
            want = ExpectedRequest(host=r.host, method=r.method, path=r.path, headers=r.headers,
                                   unfollow_redirect=r.unfollow_redirect, protocol=r.protocol, body=r.body,
                                   sni=r.sni, client_cert=r.client_cert)
        method = want.method or "GET"
        if want.host and want.host != c_req.host:
            return f"expected host to be {want.host}, got {c_req.host}"
        if want.path != c_req.path:
            return f"expected path to be {want.path}, got {c_req.path}"
        if method != c_req.method:
            return f"expected method to be {method}, got {c_req.method}"
        if expected.namespace != c_req.namespace:
            return f"expected namespace to be {expected.namespace}, got {c_req.namespace}"
        req_headers = {k.lower(): v for k, v in (c_req.headers or {}).items()}
        if want.headers is not None:
            if c_req.headers is None:
                return f"no headers captured, expected {len(want.headers)}"
            for name, value in want.headers.items():
                got = req_headers.get(name.lower())
                if got is None:
                    return f"expected {name} header to be set, actual headers: {c_req.headers}"
                if ",".join(got) != value:
                    return f"expected {name} header to be set to {value}, got {','.join(got)}"
        if want.http_port and want.http_port != c_req.http_port:
            return f"expected httpPort {want.http_port!r}, got {c_req.http_port!r}"
        res = expected.response
        ws = (lambda s: s.replace(" ", "")) if res.ignore_whitespace else (lambda s: s)
        for name, values in (res.valid_header_values or {}).items():
            got = c_res.headers.get(name.lower())
            if got is None:
                return f"expected {name} header to be set, actual headers: {c_res.headers}"
            if ws(",".join(got)) not in [ws(v) for v in values]:
                return f"expected {name} header to be set to one of {values}, got {','.join(got)}"
        for name, value in (res.headers or {}).items():
            got = c_res.headers.get(name.lower())
            if got is None:
                return f"expected {name} header to be set, actual headers: {c_res.headers}"
            if ws(",".join(got)) != ws(value):
                return f"expected {name} header to be set to {value}, got {','.join(got)}"
        for name in res.absent_headers:
            if name.lower() in c_res.headers:
                return f"expected {name} header to not be set, got {c_res.headers[name.lower()]}"
        for name in want.absent_headers:
            if name.lower() in req_headers:
                return f"expected {name} header to not be set, got {req_headers[name.lower()]}"
        if not c_req.pod.startswith(expected.backend):
            return f"expected pod name to start with {expected.backend}, got {c_req.pod}"
        if want.sni and want.sni != c_req.tls_server_name:
            return f"expected SNI {c_req.tls_server_name!r} to be equal to {want.sni!r}"
        if want.client_cert and want.client_cert not in c_req.tls_peer_certificates:
            return "expected client certiifcate was not captured"
    elif is_redirect(c_res.status_code):
        want = expected.redirect_request
        if want is None:
            return None
        got = c_res.redirect
        host = want.host or got.host                            # setRedirectRequestDefaults
        scheme = want.scheme or request.scheme
        path = want.path or request.path.split("?", 1)[0]
        if host != got.host:
            return f"expected redirected hostname to be {host!r}, got {got.host!r}"
        if not want.port:
            if got.scheme.lower() == "http" and got.port not in ("80", ""):
                return f"for http scheme, expected redirected port to be 80 or not set, got {got.port!r}"
            if got.scheme.lower() == "https" and got.port not in ("443", ""):
                return f"for https scheme, expected redirected port to be 443 or not set, got {got.port!r}"
        elif want.port != got.port:
            return f"expected redirected port to be {want.port!r}, got {got.port!r}"
        if scheme != got.scheme:
            return f"expected redirected scheme to be {scheme!r}, got {got.scheme!r}"
        if path != got.path:
            return f"expected redirected path to be {path!r}, got {got.path!r}"
    return None


# -- waiting for consistency (AwaitConvergence and its users) ---------------------------------


def await_convergence(check: Callable[[float], str | None], timeouts: Timeouts = TIMEOUTS) -> None:
    """AwaitConvergence: ``check`` (None = success) must succeed ``consecutive`` times in a row
    before ``consistency`` seconds pass; a failure waits ``poll`` seconds, a success does not."""
    start = time.monotonic()
    deadline = start + timeouts.consistency
    successes = attempts = 0
    last = None
    while True:
        if time.monotonic() > deadline:
            raise AssertionError(f"timeout while waiting after {attempts} attempts, "
                                 f"{successes}/{timeouts.consecutive} successes; last: {last}")
        last = check(time.monotonic() - start)
        attempts += 1
        if last is None:
            successes += 1
            if successes >= timeouts.consecutive:
                return
            continue
        successes = 0
        time.sleep(min(timeouts.poll, max(0.0, deadline - time.monotonic())))


def wait_for_consistent_response(request: RtRequest, expected: ExpectedResponse,
                                 timeouts: Timeouts = TIMEOUTS) -> None:
    """WaitForConsistentResponse (and WaitForConsistentTLSResponse)."""
    def check(elapsed: float) -> str | None:
        try:
            c_req, c_res = round_trip(request)
        except (OSError, ssl.SSLError, ValueError) as exc:
            return f"request failed, not ready yet: {type(exc).__name__}: {exc} (after {elapsed:.1f}s)"
        return compare_round_trip(request, c_req, c_res, expected)
    await_convergence(check, timeouts)


def make_request_and_expect_eventually_consistent_response(address: str, expected: ExpectedResponse,
                                                           timeouts: Timeouts = TIMEOUTS) -> None:
    """MakeRequestAndExpectEventuallyConsistentResponse (HTTP, scheme http)."""
    wait_for_consistent_response(make_request(expected, address, "HTTP", "http"), expected, timeouts)


def _tls_request(expected: ExpectedResponse, address: str, server_certificate: bytes, client_certificate: bytes,
                 client_key: bytes, server_name: str) -> RtRequest:
    request = make_request(expected, address, HTTPS, "https")
    request.server_name = server_name
    request.server_certificate = server_certificate
    request.client_certificate, request.client_key = client_certificate or b"", client_key or b""
    return request


def _certificate_was_presented(request: RtRequest) -> None:
    """tls.go's closing check: a client certificate given was asked for (and so presented)."""
    if request.client_certificate:
        assert request.certificate_requested.is_set(), "client certificate was not presented during the handshake"


def make_tls_request_and_expect_eventually_consistent_response(
        address: str, server_certificate: bytes, server_name: str, expected: ExpectedResponse,
        timeouts: Timeouts = TIMEOUTS, client_certificate: bytes = b"", client_key: bytes = b"") -> None:
    """tls.MakeTLSRequestAndExpectEventuallyConsistentResponse."""
    request = _tls_request(expected, address, server_certificate, client_certificate, client_key, server_name)
    wait_for_consistent_response(request, expected, timeouts)
    _certificate_was_presented(request)


def make_request_and_expect_failure(address: str, expected: ExpectedResponse, timeouts: Timeouts = TIMEOUTS) -> None:
    """MakeRequestAndExpectFailure (WaitForConsistentFailureResponse): until every answer is
    neither an error nor a timeout status; a 200 at any time fails the test at once."""
    request = make_request(expected, address, "HTTP", "http")

    def check(elapsed: float) -> str | None:
        try:
            _, c_res = round_trip(request)
        except (OSError, ssl.SSLError, ValueError) as exc:
            return f"request failed, not ready yet: {type(exc).__name__}: {exc} (after {elapsed:.1f}s)"
        if is_timeout_error(c_res.status_code):
            return f"answered {c_res.status_code}, not ready yet (after {elapsed:.1f}s)"
        assert c_res.status_code != 200, f"request {request.path} should fail, answered 200 instead"
        return None
    await_convergence(check, timeouts)


def make_tls_request_and_expect_eventually_consistent_failure_response(
        address: str, server_certificate: bytes, server_name: str, expected: ExpectedResponse,
        timeouts: Timeouts = TIMEOUTS, client_certificate: bytes = b"", client_key: bytes = b"") -> None:
    """tls.MakeTLSRequestAndExpectEventuallyConsistentFailureResponse: until the request fails
    (any error before a response) consistently; an answer, whatever its status, is not a failure."""
    request = _tls_request(expected, address, server_certificate, client_certificate, client_key, server_name)

    def check(elapsed: float) -> str | None:
        try:
            round_trip(request)
        except (OSError, ssl.SSLError, ValueError):
            return None
        return f"request unexpectedly succeeded, not ready yet (after {elapsed:.1f}s)"
    await_convergence(check, timeouts)
    _certificate_was_presented(request)


# -- test cases side by side (Go's t.Parallel subtests) ----------------------------------------


def run_cases(cases: list[tuple[str, Callable[[], None]]], parallel: bool = True, at_once: int = 16) -> None:
    """Run each (name, fn), ``at_once`` side by side (or one by one); all of them, like Go
    subtests, then fail naming every failed one."""
    failures = []
    if parallel and len(cases) > 1:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(at_once, len(cases))) as pool:
            futures = {pool.submit(fn): name for name, fn in cases}
            for future in futures:
                try:
                    future.result()
                except AssertionError as exc:
                    failures.append(f"{futures[future]}: {exc}")
    else:
        for name, fn in cases:
            try:
                fn()
            except AssertionError as exc:
                failures.append(f"{name}: {exc}")
    if failures:
        raise AssertionError(f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures))


def expect_responses(address: str, cases: list[ExpectedResponse], parallel: bool = True) -> None:
    """The suite's usual loop: each case through MakeRequestAndExpectEventuallyConsistentResponse."""
    run_cases([(tc.case_name(i), lambda tc=tc: make_request_and_expect_eventually_consistent_response(address, tc))
               for i, tc in enumerate(cases)], parallel)


# -- weighted distribution (conformance/utils/weight) -------------------------------------------

MAX_WEIGHT_TEST_RETRIES = 10


def extract_backend_name(pod: str) -> str:
    """Pod names are {backend}-{deployment hash}-{pod hash}: drop the last two parts."""
    parts = pod.split("-")
    return pod if len(parts) < 3 else "-".join(parts[:-2])


def add_entropy(expected: ExpectedResponse) -> ExpectedResponse:
    """AddEntropy: half of the requests get a random X-Jitter header (replacing the headers)."""
    out = replace(expected, request=replace(expected.request))
    if secrets.randbelow(2):
        out.request.headers = {"X-Jitter": str(secrets.randbelow(10000))}
    return out


def test_weighted_distribution(send: Callable[[], str], expected_weights: dict[str, float]) -> str | None:
    """TestWeightedDistribution: 500 requests, 10 at a time, each backend within 5 points."""
    total, at_once, tolerance = 500, 10, 0.05
    seen: dict[str, float] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=at_once) as pool:
        futures = [pool.submit(send) for _ in range(total)]
        try:
            pods = [f.result() for f in futures]
        except (AssertionError, OSError, ssl.SSLError, ValueError) as exc:
            return f"error while sending requests: {exc}"
    for pod in pods:
        backend = extract_backend_name(pod)
        if backend not in expected_weights:
            return f"request was handled by an unexpected pod {pod!r} (extracted backend: {backend!r})"
        seen[backend] = seen.get(backend, 0) + 1
    errors = []
    active = sum(1 for w in expected_weights.values() if w > 0)
    if len(seen) != active:
        errors.append(f"expected {active} backends to receive traffic, but got {len(seen)}")
    for backend, want in expected_weights.items():
        if backend not in seen and want != 0:
            errors.append(f"expect traffic to hit backend {backend!r} - but none was received")
            continue
        got = seen.get(backend, 0) / total
        if math.fabs(got - want) > tolerance:
            errors.append(f"backend {backend!r} weighted traffic of {got} not within tolerance {want} (+/-{tolerance})")
    return "; ".join(sorted(errors)) or None


test_weighted_distribution.__test__ = False     # a helper, not a pytest test


# -- mirrored requests (conformance/utils/http/mirror.go) ---------------------------------------


def mirror_log_regexp(path: str) -> re.Pattern:
    """GetMirrorLogRegexp: the echo server's log line for a request made to ``path``."""
    return re.compile(f"Echoing back request made to {re.escape(path)} to client")


def expect_mirrored_request(logs: Callable[[str, str], list[str]], mirrored_to: list[MirroredBackend],
                            path: str, timeouts: Timeouts = TIMEOUTS) -> Callable[[], None]:
    """ExpectMirroredRequest: started before the requests, a watcher per mirror backend reads its
    pods' logs (``logs(namespace, name)``) every second, for up to ``request`` seconds, until a
    line shows ``path``; the returned function waits for them and fails naming those that saw
    nothing."""
    for i, mirror in enumerate(mirrored_to):
        if not mirror.name:
            raise AssertionError(f"Mirrored BackendRef[{i}].Name wasn't provided in the testcase")
    pattern = mirror_log_regexp(path)
    results: dict[str, bool] = {}
    started = threading.Barrier(len(mirrored_to) + 1)

    def watch(mirror: MirroredBackend) -> None:
        deadline = time.monotonic() + timeouts.request
        first = True
        while True:
            found = any(pattern.search(line) for line in logs(mirror.namespace, mirror.name))
            if first:
                first = False
                started.wait()
            if found or time.monotonic() > deadline:
                results[f"{mirror.namespace}/{mirror.name}"] = found
                return
            time.sleep(1.0)

    threads = [threading.Thread(target=watch, args=(m,), daemon=True) for m in mirrored_to]
    for t in threads:
        t.start()
    started.wait(timeout=timeouts.request)

    def wait() -> None:
        for t in threads:
            t.join()
        missing = [name for name, found in results.items() if not found]
        if missing:
            raise AssertionError(f"Couldn't find mirrored request {path!r} in the logs of {missing}")
    return wait
