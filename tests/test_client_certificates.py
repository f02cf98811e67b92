"""Client certificates on the HTTPS listener (mutual TLS): ``tls.client_validation`` in the file
(the Gateway API's ``spec.tls.frontend`` is replayed in tests/conformance).

Deployed as it would be: ``workers: 2``, an admin token, a reload (SIGHUP) to change the mode
and the CAs. Certificates come from two throwaway CAs made with the ``openssl`` CLI; clients
are the stdlib ``ssl`` module.
"""
from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
import urllib.request

import orjson
import pytest
import yaml

from support import PYTHON, REPO, GatewayProcess, Pair, Pki, free_port, static_source, wait_listening
from test_tls import TlsClient, other_pki, pki  # noqa: F401 (the two CAs' fixtures)

pytestmark = pytest.mark.timeout(60)

REFUSED = '"message":"TLS handshake refused"'


def _config(pki: Pki, server: Pair, port: int, backend: str, token_file: str, **validation) -> dict:
    return {
        "workers": 2,
        "admin": {"listen": f"127.0.0.1:{free_port()}", "token_file": token_file},
        "tls": {"listen": f"127.0.0.1:{port}", "certificates": [{"cert": str(server.cert), "key": str(server.key)}],
                "client_validation": {"ca_file": str(pki.ca), **validation}},
        "sources": [static_source("zone-a", {"httpbin": [backend]})],
        "services": [{"name": "httpbin", "port": 80}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}],
    }


class Mtls:
    def __init__(self, gw: GatewayProcess, port: int, pki: Pki, other: Pki, server: Pair, backend: str,
                 token_file: str) -> None:
        self.gw, self.port, self.pki, self.other, self.server = gw, port, pki, other, server
        self.backend, self.token_file = backend, token_file
        self.good, self.foreign = pki.client("alice"), other.client("mallory")

    def get(self, client: Pair | None, path: str = "/anything/mtls") -> int:
        """The status of one request with ``client``'s certificate (None: none); raises
        OSError (ssl.SSLError among them) when the handshake or the connection is refused."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        if client is not None:
            ctx.load_cert_chain(str(client.cert), str(client.key))
        with TlsClient(self.port, ctx, "mtls.test") as http:
            return http.request("GET", path, host="mtls.test").status

    def reload(self, **validation) -> None:
        """Write the config with this client validation and SIGHUP; wait for the reload."""
        reloads = self.gw.output().count('"config reloaded"')
        config = yaml.safe_load(self.gw.config_path.read_text())
        config["tls"]["client_validation"] = validation
        self.gw.config_path.write_text(yaml.safe_dump(config))
        os.kill(self.gw.pid, signal.SIGHUP)
        wait_for(lambda: self.gw.output().count('"config reloaded"') > reloads, "the reload")


def wait_for(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def mtls(pki, other_pki, backend_a, tmp_path_factory):
    work = tmp_path_factory.mktemp("mtls")
    token = work / "admin-token"
    token.write_text("s3cret-admin-token\n")
    port = free_port()
    server = pki.leaf("mtls.test")
    gw = GatewayProcess(_config(pki, server, port, backend_a.address, str(token)), work, "mtls")
    try:
        gw.start()
        wait_listening("127.0.0.1", port, 10, gw.proc)
        yield Mtls(gw, port, pki, other_pki, server, backend_a.address, str(token))
    finally:
        gw.stop()


def _refused_lines(gw: GatewayProcess) -> list[dict]:
    return [orjson.loads(line) for line in gw.output().splitlines() if REFUSED in line]


def test_required_client_certificate(mtls):
    """A client with a certificate of the CA is served, by either worker; one without a
    certificate, or with one of another CA, is refused in the handshake, and each refusal is
    logged with its alert and the verification's error, and counted in /metrics."""
    mtls.reload(ca_file=str(mtls.pki.ca))
    before = len(_refused_lines(mtls.gw))
    counted = {reason: _refused_metric(mtls, reason) for reason in ("certificate_rejected", "no_certificate")}
    assert [mtls.get(mtls.good, f"/anything/{i}") for i in range(6)] == [200] * 6
    for client in (None, mtls.foreign):
        with pytest.raises(OSError):
            mtls.get(client)
    wait_for(lambda: len(_refused_lines(mtls.gw)) >= before + 2, "two refusals in the log")
    refusals = _refused_lines(mtls.gw)[before:]
    assert {r["alert"] for r in refusals} == {"certificate required", "unknown CA"}, refusals
    foreign = next(r for r in refusals if r["alert"] == "unknown CA")
    assert foreign["verify_error"] == "unable to get local issuer certificate"
    assert all(r["server_name"] == "mtls.test" for r in refusals)
    # Counted too, summed over the workers (each reports once a second).
    wait_for(lambda: all(_refused_metric(mtls, reason) >= before_count + 1
                         for reason, before_count in counted.items()), "the refusals in /metrics")


