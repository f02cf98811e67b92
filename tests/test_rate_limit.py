"""Rate limits and IP filters on file routes (``routes[].rate_limit``, ``routes[].ip_filter``):
a real gateway with ``workers: 2``, devcluster backends, clients on several loopback
addresses.

* One budget per replica: requests spread over both workers get exactly the burst, not
  twice it (the workers share the buckets in a memfd).
* Keyed by client address and by a header: each key has its own bucket.
* Over the limit: 429 with Retry-After, RateLimit-Policy and RateLimit; the access log
  entry says why; /metrics counts it per route (``gateway_route_denied_total``).
* IP filter: a denied network and an address outside ``allow`` get 403; others pass.
* A bad section is refused with its key path.
"""
from __future__ import annotations

import re

import pytest

from support import (AdminClient, Client, connection_owners, start_backend, start_with_admin, static_source,
                     wait_until)
from gateway.config import ConfigError, parse_route

pytestmark = pytest.mark.timeout(60)

HOUR = "1h"         # a refill interval far longer than a test: the burst is all there is


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    backend = start_backend("127.0.0.2", "zone-a", "limits-0")
    route = {"service": "web"}
    config = {
        "workers": 2,
        "sources": [static_source("zone-a", {"web": [backend.address]})],
        "services": [{"name": "web", "port": 80}],
        "routes": [
            {"name": "shared", "match": {"path": {"prefix": "/shared"}}, **route,
             "rate_limit": {"requests": 10, "per": HOUR}},
            {"name": "per-client", "match": {"path": {"prefix": "/per-client"}}, **route,
             "rate_limit": {"requests": 3, "per": HOUR, "key": "client"}},
            {"name": "per-key", "match": {"path": {"prefix": "/per-key"}}, **route,
             "rate_limit": {"requests": 2, "per": HOUR, "key": "header:x-api-key"}},
            {"name": "refill", "match": {"path": {"prefix": "/refill"}}, **route,
             "rate_limit": {"requests": 20, "per": "1s", "burst": 1}},
            {"name": "browser", "match": {"path": {"prefix": "/browser"}}, **route,
             "cors": {"allow_origins": ["https://app.example.com"]}, "rate_limit": {"requests": 1, "per": HOUR}},
            {"name": "inside", "match": {"path": {"prefix": "/inside"}}, **route,
             "ip_filter": {"allow": ["127.0.0.0/8"], "deny": ["127.0.0.3"]}},
            {"name": "rest", "match": {"path": {"prefix": "/"}}, **route},
        ],
    }
    proc, admin = start_with_admin(config, tmp_path_factory.mktemp("limits"), "limits")
    yield proc, admin
    proc.stop()
    backend.stop()


def spread_connections(g, admin: AdminClient, n: int = 12) -> list[Client]:
    """``n`` kept-alive connections, at least one held by each worker (the kernel spreads
    accepts over the workers' shared listener)."""
    pids = [w["pid"] for w in admin.get("/status")["workers"]]
    clients = []
    for _ in range(40):
        c = g.client()
        assert c.request("GET", "/warm").status == 200
        clients.append(c)
        if len(clients) >= n and set(connection_owners(g.port, pids).values()) == set(pids):
            return clients
    raise AssertionError(f"connections never reached both workers: {connection_owners(g.port, pids)}")


def test_workers_share_one_budget(gw):
    g, admin = gw
    clients = spread_connections(g, admin)
    try:
        statuses = [clients[i % len(clients)].request("GET", "/shared", {"X-Request-Id": f"shared-{i}"}).status
                    for i in range(30)]
    finally:
        for c in clients:
            c.close()
    assert statuses.count(200) == 10 and statuses.count(429) == 20, statuses


def test_over_the_limit_is_429_with_its_fields_logged_and_counted(gw):
    g, admin = gw
    with g.client() as c:
        for _ in range(3):
            c.request("GET", "/per-client/x")
        r = c.request("GET", "/per-client/x", {"X-Request-Id": "limited-1"})
    assert r.status == 429
    retry_after = int(r.header("retry-after"))
    assert 1 <= retry_after <= 3600
    assert r.header("ratelimit-policy") == '"per-client";q=3;w=3600'
    assert r.header("ratelimit") == f'"per-client";r=0;t={retry_after}'
    entry = g.log.by_ids(["limited-1"])["limited-1"]
    assert entry["status"] == 429 and entry["error"].startswith("rate limited: route per-client"), entry
    assert not entry.get("upstream_host")

    def denied() -> dict:
        text = admin.request("GET", "/metrics")[2].decode()
        return {m[0]: float(m[1]) for m in re.findall(
            r'gateway_route_denied_total\{route="per-client",reason="(\w+)"\} (\S+)', text)}
    counted = wait_until(lambda: (d := denied()).get("rate_limited", 0) >= 1 and d, timeout=10)
    assert counted == {"rate_limited": 1.0, "unauthenticated": 0.0, "forbidden": 0.0}


