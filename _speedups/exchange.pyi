"""One request/response as a state machine (compiled); C interfaces only."""
from _speedups.context import Connection
from _speedups.upstream import UpstreamOwner

GATEWAY_ERROR_KINDS: frozenset[str]
"""Failure kinds of a try the gateway saw fail (connect, reset, timeout, bad response)."""
UPSTREAM_5XX: str
"""The failure kind of a 5xx answer."""

class Downstream(Connection):
    """What an exchange answers through (a client connection)."""

    @property
    def proto(self) -> bytes: ...

class Exchange(UpstreamOwner): ...
class RetryPolicy: ...
class PassiveHealth: ...
