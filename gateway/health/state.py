"""The health state machine of one endpoint, kept per (service, cluster, address).

One flag per cause, as Envoy does: failed active checks and passive ejection
are separate bits, and an endpoint is healthy when no bit is set.  Both have
hysteresis: active health flips only after N consecutive opposite results, and
an ejection lasts a time that grows with each repeated ejection.

Pure and clock-free (``now`` is passed in) so that the transitions can be tested
exactly.
"""
from __future__ import annotations

from gateway.config import HealthCheckConfig, OutlierConfig, SlowStart

# Health flag bits and the failure kinds the request path reports, defined where the
# request path uses them.
from _speedups.exchange import GATEWAY_ERROR_KINDS as GATEWAY_ERRORS, UPSTREAM_5XX as KIND_5XX
from _speedups.table import FLAG_ACTIVE_FAILED, FLAG_EJECTED



def slow_start_share(slow_start: SlowStart, elapsed: float) -> float | None:
    """The share of its weight an endpoint healthy for ``elapsed`` seconds gets; None once
    the window is over.  Envoy: max(min_weight, (elapsed / window) ** (1 / aggression))."""
    if elapsed >= slow_start.window:
        return None
    time_share = max(elapsed, 0.0) / slow_start.window
    return max(slow_start.min_weight_percent / 100, time_share ** (1 / slow_start.aggression))

class EndpointHealth:
    __slots__ = ("check", "outlier", "active_failed", "passes", "fails",
                 "consecutive_errors", "consecutive_5xx", "ejections", "ejected_until",
                 "last_ejection_end", "last_probe", "last_error", "healthy_since", "ramps")

    def __init__(self, check: HealthCheckConfig | None, outlier: OutlierConfig | None,
                 joined: float | None = None) -> None:
        """``joined``: when it joined a service that already had endpoints (a new pod);
        None for the endpoints a service starts with."""
        self.check = check
        self.outlier = outlier
        self.active_failed = check is not None and not check.initially_healthy
        self.passes = 0
        self.fails = 0
        self.consecutive_errors = 0
        self.consecutive_5xx = 0
        self.ejections = 0
        self.ejected_until = 0.0
        self.last_ejection_end = 0.0
        self.last_probe: float | None = None
        self.last_error: str | None = None
        # Slow start: when it last became healthy (None: not since it was created).  Only an
        # endpoint that served before, or joined a running service, ramps when it does: the
        # endpoints a service starts with are all new together, and ramping them all (with
        # initially_healthy: false, on their first passes) would only skew priority levels.
        self.ramps = joined is not None or not self.flags
        self.healthy_since = joined if joined is not None and not self.flags else None

    @property
    def flags(self) -> int:
        return (FLAG_ACTIVE_FAILED if self.active_failed else 0) | (
            FLAG_EJECTED if self.ejected_until else 0)

    # -- active checks --------------------------------------------------------

    def record_probe(self, ok: bool, now: float, error: str | None = None) -> bool:
        """Count one probe result; True when the active flag changed."""
        self.last_probe = now
        if ok:
            self.fails = 0
            self.passes += 1
            if self.active_failed and self.passes >= self.check.healthy_threshold:
                self.active_failed = False
                self.last_error = None
                # Active checks pass: a passive ejection need not wait out its time.
                # It ends now, and counts as ended for the reset of the ejection count.
                if self.ejected_until:
                    self.ejected_until = 0.0
                    self.last_ejection_end = now
                self._became_healthy(now)
                return True
            return False
        self.passes = 0
        self.fails += 1
        self.last_error = error
        if not self.active_failed and self.fails >= self.check.unhealthy_threshold:
            self.active_failed = True
            return True
        return False

    # -- passive outlier detection ---------------------------------------------

    def record_request(self, kind: str | None, now: float) -> bool:
        """Count one request outcome from the data plane; True when ejected now."""
        if self.outlier is None:
            return False
        if kind is None:
            self.consecutive_errors = 0
            self.consecutive_5xx = 0
            return False
        if kind == KIND_5XX:
            self.consecutive_5xx += 1
            tripped = 0 < self.outlier.consecutive_5xx <= self.consecutive_5xx
        elif kind in GATEWAY_ERRORS:
            self.consecutive_errors += 1
            tripped = self.consecutive_errors >= self.outlier.consecutive_failures
        else:
            return False
        self.last_error = kind
        if not tripped or self.ejected_until:
            return False
        self._eject(now)
        return True

    def eject(self, now: float, cause: str) -> bool:
        """Eject for ``cause`` (success-rate detection decides over all endpoints at once);
        False when it is ejected already."""
        if self.outlier is None or self.ejected_until:
            return False
        self.last_error = cause
        self._eject(now)
        return True

    def _eject(self, now: float) -> None:
        # An endpoint that behaved for a whole max_ejection_time starts its count afresh.
        if self.last_ejection_end and now - self.last_ejection_end > self.outlier.max_ejection_time:
            self.ejections = 0
        self.ejections += 1
        duration = min(self.outlier.max_ejection_time, self.outlier.base_ejection_time * self.ejections)
        self.ejected_until = now + duration
        self.consecutive_errors = 0
        self.consecutive_5xx = 0

    def expire(self, now: float) -> bool:
        """End an ejection whose time is up; True when it ended."""
        if self.ejected_until and now >= self.ejected_until:
            self.ejected_until = 0.0
            self.last_ejection_end = now
            self._became_healthy(now)
            return True
        return False

    def _became_healthy(self, now: float) -> None:
        if self.flags:
            return
        if self.ramps:
            self.healthy_since = now
        self.ramps = True

    def ramp(self, now: float, slow_start: SlowStart | None) -> float | None:
        """The share of its weight it gets now while it ramps up after becoming healthy;
        None when it is not ramping (unhealthy, or healthy for a whole window)."""
        if slow_start is None or self.healthy_since is None or self.flags:
            return None
        factor = slow_start_share(slow_start, now - self.healthy_since)
        if factor is None:
            self.healthy_since = None       # ramped: nothing to look at until the next recovery
        return factor

    def describe(self, now: float) -> dict:
        causes = []
        if self.active_failed:
            causes.append("active_check_failed")
        if self.ejected_until:
            causes.append("ejected")
        return {"healthy": not causes, "causes": causes,
                "ejected_for_s": round(self.ejected_until - now, 3) if self.ejected_until else None,
                "ejections": self.ejections, "last_error": self.last_error}


