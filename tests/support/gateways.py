"""The gateway as a real process: ``GatewayProcess`` (``python -m gateway run --config FILE``
on a free port, the config written from a dict), its ``AccessLog`` (JSON lines, flushed every
100 ms), ``AdminClient`` (the admin API), ``start_with_admin`` and ``static_source`` (a config's
static source from "ns/name" -> endpoints).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import orjson
import yaml

from .client import Client
from .net import free_port, wait_listening
from .processes import stop_process

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


class AccessLog:
    """The gateway's access log file: JSON lines, read as they are flushed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[dict]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        return [orjson.loads(line) for line in data[:end + 1].splitlines() if line.strip()]

    def count(self) -> int:
        return len(self.entries())

    def wait_count(self, n: int, timeout: float = 10.0) -> list[dict]:
        """All entries once there are at least ``n`` of them (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.entries()
            if len(entries) >= n or time.monotonic() > deadline:
                assert len(entries) >= n, f"access log has {len(entries)} lines, expected {n}"
                return entries
            time.sleep(0.05)

    def since(self, mark: int, count: int, timeout: float = 10.0) -> list[dict]:
        """The ``count`` entries written after the first ``mark`` ones (waits for them)."""
        entries = self.wait_count(mark + count, timeout)
        return entries[mark:mark + count]

    def matching(self, predicate: Callable[[dict], bool], n: int = 1, timeout: float = 10.0) -> list[dict]:
        """The entries for which ``predicate`` holds, once there are at least ``n``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.entries() if predicate(e)]
            if len(found) >= n or time.monotonic() > deadline:
                assert len(found) >= n, f"{len(found)} matching access log lines, expected {n}"
                return found
            time.sleep(0.05)

    def by_ids(self, ids: Iterable[str], timeout: float = 10.0) -> dict[str, dict]:
        """The entries with these request ids (waits until all are there)."""
        wanted = set(ids)
        deadline = time.monotonic() + timeout
        while True:
            found = {e.get("request_id"): e for e in self.entries() if e.get("request_id") in wanted}
            if len(found) == len(wanted) or time.monotonic() > deadline:
                missing = wanted - set(found)
                assert not missing, f"no access log line for request ids {sorted(missing)[:5]}"
                return found
            time.sleep(0.05)


def static_source(name: str, services: dict[str, list], weight: int | None = None) -> dict:
    """A static source; ``services`` maps "ns/name" or "name" to endpoint lists."""
    svcs = []
    for key, endpoints in services.items():
        ns, _, svc = key.rpartition("/")
        svcs.append({"name": svc, "namespace": ns or "default", "endpoints": list(endpoints)})
    src = {"name": name, "type": "static", "services": svcs}
    if weight is not None:
        src["weight"] = weight
    return src


class GatewayProcess:
    """``python -m gateway run --config FILE`` as a real process, on a free port."""

    def __init__(self, config: dict, workdir: Path, name: str = "gateway") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port("127.0.0.1")
        self.host = "127.0.0.1"
        self.config_path = self.workdir / f"{name}.yaml"
        self.log_path = self.workdir / f"{name}-access.log"
        self.out_path = self.workdir / f"{name}.out"
        cfg = dict(config)
        cfg["listen"] = f"127.0.0.1:{self.port}"
        cfg.setdefault("admin", "off")
        cfg["access_log"] = {**(config.get("access_log") or {}), "path": str(self.log_path), "flush_interval": "100ms"}
        timeouts = {"drain": "2s"}
        timeouts.update(cfg.get("timeouts") or {})
        cfg["timeouts"] = timeouts
        self.config = cfg
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.log = AccessLog(self.log_path)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0, args: Iterable[str] = (), env: dict | None = None) -> "GatewayProcess":
        """``args``: more options of ``gateway run`` (``--pid-file``, say); ``env``: more
        environment variables.  The gateway gets SIGTERM if this process dies first (a test
        run killed before its teardown), through util-linux's setpriv, which execs it: its pid
        is the gateway's."""
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "TERM", "--",
                 PYTHON, "-m", "gateway", "run", "--config", str(self.config_path), *args],
                cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **env} if env else None)
        try:
            wait_listening(self.host, self.port, timeout, self.proc)
        except BaseException:
            self.stop()
            raise RuntimeError(f"gateway did not start: {self.output()[-2000:]}") from None
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        try:
            return self.out_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def client(self, timeout: float = 10.0, source: str | None = None) -> Client:
        return Client(self.host, self.port, timeout=timeout, source=source)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


class AdminClient:
    """Plain HTTP/1.1 to a gateway's admin port: (status, lower-case headers, body), JSON decoded."""

    def __init__(self, port: int, context=None, decode_json: bool = True) -> None:
        self.port = port
        self.context = context              # an SSLContext: the admin API over HTTPS
        self.decode_json = decode_json

    def request(self, method: str, path: str, body=None, headers: dict | None = None):
        import http.client

        import orjson
        if self.context is not None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self.context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = orjson.dumps(body) if body is not None else None
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            raw = resp.read()
            ctype = resp.getheader("content-type", "")
            json_body = self.decode_json and ctype.startswith("application/json") and raw
            payload = orjson.loads(raw) if json_body else raw
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload
        finally:
            conn.close()

    def get(self, path: str):
        status, _, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def wait(self, path: str, predicate, timeout: float = 10.0):
        """GET ``path`` until ``predicate(body)`` holds (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(path)
            if predicate(body):
                return body
            assert time.monotonic() < deadline, f"{path}: condition not met in {timeout}s: {body}"
            time.sleep(0.05)

    def wait_up(self, proc, timeout: float = 20.0) -> None:
        """Until the admin port answers; fails at once if ``proc`` (a Popen) exited."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("GET", "/healthz")
                return
            except OSError:
                assert proc.poll() is None, f"gateway exited with {proc.returncode}"
                assert time.monotonic() < deadline, "admin API did not come up"
                time.sleep(0.05)


def start_with_admin(config: dict, workdir: Path, name: str) -> tuple[GatewayProcess, AdminClient]:
    """A gateway with its admin API on a free loopback port, started and answering."""
    admin_port = free_port()
    gw = GatewayProcess({**config, "admin": f"127.0.0.1:{admin_port}"}, workdir, name).start()
    try:
        wait_listening("127.0.0.1", admin_port, 10, gw.proc)
    except BaseException:
        gw.stop()
        raise
    return gw, AdminClient(admin_port)
