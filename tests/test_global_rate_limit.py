"""Global rate limits (``rate_limit.scope: global``) in a real Redis (Debian's redis-server,
started here on a free port): two gateway replicas, ``workers: 2`` each, share one budget.

* Requests spread over both replicas and all four workers: the allowed ones are the limit
  (within 5%), not twice or four times it; the 429s carry Retry-After and the RateLimit fields.
* Keyed by client: each address has its own bucket across the replicas.
* Redis goes away: "open" lets requests through, "closed" answers 503; /status and /metrics
  say so; Redis back: the workers dial again and the limit holds again.
* ``scope: global`` without a ``redis`` section is a config error naming the key.
"""
from __future__ import annotations

import re
import shutil
import socket
import subprocess

import pytest

from support import free_port, start_backend, start_with_admin, static_source, stop_process, wait_listening, wait_until
from gateway.config import ConfigError, parse_config
from h2client import H2Client

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server (scripts/setup.sh)")]

LIMIT = 60


class Redis:
    def __init__(self, workdir) -> None:
        self.port = free_port("127.0.0.1")
        self.workdir = workdir
        self.proc = None

    def start(self) -> "Redis":
        # DEBUG SLEEP (a slow Redis) needs the debug command, off by default since Redis 7
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                                      "--enable-debug-command", "local"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening("127.0.0.1", self.port, 10, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def _answers_ping(port: int) -> bool:
    """Does Redis answer a PING within 100 ms?"""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.settimeout(0.1)
        s.sendall(b"PING\r\n")
        try:
            return s.recv(16).startswith(b"+PONG")
        except TimeoutError:
            return False


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = Redis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def config(backend, redis_port: int, failure_mode: str = "open") -> dict:
    def route(name, prefix, **limit):
        return {"name": name, "match": {"path": {"prefix": prefix}}, "service": "web",
                "rate_limit": {"per": "1h", "scope": "global", **limit}}
    return {
        "workers": 2,
        "redis": {"address": f"127.0.0.1:{redis_port}", "timeout": "200ms", "failure_mode": failure_mode},
        "sources": [static_source("zone-a", {"web": [backend.address]})],
        "services": [{"name": "web", "port": 80}],
        "routes": [route("global", "/global", requests=LIMIT),
                   route("per-client", "/per-client", requests=3, key="client"),
                   {"name": "rest", "match": {"path": {"prefix": "/"}}, "service": "web"}],
    }


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, redis):
    backend = start_backend("127.0.0.2", "zone-a", "global-0")
    started = []
    try:
        for name in ("replica-a", "replica-b"):
            started.append(start_with_admin(config(backend, redis.port), tmp_path_factory.mktemp(name), name))
        for _, admin in started:
            wait_until(lambda: (admin.get("/status")["ratelimit_store"] or {}).get("workers_connected") == 2,
                       timeout=20, message="both workers connected to Redis")
        yield started
    finally:
        for proc, _ in started:
            proc.stop()
        backend.stop()


def test_two_replicas_share_one_budget(replicas):
    statuses = []
    for i in range(3 * LIMIT):
        g, _ = replicas[i % 2]
        with g.client() as c:               # a new connection each: every worker of both takes some
            r = c.request("GET", "/global", {"X-Request-Id": f"global-{i}"})
        statuses.append(r.status)
        if r.status == 429:
            last = r
    allowed = statuses.count(200)
    assert abs(allowed - LIMIT) <= LIMIT * 0.05, (allowed, statuses)
    assert statuses.count(429) == 3 * LIMIT - allowed
    retry_after = int(last.header("retry-after"))
    assert 1 <= retry_after <= 3600
    assert last.header("ratelimit-policy") == f'"global";q={LIMIT};w=3600'
    assert last.header("ratelimit") == f'"global";r=0;t={retry_after}'


def test_a_client_key_is_one_bucket_across_replicas(replicas):
    for source in ("127.0.0.7", "127.0.0.8"):
        statuses = []
        for i in range(5):
            g, _ = replicas[i % 2]
            with g.client(source=source) as c:
                statuses.append(c.request("GET", "/per-client").status)
        assert statuses == [200, 200, 200, 429, 429], (source, statuses)


