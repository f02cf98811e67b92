"""Limits and timeouts through a real gateway with small settings: each breach gets its status,
closes what must be closed, leaves other clients served, and writes an access-log line.

``LIMIT_CASES`` feeds the table in ``docs/security.md`` (see ``test_security_smuggling.py``).
"""
from __future__ import annotations

import select
import socket
import time

import pytest

from support import Client, GatewayProcess, PeerClosed, static_source
from test_security_smuggling import RecordingUpstream

MAX_REQUEST_HEAD = 4096
MAX_URI = 1024
MAX_HEADERS = 20
MAX_BODY = 10_000
MAX_RESPONSE_HEAD = 4096
MAX_REQUESTS = 3
MAX_CONNECTIONS = 8
HEADER_TIMEOUT = 1.0
BODY_IDLE = 1.0

LIMITS = {"max_request_head": MAX_REQUEST_HEAD, "max_uri": MAX_URI, "max_headers": MAX_HEADERS,
          "max_body": MAX_BODY, "max_response_head": MAX_RESPONSE_HEAD,
          "max_requests_per_connection": MAX_REQUESTS}

# (name, what is sent, the gateway's answer, what the access log gets): the doc table's rows.
LIMIT_CASES = [
    ("max_body", f"Content-Length {MAX_BODY + 1} > limits.max_body ({MAX_BODY})",
     "413 before any upstream byte, close", "status 413 + error"),
    ("max_body", f"chunked body passing limits.max_body ({MAX_BODY} payload bytes)",
     "413, close; the upstream connection that had the head is reset", "status 413 + error"),
    ("max_body", f"Content-Length exactly {MAX_BODY}", "forwarded (200)", "status 200"),
    ("max_body", f"chunked, exactly {MAX_BODY} payload bytes in 100-byte chunks",
     "forwarded (200): chunk framing is not counted", "status 200"),
    ("max_uri", f"request target of {MAX_URI + 1} bytes > limits.max_uri ({MAX_URI})",
     "414, close", "status 414 + error"),
    ("max_uri", f"request line of {MAX_REQUEST_HEAD * 2} bytes, no line end yet", "414, close",
     "status 414 + error"),
    ("max_request_head", f"complete head over limits.max_request_head ({MAX_REQUEST_HEAD})",
     "431, close", "status 431 + error"),
    ("max_request_head", "incomplete head over the limit (no blank line yet)", "431, close",
     "status 431 + error"),
    ("max_headers", f"{MAX_HEADERS + 1} field lines > limits.max_headers ({MAX_HEADERS})",
     "431, close", "status 431 + error"),
    ("max_headers", f"exactly {MAX_HEADERS} field lines", "forwarded (200)", "status 200"),
    ("max_requests_per_connection", f"{MAX_REQUESTS} requests on one connection",
     f"answer {MAX_REQUESTS} has Connection: close, then close", "one line per request"),
    ("max_connections", f"{MAX_CONNECTIONS} + 4 connections (limit {MAX_CONNECTIONS})",
     "the 4 extra closed at once; the others keep being served",
     "an access-log line per refused connection (status 0) and a warning in the gateway's log"),
    ("timeouts.downstream_header", f"head trickled a byte per 100 ms ({HEADER_TIMEOUT:g} s timeout)",
     f"408 about {HEADER_TIMEOUT:g} s after the first byte, close", "status 408 + error"),
    ("timeouts.body_idle", f"body stops for longer than {BODY_IDLE:g} s", "408, close",
     "status 408 + error"),
    ("timeouts.body_idle", f"a byte every {BODY_IDLE * 1.3:g} s", "408 after the first pause, close",
     "status 408 + error"),
    ("timeouts.body_idle", f"a byte every {BODY_IDLE / 4:g} s, longer than {BODY_IDLE:g} s in all",
     "forwarded (200): the timeout is per pause", "status 200"),
    ("max_response_head", f"upstream head over limits.max_response_head ({MAX_RESPONSE_HEAD}), "
     "its end in a later read", "502; that upstream connection closed", "status 502 + error"),
    ("max_response_head", "the same head arriving whole in one read",
     "502; that upstream connection closed", "status 502 + error"),
]

BIG_HEAD = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"b" * (MAX_RESPONSE_HEAD * 2) + b"\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture(scope="module")
def upstream():
    server = RecordingUpstream("127.0.0.8", {b"/big-head": BIG_HEAD,
                                             b"/big-head-split": (BIG_HEAD[:-100], BIG_HEAD[-100:])})
    yield server
    server.stop()


