"""Which optional kinds a cluster serves, found by API discovery, and when a missing one appears.

The Gateway API kinds (gateway.networking.k8s.io), the Multi-Cluster Services kinds
(multicluster.x-k8s.io) and this project's policies (policy.gateway.example) come with CRDs
that most clusters do not install. A list+watch loop for a kind the cluster does not serve
gets 404 for ever, and whoever waits for its first list waits
its whole timeout: every replica started 10 s late (``app.INITIAL_SYNC_TIMEOUT``) in a cluster
without the MCS CRDs. So an optional kind's loop is started only once discovery says the cluster
serves it:

* the first answer: ``GET /apis`` (the group-versions served), then ``GET /apis/<group>/<version>``
  (the resource list) for each wanted group-version present, as client-go's discovery client
  reads them;
* a kind the cluster does not serve is *pending*, and nobody waits for it. Every
  ``RECHECK_INTERVAL`` seconds one ``GET /apis/<group>/<version>`` per group-version that still
  has pending kinds (a 404 while absent; a served group-version is not asked again), as
  client-go's deferred RESTMapper is reset to find CRDs installed later. A kind found served is
  started then;
* a served kind whose list or watch gets 404 (its CRD was deleted) is pending again: ``lost()``.

A discovery request that fails (the API unreachable, a 5xx) decides nothing: the kinds it was
to answer stay undecided, which their users wait for like the core kinds' first lists, and it is
retried with the list+watch loops' backoff.

One ``OptionalKinds`` per cluster and user (the endpoint source, the Gateway API controller). Its
loop runs in a thread (the official client is synchronous) and calls back in that thread.
"""
from __future__ import annotations

import os
import random
import threading
from collections import Counter
from typing import Callable, Iterable, NamedTuple

from gateway.sources.listwatch import BACKOFF_MAX, BACKOFF_MIN, CONNECT_TIMEOUT

GATEWAY_GROUP = "gateway.networking.k8s.io"
MCS_GROUP, MCS_VERSION = "multicluster.x-k8s.io", "v1alpha1"
POLICY_GROUP, POLICY_VERSION = "policy.gateway.example", "v1alpha1"    # this project's policy CRDs
OPTIONAL_GROUPS = frozenset({GATEWAY_GROUP, MCS_GROUP, POLICY_GROUP})


def _interval() -> float:
    text = os.environ.get("GATEWAY_DISCOVERY_INTERVAL")
    if not text:
        return 10.0
    value = float(text)
    if not value > 0:
        raise ValueError(f"GATEWAY_DISCOVERY_INTERVAL must be a positive number of seconds, got {text!r}")
    return value


# Seconds between two re-checks of the missing group-versions: a CRD installed later is watched
# at most this long after. One small GET per missing group-version and cluster each time.
# The environment variable GATEWAY_DISCOVERY_INTERVAL overrides it (the tests set it small).
RECHECK_INTERVAL = _interval()
_REQUEST_TIMEOUT = (CONNECT_TIMEOUT, 10)


class Kind(NamedTuple):
    group: str
    version: str
    plural: str

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}"

    def __str__(self) -> str:
        return f"{self.group_version}/{self.plural}"


SERVICE_EXPORTS = Kind(MCS_GROUP, MCS_VERSION, "serviceexports")


def is_optional(group: str | None) -> bool:
    """A kind of this group is served only where its CRDs are installed."""
    return group in OPTIONAL_GROUPS


