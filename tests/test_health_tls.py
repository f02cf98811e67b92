"""Active health checks of services with ``tls:``: probes use the service's CA, SNI and
verification, as the data plane's connections do.

A real gateway process probes real HTTPS upstreams (tests/test_tls.py's throwaway CA and
asyncio HTTPS server).  With the right CA and name the TLS-only endpoint stays healthy (before
this, a plain-text probe failed every time); a wrong CA or a wrong SNI marks it unhealthy,
and the admin API says why.
"""
from __future__ import annotations

import pytest

from support import Pki, start_with_admin, static_source, wait_until
from test_tls import HttpsUpstream

pytestmark = pytest.mark.timeout(60)

# A probe's timeout long enough for a TLS handshake on a busy machine: a timed-out probe
# would read as the failure these tests look for the reason of.
CHECK = {"path": "/healthz", "interval": "500ms", "timeout": "450ms", "jitter": "0s",
         "healthy_threshold": 1, "unhealthy_threshold": 1}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pki = Pki(tmp_path_factory.mktemp("pki"))
    other = Pki(tmp_path_factory.mktemp("other-pki"), "Another CA")
    upstream = HttpsUpstream(pki.leaf("upstream.test"), count=4)
    names = ["secure", "wrong-ca", "wrong-sni", "no-tls"]
    tls = {"secure": {"ca": str(pki.ca), "sni": "upstream.test"},
           "wrong-ca": {"ca": str(other.ca), "sni": "upstream.test"},
           "wrong-sni": {"ca": str(pki.ca), "sni": "elsewhere.test"}}
    config = {
        "sources": [static_source("zone-a", {n: [upstream.address(i)] for i, n in enumerate(names)})],
        "services": [{"name": n, "port": 443, "health_check": CHECK, **({"tls": tls[n]} if n in tls else {})}
                     for n in names],
        "routes": [{"name": "secure", "match": {"path": {"prefix": "/"}}, "service": "secure"}],
    }
    gw, gw.admin = start_with_admin(config, tmp_path_factory.mktemp("gw"), "health-tls")
    try:
        yield gw, upstream
    finally:
        gw.stop()
        upstream.stop()


def endpoint(gw, service: str) -> dict:
    [ep] = gw.admin.get(f"/services/default/{service}")["endpoints"]
    return ep


def wait_unhealthy(gw, service: str, error: str = "") -> dict:
    """The endpoint once a probe has failed it with an error starting with ``error``."""
    def failed() -> dict | None:
        ep = endpoint(gw, service)
        return ep if not ep["healthy"] and (ep["last_error"] or "").startswith(error) else None
    return wait_until(failed, timeout=20, message=f"{service} unhealthy with {error!r}")


def test_tls_only_endpoint_stays_healthy_with_the_right_ca_and_sni(setup):
    gw, upstream = setup
    before = upstream.handshakes

    def probed_and_healthy():
        ep = endpoint(gw, "secure")     # unhealthy after any one failed probe: checked after each
        assert ep["healthy"] and ep["serving"] and ep["causes"] == [] and ep["last_error"] is None, ep
        return upstream.handshakes - before >= 5
    wait_until(probed_and_healthy, timeout=30, message="five probes over TLS, every one passing")
    with gw.client() as client:
        resp = client.request("GET", "/through")
        assert resp.status == 200 and resp.json()["sni"] == "upstream.test", resp.body


def test_a_wrong_ca_marks_the_endpoint_unhealthy_with_the_reason(setup):
    gw, _ = setup
    ep = wait_unhealthy(gw, "wrong-ca", "TLS handshake failed")
    assert not ep["healthy"] and ep["causes"] == ["active_check_failed"], ep
    assert ep["last_error"].startswith("TLS handshake failed: unable to get local issuer certificate"), ep


def test_a_wrong_sni_marks_the_endpoint_unhealthy_with_the_reason(setup):
    gw, _ = setup
    ep = wait_unhealthy(gw, "wrong-sni", "TLS handshake failed")
    assert not ep["healthy"], ep
    assert ep["last_error"] == ("TLS handshake failed: Hostname mismatch, certificate is not valid "
                                "for 'elsewhere.test'."), ep
    assert "elsewhere.test" in gw.output()          # the log line names the reason too


def test_a_plain_probe_of_a_tls_endpoint_fails(setup):
    """The control: without tls: the same upstream fails its HTTP check, as before the fix."""
    gw, _ = setup
    ep = wait_unhealthy(gw, "no-tls")
    assert not ep["healthy"] and ep["last_error"] in (
        "connection closed without a response", "not an HTTP response"), ep


def test_one_context_per_tls_settings(tmp_path):
    from gateway.config import UpstreamTls
    from gateway.health.probe import ProbeTlsContexts
    pki = Pki(tmp_path)
    contexts = ProbeTlsContexts()
    a = UpstreamTls(ca=str(pki.ca), sni="upstream.test")
    first = contexts.get(a)
    assert contexts.get(UpstreamTls(ca=str(pki.ca), sni="upstream.test")) is first   # equal settings
    assert contexts.get(UpstreamTls(ca=str(pki.ca), sni="other.test")) is not first
    assert contexts.get(None) is None
    contexts.reset()                        # new service configs: rebuilt on next use
    assert contexts.get(a) is not first and contexts.get(a).sni == "upstream.test"
