"""Merges every source's view into services keyed by ``namespace/name``.

A merged service's endpoints are the union of the ready endpoints of every
source that has it (restricted to the service's ``sources:`` when given), each
tagged with its source as ``cluster`` and weighted by source weight times
endpoint weight.  The same address from two sources is one endpoint: the first
source in config order names its cluster.

Work follows the change: a source names the services a watch event touched, and
only those are merged again (coalesced per loop iteration); what differs is
published as ``{service key: endpoints}``, ``None`` for a service no longer
configured.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, Iterable

from gateway.config import ServiceConfig
from gateway.snapshot import Endpoints, EndpointSpec
from gateway.sources.base import ServiceKey, Source, SourceState

log = logging.getLogger("gateway.registry")

Changes = dict[str, Endpoints | None]

# appProtocol values that mean HTTP/2 with prior knowledge (services[].protocol: auto):
# kubernetes.io/h2c (KEP-3726, Gateway API GEP-1911), and the bare names in use for it.
# GEP-1911 defines no value for HTTP/2 over TLS: that is protocol: h2.
H2C_APP_PROTOCOLS = frozenset(("kubernetes.io/h2c", "h2c", "grpc"))


def merge_service(service: ServiceConfig, sources: Iterable[Source]) -> Endpoints:
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
                merged[address] = EndpointSpec(
                    cluster=source.name, ip=ep.ip, port=ep.port, weight=source.weight * ep.weight,
                    protocol="h2c" if ep.app_protocol in H2C_APP_PROTOCOLS else "")
    return tuple(merged.values())


class Registry:
    """The merged services, kept current by re-merging the services sources name."""

    def __init__(self, services: tuple[ServiceConfig, ...], sources: list[Source],
                 publish: Callable[[Changes], None],
                 on_merged: Callable[["Registry", set[str]], None] | None = None) -> None:
        self.sources = sources
        self._publish = publish
        self._on_merged = on_merged         # told which services were merged again (gateway.mcs)
        self.services: dict[str, ServiceConfig] = {}
        self._by_name: dict[ServiceKey, list[str]] = {}     # several: a Service's other ports
        self._set_services(services)
        self.merged: dict[str, Endpoints] = {}
        self._dirty: set[str] = set()
        self._scheduled = False
        self.version = 0                    # grows by one per published change
        self.merges = 0                     # services merged so far (work done, for tests)

    def _set_services(self, services: tuple[ServiceConfig, ...]) -> None:
        self.services = {svc.key: svc for svc in services}
        self._by_name = {}
        for svc in services:
            self._by_name.setdefault(ServiceKey(svc.namespace, svc.name), []).append(svc.key)

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

    def changed(self, source: Source, keys: frozenset[ServiceKey]) -> None:
        """A source's view of ``keys`` changed; bursts of watch events merge once per iteration."""
        by_name = self._by_name
        self._dirty.update(key for k in keys for key in by_name.get(k, ()))
        if self._dirty and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self, gone: Changes | None = None) -> Changes:
        """Merge the services marked changed; publish and return the ones that differ
        (with ``gone``: services no longer configured, published as None)."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, set()
        changes: Changes = dict(gone or {})
        for key in dirty:
            svc = self.services.get(key)
            if svc is None:
                continue
            endpoints = merge_service(svc, self.sources)
            self.merges += 1
            if self.merged.get(key) != endpoints:
                self.merged[key] = endpoints
                changes[key] = endpoints
        if changes:
            self.version += 1
            self._publish(changes)
        if self._on_merged is not None and dirty:
            self._on_merged(self, dirty)
        return changes

    def rebuild(self) -> Changes:
        """Merge every service (at start, and when the sources change)."""
        return self._reconcile(set(self.services))

    def replace_services(self, services: tuple[ServiceConfig, ...]) -> Changes:
        """New service configs; unchanged ones keep their merge, the others are merged again."""
        old = self.services
        self._set_services(services)
        return self._reconcile({key for key, svc in self.services.items() if old.get(key) != svc})

    def _reconcile(self, dirty: set[str]) -> Changes:
        gone: Changes = {key: None for key in self.merged if key not in self.services}
        for key in gone:
            del self.merged[key]
        self._dirty |= dirty
        return self.flush(gone)
