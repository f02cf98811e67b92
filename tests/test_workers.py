"""The production process model: ``workers: N`` data-plane processes beside one control plane.

Real gateway processes (``python -m gateway run``), real worker processes, real backends on
127.0.0.2/.3, real signals.  The load generator here (``Load``: keep-alive connections, one
thread each) and the helpers below are shared with test_reload.py and test_shutdown.py.

Which worker holds a client connection is read from /proc (the server side of the
connection, found in /proc/net/tcp, belongs to the process that has its socket inode open),
so a test can tell which workers served what and which connections a killed worker held.
"""
from __future__ import annotations

import http.client
import os
import select
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from support import (AdminClient as Admin, Client, GatewayProcess, PeerClosed, connection_owners, free_port,
                     pid_alive, static_source)

pytestmark = pytest.mark.timeout(60)


# -- the admin API -------------------------------------------------------------------------------


# -- the gateway under test ------------------------------------------------------------------------


def base_config(backend_a, backend_b, workers: int, **extra) -> dict:
    """Two static "clusters", one service over both, route /test -> it; drain deadline 5 s."""
    cfg = {
        "workers": workers,
        "admin": f"127.0.0.1:{free_port()}",
        "timeouts": {"drain": "5s"},
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address]}),
                    static_source("zone-b", {"httpbin": [backend_b.address]})],
        "services": [{"name": "httpbin", "port": 8000}],
        "routes": [{"name": "test", "match": {"path": {"prefix": "/test"}}, "service": "httpbin"}],
    }
    cfg.update(extra)
    return cfg


def start_gateway(workdir: Path, config: dict, name: str = "gateway") -> tuple[GatewayProcess, Admin]:
    """The gateway, started; returns once the admin API answers (every worker is ready then)."""
    g = GatewayProcess(config, workdir, name).start()
    admin = Admin(int(config["admin"].rsplit(":", 1)[1]))
    try:
        admin.wait_up(g.proc)
        workers = admin.get("/status")["workers"]
        assert len(workers) == config["workers"] and all(w["ready"] for w in workers), workers
    except BaseException:
        g.stop()
        raise
    return g, admin


def rewrite_config(g: GatewayProcess, config: dict) -> None:
    """Replace the config file (atomically, as an operator's tooling would) with ``config``,
    keeping what GatewayProcess set (listen, access log)."""
    cfg = dict(config)
    for key in ("listen", "access_log"):
        cfg[key] = g.config[key]
    tmp = g.config_path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(cfg))        # JSON is YAML
    os.replace(tmp, g.config_path)


def worker_pids(admin: Admin) -> list[int]:
    return [w["pid"] for w in admin.get("/status")["workers"]]


# -- the load ------------------------------------------------------------------------------------


@dataclass
class Conn:
    """One client connection, as the load saw it."""

    port: int
    opened: float
    responses: int = 0
    ended: str = "open"         # close-header | eof-before-write | failure | done
    error: str = ""
    ended_at: float = 0.0


@dataclass
class Failure:
    port: int
    at: float
    error: str


@dataclass
class LoadStats:
    answered: int = 0
    statuses: Counter = field(default_factory=Counter)
    refused: int = 0                # connect failed: never accepted
    eof_before_write: int = 0       # the server closed an idle connection before we wrote
    close_responses: int = 0        # answered with Connection: close
    failures: list[Failure] = field(default_factory=list)   # written, then no (full) response
    conns: list[Conn] = field(default_factory=list)
    last_keepalive: float = 0.0     # when the last response without Connection: close came


def _closed_by_peer(sock: socket.socket) -> bool:
    """Before writing on a kept-alive connection: has the server closed it already?"""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:             # reset
        return True


