"""The access log follows logrotate and reloads without losing a line.

* Rotation: requests flow (each with its own X-Request-Id) while the log file is moved away
  (``mv``, as logrotate does) and the gateway is told to reopen it: SIGUSR1 to the main
  process, ``gateway logs --reopen --pid-file``, or ``--admin`` (POST /logs/reopen).  With
  ``workers: 2`` the main process forwards the reopen to each worker.  Every answered request
  is then in exactly one of the two files, and the new file got lines.
* Reload: a SIGHUP with a new ``access_log`` path and buffer: the lines before are in the old
  file, the lines after in the new one, each exactly once, and no process keeps the old file open.
"""
from __future__ import annotations

import collections
import itertools
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from support import (PYTHON, REPO, AccessLog, GatewayProcess, children, fd_targets, free_port, static_source,
                     wait_until)

pytestmark = pytest.mark.timeout(90)


class Traffic:
    """Requests with unique ids over short keep-alive connections (so that with two workers,
    whose SO_REUSEPORT listeners share the connections, both serve), in a thread."""

    def __init__(self, gw: GatewayProcess, tag: str) -> None:
        self.gw, self.tag = gw, tag
        self.answered: list[str] = []
        self.failures: list[str] = []
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, n: int) -> None:
        for _ in range(0, n, 10):
            self._batch(10)

    def _batch(self, n: int) -> None:
        with self.gw.client(timeout=5) as client:
            for _ in range(n):
                rid = f"{self.tag}-{next(self._ids)}"
                try:
                    resp = client.request("GET", f"/rot/{rid}", headers={"X-Request-Id": rid})
                except OSError as exc:
                    self.failures.append(f"{rid}: {exc}")
                    return
                (self.answered if resp.status == 200 else self.failures).append(rid)

    def __enter__(self) -> "Traffic":
        def run() -> None:
            while not self._stop.is_set():
                self._batch(10)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def ids(path: Path) -> list[str]:
    """The request ids of the file's complete lines (the writer may be mid-line when it is
    read: a loaded run saw half a line)."""
    return [entry["request_id"] for entry in AccessLog(path).entries()]


def assert_each_once(sent: list[str], files: list[Path], timeout: float = 10.0) -> list[collections.Counter]:
    """Every id in ``sent`` appears exactly once over ``files`` (waiting for the last flushes)."""
    wanted = set(sent)

    def all_there():
        seen = collections.Counter(i for f in files for i in ids(f))
        return seen if wanted <= set(seen) else None
    try:
        wait_until(all_there, timeout, "every request in the logs")
    except AssertionError:
        seen = collections.Counter(i for f in files for i in ids(f))
        missing = sorted(wanted - set(seen))
        raise AssertionError(f"{len(missing)} of {len(wanted)} requests in no log: {missing[:5]}") from None
    per_file = [collections.Counter(i for i in ids(f) if i in wanted) for f in files]
    total = sum(per_file, collections.Counter())
    twice = [i for i, n in total.items() if n > 1]
    assert not twice, f"{len(twice)} requests logged more than once: {twice[:5]}"
    return per_file


def config(backend, workers: int, admin_port: int | None = None) -> dict:
    return {
        "workers": workers,
        "admin": f"127.0.0.1:{admin_port}" if admin_port else "off",
        "sources": [static_source("zone-a", {"httpbin": [backend.address]})],
        "services": [{"name": "httpbin", "port": 80}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}],
    }


