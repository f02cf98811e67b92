"""Keep-alive client load for the failover tests and bench/failover.py: every request's
time, status or error and the zone that answered, so that a test can count client-visible
failures, the slowest request, and when a zone stopped getting new requests.

Bounded: ``threads`` clients, each stops at ``stop()``, after ``max_requests``, or at
``deadline`` seconds, whichever comes first; a request waits at most ``timeout`` seconds.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import orjson

from support import Client, PeerClosed


@dataclass
class Sample:
    sent: float                 # time.monotonic() before the request was written
    done: float
    status: int | None
    cluster: str | None = None  # the backend's identity: who answered
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 500

    @property
    def seconds(self) -> float:
        return self.done - self.sent


@dataclass
class Load:
    host: str
    port: int
    path: str = "/anything"
    method: str = "GET"
    threads: int = 4
    max_requests: int = 20_000           # per thread
    deadline: float = 120.0              # seconds
    timeout: float = 20.0                # per request
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]

    def start(self) -> "Load":
        self._t0 = time.monotonic()
        for t in self._workers:
            t.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=self.timeout + 5)
        with self._lock:
            return sorted(self.samples, key=lambda s: s.sent)

    def count(self) -> int:
        with self._lock:
            return len(self.samples)

    def wait_count(self, n: int, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while self.count() < n:
            assert time.monotonic() < end, f"only {self.count()} of {n} requests in {timeout}s"
            time.sleep(0.02)

    def _run(self) -> None:
        client: Client | None = None
        for _ in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() - self._t0 > self.deadline:
                break
            sent = time.monotonic()
            try:
                if client is None:
                    client = Client(self.host, self.port, timeout=self.timeout)
                resp = client.request(self.method, self.path)
                cluster = None
                if resp.body[:1] == b"{":
                    cluster = orjson.loads(resp.body).get("cluster")
                sample = Sample(sent, time.monotonic(), resp.status, cluster)
                if resp.closes:
                    client.close()
                    client = None
            except (OSError, PeerClosed, ValueError) as exc:
                sample = Sample(sent, time.monotonic(), None, error=repr(exc))
                if client is not None:
                    client.close()
                    client = None
            with self._lock:
                self.samples.append(sample)
        if client is not None:
            client.close()


def failures(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.failed]


def last_sent_to(samples: list[Sample], cluster: str) -> float | None:
    times = [s.sent for s in samples if s.cluster == cluster]
    return max(times) if times else None
