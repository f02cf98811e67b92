"""Leader election over a coordination.k8s.io/v1 Lease, with client-go's semantics.

Every replica serves; one writes statuses (ARCHITECTURE.md, "Configuration from Kubernetes").
The official Python client has no leader election, so this is client-go's
``tools/leaderelection`` with its LeaseLock and ReleaseOnCancel, redone small:

* A candidate reads the Lease every ``retry_period`` plus up to 1.2 times that at random
  (client-go's JitterFactor: candidates started together do not stay in step), and creates
  it if absent.
* A Lease held by another is taken only once its record has not changed for its
  ``leaseDurationSeconds``, counted on our monotonic clock from the moment we saw it change.
  The holder's renewTime comes from another machine's clock and is never compared with ours,
  so clock offsets between replicas do not matter (only different clock rates would).
* A takeover or renewal is an update carrying the resourceVersion last read: of candidates
  racing for a free lease, the API server lets one through and answers 409 Conflict to the
  others, who look again later. A takeover adds one to leaseTransitions.
* The leader renews every ``retry_period``. Once no renewal has succeeded for
  ``renew_deadline`` it stops leading at once; since ``renew_deadline < lease_duration``,
  that is before any candidate may take over (each waits ``lease_duration`` from the moment
  it saw that renewal, which was after we sent it).
* ``stop()`` releases a held lease as ReleaseOnCancel does (holderIdentity "",
  leaseDurationSeconds 1): a successor takes it at its next retry instead of waiting out the
  duration.

Unlike client-go's Run, which returns after losing the lease (its users usually exit), an
elector that lost goes back to being a candidate: a replica that stops writing keeps serving.

Like client-go, this is not fencing: a write started just before leadership ended can still
land. ``is_leader`` turns False before ``on_stopped_leading`` is posted and before a release,
so check it right before each write.

The ``kubernetes`` client is synchronous: the election runs in a daemon thread and the
callbacks run on the asyncio loop given to ``start()`` (``call_soon_threadsafe``). Give it an
ApiClient whose ``configuration.retries`` is 0, as ``gateway.sources.kubernetes.api_client``
makes: urllib3's own retries would stretch a request past the deadline that bounds it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Callable, NamedTuple

log = logging.getLogger("gateway.leader")

JITTER_FACTOR = 1.2      # client-go's: a candidate waits retry_period * [1, 2.2) between tries


def default_identity() -> str:
    """``POD_NAME`` when set (the downward API), else ``<hostname>_<uuid>`` as client-go's
    users build it: two processes on one host must not share an identity."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4()}"


class LeaseRecord(NamedTuple):
    """The election fields of a Lease's spec (client-go's LeaderElectionRecord)."""
    holder: str
    duration: int                       # leaseDurationSeconds
    transitions: int
    acquire_time: datetime | None
    renew_time: datetime | None

    @classmethod
    def of(cls, spec) -> "LeaseRecord":
        """From the client's V1LeaseSpec; a field left unset reads as client-go reads it."""
        if spec is None:
            return cls("", 0, 0, None, None)
        return cls(spec.holder_identity or "", spec.lease_duration_seconds or 0, spec.lease_transitions or 0,
                   spec.acquire_time, spec.renew_time)

    def spec(self) -> dict:
        return {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration,
                "leaseTransitions": self.transitions, "acquireTime": _microtime(self.acquire_time),
                "renewTime": _microtime(self.renew_time)}


