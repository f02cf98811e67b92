"""SIGHUP reloads a multi-worker gateway in place: under load, with no failed request; an
invalid file is refused (the log names the key path) and the old config keeps serving; what
the gateway has learnt (per-route counters, ejected endpoints) survives a reload.

Real processes: ``python -m gateway run`` with ``workers: 2`` (a control plane and two
worker processes), backends on 127.0.0.2/.3.  Load and helpers: test_workers.py.
"""
from __future__ import annotations

import copy
import os
import signal
import time
from collections import Counter

import pytest

from support import connection_owners, free_port, static_source
from test_workers import Load, base_config, rewrite_config, start_gateway, worker_pids

pytestmark = pytest.mark.timeout(60)


def wait_output(g, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in (out := g.output()):
        assert time.monotonic() < deadline, f"{text!r} not in the gateway output: {out[-2000:]}"
        time.sleep(0.05)
    return out


def served_by_workers(g, pids: list[int], path: str, good, settle: float = 0.0, tries: int = 80) -> Counter:
    """GET ``path`` over fresh connections until every worker has answered it twice with a
    response for which ``good(r)`` holds; for ``settle`` seconds other answers are tolerated
    (a worker applying a reload a moment after the control plane), then they fail the test."""
    seen: Counter = Counter()
    settled = time.monotonic() + settle
    for _ in range(tries):
        with g.client() as c:
            r = c.request("GET", path)
            owner = connection_owners(g.port, pids).get(c.sock.getsockname()[1])
        if good(r):
            seen[owner] += 1
        else:
            assert time.monotonic() < settled, (path, owner, r.status, r.body[:200])
            time.sleep(0.02)
        if all(seen[p] >= 2 for p in pids):
            break
    assert all(seen[p] >= 2 for p in pids), f"not every worker answered {path}: {seen}"
    return seen


def test_reload_under_load_valid_then_invalid(tmp_path, backend_a, backend_b):
    """20,000 requests over 20 keep-alive connections to 2 workers; meanwhile a SIGHUP adds a
    route (served by both workers right after), and another SIGHUP brings an invalid file
    (refused, named by key path; both routes keep serving).  Not one request fails."""
    config = base_config(backend_a, backend_b, workers=2)
    g, admin = start_gateway(tmp_path, config)
    try:
        pids = worker_pids(admin)

        def not_found(r) -> bool:
            return r.status == 404

        def renamed(r) -> bool:
            return r.status == 200 and r.json()["path"] == "/renamed/x"

        served_by_workers(g, pids, "/new/x", not_found)
        load = Load(g.port, total=20000, connections=20).start()
        try:
            load.wait_answered(2000)
            # 1. A valid change: a new route, with a rewrite the backend's echo shows.
            new = copy.deepcopy(config)
            new["routes"].append({"name": "new", "match": {"path": {"prefix": "/new"}},
                                  "service": "httpbin", "rewrite": {"prefix": "/renamed"}})
            rewrite_config(g, new)
            at = load.answered
            os.kill(g.pid, signal.SIGHUP)
            wait_output(g, "config reloaded")
            served_by_workers(g, pids, "/new/x", renamed, settle=1.0)
            assert load.answered > at, "the load stalled during the reload"

            # 2. An invalid file: refused with the key path; the running config stays.
            bad = copy.deepcopy(new)
            bad["routes"][1]["match"]["path"]["prefix"] = "no-slash"
            rewrite_config(g, bad)
            at = load.answered
            os.kill(g.pid, signal.SIGHUP)
            out = wait_output(g, "reload refused")
            assert "routes[1].match.path.prefix" in out, out[-2000:]
            served_by_workers(g, pids, "/new/x", renamed)
            served_by_workers(g, pids, "/test/x", lambda r: r.status == 200)
            assert load.answered > at
        finally:
            load.join(40)
        failures = load.failures
        print(f"reload under load: {len(failures)} failed of {load.answered} answered; {load.summary()}")
        assert not failures, load.summary()
        assert load.statuses() == {200: 20000}, load.summary()
        assert load.total("refused") == 0 and load.total("eof_before_write") == 0, load.summary()
        status = admin.get("/status")
        assert status["worker_restarts"] == 0 and [w["pid"] for w in status["workers"]] == pids
    finally:
        g.stop()
    assert g.proc.returncode == 0, g.output()[-3000:]


def test_reload_keeps_route_counters_and_ejections(tmp_path, backend_a, backend_b):
    """A SIGHUP that keeps route "test" keeps its request counter (admin /routes); an endpoint
    ejected by outlier detection stays ejected across a reload that changes another service."""
    dead = f"127.0.0.3:{free_port('127.0.0.3')}"
    config = base_config(backend_a, backend_b, workers=2)
    config["sources"].append(static_source("zone-c", {"flaky": [backend_b.address, dead]}))
    config["services"].append({"name": "flaky", "port": 8000, "sources": ["zone-c"],
                               "outlier_detection": {"consecutive_failures": 1,
                                                     "base_ejection_time": "30s"}})
    config["routes"].append({"name": "flaky", "match": {"path": {"prefix": "/flaky"}},
                             "service": "flaky", "retries": {"attempts": 2}})
    g, admin = start_gateway(tmp_path, config)

    def dead_endpoint() -> dict:
        svc = admin.get("/services/default/flaky")
        return next(e for e in svc["endpoints"] if e["address"] == dead)

    def test_requests() -> int:
        return next(r for r in admin.get("/routes") if r["name"] == "test")["requests"]

    try:
        # Eject the dead endpoint: connect refused once is enough (the request is retried).
        with g.client() as c:
            for _ in range(6):
                assert c.request("GET", "/flaky/x").status == 200
        admin.wait("/services/default/flaky", lambda s: "ejected" in next(
            e for e in s["endpoints"] if e["address"] == dead)["causes"])
        n = 120
        for _ in range(4):                      # a few connections: both workers count
            with g.client() as c:
                for _ in range(n // 4):
                    assert c.request("GET", "/test/x").status == 200
        admin.wait("/routes", lambda _: test_requests() == n, timeout=5)
        ejected = dead_endpoint()
        assert ejected["ejections"] == 1 and ejected["ejected_for_s"] > 20, ejected

        # Reload: a new route, and a change to another service ("httpbin" gets a panic threshold).
        new = copy.deepcopy(config)
        new["routes"].append({"name": "new", "match": {"path": {"prefix": "/new"}}, "service": "httpbin"})
        new["services"][0]["panic_threshold"] = "30%"
        rewrite_config(g, new)
        os.kill(g.pid, signal.SIGHUP)
        wait_output(g, "config reloaded")
        served_by_workers(g, worker_pids(admin), "/new/x", lambda r: r.status == 200, settle=1.0)

        # Over more than a stats interval the counter never drops below n (a reset would).
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert test_requests() == n
            time.sleep(0.1)
        with g.client() as c:
            for _ in range(10):
                assert c.request("GET", "/test/x").status == 200
        admin.wait("/routes", lambda _: test_requests() == n + 10, timeout=5)

        still = dead_endpoint()
        assert "ejected" in still["causes"] and not still["serving"], still
        assert still["ejections"] == 1 and 0 < still["ejected_for_s"] <= ejected["ejected_for_s"], still
        assert admin.get("/status")["worker_restarts"] == 0
    finally:
        g.stop()
    assert g.proc.returncode == 0, g.output()[-3000:]
