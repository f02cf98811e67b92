"""Per-service endpoint table (compiled): nginx's smooth weighted round robin for
small tables, earliest deadline first (O(log n) per pick) above ``edf_threshold``."""
from typing import Any, Hashable, Iterable, Literal, Protocol, Sequence, final

EDF_THRESHOLD: int
POLICIES: dict[str, int]
"""round_robin, least_request, random, ring_hash, peak_ewma -> POLICY_* value."""
POLICY_ROUND_ROBIN: int
POLICY_LEAST_REQUEST: int
POLICY_RANDOM: int
POLICY_RING_HASH: int
POLICY_PEAK_EWMA: int

def hash_bytes(data: bytes) -> int:
    """FNV-1a 64 of ``data``, mixed; the same in every process (ring_hash keys)."""
"""Default ``edf_threshold``: tables with more endpoints schedule by EDF (64)."""

FLAG_ACTIVE_FAILED: int
"""Failed active health checks."""
FLAG_EJECTED: int
"""Ejected by passive outlier detection."""
FLAG_DRAINING: int
"""Not ready or terminating."""
FLAG_CLUSTER_DRAINED: int
"""Its cluster is drained for the service (too few healthy endpoints there)."""

class EndpointLike(Protocol):
    @property
    def key(self) -> Hashable: ...
    @property
    def weight(self) -> int: ...
    @property
    def cluster(self) -> str: ...

@final
class EndpointTable:
    """Endpoints of one service; healthy iff flags == 0.

    Indices are valid until an ``update()`` that bumps ``generation``.
    """

    @property
    def endpoints(self) -> tuple[Any, ...]:
        """The endpoint objects given to the last ``update()``, by index."""
    @property
    def clusters(self) -> tuple[str, ...]:
        """Distinct cluster names, in order of first appearance."""
    @property
    def generation(self) -> int:
        """Incremented by every ``update()`` that changes which key has which index."""

    @property
    def edf_threshold(self) -> int:
        """Tables with more endpoints than this schedule by EDF, others by smooth WRR."""
    @property
    def scheduler(self) -> Literal["wrr", "edf"]:
        """The regime of the current endpoint list."""

    def __init__(self, endpoints: Iterable[EndpointLike] = (),
                 edf_threshold: int = ..., policy: str = "round_robin",
                 decay: float = 1.0) -> None:
        """Raises ValueError if ``edf_threshold`` < 0."""
    def __len__(self) -> int: ...
    @property
    def policy(self) -> str: ...
    @property
    def levels(self) -> tuple[tuple[int, int], ...]:
        """(priority, load) per priority level, best first; () for one level."""
    def set_loads(self, loads: Iterable[tuple[int, int]]) -> None:
        """Each level's share of picks, as (priority, weight) pairs (basis points)."""
    def set_weight(self, i: int, weight: int) -> None:
        """Endpoint ``i``'s weight in place (slow start); not for ring_hash."""
    def set_key(self, key: int) -> None:
        """ring_hash: the key hash for the picks that follow."""
    def observe(self, i: int, seconds: float, now: float) -> None:
        """peak_ewma: a response time of endpoint ``i`` at monotonic time ``now``."""
    def ewma(self, i: int) -> float: ...
    def update(self, endpoints: Iterable[EndpointLike],
               priorities: Sequence[int] | None = None) -> None:
        """Replace the endpoints; flags, in-flight and the schedule follow the key.

        Smooth WRR carries ``current``; EDF carries the deadline of a healthy
        endpoint whose weight is unchanged, and schedules the others at their
        next grid point after the current time (no burst).  New keys start at
        zero.  Crossing ``edf_threshold`` starts the new regime afresh.  Raises
        ValueError (table unchanged) on a duplicate key or a weight < 1.
        """
    def pick(self, exclude: Sequence[int] | None = None) -> int:
        """Next index over healthy endpoints not in ``exclude``; -1 if none.

        Smooth WRR (O(n)) up to ``edf_threshold`` endpoints, EDF (O(log n),
        plus the excluded endpoints at the top of the schedule) above.
        """
    def endpoint(self, i: int) -> Any:
        """The endpoint object at index ``i``."""
    def cluster_index(self, i: int) -> int:
        """Index into ``clusters`` of endpoint ``i``'s cluster."""
    def set_flags(self, i: int, flags: int) -> None:
        """Set all health flag bits of endpoint ``i`` (bits 0-29)."""
    def add_flag(self, i: int, flag: int) -> None:
        """Set health flag bit(s) ``flag`` on endpoint ``i``."""
    def clear_flag(self, i: int, flag: int) -> None:
        """Clear health flag bit(s) ``flag`` on endpoint ``i``."""
    def flags(self, i: int) -> int:
        """Health flag bits of endpoint ``i``; 0 means healthy."""
    def index_of(self, key: Hashable) -> int:
        """Index of the endpoint with ``key``, or -1."""
    def acquire(self, i: int) -> None:
        """Count one more request in flight to endpoint ``i``."""
    def release(self, i: int) -> None:
        """Count one request less in flight to endpoint ``i`` (never below 0)."""
    def inflight(self, i: int) -> int:
        """Requests in flight to endpoint ``i``."""
    def healthy_count(self) -> int:
        """Number of endpoints with no flag set."""
    def deadline(self, i: int) -> tuple[int, int, int] | None:
        """EDF: the next deadline of endpoint ``i`` as (whole cycles, numerator, weight).

        None when it is not scheduled (flagged) or the table uses smooth WRR.
        """
    def state(self) -> list[dict[str, Any]]:
        """Per endpoint: key, cluster, weight, current, flags, inflight."""