def effective_flags(clusters: list[str], raw: list[int], panic_threshold: float) -> tuple[list[int], bool]:
    """The flags the endpoint table gets, with cluster-aware panic routing.

    Envoy's panic rule (below the threshold, balance over every endpoint) is wrong
    for a service merged from clusters: a dead cluster is half the endpoints or
    more, and panic would send traffic straight back to it.  Here a cluster is a
    failure domain: in panic, endpoints are restored only in clusters that still
    have a healthy endpoint; only when no cluster has one is every endpoint tried.
    Returns (flags, in_panic).
    """
    total = len(raw)
    healthy = sum(1 for f in raw if f == 0)
    # healthy / total, not healthy >= threshold * total: 0.07 * 100 is 7.000000000000001,
    # which would put 7 healthy of 100 below a threshold of 0.07 it is exactly at.
    if total == 0 or (healthy and healthy / total >= panic_threshold):
        return raw, False
    alive = {c for c, f in zip(clusters, raw) if f == 0}
    if not alive:
        return [0] * total, True
    return [0 if c in alive else f for c, f in zip(clusters, raw)], True


class Level:
    """One priority level of a service: what it has and the share of requests it gets."""

    __slots__ = ("priority", "clusters", "endpoints", "healthy", "health", "load", "panic", "why")

    def __init__(self, priority: int, clusters: list[str], endpoints: int, healthy: int,
                 health: float) -> None:
        self.priority = priority
        self.clusters = clusters
        self.endpoints = endpoints
        self.healthy = healthy
        self.health = health        # min(1, healthy share x overprovisioning factor)
        self.load = 0.0             # share of the service's requests, 0..1
        self.panic = False
        self.why = ""

    def describe(self) -> dict:
        return {"priority": self.priority, "clusters": self.clusters, "endpoints": self.endpoints,
                "healthy": self.healthy, "health_pct": round(self.health * 100, 1),
                "load_pct": round(self.load * 100, 1), "panic": self.panic, "why": self.why}


