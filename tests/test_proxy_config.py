"""The command line refuses a bad config: ``validate`` and ``run`` exit 1 naming the key path,
and ``run`` never listens."""
from __future__ import annotations

import socket
import subprocess
import time

import yaml

from support import PYTHON, REPO, free_port, stop_process

BAD = {
    "listen": "127.0.0.1:{port}",
    "admin": "off",
    "sources": [{"name": "zone-a", "type": "static",
                 "services": [{"name": "httpbin", "endpoints": ["127.0.0.2:8000"]}]}],
    "services": [{"name": "httpbin", "port": 8000}],
    "routes": [{"name": "test", "match": {"path": {"prefix": "no-slash"}}, "service": "httpbin"}],
}


def write_config(tmp_path, port: int, prefix: str = "no-slash"):
    cfg = yaml.safe_load(yaml.safe_dump(BAD))
    cfg["listen"] = f"127.0.0.1:{port}"
    cfg["routes"][0]["match"]["path"]["prefix"] = prefix
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "gateway", *args], cwd=str(REPO), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_validate_bad_config_exits_1_with_key_path(tmp_path):
    path = write_config(tmp_path, free_port())
    result = run_cli("validate", "--config", str(path))
    assert result.returncode == 1, result
    assert "routes[0].match.path.prefix" in result.stderr, result.stderr


def test_validate_good_config_exits_0(tmp_path):
    path = write_config(tmp_path, free_port(), prefix="/test")
    result = run_cli("validate", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_run_bad_config_exits_1_without_listening(tmp_path):
    port = free_port()
    path = write_config(tmp_path, port)
    proc = subprocess.Popen([PYTHON, "-m", "gateway", "run", "--config", str(path)], cwd=str(REPO),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    listened = False
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    listened = True
            except OSError:
                pass
            time.sleep(0.02)
    finally:
        stop_process(proc)
        out, err = proc.communicate(timeout=10)
    assert not listened, "the gateway listened with an invalid config"
    assert proc.returncode == 1, (proc.returncode, err)
    assert "routes[0].match.path.prefix" in err, err