def _config(upstream, limits: dict) -> dict:
    return {
        "sources": [static_source("zone-a", {"rec": [upstream.address]})],
        "services": [{"name": "rec", "port": 80, "outlier_detection": "off"}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "rec",
                    "retries": {"attempts": 1}}],
        "limits": limits,
        "timeouts": {"downstream_header": f"{HEADER_TIMEOUT}s", "body_idle": f"{BODY_IDLE}s"},
    }


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    proc = GatewayProcess(_config(upstream, LIMITS), tmp_path_factory.mktemp("limits")).start()
    yield proc
    proc.stop()


def _rejected(gw, client: Client, status: int, mark: int, method: str = "GET") -> dict:
    """The answer is ``status`` with Connection: close, the connection ends, and the access log
    has the line with that status and an error; returns the log entry."""
    resp = client.read_response(method)
    assert resp.status == status, (resp.status, resp.body)
    assert resp.closes and resp.body.strip()
    assert client.wait_closed(5.0), "connection left open after a limit was breached"
    entry = gw.log.since(mark, 1)[0]
    assert entry["status"] == status and entry.get("error"), entry
    return entry


def _mark(gw) -> int:
    return gw.log.count()


def _logged(gw, path: str) -> dict:
    """The access-log line of the request for ``path`` (waits for it: lines are flushed every
    100 ms, so a test that sent requests waits for their lines before the next one counts)."""
    return gw.log.matching(lambda e: e.get("path") == path)[-1]


# -- body, target, head ---------------------------------------------------------------------------


def test_content_length_over_max_body_413_before_upstream(gw, upstream):
    before, mark = upstream.lengths(), _mark(gw)
    with gw.client(timeout=5.0) as client:
        client.send(Client.build("POST", "/rec/big", [("Content-Length", str(MAX_BODY + 1))]))
        entry = _rejected(gw, client, 413, mark, "POST")
    assert "max_body" in entry["error"]
    assert upstream.lengths() == before


