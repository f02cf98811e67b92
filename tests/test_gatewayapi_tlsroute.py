"""TLS listeners and TLSRoutes: connections routed by the ClientHello's SNI (Passthrough: the
backend's own TLS session, never decrypted) or after the gateway's own handshake (Terminate),
to a Service that two clusters have, with failover when one cluster's backend stops answering.

Two local API servers are the two clusters; the Gateway API objects live in cluster A, the
Service ``secure`` in both (its endpoints: a TLS server on 127.0.0.2 in A, 127.0.0.3 in B).
The gateway runs two workers. Clients are the stdlib ``ssl`` module verifying against a
throwaway CA: a passthrough handshake that verifies is the backend's certificate.
"""
from __future__ import annotations

import base64
import socket
import ssl
import time
import urllib.request
from collections import Counter

import pytest
from kubernetes import client, config

from gateway.devcluster.apiserver import ApiServerProcess
from support import GatewayProcess, Pki, free_port
from support.upstreams import TinyServer
from test_gatewayapi import CONTROLLER, GW, wait_for

pytestmark = pytest.mark.timeout(120)

NS = "default"
ADDRESS = "127.0.31.1"          # the Gateway's (gateway_api.addresses)
CONNECTIONS = 20                # per check: both workers and both clusters take some
IDLE = 1.0                      # timeouts.stream_idle
MIXED_PORT = 9443               # a Passthrough and a Terminate listener


