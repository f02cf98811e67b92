"""The small interface every service source implements.

A source knows, for some services, which addresses serve them.  The registry
asks each source for the services named in the config and merges the answers.
A source says *which* services changed (``on_change(source, keys)``), so that the
registry re-merges those and nothing else.
Sources run on the control-plane event loop; one that has to block (the
Kubernetes client is synchronous) does so in its own threads and reports back
with ``loop.call_soon_threadsafe``.
"""
from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple


class ServiceKey(NamedTuple):
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class SourceEndpoint:
    """One address of a service as one source sees it."""

    ip: str
    port: int
    weight: int = 1
    ready: bool = True          # may receive new requests
    serving: bool = True        # still answers (a terminating pod may be serving, not ready)
    terminating: bool = False
    zone: str | None = None
    app_protocol: str | None = None     # its port's appProtocol (Kubernetes), for protocol: auto


# on_change(source, keys): ``keys`` are the services whose endpoints may have changed.
OnChange = Callable[["Source", frozenset["ServiceKey"]], None]


class SourceState(enum.Enum):
    STARTING = "starting"       # no complete view yet
    SYNCED = "synced"           # the view is current
    STALE = "stale"             # lost contact; last known view kept
    ERROR = "error"             # cannot even start (bad credentials, bad kubeconfig)


class Source(abc.ABC):
    """A named provider of endpoints, with a weight applied to all of them."""

    kind: str = "abstract"

    def __init__(self, name: str, weight: int, config=None) -> None:
        self.config = config                # the SourceConfig it was built from
        self.name = name
        self.weight = weight
        self.state = SourceState.STARTING
        self.error: str | None = None
        self._on_change: OnChange | None = None

    def start(self, on_change: OnChange) -> None:
        """Begin watching; call ``on_change`` (on the event loop) after every change."""
        self._on_change = on_change

    def rebind(self, on_change: OnChange) -> None:
        """Report changes to a new registry (a reload kept this source running)."""
        self._on_change = on_change

    async def stop(self) -> None:
        """Stop watching and release threads and connections."""

    @abc.abstractmethod
    def endpoints(self, service: ServiceKey, port: int | str) -> list[SourceEndpoint] | None:
        """The addresses of ``service`` for its ``port`` (number or port name).

        ``None`` when this source does not have the service at all, so that the
        registry can tell "absent here" from "present with no ready address".
        """

    def status(self) -> dict:
        """A JSON-able summary for the admin API."""
        return {"name": self.name, "type": self.kind, "weight": self.weight,
                "state": self.state.value, "error": self.error}

    def _changed(self, keys: Iterable[ServiceKey]) -> None:
        keys = frozenset(keys)
        if keys and self._on_change is not None:
            self._on_change(self, keys)
