"""One set of counters for the whole gateway, however many workers serve.

Counters live where they are produced: in each worker's proxy objects.  A worker
reports every second what moved since its last report (``Worker.report``): its
context counters and gauges, and the upstreams and routes it touched, each as a
flat list of absolute values.  ``Stats`` keeps each worker's latest values and
adds them up when the admin API, the dashboard or ``/metrics`` ask.  With
``workers: 1`` the in-process worker's reports take the same path.

A worker that dies leaves its counters behind (totals never go down) and its
gauges (connections, requests in flight, idle connections) at zero.
"""
from __future__ import annotations

from collections import defaultdict

from _speedups.proxy import STAT_NAMES
from gateway.policy.redis_store import COUNTER_NAMES
from gateway.streams import RESULTS as TLS_ROUTE_RESULTS
from gateway.tls import TLS_REFUSAL_REASONS
from _speedups.stats import (BACKEND_CONNECT, BACKEND_DURATION, BACKEND_FAILURES, BACKEND_LEN, BACKEND_RESPONSE,
                             BACKEND_RETRIES, CAUSE_NAMES, DENIAL_NAMES, HISTOGRAM_BUCKETS, HISTOGRAM_COUNT, HISTOGRAM_SUM,
                             TRAFFIC_BUCKETS, TRAFFIC_CLASSES, TRAFFIC_COUNT, TRAFFIC_DENIED, TRAFFIC_LATENCY_SUM,
                             UPSTREAM_FAILURES, UPSTREAM_IDLE, UPSTREAM_IN_FLIGHT, UPSTREAM_REQUESTS,
                             UPSTREAM_TRAFFIC)

# The lists of a report are laid out by the enums of _speedups/stats.pxd: an upstream's is
# UPSTREAM_* then its traffic, a route's its traffic (TRAFFIC_*), a backend's BACKEND_*
# (three histograms, HISTOGRAM_* each, then failed attempts and retries by cause).
UPSTREAM_GAUGES = (UPSTREAM_IN_FLIGHT, UPSTREAM_IDLE)
_ANSWERED = UPSTREAM_TRAFFIC + TRAFFIC_COUNT                # an upstream's traffic: requests answered
_ANSWERED_5XX = UPSTREAM_TRAFFIC + TRAFFIC_CLASSES + 5      # ... and of those, 5xx
BACKEND_HISTOGRAMS = (("duration", BACKEND_DURATION), ("connect", BACKEND_CONNECT),
                      ("response", BACKEND_RESPONSE))
# A worker's tracing list (gateway.tracing.SpanExporter.counters)
TRACING_NAMES = ("recorded", "dropped_queue_full", "spans_exported", "dropped_export_failed",
                 "export_failures")
# A worker's access-log export list (gateway.otlplogs.LogExporter.counters)
OTLP_LOG_NAMES = ("exported", "dropped", "export_failures")

EndpointKey = tuple[str, str, int]          # (cluster, ip, port)
BackendKey = tuple[str, str, str]           # (route, service, cluster)


def traffic_dict(values: list) -> dict:
    """A traffic list in the shape of ``TrafficStats.as_dict()``."""
    return {"requests": values[TRAFFIC_COUNT],
            "responses": {f"{c}xx": values[TRAFFIC_CLASSES + c] for c in range(1, 6)},
            "errors_no_status": values[TRAFFIC_CLASSES],
            "latency_buckets": list(values[TRAFFIC_BUCKETS:TRAFFIC_LATENCY_SUM]),
            "latency_sum": values[TRAFFIC_LATENCY_SUM],
            "denied": dict(zip(DENIAL_NAMES, values[TRAFFIC_DENIED:TRAFFIC_DENIED + len(DENIAL_NAMES)]))}


def _add_into(total: list, values: list) -> None:
    for i, v in enumerate(values):
        total[i] += v


def _merge_into(sums: dict, table: dict, key=None) -> dict:
    """Add ``table``'s lists into ``sums`` by key (``key`` maps a table's key to the sum's)."""
    for k, values in table.items():
        if key is not None:
            k = key(k)
        if k in sums:
            _add_into(sums[k], values)
        else:
            sums[k] = list(values)
    return sums


def _endpoint(upstream_key: tuple) -> EndpointKey:
    return upstream_key[1:]             # (pool, cluster, ip, port): summed over pools


