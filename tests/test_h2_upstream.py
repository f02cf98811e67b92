"""HTTP/2 to upstreams (``services[].protocol``): HTTP/1.1 clients through a real gateway
process to h2c backends (``gateway.devcluster.h2_backend``, the ``h2`` library) and to a
grpcio server; h2 over TLS; workers: 2.

Each backend counts the TCP connections it accepted and the most streams it had at once
on one connection, so multiplexing and the concurrency limit are read from the server side.
"""
from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import orjson
import pytest

from gateway.devcluster.h2_backend import H2BackendProcess
from h2client import H2Client
from support import (MiB, Client, GatewayProcess, encode_chunked, http10_get, pattern_bytes, peak_rss_bytes, rss_bytes,
                     start_with_admin, static_source)

pytestmark = pytest.mark.timeout(120)


def _config(services: dict[str, tuple[list[str], dict]], **top) -> dict:
    """One static source; service name -> (endpoints, its settings); routed by Host <name>.test."""
    return {
        "sources": [static_source("zone-a", {name: eps for name, (eps, _) in services.items()})],
        "services": [{"name": name, "port": 1, **opts} for name, (_, opts) in services.items()],
        "routes": [{"name": name, "match": {"host": f"{name}.test"}, "service": name,
                    "retries": {"attempts": 3}}
                   for name in services],
        **top,
    }


def _stats(gw: GatewayProcess, host: str) -> dict:
    """The backend's counters, asked through the gateway (so its connections are the gateway's)."""
    return _get(gw, host, "/_backend/stats").json()


@contextmanager
def _in_front(config: dict, workdir, *processes):
    """A gateway started with ``config`` in front of ``processes`` (started); all stopped after."""
    gw = None
    try:
        gw = GatewayProcess(config, workdir).start()
        yield gw
    finally:
        if gw is not None:
            gw.stop()
        for process in processes:
            process.stop()


def _get(gw: GatewayProcess, host: str, target: str, **kw):
    with gw.client() as c:
        return c.request(kw.pop("method", "GET"), target, host=host, **kw)


@pytest.fixture(scope="module")
def h2gw(tmp_path_factory):
    """h2c backends: "wide" (100 streams, 2 connections per endpoint) and "narrow" (2 streams,
    1 connection)."""
    wide = H2BackendProcess("127.0.0.1", 0, "a", "wide-0").start()
    narrow = H2BackendProcess("127.0.0.1", 0, "a", "narrow-0", max_streams=2).start()
    with _in_front(_config({
        "wide": ([wide.address], {"protocol": "h2c", "http2_connections": 2}),
        "narrow": ([narrow.address], {"protocol": "h2c", "http2_connections": 1}),
    }), tmp_path_factory.mktemp("h2gw"), wide, narrow) as gw:
        yield gw, wide, narrow


def test_get_and_post_with_content_length_and_chunked_bodies(h2gw):
    gw, _, _ = h2gw
    with gw.client() as c:
        r = c.request("GET", "/hello?x=1", host="wide.test", headers={"X-Custom": "yes"})
        assert r.status == 200
        seen = r.json()
        assert seen["method"] == "GET" and seen["path"] == "/hello?x=1"
        assert seen["headers"]["x-custom"] == "yes" and seen["headers"]["te"] == "trailers"
        assert seen["headers"]["x-forwarded-proto"] == "http" and "via" in seen["headers"]
        assert r.header("transfer-encoding") == "chunked"      # no content-length from it
        body = pattern_bytes(0, 300_000)
        for chunked in (False, True):
            r = c.request("POST", "/upload", host="wide.test", body=body, chunked=chunked)
            assert r.status == 200
            assert r.json() == {"received": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                                "trailers": {}}
        c.send(Client.build("POST", "/echo", host="wide.test", chunked=False)[:-4]
               + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + encode_chunked([b"a" * 10, b"b" * 70000]))
        r = c.read_response()
        assert r.status == 200 and r.body == b"a" * 10 + b"b" * 70000
        r = c.request("GET", "/bytes/5000", host="wide.test")
        assert r.status == 200 and r.header("content-length") == "5000"
        assert r.body == pattern_bytes(0, 5000)
        r = c.request("HEAD", "/bytes/10", host="wide.test")
        assert r.status == 200 and r.header("content-length") == "10" and r.body == b""
        r = c.request("GET", "/stream/100000", host="wide.test")
        assert r.status == 200 and r.body == pattern_bytes(0, 100000)
        # The HTTP/2 trailers reach an HTTP/1.1 client in the last chunk.
        assert r.trailers == [("x-checksum", hashlib.sha256(r.body).hexdigest())]


