"""Decides which endpoints serve: active probes + passive reports -> flags per endpoint.

Sits between the registry and the data plane.  It receives the registry's
per-service membership changes, keeps one EndpointHealth per (service, cluster,
ip, port) across them (state survives slice updates and endpoint churn), runs
the probes once per endpoint in the control plane, and publishes ``Delta``s: a
membership change with the endpoints' effective flags, or, when only health
changed, the ``(index, flags)`` pairs of the one service concerned.

Passive health is decided here, for every worker at once: workers report each
failed try and, for an endpoint under suspicion, the next success.  When a
failure starts a run, ``suspect`` tells every worker to report its next success
to that endpoint, so that "consecutive" means the same with 1 or N workers.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections import Counter, deque
from typing import Callable

from gateway.config import ServiceConfig, SuccessRate
from gateway.health import domains
from gateway.health.probe import ProbeTlsContexts, probe
from gateway.health.state import EndpointHealth, Level, plan_levels, slow_start_share
from gateway.health.success_rate import outliers
from gateway.registry import Changes
from gateway.snapshot import Delta, Endpoints, EndpointSpec, Loads, Snapshot
from _speedups.table import FLAG_CLUSTER_DRAINED

log = logging.getLogger("gateway.health")

EXPIRY_TICK = 0.25              # how often ejections are checked for expiry
# Slow start: ramping endpoints are re-weighed about ten times per window, at most once a
# second and at least every 100 ms: a few small weight deltas per window, and only for the
# services that have an endpoint ramping.
RAMP_STEPS = 10
RAMP_TICK_BOUNDS = (0.1, 1.0)
# A slow-start service's table weights are its weights times this, so that a ramp has 1%
# steps even for weight 1 (10^7 x 100 still fits the table's int).
RAMP_SCALE = 100
DRAIN_TICK = 0.25               # operator drain: weights re-set this often while it moves
DEFAULT_DRAIN_OVER = 30.0       # seconds, a drain (or undrain) asked for without --over
FORGET_AFTER = 600.0            # health of an endpoint gone this long is dropped

EndpointKey = tuple[str, str, int]          # (cluster, ip, port)
_Key = tuple[str, EndpointKey]              # (service, endpoint key)
Outcomes = Callable[[str, list[EndpointKey]], dict[EndpointKey, tuple[int, int]]]


class HealthManager:
    def __init__(self, services: tuple[ServiceConfig, ...], publish: Callable[[Delta], None],
                 suspect: Callable[[str, EndpointKey], None] | None = None,
                 outcomes: Outcomes | None = None) -> None:
        """``outcomes(service, endpoint keys)``: each endpoint's (tries, failed) so far, summed
        over the workers (gateway.stats.Stats.outcomes), for success-rate ejection."""
        self._publish = publish
        self._suspect = suspect
        self._outcomes = outcomes
        self._success_rate_timers: dict[str, asyncio.TimerHandle] = {}
        self._outcomes_before: dict[str, dict[EndpointKey, tuple[int, int]]] = {}
        self.services = {s.key: s for s in services}
        self.states: dict[_Key, EndpointHealth] = {}
        self.source: dict[str, Endpoints] = {}      # membership, as merged by the registry
        self.current: dict[str, Endpoints] = {}     # with effective flags, as published
        self.panic: dict[str, bool] = {}
        # Ejections so far by (service, cluster, cause), for /metrics (never reset)
        self.ejections_total: Counter[tuple[str, str, str]] = Counter()
        self.levels: dict[str, list[Level]] = {}    # priority levels with load and why
        self.loads: dict[str, Loads] = {}           # multi-level services, as published
        self.version = 0
        self._probes: dict[_Key, asyncio.Task] = {}
        self._expiries: list[tuple[float, _Key]] = []       # heap of ejection ends
        self._gone_since: dict[_Key, float] = {}
        self._gone_order: deque[tuple[float, _Key]] = deque()
        self._members_changed: set[str] = set()
        self._flags_changed: set[str] = set()
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self.ramping: dict[str, dict[EndpointKey, float]] = {}     # service -> endpoint -> factor
        self._ramp_timer: asyncio.TimerHandle | None = None
        self.probe_tls = ProbeTlsContexts()     # services with tls: are probed over TLS
        # The cluster as a health domain (domains.py): per service, each cluster's state,
        # the clusters drained automatically, and since when a cluster is back (slow start).
        self.domains: dict[str, dict[str, dict]] = {}
        self.drained: dict[str, set[str]] = {}
        self.undrained_at: dict[str, dict[str, float]] = {}
        # Operator drains (`gateway source drain`): per source (start, over, down, factor at
        # start); the services that had its endpoints when the drain began (found once).
        self.drains: dict[str, tuple[float, float, bool, float]] = {}
        self._drain_services: dict[str, set[str]] = {}
        self._drain_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(EXPIRY_TICK, self._tick)
        self._arm_success_rate()

    async def stop(self) -> None:
        for timer in (self._timer, self._ramp_timer, self._drain_timer, *self._success_rate_timers.values()):
            if timer is not None:
                timer.cancel()
        for task in self._probes.values():
            task.cancel()
        await asyncio.gather(*self._probes.values(), return_exceptions=True)
        self._probes.clear()

    def snapshot(self) -> Snapshot:
        """The whole current view (for a worker that starts or fell behind)."""
        return Snapshot(self.version, dict(self.current), dict(self.loads))

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
        changed = [k for k in self.source if old.get(k) != self.services.get(k)]
        self.update({k: self.source[k] for k in changed})
        if self._timer is not None:             # started: the timers follow the new settings
            self._arm_success_rate()

    # -- inputs -------------------------------------------------------------

    def update(self, changes: Changes) -> None:
        """Membership changes from the registry: ``{service: endpoints or None}``."""
        now = time.monotonic()
        for service_key, endpoints in changes.items():
            before = self.source.get(service_key, ())
            if endpoints is None:
                self.source.pop(service_key, None)
                endpoints = ()
            else:
                self.source[service_key] = endpoints
            present = {ep.key for ep in endpoints}
            for ep in before:
                if ep.key not in present:
                    self._gone((service_key, ep.key), now)
            config = self.services.get(service_key)
            joined = now if before else None        # a new pod, not the service's first view
            for ep in endpoints:
                self._present((service_key, ep.key), ep, config, joined)
            self._members_changed.add(service_key)
        self._flush()

    def _present(self, key: _Key, ep: EndpointSpec, config: ServiceConfig | None,
                 joined: float | None) -> None:
        self._gone_since.pop(key, None)
        if config is None:
            return
        if key not in self.states:
            self.states[key] = EndpointHealth(config.health_check, config.outlier_detection, joined)
        if config.health_check is not None and key not in self._probes:
            self._probes[key] = asyncio.ensure_future(self._probe_loop(key, ep, config))

    def _gone(self, key: _Key, now: float) -> None:
        self._stop_probe(key)
        if key in self.states and key not in self._gone_since:
            self._gone_since[key] = now
            self._gone_order.append((now, key))

    def report(self, service_key: str, endpoint_key: EndpointKey, kind: str | None) -> None:
        """A request outcome from a worker (kind None: a success while under suspicion)."""
        state = self.states.get((service_key, endpoint_key))
        if state is None:
            return
        clean = not (state.consecutive_errors or state.consecutive_5xx)
        now = time.monotonic()
        if state.record_request(kind, now):
            log.warning("endpoint ejected", extra={"fields": {
                "service": service_key, "cluster": endpoint_key[0],
                "endpoint": f"{endpoint_key[1]}:{endpoint_key[2]}", "cause": kind,
                "ejection": state.ejections, "seconds": round(state.ejected_until - now, 1)}})
            self.ejections_total[service_key, endpoint_key[0], kind or "unknown"] += 1
            heapq.heappush(self._expiries, (state.ejected_until, (service_key, endpoint_key)))
            self._health_changed(service_key)
        elif clean and (state.consecutive_errors or state.consecutive_5xx) and self._suspect:
            self._suspect(service_key, endpoint_key)

    # -- probing ---------------------------------------------------------------

    async def _probe_loop(self, key: _Key, ep: EndpointSpec, config: ServiceConfig) -> None:
        check = config.health_check
        state = self.states[key]
        # Spread the first probes over one interval so they do not all fire at once.
        await asyncio.sleep(random.uniform(0, min(check.interval, 0.2)))
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            # The service's current TLS settings and protocol: a reload may change them,
            # not the check.
            service = self.services.get(key[0], config)
            http2 = ep.spoken_with(service.protocol) in ("h2c", "h2")
            error = await probe(ep.ip, ep.port, check, self.probe_tls.get(service.endpoint_tls), http2)
            if state.record_probe(error is None, time.monotonic(), error):
                log.warning("endpoint %s", "healthy" if error is None else "unhealthy",
                            extra={"fields": {"service": key[0], "cluster": ep.cluster,
                                              "endpoint": ep.host, "error": error}})
                self._health_changed(key[0])
            # Probes start every interval (+ jitter), not an interval after the last one
            # ended: a hung endpoint makes every probe last its whole timeout, which would
            # otherwise add timeout x unhealthy_threshold to the time it takes to eject it
            # (and to how long requests waiting on it wait before they are re-dispatched).
            next_start = started + check.interval + random.uniform(0, check.jitter)
            await asyncio.sleep(max(0.0, next_start - loop.time()))

    def _stop_probe(self, key: _Key) -> None:
        task = self._probes.pop(key, None)
        if task is not None:
            task.cancel()

    def _tick(self) -> None:
        """End the ejections that are due and forget endpoints long gone: both in time order,
        so an idle tick costs nothing however many endpoints there are."""
        now = time.monotonic()
        while self._expiries and self._expiries[0][0] <= now:
            _, key = heapq.heappop(self._expiries)
            state = self.states.get(key)
            if state is not None and state.expire(now):
                self._health_changed(key[0])
        while self._gone_order and now - self._gone_order[0][0] > FORGET_AFTER:
            since, key = self._gone_order.popleft()
            if self._gone_since.get(key) == since:
                del self._gone_since[key]
                self.states.pop(key, None)
        self._timer = asyncio.get_running_loop().call_later(EXPIRY_TICK, self._tick)

    # -- success-rate ejection ---------------------------------------------------

    def _arm_success_rate(self) -> None:
        """One timer per service with success_rate (its own interval); none for the others."""
        for timer in self._success_rate_timers.values():
            timer.cancel()
        self._success_rate_timers.clear()
        if self._outcomes is None:
            return
        for key, config in self.services.items():
            rule = config.outlier_detection.success_rate if config.outlier_detection else None
            if rule is not None:
                self._success_rate_timers[key] = asyncio.get_running_loop().call_later(
                    rule.interval, self._success_rate_tick, key, rule)

    def _success_rate_tick(self, service_key: str, rule: SuccessRate) -> None:
        """Judge the interval that just ended: each endpoint's tries and failures in it."""
        self._success_rate_timers[service_key] = asyncio.get_running_loop().call_later(
            rule.interval, self._success_rate_tick, service_key, rule)
        totals = self._outcomes(service_key, [ep.key for ep in self.source.get(service_key, ())])
        before = self._outcomes_before.get(service_key)
        self._outcomes_before[service_key] = totals
        if before is None:
            return                  # the first interval starts now
        samples = {key: (tries - before.get(key, (0, 0))[0], failed - before.get(key, (0, 0))[1])
                   for key, (tries, failed) in totals.items()}
        ejected, threshold = outliers(samples, rule)
        now = time.monotonic()
        for key in ejected:
            state = self.states.get((service_key, key))
            if state is None or not state.eject(now, "success_rate"):
                continue
            tries, failed = samples[key]
            log.warning("endpoint ejected", extra={"fields": {
                "service": service_key, "cluster": key[0], "endpoint": f"{key[1]}:{key[2]}",
                "cause": "success_rate", "success_rate": round(1 - failed / tries, 4),
                "threshold": round(threshold, 4), "ejection": state.ejections,
                "seconds": round(state.ejected_until - now, 1)}})
            self.ejections_total[service_key, key[0], "success_rate"] += 1
            heapq.heappush(self._expiries, (state.ejected_until, (service_key, key)))
            self._health_changed(service_key)

    # -- output -------------------------------------------------------------

    def _health_changed(self, service_key: str) -> None:
        self._flags_changed.add(service_key)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Publish what changed since the last delta: memberships whole, health as flag pairs."""
        self._scheduled = False
        members, self._members_changed = self._members_changed, set()
        flagged, self._flags_changed = self._flags_changed - members, set()
        delta_services: dict[str, Endpoints | None] = {}
        delta_flags: dict[str, tuple[tuple[int, int], ...]] = {}
        delta_loads: dict[str, Loads] = {}
        delta_weights: dict[str, tuple[tuple[int, int], ...]] = {}
        for key in members:
            if key not in self.source:
                self.current.pop(key, None)
                self.panic.pop(key, None)
                self.levels.pop(key, None)
                self.loads.pop(key, None)
                self.ramping.pop(key, None)
                self.domains.pop(key, None)
                self.drained.pop(key, None)
                self.undrained_at.pop(key, None)
                delta_services[key] = None
            else:
                self.current[key] = delta_services[key] = self._effective(key, self.source[key])
                if key in self.loads:
                    delta_loads[key] = self.loads[key]
        for key in flagged:
            if key not in self.source:
                continue
            old_loads = self.loads.get(key)
            old, new = self.current[key], self._effective(key, self.source[key])
            pairs = tuple((i, n.flags) for i, (o, n) in enumerate(zip(old, new)) if o.flags != n.flags)
            weights = tuple((i, n.weight) for i, (o, n) in enumerate(zip(old, new)) if o.weight != n.weight)
            if pairs or weights:
                self.current[key] = new
            if pairs:
                delta_flags[key] = pairs
            if weights:
                delta_weights[key] = weights
            if self.loads.get(key) != old_loads and key in self.loads:
                delta_loads[key] = self.loads[key]
        if delta_services or delta_flags or delta_loads or delta_weights:
            self.version += 1
            self._publish(Delta(self.version, delta_services, delta_flags, delta_loads, delta_weights))
        self._schedule_ramp()

    def _effective(self, service_key: str, endpoints: Endpoints) -> Endpoints:
        """The endpoints with their flags, panic routing applied."""
        config = self.services.get(service_key)
        if config is None:
            return endpoints
        states = self.states
        found = [states.get((service_key, ep.key)) for ep in endpoints]
        raw = [state.flags if state is not None else 0 for state in found]
        clusters = [ep.cluster for ep in endpoints]
        drain = self._domains(service_key, clusters, raw, config)
        if drain:
            raw = [f | FLAG_CLUSTER_DRAINED if c in drain else f for c, f in zip(clusters, raw)]
        ramps = self._ramps(service_key, endpoints, found, config)
        if self.drains:
            raw, ramps = self._operator_drains(service_key, clusters, raw, ramps)
        priorities = [config.priority_of(ep.cluster) for ep in endpoints]
        flags, levels = plan_levels(priorities, [ep.cluster for ep in endpoints], raw,
                                    config.panic_threshold, config.overprovisioning_factor, ramps)
        panic = any(level.panic for level in levels)
        if panic != self.panic.get(service_key, False):
            log.warning("panic routing %s", "on" if panic else "off", extra={"fields": {
                "service": service_key, "healthy": raw.count(0), "endpoints": len(raw)}})
        self.panic[service_key] = panic
        self.levels[service_key] = levels
        if len(levels) > 1:
            self.loads[service_key] = _basis_points(levels)
        else:
            self.loads.pop(service_key, None)
        weights = ([ep.weight for ep in endpoints] if ramps is None else
                   [max(1, round(ep.weight * RAMP_SCALE * r)) for ep, r in zip(endpoints, ramps)])
        return tuple(ep if (ep.flags, ep.priority, ep.weight) == (f, p, w)
                     else EndpointSpec(ep.cluster, ep.ip, ep.port, w, f, p, ep.protocol)
                     for ep, f, p, w in zip(endpoints, flags, priorities, weights))

    # -- the cluster as a health domain ---------------------------------------------

    def _domains(self, service_key: str, clusters: list[str], raw: list[int],
                 config: ServiceConfig) -> set[str]:
        """Each cluster's state for the service and which clusters to drain; logs the changes."""
        drain, states = domains.plan_drain(clusters, raw)
        before = self.drained.get(service_key, set())
        now = time.monotonic()
        for name in drain - before:
            log.warning("cluster drained for a service: too few healthy endpoints", extra={"fields": {
                "event": "cluster_drained", "service": service_key, "cluster": name,
                "healthy": states[name]["healthy"], "endpoints": states[name]["endpoints"]}})
        back = self.undrained_at.setdefault(service_key, {})
        for name in before - drain:
            log.warning("cluster back for a service", extra={"fields": {
                "event": "cluster_undrained", "service": service_key, "cluster": name,
                "healthy": states.get(name, {}).get("healthy"),
                "slow_start": config.slow_start is not None}})
            if config.slow_start is not None:
                back[name] = now
        for name in drain:
            back.pop(name, None)
        if drain:
            self.drained[service_key] = drain
        else:
            self.drained.pop(service_key, None)
        self.domains[service_key] = states
        return drain

    # -- operator drain -----------------------------------------------------------

    def sync_drains(self, sources, over: float) -> None:
        """Follow the config's ``sources[].drained`` (at start: ``over`` 0, drained at once)."""
        for source in sources:
            draining = source.name in self.drains and self.drains[source.name][2]
            if source.drained != draining:
                self.drain_source(source.name, source.drained, over)

    def drain_source(self, name: str, drain: bool, over: float) -> None:
        """Move new requests away from source ``name`` over ``over`` seconds (its weight
        falls linearly to 0, then its endpoints are flagged: requests in flight there finish),
        or back (weights ramp up from where they are).  Work: the services with its endpoints,
        found once here, then only those at each step."""
        now = time.monotonic()
        factor = self._drain_factor(name, now)
        self.drains[name] = (now, max(over, 0.0), drain, 1.0 if factor is None else factor)
        self._drain_services[name] = {key for key, eps in self.source.items()
                                      if any(ep.cluster == name for ep in eps)}
        log.warning("source drain started" if drain else "source undrain started", extra={"fields": {
            "event": "source_drain" if drain else "source_undrain", "source": name, "over_s": over,
            "services": len(self._drain_services[name])}})
        self._drain_tick()

    def _drain_factor(self, name: str, now: float) -> float | None:
        """The share of its weight source ``name`` keeps now; None: not drained at all."""
        d = self.drains.get(name)
        if d is None:
            return None
        start, over, down, f0 = d
        step = (now - start) / over if over > 0 else 1.0
        if down:
            return max(0.0, f0 - step)
        f = f0 + step
        return None if f >= 1.0 else max(f, 0.01)

    def _drain_tick(self) -> None:
        """Re-weigh the services of the sources whose drain is under way (only those)."""
        self._drain_timer = None
        now = time.monotonic()
        moving = False
        for name in list(self.drains):
            start, over, down, _f0 = self.drains[name]
            factor = self._drain_factor(name, now)
            self._flags_changed.update(k for k in self._drain_services.get(name, ()) if k in self.source)
            if factor is None:                      # back in full
                del self.drains[name]
                self._drain_services.pop(name, None)
                log.warning("source back", extra={"fields": {"event": "source_undrained", "source": name}})
            elif down and factor == 0.0 and now - start >= over:
                if not self.drains[name][3] == 0.0:
                    log.warning("source drained", extra={"fields": {"event": "source_drained", "source": name}})
                    self.drains[name] = (start, over, down, 0.0)
            else:
                moving = True
        self._flush()
        if moving and self._drain_timer is None:
            self._drain_timer = asyncio.get_running_loop().call_later(DRAIN_TICK, self._drain_tick)

    def _operator_drains(self, service_key: str, clusters: list[str], raw: list[int],
                         ramps: list[float] | None) -> tuple[list[int], list[float] | None]:
        """Weights of drained sources' endpoints scaled down (the ramp list carries it, so the
        table gets RAMP_SCALE weights), flagged once at 0 -- never the last serving ones."""
        now = time.monotonic()
        factors = {c: self._drain_factor(c, now) for c in set(clusters) if c in self.drains}
        factors = {c: f for c, f in factors.items() if f is not None}
        if not factors:
            return raw, ramps
        states = self.domains.get(service_key, {})
        flagged = [f | FLAG_CLUSTER_DRAINED if factors.get(c) == 0.0 else f for c, f in zip(clusters, raw)]
        if any(f == 0 for f in raw) and not any(f == 0 for f in flagged):
            log.warning("not draining the last serving source of a service", extra={"fields": {
                "service": service_key, "sources": sorted(factors)}})
            flagged = raw
        shares = list(ramps) if ramps is not None else [1.0] * len(raw)
        for i, c in enumerate(clusters):
            f = factors.get(c)
            if f is not None and f > 0:
                shares[i] *= f
        for c, f in factors.items():
            if c in states and self.drains[c][2]:
                states[c]["state"] = domains.DRAINED if f == 0.0 else domains.DRAINING
        return flagged, shares

    # -- slow start -------------------------------------------------------------

    def _ramps(self, service_key: str, endpoints: Endpoints, states: list[EndpointHealth | None],
               config: ServiceConfig) -> list[float] | None:
        """Each endpoint's share of its weight now (1.0 unless it ramps); None without slow
        start.  Notes the service's ramping endpoints, which the ramp timer re-weighs."""
        if config.slow_start is None:
            self.ramping.pop(service_key, None)
            return None
        # The weights hold until the next re-weigh: set them for the middle of that step, so
        # that the share follows the ramp on average instead of lagging half a step behind.
        at = time.monotonic() + _ramp_step(config.slow_start.window) / 2
        shares, ramping = [], {}
        back = self.undrained_at.get(service_key) or {}
        for name in [name for name, since in back.items() if at - since >= config.slow_start.window]:
            del back[name]
        for ep, state in zip(endpoints, states):
            factor = state.ramp(at, config.slow_start) if state is not None else None
            if ep.cluster in back:      # its cluster is back from a drain: it ramps too
                cluster_factor = slow_start_share(config.slow_start, at - back[ep.cluster])
                if cluster_factor is not None:
                    factor = cluster_factor if factor is None else min(factor, cluster_factor)
            shares.append(1.0 if factor is None else factor)
            if factor is not None:
                ramping[ep.key] = factor
        if ramping:
            self.ramping[service_key] = ramping
        else:
            self.ramping.pop(service_key, None)
        return shares

    def _schedule_ramp(self) -> None:
        if not self.ramping or self._ramp_timer is not None:
            return
        shortest = min(self.services[key].slow_start.window for key in self.ramping
                       if key in self.services and self.services[key].slow_start is not None)
        self._ramp_timer = asyncio.get_running_loop().call_later(_ramp_step(shortest), self._ramp_tick)

    def _ramp_tick(self) -> None:
        """Re-weigh the services with an endpoint ramping (nothing else: no work when none is)."""
        self._ramp_timer = None
        self._flags_changed.update(self.ramping)
        self._flush()

    def describe(self, service_key: str) -> list[dict]:
        """Each endpoint with its health and why, for the admin API."""
        now = time.monotonic()
        out = []
        config = self.services.get(service_key)
        published = {ep.key: ep for ep in self.current.get(service_key, ())}
        for ep in self.source.get(service_key, ()):
            state = self.states.get((service_key, ep.key))
            info = state.describe(now) if state else {"healthy": True, "causes": []}
            table = published.get(ep.key, ep)
            info.update(cluster=ep.cluster, address=ep.host, weight=ep.weight,
                        effective_weight=table.weight, serving=table.flags == 0)
            if config is not None and config.slow_start is not None:
                info["slow_start"] = self._describe_ramp(service_key, ep, state, config, now)
            out.append(info)
        return out


    def _describe_ramp(self, service_key: str, ep: EndpointSpec, state: EndpointHealth | None,
                       config: ServiceConfig, now: float) -> dict:
        """Its weight as the table has it and how far its ramp is (as last published)."""
        factor = self.ramping.get(service_key, {}).get(ep.key)
        since = state.healthy_since if state is not None else None
        window = config.slow_start.window
        return {"ramping": factor is not None,
                "weight_pct": round(100 * (factor if factor is not None else 1.0), 1),
                "progress_pct": (round(min(100.0, 100 * (now - since) / window), 1)
                                 if factor is not None and since is not None else 100.0),
                "remaining_s": (round(max(0.0, since + window - now), 2)
                                if factor is not None and since is not None else 0.0)}


def _ramp_step(window: float) -> float:
    low, high = RAMP_TICK_BOUNDS
    return min(high, max(low, window / RAMP_STEPS))


def _basis_points(levels: list[Level]) -> Loads:
    """Loads as whole basis points that add up to exactly 10,000 (the rounding goes to the
    best level with load), so that the data plane's level scheduler needs no floats."""
    points = [int(level.load * 10_000) for level in levels]
    if any(points):
        first = next(i for i, p in enumerate(points) if p)
        points[first] += 10_000 - sum(points)
    return tuple((level.priority, p) for level, p in zip(levels, points))
