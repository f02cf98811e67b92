"""TLS: the HTTPS listener (SNI, minimum version, X-Forwarded-Proto, certificate renewal with no
restart) and TLS from the gateway to upstreams (verification on by default).

Certificates come from a throwaway CA made with the ``openssl`` CLI (EC P-256 keys, 2 days).
Clients are the stdlib ``ssl`` module; the HTTPS upstream is an asyncio server in a thread.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import yaml

from support import PYTHON, REPO, Client, GatewayProcess, Pair, Pki, free_port, static_source, wait_listening

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("other-pki"), "Another CA")


# -- TLS clients ---------------------------------------------------------------------------------


def client_context(ca: Path, check_hostname: bool = True, lo: ssl.TLSVersion | None = None,
                   hi: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = check_hostname
    if lo is not None:
        ctx.minimum_version = lo
    if hi is not None:
        ctx.maximum_version = hi
    return ctx


def tls11_client_context(ca: Path) -> ssl.SSLContext:
    """A client that offers TLS 1.1 only (OpenSSL 3 needs security level 0 for it)."""
    ctx = client_context(ca, check_hostname=False)
    with warnings.catch_warnings():                 # TLSv1_1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def handshake(port: int, ctx: ssl.SSLContext, server_name: str | None) -> tuple[dict, str]:
    """One TLS handshake with the listener on 127.0.0.1:port: (peer certificate, version)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
            return tls.getpeercert(), tls.version()


def sans(cert: dict) -> list[str]:
    return [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]


class TlsClient(Client):
    """support's HTTP/1.1 client over a TLS connection."""

    def __init__(self, port: int, ctx: ssl.SSLContext, server_name: str | None,
                 timeout: float = 10.0, session: ssl.SSLSession | None = None) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname=server_name, session=session)
        self.buf = bytearray()
        self.timeout = timeout


# -- an HTTPS upstream ---------------------------------------------------------------------------


class HttpsUpstream:
    """asyncio HTTPS servers (one per port, ``count`` of them) in a thread.

    Every request gets 200 and JSON ``{"tls": true, "port", "path", "sni"}``: the port that
    answered and the server name the client sent.  Keep-alive; ``stop()`` closes everything.
    """

    def __init__(self, pair: Pair, count: int = 1) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(pair.cert), str(pair.key))
        self.ctx.sni_callback = self._sni
        self.handshakes = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="https-upstream", daemon=True)
        self.thread.start()
        self.tasks: set[asyncio.Task] = set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.servers = [self._call(asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ctx))
                        for _ in range(count)]
        self.ports = [s.sockets[0].getsockname()[1] for s in self.servers]

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def _sni(self, sslobj, server_name, _ctx) -> None:
        sslobj.sni_seen = server_name      # SSLObject takes attributes; read back in _serve
        self.handshakes += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        self.writers.add(writer)
        sslobj = writer.get_extra_info("ssl_object")
        port = writer.get_extra_info("sockname")[1]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                body = orjson.dumps({"tls": True, "port": port, "path": lines[0].split(" ")[1],
                                     "sni": getattr(sslobj, "sni_seen", None)})
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, asyncio.LimitOverrunError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()
            self.tasks.discard(task)

    def address(self, i: int = 0) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    def stop(self) -> None:
        async def close() -> None:
            for server in self.servers:
                server.close()
            for writer in list(self.writers):
                writer.close()
            for server in self.servers:
                await server.wait_closed()
            if self.tasks:
                await asyncio.wait(list(self.tasks), timeout=5)
        self._call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


# -- the gateway with two certificates, plain and TLS upstreams ------------------------------------


@dataclass
class Setup:
    gw: GatewayProcess
    tls_port: int
    pki: Pki
    a: Pair                  # a.example.com, the default (first) certificate
    b: Pair                  # *.b.test
    upstream: HttpsUpstream


