"""The admin API's bearer token: required off loopback, checked on every endpoint but the
probes (/healthz, /ready), never shown in /config or the log; the CLI sends GATEWAY_ADMIN_TOKEN.

Real gateway processes: one with ``admin: {listen: 0.0.0.0:P, token_file: F}``, one with the
admin API on 127.0.0.1 and no token (as before tokens existed).
"""
from __future__ import annotations

import http.client
import os
import secrets
import subprocess
from pathlib import Path

import orjson
import pytest
import yaml

from support import PYTHON, REPO, GatewayProcess, free_port, static_source, wait_listening

pytestmark = pytest.mark.timeout(60)

TOKEN = "gw-" + secrets.token_urlsafe(24)       # unique text to look for in outputs


def request(port: int, method: str, path: str, body=None, headers: dict | None = None):
    """(status, headers, raw body) of one request to the admin API on 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = orjson.dumps(body) if body is not None else None
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def base_config(backend_address: str) -> dict:
    return {
        "sources": [static_source("zone-a", {"httpbin": [backend_address]})],
        "services": [{"name": "httpbin", "port": 80}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}],
    }


class AdminGateway:
    def __init__(self, gw: GatewayProcess, port: int) -> None:
        self.gw, self.port = gw, port

    def request(self, method: str, path: str, body=None, headers: dict | None = None):
        return request(self.port, method, path, body, headers)


def start(config: dict, workdir: Path, name: str, admin_port: int) -> AdminGateway:
    gw = GatewayProcess(config, workdir, name).start()
    try:
        wait_listening("127.0.0.1", admin_port, 10, gw.proc)
    except BaseException:
        gw.stop()
        raise
    return AdminGateway(gw, admin_port)


@pytest.fixture(scope="module")
def secured(backend_a, tmp_path_factory):
    work = tmp_path_factory.mktemp("admin-auth")
    token_file = work / "admin-token"
    token_file.write_text(TOKEN + "\n")                 # a trailing newline, as `echo` writes it
    port = free_port("0.0.0.0")
    config = {**base_config(backend_a.address),
              "admin": {"listen": f"0.0.0.0:{port}", "token_file": str(token_file)}}
    admin = start(config, work, "secured", port)
    yield admin
    admin.gw.stop()


# Every endpoint of gateway/admin/server.py, with a body where one is needed.
NEW_ROUTE = {"name": "added", "match": {"path": {"prefix": "/added"}}, "service": "httpbin"}
READS = ["/", "/static/app.js", "/status", "/config", "/metrics", "/traffic", "/debug/route?path=/x",
         "/sources", "/services", "/services/default/httpbin", "/routes", "/routes/all", "/tls-routes"]
CHANGES = [
    ("POST", "/reload", None),
    ("POST", "/sources", {"name": "zone-z", "type": "static",
                          "services": [{"name": "httpbin", "endpoints": ["127.0.0.9:80"]}]}),
    ("PUT", "/sources/zone-a", {"name": "zone-a", "type": "static",
                                "services": [{"name": "httpbin", "endpoints": ["127.0.0.9:80"]}]}),
    ("DELETE", "/sources/zone-a", None),
    ("POST", "/services", {"name": "other", "port": 80}),
    ("PUT", "/services/default/httpbin", {"name": "httpbin", "port": 81}),
    ("DELETE", "/services/default/httpbin", None),
    ("POST", "/routes", NEW_ROUTE),
    ("PUT", "/routes/all", {**NEW_ROUTE, "name": "all"}),
    ("DELETE", "/routes/all", None),
]
WRONG = [None, bearer("wrong-token-of-enough-length"), bearer(TOKEN + "x"), bearer(TOKEN[:-1]),
         {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "},
         {"X-Admin-Token": TOKEN}]


@pytest.mark.parametrize("headers", WRONG, ids=lambda h: "none" if h is None else repr(h).replace(TOKEN, "T"))
def test_reads_need_the_token(secured, headers):
    for path in READS + ["/no/such/endpoint"]:
        for method in ("GET", "HEAD"):
            status, _, body = secured.request(method, path, headers=headers)
            assert status == 401, (method, path, status, body[:200])
            if method == "GET":
                assert orjson.loads(body)["error"].startswith("a bearer token is required")


@pytest.mark.parametrize("headers", WRONG, ids=lambda h: "none" if h is None else repr(h).replace(TOKEN, "T"))
def test_changes_need_the_token_and_change_nothing(secured, headers):
    config_before = secured.gw.config_path.read_bytes()
    _, _, routes_before = secured.request("GET", "/routes", headers=bearer(TOKEN))
    _, etag_headers, _ = secured.request("GET", "/config", headers=bearer(TOKEN))
    log_before = secured.gw.output()
    for method, path, body in CHANGES:
        status, _, answer = secured.request(method, path, body, headers=headers)
        assert status == 401, (method, path, status, answer[:200])
    assert secured.gw.config_path.read_bytes() == config_before
    _, _, routes_after = secured.request("GET", "/routes", headers=bearer(TOKEN))
    assert [r["name"] for r in orjson.loads(routes_after)] == [r["name"] for r in orjson.loads(routes_before)]
    _, after_headers, _ = secured.request("GET", "/config", headers=bearer(TOKEN))
    assert after_headers["etag"] == etag_headers["etag"]
    new_log = secured.gw.output()[len(log_before):]
    assert "config changed" not in new_log and "config reloaded" not in new_log, new_log
    with secured.gw.client() as client:                # the data plane still routes as before
        assert client.request("GET", "/anything/still").status == 200


def test_probes_are_open(secured):
    for path in ("/healthz", "/ready"):
        for headers in (None, bearer("wrong-token-of-enough-length")):
            status, _, body = secured.request("GET", path, headers=headers)
            assert status == 200, (path, body)
    assert orjson.loads(secured.request("GET", "/ready")[2])["ready"] is True


def test_everything_answers_with_the_token(secured):
    for path in READS:
        status, _, body = secured.request("GET", path, headers=bearer(TOKEN))
        assert status == 200, (path, status, body[:200])
        assert TOKEN.encode() not in body, path
    # A change with the token goes through, and is undone the same way.
    status, _, body = secured.request("POST", "/routes?at=0", NEW_ROUTE, headers=bearer(TOKEN))
    assert status == 201, body
    assert yaml.safe_load(secured.gw.config_path.read_text())["routes"][0]["name"] == "added"
    status, _, body = secured.request("DELETE", "/routes/added", headers=bearer(TOKEN))
    assert status == 200, body
    status, _, body = secured.request("POST", "/reload", headers=bearer(TOKEN))
    assert status == 200, body


def test_config_and_log_never_show_the_token(secured):
    status, _, body = secured.request("GET", "/config", headers=bearer(TOKEN))
    assert status == 200
    assert TOKEN.encode() not in body
    assert orjson.loads(body)["admin_auth"] == "bearer"
    status, _, body = secured.request("GET", "/status", headers=bearer(TOKEN))
    assert TOKEN.encode() not in body
    secured.request("POST", "/reload", headers=bearer(TOKEN))     # logs the reload
    output = secured.gw.output()
    assert "admin listening" in output and "config reloaded" in output   # the log is there
    assert TOKEN not in output
    assert TOKEN not in secured.gw.log_path.read_text()


# -- the CLI -------------------------------------------------------------------------------------


def cli(port: int, *args: str, token: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_ADMIN_TOKEN", "GATEWAY_ADMIN")}
    if token is not None:
        env["GATEWAY_ADMIN_TOKEN"] = token
    return subprocess.run([PYTHON, "-m", "gateway", *args, "--admin", f"http://127.0.0.1:{port}"],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=30)


def test_cli_sends_the_token_from_the_environment(secured):
    result = cli(secured.port, "routes", token=TOKEN)
    assert result.returncode == 0, result.stderr
    assert "all" in result.stdout
    added = cli(secured.port, "route", "add", "cli-added", "--prefix", "/cli", "--service", "httpbin",
                token=TOKEN)
    assert added.returncode == 0, added.stderr
    removed = cli(secured.port, "route", "remove", "cli-added", token=TOKEN)
    assert removed.returncode == 0, removed.stderr
    assert TOKEN not in result.stdout + result.stderr + added.stdout + added.stderr


@pytest.mark.parametrize("token", [None, "wrong-token-of-enough-length"])
def test_cli_without_the_right_token_fails_clearly(secured, token):
    result = cli(secured.port, "routes", token=token)
    assert result.returncode == 1
    assert "refused (401)" in result.stderr and "bearer token" in result.stderr, result.stderr
    assert result.stdout == ""
    changed = cli(secured.port, "route", "remove", "all", token=token)
    assert changed.returncode == 1 and "401" in changed.stderr
    assert b"name: all" in secured.gw.config_path.read_bytes()


# -- on loopback, no token: as before ------------------------------------------------------------


def test_loopback_admin_without_a_token_works_as_before(backend_a, tmp_path):
    port = free_port()
    config = {**base_config(backend_a.address), "admin": f"127.0.0.1:{port}"}
    admin = start(config, tmp_path, "loopback", port)
    try:
        for path in READS + ["/healthz", "/ready"]:
            status, _, body = admin.request("GET", path)
            assert status == 200, (path, status, body[:200])
        assert orjson.loads(admin.request("GET", "/config")[2])["admin_auth"] == "none"
        status, _, body = admin.request("POST", "/routes?at=0", NEW_ROUTE)
        assert status == 201, body
        assert cli(port, "routes", token=None).returncode == 0
    finally:
        admin.gw.stop()


# -- validation ----------------------------------------------------------------------------------


def validate(admin, tmp_path: Path) -> subprocess.CompletedProcess:
    config = {"listen": "127.0.0.1:8080", "admin": admin,
              "sources": [static_source("zone-a", {"httpbin": ["127.0.0.2:80"]})],
              "services": [{"name": "httpbin", "port": 80}]}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([PYTHON, "-m", "gateway", "validate", "--config", str(path)], cwd=str(REPO),
                          capture_output=True, text=True, timeout=30)


NEEDS_TOKEN = "admin: the admin API on 0.0.0.0 (not loopback) needs a token"


@pytest.mark.parametrize("admin", ["0.0.0.0:9901", {"listen": "0.0.0.0:9901"}])
def test_validate_refuses_an_admin_api_off_loopback_without_a_token(admin, tmp_path):
    result = validate(admin, tmp_path)
    assert result.returncode == 1
    assert NEEDS_TOKEN in result.stderr, result.stderr


def test_validate_refuses_a_short_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("x" * 15 + "\n")
    result = validate({"listen": "0.0.0.0:9901", "token_file": str(token_file)}, tmp_path)
    assert result.returncode == 1
    assert "admin.token_file: the token must be at least 16 characters" in result.stderr, result.stderr
    assert "x" * 15 not in result.stderr + result.stdout
    token_file.write_text("x" * 16 + "\n")
    result = validate({"listen": "0.0.0.0:9901", "token_file": str(token_file)}, tmp_path)
    assert result.returncode == 0, result.stderr


def test_validate_refuses_a_missing_token_file(tmp_path):
    missing = tmp_path / "no-token"
    result = validate({"listen": "0.0.0.0:9901", "token_file": str(missing)}, tmp_path)
    assert result.returncode == 1
    assert f"admin.token_file: file not found: {missing}" in result.stderr, result.stderr