def test_chunked_body_over_max_body_413(gw, upstream):
    mark = _mark(gw)
    with gw.client(timeout=5.0) as client:
        client.send(Client.build("POST", "/rec/big-chunked", [("Transfer-Encoding", "chunked")]))
        piece = b"%x\r\n%s\r\n" % (2000, b"x" * 2000)
        try:
            for _ in range(MAX_BODY // 2000 + 2):
                client.send(piece)
        except OSError:
            pass                        # the gateway may answer and close before the last piece
        entry = _rejected(gw, client, 413, mark, "POST")
    assert "max_body" in entry["error"]
    assert not any(r.target == b"/rec/big-chunked" for r in upstream.requests())
    assert upstream.wait(lambda conns: all(c.closed for c in conns if b"/rec/big-chunked" in c.data))


def test_body_of_exactly_max_body_is_forwarded(gw, upstream):
    with gw.client() as client:
        resp = client.request("POST", "/rec/exact", body=b"e" * MAX_BODY)
        assert resp.status == 200
    fwd = [r for r in upstream.requests() if r.target == b"/rec/exact"]
    assert len(fwd) == 1 and fwd[0].body == b"e" * MAX_BODY
    assert _logged(gw, "/rec/exact")["status"] == 200


def test_chunked_body_of_exactly_max_body_payload_is_forwarded(gw, upstream):
    """The limit counts payload, not chunk-size lines: 100 chunks add ~700 framing bytes."""
    chunks = [b"c" * 100] * (MAX_BODY // 100)
    wire = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    assert len(wire) > MAX_BODY + 500
    with gw.client() as client:
        client.send(Client.build("POST", "/rec/exact-chunked", [("Transfer-Encoding", "chunked")]) + wire)
        resp = client.read_response("POST")
        assert resp.status == 200
    fwd = [r for r in upstream.requests() if r.target == b"/rec/exact-chunked"]
    assert len(fwd) == 1
    assert _logged(gw, "/rec/exact-chunked")["status"] == 200


def test_target_over_max_uri_414(gw, upstream):
    before, mark = upstream.lengths(), _mark(gw)
    with gw.client(timeout=5.0) as client:
        client.send(Client.build("GET", "/rec/" + "u" * MAX_URI))
        _rejected(gw, client, 414, mark)
    assert upstream.lengths() == before


def test_endless_request_line_414(gw, upstream):
    before, mark = upstream.lengths(), _mark(gw)
    with gw.client(timeout=5.0) as client:
        client.send(b"GET /rec/" + b"u" * (MAX_REQUEST_HEAD * 2))
        _rejected(gw, client, 414, mark)
    assert upstream.lengths() == before


def test_head_over_max_request_head_431(gw, upstream):
    before, mark = upstream.lengths(), _mark(gw)
    fields = [(f"X-Pad-{i}", "p" * 400) for i in range(MAX_REQUEST_HEAD // 400 + 1)][:MAX_HEADERS - 1]
    with gw.client(timeout=5.0) as client:
        client.send(Client.build("GET", "/rec/big-head", fields))
        _rejected(gw, client, 431, mark)
    assert upstream.lengths() == before


def test_incomplete_head_over_max_request_head_431(gw, upstream):
    before, mark = upstream.lengths(), _mark(gw)
    with gw.client(timeout=5.0) as client:
        client.send(b"GET /rec/x HTTP/1.1\r\nHost: gw.test\r\nX-Pad: " + b"p" * (MAX_REQUEST_HEAD * 2))
        _rejected(gw, client, 431, mark)
    assert upstream.lengths() == before


def test_too_many_fields_431(gw, upstream):
    before, mark = upstream.lengths(), _mark(gw)
    fields = [(f"X-F-{i}", "v") for i in range(MAX_HEADERS)]      # + Host: one too many
    with gw.client(timeout=5.0) as client:
        client.send(Client.build("GET", "/rec/fields", fields))
        entry = _rejected(gw, client, 431, mark)
    assert "header fields" in entry["error"]
    assert upstream.lengths() == before


def test_exactly_max_headers_fields_forwarded(gw, upstream):
    fields = [(f"X-F-{i}", "v") for i in range(MAX_HEADERS - 1)]  # + Host: exactly the limit
    with gw.client() as client:
        assert client.request("GET", "/rec/fields-ok", fields).status == 200
    assert _logged(gw, "/rec/fields-ok")["status"] == 200


# -- per connection -------------------------------------------------------------------------------


def test_max_requests_per_connection_closes_after_the_last(gw):
    mark = _mark(gw)
    with gw.client() as client:
        for i in range(1, MAX_REQUESTS + 1):
            resp = client.request("GET", f"/rec/per-conn-{i}")
            assert resp.status == 200
            assert resp.closes == (i == MAX_REQUESTS), (i, resp.headers)
        assert client.wait_closed(5.0)
    entries = gw.log.since(mark, MAX_REQUESTS)
    assert [e["path"] for e in entries] == [f"/rec/per-conn-{i}" for i in range(1, MAX_REQUESTS + 1)]


@pytest.fixture
def gw_few_connections(upstream, tmp_path):
    proc = GatewayProcess(_config(upstream, {"max_connections": MAX_CONNECTIONS}), tmp_path).start()
    yield proc
    proc.stop()


def test_connections_over_max_connections_closed_others_served(gw_few_connections):
    gw = gw_few_connections
    deadline = time.monotonic() + 5        # the start-up probe connection must be gone first
    while time.monotonic() < deadline:
        with gw.client() as probe:
            if probe.request("GET", "/rec/probe").status == 200:
                break
    time.sleep(0.2)
    kept = [gw.client(timeout=5.0) for _ in range(MAX_CONNECTIONS)]
    extra = []
    try:
        for c in kept:
            assert c.request("GET", "/rec/kept").status == 200
        extra = [gw.client(timeout=5.0) for _ in range(4)]
        for c in extra:
            try:
                c.send(Client.build("GET", "/rec/extra"))
            except OSError:
                pass
            assert c.wait_closed(5.0), "a connection over max_connections was kept"
            assert not c.extra, "a connection over max_connections was answered"
        refused = gw.log.matching(lambda e: "max_connections" in (e.get("error") or ""), n=4)
        assert len(refused) == 4 and all(e["status"] == 0 for e in refused), refused
        for round_ in range(3):
            for c in kept:
                resp = c.request("GET", f"/rec/kept-{round_}")
                assert resp.status == 200 and not resp.closes
        kept.pop().close()
        deadline = time.monotonic() + 5
        while True:                         # the freed slot is usable again (bounded retries)
            with gw.client(timeout=5.0) as c:
                try:
                    if c.request("GET", "/rec/after-free").status == 200:
                        break
                except (PeerClosed, ConnectionResetError):
                    pass
            assert time.monotonic() < deadline, "a freed connection slot was not reused"
            time.sleep(0.05)
    finally:
        for c in kept + extra:
            c.close()
    assert "max_connections" in gw.output()


# -- slow clients ----------------------------------------------------------------------------------


def _trickle(client: Client, data: bytes, gap: float, limit: float) -> float:
    """Send ``data`` a byte per ``gap`` seconds until the gateway answers (or ``limit``);
    returns the seconds from the first byte to the answer becoming readable."""
    start = time.monotonic()
    for i in range(len(data)):
        try:
            client.send(data[i:i + 1])
        except OSError:
            break
        readable, _, _ = select.select([client.sock], [], [], gap)
        if readable or time.monotonic() - start > limit:
            break
    select.select([client.sock], [], [], max(0.0, limit - (time.monotonic() - start)))
    return time.monotonic() - start


def test_slowloris_head_408_after_downstream_header(gw, upstream):
    before, mark = upstream.lengths(), _mark(gw)
    with gw.client(timeout=5.0) as client:
        head = Client.build("GET", "/rec/slowloris", [("X-Pad", "s" * 200)])
        elapsed = _trickle(client, head, 0.1, HEADER_TIMEOUT + 3)
        _rejected(gw, client, 408, mark)
    assert HEADER_TIMEOUT - 0.1 <= elapsed <= HEADER_TIMEOUT + 1.0, elapsed
    assert upstream.lengths() == before


def test_body_stalled_408_after_body_idle(gw):
    mark = _mark(gw)
    with gw.client(timeout=5.0) as client:
        client.send(Client.build("POST", "/rec/stall", [("Content-Length", "100")]) + b"x" * 10)
        start = time.monotonic()
        _rejected(gw, client, 408, mark, "POST")
        elapsed = time.monotonic() - start
    assert BODY_IDLE - 0.1 <= elapsed <= BODY_IDLE + 1.0, elapsed


def test_body_slower_than_body_idle_408(gw):
    mark = _mark(gw)
    with gw.client(timeout=5.0) as client:
        client.send(Client.build("POST", "/rec/slow-body", [("Content-Length", "10")]))
        elapsed = _trickle(client, b"y" * 10, BODY_IDLE * 1.3, BODY_IDLE * 3)
        _rejected(gw, client, 408, mark, "POST")
    assert elapsed <= BODY_IDLE * 1.3 + 1.0, elapsed


def test_body_trickled_faster_than_body_idle_is_forwarded(gw, upstream):
    body = b"z" * 10
    with gw.client(timeout=10.0) as client:
        client.send(Client.build("POST", "/rec/fast-trickle", [("Content-Length", str(len(body)))]))
        start = time.monotonic()
        for i in range(len(body)):
            client.send(body[i:i + 1])
            time.sleep(BODY_IDLE / 4)
        assert time.monotonic() - start > BODY_IDLE * 2
        resp = client.read_response("POST")
        assert resp.status == 200
    fwd = [r for r in upstream.requests() if r.target == b"/rec/fast-trickle"]
    assert len(fwd) == 1 and fwd[0].body == body
    assert _logged(gw, "/rec/fast-trickle")["status"] == 200


# -- the upstream's side ---------------------------------------------------------------------------


def test_response_head_over_max_response_head_502(gw, upstream):
    """The head arrives in two reads; the first is over the limit without the head's end."""
    _upstream_head_too_large(gw, upstream, "/big-head-split")


def test_response_head_over_limit_in_one_read_502(gw, upstream):
    _upstream_head_too_large(gw, upstream, "/big-head")


def _upstream_head_too_large(gw, upstream, target: str) -> None:
    with gw.client(timeout=5.0) as client:
        resp = client.request("GET", target)
        assert resp.status == 502, (resp.status, len(resp.header("x-big") or ""))
    entry = _logged(gw, target)
    assert entry["status"] == 502 and "too large" in entry["error"], entry
    carrier = [c for c in upstream.conns if any(r.target == target.encode() for r in c.requests)]
    assert len(carrier) == 1
    assert upstream.wait(lambda conns: carrier[0].closed)
