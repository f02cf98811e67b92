"""How the gateway's processes start, as users start them.

* The installed wheel with ``workers: 2``, started from a directory holding the source tree
  (a fresh clone: no compiled modules there): workers must run the installed code.
* A worker that cannot start makes the gateway exit non-zero with the worker's error, never
  hold the port with nobody serving.
* A SIGHUP (or SIGTERM) that arrives while the gateway is still starting does not kill it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from support import PYTHON, REPO, AdminClient, Client, free_port, wait_listening
from test_workers import base_config


def _config(backend_a, backend_b, workdir: Path, workers: int = 2, **extra) -> dict:
    """test_workers' two-cluster config, with its own listen address and access log file."""
    cfg = base_config(backend_a, backend_b, workers, listen=f"127.0.0.1:{free_port()}",
                      access_log={"path": str(workdir / "access.log"), "flush_interval": "100ms"},
                      timeouts={"drain": "2s"})
    cfg.update(extra)
    return cfg


def _write(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv with the gateway installed from a wheel built from this checkout."""
    root = tmp_path_factory.mktemp("wheel")
    wheels, venv = root / "wheels", root / "venv"
    build = subprocess.run([PYTHON, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
                           capture_output=True, text=True, timeout=400)
    assert build.returncode == 0, build.stderr[-3000:]
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, timeout=120)
    (wheel,) = wheels.glob("gateway-*.whl")
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=400)
    assert install.returncode == 0, install.stderr[-3000:]
    return venv


def _source_tree(dest: Path) -> Path:
    """The tracked files of this checkout, as a fresh clone has them (no compiled modules)."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dest / f)
    assert (dest / "gateway" / "worker.py").exists() and not list(dest.glob("_speedups/*.so"))
    return dest


@pytest.mark.timeout(900)
def test_installed_wheel_with_two_workers_serves_from_inside_a_source_tree(
        installed, tmp_path, backend_a, backend_b):
    src = _source_tree(tmp_path / "src")
    cfg = _config(backend_a, backend_b, tmp_path)
    config = _write(cfg, tmp_path / "gateway.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    with open(tmp_path / "out", "wb") as out:
        proc = subprocess.Popen([str(installed / "bin" / "gateway"), "run", "--config", str(config)],
                                cwd=src, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        admin = AdminClient(_port(cfg["admin"]))
        admin.wait_up(proc, timeout=30)
        workers = admin.get("/status")["workers"]
        assert len(workers) == 2 and all(w["ready"] for w in workers), workers
        with Client("127.0.0.1", _port(cfg["listen"])) as c:
            statuses = [c.request("GET", f"/test/{i}").status for i in range(50)]
        assert statuses == [200] * 50
        assert admin.get("/status")["worker_restarts"] == 0, (tmp_path / "out").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, (tmp_path / "out").read_text()[-3000:]


def test_a_worker_that_cannot_start_stops_the_gateway_with_its_error(tmp_path, backend_a, backend_b):
    """Only workers open the access log: a path they cannot open is a worker-only failure."""
    cfg = _config(backend_a, backend_b, tmp_path,
                  access_log={"path": str(tmp_path / "no-such-dir" / "access.log")})
    config = _write(cfg, tmp_path / "gateway.yaml")
    started = time.monotonic()
    run = subprocess.run([PYTHON, "-m", "gateway", "run", "--config", str(config)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run
    assert "No such file or directory" in run.stderr and "no-such-dir" in run.stderr, run.stderr[-3000:]
    assert "gateway: not started: worker" in run.stderr, run.stderr[-3000:]
    assert time.monotonic() - started < 30
    with pytest.raises(OSError):            # nothing holds the port
        wait_listening("127.0.0.1", _port(cfg["listen"]), 0.5)


@pytest.fixture
def hanging_api(tmp_path):
    """A kubeconfig whose API server accepts connections and never answers: a source on it
    stays "starting", and the gateway waits (up to 10 s) for its first view before serving."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": f"https://127.0.0.1:{sock.getsockname()[1]}",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "x", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}]}))
    yield kubeconfig
    sock.close()


def _start_waiting(tmp_path, backend_a, backend_b, kubeconfig, workers: int):
    cfg = _config(backend_a, backend_b, tmp_path, workers=workers)
    cfg["sources"].append({"name": "hanging", "type": "kubernetes", "kubeconfig": str(kubeconfig)})
    config = _write(cfg, tmp_path / "gateway.yaml")
    out = open(tmp_path / "out", "wb")
    proc = subprocess.Popen([PYTHON, "-m", "gateway", "run", "--config", str(config)], cwd=REPO,
                            stdout=out, stderr=subprocess.STDOUT)
    out.close()
    time.sleep(1.5)                         # imported, config read, waiting for "hanging"
    with pytest.raises(OSError):
        wait_listening("127.0.0.1", _port(cfg["listen"]), 0.1)      # still starting
    return cfg, proc


def test_a_sighup_during_the_start_is_held_not_fatal(tmp_path, backend_a, backend_b, hanging_api):
    cfg, proc = _start_waiting(tmp_path, backend_a, backend_b, hanging_api, workers=1)
    output = tmp_path / "out"
    try:
        for _ in range(3):
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.2)
        assert proc.poll() is None, output.read_text()[-3000:]
        wait_listening("127.0.0.1", _port(cfg["listen"]), 20, proc)
        with Client("127.0.0.1", _port(cfg["listen"])) as c:
            assert c.request("GET", "/test/x").status == 200
        deadline = time.monotonic() + 5
        while b"config reloaded" not in output.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b"config reloaded" in output.read_bytes(), "the held SIGHUP was not acted on"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, output.read_text()[-3000:]


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_during_the_start_stops_at_once(tmp_path, backend_a, backend_b, hanging_api, workers):
    _, proc = _start_waiting(tmp_path, backend_a, backend_b, hanging_api, workers)
    stopped = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert time.monotonic() - stopped < 5, "it waited for the start to finish"
    assert "Traceback" not in (tmp_path / "out").read_text()
