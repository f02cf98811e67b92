"""The Gateway API conformance suite's TCP echo server (echo-basic with TCP_ECHO_SERVER), as a
devcluster pod process.

The suite's ``tcp-backend`` pods run ``gateway-api/conformance/echo-basic`` in its TCP mode
(``echo-basic/tcpserver``, kubernetes-sigs/gateway-api-conformance-images, Apache-2.0, Copyright
The Kubernetes Authors), which its TLSRoute tests talk to through the gateway
(``conformance/utils/tcp``). This module behaves as that server does; it is written here from
the server's documented behaviour, none of its code:

* it listens on TCP_PORT (3000) in plain TCP and, when TLS_SERVER_CERT and TLS_SERVER_PRIV_KEY
  are set, on TLS_PORT (8443) in TLS (at least 1.2, the certificate pair of the pod's Secret);
  one process here plays one of those listeners (``--tls-cert``: the TLS one);
* a connection is greeted, after the TLS handshake on the TLS port, with
  ``Gateway API Test TCP Server\\n``; then each line the client sends (``\\n``-terminated, a
  trailing ``\\r`` dropped, as Go's bufio.Scanner reads them) is answered:

      TEST     one line of JSON: {"namespace", "ingress", "service", "pod", "tcpport",
               "tlsport", "isTLS", "tls": {"version", "serverName", "cipherSuite"}} ("tls" only
               on the TLS port), compact and in that order
      IS_TLS   "true" or "false"
      PING     "PONG"

  and anything else is ignored; a line longer than 64 KiB (the Scanner's limit) or the client's
  close ends the connection;
* ``version`` and ``cipherSuite`` carry Go's names (``TLS 1.3``, ``TLS_AES_128_GCM_SHA256``,
  ``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256``), ``serverName`` is the SNI the client sent ("" for
  none). TLS 1.2 is offered with the ECDHE suites Go's server offers by default, so that every
  suite negotiated has a Go name. Go also reports the key exchange group (``curves``, omitted
  when empty); Python's ssl module cannot tell which group was negotiated, so it is left out
  here (the suite's client never reads it), as is ``negotiatedProtocol`` (no ALPN is configured,
  as in Go's server);
* TCP_MODE=RESET (``--reset``): every connection is closed at once, by a TCP reset on the plain
  port and, on the TLS port, before any handshake.

POD_NAME, NAMESPACE, INGRESS_NAME and SERVICE_NAME are ``--pod``, ``--namespace``, ``--ingress``
and ``--service``; ``--tcp-port``/``--tls-port`` are the ports the JSON names (the pod's
TCP_PORT and TLS_PORT), ``--port`` the one this process listens on.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import struct

import orjson

from . import _process
from .backend import BackendProcess

WELCOME = b"Gateway API Test TCP Server\n"
MAX_LINE = 64 * 1024                    # bufio.MaxScanTokenSize

# crypto/tls VersionName
GO_VERSIONS = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}
# crypto/tls CipherSuiteName of the suites a Go server negotiates by default, by OpenSSL's names
# (TLS 1.3's are the same in both). The TLS 1.2 ones are those the server offers (server_context).
GO_CIPHERS = {
    "TLS_AES_128_GCM_SHA256": "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384": "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256": "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-SHA": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "ECDHE-RSA-AES128-SHA": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "ECDHE-ECDSA-AES256-SHA": "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "ECDHE-RSA-AES256-SHA": "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
}


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """tls.Config{Certificates: the pair, MinVersion: TLS 1.2}; the SNI kept on each connection."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(":".join(name for name in GO_CIPHERS if not name.startswith("TLS_")))
    context.load_cert_chain(cert, key)

    def remember(sslobj, server_name, _context) -> None:
        sslobj.requested_server_name = server_name or ""
    context.sni_callback = remember
    return context


def tls_assertions(sslobj) -> dict:
    """TLSAssertions of a handshaken connection, with Go's names."""
    version = sslobj.version() or ""
    cipher = (sslobj.cipher() or ("",))[0]
    out = {"version": GO_VERSIONS.get(version, version),
           "serverName": getattr(sslobj, "requested_server_name", "") or ""}
    if sslobj.selected_alpn_protocol():
        out["negotiatedProtocol"] = sslobj.selected_alpn_protocol()
    out["cipherSuite"] = GO_CIPHERS.get(cipher, cipher)
    return out


