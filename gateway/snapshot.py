"""What the control plane hands the data plane: merged services and their endpoints.

The data plane's view is a dict ``"namespace/name" -> endpoints``.  It changes by
*deltas*, each numbered one more than the last:

* membership: a service's whole endpoint list (with health flags), or ``None`` when
  the service is gone; sent only for the services a watch event touched;
* flags: ``(index, flags)`` pairs for a service whose membership did not change;
  a health flip is one small message, applied with ``EndpointTable.set_flags``;
* weights: ``(index, weight)`` pairs for a service in slow start (gateway.health.manager:
  an endpoint that became healthy ramps its weight up over a window, re-weighed a few
  times per window); applied with ``EndpointTable.set_weight``;
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
    protocol: str = ""      # "h2c" when its port's appProtocol says so (protocol: auto)

    def with_flags(self, flags: int) -> "EndpointSpec":
        return EndpointSpec(self.cluster, self.ip, self.port, self.weight, flags, self.priority,
                            self.protocol)

    def with_weight(self, weight: int) -> "EndpointSpec":
        return EndpointSpec(self.cluster, self.ip, self.port, weight, self.flags, self.priority,
                            self.protocol)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.cluster, self.ip, self.port)

    def spoken_with(self, setting: str) -> str:
        """How it is spoken to under its service's ``protocol`` setting: the setting, or
        with auto what its port's appProtocol says (none: http1)."""
        return setting if setting != "auto" else self.protocol or "http1"

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
                "loads": _pairs_to_wire(self.loads)}

    @classmethod
    def from_wire(cls, message: dict) -> "Snapshot":
        return cls(message["v"], {k: _endpoints(e) for k, e in message["services"].items()},
                   _pairs(message.get("loads", {})))

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
    weights: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.services or self.flags or self.loads or self.weights)

    def to_wire(self) -> dict:
        return {"t": "delta", "v": self.version,
                "services": {k: None if e is None else _endpoint_rows(e) for k, e in self.services.items()},
                "flags": _pairs_to_wire(self.flags), "loads": _pairs_to_wire(self.loads),
                "weights": _pairs_to_wire(self.weights)}

    @classmethod
    def from_wire(cls, message: dict) -> "Delta":
        return cls(message["v"],
                   {k: None if e is None else _endpoints(e) for k, e in message["services"].items()},
                   _pairs(message["flags"]), _pairs(message.get("loads", {})),
                   _pairs(message.get("weights", {})))

    def apply_to(self, services: dict[str, Endpoints]) -> None:
        """Change a view (a dict like ``Snapshot.services``) in place."""
        for key, endpoints in self.services.items():
            if endpoints is None:
                services.pop(key, None)
            else:
                services[key] = endpoints
        for key, pairs in self.flags.items():
            services[key] = with_pairs(services[key], pairs, EndpointSpec.with_flags)
        for key, pairs in self.weights.items():
            services[key] = with_pairs(services[key], pairs, EndpointSpec.with_weight)


def with_pairs(endpoints: Endpoints, pairs, change) -> Endpoints:
    """``endpoints`` with ``change(endpoint, value)`` for each (index, value) of ``pairs``."""
    changed = list(endpoints)
    for i, value in pairs:
        changed[i] = change(changed[i], value)
    return tuple(changed)


Loads = tuple[tuple[int, int], ...]     # (priority, basis points of the requests)


def _pairs_to_wire(pairs: dict[str, tuple[tuple[int, int], ...]]) -> dict[str, list[list[int]]]:
    return {k: [list(p) for p in ps] for k, ps in pairs.items()}


def _pairs(wire: dict) -> dict[str, tuple[tuple[int, int], ...]]:
    return {k: tuple((i, v) for i, v in ps) for k, ps in wire.items()}




def _endpoint_rows(endpoints: Endpoints) -> list[list]:
    return [[e.cluster, e.ip, e.port, e.weight, e.flags, e.priority, e.protocol] for e in endpoints]


def _services_to_wire(services: dict[str, Endpoints]) -> dict[str, list[list]]:
    return {key: _endpoint_rows(eps) for key, eps in services.items()}


def _endpoints(rows: list[list]) -> Endpoints:
    return tuple(EndpointSpec(*row) for row in rows)
