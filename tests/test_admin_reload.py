"""``admin:`` follows a config reload (SIGHUP) with no restart: a new listen address is bound
and the old one let go, new tokens are accepted and old ones refused (and the sessions they
opened end), a bad admin section is refused with the running admin API kept, and
``admin: off`` / back on stops and starts it.  A real gateway process, with workers: 2.
"""
from __future__ import annotations

import os
import signal
import socket

import orjson
import pytest
import yaml

from support import GatewayProcess, free_port, static_source, wait_listening, wait_until
from test_admin_login import Admin, bearer

pytestmark = pytest.mark.timeout(60)

OLD = "old-token-" + "a" * 20
NEW = "new-token-" + "b" * 20
READ = "read-token-" + "c" * 20


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def reload_with(gw: GatewayProcess, admin) -> None:
    cfg = yaml.safe_load(gw.config_path.read_text())
    cfg["admin"] = admin
    gw.config_path.write_text(yaml.safe_dump(cfg))
    mark = gw.output().count("config reloaded") + gw.output().count("reload refused")
    os.kill(gw.pid, signal.SIGHUP)
    wait_until(lambda: gw.output().count("config reloaded") + gw.output().count("reload refused") > mark,
               10, "the reload")


def test_admin_address_and_tokens_follow_a_reload(backend_a, tmp_path):
    (tmp_path / "old").write_text(OLD + "\n")
    (tmp_path / "new").write_text(NEW + "\n")
    (tmp_path / "read").write_text(READ + "\n")
    (tmp_path / "short").write_text("short\n")
    port1, port2 = free_port(), free_port()
    config = {"workers": 2, "admin": {"listen": f"127.0.0.1:{port1}", "token_file": str(tmp_path / "old")},
              "sources": [static_source("zone-a", {"httpbin": [backend_a.address]})],
              "services": [{"name": "httpbin", "port": 80}],
              "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}]}
    gw = GatewayProcess(config, tmp_path, "admin-reload").start()
    try:
        wait_listening("127.0.0.1", port1, 10, gw.proc)
        first = Admin(gw, port1)
        assert first.request("GET", "/status", headers=bearer(OLD))[0] == 200
        cookie, _ = first.login(OLD)

        # Same address, new token: the old token and its session are refused at once.
        reload_with(gw, {"listen": f"127.0.0.1:{port1}", "token_file": str(tmp_path / "new"),
                         "read_token_file": str(tmp_path / "read")})
        assert first.request("GET", "/status", headers=bearer(NEW))[0] == 200
        assert first.request("GET", "/status", headers=bearer(READ))[0] == 200
        status, _, body = first.request("GET", "/status", headers=bearer(OLD))
        assert status == 401, body
        status, _, body = first.request("GET", "/status", headers={"Cookie": cookie})
        assert status == 401 and "its token was changed" in orjson.loads(body)["error"], body

        # New address: it answers there, and the old one is let go.
        reload_with(gw, {"listen": f"127.0.0.1:{port2}", "token_file": str(tmp_path / "new")})
        wait_listening("127.0.0.1", port2, 10, gw.proc)
        second = Admin(gw, port2)
        assert second.request("GET", "/status", headers=bearer(NEW))[0] == 200
        assert second.request("GET", "/status", headers=bearer(READ))[0] == 401     # read token removed
        wait_until(lambda: refused(port1), 5, f"the old admin port {port1} closed")
        assert "admin listening" in gw.output()

        # A bad admin section is refused: the running admin API and its token stay.
        reload_with(gw, {"listen": f"127.0.0.1:{port1}", "token_file": str(tmp_path / "short")})
        assert "admin.token_file: the token must be at least 16 characters" in gw.output()
        assert second.request("GET", "/status", headers=bearer(NEW))[0] == 200
        assert refused(port1)

        # Off, then on again (on a port taken by something else first: the error is logged).
        reload_with(gw, "off")
        wait_until(lambda: refused(port2), 5, "the admin API stopped")
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", port1))
            squatter.listen(1)
            reload_with(gw, f"127.0.0.1:{port1}")
            wait_until(lambda: "cannot apply the new admin settings" in gw.output(), 5, "the bind error logged")
        reload_with(gw, f"127.0.0.1:{port2}")
        wait_listening("127.0.0.1", port2, 10, gw.proc)
        assert Admin(gw, port2).request("GET", "/status")[0] == 200      # loopback, no token: open
        with gw.client() as client:                 # the data plane served throughout
            assert client.request("GET", "/still").status == 200
    finally:
        gw.stop()
