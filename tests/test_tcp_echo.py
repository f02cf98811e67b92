"""The devcluster's TCP echo (gateway.devcluster.tcp_echo), the played tcp-backend pods of the
Gateway API conformance replay, against the replay's own TCP client (tests/conformance/tcputil.py,
conformance/utils/tcp): the welcome, PING, IS_TLS and TEST over plain TCP and TLS (Go's names for
the version and cipher suite, the SNI seen), the client's trust anchors and server name check,
TCP_MODE=RESET, and what counts as a rejected TLS connection."""
from __future__ import annotations

import socket
import ssl
import sys
import threading
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "conformance"))

import tcputil  # noqa: E402
from harness import ca_config_map, ca_signed_server_secret  # noqa: E402
from roundtrip import Timeouts  # noqa: E402
from gateway.devcluster.tcp_echo import TcpEchoProcess  # noqa: E402

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.3"
NS = "gateway-conformance-infra"
POD = "tcp-backend-abc123-0"
SHORT = Timeouts(poll=0.05, consistency=1.5, request=1.0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA (its PEM) and a leaf for abc.example.com it signed (files, and its PEM)."""
    work = tmp_path_factory.mktemp("tcp-echo")
    ca = ca_config_map(work, "ns", "ca")["data"]["ca.crt"].encode()
    ca_signed_server_secret(work, "ns", "leaf", "ca", ["abc.example.com"])
    return ca, (str(work / "ns.leaf.crt"), str(work / "ns.leaf.key"), None), (work / "ns.leaf.crt").read_bytes()


@pytest.fixture(scope="module")
def pod(pki):
    """A tcp-backend pod: its plain and TLS listeners on free ports."""
    _, files, _ = pki
    plain = TcpEchoProcess(HOST, 0, NS, POD, tcp_port="3000", tls_port="8443").start()
    tls = TcpEchoProcess(HOST, 0, NS, POD, tls=files, tcp_port="3000", tls_port="8443").start()
    yield plain, tls
    plain.stop()
    tls.stop()


def converse(sock, *lines: str) -> list[str]:
    reader = sock.makefile("rb")
    answers = [reader.readline().decode()]
    for line in lines:
        sock.sendall(line.encode())
        answers.append(reader.readline().decode())
    return answers


def test_plain_and_tls_answers_as_tcpserver(pod, pki):
    plain, tls = pod
    ca, _, _ = pki
    with socket.create_connection((HOST, plain.port), timeout=5) as sock:
        welcome, pong, is_tls, test = converse(sock, "PING\r\n", "NOPE\nIS_TLS\n", "TEST\n")
    assert (welcome, pong, is_tls) == ("Gateway API Test TCP Server\n", "PONG\n", "false\n")
    assert test.endswith("}\n") and list(orjson.loads(test).items()) == [
        ("namespace", NS), ("ingress", ""), ("service", ""), ("pod", POD), ("tcpport", "3000"),
        ("tlsport", "8443"), ("isTLS", False)]
    for version, go_version in ((ssl.TLSVersion.TLSv1_3, "TLS 1.3"), (ssl.TLSVersion.TLSv1_2, "TLS 1.2")):
        ctx = tcputil.client_context(ca)
        ctx.maximum_version = version
        with tcputil.dial(f"{HOST}:{tls.port}", 5, ctx, "abc.example.com") as sock:
            welcome, is_tls, test = converse(sock, "IS_TLS\n", "TEST\n")
        assert (welcome, is_tls) == ("Gateway API Test TCP Server\n", "true\n")
        answer = orjson.loads(test)
        assert answer["isTLS"] is True and answer["pod"] == POD
        assert answer["tls"]["version"] == go_version and answer["tls"]["serverName"] == "abc.example.com"
        assert answer["tls"]["cipherSuite"].startswith("TLS_") and "-" not in answer["tls"]["cipherSuite"]
        assert list(answer["tls"]) == ["version", "serverName", "cipherSuite"]


def test_tcp_client_replay_accepts_the_right_answers(pod, pki):
    plain, tls = pod
    ca, _, leaf = pki
    tcputil.make_tcp_request_and_expect_eventually_valid_response(
        f"{HOST}:{plain.port}", b"", "", False,
        tcputil.ExpectedResponse(backend_is_tls=False, backend="tcp-backend", namespace=NS), SHORT)
    for roots in (ca, leaf):                # a CA, or the very certificate presented (Go's pool)
        tcputil.make_tcp_request_and_expect_eventually_valid_response(
            f"{HOST}:{tls.port}", roots, "abc.example.com", True,
            tcputil.ExpectedResponse(backend_is_tls=True, backend="tcp-backend", namespace=NS,
                                     hostname="abc.example.com"), SHORT)


def test_tcp_client_replay_fails_the_wrong_ones(pod, pki):
    plain, tls = pod
    ca, _, _ = pki
    with pytest.raises(AssertionError, match="IS_TLS.*namespace does not match"):
        tcputil.make_tcp_request_and_expect_eventually_valid_response(
            f"{HOST}:{plain.port}", b"", "", False,
            tcputil.ExpectedResponse(backend_is_tls=True, backend="tcp-backend", namespace="other"), SHORT)
    with pytest.raises(AssertionError, match="pod prefix"):
        tcputil.make_tcp_request_and_expect_eventually_valid_response(
            f"{HOST}:{plain.port}", b"", "", False,
            tcputil.ExpectedResponse(backend="tcp-backend-abc", namespace=NS), SHORT)
    with pytest.raises(AssertionError, match="saw no TLS"):        # Go's nil dereference
        tcputil.make_tcp_request_and_expect_eventually_valid_response(
            f"{HOST}:{plain.port}", b"", "", False,
            tcputil.ExpectedResponse(backend="tcp-backend", namespace=NS, hostname="abc.example.com"), SHORT)
    # A certificate that does not name the server name, or that no trusted CA signed: the
    # handshake never succeeds, so the condition is never satisfied.
    for roots, name in ((ca, "other.example.com"), (b"", "abc.example.com")):
        with pytest.raises(AssertionError, match="Condition never satisfied.*(x509|CERTIFICATE_VERIFY_FAILED)"):
            tcputil.make_tcp_request_and_expect_eventually_valid_response(
                f"{HOST}:{tls.port}", roots, name, True,
                tcputil.ExpectedResponse(backend_is_tls=True, backend="tcp-backend", namespace=NS), SHORT)


def test_reset_mode_and_connection_rejection(pki):
    _, files, _ = pki
    plain = TcpEchoProcess(HOST, 0, NS, POD, reset=True).start()
    tls = TcpEchoProcess(HOST, 0, NS, POD, tls=files, reset=True).start()
    serving = TcpEchoProcess(HOST, 0, NS, POD, tls=files).start()
    try:
        with socket.create_connection((HOST, plain.port), timeout=5) as sock:
            with pytest.raises(ConnectionResetError):
                sock.sendall(b"PING\n")
                sock.recv(10) or sock.recv(10)
        # Closed or reset while the client waits for the server's hello: rejected.
        for listener in (plain, tls):
            tcputil.make_tls_connection_and_expect_eventually_connection_rejection(
                f"{HOST}:{listener.port}", "abc.example.com", SHORT)
        # A handshake that completes (whatever its certificate) or a port nobody listens on is not.
        with pytest.raises(AssertionError, match="Condition never satisfied"):
            tcputil.make_tls_connection_and_expect_eventually_connection_rejection(
                f"{HOST}:{serving.port}", "abc.example.com", SHORT)
        with socket.socket() as s:
            s.bind((HOST, 0))
            closed_port = s.getsockname()[1]
        with pytest.raises(AssertionError, match="Condition never satisfied.*ConnectionRefused"):
            tcputil.make_tls_connection_and_expect_eventually_connection_rejection(
                f"{HOST}:{closed_port}", "abc.example.com", SHORT)
    finally:
        for process in (plain, tls, serving):
            process.stop()


def test_alert_is_not_a_rejection():
    """A server that answers the ClientHello with a fatal alert refused the handshake, but Go's
    isConnectionRejected wants the connection closed or reset: not yet."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        stop = threading.Event()

        def serve():
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                with conn:
                    conn.recv(4096)
                    conn.sendall(bytes([21, 3, 3, 0, 2, 2, 112]))    # alert: fatal, unrecognized_name
                    conn.recv(4096)
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with pytest.raises(AssertionError, match="Condition never satisfied.*UNRECOGNIZED_NAME"):
                tcputil.make_tls_connection_and_expect_eventually_connection_rejection(
                    f"{HOST}:{listener.getsockname()[1]}", "abc.example.com", SHORT)
        finally:
            stop.set()
            thread.join(5)