@pytest.fixture(scope="module")
def setup(backend_a, pki, other_pki, tmp_path_factory):
    a = pki.leaf("a.example.com")
    b = pki.leaf("*.b.test")
    # One port per TLS service: the data plane shares an Upstream (and its connection pool)
    # between services with the same (cluster, ip, port) -- see test_same_endpoint_in_two_services.
    upstream = HttpsUpstream(pki.leaf("upstream.test"), count=5)
    tls_port = free_port()
    config = {
        "tls": {"listen": f"127.0.0.1:{tls_port}", "min_version": "1.2",
                "certificates": [{"cert": str(a.cert), "key": str(a.key)},
                                 {"cert": str(b.cert), "key": str(b.key)}]},
        "sources": [static_source("zone-a", {
            "httpbin": [backend_a.address],
            "secure": [upstream.address(0)],
            "wrong-ca": [upstream.address(1)],
            "no-verify": [upstream.address(2)],
            "shared-wrong-ca": [upstream.address(3)],
            "shared-no-verify": [upstream.address(3)],
            "system-ca": [upstream.address(4)],
        })],
        "services": [
            {"name": "httpbin", "port": 80},
            {"name": "secure", "port": 443, "tls": {"ca": str(pki.ca), "sni": "upstream.test"}},
            {"name": "wrong-ca", "port": 443, "tls": {"ca": str(other_pki.ca), "sni": "upstream.test"}},
            {"name": "no-verify", "port": 443, "tls": {"ca": str(other_pki.ca), "verify": False}},
            {"name": "shared-wrong-ca", "port": 443,
             "tls": {"ca": str(other_pki.ca), "sni": "upstream.test"}},
            {"name": "shared-no-verify", "port": 443, "tls": {"verify": False}},
            {"name": "system-ca", "port": 443, "tls": True},
        ],
        "routes": [
            *({"name": name, "match": {"path": {"prefix": f"/{name}/"}}, "service": name,
               "retries": {"attempts": 1}}
              for name in ("secure", "wrong-ca", "no-verify", "shared-wrong-ca", "shared-no-verify",
                           "system-ca")),
            {"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"},
        ],
    }
    gw = GatewayProcess(config, tmp_path_factory.mktemp("tls"), "tls")
    try:
        gw.start()
        wait_listening("127.0.0.1", tls_port, 10, gw.proc)
        yield Setup(gw, tls_port, pki, a, b, upstream)
    finally:
        gw.stop()
        upstream.stop()


def test_https_listener_serves(setup):
    ctx = client_context(setup.pki.ca)
    with TlsClient(setup.tls_port, ctx, "a.example.com") as client:
        for i in range(3):                                  # keep-alive over TLS
            resp = client.request("GET", f"/anything/{i}", host="a.example.com")
            assert resp.status == 200, resp.body[:300]
            assert resp.json()["path"] == f"/anything/{i}"
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert client.sock.selected_alpn_protocol() in (None, "http/1.1")
    with setup.gw.client() as plain:                        # the plain listener is still there
        assert plain.request("GET", "/anything/plain").status == 200


@pytest.mark.parametrize("server_name, expected", [
    ("a.example.com", "a"),
    ("x.b.test", "b"),
    ("deep.x.b.test", "a"),                 # "*." covers one label only: the default
    ("b.test", "a"),
    ("unknown.example.org", "a"),
    (None, "a"),                            # no SNI at all: the default
])
def test_sni_picks_the_certificate_by_name(setup, server_name, expected):
    pair = setup.a if expected == "a" else setup.b
    verify_name = server_name if expected == "b" or server_name == "a.example.com" else None
    cert, _ = handshake(setup.tls_port, client_context(setup.pki.ca, check_hostname=verify_name is not None),
                        server_name)
    assert sans(cert) == (["a.example.com"] if expected == "a" else ["*.b.test"]), cert
    assert cert["serialNumber"] == pair.serial_hex


def test_sni_matching_ignores_case(setup):
    cert, _ = handshake(setup.tls_port, client_context(setup.pki.ca), "X.B.Test")
    assert sans(cert) == ["*.b.test"]


def test_tls_1_1_is_refused_and_1_2_accepted(setup, pki):
    # The TLS 1.1 client really can speak 1.1: a local server that allows it accepts it.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        probe.minimum_version = ssl.TLSVersion.TLSv1_1
    probe.set_ciphers("DEFAULT:@SECLEVEL=0")
    probe.load_cert_chain(str(setup.a.cert), str(setup.a.key))
    assert _handshake_with(probe, tls11_client_context(pki.ca)) == "TLSv1.1"

    with pytest.raises(ssl.SSLError):
        handshake(setup.tls_port, tls11_client_context(pki.ca), "a.example.com")
    _, version = handshake(setup.tls_port, client_context(pki.ca, hi=ssl.TLSVersion.TLSv1_2),
                           "a.example.com")
    assert version == "TLSv1.2"
    _, version = handshake(setup.tls_port, client_context(pki.ca, lo=ssl.TLSVersion.TLSv1_3),
                           "a.example.com")
    assert version == "TLSv1.3"