def _microtime(when: datetime | None) -> str | None:
    """RFC3339 with microseconds, as the API server serves a MicroTime."""
    return None if when is None else when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Campaign for the Lease ``namespace/name`` until ``stop()``. See the module docstring.

    Attributes read from any thread (each written by the election thread alone):
    ``is_leader``; ``leader``, the holder as last observed ("" before the first read or while
    the lease is released); the counters in ``status()``.
    """

    def __init__(self, api_client, namespace: str, name: str, *, identity: str | None = None,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 release_on_stop: bool = True,
                 on_started_leading: Callable[[], None] | None = None,
                 on_stopped_leading: Callable[[], None] | None = None,
                 on_new_leader: Callable[[str], None] | None = None) -> None:
        from kubernetes import client
        _check_timing(lease_duration, renew_deadline, retry_period)
        if not namespace or not name:
            raise ValueError(f"the lease needs a namespace and a name, got {namespace!r}/{name!r}")
        self.identity = identity if identity is not None else default_identity()
        if not self.identity:
            raise ValueError("identity must not be empty: an empty holderIdentity means a free lease")
        self.namespace, self.name = namespace, name
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.release_on_stop = release_on_stop
        self.on_started_leading, self.on_stopped_leading = on_started_leading, on_stopped_leading
        self.on_new_leader = on_new_leader
        self._leases = client.CoordinationV1Api(api_client)

        self.is_leader = False
        self.leader = ""
        self.lease_transitions = 0      # spec.leaseTransitions as last observed
        self.leader_changes = 0         # leaders observed, the first one included (on_new_leader calls)
        self.acquired = 0               # times this elector started leading
        self.lost = 0                   # times it stopped leading other than by stop()
        self.conflicts = 0              # 409 answers: another candidate wrote first
        self.errors = 0                 # other failed requests
        self.last_error: str | None = None      # of the latest request, None once one succeeds

        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0         # monotonic time the observed record last changed
        self._lease = None              # the V1Lease as last read or written: its resourceVersion
        self._renewed_at = 0.0          # monotonic time our last successful write was sent
        self._reported = ""             # the leader last passed to on_new_leader
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start campaigning; the callbacks will run on ``loop`` (default: the running loop)."""
        if self._thread is not None:
            raise RuntimeError("LeaderElector.start() called twice")
        self._loop = loop or asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"leader-{self.namespace}/{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop campaigning: if leading, stop (``on_stopped_leading``) and then release the lease.

        Blocks until the election thread has ended, at most ``timeout`` seconds (default
        ``2 * renew_deadline``: a request in flight, then the release, are each bounded by
        ``renew_deadline``); False if it has not. From a coroutine:
        ``await asyncio.to_thread(elector.stop)``.
        """
        self._stopping.set()
        if self._thread is None:
            return True
        self._thread.join(2 * self.renew_deadline if timeout is None else timeout)
        return not self._thread.is_alive()

    def status(self) -> dict:
        """For /status and /metrics."""
        return {"lease": f"{self.namespace}/{self.name}", "identity": self.identity, "leader": self.leader,
                "is_leader": self.is_leader, "lease_transitions": self.lease_transitions,
                "leader_changes": self.leader_changes, "acquired": self.acquired, "lost": self.lost,
                "conflicts": self.conflicts, "errors": self.errors, "last_error": self.last_error}

    # -- the election thread --------------------------------------------------------------

    def _run(self) -> None:
        while self._acquire():
            self._renew()
            self._set_leading(False)
        if self.release_on_stop:
            self._release()

    def _acquire(self) -> bool:
        """Try until we hold the lease (True) or stop() is called (False)."""
        while not self._stopping.is_set():
            # renew_deadline bounds a candidate's requests too: a hung API must not stall it.
            if self._try_acquire_or_renew(time.monotonic() + self.renew_deadline):
                self._set_leading(True)
                return True
            self._stopping.wait(self.retry_period * (1 + random.random() * JITTER_FACTOR))
        return False

    def _renew(self) -> None:
        """Renew every retry_period; return on stop() or once leadership is lost."""
        while not self._stopping.wait(self.retry_period):
            # The deadline counts from when the last successful renewal was sent, not from the
            # start of the failing round as in client-go: leadership then ends before any other
            # replica may take over whatever retry_period is (in client-go that takes
            # retry_period + renew_deadline < lease_duration, which it does not check).
            deadline = self._renewed_at + self.renew_deadline
            while not self._try_acquire_or_renew(deadline):
                if self.leader != self.identity:
                    # Someone else holds it now (client-go keeps trying until the deadline,
                    # which only delays on_stopped_leading).
                    return self._lose(f"the lease is held by {self.leader or 'nobody'}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self._lose(f"no renewal succeeded for {self.renew_deadline} s")
                if self._stopping.wait(min(self.retry_period, remaining)):
                    return

    def _lose(self, reason: str) -> None:
        self.lost += 1
        log.warning("leadership lost", extra={"fields": {"lease": f"{self.namespace}/{self.name}",
                                                         "identity": self.identity, "reason": reason}})

    def _try_acquire_or_renew(self, deadline: float) -> bool:
        """One attempt, client-go's tryAcquireOrRenew; every request ends by ``deadline``."""
        from kubernetes.client.rest import ApiException
        now = datetime.now(timezone.utc)
        record = LeaseRecord(self.identity, int(self.lease_duration), 0, now, now)
        try:
            # The leader's fast path: update the lease as we last wrote it, one request instead
            # of two. Any failure (a stale resourceVersion, a lost connection) falls through to
            # reading the lease.
            if self.is_leader and self._lease is not None and self._lease_valid():
                held = self._observed
                try:
                    self._update(record._replace(transitions=held.transitions, acquire_time=held.acquire_time),
                                 deadline)
                    return True
                except Exception:
                    pass
            try:
                self._lease = self._request(self._leases.read_namespaced_lease, self.name, self.namespace,
                                            deadline=deadline)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self._create(record, deadline)
                return True
            self._observe(LeaseRecord.of(self._lease.spec))
            current = self._observed
            if current.holder and current.holder != self.identity and self._lease_valid():
                return False                    # held, and renewed within its duration as we see it
            if current.holder == self.identity:
                record = record._replace(transitions=current.transitions, acquire_time=current.acquire_time)
            else:
                record = record._replace(transitions=current.transitions + 1)
            self._update(record, deadline)
            return True
        except ApiException as exc:
            if exc.status == 409:               # Conflict on update, AlreadyExists on create
                self.conflicts += 1
                log.debug("lost a race for the lease", extra={"fields": {"identity": self.identity}})
            else:
                self._failed(exc)
            return False
        except Exception as exc:                # unreachable, timed out, TLS ...
            self._failed(exc)
            return False

    def _release(self) -> None:
        """client-go's ReleaseOnCancel: if the lease still names us, leave it free, so that a
        successor takes it at its next retry rather than after lease_duration."""
        from kubernetes.client.rest import ApiException
        deadline = time.monotonic() + self.renew_deadline
        while True:
            try:
                self._lease = self._request(self._leases.read_namespaced_lease, self.name, self.namespace,
                                            deadline=deadline)
                if (self._lease.spec.holder_identity or "") != self.identity:
                    return
                now = datetime.now(timezone.utc)
                self._update(LeaseRecord("", 1, self._lease.spec.lease_transitions or 0, now, now), deadline)
                log.info("lease released", extra={"fields": {"lease": f"{self.namespace}/{self.name}",
                                                             "identity": self.identity}})
                return
            except ApiException as exc:
                if exc.status == 409:           # a renewal of ours still landed meanwhile: again
                    continue
                self._failed(exc)
                return
            except Exception as exc:
                self._failed(exc)
                return

    # -- requests and observations --------------------------------------------------------

    def _request(self, method, *args, deadline: float):
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise TimeoutError("deadline passed before the request")
        result = method(*args, _request_timeout=timeout)
        self.last_error = None
        return result

    def _create(self, record: LeaseRecord, deadline: float) -> None:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": record.spec()}
        sent = time.monotonic()
        self._lease = self._request(self._leases.create_namespaced_lease, self.namespace, body, deadline=deadline)
        self._renewed_at = sent
        self._observe(LeaseRecord.of(self._lease.spec))

    def _update(self, record: LeaseRecord, deadline: float) -> None:
        """PUT the lease last read or written with ``record`` as its spec; its resourceVersion
        makes the write conditional (409 if the lease changed since)."""
        body = self._leases.api_client.sanitize_for_serialization(self._lease)
        body["spec"] = record.spec()
        sent = time.monotonic()
        self._lease = self._request(self._leases.replace_namespaced_lease, self.name, self.namespace, body,
                                    deadline=deadline)
        self._renewed_at = sent
        self._observe(LeaseRecord.of(self._lease.spec))

    def _observe(self, record: LeaseRecord) -> None:
        """Note the lease's record. Its expiry clock restarts only when it changed: a holder
        that stopped renewing leaves the same record, one that renews writes a new renewTime."""
        if record == self._observed:
            return
        self._observed, self._observed_at = record, time.monotonic()
        self.leader, self.lease_transitions = record.holder, record.transitions
        if record.holder and record.holder != self._reported:
            self._reported = record.holder
            self.leader_changes += 1
            log.info("new leader", extra={"fields": {"lease": f"{self.namespace}/{self.name}",
                                                     "leader": record.holder}})
            self._post(self.on_new_leader, record.holder)

    def _lease_valid(self) -> bool:
        return time.monotonic() < self._observed_at + self._observed.duration

    def _set_leading(self, leading: bool) -> None:
        if leading == self.is_leader:
            return
        self.is_leader = leading                # first: a writer checking it stops at once
        if leading:
            self.acquired += 1
        log.info("started leading" if leading else "stopped leading",
                 extra={"fields": {"lease": f"{self.namespace}/{self.name}", "identity": self.identity}})
        self._post(self.on_started_leading if leading else self.on_stopped_leading)

    def _failed(self, exc: Exception) -> None:
        from kubernetes.client.rest import ApiException
        self.errors += 1
        text = f"API error {exc.status}: {exc.reason}" if isinstance(exc, ApiException) else \
            f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        if text != self.last_error:             # once per outage, not once per retry
            log.warning("lease request failed", extra={"fields": {"lease": f"{self.namespace}/{self.name}",
                                                                  "error": text}})
        self.last_error = text

    def _post(self, callback: Callable | None, *args) -> None:
        if callback is None or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:                    # the loop is closed: nobody is left to tell
            pass


def _check_timing(lease_duration: float, renew_deadline: float, retry_period: float) -> None:
    """client-go's checks, with the reason each exists."""
    if not (lease_duration >= 1 and float(lease_duration).is_integer()):
        raise ValueError(f"lease_duration must be a whole number of seconds, at least 1 "
                         f"(Lease.spec.leaseDurationSeconds is an integer), got {lease_duration!r}")
    if not 0 < renew_deadline < lease_duration:
        raise ValueError(f"renew_deadline ({renew_deadline} s) must be above 0 and below lease_duration "
                         f"({lease_duration} s): the leader must give up before the others may take over")
    if not 0 < retry_period * JITTER_FACTOR < renew_deadline:
        raise ValueError(f"retry_period ({retry_period} s) must be above 0 and retry_period * {JITTER_FACTOR} "
                         f"below renew_deadline ({renew_deadline} s): renewals need room to retry "
                         f"within the deadline")