def test_an_http10_client_gets_an_http2_upstreams_body_of_unknown_length_unframed(h2gw):
    """No content-length from the HTTP/2 upstream and an HTTP/1.0 client: no chunked coding
    for it (RFC 9112 6.1), the payload as it comes, ended by the close; the trailers go nowhere."""
    gw, _, _ = h2gw
    head, body = http10_get(gw.port, "/stream/100000", host="wide.test")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert body == pattern_bytes(0, 100000)


def test_a_response_head_past_max_response_head_is_a_502_and_the_connection_goes_on(h2gw):
    """limits.max_response_head (64 KiB) is the decoded header list's limit: nghttp2 resets
    that stream; the others on the connection go on."""
    gw, _, _ = h2gw
    with gw.client() as c:
        r = c.request("GET", "/big-head/70000", host="wide.test")
        assert r.status == 502
    assert _get(gw, "wide.test", "/big-head/1000").status == 200
    assert _stats(gw, "wide.test")["connections"] == 1                # the same connection


def test_large_bodies_both_ways_with_a_slow_reader_keep_memory_bounded(h2gw):
    gw, _, _ = h2gw
    size = 48 * MiB
    before = rss_bytes(gw.pid)
    with gw.client(timeout=60) as c:
        head = Client.build("POST", "/upload", host="wide.test", headers={"Content-Length": str(size)})
        c.send(head)
        digest = hashlib.sha256()
        for offset in range(0, size, MiB):
            piece = pattern_bytes(offset, MiB)
            digest.update(piece)
            c.send(piece)
        r = c.read_response()
        assert r.json() == {"received": size, "sha256": digest.hexdigest(), "trailers": {}}
        c.send(Client.build("GET", f"/bytes/{size}", host="wide.test"))
        resp = c.read_head()
        assert resp.status == 200
        got = hashlib.sha256()
        n = c.read_body(resp, "GET", got.update, piece=256 * 1024, pace=lambda n: time.sleep(0.004))
        assert n == size and got.hexdigest() == hashlib.sha256(pattern_bytes(0, size)).hexdigest()
    grown = peak_rss_bytes(gw.pid) - before
    print(f"{size // MiB} MiB up and down, slow reader: gateway peak RSS {grown / MiB:.1f} MiB above the start")
    assert grown < 16 * MiB, f"RSS grew by {grown / MiB:.1f} MiB for {size // MiB} MiB each way"


def test_concurrent_requests_share_few_upstream_connections(h2gw):
    gw, wide, _ = h2gw
    before = _stats(gw, "wide.test")["connections"]
    n = 150                         # the backend takes 100 streams per connection
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda i: _get(gw, "wide.test", "/delay/1"), range(n)))
    assert [r.status for r in answers] == [200] * n
    used = {r.json()["connection"] for r in answers}
    opened = _stats(gw, "wide.test")["connections"] - before
    print(f"{n} concurrent requests: {len(used)} upstream connections used, {opened} opened")
    assert len(used) <= 2 and opened <= 2


def test_the_backends_max_concurrent_streams_is_respected(h2gw):
    gw, _, narrow = h2gw
    n = 10
    started = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda i: _get(gw, "narrow.test", "/delay/0.2"), range(n)))
    elapsed = time.monotonic() - started
    assert [r.status for r in answers] == [200] * n
    stats = _stats(gw, "narrow.test")
    assert stats["peak_streams"] <= 2, stats
    assert elapsed >= (n / 2) * 0.2 * 0.9        # two at a time on one connection
    assert len({r.json()["connection"] for r in answers}) == 1