def _handshake_with(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> str | None:
    """Handshake ``client_ctx`` against ``server_ctx`` over a socketpair; the client's version."""
    s1, s2 = socket.socketpair()
    s1.settimeout(5)
    s2.settimeout(5)
    result: list = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(s2, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            result.append(exc)

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client_ctx.wrap_socket(s1, server_hostname="a.example.com") as tls:
            version = tls.version()
            tls.sendall(b"x")
    finally:
        t.join(timeout=10)
    assert not result, result
    return version


def test_forwarded_proto_is_https_behind_the_tls_listener(setup):
    with TlsClient(setup.tls_port, client_context(setup.pki.ca), "x.b.test") as client:
        resp = client.request("GET", "/headers", [("X-Forwarded-Proto", "http")], host="x.b.test")
    assert resp.status == 200
    seen = {k.lower(): v for k, v in resp.json()["headers"].items()}
    assert seen["x-forwarded-proto"] == "https"             # set by the gateway, not the client
    assert seen["host"] == "x.b.test"
    with setup.gw.client() as plain:
        resp = plain.request("GET", "/headers", [("X-Forwarded-Proto", "https")])
    seen = {k.lower(): v for k, v in resp.json()["headers"].items()}
    assert seen["x-forwarded-proto"] == "http"


# -- TLS to upstreams ----------------------------------------------------------------------------


def test_upstream_tls_with_the_right_ca(setup):
    with setup.gw.client() as client:
        for i in range(3):
            resp = client.request("GET", f"/secure/{i}", {"X-Request-Id": f"tls-secure-{i}"})
            assert resp.status == 200, resp.body[:300]
            answer = resp.json()
            assert answer["tls"] is True and answer["path"] == f"/secure/{i}"
            assert answer["sni"] == "upstream.test"
            assert answer["port"] == setup.upstream.ports[0]
    entries = setup.gw.log.by_ids([f"tls-secure-{i}" for i in range(3)])
    assert {e["upstream_host"] for e in entries.values()} == {setup.upstream.address(0)}


def test_upstream_tls_with_a_wrong_ca_is_a_503(setup):
    """A handshake that fails verification is a failed connect (503, as Envoy answers)."""
    with setup.gw.client() as client:
        resp = client.request("GET", "/wrong-ca/x", {"X-Request-Id": "tls-wrong-ca"})
    assert resp.status == 503, resp.body[:300]
    (entry,) = setup.gw.log.by_ids(["tls-wrong-ca"]).values()
    assert entry["status"] == 503
    error = entry.get("error", "")
    assert f"connect to {setup.upstream.address(1)} failed" in error, entry
    assert "CERTIFICATE_VERIFY_FAILED" in error, entry


def test_upstream_tls_verifies_against_the_system_cas_by_default(setup):
    """``tls: true``: the system's CAs, which do not include the test CA."""
    with setup.gw.client() as client:
        resp = client.request("GET", "/system-ca/x", {"X-Request-Id": "tls-system-ca"})
    assert resp.status == 503, resp.body[:300]
    (entry,) = setup.gw.log.by_ids(["tls-system-ca"]).values()
    assert "CERTIFICATE_VERIFY_FAILED" in entry.get("error", ""), entry


def test_upstream_tls_without_verification(setup):
    with setup.gw.client() as client:
        resp = client.request("GET", "/no-verify/x")
    assert resp.status == 200, resp.body[:300]
    assert resp.json()["tls"] is True and resp.json()["port"] == setup.upstream.ports[2]


def test_same_endpoint_in_two_services_keeps_each_services_tls_settings(setup):
    with setup.gw.client() as client:
        no_verify = client.request("GET", "/shared-no-verify/x").status
        wrong_ca = client.request("GET", "/shared-wrong-ca/x").status
    assert (no_verify, wrong_ca) == (200, 503)


# -- certificate renewal without a restart -------------------------------------------------------


class Renewal:
    """A gateway whose only certificate is the pair of files ``cert.pem``/``key.pem`` here."""

    def __init__(self, gw: GatewayProcess, port: int, pki: Pki, cert: Path, key: Path) -> None:
        self.gw, self.port, self.pki, self.cert, self.key = gw, port, pki, cert, key

    def install(self, pair: Pair, *, cert: bool = True, key: bool = True,
                keep_mtime: bool = False) -> None:
        """Replace the files (each atomically, like a renewal tool). ``keep_mtime``: give the
        new files the old modification times, so that only SIGHUP notices them."""
        for wanted, src, dst in ((cert, pair.cert, self.cert), (key, pair.key, self.key)):
            if not wanted:
                continue
            before = os.stat(dst)
            tmp = dst.with_suffix(".new")
            tmp.write_bytes(src.read_bytes())
            os.replace(tmp, dst)
            if keep_mtime:
                os.utime(dst, ns=(before.st_atime_ns, before.st_mtime_ns))

    def serial(self) -> str:
        cert, _ = handshake(self.port, client_context(self.pki.ca), "renew.example.com")
        return cert["serialNumber"]

    def wait_serial(self, pair: Pair, timeout: float) -> float:
        """Seconds until new handshakes present ``pair`` (fails after ``timeout``)."""
        start = time.monotonic()
        while True:
            seen = self.serial()
            if seen == pair.serial_hex:
                return time.monotonic() - start
            assert time.monotonic() - start < timeout, f"still serial {seen} after {timeout}s"
            time.sleep(0.05)

    def log_count(self, text: str) -> int:
        return self.gw.output().count(text)

    def wait_log(self, text: str, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.log_count(text) < count:
            assert time.monotonic() < deadline, f"no {text!r} in the log: {self.gw.output()[-2000:]}"
            time.sleep(0.05)

    def reset(self) -> Pair:
        """A fresh good pair, served: each test starts from a known certificate."""
        pair = self.pki.leaf("renew.example.com", tag="renew")
        self.install(pair)
        self.wait_serial(pair, timeout=5)
        return pair


@pytest.fixture(scope="module")
def renewal(pki, backend_a, tmp_path_factory):
    work = tmp_path_factory.mktemp("renew")
    first = pki.leaf("renew.example.com", tag="renew")
    cert, key = work / "cert.pem", work / "key.pem"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    port = free_port()
    config = {
        "tls": {"listen": f"127.0.0.1:{port}", "certificates": [{"cert": str(cert), "key": str(key)}]},
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address]})],
        "services": [{"name": "httpbin", "port": 80}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}],
    }
    gw = GatewayProcess(config, work, "renew")
    try:
        gw.start()
        wait_listening("127.0.0.1", port, 10, gw.proc)
        r = Renewal(gw, port, pki, cert, key)
        assert r.serial() == first.serial_hex
        yield r
    finally:
        gw.stop()