class WorkerCounters:
    """The latest values one worker reported."""

    __slots__ = ("counters", "connections", "in_flight", "snapshot", "upstreams", "routes",
                 "backends", "tracing", "otlp_logs", "tls_refusals", "tls_route_connections",
                 "ratelimit_store")

    def __init__(self) -> None:
        self.counters = [0] * len(STAT_NAMES)
        self.connections = 0
        self.in_flight = 0
        self.snapshot = 0
        self.upstreams: dict[tuple, list] = {}      # (pool, cluster, ip, port) -> values
        self.routes: dict[str, list] = {}
        self.backends: dict[BackendKey, list] = {}
        self.tracing = [0] * len(TRACING_NAMES)
        self.otlp_logs = [0] * len(OTLP_LOG_NAMES)
        self.tls_refusals = [0] * len(TLS_REFUSAL_REASONS)
        self.tls_route_connections = [0] * len(TLS_ROUTE_RESULTS)
        self.ratelimit_store: dict | None = None    # its RedisStore.status(), global limits on


class Stats:
    def __init__(self) -> None:
        self.workers: dict[int, WorkerCounters] = {}
        self.retired = WorkerCounters()
        # Requests answered per endpoint since the traffic sampler last took them.
        self._answered: dict[EndpointKey, int] = defaultdict(int)
        # The latest traced request per (backend, duration bucket), whichever worker served
        # it: (trace id, seconds, wall time), the exemplars of /metrics in OpenMetrics.
        self.exemplars: dict[BackendKey, dict[int, tuple[str, float, float]]] = {}

    def receive(self, worker_id: int, report: dict) -> None:
        w = self.workers.get(worker_id)
        if w is None:
            w = self.workers[worker_id] = WorkerCounters()
        w.counters = report["counters"]
        w.connections = report["connections"]
        w.in_flight = report["in_flight"]
        w.snapshot = report["snapshot"]
        for row in report["upstreams"]:
            key, values = tuple(row[:4]), row[4:]
            before = w.upstreams.get(key)
            answered = values[_ANSWERED] - (before[_ANSWERED] if before is not None else 0)
            if answered > 0:
                self._answered[key[1:]] += answered
            w.upstreams[key] = values
        w.routes.update(report["routes"])
        for row in report.get("backends", ()):
            w.backends[tuple(row[:3])] = row[3:]
        for *key, bucket, trace_id, seconds, wall_time in report.get("exemplars", ()):
            kept = self.exemplars.setdefault(tuple(key), {})
            if bucket not in kept or kept[bucket][2] <= wall_time:
                kept[bucket] = (trace_id, seconds, wall_time)
        if report.get("tracing") is not None:
            w.tracing = report["tracing"]
        if report.get("otlp_logs") is not None:
            w.otlp_logs = report["otlp_logs"]
        if report.get("tls_refusals") is not None:
            w.tls_refusals = report["tls_refusals"]
        if report.get("tls_route_connections") is not None:
            w.tls_route_connections = report["tls_route_connections"]
        w.ratelimit_store = report.get("ratelimit_store")

    def retire(self, worker_id: int) -> None:
        """A worker is gone: keep its counters, drop its gauges."""
        w = self.workers.pop(worker_id, None)
        if w is None:
            return
        r = self.retired
        _add_into(r.counters, w.counters)
        for values in w.upstreams.values():
            for i in UPSTREAM_GAUGES:
                values[i] = 0
        _merge_into(r.upstreams, w.upstreams)
        _merge_into(r.routes, w.routes)
        _merge_into(r.backends, w.backends)
        _add_into(r.tracing, w.tracing)
        _add_into(r.otlp_logs, w.otlp_logs)
        _add_into(r.tls_refusals, w.tls_refusals)
        _add_into(r.tls_route_connections, w.tls_route_connections)

    def outcomes(self, service_key: str, endpoints: list[EndpointKey]) -> dict[EndpointKey, tuple[int, int]]:
        """Per endpoint, totals so far over workers and pools (the shared one and the
        service's own): (tries, failed ones), for success-rate outlier detection.  Failed:
        gateway errors (connect failures, resets, timeouts) plus 5xx answers; a try that
        failed and then was answered 502 counts twice, so failed is capped at tries."""
        out = {}
        workers = self._all()
        for key in endpoints:
            tries = failed = 0
            for w in workers:
                for pool in ("", service_key):
                    values = w.upstreams.get((pool, *key))
                    if values is not None:
                        tries += values[UPSTREAM_REQUESTS]
                        failed += values[UPSTREAM_FAILURES] + values[_ANSWERED_5XX]
            out[key] = (tries, min(failed, tries))
        return out

    def take_answered(self) -> dict[EndpointKey, int]:
        """Requests answered per endpoint since the last call (for the traffic graphs)."""
        answered, self._answered = self._answered, defaultdict(int)
        return answered

    # -- totals, computed when asked ----------------------------------------------------

    def _all(self) -> list[WorkerCounters]:
        return [self.retired, *self.workers.values()]

    def counters(self) -> dict[str, int]:
        total = [0] * len(STAT_NAMES)
        for w in self._all():
            _add_into(total, w.counters)
        return dict(zip(STAT_NAMES, total))

    def connections(self) -> int:
        return sum(w.connections for w in self.workers.values())

    def in_flight(self) -> int:
        return sum(w.in_flight for w in self.workers.values())

    def upstreams(self) -> dict[EndpointKey, dict]:
        """Per endpoint (summed over pools and workers): requests, failures, in_flight, idle, traffic."""
        sums: dict[EndpointKey, list] = {}
        for w in self._all():
            _merge_into(sums, w.upstreams, _endpoint)
        return {key: {"requests": v[UPSTREAM_REQUESTS], "failures": v[UPSTREAM_FAILURES],
                      "in_flight": v[UPSTREAM_IN_FLIGHT], "idle": v[UPSTREAM_IDLE],
                      "traffic": traffic_dict(v[UPSTREAM_TRAFFIC:])} for key, v in sums.items()}

    def routes(self) -> dict[str, dict]:
        sums: dict[str, list] = {}
        for w in self._all():
            _merge_into(sums, w.routes)
        return {name: traffic_dict(v) for name, v in sums.items()}

    def backends(self) -> dict[BackendKey, dict]:
        """Per (route, service, cluster), summed over workers: the duration, connect and
        response histograms ({"count", "buckets" (not cumulative), "sum"}; the duration's
        with its "exemplars" by bucket), and failed attempts and retries by cause."""
        sums: dict[BackendKey, list] = {}
        for w in self._all():
            _merge_into(sums, w.backends)
        out = {}
        for key, v in sums.items():
            entry: dict = {name: {"count": v[at + HISTOGRAM_COUNT],
                                  "buckets": list(v[at + HISTOGRAM_BUCKETS:at + HISTOGRAM_SUM]),
                                  "sum": v[at + HISTOGRAM_SUM]} for name, at in BACKEND_HISTOGRAMS}
            entry["duration"]["exemplars"] = self.exemplars.get(key, {})
            entry["failures"] = dict(zip(CAUSE_NAMES, v[BACKEND_FAILURES:BACKEND_RETRIES]))
            entry["retries"] = dict(zip(CAUSE_NAMES, v[BACKEND_RETRIES:BACKEND_LEN]))
            out[key] = entry
        return out

    def ratelimit_store(self) -> dict | None:
        """The global limits' store as the live workers see it (None: no ``redis``): counters
        summed, how many workers are connected, the last error one of them saw."""
        seen = [w.ratelimit_store for w in self.workers.values() if w.ratelimit_store is not None]
        if not seen:
            return None
        out = {"redis": seen[0]["redis"], "failure_mode": seen[0]["failure_mode"],
               "workers_connected": sum(s["connected"] for s in seen), "workers": len(seen),
               "error": next((s["error"] for s in seen if s["error"]), None)}
        for name in COUNTER_NAMES:
            out[name] = sum(s[name] for s in seen)
        return out

    def _summed(self, field: str, names: tuple[str, ...]) -> dict[str, int]:
        """A per-worker counter list (``WorkerCounters.<field>``) summed over the workers, by name."""
        total = [0] * len(names)
        for w in self._all():
            _add_into(total, getattr(w, field))
        return dict(zip(names, total))

    def tracing(self) -> dict[str, int]:
        return self._summed("tracing", TRACING_NAMES)

    def otlp_logs(self) -> dict[str, int]:
        return self._summed("otlp_logs", OTLP_LOG_NAMES)

    def tls_refusals(self) -> dict[str, int]:
        return self._summed("tls_refusals", TLS_REFUSAL_REASONS)

    def tls_route_connections(self) -> dict[str, int]:
        return self._summed("tls_route_connections", TLS_ROUTE_RESULTS)
