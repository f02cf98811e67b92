"""HTTPS listeners of a Gateway: ``tls.certificateRefs`` to kubernetes.io/tls Secrets, read from
the local API server with the official client, served by two worker processes (SNI by the
listener's hostname), rotated with no restart, and the listener status the spec asks for
(ResolvedRefs False with InvalidCertificateRef or RefNotPermitted).

Clients are the stdlib ``ssl`` module verifying against a throwaway CA (test_tls.Pki).
"""
from __future__ import annotations

import base64

import pytest
from kubernetes import client, config

from support import GatewayProcess, free_port
from gateway.devcluster.apiserver import ApiServerProcess
from test_gatewayapi import CONTROLLER, GW, add_backend_service, kube_source, wait_for
from support import Pki
from test_tls import TlsClient, client_context, handshake

pytestmark = pytest.mark.timeout(90)

NS = "default"
CONNECTIONS = 12        # handshakes per check: with two workers, both take some (SO_REUSEPORT)


def tls_secret(name: str, pair, namespace: str = NS) -> dict:
    data = {"tls.crt": pair.cert.read_bytes(), "tls.key": pair.key.read_bytes()}
    return {"metadata": {"name": name, "namespace": namespace}, "type": "kubernetes.io/tls",
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def https_listener(name: str, hostname: str, secret: str, namespace: str | None = None) -> dict:
    ref = {"kind": "Secret", "name": secret, **({"namespace": namespace} if namespace else {})}
    return {"name": name, "port": 443, "protocol": "HTTPS", "hostname": hostname,
            "tls": {"mode": "Terminate", "certificateRefs": [ref]}}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def pairs(pki):
    return {"site": pki.leaf("site.example.com"), "site-next": pki.leaf("site.example.com", tag="next"),
            "shared": pki.leaf("shared.example.com")}


@pytest.fixture(scope="module")
def api(tmp_path_factory, backend_a, pairs):
    server = ApiServerProcess(tmp_path_factory.mktemp("api"), name="gwtls", bookmark_interval=0.5).start()
    with config.new_client_from_config(config_file=str(server.kubeconfig), context=server.context) as c:
        core, custom = client.CoreV1Api(c), client.CustomObjectsApi(c)
        core.create_namespace({"metadata": {"name": "certs"}})
        add_backend_service(c, NS, "svc-a", backend_a)
        core.create_namespaced_secret(NS, tls_secret("site", pairs["site"]))
        core.create_namespaced_secret("certs", tls_secret("shared", pairs["shared"], "certs"))
        custom.create_cluster_custom_object(GW, "v1", "gatewayclasses", {
            "metadata": {"name": "multi"}, "spec": {"controllerName": CONTROLLER}})
        custom.create_namespaced_custom_object(GW, "v1", NS, "gateways", {
            "metadata": {"name": "gw"}, "spec": {"gatewayClassName": "multi", "listeners": [
                https_listener("site", "site.example.com", "site"),
                https_listener("shared", "shared.example.com", "shared", namespace="certs"),
                https_listener("broken", "broken.example.com", "missing")]}})
        custom.create_namespaced_custom_object(GW, "v1", NS, "httproutes", {
            "metadata": {"name": "all"}, "spec": {"parentRefs": [{"name": "gw"}], "rules": [
                {"backendRefs": [{"name": "svc-a", "port": 80}]}]}})
        yield server, c
    server.stop()


@pytest.fixture(scope="module")
def gw(api, tmp_path_factory):
    server, _ = api
    admin = free_port()
    # The Gateway gets 127.0.0.1 (the pool's one address); its HTTPS listeners share port 443.
    proc = GatewayProcess({"workers": 2, "sources": [kube_source(server)],
                           "gateway_api": {"addresses": ["127.0.0.1"]}, "admin": f"127.0.0.1:{admin}"},
                          tmp_path_factory.mktemp("gw")).start()
    proc.tls_port, proc.admin = 443, admin
    yield proc
    proc.stop()


def _try(fn):
    """``fn()``, or None while the listener is not bound yet (refused) or has no certificate."""
    try:
        return fn()
    except OSError:             # ssl.SSLError is one
        return None


def custom(api):
    return client.CustomObjectsApi(api[1])


def serials(gw, pki, name: str) -> set[int]:
    """The serial numbers the listener presents for SNI ``name`` over CONNECTIONS handshakes
    (the chain verified, the name not: a name with no certificate of its own gets the default)."""
    ctx = client_context(pki.ca, check_hostname=False)
    return {int(handshake(gw.tls_port, ctx, name)[0]["serialNumber"], 16) for _ in range(CONNECTIONS)}


def listener_conditions(api, name: str) -> dict:
    def ready():
        status = custom(api).get_namespaced_custom_object(GW, "v1", NS, "gateways", "gw").get("status") or {}
        listeners = {l["name"]: l for l in status.get("listeners") or ()}
        return {c["type"]: c for c in listeners[name]["conditions"]} if name in listeners else None
    return wait_for(ready)


def test_https_listener_serves_the_secret_by_sni_on_both_workers(gw, api, pki, pairs, backend_a):
    assert wait_for(lambda: _try(lambda: serials(gw, pki, "site.example.com")), timeout=20) == {pairs["site"].serial}
    with TlsClient(gw.tls_port, client_context(pki.ca), "site.example.com") as c:   # name verified
        resp = c.request("GET", "/hello", host="site.example.com")
    assert resp.status == 200 and resp.json()["address"] == backend_a.address
    conditions = listener_conditions(api, "site")
    assert (conditions["ResolvedRefs"]["status"], conditions["Programmed"]["status"]) == ("True", "True")


def test_a_host_of_another_listener_than_the_sni_is_misdirected(gw, pki, backend_a):
    """HTTPS listeners share port 443; the SNI picks one, and a Host that picks another (or
    none) is answered 421, over HTTP/1.1 and over HTTP/2 (curl, ALPN h2)."""
    import subprocess
    wait_for(lambda: _try(lambda: serials(gw, pki, "site.example.com")), timeout=20)
    with TlsClient(gw.tls_port, client_context(pki.ca), "site.example.com") as c:
        assert c.request("GET", "/sni", host="site.example.com").status == 200
        assert c.request("GET", "/sni", host="site.example.com:443").status == 200     # a port is no other host
        assert c.request("GET", "/sni", host="elsewhere.example.com").status == 421
    for host, status in (("site.example.com", "200"), ("elsewhere.example.com", "421")):
        got = subprocess.run(["curl", "-sS", "--max-time", "10", "--http2", "--cacert", str(pki.ca), "-o", "/dev/null",
                              "-w", "%{http_version} %{http_code}", "--resolve", "site.example.com:443:127.0.0.1",
                              "-H", f"Host: {host}", "https://site.example.com/sni"], capture_output=True, timeout=20)
        assert got.stdout.decode() == f"2 {status}", got


def test_admin_config_names_the_secret_never_its_key(gw, pki):
    import json
    import urllib.request
    wait_for(lambda: _try(lambda: serials(gw, pki, "site.example.com")), timeout=20)
    def config_text():
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin}/config", timeout=5) as r:
            return r.read().decode()
    text = wait_for(lambda: _try(config_text))
    assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text
    listeners = {l["id"]: l for l in json.loads(text)["listeners"]}
    assert listeners["default/gw/site"]["certificates"] == [{"from": "Secret default/site",
                                                             "names": ["site.example.com"]}]


