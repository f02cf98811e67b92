"""The devcluster backends' echo-basic mode (gateway.devcluster.echo_basic): what the Gateway API
conformance replay (tests/conformance) reads from its pods, checked against echo-basic's
behaviour: the echo's fields, Go's canonical header names, X-Echo-Set-Header, /status, the
retry simulation (status and TCP-reset modes), ?delay, the log line, and the h2c echo."""
from __future__ import annotations

import time

import orjson
import pytest

from support import Client, PeerClosed
from gateway.devcluster.echo_basic import EchoBasicProcess, canonical, go_duration
from gateway.devcluster.h2_backend import H2BackendProcess
from h2client import H2Client

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    log = tmp_path_factory.mktemp("echo") / "pod.log"
    process = EchoBasicProcess("127.0.0.2", 0, "ns-a", "web-backend-abc123-0", str(log)).start()
    yield process, log
    process.stop()


def get(process, target: str, headers=(), method: str = "GET"):
    with Client(process.host, process.port) as c:
        return c.request(method, target, list(headers), host="echo.test")


def test_canonical_names_and_go_durations():
    assert [canonical(n) for n in ("x-header-add", "X-UPPERCASE-ADD", "host", "not a token")] == \
        ["X-Header-Add", "X-Uppercase-Add", "Host", "not a token"]
    assert [go_duration(t) for t in ("300ms", "1s", "1m30s", "0", "1.5s", "250us")] == \
        [0.3, 1.0, 90.0, 0.0, 1.5, 0.00025]
    for bad in ("", "1", "ms", "1x", "1s 2s"):
        with pytest.raises(ValueError):
            go_duration(bad)


def test_echo_answers_as_echo_basic(pod):
    process, log = pod
    resp = get(process, "/a/b?q=1&r=2", [("x-foo", "1"), ("X-Foo", "2"),
                                         ("X-Echo-Set-Header", "Some-Header:v1,lower:v2,Some-Header:v3")])
    assert resp.status == 200 and resp.header("Content-Type") == "application/json"
    body = resp.json()
    assert {k: body[k] for k in ("path", "host", "method", "proto", "namespace", "pod", "ingress", "service")} == {
        "path": "/a/b?q=1&r=2", "host": "echo.test", "method": "GET", "proto": "HTTP/1.1", "namespace": "ns-a",
        "pod": "web-backend-abc123-0", "ingress": "", "service": ""}
    assert body["httpPort"] == str(process.port)
    assert body["headers"]["X-Foo"] == ["1", "2"] and "Host" not in body["headers"]
    assert resp.header("Some-Header") == "v1,v3" and resp.header("lower") == "v2"   # names kept as given
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert "Echoing back request made to /a/b?q=1&r=2 to client (127.0.0.1:" in log.read_text()


def test_status_health_and_delay(pod):
    process, _ = pod
    resp = get(process, "/status/503")
    assert (resp.status, resp.body, resp.header("Content-Type")) == (503, b"", None)
    assert get(process, "/status/5x3").status == 400
    assert get(process, "/status/503?x=1").status == 400        # the whole request-target must match
    assert (get(process, "/health").status, get(process, "/health").body) == (200, b"OK")
    started = time.monotonic()
    assert get(process, "/slow?delay=300ms").status == 200
    assert time.monotonic() - started >= 0.3
    assert get(process, "/slow?delay=never").status == 500


def test_retry_simulation(pod):
    process, _ = pod
    statuses = [get(process, "/retry/x?uuid=u1&succeedAfter=2&responseCode=503").status for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert get(process, "/retry/x?succeedAfter=1").status == 400     # no uuid
    # TCP failure mode: the first attempt of a uuid is reset, the next one echoed
    with pytest.raises((ConnectionResetError, PeerClosed)):
        get(process, "/retry/x?uuid=u2&succeedAfter=1")
    assert get(process, "/retry/x?uuid=u2&succeedAfter=1").json()["path"] == "/retry/x?uuid=u2&succeedAfter=1"


def test_h2c_echo():
    process = H2BackendProcess("127.0.0.2", 0, "c", "infra-backend-v1-abc-1", namespace="ns-b").start()
    try:
        with H2Client(process.host, process.port) as c:
            answer = c.get("/x?y=1", [("x-a", "1")])
        body = orjson.loads(bytes(answer.body))
        assert (answer.status, body["proto"], body["path"], body["namespace"], body["pod"], body["headers"]["X-A"]) == \
            (200, "HTTP/2.0", "/x?y=1", "ns-b", "infra-backend-v1-abc-1", ["1"])
    finally:
        process.stop()
