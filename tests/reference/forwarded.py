"""The client address behind trusted proxies, in plain Python with ``ipaddress``: the oracle
for ``_speedups.forwarded.TrustedProxies``.  Not used by the gateway."""
from __future__ import annotations

import ipaddress
import re

_V4_PORT = re.compile(r"([0-9.]+):[0-9]{1,5}")
_V6_BRACKETS = re.compile(r"\[([^\]]*)\](?::[0-9]{1,5})?")


def address(entry: str):
    """The address in an X-Forwarded-For entry (port and brackets removed), or None."""
    if m := _V6_BRACKETS.fullmatch(entry):
        text, family = m.group(1), 6
    elif m := _V4_PORT.fullmatch(entry):
        text, family = m.group(1), 4
    else:
        text, family = entry, None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if family is not None and ip.version != family or "%" in text:
        return None
    return text, ip


def client(peer: str, forwarded_for: str | None, cidrs=(), hops: int = 0) -> str:
    networks = [ipaddress.ip_network(c) for c in cidrs]

    def trusted(ip) -> bool:
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == n.version and ip in n for n in networks)

    if forwarded_for is None:
        return peer
    entries = [e.strip(" \t") for e in forwarded_for.split(",")]
    entries = [e for e in entries if e]
    if hops:
        if len(entries) < hops:
            return peer
        found = address(entries[-hops])
        return found[0] if found else peer
    if not trusted(ipaddress.ip_address(peer)):
        return peer
    nearest = peer
    for entry in reversed(entries):
        found = address(entry)
        if found is None:
            return nearest
        if not trusted(found[1]):
            return found[0]
        nearest = found[0]
    return nearest
