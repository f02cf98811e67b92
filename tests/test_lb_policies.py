"""Load-balancing policies of EndpointTable (compiled), and end to end through a gateway.

Compiled: each policy's distribution, its respect for flags, exclude and priority levels;
ring_hash's stickiness and remap bound (removing one of N endpoints moves only its keys,
~1/N; a flagged endpoint's keys move, the others stay).  End to end: with two endpoints,
one answering 20 ms slower, least_request and peak_ewma send it < 30% of the requests of
concurrent clients; ring_hash on a header keeps each user on one endpoint.
"""
from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from gateway.config import ConfigError, parse_config
from support import GatewayProcess, TinyServer, read_request_head

from _speedups.table import EndpointTable, hash_bytes

pytestmark = pytest.mark.timeout(60)


class _Ep:
    def __init__(self, key, cluster="a", weight=1):
        self.key, self.cluster, self.weight = key, cluster, weight


def _eps(n, weights=None):
    return [_Ep((f"10.0.{i >> 8}.{i & 255}", 80), weight=(weights or {}).get(i, 1)) for i in range(n)]


KEYS = [hash_bytes(b"user-%d" % k) for k in range(20_000)]


def _owners(t: EndpointTable, keys=KEYS) -> list:
    out = []
    for h in keys:
        t.set_key(h)
        out.append(t.endpoint(t.pick()).key)
    return out


@pytest.mark.parametrize("policy", ["random", "least_request", "peak_ewma", "ring_hash"])
def test_weighted_distribution(policy):
    t = EndpointTable(_eps(4, {0: 2}), policy=policy)
    if policy == "ring_hash":
        counts = Counter(_owners(t))
        n = len(KEYS)
        keys = [e.key for e in t.endpoints]
        shares = [counts[k] / n for k in keys]
    else:
        counts = Counter(t.pick() for _ in range(20_000))
        shares = [counts[i] / 20_000 for i in range(4)]
    # Weight 2 of a total of 5: 40%, the others 20% each.
    assert shares[0] == pytest.approx(0.4, abs=0.04), shares
    assert all(s == pytest.approx(0.2, abs=0.04) for s in shares[1:]), shares


@pytest.mark.parametrize("policy", ["random", "least_request", "peak_ewma", "ring_hash", "round_robin"])
def test_flags_exclude_and_levels_are_respected(policy):
    t = EndpointTable(_eps(6), policy=policy)
    t.update(t.endpoints, [0, 0, 0, 1, 1, 1])
    t.set_loads([(0, 10_000)])
    t.set_flags(1, 1)
    picked = set()
    for k in range(300):
        t.set_key(KEYS[k])
        picked.add(t.pick([0]))
    assert picked == {2}                    # level 0 only; 1 flagged, 0 excluded
    picked = set()
    for k in range(300):
        t.set_key(KEYS[k])
        picked.add(t.pick([0, 2]))
    assert picked <= {3, 4, 5} and picked   # level 0 has nothing left: level 1
    for i in range(6):
        t.set_flags(i, 1)
    assert t.pick() == -1


def test_least_request_prefers_fewer_in_flight():
    t = EndpointTable(_eps(2), policy="least_request")
    for _ in range(5):
        t.acquire(0)
    assert {t.pick() for _ in range(100)} == {1}


def test_peak_ewma_prefers_the_faster_and_takes_peaks_at_once():
    # pick() decays the estimates with the monotonic clock: observations are stamped with it.
    now = time.monotonic()
    t = EndpointTable(_eps(2), policy="peak_ewma", decay=1.0)
    t.observe(0, 0.020, now)
    t.observe(1, 0.001, now)
    assert {t.pick() for _ in range(100)} == {1}
    t.observe(1, 0.050, now + 0.1)          # a peak counts in full, at once
    assert t.ewma(1) == 0.050
    t.observe(1, 0.001, now + 10.0)         # ten decay times later the peak is forgotten
    assert t.ewma(1) < 0.002


def test_peak_ewma_estimate_decays_without_news_so_a_recovered_endpoint_is_picked_again():
    """Finagle's and Linkerd's rule (issue #26): an endpoint that was slow and got no request
    since keeps a high estimate only for a while; then it wins the pick and can prove itself."""
    now = time.monotonic()
    t = EndpointTable(_eps(2), policy="peak_ewma", decay=1.0)
    t.observe(0, 0.300, now)                # slow a moment ago: avoided
    t.observe(1, 0.001, now)
    assert {t.pick() for _ in range(100)} == {1}
    t2 = EndpointTable(_eps(2), policy="peak_ewma", decay=1.0)
    t2.observe(0, 0.300, now - 8.0)         # as slow, but 8 decay times ago: 0.3 e^-8 < 1 ms
    t2.observe(1, 0.001, time.monotonic())
    assert {t2.pick() for _ in range(100)} == {0}


@pytest.mark.parametrize("n", [10, 100])
def test_ring_hash_remaps_only_the_removed_endpoints_keys(n):
    t = EndpointTable(_eps(n), policy="ring_hash")
    before = _owners(t)
    removed = t.endpoints[n // 2].key
    t.update([e for e in t.endpoints if e.key != removed])
    after = _owners(t)
    moved = sum(a != b for a, b in zip(before, after)) / len(KEYS)
    on_removed = sum(a == removed for a in before) / len(KEYS)
    assert moved == on_removed              # nothing else moved ...
    assert moved <= 1 / n + 0.03            # ... and about 1/N did


def test_ring_hash_moves_a_failed_endpoints_keys_and_keeps_the_others():
    t = EndpointTable(_eps(10), policy="ring_hash")
    before = _owners(t)
    t.set_flags(3, 1)
    after = _owners(t)
    failed = t.endpoints[3].key
    assert all(a == b for a, b in zip(before, after) if a != failed)
    assert all(b != failed for b in after)
    t.set_flags(3, 0)
    assert _owners(t) == before             # back: its keys return to it


def test_ring_is_the_same_in_every_process():
    # Points come from FNV-1a of the key's text, not hash(): a fixed value here.
    assert hash_bytes(b"x-user") == hash_bytes(bytes(b"x-user"))
    assert hash_bytes(b"") != hash_bytes(b"a")
    import subprocess
    import sys
    code = ("from _speedups.table import hash_bytes; print(hash_bytes(b'user-1'))")
    out = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONHASHSEED": str(seed)}, check=True).stdout for seed in (1, 2)}
    assert out == {f"{hash_bytes(b'user-1')}\n"}


@pytest.mark.parametrize("lb, error", [
    ({"policy": "fastest"}, "services[0].lb.policy:"),
    ({"policy": "ring_hash"}, "services[0].lb.policy: ring_hash needs a key"),
    ({"policy": "random", "header": "x-user"}, "services[0].lb.header: only for policy ring_hash"),
    ({"policy": "ring_hash", "header": "x-user", "source_ip": True},
     "services[0].lb.source_ip: use one key of header, source_ip and cookie"),
    ({"policy": "least_request", "decay": "5s"}, "services[0].lb.decay: only for policy peak_ewma"),
    ({"policy": "ring_hash", "cookie": {"name": "s", "domain": "x"}}, "services[0].lb.cookie"),
    ({"policy": "random", "cookie": {"name": "s"}}, "services[0].lb.cookie: only for policy ring_hash"),
])
def test_bad_lb_settings_name_the_key(lb, error):
    cfg = {"services": [{"name": "s", "port": 80, "lb": lb}]}
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    assert any(m.startswith(error) for m in e.value.errors), e.value.errors


# -- end to end ----------------------------------------------------------------------------------


def _server(delay: float, name: bytes):
    body = b'{"cluster": "%s"}' % name

    def handle(conn) -> None:
        while read_request_head(conn):
            time.sleep(delay)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return handle


@pytest.fixture(scope="module")
def servers():
    fast = TinyServer("127.0.0.2", _server(0.0, b"fast"))
    slow = TinyServer("127.0.0.3", _server(0.020, b"slow"))
    yield fast, slow
    fast.stop()
    slow.stop()


def _gateway(tmp_path, servers, lb: dict) -> GatewayProcess:
    fast, slow = servers
    config = {
        "workers": 1,
        "sources": [{"name": "a", "type": "static",
                     "services": [{"name": "web", "endpoints": [fast.address, slow.address]}]}],
        "services": [{"name": "web", "port": 8000, "lb": lb}],
        "routes": [{"name": "web", "match": {"path": {"prefix": "/"}}, "service": "web"}],
    }
    return GatewayProcess(config, tmp_path, "lb").start()


def _concurrent(gw, threads: int, per_thread: int, headers=None) -> list:
    results: list = []

    def run(t: int) -> None:
        with gw.client() as c:
            for k in range(per_thread):
                h = headers(t, k) if headers else None
                r = c.request("GET", "/x", headers=h)
                results.append((h["X-User"] if h else t, r.status, r.json()["cluster"]))
    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=50)
    return results


@pytest.mark.parametrize("policy", ["least_request", "peak_ewma"])
def test_load_moves_away_from_a_slow_endpoint(tmp_path, servers, policy):
    gw = _gateway(tmp_path, servers, {"policy": policy})
    try:
        results = _concurrent(gw, 8, 60)
    finally:
        gw.stop()
    assert all(s == 200 for _, s, _ in results)
    slow = sum(1 for *_, c in results if c == "slow") / len(results)
    print(f"\n{policy}: the 20 ms slower endpoint got {slow:.1%} of {len(results)} requests")
    assert slow < 0.30


def test_ring_hash_on_a_header_keeps_each_user_on_one_endpoint(tmp_path, servers):
    gw = _gateway(tmp_path, servers, {"policy": "ring_hash", "header": "x-user"})
    try:
        results = _concurrent(gw, 4, 40, headers=lambda t, k: {"X-User": f"user-{t}-{k % 5}"})
    finally:
        gw.stop()
    assert all(status == 200 for _, status, _ in results)
    by_user: dict[str, set] = {}
    for user, _, cluster in results:
        by_user.setdefault(user, set()).add(cluster)
    # Each of the 20 users was served by one endpoint only, 8 requests each; both serve.
    assert len(by_user) == 20 and all(len(c) == 1 for c in by_user.values()), by_user
    assert set().union(*by_user.values()) == {"fast", "slow"}