class Load:
    """``connections`` threads, each sending GETs on one keep-alive connection until the
    ``total`` requests are answered (or ``stop()``, or ``limit`` seconds).

    Every request is accounted for: answered (a full response), refused (the connect
    failed), closed before write (the server had closed the connection before the client
    wrote the request), or a failure (written on an open connection, then no full response).
    After a failure the thread opens a new connection.  With ``until_refused`` a thread stops
    at its first refused connect (a gateway that is shutting down).
    """

    def __init__(self, port: int, total: int, connections: int = 20, path: str = "/test/load",
                 until_refused: bool = False, limit: float = 30.0) -> None:
        self.port = port
        self.quota = max(1, total // connections)
        self.path = path
        self.until_refused = until_refused
        self.limit = limit
        self.stats = [LoadStats() for _ in range(connections)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(s,), daemon=True) for s in self.stats]

    def start(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 30.0) -> "Load":
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "load threads still running"
        return self

    def wait_answered(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.answered < n:
            assert time.monotonic() < deadline, f"only {self.answered} of {n} answered"
            assert any(t.is_alive() for t in self._threads), f"load ended at {self.answered}"
            time.sleep(0.01)

    @property
    def answered(self) -> int:
        return sum(s.answered for s in self.stats)

    @property
    def failures(self) -> list[Failure]:
        return [f for s in self.stats for f in s.failures]

    @property
    def conns(self) -> list[Conn]:
        return [c for s in self.stats for c in s.conns]

    def open_ports(self) -> set[int]:
        return {c.port for c in self.conns if c.ended == "open"}

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.stats)

    def statuses(self) -> Counter:
        out: Counter = Counter()
        for s in self.stats:
            out.update(s.statuses)
        return out

    def summary(self) -> dict:
        return {"answered": self.answered, "statuses": dict(self.statuses()),
                "refused": self.total("refused"), "eof_before_write": self.total("eof_before_write"),
                "close_responses": self.total("close_responses"),
                "failures": [(f.port, f.error) for f in self.failures],
                "connections": len(self.conns)}

    def _run(self, st: LoadStats) -> None:
        request = Client.build("GET", self.path)
        deadline = time.monotonic() + self.limit
        c: Client | None = None
        conn: Conn | None = None

        def end(how: str, error: str = "") -> None:
            nonlocal c, conn
            conn.ended, conn.error, conn.ended_at = how, error, time.monotonic()
            c.close()
            c = conn = None

        try:
            while st.answered < self.quota and not self._stop.is_set() and time.monotonic() < deadline:
                if c is None:
                    try:
                        c = Client("127.0.0.1", self.port, timeout=10.0)
                    except OSError:
                        st.refused += 1
                        if self.until_refused:
                            return
                        time.sleep(0.01)
                        continue
                    conn = Conn(c.sock.getsockname()[1], time.monotonic())
                    st.conns.append(conn)
                elif _closed_by_peer(c.sock):
                    st.eof_before_write += 1
                    end("eof-before-write")
                    continue
                try:
                    c.send(request)
                except OSError:             # reset or closed before the request was written
                    st.eof_before_write += 1
                    end("eof-before-write")
                    continue
                try:
                    r = c.read_response()
                except (OSError, PeerClosed, ValueError) as exc:
                    st.failures.append(Failure(conn.port, time.monotonic(), repr(exc)))
                    end("failure", repr(exc))
                    continue
                st.answered += 1
                conn.responses += 1
                st.statuses[r.status] += 1
                if r.closes:
                    st.close_responses += 1
                    end("close-header")
                else:
                    st.last_keepalive = time.monotonic()
        finally:
            if c is not None:
                end("done")


# -- tests -------------------------------------------------------------------------------------


def test_sigkill_worker_restarted_failures_bounded(tmp_path, backend_a, backend_b):
    """A worker killed with SIGKILL under load: restarted (new pid, worker_restarts 1, serving),
    and the only failed requests were in flight on the killed worker's connections."""
    config = base_config(backend_a, backend_b, workers=2)
    g, admin = start_gateway(tmp_path, config)
    try:
        before = admin.get("/status")["workers"]
        pids = [w["pid"] for w in before]
        load = Load(g.port, total=16000, connections=20).start()
        try:
            load.wait_answered(3000)
            owners = connection_owners(g.port, pids)
            victim = pids[0]
            on_victim = {p for p in load.open_ports() if owners.get(p) == victim}
            # Read before the signal: on a busy machine the load thread can see the first
            # failures before this thread runs again after os.kill.
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            # Restarted: a new pid in the same slot, and ready again.
            status = admin.wait("/status", lambda s: s["workers"][0]["pid"] != victim
                                and all(w["ready"] for w in s["workers"]), timeout=10)
        finally:
            load.join(40)
        assert status["worker_restarts"] == 1
        assert status["workers"][1]["pid"] == pids[1]
        new_pid = status["workers"][0]["pid"]
        assert not pid_alive(victim)
        failures = load.failures
        print(f"worker kill: {len(failures)} failed requests; {len(on_victim)} of "
              f"{len(load.stats)} connections were on the killed worker")
        assert len(failures) <= len(on_victim), (on_victim, load.summary())
        assert {f.port for f in failures} <= on_victim, load.summary()
        assert all(f.at >= killed_at for f in failures)
        assert load.statuses() == {200: load.answered}, load.summary()
        assert load.answered == load.quota * len(load.stats)

        # The new worker serves: fresh connections land on it (SO_REUSEPORT spreads them).
        served_by = Counter()
        for _ in range(60):
            with g.client() as c:
                assert c.request("GET", "/test/after").status == 200     # accepted by now
                owner = connection_owners(g.port, [victim, new_pid, pids[1]]).get(c.sock.getsockname()[1])
                served_by[owner] += 1
            if served_by[new_pid] >= 3:
                break
        assert served_by[new_pid] >= 3 and victim not in served_by, served_by
    finally:
        g.stop()
    assert g.proc.returncode == 0, g.output()[-3000:]