def test_renewed_files_apply_to_new_handshakes_and_open_connections_keep_working(renewal):
    old = renewal.reset()
    with TlsClient(renewal.port, client_context(renewal.pki.ca), "renew.example.com") as client:
        assert client.request("GET", "/anything/before", host="renew.example.com").status == 200
        assert client.sock.getpeercert()["serialNumber"] == old.serial_hex
        new = renewal.pki.leaf("renew.example.com", tag="renew")
        renewal.install(new)
        took = renewal.wait_serial(new, timeout=4)
        assert took <= 2.5, f"the renewed certificate took {took:.2f}s"
        # The connection made before the renewal goes on, with the certificate it began with.
        for i in range(3):
            resp = client.request("GET", f"/anything/after-{i}", host="renew.example.com")
            assert resp.status == 200 and resp.json()["path"] == f"/anything/after-{i}"
        assert client.sock.getpeercert()["serialNumber"] == old.serial_hex
    assert "certificates reloaded" in renewal.gw.output()


def test_sighup_reloads_the_certificate(renewal):
    old = renewal.reset()
    new = renewal.pki.leaf("renew.example.com", tag="renew")
    renewal.install(new, keep_mtime=True)           # invisible to the once-a-second check
    time.sleep(1.5)
    assert renewal.serial() == old.serial_hex
    os.kill(renewal.gw.pid, signal.SIGHUP)
    took = renewal.wait_serial(new, timeout=3)
    assert took < 2, took


FAILED = "certificate reload failed; keeping the loaded one"


def test_a_new_certificate_without_its_key_keeps_the_old_one(renewal):
    """The renewal tool wrote the certificate but not (yet) the key: the pair does not match."""
    old = renewal.reset()
    failures = renewal.log_count(FAILED)
    mismatched = renewal.pki.leaf("renew.example.com", tag="renew")
    renewal.install(mismatched, key=False)
    renewal.wait_log(FAILED, failures + 1)
    for _ in range(3):
        assert renewal.serial() == old.serial_hex, "handshakes must go on with the old pair"
    assert str(renewal.cert) in renewal.gw.output()
    # What follows the failure says so, rather than a bare "certificates reloaded".
    after = [line for line in renewal.gw.output().rsplit(FAILED, 1)[1].splitlines() if "certificates reloaded" in line]
    assert after and "certificates reloaded but for those that failed" in after[0], after
    # And once the key arrives too, the new pair is used.
    renewal.install(mismatched, cert=False)
    assert renewal.wait_serial(mismatched, timeout=4) <= 2.5


