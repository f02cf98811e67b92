"""Deltas give the tables a from-scratch rebuild would give.

A random sequence of endpoint, service and health changes goes through the real
registry and health manager into data planes three ways: applied in-process (``workers:
1``), through the wire encoding the supervisor sends to worker processes, and to a data
plane that joins halfway with a full view (a worker that starts, or resyncs, late).  At
the end each data plane's endpoint tables must equal what merging every source afresh and
applying the health states gives, and no upstream may outlive its last service.

The sources here are in-memory ``Source`` implementations driven by the test (the
Kubernetes source is tested against the local API server in test_kubernetes_source.py).
"""
from __future__ import annotations

import asyncio

from hypothesis import given, settings, strategies as st

from gateway.config import Config, Limits, OutlierConfig, ServiceConfig, Timeouts
from gateway.dataplane import DataPlane, ProxyContext
from gateway.health.manager import HealthManager
from gateway.health.state import effective_flags
from gateway.registry import Registry, merge_service
from gateway.snapshot import Delta, Snapshot
from gateway.sources.base import ServiceKey, Source, SourceEndpoint, SourceState
from gateway.wire import encode, read_message

SERVICES = ("a", "b", "c")
ADDRESSES = [(f"127.0.0.{i}", 8000 + i % 2) for i in range(2, 8)]


class MemorySource(Source):
    kind = "memory"

    def __init__(self, name: str, weight: int) -> None:
        super().__init__(name, weight)
        self.data: dict[ServiceKey, list[SourceEndpoint]] = {}

    def start(self, on_change) -> None:
        super().start(on_change)
        self.state = SourceState.SYNCED

    def endpoints(self, service: ServiceKey, port):
        return self.data.get(service)

    def set(self, name: str, endpoints: list[SourceEndpoint] | None) -> None:
        key = ServiceKey("default", name)
        if endpoints is None:
            self.data.pop(key, None)
        else:
            self.data[key] = endpoints
        self._changed({key})


endpoint = st.builds(lambda i, ready, w: SourceEndpoint(*ADDRESSES[i], weight=w, ready=ready),
                     st.integers(0, len(ADDRESSES) - 1), st.booleans(), st.integers(1, 3))
op = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1), st.sampled_from(SERVICES),
              st.lists(endpoint, max_size=5, unique_by=lambda e: (e.ip, e.port))),
    st.tuples(st.just("remove"), st.integers(0, 1), st.sampled_from(SERVICES)),
    st.tuples(st.sampled_from(("fail", "succeed")), st.sampled_from(SERVICES), st.integers(0, 9)),
    st.tuples(st.just("join"),),
)


def _configs(names) -> tuple[ServiceConfig, ...]:
    return tuple(ServiceConfig("default", n, 8000, panic_threshold=0.3,
                               outlier_detection=OutlierConfig(consecutive_failures=2,
                                                               base_ejection_time=300.0))
                 for n in names)


async def _wire(delta: Delta) -> Delta:
    """Through the same frames the supervisor writes to a worker's socket."""
    reader = asyncio.StreamReader()
    reader.feed_data(encode(delta.to_wire()))
    reader.feed_eof()
    return Delta.from_wire(await read_message(reader))


def _tables(dp: DataPlane) -> dict:
    # The table's own copy of each weight: an Upstream shared by two services has one
    # ``weight`` attribute, but each table keeps the weight its service gave.
    return {key: [(row["key"], row["weight"], row["flags"]) for row in svc.table.state()]
            for key, svc in dp.services.items()}


def _expected(services, sources, health: HealthManager) -> dict:
    out = {}
    for svc in services:
        merged = merge_service(svc, sources)
        raw = [health.states[(svc.key, e.key)].flags if (svc.key, e.key) in health.states else 0
               for e in merged]
        flags, _ = effective_flags([e.cluster for e in merged], raw, svc.panic_threshold)
        out[svc.key] = [(e.key, e.weight, f) for e, f in zip(merged, flags)]
    return out


