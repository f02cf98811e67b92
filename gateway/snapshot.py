"""What the control plane hands the data plane: merged services and their endpoints.

The data plane's view is a dict ``"namespace/name" -> endpoints``.  It changes by
*deltas*, each numbered one more than the last:

* membership: a service's whole endpoint list (with health flags), or ``None`` when
  the service is gone; sent only for the services a watch event touched;
* flags: ``(index, flags)`` pairs for a service whose membership did not change;
  a health flip is one small message, applied with ``EndpointTable.set_flags``;
* loads: for a service with more than one priority level, each level's share of the
  requests as ``(priority, basis points)`` pairs (see gateway.health.state.plan_levels),
  sent with a membership change and whenever health moves them; applied with
  ``EndpointTable.set_loads``.

A ``Snapshot`` (the whole view) is sent only when a worker starts or asks for it
because it saw a version gap.  Every message is encoded once and the same bytes go
to every worker (see gateway.supervisor); ``workers: 1`` applies the same objects
in-process.
"""
from __future__ import annotations

from dataclasses import dataclass, field

Endpoints = tuple["EndpointSpec", ...]


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One endpoint of a merged service, tagged with the cluster (source) it came from."""

    cluster: str
    ip: str
    port: int
    weight: int
    flags: int = 0          # health flag bits (see _speedups.table); 0 = healthy
    priority: int = 0       # the service's priority level of this endpoint's cluster

    def with_flags(self, flags: int) -> "EndpointSpec":
        return EndpointSpec(self.cluster, self.ip, self.port, self.weight, flags, self.priority)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.cluster, self.ip, self.port)

    @property
    def host(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole view at one version."""

    version: int
    services: dict[str, Endpoints] = field(default_factory=dict)   # "ns/name" ->
    loads: dict[str, Loads] = field(default_factory=dict)           # multi-level services only

    def to_wire(self) -> dict:
        return {"t": "full", "v": self.version, "services": _services_to_wire(self.services),
                "loads": _loads_to_wire(self.loads)}

    @classmethod
    def from_wire(cls, message: dict) -> "Snapshot":
        return cls(message["v"], {k: _endpoints(e) for k, e in message["services"].items()},
                   _loads(message.get("loads", {})))

    def to_json(self) -> dict:
        return {"version": self.version,
                "services": {key: [{"cluster": e.cluster, "address": e.host, "weight": e.weight,
                                    "flags": e.flags} for e in eps]
                             for key, eps in self.services.items()}}


@dataclass(frozen=True, slots=True)
class Delta:
    """What changed from ``version - 1`` to ``version``."""

    version: int
    services: dict[str, Endpoints | None] = field(default_factory=dict)    # membership
    flags: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    loads: dict[str, Loads] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.services or self.flags or self.loads)

    def to_wire(self) -> dict:
        return {"t": "delta", "v": self.version,
                "services": {k: None if e is None else _endpoint_rows(e) for k, e in self.services.items()},
                "flags": {k: [list(p) for p in pairs] for k, pairs in self.flags.items()},
                "loads": _loads_to_wire(self.loads)}

    @classmethod
    def from_wire(cls, message: dict) -> "Delta":
        return cls(message["v"],
                   {k: None if e is None else _endpoints(e) for k, e in message["services"].items()},
                   {k: tuple((i, f) for i, f in pairs) for k, pairs in message["flags"].items()},
                   _loads(message.get("loads", {})))

    def apply_to(self, services: dict[str, Endpoints]) -> None:
        """Change a view (a dict like ``Snapshot.services``) in place."""
        for key, endpoints in self.services.items():
            if endpoints is None:
                services.pop(key, None)
            else:
                services[key] = endpoints
        for key, pairs in self.flags.items():
            endpoints = list(services[key])
            for i, flags in pairs:
                endpoints[i] = endpoints[i].with_flags(flags)
            services[key] = tuple(endpoints)


Loads = tuple[tuple[int, int], ...]     # (priority, basis points of the requests)


def _loads_to_wire(loads: dict[str, Loads]) -> dict[str, list[list[int]]]:
    return {k: [list(p) for p in pairs] for k, pairs in loads.items()}


def _loads(wire: dict) -> dict[str, Loads]:
    return {k: tuple((p, bp) for p, bp in pairs) for k, pairs in wire.items()}


def _endpoint_rows(endpoints: Endpoints) -> list[list]:
    return [[e.cluster, e.ip, e.port, e.weight, e.flags, e.priority] for e in endpoints]


def _services_to_wire(services: dict[str, Endpoints]) -> dict[str, list[list]]:
    return {key: _endpoint_rows(eps) for key, eps in services.items()}


def _endpoints(rows: list[list]) -> Endpoints:
    return tuple(EndpointSpec(*row) for row in rows)
