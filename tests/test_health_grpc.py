"""Active health checks of ``type: grpc``: grpc.health.v1.Health/Check over HTTP/2.

A real gateway process probes real grpcio servers (grpcio's own health servicer): h2c,
and h2 under TLS (ALPN), each service asking about its own gRPC service name. An endpoint
whose service turns NOT_SERVING is taken out with that reason and comes back on SERVING;
an HTTP/1.1-only server fails the check.
"""
from __future__ import annotations

import time
from concurrent import futures

import pytest

grpc = pytest.importorskip("grpc")
health = pytest.importorskip("grpc_health.v1.health")
health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")

from support import free_port, start_with_admin, static_source  # noqa: E402
from test_health_tls import endpoint  # noqa: E402
from support import Pki  # noqa: E402

pytestmark = pytest.mark.timeout(60)

CHECK = {"type": "grpc", "interval": "250ms", "timeout": "200ms", "jitter": "0s",
         "healthy_threshold": 1, "unhealthy_threshold": 1}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcHealthServer:
    """A grpcio server with only the health service, on a free loopback port."""

    def __init__(self, credentials=None) -> None:
        self.servicer = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        address = "127.0.0.1:0"
        self.port = (self.server.add_secure_port(address, credentials) if credentials
                     else self.server.add_insecure_port(address))
        self.server.start()

    def set(self, service: str, status) -> None:
        self.servicer.set(service, status)

    def stop(self) -> None:
        self.server.stop(grace=None)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pki = Pki(tmp_path_factory.mktemp("pki"))
    leaf = pki.leaf("grpc.test")
    plain = GrpcHealthServer()
    secure = GrpcHealthServer(grpc.ssl_server_credentials([(leaf.key.read_bytes(), leaf.cert.read_bytes())]))
    for server in (plain, secure):
        server.set("", SERVING)
        server.set("pkg.Up", SERVING)
        server.set("pkg.Down", NOT_SERVING)
    http1 = free_port()         # an HTTP/1.1-only server
    import http.server
    import threading
    web = http.server.ThreadingHTTPServer(("127.0.0.1", http1), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    services = {"up": (plain.port, "pkg.Up", None), "down": (plain.port, "pkg.Down", None),
                "whole": (plain.port, "", None), "unknown": (plain.port, "pkg.Nobody", None),
                "secure": (secure.port, "pkg.Up", {"ca": str(pki.ca), "sni": "grpc.test"}),
                "http1": (http1, "", None)}
    config = {
        "sources": [static_source("zone-a", {n: [f"127.0.0.1:{port}"] for n, (port, _, _) in services.items()})],
        "services": [{"name": n, "port": port, "health_check": {**CHECK, "grpc_service": svc},
                      **({"tls": tls} if tls else {})} for n, (port, svc, tls) in services.items()],
        "routes": [{"name": "up", "match": {"path": {"prefix": "/"}}, "service": "up"}],
    }
    gw, gw.admin = start_with_admin(config, tmp_path_factory.mktemp("gw"), "health-grpc")
    try:
        yield gw, plain
    finally:
        gw.stop()
        plain.stop()
        secure.stop()
        web.shutdown()
        web.server_close()


def wait_for(gw, service: str, healthy: bool, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        ep = endpoint(gw, service)
        if ep["healthy"] == healthy or time.monotonic() > deadline:
            return ep
        time.sleep(0.05)


def test_serving_endpoints_stay_healthy_over_h2c_and_h2(setup):
    gw, _ = setup
    time.sleep(1.0)                         # ~4 probes each, unhealthy after any one failure
    for name in ("up", "whole", "secure"):
        ep = endpoint(gw, name)
        assert ep["healthy"] and ep["last_error"] is None, (name, ep)


def test_not_serving_and_unknown_services_fail_with_the_reason(setup):
    gw, _ = setup
    ep = wait_for(gw, "down", healthy=False)
    assert not ep["healthy"] and ep["last_error"] == "NOT_SERVING", ep
    ep = wait_for(gw, "unknown", healthy=False)
    assert ep["last_error"].startswith("grpc-status 5"), ep        # NOT_FOUND


def test_an_http1_only_server_fails_the_check(setup):
    gw, _ = setup
    ep = wait_for(gw, "http1", healthy=False)
    assert not ep["healthy"], ep
    assert ep["last_error"].startswith(("not an HTTP/2 answer", "connection closed")), ep


def test_an_endpoint_turning_not_serving_is_taken_out_and_comes_back(setup):
    gw, server = setup
    assert wait_for(gw, "up", healthy=True)["healthy"]
    server.set("pkg.Up", NOT_SERVING)
    try:
        ep = wait_for(gw, "up", healthy=False)
        assert not ep["healthy"] and ep["last_error"] == "NOT_SERVING", ep
    finally:
        server.set("pkg.Up", SERVING)
    ep = wait_for(gw, "up", healthy=True)
    assert ep["healthy"], ep
