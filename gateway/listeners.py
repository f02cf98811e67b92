"""Listening sockets: the HTTP and HTTPS ports, served by the reactor, and the control
plane's hold on the Gateway listeners' ports.

``_speedups.reactor`` accepts, reads and writes these connections itself (no uvloop
transport per connection), and ``_speedups.tls_transport`` the TLS ones through OpenSSL;
``ReactorServer`` is as much of ``asyncio.Server`` as the worker uses.  Only a port that
reads ClientHellos before it knows whether to end TLS (``gateway.streams``) stays on
``loop.create_server``.
"""
from __future__ import annotations

import socket
import ssl
from typing import Callable

from _speedups.reactor import Listener, Reactor
from _speedups.tls_transport import TlsListener
from gateway.config import Address

BACKLOG = 4096


def bind_listeners(address: Address) -> list[socket.socket]:
    """One SO_REUSEPORT listening socket per address the host resolves to, as
    ``loop.create_server(host, port, reuse_port=True)`` makes them ("" is every address)."""
    infos = socket.getaddrinfo(address.host or None, address.port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    bound = set()
    try:
        for family, kind, proto, _, sockaddr in infos:
            if sockaddr in bound:       # listed once per protocol on some systems
                continue
            bound.add(sockaddr)
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(BACKLOG)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


class ReactorServer:
    """Listening sockets whose connections get ``protocol_factory()``, through ``reactor``;
    with ``tls``, once their handshake on that context completes (within ``handshake_timeout``
    seconds)."""

    def __init__(self, reactor: Reactor, socks: list[socket.socket], protocol_factory: Callable[[], object],
                 tls: ssl.SSLContext | None = None, handshake_timeout: float = 60.0) -> None:
        if tls is None:
            self.listeners: list[Listener] = [reactor.listen(sock, protocol_factory) for sock in socks]
        else:
            self.listeners = [TlsListener(reactor, sock, protocol_factory, tls, handshake_timeout) for sock in socks]

    @property
    def sockets(self) -> list[socket.socket]:
        return [sock for listener in self.listeners for sock in listener.sockets]

    def close(self) -> None:
        """Stop accepting; accepted connections stay open."""
        for listener in self.listeners:
            listener.close()

    def adopt(self, conn: socket.socket) -> None:
        """Serve a connection accepted elsewhere (emptying a closing listener's queue)."""
        self.listeners[0].adopt(conn)


class PortReservations:
    """The Gateway listeners' (address, port) pairs, held by the control plane.

    A socket bound (not listening) with SO_REUSEPORT keeps the pair for this gateway's
    workers, which bind their own listening sockets beside it, and tells at once whether
    the pair can be had at all: a listener is ``Programmed`` only once its pair is held here.
    Bound-only sockets take no connections (the kernel hands them only to listening ones).
    """

    def __init__(self) -> None:
        self.held: dict[tuple[str, int], socket.socket] = {}

    def hold(self, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """Hold exactly ``wanted``; the pairs that could not be bound, with the reason."""
        for pair in [p for p in self.held if p not in wanted]:
            self.held.pop(pair).close()
        errors = {}
        for address, port in sorted(wanted - self.held.keys()):
            try:
                self.held[(address, port)] = _reserve(address, port)
            except OSError as exc:
                errors[(address, port)] = exc.strerror or str(exc)
        return errors

    def close(self) -> None:
        self.hold(set())


def _reserve(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock
