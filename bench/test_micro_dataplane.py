"""Micro-benchmark of applying a snapshot to a worker's DataPlane: 10,000 endpoints.

    python -m pytest bench/test_micro_dataplane.py --benchmark-only -p no:cacheprovider

``DataPlane.apply_full`` (and, per service, ``apply_delta``) runs in every worker on a change a source
reports (a pod ready or gone): it finds or creates the ``Upstream`` of each
endpoint, updates the service's ``EndpointTable`` by key (carrying schedule,
flags and in-flight) and sets each endpoint's health flags.  Two cases, each
alternating between two snapshots so that every call does the same work:

* ``1 changed``: the snapshots differ in one endpoint (one Upstream retired,
  one created, 9,999 carried): the common case;
* ``all new``: disjoint snapshots: 10,000 Upstreams created and 10,000 retired.

There is no reference baseline: this is Python policy over compiled objects,
timed so that a regression (say, a rebuild per endpoint) shows.
"""
from __future__ import annotations

import asyncio

import pytest

from gateway.config import parse_config
from gateway.dataplane import DataPlane, ProxyContext
from gateway.snapshot import EndpointSpec, Snapshot

SERVICE = "default/big"
N = 10_000


def specs(n: int, third_octet_base: int = 0) -> list[EndpointSpec]:
    return [EndpointSpec("zone-a" if i % 2 else "zone-b", f"10.{third_octet_base + (i >> 8)}.{i & 255}.1",
                         8080, 1 + i % 3)
            for i in range(n)]


@pytest.fixture
def dataplane():
    config = parse_config({
        "listen": "127.0.0.1:8080", "admin": None,          # nothing listens: no server here
        "sources": [{"name": "zone-a", "type": "static", "services": []}],
        # round_robin: the EDF scheduler of a large weighted table is what is timed.
        "services": [{"name": "big", "namespace": "default", "port": 8080, "lb": {"policy": "round_robin"}}],
        "routes": [{"name": "all", "service": "default/big"}],
    })
    loop = asyncio.new_event_loop()
    dp = DataPlane(ProxyContext(loop, config.limits, config.timeouts))
    dp.apply_config(config)
    yield dp
    dp.close_all_upstreams()
    loop.close()


def _alternate(dp: DataPlane, a: list[EndpointSpec], b: list[EndpointSpec]):
    snapshots = [Snapshot(1, {SERVICE: tuple(a)}), Snapshot(2, {SERVICE: tuple(b)})]
    state = {"i": 0}

    def apply():
        state["i"] ^= 1
        dp.apply_full(snapshots[state["i"]])

    dp.apply_full(snapshots[0])
    return apply


def test_apply_snapshot_one_changed(benchmark, dataplane):
    benchmark.group = "apply snapshot n=10000"
    a = specs(N)
    b = list(a)
    b[N // 2] = EndpointSpec("zone-a", "10.200.0.1", 8080, 1)
    benchmark(_alternate(dataplane, a, b))
    table = dataplane.services[SERVICE].table
    assert len(table) == N and table.scheduler == "edf" and len(dataplane.upstreams) == N


def test_apply_snapshot_all_new(benchmark, dataplane):
    benchmark.group = "apply snapshot n=10000"
    benchmark(_alternate(dataplane, specs(N), specs(N, third_octet_base=100)))
    assert len(dataplane.services[SERVICE].table) == N and len(dataplane.upstreams) == N