def level_loads(health: list[float]) -> list[float]:
    """Envoy's priority load (load_balancer_impl.cc, recalculatePerPriorityState).

    Each level, best first, takes min(remaining, health / total health), where a level's
    health is min(1, healthy share x overprovisioning factor) and the total is capped at 1:
    while the levels together have 100% of healthy capacity the best ones fill first and the
    rest spills down; below that the loads are normalized so they still add up to 1.
    All levels at 0: everything to the best level (it is in panic then, see plan_levels).
    """
    total = min(1.0, sum(health))
    if total <= 0:
        return [1.0] + [0.0] * (len(health) - 1)
    loads, remaining = [], 1.0
    for h in health:
        load = min(remaining, h / total)
        loads.append(load)
        remaining -= load
    return loads


def plan_levels(priorities: list[int], clusters: list[str], raw: list[int], panic_threshold: float,
                factor: float, capacity: list[float] | None = None) -> tuple[list[int], list[Level]]:
    """The flags the endpoint table gets and each priority level's load.

    Panic, as Envoy applies it with priorities (docs: panic_threshold): only while the levels
    together are short of 100% healthy capacity, a level whose healthy share is under the
    threshold serves over all its endpoints, and here only in its clusters that still have
    a healthy endpoint (a cluster is a failure domain: see effective_flags).  A level with no
    healthy endpoint gets no load, so traffic never goes into a dead cluster while another
    has healthy endpoints; when no endpoint at all is healthy every endpoint is tried.

    ``capacity``: per endpoint the share of its weight it has (below 1 while it ramps up in
    slow start), so that a preferred level coming back takes its load back as its endpoints
    ramp, not all at once; None: every endpoint counts fully.
    """
    if not raw:
        return [], []
    by_priority: dict[int, list[int]] = {}
    for i, p in enumerate(priorities):
        by_priority.setdefault(p, []).append(i)
    levels = []
    for p in sorted(by_priority):
        members = by_priority[p]
        healthy = sum(1 for i in members if raw[i] == 0)
        usable = healthy if capacity is None else sum(capacity[i] for i in members if raw[i] == 0)
        levels.append(Level(p, sorted({clusters[i] for i in members}), len(members), healthy,
                            min(1.0, usable / len(members) * factor)))
    for level, load in zip(levels, level_loads([lv.health for lv in levels])):
        level.load = load
    flags = list(raw)
    short = sum(lv.health for lv in levels) < 1.0
    if not any(f == 0 for f in raw):
        flags = [0] * len(raw)
        for level in levels:
            level.panic = True
            level.why = "no healthy endpoint in any level: every endpoint is tried"
        levels[0].why += "; all load to the best level" if len(levels) > 1 else ""
        return flags, levels
    for level, members in zip(levels, (by_priority[lv.priority] for lv in levels)):
        share = level.healthy / level.endpoints
        # healthy / total, not healthy >= threshold * total: see effective_flags.
        # One level keeps the panic rule it had before levels existed (effective_flags).
        if (short or len(levels) == 1) and level.healthy and share < panic_threshold:
            level.panic = True
            alive = {clusters[i] for i in members if raw[i] == 0}
            for i in members:
                if clusters[i] in alive:
                    flags[i] = 0
        level.why = _why(level, levels, short)
    return flags, levels


def _why(level: Level, levels: list[Level], short: bool) -> str:
    if level.panic:
        return (f"panic: {level.healthy}/{level.endpoints} healthy is under the panic threshold "
                "and the levels together are short of capacity; serving over every endpoint "
                "of its clusters with a healthy one")
    if level.healthy == 0:
        return "no healthy endpoint: no load"
    above = [lv for lv in levels if lv.priority < level.priority]
    if not above:
        if level.load >= 1.0:
            return f"best level, {level.healthy}/{level.endpoints} healthy: all load"
        return (f"best level, {level.healthy}/{level.endpoints} healthy x overprovisioning: "
                f"{level.health:.1%} of capacity, the rest spills to the next level")
    if level.load <= 0:
        return "better levels have enough healthy capacity"
    return (f"takes what better levels cannot: {level.load:.1%}"
            + ("; loads normalized, all levels are short of capacity" if short else ""))
