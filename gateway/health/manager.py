"""Decides which endpoints serve: active probes + passive reports -> flags per endpoint.

Sits between the registry and the data plane: it receives each merged snapshot,
keeps one EndpointHealth per (service, cluster, ip, port) across snapshots
(state survives slice updates and endpoint churn), runs the probes once per
endpoint in the control plane, and publishes the snapshot again with each
endpoint's effective flags whenever health changes.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import replace
from typing import Callable

from gateway.config import ServiceConfig
from gateway.health.probe import ProbeTlsContexts, probe
from gateway.health.state import EndpointHealth, effective_flags
from gateway.snapshot import EndpointSpec, Snapshot

log = logging.getLogger("gateway.health")

EXPIRY_TICK = 0.25              # how often ejections are checked for expiry
FORGET_AFTER = 600.0            # health of an endpoint gone this long is dropped

_Key = tuple[str, tuple[str, str, int]]     # (service, endpoint key)


class HealthManager:
    def __init__(self, services: tuple[ServiceConfig, ...], publish: Callable[[Snapshot], None]) -> None:
        self._publish = publish
        self.services = {s.key: s for s in services}
        self.states: dict[_Key, EndpointHealth] = {}
        self._gone_since: dict[_Key, float] = {}
        self._probes: dict[_Key, asyncio.Task] = {}
        self.source_snapshot = Snapshot(0)
        self.snapshot = Snapshot(0)
        self.panic: dict[str, bool] = {}
        self.version = 0
        self._timer: asyncio.TimerHandle | None = None
        self._dirty = False
        self.probe_tls = ProbeTlsContexts()     # services with tls: are probed over TLS

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(EXPIRY_TICK, self._tick)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in self._probes.values():
            task.cancel()
        await asyncio.gather(*self._probes.values(), return_exceptions=True)
        self._probes.clear()

    def replace_services(self, services: tuple[ServiceConfig, ...]) -> None:
        """New service configs; services whose health settings did not change keep their state."""
        old = self.services
        self.services = {s.key: s for s in services}
        self.probe_tls.reset()
        for key in list(self.states):
            before, after = old.get(key[0]), self.services.get(key[0])
            if after is None or before is None or (before.health_check, before.outlier_detection) != (
                    after.health_check, after.outlier_detection):
                self.states.pop(key)
                self._stop_probe(key)
        self.update(self.source_snapshot)

    # -- inputs -------------------------------------------------------------

    def update(self, snapshot: Snapshot) -> None:
        """A new merged snapshot from the registry."""
        self.source_snapshot = snapshot
        now = time.monotonic()
        present = set()
        for service_key, endpoints in snapshot.services.items():
            config = self.services.get(service_key)
            if config is None:
                continue
            for ep in endpoints:
                key = (service_key, ep.key)
                present.add(key)
                self._gone_since.pop(key, None)
                if key not in self.states:
                    self.states[key] = EndpointHealth(config.health_check, config.outlier_detection)
                if config.health_check is not None and key not in self._probes:
                    self._probes[key] = asyncio.ensure_future(self._probe_loop(key, ep, config))
        for key in list(self._probes):
            if key not in present:
                self._stop_probe(key)
        for key in self.states:
            if key not in present:
                self._gone_since.setdefault(key, now)
        self._republish()

    def report(self, service_key: str, endpoint_key: tuple[str, str, int], kind: str | None) -> None:
        """A request outcome from the data plane (kind None: success after failures)."""
        state = self.states.get((service_key, endpoint_key))
        if state is not None and state.record_request(kind, time.monotonic()):
            log.warning("endpoint ejected", extra={"fields": {
                "service": service_key, "cluster": endpoint_key[0],
                "endpoint": f"{endpoint_key[1]}:{endpoint_key[2]}", "cause": kind,
                "ejection": state.ejections, "seconds": round(state.ejected_until - time.monotonic(), 1)}})
            self._republish()

    # -- probing ---------------------------------------------------------------

    async def _probe_loop(self, key: _Key, ep: EndpointSpec, config: ServiceConfig) -> None:
        check = config.health_check
        state = self.states[key]
        # Spread the first probes over one interval so they do not all fire at once.
        await asyncio.sleep(random.uniform(0, min(check.interval, 0.2)))
        while True:
            # The service's current TLS settings: a reload may change them, not the check.
            tls = self.probe_tls.get(self.services.get(key[0], config).tls)
            error = await probe(ep.ip, ep.port, check, tls)
            if state.record_probe(error is None, time.monotonic(), error):
                log.warning("endpoint %s", "healthy" if error is None else "unhealthy",
                            extra={"fields": {"service": key[0], "cluster": ep.cluster,
                                              "endpoint": ep.host, "error": error}})
                self._republish()
            await asyncio.sleep(check.interval + random.uniform(0, check.jitter))

    def _stop_probe(self, key: _Key) -> None:
        task = self._probes.pop(key, None)
        if task is not None:
            task.cancel()

    def _tick(self) -> None:
        now = time.monotonic()
        changed = False
        for state in self.states.values():
            changed |= state.expire(now)
        for key, since in list(self._gone_since.items()):
            if now - since > FORGET_AFTER:
                del self._gone_since[key]
                self.states.pop(key, None)
        if changed:
            self._republish()
        self._timer = asyncio.get_running_loop().call_later(EXPIRY_TICK, self._tick)

    # -- output -------------------------------------------------------------

    def _republish(self) -> None:
        services = {}
        for service_key, endpoints in self.source_snapshot.services.items():
            config = self.services.get(service_key)
            if config is None:
                services[service_key] = endpoints
                continue
            raw = [self.states[(service_key, ep.key)].flags for ep in endpoints]
            flags, panic = effective_flags([ep.cluster for ep in endpoints], raw, config.panic_threshold)
            if panic != self.panic.get(service_key, False):
                log.warning("panic routing %s", "on" if panic else "off", extra={"fields": {
                    "service": service_key, "healthy": raw.count(0), "endpoints": len(raw)}})
            self.panic[service_key] = panic
            services[service_key] = tuple(
                ep if ep.flags == f else replace(ep, flags=f) for ep, f in zip(endpoints, flags))
        if services == self.snapshot.services and self.snapshot.version:
            return
        self.version += 1
        self.snapshot = Snapshot(self.version, services)
        self._publish(self.snapshot)

    def describe(self, service_key: str) -> list[dict]:
        """Each endpoint with its health and why, for the admin API."""
        now = time.monotonic()
        out = []
        effective = {ep.key: ep.flags for ep in self.snapshot.services.get(service_key, ())}
        for ep in self.source_snapshot.services.get(service_key, ()):
            state = self.states.get((service_key, ep.key))
            info = state.describe(now) if state else {"healthy": True, "causes": []}
            info.update(cluster=ep.cluster, address=ep.host, weight=ep.weight,
                        serving=effective.get(ep.key, 0) == 0)
            out.append(info)
        return out
