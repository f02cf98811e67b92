"""Admin API scopes and the dashboard's sign-in (gateway/admin/auth.py), on a real gateway
process over real sockets: three tokens (write, read, metrics), a login that turns a pasted
token into a session cookie, CSRF protection of changes made with that cookie, logout,
expiry, and HTTPS for the admin API (the cookie is then Secure).

Bearer clients are covered by tests/test_admin_auth.py (they keep working as before); the
browser itself by tests/test_dashboard.py.
"""
from __future__ import annotations

import http.client
import secrets
import ssl
import time
from pathlib import Path

import orjson
import pytest
import yaml

from support import AdminClient, GatewayProcess, free_port, static_source, wait_listening

pytestmark = pytest.mark.timeout(60)

WRITE = "write-" + secrets.token_urlsafe(24)
READ = "read-" + secrets.token_urlsafe(24)
METRICS = "metrics-" + secrets.token_urlsafe(24)
NEW_ROUTE = {"name": "added", "match": {"path": {"prefix": "/added"}}, "service": "httpbin"}


def base_config(backend_address: str) -> dict:
    return {
        "sources": [static_source("zone-a", {"httpbin": [backend_address]})],
        "services": [{"name": "httpbin", "port": 80}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}],
    }


def token_files(work: Path, **tokens: str) -> dict:
    out = {}
    for key, token in tokens.items():
        path = work / key
        path.write_text(token + "\n")
        out[key] = str(path)
    return out


class Admin(AdminClient):
    """The admin API as the tests of sign-in see it: raw bodies, over HTTP or HTTPS."""

    def __init__(self, gw: GatewayProcess, port: int, context: ssl.SSLContext | None = None) -> None:
        super().__init__(port, context, decode_json=False)
        self.gw = gw

    @property
    def origin(self) -> str:
        return f"{'https' if self.context else 'http'}://127.0.0.1:{self.port}"

    def login(self, token: str) -> tuple[str, str]:
        """(cookie header value, CSRF token) of a new session."""
        status, headers, body = self.request("POST", "/login", {"token": token}, {"Origin": self.origin})
        assert status == 200, body
        cookie = headers["set-cookie"].split(";")[0]
        status, _, body = self.request("GET", "/session", headers={"Cookie": cookie})
        assert status == 200, body
        return cookie, orjson.loads(body)["csrf_token"]


def start(config: dict, work: Path, name: str, port: int, context=None) -> Admin:
    gw = GatewayProcess(config, work, name).start()
    try:
        wait_listening("127.0.0.1", port, 10, gw.proc)
    except BaseException:
        gw.stop()
        raise
    return Admin(gw, port, context)


@pytest.fixture(scope="module")
def admin(backend_a, tmp_path_factory):
    work = tmp_path_factory.mktemp("admin-login")
    port = free_port("0.0.0.0")
    files = token_files(work, token_file=WRITE, read_token_file=READ, metrics_token_file=METRICS)
    a = start({**base_config(backend_a.address), "admin": {"listen": f"0.0.0.0:{port}", **files}},
              work, "login", port)
    yield a
    a.gw.stop()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def error(body: bytes) -> str:
    return orjson.loads(body)["error"]


# -- scopes with bearer tokens ----------------------------------------------------------------


def test_read_token_reads_and_cannot_change(admin):
    for path in ("/status", "/routes", "/config", "/metrics", "/", "/static/app.js"):
        status, _, body = admin.request("GET", path, headers=bearer(READ))
        assert status == 200, (path, body[:200])
    before = admin.gw.config_path.read_bytes()
    for method, path, body in [("POST", "/routes", NEW_ROUTE), ("DELETE", "/routes/all", None),
                               ("POST", "/reload", None), ("POST", "/logs/reopen", None)]:
        status, _, answer = admin.request(method, path, body, bearer(READ))
        assert status == 403, (method, path, answer)
        assert error(answer) == f"read-only access (signed in with the read token): {method} {path} needs the write token"
    assert admin.gw.config_path.read_bytes() == before


def test_metrics_token_reads_metrics_only(admin):
    status, headers, body = admin.request("GET", "/metrics", headers=bearer(METRICS))
    assert status == 200 and headers["content-type"].startswith("text/plain") and b"gateway_" in body
    for method, path in [("GET", "/status"), ("GET", "/config"), ("GET", "/"), ("POST", "/reload")]:
        status, _, body = admin.request(method, path, headers=bearer(METRICS))
        assert status == 403 and error(body) == "the metrics token reads /metrics only", (path, body)


def test_the_write_token_does_everything(admin):
    status, _, body = admin.request("POST", "/routes?at=0", NEW_ROUTE, bearer(WRITE))
    assert status == 201, body
    status, _, body = admin.request("DELETE", "/routes/added", headers=bearer(WRITE))
    assert status == 200, body


def test_config_names_the_scopes_never_the_tokens(admin):
    status, _, body = admin.request("GET", "/config", headers=bearer(WRITE))
    assert status == 200
    for token in (WRITE, READ, METRICS):
        assert token.encode() not in body
    config = orjson.loads(body)
    assert config["admin_scopes"] == ["write", "read", "metrics"] and config["admin_session_ttl"] == 43200


