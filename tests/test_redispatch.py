"""Re-dispatch on ejection: requests waiting on an endpoint that is taken out go elsewhere at once.

The issue's hang case, with real processes: cluster A's backend is stopped with SIGSTOP
(it accepts connections and requests into its socket buffers, and never answers) while
client threads send GETs on keep-alive connections.  The README's route settings
(``retries: {attempts: 2}``, no per-try timeout) and an active HTTP check every 1 s
(2 failures to turn unhealthy) are used.  Before re-dispatch, a GET caught on A waited
until SIGCONT (15 s later it would have been a 504); now it moves to B as soon as the
check ejects A, so no request fails and the slowest takes at most interval x
unhealthy_threshold + 1 s.  A POST caught the same way keeps waiting: it may have been
processed.  Run with -s for the figures.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from support import AdminClient, GatewayProcess, free_port, start_backend, wait_listening

pytestmark = pytest.mark.timeout(90)

INTERVAL = 1.0
UNHEALTHY_THRESHOLD = 2
BOUND = INTERVAL * UNHEALTHY_THRESHOLD + 1.0
THREADS = 4
STOPPED_FOR = 6.0           # SIGSTOP to SIGCONT: longer than the bound, so waiting shows
MAX_REQUESTS_PER_THREAD = 20_000


@pytest.fixture()
def setup(tmp_path):
    a = start_backend("127.0.0.2", "a", "a-0")
    b = start_backend("127.0.0.3", "b", "b-0")
    admin_port = free_port()
    config = {
        "admin": f"127.0.0.1:{admin_port}",
        "workers": 2,
        "sources": [{"name": f"cluster-{n}", "type": "static",
                     "services": [{"name": "web", "endpoints": [p.address]}]}
                    for n, p in (("a", a), ("b", b))],
        "services": [{"name": "web", "port": 8000,
                      "health_check": {"path": "/healthz", "interval": f"{INTERVAL}s",
                                       "timeout": "500ms",
                                       "unhealthy_threshold": UNHEALTHY_THRESHOLD}}],
        "routes": [{"name": "web", "match": {"path": {"prefix": "/"}}, "service": "web",
                    "retries": {"attempts": 2}}],
    }
    gw = GatewayProcess(config, tmp_path, "redispatch").start()
    try:
        wait_listening("127.0.0.1", admin_port, 10, gw.proc)
        yield gw, AdminClient(admin_port), a, b
    finally:
        try:
            os.kill(a.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        gw.stop()
        a.stop()
        b.stop()


def _client_loop(gw, stop: threading.Event, results: list, method: str) -> None:
    c = gw.client(timeout=30)
    try:
        for _ in range(MAX_REQUESTS_PER_THREAD):
            if stop.is_set():
                break
            t0 = time.monotonic()
            try:
                r = c.request(method, "/x", body=b"x" if method == "POST" else None)
                results.append((t0, time.monotonic() - t0, r.status, r.json().get("cluster")))
                if r.closes:
                    c.close()
                    c = gw.client(timeout=30)
            except OSError as exc:
                results.append((t0, time.monotonic() - t0, None, repr(exc)))
                c.close()
                c = gw.client(timeout=30)
            time.sleep(0.005)
    finally:
        c.close()


def _run_hang(gw, a, method: str, threads: int) -> tuple[list, float]:
    stop = threading.Event()
    results: list = []
    workers = [threading.Thread(target=_client_loop, args=(gw, stop, results, method))
               for _ in range(threads)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.0)
        os.kill(a.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        time.sleep(STOPPED_FOR)
        os.kill(a.pid, signal.SIGCONT)
        time.sleep(1.0)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=40)
    return results, stopped_at


def test_idempotent_requests_leave_a_hung_endpoint_once_it_is_ejected(setup):
    gw, admin, a, _ = setup
    admin.wait("/services/default/web", lambda s: s["serving"] == 2)
    results, stopped_at = _run_hang(gw, a, "GET", THREADS)
    failed = [r for r in results if r[2] != 200]
    slowest = max(r[1] for r in results)
    caught = [r for r in results if r[0] <= stopped_at + BOUND and r[0] + r[1] > stopped_at + 0.2]
    metrics = admin.request("GET", "/metrics")[2].decode()
    moved = next(float(line.split()[-1]) for line in metrics.splitlines()
                 if line.startswith("gateway_redispatched_total"))
    print(f"\nSIGSTOP of A, GET x {THREADS} threads: {len(results)} requests, {len(failed)} failed, "
          f"slowest {slowest:.2f} s (bound {BOUND:.1f} s), {int(moved)} re-dispatched")
    assert len(results) > 200
    assert not failed, failed[:5]
    assert slowest <= BOUND, sorted(r[1] for r in results)[-5:]
    assert moved >= 1 and caught        # requests were caught on A and moved, not just avoided it


def test_non_idempotent_requests_keep_waiting(setup):
    gw, admin, a, _ = setup
    admin.wait("/services/default/web", lambda s: s["serving"] == 2)
    results, _ = _run_hang(gw, a, "POST", 2)
    on_a = [r for r in results if r[3] == "a"]
    slowest_on_a = max(r[1] for r in on_a)
    print(f"\nSIGSTOP of A, POST x 2 threads: slowest answer from A {slowest_on_a:.2f} s")
    assert not [r for r in results if r[2] != 200]
    # A POST caught on A was answered by A after SIGCONT, not sent again to B.
    assert slowest_on_a > STOPPED_FOR - 1.5


def test_requests_leave_an_endpoint_removed_from_its_source(setup):
    """No health check sees it (the next one is far off): the endpoint leaves the service
    because a reload drops its source, and the GETs waiting on it go to B at once."""
    import yaml
    gw, admin, a, _ = setup
    admin.wait("/services/default/web", lambda s: s["serving"] == 2)
    stop = threading.Event()
    results: list = []
    workers = [threading.Thread(target=_client_loop, args=(gw, stop, results, "GET")) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.5)
        os.kill(a.pid, signal.SIGSTOP)
        time.sleep(0.3)                 # well inside one check interval: A is still serving
        config = dict(gw.config)
        config["sources"] = [s for s in config["sources"] if s["name"] != "cluster-a"]
        gw.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        reloaded = time.monotonic()
        os.kill(gw.pid, signal.SIGHUP)
        admin.wait("/services/default/web", lambda s: len(s["endpoints"]) == 1)
        time.sleep(1.0)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=40)
        os.kill(a.pid, signal.SIGCONT)
    waited = max(r[0] + r[1] for r in results if r[0] < reloaded) - reloaded
    print(f"\nA removed by a reload while SIGSTOPped: the last request sent before it ended "
          f"{waited:.2f} s after the reload")
    assert not [r for r in results if r[2] != 200]
    assert waited < 1.5