def test_a_browser_can_read_the_429(gw):
    """The route's CORS fields come with its edge policy's answers too: without them a
    browser hides the 429 (and its Retry-After) from the page's script."""
    g, _ = gw
    origin = {"Origin": "https://app.example.com"}
    with g.client() as c:
        assert c.request("GET", "/browser", origin).status == 200
        r = c.request("GET", "/browser", origin)
    assert r.status == 429 and r.header("retry-after")
    assert r.header("access-control-allow-origin") == "https://app.example.com" and r.header("vary") == "Origin"


def test_a_client_key_gives_each_address_its_bucket(gw):
    g, _ = gw
    for source in ("127.0.0.5", "127.0.0.6"):
        with g.client(source=source) as c:
            statuses = [c.request("GET", "/per-client/y").status for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429], (source, statuses)


def test_a_header_key_gives_each_value_its_bucket(gw):
    g, _ = gw
    with g.client() as c:
        got = {key: [c.request("GET", "/per-key", {"X-Api-Key": key}).status for _ in range(3)]
               for key in ("alpha", "beta")}
        without = [c.request("GET", "/per-key").status for _ in range(3)]
    assert got == {"alpha": [200, 200, 429], "beta": [200, 200, 429]}
    assert without == [200, 200, 429]       # no header: one more key, with its own bucket


def test_the_bucket_refills_at_the_rate(gw):
    """20 per second, burst 1: a second request at once is refused; 50 ms later one is due."""
    g, _ = gw
    with g.client() as c:
        assert c.request("GET", "/refill").status in (200, 429)
        wait_until(lambda: c.request("GET", "/refill").status == 200, timeout=5, interval=0.06)
        assert c.request("GET", "/refill").status == 429
        assert wait_until(lambda: c.request("GET", "/refill").status == 200, timeout=5, interval=0.06)


def test_ip_filter_denies_and_allows(gw):
    g, _ = gw
    with g.client(source="127.0.0.3") as c:
        r = c.request("GET", "/inside", {"X-Request-Id": "ip-denied"})
        assert r.status == 403
        assert c.request("GET", "/elsewhere").status == 200     # other routes are not filtered
    with g.client(source="127.0.0.4") as c:
        assert c.request("GET", "/inside").status == 200
    entry = g.log.by_ids(["ip-denied"])["ip-denied"]
    assert entry["status"] == 403 and "not allowed on route inside" in entry["error"], entry


@pytest.mark.parametrize("section, error", [
    ({"rate_limit": {"per": "1s"}}, "rate_limit.requests: required"),
    ({"rate_limit": {"requests": 0}}, "rate_limit.requests: must be"),
    ({"rate_limit": {"requests": 5, "key": "cookie:x"}},
     'rate_limit.key: must be "none", "client", "path" or "header:<name>", got "cookie:x"'),
    ({"rate_limit": {"requests": 1, "per": "1h", "burst": 100}},
     "rate_limit: burst x per / requests must be at most 86400 seconds"),
    ({"ip_filter": {"allow": ["10.0.0.1/8"]}},
     'ip_filter.allow[0]: invalid network "10.0.0.1/8": 10.0.0.1/8 has host bits set (did you mean 10.0.0.0/8?)'),
    ({"ip_filter": {}}, "ip_filter: needs allow or deny networks"),
])
def test_a_bad_policy_names_its_key(section, error):
    with pytest.raises(ConfigError) as e:
        parse_route({"name": "r", "service": "web", **section})
    assert error in str(e.value), str(e.value)


def test_processes_racing_for_one_bucket_take_exactly_its_burst():
    """Two processes take from one shared bucket at once, as fast as they can: together they
    get the burst and the few tokens refilled meanwhile (one per 0.432 s), never more (every
    take is one compare-and-swap on the shared word)."""
    import subprocess
    import sys
    import time
    from _speedups.policy import SharedBuckets
    buckets = SharedBuckets(slots=1024)
    script = (
        "import sys\n"
        "from _speedups.http import find_head_end, parse_request\n"
        "from _speedups.policy import RateLimit, SharedBuckets\n"
        "data = b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'\n"
        "head = parse_request(data, find_head_end(data, 0), 100)\n"
        "limit = RateLimit(SharedBuckets(int(sys.argv[1]), 1024), 'race', 200000, 86400.0, 200000)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"                    # start together
        "print(sum(limit(head, b'') is None for _ in range(300000)))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(buckets.fd)], pass_fds=[buckets.fd],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline() == "ready\n"
    started = time.monotonic()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    allowed = [int(p.communicate(timeout=60)[0]) for p in procs]
    refilled = int((time.monotonic() - started) / 0.432) + 1
    assert 200000 <= sum(allowed) <= 200000 + refilled and min(allowed) > 0, (allowed, refilled)