async def _scenario(ops) -> None:
    loop = asyncio.get_running_loop()
    services = _configs(SERVICES)
    config = Config(services=services)
    sources = [MemorySource("zone-a", 100), MemorySource("zone-b", 300)]
    planes = {name: DataPlane(ProxyContext(loop, Limits(), Timeouts())) for name in ("in_process", "wire")}
    for dp in planes.values():
        dp.apply_config(config)
    pending: list[Delta] = []

    def publish(delta: Delta) -> None:
        pending.append(delta)
        assert planes["in_process"].apply_delta(delta)

    health = HealthManager(services, publish)
    registry = Registry(services, sources, health.update)
    registry.start()

    async def settle() -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        while pending:
            delta = await _wire(pending.pop(0))
            for name, dp in planes.items():
                if name != "in_process":
                    assert dp.apply_delta(delta), (name, delta.version, dp.snapshot_version)

    await settle()
    for step in ops:
        kind = step[0]
        if kind == "set":
            sources[step[1]].set(step[2], step[3])
        elif kind == "remove":
            sources[step[1]].set(step[2], None)
        elif kind in ("fail", "succeed"):   # the k-th endpoint the service has now
            key = f"default/{step[1]}"
            members = health.source.get(key, ())
            target = members[step[2] % len(members)].key if members else ("zone-a", "127.0.0.9", 1)
            # A failure twice (consecutive_failures is 2: it ejects), a success once.
            for _ in range(2 if kind == "fail" else 1):
                health.report(key, target, "connect_failed" if kind == "fail" else None)
        elif kind == "join" and "late" not in planes:
            late = DataPlane(ProxyContext(loop, Limits(), Timeouts()))
            late.apply_config(config)
            late.apply_full(Snapshot.from_wire(health.snapshot().to_wire()))
            planes["late"] = late
        await settle()

    expected = _expected(services, sources, health)
    assert {k: [(e.key, e.weight, e.flags) for e in v] for k, v in health.snapshot().services.items()} \
        == expected
    for name, dp in planes.items():
        assert _tables(dp) == expected, name
        used = {("", *key) for rows in expected.values() for key, _, _ in rows}
        assert set(dp.upstreams) == used, f"{name}: upstreams outlived their services"
        assert dp.snapshot_version == health.version, name
    await health.stop()


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=30))
def test_deltas_match_a_rebuild(ops):
    asyncio.run(_scenario(ops))


def test_a_version_gap_is_refused_and_a_full_view_repairs_it():
    async def scenario():
        dp = DataPlane(ProxyContext(asyncio.get_running_loop(), Limits(), Timeouts()))
        dp.apply_config(Config(services=_configs(("a",))))
        spec = ("zone-a", "127.0.0.2", 8000)
        from gateway.snapshot import EndpointSpec
        e = EndpointSpec(*spec, weight=1)
        assert dp.apply_delta(Delta(1, {"default/a": (e,)}))
        assert not dp.apply_delta(Delta(3, {"default/a": ()})), "version 2 never came"
        assert len(dp.services["default/a"].table) == 1, "nothing applied from a gap"
        dp.apply_full(Snapshot(3, {"default/a": ()}))
        assert dp.snapshot_version == 3 and len(dp.services["default/a"].table) == 0
        assert dp.upstreams == {}
    asyncio.run(scenario())


def test_suspect_asks_for_the_next_success_in_every_pool():
    async def scenario():
        from gateway.config import UpstreamTls
        from gateway.snapshot import EndpointSpec
        services = (ServiceConfig("default", "plain", 8000),
                    ServiceConfig("default", "tls", 8000, tls=UpstreamTls(verify=False)))
        dp = DataPlane(ProxyContext(asyncio.get_running_loop(), Limits(), Timeouts()))
        dp.apply_config(Config(services=services))
        e = EndpointSpec("zone-a", "127.0.0.2", 8000, 1)
        dp.apply_delta(Delta(1, {"default/plain": (e,), "default/tls": (e,)}))
        assert sorted(dp.upstreams) == [("", *e.key), ("default/tls", *e.key)]
        assert not any(u.report_success for u in dp.upstreams.values())
        dp.suspect("default/tls", e.key)
        assert [u.report_success for u in (dp.upstreams[("", *e.key)],
                                          dp.upstreams[("default/tls", *e.key)])] == [True, True]
    asyncio.run(scenario())