@pytest.fixture
def pair(tmp_path):
    """Two h2c endpoints of one service, and a gateway in front."""
    a = H2BackendProcess("127.0.0.2", 0, "a", "a-0").start()
    b = H2BackendProcess("127.0.0.3", 0, "a", "b-0").start()
    with _in_front(_config({"svc": ([a.address, b.address], {"protocol": "h2c"})}), tmp_path, a, b) as gw:
        yield gw, a, b


def _load(gw: GatewayProcess, seconds: float, threads: int, method: str = "GET") -> list[int]:
    """Requests in a loop from ``threads`` clients (keep-alive); every status."""
    statuses: list[int] = []
    deadline = time.monotonic() + seconds

    def run():
        with gw.client() as c:
            while time.monotonic() < deadline:
                statuses.append(c.request(method, "/delay/0.05", host="svc.test",
                                          body=b"x" if method == "POST" else None).status)
    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    return statuses, workers


def test_goaway_mid_traffic_loses_no_request(pair):
    gw, a, b = pair
    statuses, workers = _load(gw, 3.0, 8)
    posts, post_workers = _load(gw, 3.0, 2, "POST")
    for _ in range(5):
        time.sleep(0.5)
        a.go_away()                 # streams in flight on it were not processed: retried
    for w in workers + post_workers:
        w.join()
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    # Unprocessed (GOAWAY) is safe to retry even for POST.
    assert posts and set(posts) == {200}, sorted(set(posts))
    entries = gw.log.wait_count(len(statuses) + len(posts))
    assert not [e for e in entries if e.get("status") != 200]
    retried = [e for e in entries if e.get("attempts", 1) > 1]
    print(f"GOAWAY x5 under load: {len(entries)} requests, {len(retried)} retried, "
          f"{sum(e['method'] == 'POST' for e in retried)} of them POST")
    assert retried                  # the GOAWAYs did catch requests in flight


def test_a_crashed_backend_is_retried_elsewhere_then_503(pair):
    gw, a, b = pair
    assert {_get(gw, "svc.test", "/").json()["pod"] for _ in range(4)} == {"a-0", "b-0"}
    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(_get, gw, "svc.test", "/delay/1") for _ in range(4)]
        time.sleep(0.3)
        a.kill()
        assert [f.result().status for f in pending] == [200] * 4    # GET: retried on b
    assert {_get(gw, "svc.test", "/").json()["pod"] for _ in range(4)} == {"b-0"}
    b.kill()
    r = _get(gw, "svc.test", "/")
    assert r.status == 503 and b"failed" in r.body


def test_grpc_call_from_an_http1_client(tmp_path):
    grpc_backend = pytest.importorskip("gateway.devcluster.grpc_backend")
    server = grpc_backend.GrpcBackendProcess("127.0.0.1", 0, "a", "echo-a-0").start()
    with _in_front(_config({"echo": ([server.address], {"protocol": "h2c"})}), tmp_path, server) as gw:
        message = b"hello"
        frame = b"\x00" + struct.pack(">I", len(message)) + message
        with gw.client() as c:
            r = c.request("POST", "/gateway.test.Echo/Unary", host="echo.test", body=frame,
                          headers={"Content-Type": "application/grpc", "TE": "trailers"})
        assert r.status == 200 and r.header("content-type") == "application/grpc"
        assert r.header("transfer-encoding") == "chunked"
        length = struct.unpack(">I", r.body[1:5])[0]
        answer = orjson.loads(r.body[5:5 + length])
        assert answer["cluster"] == "a" and answer["request"] == "hello"
        assert ("grpc-status", "0") in r.trailers, r.trailers


def test_workers_2(tmp_path):
    backend = H2BackendProcess("127.0.0.1", 0, "a", "w-0").start()
    config = _config({"svc": ([backend.address], {"protocol": "h2c", "http2_connections": 1})}, workers=2)
    with _in_front(config, tmp_path, backend) as gw:
        n = 40
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda i: _get(gw, "svc.test", "/delay/0.2"), range(n)))
        assert [r.status for r in answers] == [200] * n
        assert _stats(gw, "svc.test")["connections"] <= 2      # one per worker


