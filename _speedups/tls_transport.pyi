"""HTTPS connections on the reactor: OpenSSL reads and writes the socket itself (compiled)."""
import asyncio
import socket
import ssl
from typing import Callable, final

from _speedups.reactor import Listener, Reactor, SocketTransport

@final
class TlsListener(Listener):
    def __init__(self, reactor: Reactor, sock: socket.socket, protocol_factory: Callable[[], asyncio.Protocol],
                 context: ssl.SSLContext, handshake_timeout: float) -> None: ...
    def time_out_handshakes(self) -> None:
        """(its timer) Close the connections whose handshake is past its deadline."""

@final
class TlsTransport(SocketTransport):
    """A TLS connection: ``get_extra_info("ssl_object")`` is its ``TlsSession``."""
    def read_held(self) -> None: ...

@final
class TlsSession:
    """The part of ``ssl.SSLObject`` the protocols read."""
    def __init__(self, transport: TlsTransport) -> None: ...
    def selected_alpn_protocol(self) -> str | None: ...
    def version(self) -> str: ...
    def cipher(self) -> tuple[str, str, int] | None: ...
    @property
    def session_reused(self) -> bool: ...
    @property
    def server_name(self) -> str | None: ...
    @property
    def gateway_sni(self) -> bytes | None:
        """The SNI name lowercase (what a request's Host is held to: 421)."""
