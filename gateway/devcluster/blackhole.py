"""A zone that can vanish: a private network namespace whose packets nftables drops on demand.

The failover tests and ``bench/failover.py`` put one zone's pods in a namespace of their own,
reached from this machine over a veth pair on a private /30; ``drop()`` installs an nftables
table whose input and output chains drop everything (no RST, no ICMP: a blackhole, as a
failed zone or a partition looks), ``restore()`` deletes it.  Needs root, ``ip`` and ``nft``
(scripts/setup.sh installs them).  Every command is bounded; ``close()`` deletes the
namespace, its veth pair and whatever runs in it is the caller's to stop first.
"""
from __future__ import annotations

import os
import shutil
import subprocess

_DROP_RULES = """table inet blackhole {
  chain in { type filter hook input priority -300; policy drop; }
  chain out { type filter hook output priority -300; policy drop; }
}
"""


def available() -> str | None:
    """None when blackholes can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns, nft)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/setup.sh installs it)"
    return None


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, timeout=10, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Blackhole:
    """A namespace with one address, ``address``, reachable from here at ``peer``."""

    def __init__(self, tag: str) -> None:
        n = os.getpid() % 200 + 20
        self.ns = f"gw-{tag}-{os.getpid()}"[:40]
        self.veth = f"gw{os.getpid() % 100000}{tag[:3]}h"         # <= 11 characters
        self.peer = f"10.{n}.{len(tag) * 7 % 250}.1"
        self.address = f"10.{n}.{len(tag) * 7 % 250}.2"
        self.dropping = False

    def create(self) -> "Blackhole":
        inner = self.veth[:-1] + "n"                               # its peer, in the namespace
        _run("ip", "netns", "add", self.ns)
        try:
            _run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", inner)
            _run("ip", "link", "set", inner, "netns", self.ns)
            _run("ip", "addr", "add", f"{self.peer}/30", "dev", self.veth)
            _run("ip", "link", "set", self.veth, "up")
            _run("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.address}/30", "dev", inner)
            _run("ip", "netns", "exec", self.ns, "ip", "link", "set", inner, "up")
            _run("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def drop(self) -> None:
        """From now on every packet in or out of the namespace is dropped."""
        subprocess.run(["ip", "netns", "exec", self.ns, "nft", "-f", "-"], input=_DROP_RULES.encode(),
                       check=True, timeout=10, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.dropping = True

    def restore(self) -> None:
        if self.dropping:
            _run("ip", "netns", "exec", self.ns, "nft", "delete", "table", "inet", "blackhole")
            self.dropping = False

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.veth], timeout=10,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", self.ns], timeout=10,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self) -> "Blackhole":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.close()