def test_a_rotated_secret_serves_new_handshakes_without_restart(gw, api, pki, pairs):
    wait_for(lambda: _try(lambda: serials(gw, pki, "site.example.com")), timeout=20)
    pid = gw.pid
    client.CoreV1Api(api[1]).replace_namespaced_secret("site", NS, tls_secret("site", pairs["site-next"]))
    assert wait_for(lambda: serials(gw, pki, "site.example.com") == {pairs["site-next"].serial}, timeout=10)
    assert gw.pid == pid and gw.proc.poll() is None


def test_missing_secret_is_invalid_certificate_ref(gw, api):
    conditions = listener_conditions(api, "broken")
    resolved, programmed = conditions["ResolvedRefs"], conditions["Programmed"]
    assert (resolved["status"], resolved["reason"]) == ("False", "InvalidCertificateRef")
    assert "default/missing" in resolved["message"]
    assert (programmed["status"], programmed["reason"]) == ("False", "Invalid")
    assert conditions["Accepted"]["status"] == "True"


def test_cross_namespace_secret_needs_a_reference_grant(gw, api, pki, pairs):
    resolved = listener_conditions(api, "shared")["ResolvedRefs"]
    assert (resolved["status"], resolved["reason"]) == ("False", "RefNotPermitted")
    # Not served: a handshake for its name gets another listener's certificate.
    assert pairs["shared"].serial not in serials(gw, pki, "shared.example.com")
    custom(api).create_namespaced_custom_object(GW, "v1beta1", "certs", "referencegrants", {
        "metadata": {"name": "gateways-read-certs"},
        "spec": {"from": [{"group": GW, "kind": "Gateway", "namespace": NS}],
                 "to": [{"group": "", "kind": "Secret"}]}})
    assert wait_for(lambda: serials(gw, pki, "shared.example.com") == {pairs["shared"].serial}, timeout=10)
    wait_for(lambda: listener_conditions(api, "shared")["ResolvedRefs"]["status"] == "True")