def test_h2_over_tls(tmp_path):
    """protocol: h2 is TLS with ALPN h2; a server that does not pick h2 cannot be spoken to
    (503, as a failed connect), and is not sent garbage."""
    from support import Pki
    from test_tls import HttpsUpstream
    pki = Pki(tmp_path / "pki")
    leaf = pki.leaf("h2.test")
    backend = H2BackendProcess("127.0.0.1", 0, "a", "tls-0", cert=str(leaf.cert),
                               key=str(leaf.key)).start()
    http1_only = HttpsUpstream(leaf)            # TLS, no ALPN: HTTP/1.1
    tls = {"ca": str(pki.ca), "sni": "h2.test"}
    config = _config({"svc": ([backend.address], {"protocol": "h2", "tls": tls}),
                      "old": ([http1_only.address()], {"protocol": "h2", "tls": tls})})
    with _in_front(config, tmp_path / "gw", backend, http1_only) as gw:
        with gw.client() as c:
            for _ in range(3):
                r = c.request("GET", "/over-tls", host="svc.test")
                assert r.status == 200 and r.json()["path"] == "/over-tls"
        assert _stats(gw, "svc.test")["connections"] == 1
        started = time.monotonic()
        r = _get(gw, "old.test", "/")
        assert r.status == 503 and time.monotonic() - started < 5
        assert "did not agree to HTTP/2" in gw.output()


def test_a_bad_protocol_names_its_key_path():
    from gateway.config import ConfigError, parse_config
    with pytest.raises(ConfigError, match=r"services\[0\]\.protocol: must be one of auto, http1, h2c, h2"):
        parse_config(_config({"svc": (["127.0.0.1:1"], {"protocol": "h3"})}))
    with pytest.raises(ConfigError, match=r"services\[0\]\.http2_connections"):
        parse_config(_config({"svc": (["127.0.0.1:1"], {"http2_connections": 0})}))


def _k8s_service(name: str, port: int, app_protocol: str | None) -> dict:
    port_spec = {"name": "web", "port": port, "targetPort": port, "protocol": "TCP"}
    if app_protocol:
        port_spec["appProtocol"] = app_protocol
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [port_spec]}}


def _k8s_slice(service: str, ip: str, port: int, app_protocol: str | None) -> dict:
    port_spec = {"name": "web", "port": port, "protocol": "TCP"}
    if app_protocol:
        port_spec["appProtocol"] = app_protocol
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [port_spec]}


def test_app_protocol_from_the_local_api_server_selects_h2c(tmp_path):
    """protocol: auto follows the port's appProtocol: the EndpointSlice's, else the Service's."""
    from kubernetes import client

    from gateway.devcluster.apiserver import ApiServerProcess
    from gateway.devcluster.backend import BackendProcess
    from gateway.devcluster.cluster import api_client
    api = ApiServerProcess(tmp_path / "api", name="k").start()
    h2 = H2BackendProcess("127.0.0.2", 0, "k", "h2-0").start()
    grpc_named = H2BackendProcess("127.0.0.3", 0, "k", "h2-1").start()
    plain = BackendProcess("127.0.0.4", 0, "k", "http1-0").start()
    kube = api_client(api.kubeconfig, api.context)
    gw = None
    try:
        core, discovery = client.CoreV1Api(kube), client.DiscoveryV1Api(kube)
        # (service, backend, appProtocol of the Service port, of the slice port)
        for name, backend, on_service, on_slice in (("h2", h2, "kubernetes.io/h2c", "kubernetes.io/h2c"),
                                                    ("grpc", grpc_named, "grpc", None),
                                                    ("plain", plain, None, None)):
            core.create_namespaced_service("default", _k8s_service(name, backend.port, on_service))
            discovery.create_namespaced_endpoint_slice(
                "default", _k8s_slice(name, backend.host, backend.port, on_slice))
        stored = core.read_namespaced_service("h2", "default").spec.ports[0].app_protocol
        assert stored == "kubernetes.io/h2c"
        config = {
            "sources": [{"name": "k", "type": "kubernetes", "kubeconfig": str(api.kubeconfig),
                         "context": api.context, "namespaces": ["default"]}],
            "services": [{"name": n, "port": "web"} for n in ("h2", "grpc", "plain")],
            "routes": [{"name": n, "match": {"host": f"{n}.test"}, "service": n}
                       for n in ("h2", "grpc", "plain")],
        }
        gw, admin = start_with_admin(config, tmp_path / "gw", "k8s")
        deadline = time.monotonic() + 15
        while _get(gw, "h2.test", "/").status == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        for host, pod in (("h2.test", "h2-0"), ("grpc.test", "h2-1"), ("plain.test", "http1-0")):
            r = _get(gw, host, "/who")
            assert r.status == 200 and r.json()["pod"] == pod, (host, r.status, r.body)
        # HTTP/2 was spoken to the h2c ones (an h2c server cannot answer HTTP/1.1).
        assert _get(gw, "h2.test", "/who").json()["headers"]["te"] == "trailers"
        shown = {s["name"]: (s["protocol"], s["protocols_spoken"]) for s in admin.get("/services")}
        assert shown == {"h2": ("auto", ["h2c"]), "grpc": ("auto", ["h2c"]), "plain": ("auto", ["http1"])}
    finally:
        if gw is not None:
            gw.stop()
        kube.close()
        for proc in (h2, grpc_named, plain):
            proc.stop()
        api.stop()