# -- the login --------------------------------------------------------------------------------


def test_a_browser_is_sent_to_the_login_page_which_is_open(admin):
    status, headers, _ = admin.request("GET", "/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert status == 303 and headers["location"] == "/login"
    for path in ("/login", "/static/login.js", "/static/style.css"):
        status, headers, body = admin.request("GET", path)
        assert status == 200, path
        assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in headers["content-security-policy"]
    status, _, _ = admin.request("GET", "/static/app.js")     # the dashboard itself is not open
    assert status == 401


def test_login_sets_a_strict_httponly_session_cookie(admin):
    status, headers, body = admin.request("POST", "/login", {"token": WRITE}, {"Origin": admin.origin})
    assert status == 200 and orjson.loads(body)["scope"] == "write", body
    cookie = headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    session_id = rest.split(";")[0]
    attrs = {a.strip().split("=")[0] for a in cookie.split(";")[1:]}
    assert name == "gateway_session" and len(session_id) >= 43      # 32 random bytes, base64url
    assert {"HttpOnly", "SameSite", "Path", "Max-Age"} <= attrs and "Secure" not in attrs   # plain HTTP
    assert "SameSite=Strict" in cookie and "Max-Age=43200" in cookie
    assert WRITE not in cookie
    for path in ("/", "/static/app.js", "/status", "/services"):
        status, _, _ = admin.request("GET", path, headers={"Cookie": f"gateway_session={session_id}"})
        assert status == 200, path
    status, _, body = admin.request("GET", "/session", headers={"Cookie": f"gateway_session={session_id}"})
    info = orjson.loads(body)
    assert info["scope"] == "write" and info["via"] == "session" and len(info["csrf_token"]) >= 43
    assert 43100 < info["expires_in_s"] <= 43200


@pytest.mark.parametrize("token,status,message", [
    ("not-the-token-but-long-enough", 401, "wrong token"),
    (WRITE + "x", 401, "wrong token"),
    (METRICS, 401, "the metrics token reads /metrics only: sign in with the write or read token"),
])
def test_login_with_a_wrong_token_is_refused(admin, token, status, message):
    got, headers, body = admin.request("POST", "/login", {"token": token}, {"Origin": admin.origin})
    assert (got, error(body)) == (status, message)
    assert "set-cookie" not in headers


def test_login_from_another_site_is_refused(admin):
    status, headers, body = admin.request("POST", "/login", {"token": WRITE}, {"Origin": "http://evil.test"})
    assert status == 403 and "cross-origin request refused" in error(body)
    assert "set-cookie" not in headers


def test_a_made_up_session_is_refused(admin):
    for cookie in ("gateway_session=" + secrets.token_urlsafe(32), "gateway_session=", "other=1"):
        status, _, body = admin.request("GET", "/status", headers={"Cookie": cookie})
        assert status == 401, cookie


# -- CSRF -------------------------------------------------------------------------------------


def test_changes_with_a_cookie_need_the_csrf_token_and_the_same_origin(admin):
    cookie, csrf = admin.login(WRITE)
    before = admin.gw.config_path.read_bytes()
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""},
                    {"X-CSRF-Token": csrf, "Origin": "http://evil.test"},
                    {"X-CSRF-Token": csrf, "Origin": f"http://127.0.0.1:{admin.port + 1}"},
                    {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}):
        status, _, body = admin.request("POST", "/routes", NEW_ROUTE, {"Cookie": cookie, **headers})
        assert status == 403, (headers, body)
        assert "CSRF" in error(body) or "cross-" in error(body), body
    assert admin.gw.config_path.read_bytes() == before
    # Reads need no CSRF token; the same change with it, from the same origin, goes through.
    assert admin.request("GET", "/routes", headers={"Cookie": cookie})[0] == 200
    status, _, body = admin.request("POST", "/routes?at=0", NEW_ROUTE,
                                    {"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": admin.origin,
                                     "Sec-Fetch-Site": "same-origin"})
    assert status == 201, body
    status, _, body = admin.request("DELETE", "/routes/added", headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert status == 200, body


def test_another_sessions_csrf_token_does_not_do(admin):
    cookie, _ = admin.login(WRITE)
    _, other_csrf = admin.login(WRITE)
    status, _, _ = admin.request("POST", "/reload", headers={"Cookie": cookie, "X-CSRF-Token": other_csrf})
    assert status == 403


def test_a_read_session_reads_and_gets_403_on_changes(admin):
    cookie, csrf = admin.login(READ)
    assert admin.request("GET", "/services", headers={"Cookie": cookie})[0] == 200
    status, _, body = admin.request("DELETE", "/routes/all", headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert status == 403
    assert error(body) == "read-only access (signed in with the read token): DELETE /routes/all needs the write token"


def test_logout_ends_the_session(admin):
    cookie, csrf = admin.login(READ)
    status, _, _ = admin.request("POST", "/logout", headers={"Cookie": cookie})     # no CSRF token
    assert status == 403
    status, headers, _ = admin.request("POST", "/logout", headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert status == 200 and "Max-Age=0" in headers["set-cookie"]
    assert admin.request("GET", "/status", headers={"Cookie": cookie})[0] == 401


def test_a_bearer_token_beats_a_cookie(admin):
    """A wrong bearer token is refused even beside a valid cookie, and a bearer client needs
    no CSRF token (nothing a browser sends by itself)."""
    cookie, _ = admin.login(WRITE)
    status, _, _ = admin.request("GET", "/status", headers={"Cookie": cookie, **bearer("wrong-token-long-enough")})
    assert status == 401
    status, _, body = admin.request("POST", "/reload", headers=bearer(WRITE))
    assert status == 200, body


# -- expiry, HTTPS, validation ----------------------------------------------------------------


def test_a_session_expires(backend_a, tmp_path):
    port = free_port()
    files = token_files(tmp_path, token_file=WRITE)
    a = start({**base_config(backend_a.address),
               "admin": {"listen": f"127.0.0.1:{port}", "session_ttl": "1s", **files}}, tmp_path, "ttl", port)
    try:
        cookie, _ = a.login(WRITE)
        assert a.request("GET", "/status", headers={"Cookie": cookie})[0] == 200
        time.sleep(1.2)
        assert a.request("GET", "/status", headers={"Cookie": cookie})[0] == 401
    finally:
        a.gw.stop()


def test_over_https_the_cookie_is_secure(backend_a, tmp_path):
    from support import Pki
    pki = Pki(tmp_path / "pki")
    pair = pki.leaf("admin.test")
    port = free_port()
    files = token_files(tmp_path, token_file=WRITE)
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.check_hostname = False                # the certificate names admin.test, we dial 127.0.0.1
    a = start({**base_config(backend_a.address),
               "admin": {"listen": f"127.0.0.1:{port}", "tls": {"cert": str(pair.cert), "key": str(pair.key)},
                         **files}}, tmp_path, "https", port, context)
    try:
        status, headers, body = a.request("POST", "/login", {"token": WRITE}, {"Origin": a.origin})
        assert status == 200, body
        assert "; Secure" in headers["set-cookie"]
        cookie, csrf = a.login(WRITE)
        # The origin is https://...: the plain-http one of the same host and port is another.
        status, _, _ = a.request("POST", "/reload", headers={"Cookie": cookie, "X-CSRF-Token": csrf,
                                                             "Origin": f"http://127.0.0.1:{port}"})
        assert status == 403
        status, _, _ = a.request("POST", "/reload", headers={"Cookie": cookie, "X-CSRF-Token": csrf,
                                                             "Origin": a.origin})
        assert status == 200
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            Admin(a.gw, port).request("GET", "/healthz")        # no plain HTTP on that port
    finally:
        a.gw.stop()


def validate(admin_value, tmp_path: Path) -> str:
    import subprocess

    from support import PYTHON, REPO
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"listen": "127.0.0.1:8080", "admin": admin_value}))
    result = subprocess.run([PYTHON, "-m", "gateway", "validate", "--config", str(path)], cwd=str(REPO),
                            capture_output=True, text=True, timeout=30)
    return result.stderr if result.returncode else "ok"