def test_http2_streams_wait_for_the_store_together(replicas):
    """Several streams of one HTTP/2 connection under a global limit, in flight at once:
    each waits for its own answer, and the connection goes on serving."""
    g, _ = replicas[0]
    with H2Client(g.host, g.port, source="127.0.0.10") as c:
        sids = [c.request("GET", f"/per-client/h2-{i}") for i in range(5)]
        answers = c.wait(*sids)
        assert sorted(a.status for a in answers) == [200, 200, 200, 429, 429]
        assert c.get("/elsewhere").status == 200


def test_a_slow_redis_is_a_failure_and_late_answers_go_nowhere(replicas, redis):
    """Redis blocked for a second (DEBUG SLEEP): checks past the 200 ms timeout follow the
    failure mode; the connection is given up on (its late replies must not answer the next
    requests) and dialled again; then the limit holds as before."""
    g, admin = replicas[0]
    failures = admin.get("/status")["ratelimit_store"]["store_failures"]
    sleeper = subprocess.Popen(["redis-cli", "-p", str(redis.port), "DEBUG", "SLEEP", "1.5"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: not _answers_ping(redis.port), timeout=10, message="Redis asleep")
        with g.client(source="127.0.0.11") as c:
            r = c.request("GET", "/per-client/slow")
        assert r.status == 200                  # failure_mode open: through
    finally:
        sleeper.wait(timeout=10)
    wait_until(lambda: admin.get("/status")["ratelimit_store"]["store_failures"] > failures, timeout=10,
               message="the timed-out check counted")
    wait_until(lambda: admin.get("/status")["ratelimit_store"]["workers_connected"] == 2, timeout=20,
               message="workers dialled again")
    with g.client(source="127.0.0.12") as c:
        assert [c.request("GET", "/per-client/after").status for _ in range(5)] == [200, 200, 200, 429, 429]


def test_redis_outage_follows_the_failure_mode_and_shows(tmp_path, replicas, redis):
    """Replica A fails open; a third gateway on the same Redis fails closed."""
    (g_open, admin_open), _ = replicas
    backend = start_backend("127.0.0.2", "zone-a", "global-closed")
    g_closed, admin_closed = start_with_admin(config(backend, redis.port, "closed"), tmp_path, "closed")
    try:
        wait_until(lambda: (admin_closed.get("/status")["ratelimit_store"] or {}).get("workers_connected") == 2,
                   timeout=20, message="the closed gateway connected")
        redis.stop()
        for admin in (admin_open, admin_closed):
            wait_until(lambda: admin.get("/status")["ratelimit_store"]["workers_connected"] == 0, timeout=20,
                       message="workers saw Redis go")
        with g_open.client() as c:
            assert [c.request("GET", "/per-client/x").status for _ in range(6)] == [200] * 6
        with g_closed.client() as c:
            r = c.request("GET", "/per-client/x", {"X-Request-Id": "closed-1"})
        assert r.status == 503
        assert g_closed.log.by_ids(["closed-1"])["closed-1"]["error"] == \
            "rate limit store unavailable (redis.failure_mode: closed)"
        store = wait_until(lambda: (s := admin_open.get("/status")["ratelimit_store"])["failed_open"] >= 6 and s,
                           timeout=10, message="the workers' reports")
        assert store["failure_mode"] == "open" and "Connection refused" in store["error"]

        def refused() -> float:
            metrics = admin_closed.request("GET", "/metrics")[2].decode()
            return float(re.search(r'gateway_ratelimit_store_failures_total\{action="refused"\} (\S+)', metrics)[1])
        wait_until(lambda: refused() >= 1, timeout=10, message="refused counted in /metrics")
        redis.start()
        for admin in (admin_open, admin_closed):
            wait_until(lambda: admin.get("/status")["ratelimit_store"]["workers_connected"] == 2, timeout=30,
                       message="workers dialled Redis again")
        with g_open.client(source="127.0.0.9") as c:
            assert [c.request("GET", "/per-client/y").status for _ in range(4)] == [200, 200, 200, 429]
    finally:
        g_closed.stop()
        backend.stop()


def test_a_global_limit_needs_redis():
    with pytest.raises(ConfigError) as e:
        parse_config({"services": [{"name": "web", "port": 80}],
                      "routes": [{"name": "r", "service": "web", "rate_limit": {"requests": 5, "scope": "global"}}]})
    assert 'routes[0].rate_limit.scope: a global limit needs the top-level "redis" section' in str(e.value)