def backend_count(backend, prefix: str) -> int:
    """Requests the devcluster backend has served under a path prefix ("/hc-1")."""
    conn = http.client.HTTPConnection(backend.host, backend.port, timeout=5)
    try:
        conn.request("GET", "/_backend/stats")
        return orjson.loads(conn.getresponse().read())["paths"].get(prefix, 0)
    finally:
        conn.close()


def test_health_probes_run_once_whatever_the_worker_count(tmp_path, backend_a, backend_b):
    """Active probes run in the control plane only: with 2 workers the backend sees the
    probe rate of 1 worker (an interval of 200 ms: ~5 a second), not twice (or thrice) it."""
    gateways = []
    try:
        for workers in (1, 2):
            cfg = base_config(backend_a, backend_b, workers)
            cfg["services"] = [{"name": "httpbin", "port": 8000, "health_check": {
                "path": f"/hc-{workers}/probe", "interval": "200ms", "timeout": "100ms", "jitter": "10ms"}}]
            gateways.append(start_gateway(tmp_path, cfg, f"gw{workers}")[0])
        time.sleep(0.3)
        # Both gateways probe the same backend, each on its own path, over the same window.
        start = time.monotonic()
        before = {w: backend_count(backend_a, f"/hc-{w}") for w in (1, 2)}
        time.sleep(2.0)
        after = {w: backend_count(backend_a, f"/hc-{w}") for w in (1, 2)}
        elapsed = time.monotonic() - start
    finally:
        for g in gateways:
            g.stop()
    rate = {w: (after[w] - before[w]) / elapsed for w in (1, 2)}
    print(f"probes per second: workers 1: {rate[1]:.2f}, workers 2: {rate[2]:.2f}")
    assert 3.5 <= rate[1] <= 6.0, rate
    assert 0.75 <= rate[2] / rate[1] <= 1.3, rate


def _scrape(admin: Admin) -> dict:
    from prometheus_client.parser import text_string_to_metric_families
    status, _, text = admin.request("GET", "/metrics")
    assert status == 200
    samples: dict = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def _total(samples: dict, name: str, **match) -> float:
    return sum(v for labels, v in samples.get(name, ()) if all(labels.get(k) == x for k, x in match.items()))


def test_metrics_add_up_every_worker(tmp_path, backend_a, backend_b):
    """/metrics with 2 workers: request totals equal the requests sent, once the workers'
    1 s stats have come in, and both workers took part."""
    g, admin = start_gateway(tmp_path, base_config(backend_a, backend_b, workers=2))
    try:
        pids = worker_pids(admin)
        per_worker: Counter = Counter()
        sent = 0
        for _ in range(40):                     # fresh connections: SO_REUSEPORT spreads them
            with g.client() as c:
                owner = None
                for _ in range(15):
                    r = c.request("GET", "/test/metrics")
                    assert r.status == 200, r.status
                    sent += 1
                    owner = owner or connection_owners(g.port, pids)[c.sock.getsockname()[1]]
                    per_worker[owner] += 1
        assert set(per_worker) == set(pids), per_worker
        time.sleep(1.5)
        deadline = time.monotonic() + 3.0
        while True:
            m = _scrape(admin)
            if _total(m, "gateway_requests_total") >= sent or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert _total(m, "gateway_requests_total") == sent, per_worker
        assert _total(m, "gateway_responses_total", status_class="2xx") == sent
        assert _total(m, "gateway_route_requests_total", route="test") == sent
        assert _total(m, "gateway_route_request_duration_seconds_count", route="test") == sent
        assert _total(m, "gateway_upstream_requests_total") == sent
        by_host = {b.address: _total(m, "gateway_upstream_requests_total", upstream_host=b.address)
                   for b in (backend_a, backend_b)}
        assert sum(by_host.values()) == sent and all(by_host.values()), by_host
    finally:
        g.stop()