def reopen_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "gateway", "logs", "--reopen", *args], cwd=str(REPO),
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("workers,how", [(1, "signal"), (2, "signal"), (2, "pid-file"), (1, "admin")])
def test_reopen_after_the_file_was_moved_loses_no_line(backend_a, tmp_path, workers, how):
    admin = free_port() if how == "admin" else None
    gw = GatewayProcess(config(backend_a, workers, admin), tmp_path, "rot")
    pid_file = tmp_path / "gateway.pid"
    gw.start(args=["--pid-file", str(pid_file)])
    rotated = tmp_path / "rot-access.log.1"
    try:
        traffic = Traffic(gw, f"w{workers}-{how}")
        traffic.send(50)
        with traffic:                               # requests keep coming through the rotation
            wait_until(lambda: len(ids(gw.log_path)) >= 50, 10, "the first lines")
            os.rename(gw.log_path, rotated)         # what logrotate's default (create) mode does
            time.sleep(0.3)                         # lines keep going to the moved file meanwhile
            if how == "signal":
                os.kill(gw.pid, signal.SIGUSR1)
            elif how == "pid-file":
                assert int(pid_file.read_text()) == gw.pid
                result = reopen_cli("--pid-file", str(pid_file))
                assert result.returncode == 0 and f"sent SIGUSR1 to {gw.pid}" in result.stdout, result
            else:
                result = reopen_cli("--admin", f"http://127.0.0.1:{admin}")
                assert result.returncode == 0 and str(gw.log_path) in result.stdout, result
            wait_until(lambda: len(ids(gw.log_path)) >= 20, 10, "lines in the reopened file")
        traffic.send(30)
        assert not traffic.failures, traffic.failures[:5]
        before, after = assert_each_once(traffic.answered, [rotated, gw.log_path])
        assert sum(before.values()) >= 50 and sum(after.values()) >= 50, (len(before), len(after))
        assert "reopening the access log" in gw.output()
    finally:
        gw.stop()
    assert not pid_file.exists(), "the pid file outlived the gateway"


def test_reopen_cli_errors(tmp_path):
    result = reopen_cli("--pid-file", str(tmp_path / "none.pid"))
    assert result.returncode == 1 and "--pid-file: cannot read" in result.stderr, result
    (tmp_path / "bad.pid").write_text("not a pid\n")
    result = reopen_cli("--pid-file", str(tmp_path / "bad.pid"))
    assert result.returncode == 1 and "holds no process id" in result.stderr, result
    result = reopen_cli("--admin", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2 and "cannot reach the admin API" in result.stderr, result


def open_files(pid: int) -> set[str]:
    """What the gateway and its workers have open."""
    return {target for proc in [pid, *children(pid)] for target in fd_targets(proc)}


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_with_a_new_access_log_path_and_buffer(backend_a, tmp_path, workers):
    gw = GatewayProcess(config(backend_a, workers), tmp_path, "reload").start()
    new_log = tmp_path / "moved-by-config.log"
    try:
        wait_until(lambda: str(gw.log_path) in open_files(gw.pid), 10, "the log file open")
        traffic = Traffic(gw, f"reload-w{workers}")
        with traffic:
            wait_until(lambda: len(ids(gw.log_path)) >= 50, 10, "the first lines")
            cfg = yaml.safe_load(gw.config_path.read_text())
            # New path, buffer and interval; the old log writes what it holds, then closes.
            cfg["access_log"] = {"path": str(new_log), "buffer": "1MiB", "flush_interval": "200ms"}
            gw.config_path.write_text(yaml.safe_dump(cfg))
            os.kill(gw.pid, signal.SIGHUP)
            wait_until(lambda: len(ids(new_log)) >= 50, 15, "lines in the new access log")
        assert not traffic.failures, traffic.failures[:5]
        before, after = assert_each_once(traffic.answered, [gw.log_path, new_log])
        assert sum(before.values()) >= 50 and sum(after.values()) >= 50
        # The old file is closed everywhere (flushed first: every line above is in it).
        wait_until(lambda: str(gw.log_path) not in open_files(gw.pid), 5, "the old log file closed")
        assert str(new_log) in open_files(gw.pid)
        old_size = gw.log_path.stat().st_size
        traffic.send(20)
        assert_each_once(traffic.answered, [gw.log_path, new_log])
        assert gw.log_path.stat().st_size == old_size, "lines still go to the old file"
        # A bad access_log is refused and the running one kept.
        cfg["access_log"] = {"path": str(new_log), "buffer": "lots"}
        gw.config_path.write_text(yaml.safe_dump(cfg))
        os.kill(gw.pid, signal.SIGHUP)
        out = wait_until(lambda: "reload refused" in gw.output() and gw.output(), 10, "the refusal")
        assert "access_log.buffer" in out
        traffic.send(10)
        assert_each_once(traffic.answered, [gw.log_path, new_log])
    finally:
        gw.stop()
