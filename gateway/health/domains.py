"""The cluster as a health domain: per service, each cluster's state, and automatic drain.

A service merged from clusters fails by cluster more often than by endpoint (a zone, its
network, its API server).  Per (service, cluster) the health manager keeps a state:

* ``healthy``: at least ``DEGRADED_BELOW`` (70%, GKE's failoverHealthThreshold) of its
  endpoints healthy;
* ``degraded``: fewer, but at least ``DRAIN_BELOW`` (25%);
* ``drained``: below ``DRAIN_BELOW`` -- automatically drained: its remaining healthy
  endpoints get no new requests either (GKE's autoCapacityDrain), so that a cluster with
  one pod of five left neither overloads that pod nor pulls panic routing back into it;
  or no healthy endpoint at all (it gets nothing anyway);
* ``control-plane-lost`` (shown by the admin API from the source's state): its API server
  is unreachable; its last endpoints are kept and health checks decide.

The cap, as GKE's: never more than half of a service's clusters drained (rounded down),
and never the last cluster that has a healthy endpoint.  A cluster leaves ``drained`` when
its share is back at ``DRAIN_BELOW``; with ``slow_start`` its endpoints then ramp up.
Work is per service and proportional to its endpoints, done only when its health changed.
"""
from __future__ import annotations

DRAIN_BELOW = 0.25
DEGRADED_BELOW = 0.70

HEALTHY, DEGRADED, DRAINED, DRAINING, CONTROL_PLANE_LOST = (
    "healthy", "degraded", "drained", "draining", "control-plane-lost")


def plan_drain(clusters: list[str], raw: list[int]) -> tuple[set[str], dict[str, dict]]:
    """Which clusters of one service to drain, and each cluster's state.

    ``clusters[i]``, ``raw[i]``: endpoint i's cluster and health flags (0: healthy).
    Returns (clusters to drain, {cluster: {"state", "endpoints", "healthy"}}).
    """
    counts: dict[str, list[int]] = {}
    for cluster, flags in zip(clusters, raw):
        c = counts.setdefault(cluster, [0, 0])
        c[0] += 1
        c[1] += flags == 0
    states = {name: {"state": HEALTHY, "endpoints": n, "healthy": h} for name, (n, h) in counts.items()}
    if len(counts) < 2:                 # one cluster: nothing to fail over to
        for name, (n, h) in counts.items():
            states[name]["state"] = DRAINED if h == 0 else DEGRADED if h / n < DEGRADED_BELOW else HEALTHY
        return set(), states
    dead = {name for name, (n, h) in counts.items() if h == 0}
    cap = len(counts) // 2 - len(dead)
    low = sorted((h / n, name) for name, (n, h) in counts.items() if h and h / n < DRAIN_BELOW)
    drain: set[str] = set()
    for _share, name in low:
        if len(drain) >= cap:
            break
        drain.add(name)
    # Never the last cluster with a healthy endpoint: give back the best of the drained.
    if drain and not any(counts[name][1] for name in counts if name not in drain):
        drain.discard(max(drain, key=lambda name: counts[name][1] / counts[name][0]))
    for name, (n, h) in counts.items():
        if name in drain or name in dead:
            states[name]["state"] = DRAINED
        elif h / n < DEGRADED_BELOW:
            states[name]["state"] = DEGRADED
    return drain, states