def test_an_unreadable_certificate_keeps_the_old_one_and_checks_go_on(renewal):
    old = renewal.reset()
    failures = renewal.log_count(FAILED)
    renewal.cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    renewal.wait_log(FAILED, failures + 1)
    with TlsClient(renewal.port, client_context(renewal.pki.ca), "renew.example.com") as client:
        assert client.request("GET", "/anything/x", host="renew.example.com").status == 200
        assert client.sock.getpeercert()["serialNumber"] == old.serial_hex
    # SIGHUP with the bad file in place: the config (which loads the pair) is refused.
    refused = renewal.log_count("reload refused")
    os.kill(renewal.gw.pid, signal.SIGHUP)
    renewal.wait_log("reload refused", refused + 1)
    assert renewal.serial() == old.serial_hex
    # The once-a-second check still runs: a good pair is picked up again.
    good = renewal.pki.leaf("renew.example.com", tag="renew")
    renewal.install(good)
    assert renewal.wait_serial(good, timeout=4) <= 2.5


# -- min_version 1.3 -----------------------------------------------------------------------------


def test_min_version_1_3_refuses_tls_1_2(pki, tmp_path):
    pair = pki.leaf("v13.example.com")
    port = free_port()
    config = {"tls": {"listen": f"127.0.0.1:{port}", "min_version": "1.3",
                      "certificates": [{"cert": str(pair.cert), "key": str(pair.key)}]},
              "sources": [static_source("zone-a", {"httpbin": ["127.0.0.2:9"]})],
              "services": [{"name": "httpbin", "port": 80}]}
    gw = GatewayProcess(config, tmp_path, "v13")
    try:
        gw.start()
        wait_listening("127.0.0.1", port, 10, gw.proc)
        with pytest.raises(ssl.SSLError):
            handshake(port, client_context(pki.ca, hi=ssl.TLSVersion.TLSv1_2), "v13.example.com")
        cert, version = handshake(port, client_context(pki.ca), "v13.example.com")
        assert version == "TLSv1.3" and sans(cert) == ["v13.example.com"]
    finally:
        gw.stop()


# -- config errors -------------------------------------------------------------------------------


def validate(config: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([PYTHON, "-m", "gateway", "validate", "--config", str(path)], cwd=str(REPO),
                          capture_output=True, text=True, timeout=30)


def tls_config(certificates: list[dict], **extra) -> dict:
    return {"listen": "127.0.0.1:8080", "admin": "off",
            "tls": {"listen": "127.0.0.1:8443", "certificates": certificates, **extra},
            "sources": [static_source("zone-a", {"httpbin": ["127.0.0.2:80"]})],
            "services": [{"name": "httpbin", "port": 80}]}


def test_validate_accepts_a_good_tls_config(pki, tmp_path):
    pair = pki.leaf("ok.example.com")
    result = validate(tls_config([{"cert": str(pair.cert), "key": str(pair.key)}]), tmp_path)
    assert result.returncode == 0, result.stderr


def test_validate_names_a_missing_certificate_file(pki, tmp_path):
    pair = pki.leaf("ok.example.com")
    missing = tmp_path / "nope.pem"
    result = validate(tls_config([{"cert": str(missing), "key": str(pair.key)}]), tmp_path)
    assert result.returncode == 1
    assert f"tls.certificates[0].cert: file not found: {missing}" in result.stderr, result.stderr


def test_validate_names_a_key_that_does_not_match(pki, tmp_path):
    first, second = pki.leaf("one.example.com"), pki.leaf("two.example.com")
    result = validate(tls_config([{"cert": str(first.cert), "key": str(first.key)},
                                  {"cert": str(second.cert), "key": str(first.key)}]), tmp_path)
    assert result.returncode == 1
    (line,) = [l for l in result.stderr.splitlines() if "tls.certificates" in l]
    assert "tls.certificates[1]" in line and "KEY_VALUES_MISMATCH" in line, result.stderr
    assert "tls.certificates[0]" not in result.stderr


def test_validate_refuses_min_version_1_1(pki, tmp_path):
    pair = pki.leaf("ok.example.com")
    result = validate(tls_config([{"cert": str(pair.cert), "key": str(pair.key)}], min_version="1.1"),
                      tmp_path)
    assert result.returncode == 1
    assert "tls.min_version" in result.stderr, result.stderr
