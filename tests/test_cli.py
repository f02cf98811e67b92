"""The ``gateway`` console commands as a person types them, against a real gateway process.

Each command is a real ``python -m gateway ...`` process talking to the admin API over HTTP.
"""
from __future__ import annotations

import os
import subprocess
import time

import pytest
import yaml

from support import PYTHON, REPO, GatewayProcess, free_port, start_backend

pytestmark = pytest.mark.timeout(90)


def gateway_cli(*args: str, admin: str | None = None, env: dict | None = None,
                timeout: float = 30.0) -> subprocess.CompletedProcess:
    argv = [PYTHON, "-m", "gateway", *args]
    if admin is not None:
        argv += ["--admin", admin]
    return subprocess.run(argv, cwd=str(REPO), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def backend_c():
    backend = start_backend("127.0.0.4", "zone-c", "httpbin-c-0")
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, backend_a, backend_b):
    port = free_port()
    config = {
        "admin": f"127.0.0.1:{port}",
        "sources": [
            {"name": "zone-a", "type": "static",
             "services": [{"name": "httpbin", "endpoints": [backend_a.address]}]},
            {"name": "zone-b", "type": "static",
             "services": [{"name": "httpbin", "endpoints": [backend_b.address]}]},
        ],
        "services": [{"name": "httpbin", "port": 8000}],
        "routes": [{"name": "test", "match": {"path": {"prefix": "/test"}}, "service": "httpbin"}],
    }
    g = GatewayProcess(config, tmp_path_factory.mktemp("cli"), "cli").start()
    g.admin_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while gateway_cli("status", admin=g.admin_url).returncode != 0:
        assert time.monotonic() < deadline, g.output()[-2000:]
        time.sleep(0.1)
    yield g
    g.stop()


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_status(gw):
    out = ok(gateway_cli("status", admin=gw.admin_url))
    assert "ready" in out and str(gw.config_path) in out and "snapshot  v" in out


def test_status_uses_GATEWAY_ADMIN(gw):
    out = ok(gateway_cli("status", env={"GATEWAY_ADMIN": gw.admin_url}))
    assert str(gw.config_path) in out


def test_unreachable_admin_exits_2():
    result = gateway_cli("services", admin=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2 and "cannot reach the admin API" in result.stderr


def test_sources_services_routes_tables(gw, backend_a, backend_b):
    with gw.client() as c:
        for _ in range(4):
            assert c.request("GET", "/test").status == 200
    out = ok(gateway_cli("sources", admin=gw.admin_url))
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "TYPE", "WEIGHT", "STATE"]
    assert any(line.split()[:4] == ["zone-a", "static", "100", "synced"] for line in lines)

    out = ok(gateway_cli("services", admin=gw.admin_url))
    assert out.splitlines()[0].startswith("default/httpbin  port 8000  serving 2/2")
    rows = {line.split()[1]: line.split() for line in out.splitlines()[2:]}
    assert rows[backend_a.address][0] == "zone-a" and rows[backend_b.address][0] == "zone-b"
    for address in (backend_a.address, backend_b.address):
        assert rows[address][3:6] == ["healthy", "yes", "50.0%"]

    out = ok(gateway_cli("routes", admin=gw.admin_url))
    assert out.splitlines()[1].split()[:3] == ["test", "/test*", "default/httpbin"]


def test_explain(gw, backend_a, backend_b):
    out = ok(gateway_cli("explain", "/test/x", "--host", "example.com", admin=gw.admin_url))
    assert "route    test (#0: /test*)" in out
    assert "service  default/httpbin  share 100.0%" in out
    assert f"{backend_a.address}" in out and "share  50.0%" in out
    out = ok(gateway_cli("explain", "/nowhere", admin=gw.admin_url))
    assert "no route" in out


def test_route_add_remove(gw):
    ok(gateway_cli("route", "add", "extra", "--prefix", "/extra", "--service", "default/httpbin",
                   "--rewrite", "/anything", admin=gw.admin_url))
    with gw.client() as c:
        r = c.request("GET", "/extra/y")
        assert r.status == 200 and r.json()["path"] == "/anything/y"
    assert "extra" in [r["name"] for r in yaml.safe_load(gw.config_path.read_text())["routes"]]
    assert "/extra*" in ok(gateway_cli("routes", admin=gw.admin_url))

    ok(gateway_cli("route", "remove", "extra", admin=gw.admin_url))
    with gw.client() as c:
        assert c.request("GET", "/extra/y").status == 404


def test_refused_change_prints_key_path_and_exits_1(gw):
    text = gw.config_path.read_text()
    result = gateway_cli("route", "add", "bad", "--prefix", "no-slash", "--service", "default/httpbin",
                         admin=gw.admin_url)
    assert result.returncode == 1
    assert 'routes[1].match.path.prefix: must start with "/"' in result.stderr
    result = gateway_cli("route", "remove", "test", "--if-match", "0123456789abcdef", admin=gw.admin_url)
    assert result.returncode == 1 and "(409)" in result.stderr
    assert gw.config_path.read_text() == text


def test_source_and_service_add_remove(gw, backend_c):
    ok(gateway_cli("source", "add", "--name", "zone-c", "--type", "static", "--service", "default/httpbin",
                   "--endpoint", backend_c.address, "--weight", "50", admin=gw.admin_url))
    out = ok(gateway_cli("services", admin=gw.admin_url))
    row = next(line.split() for line in out.splitlines() if backend_c.address in line)
    assert row[:3] == ["zone-c", backend_c.address, "50"]
    # weights 100 : 100 : 50
    assert row[5] == "20.0%"
    assert "zone-c" in ok(gateway_cli("sources", admin=gw.admin_url))

    ok(gateway_cli("source", "remove", "zone-c", admin=gw.admin_url))
    assert backend_c.address not in ok(gateway_cli("services", admin=gw.admin_url))

    ok(gateway_cli("service", "add", "apps/other", "--port", "8000", "--source", "zone-a", admin=gw.admin_url))
    out = ok(gateway_cli("services", "apps/other", admin=gw.admin_url))
    assert out.startswith("apps/other  port 8000  serving 0/0")
    assert "apps/other not found in this source" in out
    ok(gateway_cli("service", "remove", "apps/other", admin=gw.admin_url))
    assert "apps/other" not in ok(gateway_cli("services", admin=gw.admin_url))


def test_kubernetes_source_add_refused_for_missing_kubeconfig(gw, tmp_path):
    result = gateway_cli("source", "add", "--name", "remote", "--kubeconfig", str(tmp_path / "missing.yaml"),
                         admin=gw.admin_url)
    assert result.returncode == 1
    assert f"sources[2].kubeconfig: file not found: {tmp_path / 'missing.yaml'}" in result.stderr
