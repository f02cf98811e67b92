"""The plain-HTTP port: its listening sockets, served by the reactor.

``_speedups.reactor`` accepts, reads and writes these connections itself (no uvloop
transport per connection); ``PlainServer`` is as much of ``asyncio.Server`` as the worker
uses.  The TLS port stays on ``loop.create_server``.
"""
from __future__ import annotations

import socket
from typing import Callable

from _speedups.reactor import Listener, Reactor
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


class PlainServer:
    """Listening sockets whose connections get ``protocol_factory()``, through ``reactor``."""

    def __init__(self, reactor: Reactor, socks: list[socket.socket],
                 protocol_factory: Callable[[], object]) -> None:
        self.listeners: list[Listener] = [reactor.listen(sock, protocol_factory) for sock in socks]

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
