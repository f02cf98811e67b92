"""The client address behind trusted proxies (``http.trusted_proxies``), through a real gateway.

Clients connect from chosen loopback addresses (Linux routes all of 127/8 to ``lo``): from
127.0.0.5, a "load balancer" inside the trusted networks, and from 127.0.0.1, an untrusted
peer.  What the gateway decided is read in three places: the access log's ``client`` (and
``peer`` when they differ), and the X-Real-IP and X-Forwarded-For the backend received
(its /headers echoes them).
"""
from __future__ import annotations

import itertools

import orjson
import pytest

from support import GatewayProcess, static_source

LB = "127.0.0.5"                        # a trusted proxy
STRANGER = "127.0.0.1"                  # not in the trusted networks


def config(backend_a, trusted: dict | None) -> dict:
    cfg = {
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address]})],
        "services": [{"name": "httpbin", "port": 80}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}],
    }
    if trusted is not None:
        cfg["http"] = {"trusted_proxies": trusted}
    return cfg


@pytest.fixture(scope="module")
def gw(backend_a, tmp_path_factory):
    proc = GatewayProcess(config(backend_a, {"cidrs": [f"{LB}/32", "10.0.0.0/8", "2001:db8::/32"]}),
                          tmp_path_factory.mktemp("xff-cidrs")).start()
    yield proc
    proc.stop()


_ids = itertools.count()


def send(gw, source: str, headers: list[tuple[str, str]]):
    """(the access-log entry, the headers the backend got, lower-case names) for one request."""
    rid = f"xff-{next(_ids)}"
    with gw.client(source=source) as client:
        resp = client.request("GET", "/headers", [("X-Request-Id", rid), *headers])
    assert resp.status == 200, resp.body
    seen = {k.lower(): v for k, v in resp.json()["headers"].items()}
    return gw.log.by_ids([rid])[rid], seen


# (peer, X-Forwarded-For lines, the client decided, why); also a table in docs/security.md.
XFF_CASES = [
    (LB, ["203.0.113.7"], "203.0.113.7", "the trusted proxy's entry"),
    (LB, ["198.51.100.9, 203.0.113.7, 10.1.2.3"], "203.0.113.7",
     "walked from the right: the trusted hop skipped, the client's own claim on the left ignored"),
    (LB, ["198.51.100.9", "203.0.113.7,10.1.2.3"], "203.0.113.7", "two field lines are one list"),
    (LB, [], LB, "no header: the peer"),
    (LB, ["10.0.0.9, 10.0.0.8"], "10.0.0.9", "every entry trusted: the leftmost"),
    (LB, ["203.0.113.7:4711"], "203.0.113.7", "a port is not part of the address"),
    (LB, ["[2001:db9::7]:443, 2001:db8::1"], "2001:db9::7", "IPv6, bracketed with a port"),
    (LB, ['evil", "status": 1, "x": "y, 10.0.0.8'], "10.0.0.8",
     "not an address: the walk stops at the nearest trusted hop (the log line stays JSON)"),
    (LB, ["unknown"], LB, "not an address, no trusted hop before it: the peer"),
    (STRANGER, ["203.0.113.7"], STRANGER, "an untrusted peer's header proves nothing"),
    (STRANGER, ["10.0.0.1"], STRANGER, "not even when it names a trusted address"),
    (STRANGER, [f"{LB}, 10.0.0.1"], STRANGER, "nor a chain of them"),
]


@pytest.mark.parametrize("source, xff, client, why", XFF_CASES, ids=[c[3] for c in XFF_CASES])
def test_client_address(gw, source, xff, client, why):
    entry, seen = send(gw, source, [("X-Forwarded-For", v) for v in xff])
    assert entry["client"] == client
    assert seen["x-real-ip"] == client
    # X-Forwarded-For still gets the peer appended, to whatever came in.
    assert seen["x-forwarded-for"] == ", ".join([*xff, source])
    if client == source:
        assert "peer" not in entry
    else:
        assert entry["peer"] == source


def test_log_line_stays_json_whatever_the_header(gw):
    entry, _ = send(gw, LB, [("X-Forwarded-For", '1.2.3.4"}, {"client": "6.6.6.6')])
    assert entry["client"] == LB            # read back with orjson: the line parsed
    orjson.dumps(entry)


def test_client_cannot_set_x_real_ip(gw):
    _, seen = send(gw, STRANGER, [("X-Real-IP", "203.0.113.7")])
    assert seen["x-real-ip"] == STRANGER
    _, seen = send(gw, LB, [("X-Real-IP", "198.51.100.1"), ("X-Forwarded-For", "203.0.113.7")])
    assert seen["x-real-ip"] == "203.0.113.7"


@pytest.fixture(scope="module")
def gw_default(backend_a, tmp_path_factory):
    proc = GatewayProcess(config(backend_a, None), tmp_path_factory.mktemp("xff-none")).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize("source", [LB, STRANGER])
def test_default_trusts_nobody(gw_default, source):
    entry, seen = send(gw_default, source, [("X-Forwarded-For", "203.0.113.7")])
    assert entry["client"] == source and "peer" not in entry
    assert seen["x-real-ip"] == source
    assert seen["x-forwarded-for"] == f"203.0.113.7, {source}"


@pytest.fixture(scope="module")
def gw_hops(backend_a, tmp_path_factory):
    proc = GatewayProcess(config(backend_a, {"hops": 2}), tmp_path_factory.mktemp("xff-hops")).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize("xff, client", [
    (["198.51.100.9, 203.0.113.7, 10.1.2.3"], "203.0.113.7"),   # the 2nd from the right
    (["203.0.113.7, 10.1.2.3"], "203.0.113.7"),
    (["10.1.2.3"], STRANGER),                                   # fewer entries than hops: the peer
    (["garbage, 10.1.2.3"], STRANGER),
    ([], STRANGER),
])
def test_hops(gw_hops, xff, client):
    entry, seen = send(gw_hops, STRANGER, [("X-Forwarded-For", v) for v in xff])
    assert (entry["client"], seen["x-real-ip"]) == (client, client)
    assert seen["x-forwarded-for"] == ", ".join([*xff, STRANGER])
