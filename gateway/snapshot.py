"""What the control plane hands the data plane: merged services and their endpoints.

A snapshot is immutable and swapped whole.  Its ``version`` grows by one per
change, so a worker can say which one it serves.
"""
from __future__ import annotations

from dataclasses import dataclass, field


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
    version: int
    services: dict[str, tuple[EndpointSpec, ...]] = field(default_factory=dict)  # "ns/name" ->

    def to_wire(self) -> dict:
        """Compact form sent to worker processes."""
        return {"t": "snapshot", "v": self.version,
                "services": {key: [[e.cluster, e.ip, e.port, e.weight, e.flags] for e in eps]
                             for key, eps in self.services.items()}}

    @classmethod
    def from_wire(cls, message: dict) -> "Snapshot":
        return cls(message["v"], {key: tuple(EndpointSpec(*e) for e in eps)
                                  for key, eps in message["services"].items()})

    def to_json(self) -> dict:
        return {"version": self.version,
                "services": {key: [{"cluster": e.cluster, "address": e.host, "weight": e.weight,
                                    "flags": e.flags} for e in eps]
                             for key, eps in self.services.items()}}
