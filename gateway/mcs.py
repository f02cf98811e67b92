"""Multi-Cluster Services (KEP-1645) status: the conditions of each cluster's ServiceExport.

With ``multicluster: {merge: exported}`` this gateway is what consumes the exports, so it says
what became of them, with the condition types and reasons of the mcs-api
(sigs.k8s.io/mcs-api, ``ServiceExportCondition*``):

* ``Valid``: True/``Valid`` when the cluster has the Service, False/``NoService`` otherwise;
* ``Ready``: True/``Exported`` when its endpoints join the merged service, False/``Pending``;
* ``Conflict``: True/``PortConflict`` when the exporting clusters' Services disagree on ports
  (the message names each cluster's ports; nobody wins: ports merge by name and each cluster's
  endpoints use its own number for that name), False/``NoConflicts`` otherwise. Raised on
  every exporting cluster's ServiceExport, as the API recommends.

Work follows the change: the registry says which services it merged again (a watch event on a
Service, slice or ServiceExport of theirs); only their exports are looked at. A status is written
only when it differs from what the object carries (our own write comes back as a watch event
and then matches), from a worker thread, to the cluster the ServiceExport is in. A cluster that
does not serve the ServiceExport kind (no MCS CRDs, found by discovery) has no exports, so
nothing is written to it.
"""
from __future__ import annotations

import asyncio
import logging

from gateway.gatewayapi.controller import with_transition_times
from gateway.gatewayapi.conditions import condition
from gateway.sources.discovery import MCS_GROUP, MCS_VERSION

log = logging.getLogger("gateway.mcs")


def declared_ports(sources, namespace: str, name: str, exported: bool = False) -> dict[str, dict[str, int]]:
    """{cluster: {port name: number}} of the clusters with this Service (``exported``: only
    those that also export it). Static sources have no Service ports to disagree on."""
    declared = {}
    for source in sources:
        if source.kind != "kubernetes" or (exported and source.export(namespace, name) is None):
            continue
        ports = source.service_ports(namespace, name)
        if ports is not None:
            declared[source.name] = ports
    return declared


def ports_conflict(declared: dict[str, dict[str, int]]) -> bool:
    return len({tuple(sorted(p.items())) for p in declared.values()}) > 1


def export_conditions(declared: dict, cluster: str, generation: int) -> list[dict]:
    """The conditions of ``cluster``'s ServiceExport, given every exporting cluster's ports."""
    valid = cluster in declared
    conflict = ports_conflict(declared)
    message = ("ports differ across exporting clusters: " +
               "; ".join(f"{c}: " + ", ".join(f"{n or '(unnamed)'}={p}" for n, p in sorted(ports.items()))
                         for c, ports in sorted(declared.items())) +
               " (ports merge by name: each cluster's endpoints use its own port of that name)"
               if conflict else "the exporting clusters agree on ports")
    return [condition("Valid", valid, "Valid" if valid else "NoService",
                      "" if valid else "no Service of this name in this cluster", generation),
            condition("Ready", valid, "Exported" if valid else "Pending",
                      "its endpoints join the merged service" if valid else "waiting for the Service",
                      generation),
            condition("Conflict", conflict, "PortConflict" if conflict else "NoConflicts", message, generation)]


def _comparable(conditions: list[dict] | None) -> list[dict]:
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions or ()]


class ExportStatus:
    """Writes ServiceExport conditions for the services the registry merged again."""

    def __init__(self) -> None:
        self.writes = 0
        self._pending: dict[tuple[str, str, str], list[dict]] = {}    # (cluster, ns, name) -> written

    def merged(self, registry, keys: set[str]) -> None:
        for key in keys:
            svc = registry.services.get(key)
            if svc is not None:
                self._service(registry.sources, svc.namespace, svc.name)

    def _service(self, sources, namespace: str, name: str) -> None:
        declared = declared_ports(sources, namespace, name, exported=True)
        for source in sources:
            export = source.export(namespace, name) if source.kind == "kubernetes" else None
            if export is None or source.api is None:
                continue
            old = export.get("status") or {}
            generation = export["metadata"].get("generation", 1)
            status = with_transition_times(
                {"conditions": export_conditions(declared, source.name, generation)}, old)
            wanted = _comparable(status["conditions"])
            target = (source.name, namespace, name)
            if wanted == _comparable(old.get("conditions")) or self._pending.get(target) == wanted:
                continue
            self._pending[target] = wanted
            loop = asyncio.get_running_loop()
            loop.run_in_executor(None, self._write, loop, target, source, status)

    def _write(self, loop, target: tuple[str, str, str], source, status: dict) -> None:
        """(A worker thread.) A failed write is forgotten, so the next change tries again."""
        _, namespace, name = target
        from kubernetes import client
        from kubernetes.client.rest import ApiException
        try:
            client.CustomObjectsApi(source.api).patch_namespaced_custom_object_status(
                MCS_GROUP, MCS_VERSION, namespace, "serviceexports", name, {"status": status})
            self.writes += 1
            return
        except ApiException as exc:
            if exc.status != 404:       # deleted meanwhile
                log.warning("ServiceExport status write failed", extra={"fields": {
                    "cluster": source.name, "name": f"{namespace}/{name}", "error": f"{exc.status} {exc.reason}"}})
        except Exception as exc:
            log.warning("ServiceExport status write failed",
                        extra={"fields": {"cluster": source.name, "error": str(exc)}})
        loop.call_soon_threadsafe(self._pending.pop, target, None)