def _served_with(gw, pki, client_pair) -> bool:
    """One request on site.example.com with ``client_pair``'s certificate (None: none) answered."""
    ctx = client_context(pki.ca)
    if client_pair is not None:
        ctx.load_cert_chain(str(client_pair.cert), str(client_pair.key))
    try:
        with TlsClient(gw.tls_port, ctx, "site.example.com") as c:
            return c.request("GET", "/anything/mtls", host="site.example.com").status == 200
    except OSError:
        return False


def test_client_certificates_from_a_configmap_follow_its_rotation(gw, api, pki, tmp_path):
    """spec.tls.frontend: the CA ConfigMap's clients are served by both workers, others and
    clients without a certificate refused; a rotated ConfigMap trusts its new CA from the next
    handshake; taking the frontend away serves everyone again. (The status side and the
    insecure fallback are the replayed conformance tests'.)"""
    core, first, second = client.CoreV1Api(api[1]), Pki(tmp_path / "a", "Clients A"), Pki(tmp_path / "b", "Clients B")
    alice, bob = first.client("alice"), second.client("bob")
    core.create_namespaced_config_map(NS, {"metadata": {"name": "clients-ca"},
                                           "data": {"ca.crt": first.ca.read_text()}})
    frontend = {"default": {"validation": {"caCertificateRefs": [{"kind": "ConfigMap", "group": "",
                                                                  "name": "clients-ca"}]}}}
    custom(api).patch_namespaced_custom_object(GW, "v1", NS, "gateways", "gw", {"spec": {"tls": {"frontend": frontend}}})
    try:
        wait_for(lambda: not _served_with(gw, pki, None), timeout=10)
        assert [_served_with(gw, pki, alice) for _ in range(CONNECTIONS)] == [True] * CONNECTIONS
        assert not _served_with(gw, pki, bob)
        assert listener_conditions(api, "site")["ResolvedRefs"]["status"] == "True"
        core.replace_namespaced_config_map("clients-ca", NS, {"metadata": {"name": "clients-ca"},
                                                              "data": {"ca.crt": second.ca.read_text()}})
        wait_for(lambda: _served_with(gw, pki, bob), timeout=10)
        assert not _served_with(gw, pki, alice) and not _served_with(gw, pki, None)
    finally:
        custom(api).patch_namespaced_custom_object(GW, "v1", NS, "gateways", "gw", {"spec": {"tls": None}})
        core.delete_namespaced_config_map("clients-ca", NS)
    wait_for(lambda: _served_with(gw, pki, None), timeout=10)
