"""Ports and TCP connections on this machine.

* ``free_port(host, *also)`` and ``wait_listening(host, port, timeout, proc)``: defined once in
  the shipped ``gateway.devcluster._process`` (``gateway demo`` needs them) and re-exported here.
* ``upstream_connections(pid, addresses)``: a process's established connections to upstreams.
* ``connection_owners(port, pids)``: which of a gateway's processes holds each client connection.

Both read /proc/net/tcp and match its socket inodes with the process's descriptors.
"""
from __future__ import annotations

import socket
from typing import Iterable

from gateway.devcluster._process import free_port, wait_listening

from .processes import fd_targets

__all__ = ["free_port", "wait_listening", "socket_inodes", "upstream_connections", "connection_owners"]


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets ``pid`` has open (none when it is gone)."""
    return {int(t[8:-1]) for t in fd_targets(pid) if t.startswith("socket:[")}


def _hex_addr(address: str) -> str:
    ip, port = address.rsplit(":", 1)
    packed = socket.inet_aton(ip)
    return "%08X:%04X" % (int.from_bytes(packed, "little"), int(port))


def _established() -> Iterable[tuple[str, str, int]]:
    """(local, remote, inode) of each established IPv4 TCP connection, addresses in hex."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] == "01":
                yield parts[1], parts[2], int(parts[9])


def upstream_connections(pid: int, addresses: Iterable[str]) -> set[tuple[str, str]]:
    """Established TCP connections of process ``pid`` to any of ``addresses`` ("ip:port"),
    as (local, remote) hex pairs from /proc/net/tcp."""
    wanted = {_hex_addr(a) for a in addresses}
    inodes = socket_inodes(pid)
    return {(local, remote) for local, remote, inode in _established()
            if remote in wanted and inode in inodes}


def connection_owners(gateway_port: int, pids: list[int]) -> dict[int, int]:
    """Client port -> pid of the gateway process holding the server side of that connection
    (established connections to 127.0.0.1:``gateway_port`` only)."""
    by_inode = {inode: pid for pid in pids for inode in socket_inodes(pid)}
    local_wanted = _hex_addr(f"127.0.0.1:{gateway_port}")
    owners = {}
    for local, remote, inode in _established():
        if local == local_wanted:
            pid = by_inode.get(inode)
            if pid is not None:
                owners[int(remote.split(":")[1], 16)] = pid
    return owners
