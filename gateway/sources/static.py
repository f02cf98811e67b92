"""Static sources: endpoints written in the config, for backends outside Kubernetes."""
from __future__ import annotations

from gateway.config import SourceConfig
from gateway.sources.base import ServiceKey, Source, SourceEndpoint, SourceState


class StaticSource(Source):
    kind = "static"

    def __init__(self, config: SourceConfig) -> None:
        super().__init__(config.name, config.weight, config)
        self._services = {ServiceKey(s.namespace, s.name): s.endpoints for s in config.services}

    def start(self, on_change) -> None:
        super().start(on_change)
        self.state = SourceState.SYNCED

    def endpoints(self, service: ServiceKey, port: int | str) -> list[SourceEndpoint] | None:
        listed = self._services.get(service)
        if listed is None:
            return None
        result = []
        for ep in listed:
            ep_port = ep.port if ep.port is not None else port
            if isinstance(ep_port, int):    # a named port means nothing outside Kubernetes
                result.append(SourceEndpoint(ip=ep.host, port=ep_port, weight=ep.weight))
        return result

    def status(self) -> dict:
        return {**super().status(), "services": len(self._services)}
