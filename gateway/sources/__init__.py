"""Service sources: where the endpoints of a service come from."""

from gateway.sources.base import ServiceKey, Source, SourceEndpoint, SourceState

__all__ = ["ServiceKey", "Source", "SourceEndpoint", "SourceState"]