class OptionalKinds:
    """One cluster's optional kinds: each started (``on_served``) once the cluster serves it.

    ``on_absent`` is called once for a kind the first answer finds not served (its user stops
    waiting for it); ``on_error`` with a one-line description of each failed discovery request,
    and with None at the first answer after failures.
    ``state()`` and ``lost()`` may be called from any thread.
    """

    def __init__(self, kinds: Iterable[Kind], on_served: Callable[[Kind], None],
                 on_absent: Callable[[Kind], None],
                 on_error: Callable[[str | None], None] = lambda error: None,
                 interval: float | None = None) -> None:
        self.interval = RECHECK_INTERVAL if interval is None else interval
        self._on_served, self._on_absent, self._on_error = on_served, on_absent, on_error
        self._lock = threading.Lock()
        self._undecided: set[Kind] = set(kinds)     # not answered yet
        self._pending: set[Kind] = set()            # answered: not served (yet)
        self._served: set[Kind] = set()
        self.asked: Counter[str] = Counter()         # discovery GETs made, by path (for tests)

    def state(self) -> dict[str, str]:
        """Each kind: "served", "absent" (pending a re-check) or "unknown" (no answer yet)."""
        with self._lock:
            return {str(k): state for kinds, state in ((self._served, "served"), (self._pending, "absent"),
                                                       (self._undecided, "unknown")) for k in sorted(kinds)}

    def lost(self, kind: Kind) -> None:
        """``kind``'s list or watch got 404: no longer served; the next re-check asks again."""
        with self._lock:
            if kind in self._served:
                self._served.discard(kind)
                self._pending.add(kind)

    def run(self, api, stopping: threading.Event) -> None:
        """Answer, then re-check the pending kinds every ``interval`` seconds, until ``stopping``."""
        failures = 0
        while not stopping.is_set():
            with self._lock:
                first, again = set(self._undecided), set(self._pending)
            try:
                found = self._discover(api, first, again) if first or again else set()
            except Exception as exc:                # unreachable, 5xx, 401 ...: nothing decided
                if stopping.is_set():
                    return
                failures += 1
                self._on_error(_describe(exc))
                stopping.wait(min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (failures - 1)) * random.uniform(0.5, 1.0))
                continue
            if failures:
                failures = 0
                self._on_error(None)
            served, absent = [], []
            with self._lock:
                for kind in first | again:
                    if kind not in self._undecided and kind not in self._pending:
                        continue                    # decided meanwhile
                    if kind in found:
                        self._undecided.discard(kind)
                        self._pending.discard(kind)
                        self._served.add(kind)
                        served.append(kind)
                    elif kind in self._undecided:
                        self._undecided.discard(kind)
                        self._pending.add(kind)
                        absent.append(kind)
            for kind in sorted(absent):
                self._on_absent(kind)
            for kind in sorted(served):
                if not stopping.is_set():
                    self._on_served(kind)
            stopping.wait(self.interval)

    def _discover(self, api, first: set[Kind], again: set[Kind]) -> set[Kind]:
        """The kinds of ``first | again`` the cluster serves.  With kinds never answered, one
        ``GET /apis`` first says which group-versions exist (most clusters: none of ours, and
        then that one request is the whole answer); re-checks ask the missing ones directly."""
        from kubernetes import client
        wanted = first | again
        group_versions = {k.group_version for k in wanted}
        if first:
            self.asked["/apis"] += 1
            groups = client.ApisApi(api).get_api_versions(_request_timeout=_REQUEST_TIMEOUT)
            group_versions &= {v.group_version for g in groups.groups or () for v in g.versions or ()}
        found = set()
        for group_version in sorted(group_versions):
            names = self._resources(api, group_version)
            found |= {k for k in wanted if k.group_version == group_version and k.plural in names}
        return found

    def _resources(self, api, group_version: str) -> set[str]:
        """The resource names served at ``group_version`` (none on 404)."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException
        group, version = group_version.split("/")
        self.asked[f"/apis/{group_version}"] += 1
        try:
            listing = client.CustomObjectsApi(api).get_api_resources(group, version,
                                                                     _request_timeout=_REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return set()
            raise
        return {r.name for r in listing.resources or ()}


def _describe(exc: Exception) -> str:
    from kubernetes.client.rest import ApiException
    if isinstance(exc, ApiException):
        return f"API discovery: API error {exc.status}: {exc.reason}"
    return f"API discovery: {type(exc).__name__}: {' '.join(str(exc).split())}"
