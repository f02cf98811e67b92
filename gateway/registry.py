"""Merges every source's view into services keyed by ``namespace/name``.

A merged service's endpoints are the union of the ready endpoints of every
source that has it (restricted to the service's ``sources:`` when given), each
tagged with its source as ``cluster`` and weighted by source weight times
endpoint weight.  The same address from two sources is one endpoint: the first
source in config order names its cluster.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, Iterable

from gateway.config import ServiceConfig
from gateway.snapshot import EndpointSpec, Snapshot
from gateway.sources.base import ServiceKey, Source, SourceState

log = logging.getLogger("gateway.registry")


def merge_service(service: ServiceConfig, sources: Iterable[Source]) -> tuple[EndpointSpec, ...]:
    """The merged endpoint list of one service."""
    allowed = set(service.sources)
    merged: dict[tuple[str, int], EndpointSpec] = {}
    key = ServiceKey(service.namespace, service.name)
    for source in sources:
        if allowed and source.name not in allowed:
            continue
        for ep in source.endpoints(key, service.port) or ():
            if not ep.ready:
                continue                    # not ready or terminating: no new requests
            address = (ep.ip, ep.port)
            if address not in merged:
                merged[address] = EndpointSpec(cluster=source.name, ip=ep.ip, port=ep.port,
                                               weight=source.weight * ep.weight)
    return tuple(merged.values())


class Registry:
    """Rebuilds the snapshot when a source changes, at most once per loop iteration."""

    def __init__(self, services: tuple[ServiceConfig, ...], sources: list[Source],
                 publish: Callable[[Snapshot], None]) -> None:
        self.services = services
        self.sources = sources
        self._publish = publish
        self._scheduled = False
        self.version = 0
        self.snapshot = Snapshot(0)

    def start(self) -> None:
        for source in self.sources:
            source.start(self.changed)
        self.rebuild()

    async def wait_synced(self, timeout: float, sources: list[Source] | None = None) -> list[str]:
        """Wait until the sources have a first complete view (or failed); the names still starting."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            waiting = [s.name for s in (self.sources if sources is None else sources)
                       if s.state == SourceState.STARTING]
            if not waiting or asyncio.get_running_loop().time() >= deadline:
                return waiting
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        await asyncio.gather(*(source.stop() for source in self.sources))

    def changed(self) -> None:
        """A source's view changed; coalesce bursts of watch events into one rebuild."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.rebuild)

    def rebuild(self) -> Snapshot:
        self._scheduled = False
        services = {svc.key: merge_service(svc, self.sources) for svc in self.services}
        if services != self.snapshot.services:
            self.version += 1
            self.snapshot = Snapshot(self.version, services)
            self._publish(self.snapshot)
        return self.snapshot

    def replace_services(self, services: tuple[ServiceConfig, ...]) -> None:
        self.services = services
        self.rebuild()