class TcpEcho:
    """One listener of a tcp-backend pod: its context (the JSON's first fields) and its mode."""

    def __init__(self, namespace: str, pod: str, tcp_port: str, tls_port: str,
                 tls: ssl.SSLContext | None = None, reset: bool = False,
                 ingress: str = "", service: str = "") -> None:
        self.context = {"namespace": namespace, "ingress": ingress, "service": service, "pod": pod,
                        "tcpport": tcp_port}
        if tls_port:
            self.context["tlsport"] = tls_port
        self.tls = tls
        self.reset = reset

    def payload(self, tls: dict | None) -> bytes:
        """The answer to TEST (TCPAssertions)."""
        out = {**self.context, "isTLS": tls is not None}
        if tls is not None:
            out["tls"] = tls
        return orjson.dumps(out) + b"\n"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.reset:
                if self.tls is None:            # SO_LINGER 0: the close sends a reset
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                return                          # TLS: closed before any handshake
            tls = None
            if self.tls is not None:
                try:
                    await writer.start_tls(self.tls)
                except (OSError, ssl.SSLError, asyncio.TimeoutError, EOFError):
                    return                      # "TLS Handshake failed": the connection is closed
                tls = tls_assertions(writer.get_extra_info("ssl_object"))
            test = self.payload(tls)
            writer.write(WELCOME)
            await writer.drain()
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                    last = False
                except asyncio.IncompleteReadError as exc:
                    line, last = exc.partial, True      # a last line without "\n" still counts
                except asyncio.LimitOverrunError:
                    break                               # bufio.ErrTooLong: the loop ends
                text = line.rstrip(b"\n")
                if text.endswith(b"\r"):
                    text = text[:-1]
                if text == b"TEST":
                    writer.write(test)
                elif text == b"IS_TLS":
                    writer.write(b"true\n" if tls is not None else b"false\n")
                elif text == b"PING":
                    writer.write(b"PONG\n")
                await writer.drain()
                if last:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


class TcpEchoProcess(BackendProcess):
    """One listener of a tcp-backend pod in its own process: ``port`` is where it listens, plain
    or (``tls``: certificate and key files) TLS; ``tcp_port`` and ``tls_port`` are the pod's
    TCP_PORT and TLS_PORT as its TEST answer names them. (``stats`` and ``url`` do not apply.)"""

    module = "gateway.devcluster.tcp_echo"

    def __init__(self, host: str, port: int, namespace: str, pod: str,
                 tls: tuple[str, str, str | None] | None = None, tcp_port: str = "3000",
                 tls_port: str = "8443", reset: bool = False) -> None:
        super().__init__(host, port, "conformance", pod, tls=tls)
        self.namespace = namespace
        self.tcp_port = tcp_port
        self.tls_port = tls_port
        self.reset = reset

    def options(self) -> list[str]:
        return ["--namespace", self.namespace, "--tcp-port", self.tcp_port, "--tls-port", self.tls_port,
                *(["--reset"] if self.reset else [])]


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    tls = server_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    echo = TcpEcho(args.namespace, args.pod, args.tcp_port, args.tls_port, tls, args.reset,
                   args.ingress, args.service)
    server = await asyncio.start_server(echo.handle, args.host, args.port, limit=MAX_LINE, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    done = _process.stop_requested(loop, args.parent_pid)
    _process.announce(f"{args.host}:{port} pod={args.pod} tls={'yes' if tls else 'no'} pid={os.getpid()}")
    await done.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000, help="where this listener listens (0: any)")
    parser.add_argument("--cluster", help="(the devcluster backends' option; not used)")
    parser.add_argument("--pod", required=True, help="POD_NAME")
    parser.add_argument("--namespace", required=True, help="NAMESPACE")
    parser.add_argument("--ingress", default="", help="INGRESS_NAME")
    parser.add_argument("--service", default="", help="SERVICE_NAME")
    parser.add_argument("--tcp-port", default="3000", help="TCP_PORT, as the TEST answer names it")
    parser.add_argument("--tls-port", default="8443", help="TLS_PORT, as the TEST answer names it")
    parser.add_argument("--tls-cert", help="listen in TLS with this certificate (TLS_SERVER_CERT)")
    parser.add_argument("--tls-key", help="... and this key (TLS_SERVER_PRIV_KEY)")
    parser.add_argument("--tls-client-ca", help="(the devcluster backends' option; not used)")
    parser.add_argument("--reset", action="store_true", help="TCP_MODE=RESET: close every connection at once")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