def test_idle_connections_close_after_upstream_idle(tmp_path):
    backend = H2BackendProcess("127.0.0.1", 0, "a", "idle-0").start()
    # "probe" reaches the same backend over its own connections (a pool per HTTP/2 service).
    config = _config({"svc": ([backend.address], {"protocol": "h2c"}),
                      "probe": ([backend.address], {"protocol": "h2c"})}, timeouts={"upstream_idle": "1s"})
    with _in_front(config, tmp_path, backend) as gw:
        with ThreadPoolExecutor(4) as pool:
            assert {r.status for r in pool.map(lambda i: _get(gw, "svc.test", "/delay/0.2"), range(4))} == {200}
        assert _stats(gw, "probe.test")["open"] == 2
        deadline = time.monotonic() + 10
        while _stats(gw, "probe.test")["open"] != 1:     # the probe's own, new one
            assert time.monotonic() < deadline, "the idle HTTP/2 connection was not closed"
            time.sleep(1.2)
        assert _get(gw, "svc.test", "/again").status == 200     # a new one is opened


def test_a_removed_endpoints_connections_close_and_protocol_changes_on_reload(tmp_path):
    import os
    import signal

    from test_workers import rewrite_config
    a = H2BackendProcess("127.0.0.2", 0, "a", "a-0").start()
    b = H2BackendProcess("127.0.0.3", 0, "a", "b-0").start()
    from gateway.devcluster.backend import BackendProcess
    plain = BackendProcess("127.0.0.4", 0, "a", "http1-0").start()
    config = _config({"svc": ([a.address], {"protocol": "h2c"}),
                      "probe": ([a.address], {"protocol": "h2c"})})
    with _in_front(config, tmp_path, a, b, plain) as gw:
        assert _get(gw, "svc.test", "/").json()["pod"] == "a-0"
        assert _stats(gw, "probe.test")["open"] == 2
        rewrite_config(gw, _config({"svc": ([b.address, plain.address], {"protocol": "h2c"}),
                                    "probe": ([a.address], {"protocol": "h2c"})}))
        os.kill(gw.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _stats(gw, "probe.test")["open"] != 1:
            assert time.monotonic() < deadline, "the removed endpoint's connection stayed open"
            time.sleep(0.1)
        # The new endpoint list: b speaks h2c; the HTTP/1.1 one cannot (502, retried on b).
        assert {_get(gw, "svc.test", "/").json()["pod"] for _ in range(4)} == {"b-0"}
        rewrite_config(gw, _config({"svc": ([plain.address], {"protocol": "http1"}),
                                    "probe": ([a.address], {"protocol": "h2c"})}))
        os.kill(gw.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while (r := _get(gw, "svc.test", "/")).status != 200 or r.json()["pod"] != "http1-0":
            assert time.monotonic() < deadline, r.body      # b until the reload, then HTTP/1.1
            time.sleep(0.1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_http2_clients_to_h2c_upstreams(h2gw, tmp_path):
    """HTTP/2 both sides (curl --http2-prior-knowledge): trailers and bodies go through."""
    gw, _, _ = h2gw
    base = f"http://127.0.0.1:{gw.port}"
    body = tmp_path / "got"
    out = subprocess.run(["curl", "-sS", "-v", "--http2-prior-knowledge", "-H", "Host: wide.test",
                          "-o", str(body), f"{base}/stream/300000"], capture_output=True, text=True, timeout=30)
    assert "< HTTP/2 200" in out.stderr
    checksum = hashlib.sha256(pattern_bytes(0, 300000)).hexdigest()
    assert f"< x-checksum: {checksum}" in out.stderr       # the trailer, as a trailer
    assert body.read_bytes() == pattern_bytes(0, 300000)
    upload = tmp_path / "up"
    upload.write_bytes(pattern_bytes(0, 5 * MiB))
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-H", "Host: wide.test",
                          "--data-binary", f"@{upload}", f"{base}/upload"],
                         capture_output=True, text=True, timeout=30)
    assert orjson.loads(out.stdout) == {"received": 5 * MiB,
                                        "sha256": hashlib.sha256(upload.read_bytes()).hexdigest(),
                                        "trailers": {}}


def test_request_trailers_reach_an_h2c_upstream_as_trailers(h2gw):
    """Client-streaming over HTTP/2 both sides: the client's trailers arrive as trailers, after
    the body; fields that frame or route a message are not taken from them."""
    gw, _, _ = h2gw
    body = pattern_bytes(0, 200_000)
    with H2Client("127.0.0.1", gw.port) as c:
        c.authority = "wide.test"
        sid = c.request("POST", "/upload", [], body, end=False)
        c.conn.send_headers(sid, [("x-checksum", hashlib.sha256(body).hexdigest()), ("x-count", "1"),
                                  ("content-type", "text/evil")], end_stream=True)
        c.flush()
        answer, = c.wait(sid)
    assert answer.status == 200, answer
    assert orjson.loads(bytes(answer.body)) == {
        "received": len(body), "sha256": hashlib.sha256(body).hexdigest(),
        "trailers": {"x-checksum": hashlib.sha256(body).hexdigest(), "x-count": "1"}}


def test_http_health_checks_of_http2_endpoints_are_made_over_http2(tmp_path):
    """type: http to an h2c endpoint: the probe speaks HTTP/2 (an HTTP/1.1 GET would fail)."""
    from support import start_with_admin
    up = H2BackendProcess("127.0.0.2", 0, "a", "up-0").start()
    check = {"type": "http", "path": "/healthz", "interval": "300ms", "timeout": "250ms",
             "jitter": "0s", "healthy_threshold": 1, "unhealthy_threshold": 1}
    config = _config({"svc": ([up.address], {"protocol": "h2c", "health_check": check}),
                      "bad": ([up.address], {"protocol": "h2c",
                                             "health_check": {**check, "path": "/status/404"}})})
    gw, admin = start_with_admin(config, tmp_path, "checks")
    try:
        def states(body):
            return {s["name"]: [e["healthy"] for e in s["endpoints"]] for s in body}
        seen = admin.wait("/services", lambda body: states(body) == {"svc": [True], "bad": [False]})
        bad = next(s for s in seen if s["name"] == "bad")["endpoints"][0]
        assert "status 404" in str(bad["causes"]) or "status 404" in str(bad), bad
    finally:
        gw.stop()
        up.stop()


def test_a_client_that_stops_reading_stalls_only_its_own_stream(h2gw):
    """narrow: one connection, two streams. A 32 MiB download nobody reads holds one stream
    (its window, not the body); requests on the other stream keep going."""
    gw, _, _ = h2gw
    with gw.client(timeout=30) as stalled:
        stalled.send(Client.build("GET", f"/bytes/{32 * MiB}", host="narrow.test"))
        head = stalled.read_head()
        assert head.status == 200
        time.sleep(0.5)                             # the gateway and the backend fill up
        before = rss_bytes(gw.pid)
        with gw.client() as c:
            for i in range(20):
                assert c.request("GET", f"/small/{i}", host="narrow.test").status == 200
        assert rss_bytes(gw.pid) - before < 8 * MiB
        got = hashlib.sha256()
        assert stalled.read_body(head, "GET", got.update) == 32 * MiB      # and it resumes
        assert got.hexdigest() == hashlib.sha256(pattern_bytes(0, 32 * MiB)).hexdigest()