def _refused_metric(mtls: Mtls, reason: str) -> int:
    admin = yaml.safe_load(mtls.gw.config_path.read_text())["admin"]["listen"]
    request = urllib.request.Request(f"http://{admin}/metrics",
                                     headers={"Authorization": "Bearer s3cret-admin-token"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        text = resp.read().decode()
    line = f'gateway_tls_handshakes_refused_total{{reason="{reason}"}} '
    return next(int(float(l[len(line):])) for l in text.splitlines() if l.startswith(line))


def test_insecure_fallback_asks_and_serves_everyone(mtls):
    """``allow_insecure_fallback``: a certificate is asked for (the client presents its own) and
    nobody is refused for it: with the CA's, with another CA's, with none."""
    mtls.reload(ca_file=str(mtls.pki.ca), mode="allow_insecure_fallback")
    wait_for(lambda: _serves(mtls, None), "the insecure fallback to apply")
    before = len(_refused_lines(mtls.gw))
    assert [mtls.get(c) for c in (mtls.good, mtls.foreign, None)] == [200, 200, 200]
    assert len(_refused_lines(mtls.gw)) == before
    mtls.reload(ca_file=str(mtls.pki.ca))                       # back to required
    wait_for(lambda: not _serves(mtls, None), "required client certificates again")
    assert mtls.get(mtls.good) == 200


def test_a_reload_with_another_ca_applies_to_new_connections(mtls):
    """The CA bundle changes with a reload (the listener is bound again; a context's trusted
    CAs cannot be taken away): the other CA's clients in, the first CA's out."""
    try:
        mtls.reload(ca_file=str(mtls.other.ca))
        wait_for(lambda: _serves(mtls, mtls.foreign), "the other CA to be trusted")
        with pytest.raises(OSError):
            mtls.get(mtls.good)
    finally:
        mtls.reload(ca_file=str(mtls.pki.ca))
    wait_for(lambda: _serves(mtls, mtls.good), "the first CA to be trusted again")


def test_a_bad_ca_file_is_refused_and_the_last_good_config_kept(mtls, tmp_path):
    mtls.reload(ca_file=str(mtls.pki.ca))
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    refused = mtls.gw.output().count("reload refused")
    config = yaml.safe_load(mtls.gw.config_path.read_text())
    config["tls"]["client_validation"] = {"ca_file": str(not_pem)}
    mtls.gw.config_path.write_text(yaml.safe_dump(config))
    os.kill(mtls.gw.pid, signal.SIGHUP)
    wait_for(lambda: mtls.gw.output().count("reload refused") > refused, "the refused reload")
    assert "tls.client_validation.ca_file" in mtls.gw.output()
    assert mtls.get(mtls.good) == 200
    with pytest.raises(OSError):
        mtls.get(None)


@pytest.mark.parametrize("validation, path, message", [
    ({"ca_file": "CA", "mode": "optional"}, "tls.client_validation.mode",
     'must be "required" or "allow_insecure_fallback"'),
    ({"ca_file": "NOT_PEM"}, "tls.client_validation.ca_file", "not a PEM CA certificate bundle"),
    ({"ca_file": "/nonexistent/ca.pem"}, "tls.client_validation.ca_file", "/nonexistent/ca.pem"),
    ({"mode": "required"}, "tls.client_validation.ca_file", "required"),
])
def test_validate_names_the_key_path(pki, tmp_path, validation, path, message):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    server = pki.leaf("mtls.test")
    validation = {k: {"CA": str(pki.ca), "NOT_PEM": str(not_pem)}.get(v, v) for k, v in validation.items()}
    config = _config(pki, server, free_port(), "127.0.0.1:1", "/dev/null")
    config["tls"]["client_validation"] = validation
    config.pop("admin")
    path_ = tmp_path / "gw.yaml"
    path_.write_text(yaml.safe_dump(config))
    result = subprocess.run([PYTHON, "-m", "gateway", "validate", "--config", str(path_)], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    line = next((l for l in (result.stdout + result.stderr).splitlines() if path in l), None)
    assert line is not None and message in line, result.stdout + result.stderr


def _serves(mtls: Mtls, client: Pair | None) -> bool:
    try:
        return mtls.get(client) == 200
    except OSError:
        return False
