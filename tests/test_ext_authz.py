"""External authorization (``routes[].auth.ext_authz``) against a real HTTP authorization
service (a stdlib server in this process), through a real gateway with ``workers: 2``:

* allowed (2xx): the request goes on with the chosen answer headers set (a client's own
  copy replaced); the service saw the method, the path and query after its URL's path, and
  only the chosen headers;
* denied: the client gets the service's status, body and WWW-Authenticate / Location; the
  access log and /metrics say so;
* the service away or too slow: "closed" answers 403, "open" lets the request through.
"""
from __future__ import annotations

import http.server
import re
import threading
import time

import pytest

from support import free_port, start_backend, start_with_admin, static_source, wait_until

pytestmark = pytest.mark.timeout(90)


class AuthzService:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict]] = []
        self.delay = 0.0
        self.opened = 0
        self.closed = 0                 # connections the service ended (idle for 0.3 s)
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 0.3

            def setup(self):
                super().setup()
                service.opened += 1

            def finish(self):
                super().finish()
                service.closed += 1

            def do_GET(self):           # noqa: N802 - the stdlib's name
                service.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                if service.delay:
                    time.sleep(service.delay)
                if self.headers.get("Authorization") == "Bearer good":
                    self.answer(200, b"", [("X-User", "alice"), ("X-Internal", "not forwarded")])
                elif "/login-first" in self.path:
                    self.answer(302, b"", [("Location", "https://login.example/")])
                else:
                    self.answer(401, b"go away", [("WWW-Authenticate", 'Bearer realm="authz"')])

            do_POST = do_GET

            def answer(self, status, body, headers):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/check"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    service = AuthzService()
    backend = start_backend("127.0.0.2", "zone-a", "authz-0")
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}/check"

    def route(name, prefix, **authz):
        return {"name": name, "match": {"path": {"prefix": prefix}}, "service": "web",
                "auth": {"ext_authz": {"headers": ["authorization"], "forward_headers": ["x-user"], **authz}}}
    config = {
        "workers": 2,
        "sources": [static_source("zone-a", {"web": [backend.address]})],
        "services": [{"name": "web", "port": 80}],
        "routes": [route("ext", "/ext", url=service.url, timeout="300ms"),
                   route("closed", "/closed", url=dead),
                   route("open", "/open", url=dead, failure_mode="open"),
                   {"name": "rest", "match": {"path": {"prefix": "/"}}, "service": "web"}],
    }
    proc, admin = start_with_admin(config, tmp_path_factory.mktemp("authz"), "authz")
    proc.admin = admin
    yield proc, service
    proc.stop()
    backend.stop()
    service.stop()


def get(g, path: str, headers: dict | None = None, method: str = "GET", body: bytes | None = None):
    with g.client() as c:
        return c.request(method, path, headers or {}, body)


def test_allowed_goes_on_with_the_services_headers(gw):
    g, service = gw
    before = len(service.seen)
    r = get(g, "/ext/orders?id=7", {"Authorization": "Bearer good", "X-User": "mallory", "X-Secret": "s"})
    assert r.status == 200, r.body
    assert r.upstream_saw("x-user") == ["alice"] and r.upstream_saw("x-internal") == []
    method, path, headers = service.seen[before]
    assert (method, path) == ("GET", "/check/ext/orders?id=7")
    assert headers["authorization"] == "Bearer good" and "x-secret" not in headers and "x-user" not in headers


def test_a_body_waits_for_the_verdict_and_goes_on(gw):
    g, _ = gw
    r = get(g, "/ext/upload", {"Authorization": "Bearer good"}, "POST", b"x" * 50_000)
    assert r.status == 200 and r.json()["method"] == "POST"


def test_denied_passes_the_services_answer_on(gw):
    g, _ = gw
    r = get(g, "/ext/orders", {"Authorization": "Bearer bad", "X-Request-Id": "authz-denied"})
    assert r.status == 401 and r.body == b"go away\n"
    assert r.header("www-authenticate") == 'Bearer realm="authz"'
    r = get(g, "/ext/login-first")
    assert r.status == 302 and r.header("location") == "https://login.example/"
    entry = g.log.by_ids(["authz-denied"])["authz-denied"]
    assert entry["error"] == "denied by the authorization service: 401 (route ext)", entry

    def unauthenticated() -> float:
        text = g.admin.request("GET", "/metrics")[2].decode()
        found = re.search(r'gateway_route_denied_total\{route="ext",reason="unauthenticated"\} (\S+)', text)
        return float(found[1]) if found else 0.0
    wait_until(lambda: unauthenticated() >= 1, timeout=10, message="the denial counted")


def test_the_service_away_follows_the_failure_mode(gw):
    g, _ = gw
    r = get(g, "/closed/x", {"X-Request-Id": "authz-closed"})
    assert r.status == 403
    assert g.log.by_ids(["authz-closed"])["authz-closed"]["error"].startswith(
        "forbidden: the authorization service did not answer")
    r = get(g, "/open/x", {"X-User": "mallory"})
    assert r.status == 200 and r.upstream_saw("x-user") == []


def test_connections_the_service_closes_when_idle_are_no_failures(gw):
    g, service = gw
    good = {"Authorization": "Bearer good"}
    assert get(g, "/ext/a", good).status == 200
    wait_until(lambda: service.closed == service.opened, timeout=10,
               message="the service closing every idle connection")
    assert [get(g, "/ext/b", good).status for _ in range(6)] == [200] * 6


def test_a_slow_service_is_a_failure(gw):
    g, service = gw
    service.delay = 1.0
    try:
        # A 200 would mean the gateway waited out the service's 1 s; the 300 ms timeout gives 403.
        r = get(g, "/ext/slow", {"Authorization": "Bearer good"})
        assert r.status == 403
    finally:
        service.delay = 0.0
    # The timed-out connection was dropped; the next check opens another.
    wait_until(lambda: get(g, "/ext/again", {"Authorization": "Bearer good"}).status == 200, timeout=10,
               message="checks answered again")