def test_validation_names_the_key(tmp_path):
    files = token_files(tmp_path, token_file=WRITE, read_token_file=READ, metrics_token_file=METRICS,
                        same=WRITE, short="short")
    listen = "0.0.0.0:9901"
    assert validate({"listen": listen, "token_file": files["token_file"], "read_token_file": files["read_token_file"],
                     "metrics_token_file": files["metrics_token_file"], "session_ttl": "30m"}, tmp_path) == "ok"
    out = validate({"listen": "127.0.0.1:9901", "read_token_file": files["read_token_file"]}, tmp_path)
    assert "admin.read_token_file: needs admin.token_file (the write token) beside it" in out, out
    out = validate({"listen": listen, "token_file": files["token_file"], "read_token_file": files["same"]}, tmp_path)
    assert "admin.read_token_file: the same token as admin.token_file: give each scope its own" in out, out
    out = validate({"listen": listen, "token_file": files["token_file"], "metrics_token_file": files["short"]}, tmp_path)
    assert "admin.metrics_token_file: the token must be at least 16 characters" in out, out
    out = validate({"listen": listen, "token_file": files["token_file"], "session_ttl": "soon"}, tmp_path)
    assert "admin.session_ttl:" in out, out
    out = validate({"listen": listen, "token_file": files["token_file"], "tls": {"cert": files["short"]}}, tmp_path)
    assert "admin.tls: missing key" in out or "admin.tls.key" in out, out
    out = validate({"listen": listen, "token_file": files["token_file"],
                    "tls": {"cert": files["short"], "key": files["short"]}}, tmp_path)
    assert "admin.tls: cannot load the certificate and key" in out, out
    out = validate({"listen": listen, "token_file": files["token_file"], "tokenfile": "x"}, tmp_path)
    assert 'admin: unknown key "tokenfile" (did you mean "token_file"?)' in out, out