def tls_echo(name: str, pair) -> TinyServer:
    """A TLS server that says its name, then echoes lines (as a TCP backend with TLS would)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pair.cert), str(pair.key))
    return TinyServer(f"127.0.0.{2 if name == 'A' else 3}", lambda conn: _echo(context.wrap_socket(conn, server_side=True), name))


def plain_echo() -> TinyServer:
    return TinyServer("127.0.0.2", lambda conn: _echo(conn, "plain"))


def _echo(conn: socket.socket, name: str) -> None:
    with conn:
        conn.sendall(f"{name}\n".encode())
        for line in conn.makefile("rb"):
            conn.sendall(line)


def service_in(api, name: str, port: int, server: TinyServer) -> None:
    client.CoreV1Api(api).create_namespaced_service(NS, {
        "metadata": {"name": name}, "spec": {"ports": [{"name": "tls", "port": port, "targetPort": server.port}]}})
    client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(NS, {
        "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "endpoints": [{"addresses": [server.host], "conditions": {"ready": True}}],
        "ports": [{"name": "tls", "port": server.port}]})


def source(name: str, server: ApiServerProcess) -> dict:
    return {"name": name, "type": "kubernetes", "kubeconfig": str(server.kubeconfig), "context": server.context}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def backends(pki):
    pair = pki.leaf("secure.example.com")
    started = {"A": tls_echo("A", pair), "B": tls_echo("B", pair), "plain": plain_echo()}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(scope="module")
def clusters(tmp_path_factory, backends, pki):
    servers = {name: ApiServerProcess(tmp_path_factory.mktemp(name), name=name, bookmark_interval=0.5).start()
               for name in ("tlsr-a", "tlsr-b")}
    apis = {name: config.new_client_from_config(config_file=str(s.kubeconfig), context=s.context)
            for name, s in servers.items()}
    a, b = apis["tlsr-a"], apis["tlsr-b"]
    service_in(a, "secure", 443, backends["A"])
    service_in(b, "secure", 443, backends["B"])
    service_in(a, "plain", 3000, backends["plain"])
    terminate = pki.leaf("plain.example.com")
    client.CoreV1Api(a).create_namespaced_secret(NS, {
        "metadata": {"name": "plain-cert"}, "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(p.read_bytes()).decode() for k, p in
                 (("tls.crt", terminate.cert), ("tls.key", terminate.key))}})
    custom = client.CustomObjectsApi(a)
    custom.create_cluster_custom_object(GW, "v1", "gatewayclasses", {
        "metadata": {"name": "multi"}, "spec": {"controllerName": CONTROLLER}})
    custom.create_namespaced_custom_object(GW, "v1", NS, "gateways", {
        "metadata": {"name": "gw"}, "spec": {"gatewayClassName": "multi", "listeners": [
            {"name": "passthrough", "port": 443, "protocol": "TLS", "hostname": "*.example.com",
             "tls": {"mode": "Passthrough"}},
            {"name": "terminate", "port": 8443, "protocol": "TLS", "hostname": "plain.example.com",
             "tls": {"mode": "Terminate", "certificateRefs": [{"name": "plain-cert"}]}},
            # TLSRouteModeMixed: one port, a listener of each mode
            {"name": "mixed-passthrough", "port": MIXED_PORT, "protocol": "TLS", "hostname": "secure.example.com",
             "tls": {"mode": "Passthrough"}},
            {"name": "mixed-terminate", "port": MIXED_PORT, "protocol": "TLS", "hostname": "plain.example.com",
             "tls": {"mode": "Terminate", "certificateRefs": [{"name": "plain-cert"}]}}]}})
    for name, section, host, service, port in (
            ("secure", "passthrough", "secure.example.com", "secure", 443),
            ("plain", "terminate", "plain.example.com", "plain", 3000),
            ("secure-mixed", "mixed-passthrough", "secure.example.com", "secure", 443),
            ("plain-mixed", "mixed-terminate", "plain.example.com", "plain", 3000)):
        custom.create_namespaced_custom_object(GW, "v1", NS, "tlsroutes", {
            "metadata": {"name": name}, "spec": {
                "parentRefs": [{"name": "gw", "sectionName": section}], "hostnames": [host],
                "rules": [{"backendRefs": [{"name": service, "port": port}]}]}})
    yield servers, apis
    for api in apis.values():
        api.close()
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def gw(clusters, tmp_path_factory):
    servers, _ = clusters
    admin = free_port()
    proc = GatewayProcess({"workers": 2, "admin": f"127.0.0.1:{admin}", "timeouts": {"stream_idle": f"{IDLE}s"},
                           "sources": [source(name, server) for name, server in servers.items()],
                           "gateway_api": {"sources": ["tlsr-a"], "addresses": [ADDRESS]}},
                          tmp_path_factory.mktemp("gw")).start()
    proc.admin = admin
    yield proc
    proc.stop()


def talk(port: int, server_name: str, context: ssl.SSLContext) -> str:
    """The backend's name, after checking that a line goes there and back."""
    with socket.create_connection((ADDRESS, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as conn:
            lines = conn.makefile("rb")
            name = lines.readline().decode().strip()
            conn.sendall(b"ping\n")
            assert lines.readline() == b"ping\n"
            return name


def names(port: int, server_name: str, context: ssl.SSLContext, n: int = CONNECTIONS) -> Counter:
    return Counter(talk(port, server_name, context) for _ in range(n))


def served(port: int, server_name: str, context: ssl.SSLContext, n: int = CONNECTIONS,
           wanted: set[str] | None = None) -> Counter | None:
    """``names``, or None while the port is not served yet or not every ``wanted`` name answered."""
    try:
        seen = names(port, server_name, context, n)
    except OSError:
        return None
    return seen if wanted is None or set(seen) == wanted else None


def refused(port: int, server_name: str, context: ssl.SSLContext) -> bool:
    try:
        talk(port, server_name, context)
    except (OSError, AssertionError):       # ssl.SSLError, a reset, an EOF in the handshake
        return True
    return False


def route_conditions(api, name: str) -> dict:
    def ready():
        route = client.CustomObjectsApi(api).get_namespaced_custom_object(GW, "v1", NS, "tlsroutes", name)
        parents = (route.get("status") or {}).get("parents") or []
        return {c["type"]: (c["status"], c["reason"]) for c in parents[0]["conditions"]} if parents else None
    return wait_for(ready, timeout=20)


def metric(gw, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f"{name}{{{labels}}} "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_passthrough_reaches_both_clusters_by_sni_undecrypted(gw, clusters, pki):
    """The client verifies the backend's own certificate through the gateway: the TLS session is
    the backend's. Connections spread over the Service's endpoints in both clusters."""
    _, apis = clusters
    assert route_conditions(apis["tlsr-a"], "secure") == {"Accepted": ("True", "Accepted"),
                                                          "ResolvedRefs": ("True", "ResolvedRefs")}
    context = ssl.create_default_context(cafile=str(pki.ca))
    seen = wait_for(lambda: served(443, "secure.example.com", context, wanted={"A", "B"}), timeout=20)
    assert sum(seen.values()) == CONNECTIONS, seen
    # One access-log line per connection, naming the endpoint and its cluster.
    lines = gw.log.matching(lambda e: e.get("server_name") == "secure.example.com", n=CONNECTIONS)
    assert {e["upstream_cluster"] for e in lines} == {"tlsr-a", "tlsr-b"}
    line = lines[-1]
    assert (line["protocol"], line["result"], line["route"], line["upstream_service"]) == (
        "tls-passthrough", "routed", "default/secure", "default/secure")
    assert line["bytes_received"] > 5 + 200 and line["bytes_sent"] > 0     # a ClientHello and more


def test_terminate_serves_the_listener_certificate_and_sends_plain_bytes(gw, clusters, pki):
    context = ssl.create_default_context(cafile=str(pki.ca))
    assert wait_for(lambda: served(8443, "plain.example.com", context, 4), timeout=20) == {"plain": 4}


def test_every_connection_is_one_log_line_even_one_closed_at_once(gw, clusters, pki):
    """Clients that close right after the handshake (before or after the backend connect
    completes) are logged once each, with their address, and counted; the log center reads
    these lines. They connect from an address of their own, to tell their lines apart."""
    from gateway.logcenter import Reader, summarize
    context = ssl.create_default_context(cafile=str(pki.ca))
    wait_for(lambda: served(8443, "plain.example.com", context, 1), timeout=20)
    source = "127.0.0.77"

    def counted() -> float:
        return sum(metric(gw, "gateway_tls_route_connections_total", f'result="{r}"')
                   for r in ("routed", "client_closed"))
    before = counted()
    for _ in range(3):
        with context.wrap_socket(socket.create_connection((ADDRESS, 8443), timeout=5, source_address=(source, 0)),
                                 server_hostname="plain.example.com"):
            pass                                    # closed without a byte
    lines = gw.log.matching(lambda e: e.get("client") == source, n=3)
    assert len(lines) == 3 and {e["route"] for e in lines} == {"default/plain"}
    assert {e["result"] for e in lines} <= {"routed", "client_closed"}
    wait_for(lambda: counted() >= before + 3, timeout=10)
    reader = Reader()
    with open(gw.log.path, "rb") as log:
        summary = summarize(reader.entries([log]), by="server_name")
    assert {g["key"] for g in summary["groups"]} >= {"plain.example.com", "secure.example.com"}


def test_one_port_passes_one_name_through_and_terminates_another(gw, clusters, pki):
    """TLSRouteModeMixed: the ClientHello's SNI picks the listener, and with it whether the
    backend's certificate answers (passthrough) or the listener's (terminated, plain bytes to a
    backend that speaks first)."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    assert wait_for(lambda: served(MIXED_PORT, "secure.example.com", context, wanted={"A", "B"}),
                    timeout=20).total() == CONNECTIONS
    assert served(MIXED_PORT, "plain.example.com", context, 4) == {"plain": 4}
    with socket.create_connection((ADDRESS, MIXED_PORT), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="plain.example.com") as conn:
        assert conn.getpeercert()["subject"] == ((("commonName", "plain.example.com"),),)
        lines = conn.makefile("rb")
        assert lines.readline() == b"plain\n"
        conn.sendall(b"x" * 100_000 + b"\n")         # many records each way
        assert lines.readline() == b"x" * 100_000 + b"\n"
    lines = gw.log.matching(lambda e: e.get("server_name") == "plain.example.com"
                            and e.get("route") == "default/plain-mixed", n=5)
    assert {(e["protocol"], e["result"]) for e in lines} == {("tls-terminate", "routed")}


def test_the_admin_api_and_cli_list_the_tls_routes(gw, clusters):
    """GET /tls-routes and ``gateway tls-routes``: each TLSRoute on its listener, with its mode,
    address, hostnames and services."""
    import json as json_module
    import subprocess
    import sys

    def listed():
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin}/tls-routes", timeout=5) as resp:
            routes = json_module.loads(resp.read())
        return routes if len(routes) == 4 else None
    routes = {(r["name"], r["mode"]): r for r in wait_for(listed, timeout=20)}
    secure = routes[("default/secure", "Passthrough")]
    assert (secure["address"], secure["hostnames"], secure["backends"]) == (
        f"{ADDRESS}:443", ["secure.example.com"], [{"service": "default/secure", "weight": 1}])
    assert routes[("default/plain-mixed", "Terminate")]["address"] == f"{ADDRESS}:{MIXED_PORT}"
    out = subprocess.run([sys.executable, "-m", "gateway", "tls-routes", "--admin", f"http://127.0.0.1:{gw.admin}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "default/secure" in out.stdout and "Passthrough" in out.stdout and "secure.example.com" in out.stdout


def test_a_server_name_no_route_serves_is_closed_and_counted(gw, clusters, pki):
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.check_hostname = False
    wait_for(lambda: served(443, "secure.example.com", context, 1), timeout=20)    # the port is served
    before = metric(gw, "gateway_tls_route_connections_total", 'result="no_route"')
    assert refused(443, "other.example.com", context)          # under the listener's *.example.com
    assert refused(443, "secure.example.org", context)         # under no listener hostname
    wait_for(lambda: metric(gw, "gateway_tls_route_connections_total", 'result="no_route"') >= before + 2,
             timeout=10)
    refusal = gw.log.matching(lambda e: e.get("server_name") == "other.example.com")[0]
    assert (refusal["result"], refusal["upstream_host"]) == ("no_route", None)
    # Its neighbours keep working.
    assert names(443, "secure.example.com", context, 2).total() == 2


def test_a_connection_quiet_for_stream_idle_is_closed_and_a_talking_one_is_not(gw, clusters, pki):
    context = ssl.create_default_context(cafile=str(pki.ca))
    wait_for(lambda: served(443, "secure.example.com", context, 1), timeout=20)
    with context.wrap_socket(socket.create_connection((ADDRESS, 443), timeout=5),
                             server_hostname="secure.example.com") as quiet, \
            context.wrap_socket(socket.create_connection((ADDRESS, 443), timeout=5),
                                server_hostname="secure.example.com") as talking:
        quiet_lines, talking_lines = quiet.makefile("rb"), talking.makefile("rb")
        assert quiet_lines.readline() and talking_lines.readline()
        opened = time.monotonic()
        for _ in range(int(2 * IDLE / 0.25)):          # talks every 0.25 s for twice the timeout
            talking.sendall(b"still here\n")
            assert talking_lines.readline() == b"still here\n"
            time.sleep(0.25)
        quiet.settimeout(IDLE * 3)
        assert quiet_lines.readline() == b""            # closed (EOF), not timed out here
        assert time.monotonic() - opened < IDLE * 3
        talking.sendall(b"last\n")
        assert talking_lines.readline() == b"last\n"


def test_a_cluster_whose_backend_stops_loses_its_connections_and_none_fail(gw, clusters, backends, pki):
    """Cluster A's backend stops (connects refused): every connection still succeeds, on B (a
    refused connect tries another endpoint; passive health then ejects A's)."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    wait_for(lambda: served(443, "secure.example.com", context, wanted={"A", "B"}), timeout=20)
    backends["A"].stop()
    assert names(443, "secure.example.com", context, 2 * CONNECTIONS) == {"B": 2 * CONNECTIONS}


def test_failed_connects_are_reported_in_the_kinds_passive_health_counts():
    """gateway.streams names its connect failures as the request path does; passive health
    (gateway.health.state) counts only the kinds it knows."""
    from _speedups.exchange import GATEWAY_ERROR_KINDS
    from gateway import streams
    assert {streams.KIND_CONNECT, streams.KIND_CONNECT_TIMEOUT} <= GATEWAY_ERROR_KINDS
