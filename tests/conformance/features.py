"""The features this replay claims: the upstream suite's ``SupportedFeatures``.

Upstream, an implementation names the features it supports; a test needing one it does not name
is skipped (``ConformanceTest.Run``: "Skipping <ShortName>: suite does not support <feature>"),
and some tests look at the set themselves (``suite.SupportedFeatures.Has``). Here every feature
of the replayed tests is claimed but those in ``UNCLAIMED``; a test calls ``require`` with its
ShortName first, as ``Run`` checks before applying the manifests. ``report.py`` counts a test
needing an unclaimed feature as skipped, and an unclaimed feature as unsupported.
"""
from __future__ import annotations

import json
from pathlib import Path

UPSTREAM = Path(__file__).resolve().parent / "upstream.json"

# Every feature of the replayed tests is claimed (TLSRouteModeMixed too: a port with Terminate and
# Passthrough listeners reads each ClientHello and ends TLS itself for the Terminate ones).
UNCLAIMED: frozenset[str] = frozenset()


def supports(feature: str) -> bool:
    """suite.SupportedFeatures.Has(feature)."""
    return feature not in UNCLAIMED


def declared(short_name: str) -> list[str]:
    """The features the upstream test ``short_name`` declares (upstream.json)."""
    return json.loads(UPSTREAM.read_text())["tests"][short_name]["features"]


def require(short_name: str) -> None:
    """ConformanceTest.Run's check: skip the test unless every feature it declares is claimed."""
    import pytest       # here: report.py imports this module too, and runs without pytest

    for feature in declared(short_name):
        if not supports(feature):
            pytest.skip(f"Skipping {short_name}: suite does not support {feature}")
