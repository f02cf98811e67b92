"""What the control plane hands the data plane: merged services and their endpoints.

The data plane's view is a dict ``"namespace/name" -> endpoints``.  It changes by
*deltas*, each numbered one more than the last:

* membership: a service's whole endpoint list (with health flags), or ``None`` when
  the service is gone; sent only for the services a watch event touched;
* flags: ``(index, flags)`` pairs for a service whose membership did not change;
  a health flip is one small message, applied with ``EndpointTable.set_flags``.

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

    def to_wire(self) -> dict:
        return {"t": "full", "v": self.version, "services": _services_to_wire(self.services)}

    @classmethod
    def from_wire(cls, message: dict) -> "Snapshot":
        return cls(message["v"], {k: _endpoints(e) for k, e in message["services"].items()})

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

    def __bool__(self) -> bool:
        return bool(self.services or self.flags)

    def to_wire(self) -> dict:
        return {"t": "delta", "v": self.version,
                "services": {k: None if e is None else _endpoint_rows(e) for k, e in self.services.items()},
                "flags": {k: [list(p) for p in pairs] for k, pairs in self.flags.items()}}

    @classmethod
    def from_wire(cls, message: dict) -> "Delta":
        return cls(message["v"],
                   {k: None if e is None else _endpoints(e) for k, e in message["services"].items()},
                   {k: tuple((i, f) for i, f in pairs) for k, pairs in message["flags"].items()})

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
                e = endpoints[i]
                endpoints[i] = EndpointSpec(e.cluster, e.ip, e.port, e.weight, flags)
            services[key] = tuple(endpoints)


def _endpoint_rows(endpoints: Endpoints) -> list[list]:
    return [[e.cluster, e.ip, e.port, e.weight, e.flags] for e in endpoints]


def _services_to_wire(services: dict[str, Endpoints]) -> dict[str, list[list]]:
    return {key: _endpoint_rows(eps) for key, eps in services.items()}


def _endpoints(rows: list[list]) -> Endpoints:
    return tuple(EndpointSpec(*row) for row in rows)
