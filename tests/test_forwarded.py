"""``_speedups.forwarded.TrustedProxies`` in process, against the plain reference
(``tests/reference/forwarded.py``, built on ``ipaddress``), with Hypothesis-made headers."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _speedups.forwarded import TrustedProxies
from tests.reference.forwarded import client as reference

CIDRS = ["10.0.0.0/8", "192.168.1.0/24", "203.0.113.7/32", "2001:db8::/32", "fd00::/8"]
ADDRESSES = ["10.1.2.3", "10.255.255.255", "11.0.0.1", "9.255.255.255", "192.168.1.9",
             "192.168.2.1", "203.0.113.7", "203.0.113.8", "::ffff:10.0.0.1", "::ffff:11.0.0.1",
             "2001:db8::1", "2001:db9::1", "fd12::3", "fe80::1", "::1", "0.0.0.0"]
ENTRIES = ADDRESSES + ["10.1.2.3:8080", "[2001:db8::1]:443", "[2001:db9::1]", "[::1]x", "1.2.3.4:",
                       "1.2.3.4:123456", "unknown", "", " ", "1.2.3", "1.2.3.4.5", "[10.0.0.1]",
                       "fe80::1%eth0", "::ffff:1.2.3.4", '"x"', "999.1.1.1"]

headers = st.one_of(st.none(), st.lists(st.sampled_from(ENTRIES), max_size=6).map(
    lambda es: ",".join(f"{' ' if i % 2 else ''}{e}" for i, e in enumerate(es))))


@settings(max_examples=500, deadline=None)
@given(peer=st.sampled_from(ADDRESSES), xff=headers, cidrs=st.lists(st.sampled_from(CIDRS), min_size=1,
                                                                      unique=True))
def test_cidrs_agree_with_reference(peer, xff, cidrs):
    assert TrustedProxies(cidrs)(peer, xff) == reference(peer, xff, cidrs=cidrs)


@settings(max_examples=300, deadline=None)
@given(peer=st.sampled_from(ADDRESSES), xff=headers, hops=st.integers(1, 4))
def test_hops_agree_with_reference(peer, xff, hops):
    assert TrustedProxies(hops=hops)(peer, xff) == reference(peer, xff, hops=hops)


def test_untrusted_peer_is_never_overridden():
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies("198.51.100.1", "203.0.113.9") == "198.51.100.1"
    assert proxies("10.0.0.1", "203.0.113.9") == "203.0.113.9"
    assert proxies("::ffff:10.0.0.1", "203.0.113.9") == "203.0.113.9"   # dual-stack peer


@pytest.mark.parametrize("cidrs, hops", [((), 0), (("10.0.0.0/8",), 1)])
def test_exactly_one_of_cidrs_and_hops(cidrs, hops):
    with pytest.raises(ValueError):
        TrustedProxies(cidrs, hops)
