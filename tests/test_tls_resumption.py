"""TLS session resumption across workers: every worker (and every HTTPS listener) issues and
accepts session tickets under the replica's keys (gateway.tls.TicketKeys), rotated without
losing the sessions of the two keys before.

Clients are the stdlib ``ssl`` module (TLS 1.3: the tickets come after the handshake and are
read with the first response); which worker answered is told by the request ids it makes.
"""
from __future__ import annotations

import ssl
import time

import pytest

from support import GatewayProcess, free_port, static_source, wait_listening
from test_tls import TlsClient, client_context, pki  # noqa: F401 (the CA's fixture)

pytestmark = pytest.mark.timeout(90)

ROTATED = '"message":"session ticket keys rotated"'


def _gateway(pki, backend, workdir, env: dict | None = None) -> tuple[GatewayProcess, int]:
    server = pki.leaf("resume.test")
    port = free_port()
    gw = GatewayProcess({"workers": 2, "tls": {"listen": f"127.0.0.1:{port}", "certificates": [
                            {"cert": str(server.cert), "key": str(server.key)}]},
                         "sources": [static_source("zone-a", {"httpbin": [backend.address]})],
                         "services": [{"name": "httpbin", "port": 80}],
                         "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}]},
                        workdir, "resume")
    gw.start(env=env)
    wait_listening("127.0.0.1", port, 10, gw.proc)
    return gw, port


def _request(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None):
    """(the session to resume next, whether this one was resumed, the answering worker's id prefix)."""
    with TlsClient(port, ctx, "resume.test", session=session) as client:
        resp = client.request("GET", "/anything/resume", host="resume.test")
        assert resp.status == 200
        return client.sock.session, client.sock.session_reused, resp.upstream_saw("x-request-id")[0].split("-")[0]


def _both_workers_serve(port: int, ctx: ssl.SSLContext, attempts: int = 200) -> None:
    """Until connections reach both workers (each binds the TLS port when it is ready)."""
    seen = set()
    for _ in range(attempts):
        seen.add(_request(port, ctx)[2])
        if len(seen) == 2:
            return
    raise AssertionError(f"{attempts} connections reached one worker only")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_a_session_resumes_on_every_worker(pki, backend_a, tmp_path, version):
    """By its ticket alone (the workers keep no session cache), in TLS 1.3 and 1.2."""
    gw, port = _gateway(pki, backend_a, tmp_path)
    try:
        ctx = client_context(pki.ca, hi=version)
        _both_workers_serve(port, ctx)
        session, reused, _ = _request(port, ctx)
        assert not reused
        results = [_request(port, ctx, session) for _ in range(24)]
        assert all(reused for _, reused, _ in results), [r for _, r, _ in results]
        workers = {worker for _, _, worker in results}
        assert len(workers) == 2, f"every resumed connection went to one worker: {workers}"
    finally:
        gw.stop()


def test_a_resumed_tls13_connection_gets_a_fresh_ticket(pki, backend_a, tmp_path):
    """TLS 1.3 clients use a ticket once (RFC 8446 C.4: browsers do): each resumption brings a
    new ticket (as nginx's OpenSSL defaults do), so a client resumes on and on, not just as many
    times as the full handshake's two tickets allow."""
    gw, port = _gateway(pki, backend_a, tmp_path)
    try:
        ctx = client_context(pki.ca, hi=ssl.TLSVersion.TLSv1_3)
        session, _, _ = _request(port, ctx)
        for _ in range(5):
            fresh, reused, _ = _request(port, ctx, session)
            assert reused
            assert fresh.id != session.id, "the resumed connection brought no new ticket"
            session = fresh
    finally:
        gw.stop()


def test_rotated_keys_keep_two_generations_of_sessions(pki, backend_a, tmp_path):
    """A new key every rotation (GATEWAY_TICKET_ROTATION, seconds): a session from before one or
    two rotations still resumes; one from before the third is a full handshake (still served)."""
    gw, port = _gateway(pki, backend_a, tmp_path, env={"GATEWAY_TICKET_ROTATION": "1.5"})
    try:
        ctx = client_context(pki.ca)
        _both_workers_serve(port, ctx)
        session, _, _ = _request(port, ctx)
        rotations = gw.output().count(ROTATED)

        def after(count: int) -> None:
            deadline = time.monotonic() + 30
            while gw.output().count(ROTATED) < count:
                assert time.monotonic() < deadline, f"fewer than {count} rotations: {gw.output()[-1500:]}"
                time.sleep(0.05)
        after(rotations + 1)
        assert all(_request(port, ctx, session)[1] for _ in range(6)), "a session of the previous key"
        # Three rotations later its key is gone (KEEP = 3); one more lets every worker hear of it.
        after(rotations + 4)
        _, reused, _ = _request(port, ctx, session)
        assert not reused
    finally:
        gw.stop()
