"""Kubernetes sources: one cluster's Services and EndpointSlices, watched live.

The official client is synchronous, so each list+watch loop runs in its own
thread and hands what it sees to the event loop with ``call_soon_threadsafe``;
all state is read and written on the loop thread only.

Per resource (EndpointSlices and Services; v1 Endpoints when the cluster has no
``discovery.k8s.io/v1``) and per namespace scope, a loop:

1. lists (paginated) and *replaces* that scope's objects in one step, so a
   relist never shows a window with zero endpoints;
2. watches from the list's resourceVersion with bookmarks, applying events; the
   resume point follows every event and bookmark;
3. on 410 Gone goes back to 1; on a lost connection marks the source stale,
   keeps the last known endpoints (an API outage must not empty a cluster whose
   pods still answer; health checks decide whether they serve), backs off with
   jitter and watches again from the last version seen (a LIST of a big cluster
   is the expensive call: only 410 says the history is gone and asks for one).

Every change reports the services it touched (a slice names its Service in a
label), so the registry re-merges those only; slices are indexed by service, so
a lookup costs the service's slices, not the cluster's.

A service exists in this source while its Service object does: deleting the
Service removes its addresses at once, even before its slices are collected.

With ``multicluster: {merge: exported}`` (KEP-1645 Multi-Cluster Services) the source also
watches ServiceExports (multicluster.x-k8s.io/v1alpha1), and a service exists in this cluster
only while it has both its Service and a ServiceExport of the same name: "a Service without a
ServiceExport in its local cluster will not be exported even if other clusters export the
same name". The ServiceExport kind is watched only where the cluster serves it (found by API
discovery, ``gateway.sources.discovery``): a cluster without the MCS CRDs exports nothing, and
the source does not wait for a kind it cannot list; its CRD installed later is found by the
periodic re-check and then watched.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

from gateway.config import SourceConfig
from gateway.sources.base import ServiceKey, Source, SourceEndpoint, SourceState
from gateway.sources.discovery import MCS_GROUP, MCS_VERSION, SERVICE_EXPORTS, OptionalKinds
from gateway.sources.listwatch import BACKOFF_MAX, CONNECT_TIMEOUT, Handlers, list_and_watch

log = logging.getLogger("gateway.sources.kubernetes")

# The name a source waits on until discovery says whether its cluster serves ServiceExports.
_EXPORTS_DISCOVERY = "serviceexports/discovery"

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class _Port:
    name: str                   # "" when unnamed
    port: int
    app_protocol: str | None = None     # appProtocol (the Service port's, copied by the controller)


@dataclass(frozen=True, slots=True)
class _SliceView:
    """The part of an EndpointSlice (or v1 Endpoints) the gateway uses."""

    service: str
    ports: tuple[_Port, ...]
    endpoints: tuple[SourceEndpoint, ...]   # port 0: resolved per lookup


@dataclass(frozen=True, slots=True)
class _ServicePort:
    name: str
    port: int
    target: int | str | None
    app_protocol: str | None = None


def _slice_view(obj) -> _SliceView | None:
    labels = obj.metadata.labels or {}
    service = labels.get(SERVICE_NAME_LABEL)
    if not service or obj.address_type not in ("IPv4", "IPv6"):
        return None
    ports = tuple(_Port(p.name or "", p.port, p.app_protocol) for p in (obj.ports or ())
                  if p.port is not None)
    endpoints = []
    for ep in obj.endpoints or ():
        cond = ep.conditions
        # API conventions: a nil "ready" means unknown and is taken as ready;
        # nil "serving" follows "ready"; nil "terminating" is false.
        ready = True if cond is None or cond.ready is None else bool(cond.ready)
        serving = ready if cond is None or cond.serving is None else bool(cond.serving)
        terminating = bool(cond is not None and cond.terminating)
        for ip in ep.addresses or ():
            endpoints.append(SourceEndpoint(ip=ip, port=0, ready=ready and not terminating,
                                            serving=serving, terminating=terminating, zone=ep.zone))
    return _SliceView(service, ports, tuple(endpoints))


def _endpoints_view(obj) -> list[tuple[str, _SliceView]]:
    """v1 Endpoints as slices, one per subset (a subset has its own ports)."""
    views = []
    for i, subset in enumerate(obj.subsets or ()):
        ports = tuple(_Port(p.name or "", p.port, p.app_protocol) for p in (subset.ports or ()))
        eps = [SourceEndpoint(ip=a.ip, port=0) for a in (subset.addresses or ())]
        eps += [SourceEndpoint(ip=a.ip, port=0, ready=False, serving=False)
                for a in (subset.not_ready_addresses or ())]
        views.append((f"{obj.metadata.name}#{i}", _SliceView(obj.metadata.name, ports, tuple(eps))))
    return views


def _service_ports(obj) -> tuple[_ServicePort, ...]:
    return tuple(_ServicePort(p.name or "", p.port, p.target_port, p.app_protocol)
                 for p in (obj.spec.ports or ()))


class KubernetesSource(Source):
    kind = "kubernetes"

    def __init__(self, config: SourceConfig, exported_only: bool = False) -> None:
        super().__init__(config.name, config.weight, config)
        self.config = config
        self.exported_only = exported_only
        # (namespace, name) -> its ServiceExport (status and generation are read by gateway.mcs)
        self._exports: dict[tuple[str, str], dict] = {}
        self.api = None                     # the ApiClient, once built (gateway.mcs writes with it)
        self.kinds: OptionalKinds | None = None     # merge: exported: is ServiceExport served?
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: list = []
        # (namespace, object name) -> view, and the same views by (namespace, service);
        # written on the loop thread only
        self._slices: dict[tuple[str, str], _SliceView] = {}
        self._by_service: dict[tuple[str, str], dict[str, _SliceView]] = {}
        self._services: dict[tuple[str, str], tuple[_ServicePort, ...]] = {}
        self.lists = 0                      # LIST calls made (each page counted once per list)
        self._synced_loops: set[str] = set()
        self._loop_names: list[str] = []
        self._failing: set[str] = set()
        self.last_event: float | None = None
        self.events = 0
        self.uses_endpointslices: bool | None = None

    # -- lifecycle ----------------------------------------------------------

    def start(self, on_change: Callable[[], None]) -> None:
        super().start(on_change)
        self._loop = asyncio.get_running_loop()
        thread = threading.Thread(target=self._bootstrap, name=f"k8s-{self.name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    async def stop(self) -> None:
        self._stopping.set()
        for w in list(self._watches):
            w.stop()

    def _bootstrap(self) -> None:
        """Build the API client, detect EndpointSlice support, start one loop per resource and scope."""
        from kubernetes import client
        # A loop, not a retry that calls _bootstrap again: that recursion grew the stack by two
        # frames every BACKOFF_MAX seconds for as long as the source could not start.
        while True:
            try:
                api = self.api = self._api_client()
                self.uses_endpointslices = self._has_endpointslices(api)
                break
            except Exception as exc:                # bad kubeconfig, bad token, unreachable at start ...
                self._post(self._set_error, f"cannot connect: {_describe(exc)}")
                if self._stopping.wait(BACKOFF_MAX):
                    return
        core = client.CoreV1Api(api)
        discovery = client.DiscoveryV1Api(api)
        scopes = list(self.config.namespaces) or [None]
        if self.exported_only:
            self._loop_names.append(_EXPORTS_DISCOVERY)     # waited for until discovery answers
        for ns in scopes:
            if self.uses_endpointslices:
                fn = (discovery.list_namespaced_endpoint_slice if ns else
                      discovery.list_endpoint_slice_for_all_namespaces)
                self._spawn(f"endpointslices/{ns or '*'}", fn, ns, self._replace_slices, self._slice_event)
            else:
                fn = core.list_namespaced_endpoints if ns else core.list_endpoints_for_all_namespaces
                self._spawn(f"endpoints/{ns or '*'}", fn, ns, self._replace_endpoints, self._endpoints_event)
            fn = core.list_namespaced_service if ns else core.list_service_for_all_namespaces
            self._spawn(f"services/{ns or '*'}", fn, ns, self._replace_services, self._service_event)
        if self.exported_only:
            # This thread then re-checks discovery for as long as ServiceExports are not served.
            self.kinds = OptionalKinds([SERVICE_EXPORTS], on_served=lambda _: self._spawn_exports(api, scopes),
                                       on_absent=lambda _: self._post(self._exports_decided, False),
                                       on_error=lambda error: self._post(self._discovery_failed, error))
            self.kinds.run(api, self._stopping)

    def _api_client(self):
        return api_client(self.config)

    def _has_endpointslices(self, api) -> bool:
        from kubernetes import client
        from kubernetes.client.rest import ApiException
        try:
            client.DiscoveryV1Api(api).get_api_resources(_request_timeout=(CONNECT_TIMEOUT, 10))
            return True
        except ApiException as exc:
            if exc.status == 404:
                log.info("no discovery.k8s.io/v1 in this cluster: watching v1 Endpoints",
                         extra={"fields": {"source": self.name}})
                return False
            raise

    def _spawn(self, name, list_fn, namespace, replace, apply_event, optional: bool = False) -> None:
        self._loop_names.append(name)
        thread = threading.Thread(target=self._list_watch, name=f"k8s-{self.name}-{name}",
                                  args=(name, list_fn, namespace, replace, apply_event, optional), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _spawn_exports(self, api, scopes) -> None:
        """(The discovery thread.) The cluster serves ServiceExports: a loop per scope."""
        from kubernetes import client
        for ns in scopes:
            self._spawn(f"serviceexports/{ns or '*'}", _export_lister(client.CustomObjectsApi(api)),
                        ns, self._replace_exports, self._export_event, optional=True)
        self._post(self._exports_decided, True)

    # -- the list+watch loop (runs in its thread) -------------------------------

    def _list_watch(self, name, list_fn, namespace, replace, apply_event, optional) -> None:
        kwargs = {"namespace": namespace} if namespace else {}

        def expired() -> None:
            log.info("watch expired (410 Gone); relisting",
                     extra={"fields": {"source": self.name, "resource": name}})

        def counted() -> None:
            self.lists += 1

        def gone() -> None:                         # its CRD was deleted: pending again
            self._post(self._exports_gone, name)
            self.kinds.lost(SERVICE_EXPORTS)

        list_and_watch(list_fn, kwargs, self._stopping, self._watches, Handlers(
            listed=lambda items: self._post(replace, namespace, items, name),
            event=lambda kind, obj: self._post(apply_event, kind, obj),
            failed=lambda error: self._post(self._loop_failed, name, error),
            resumed=lambda: self._post(self._synced, name),
            expired=expired, gone=gone if optional else None), on_list=counted)

    def _post(self, fn, *args) -> None:
        if self._stopping.is_set():
            return                                  # a stopped source reports nothing more
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:
                pass                                # loop closed while we were posting

    # -- state updates (loop thread) ------------------------------------------

    def _replace_slices(self, namespace, items, loop_name) -> None:
        fresh = {}
        for obj in items:
            view = _slice_view(obj)
            if view is not None:
                fresh[(obj.metadata.namespace, obj.metadata.name)] = view
        self._changed(self._replace_slice_scope(namespace, fresh))
        self._synced(loop_name)

    def _replace_endpoints(self, namespace, items, loop_name) -> None:
        fresh = {}
        for obj in items:
            for key, view in _endpoints_view(obj):
                fresh[(obj.metadata.namespace, key)] = view
        self._changed(self._replace_slice_scope(namespace, fresh))
        self._synced(loop_name)

    def _replace_services(self, namespace, items, loop_name) -> None:
        fresh = {(o.metadata.namespace, o.metadata.name): _service_ports(o) for o in items}
        touched = set()
        for key in [k for k in self._services if namespace is None or k[0] == namespace]:
            if key not in fresh:
                del self._services[key]
                touched.add(key)
        for key, ports in fresh.items():
            if self._services.get(key) != ports:
                self._services[key] = ports
                touched.add(key)
        self._changed(ServiceKey(*k) for k in touched)
        self._synced(loop_name)

    def _replace_slice_scope(self, namespace, fresh: dict) -> set[ServiceKey]:
        """A relist: the scope's slices become ``fresh``; the services whose slices differ."""
        touched: set[ServiceKey] = set()
        for key in [k for k in self._slices if namespace is None or k[0] == namespace]:
            if key not in fresh:
                touched |= self._set_slice(key, None)
        for key, view in fresh.items():
            if self._slices.get(key) != view:
                touched |= self._set_slice(key, view)
        return touched

    def _set_slice(self, key: tuple[str, str], view: _SliceView | None) -> set[ServiceKey]:
        """Store (or with None drop) one slice; the services it belonged to or now belongs to."""
        namespace, name = key
        touched = set()
        old = self._slices.pop(key, None)
        if old is not None:
            group = self._by_service.get((namespace, old.service))
            if group is not None:
                group.pop(name, None)
                if not group:
                    del self._by_service[(namespace, old.service)]
            touched.add(ServiceKey(namespace, old.service))
        if view is not None:
            self._slices[key] = view
            self._by_service.setdefault((namespace, view.service), {})[name] = view
            touched.add(ServiceKey(namespace, view.service))
        return touched

    def _slice_event(self, kind: str, obj) -> None:
        key = (obj.metadata.namespace, obj.metadata.name)
        view = _slice_view(obj) if kind != "DELETED" else None
        self._event(self._set_slice(key, view))

    def _endpoints_event(self, kind: str, obj) -> None:
        ns, name = obj.metadata.namespace, obj.metadata.name
        touched = set()
        # An Endpoints object is stored as one view per subset, named "name#i".
        group = self._by_service.get((ns, name), {})
        for view_name in [n for n in group if n.split("#")[0] == name]:
            touched |= self._set_slice((ns, view_name), None)
        if kind != "DELETED":
            for key, view in _endpoints_view(obj):
                touched |= self._set_slice((ns, key), view)
        touched.add(ServiceKey(ns, name))
        self._event(touched)

    def _service_event(self, kind: str, obj) -> None:
        key = (obj.metadata.namespace, obj.metadata.name)
        if kind == "DELETED":
            self._services.pop(key, None)
        else:
            self._services[key] = _service_ports(obj)
        self._event({ServiceKey(*key)})

    def _replace_exports(self, namespace, items, loop_name) -> None:
        fresh = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in items}
        scope = {k for k in self._exports if namespace is None or k[0] == namespace}
        self._exports = {**{k: o for k, o in self._exports.items() if k not in scope}, **fresh}
        self._changed({ServiceKey(*k) for k in scope ^ fresh.keys()})
        self._synced(loop_name)

    def _export_event(self, kind: str, obj) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if kind == "DELETED":
            self._exports.pop(key, None)
        else:
            self._exports[key] = obj
        self._event({ServiceKey(*key)})

    def _exports_decided(self, served: bool) -> None:
        """Discovery answered whether the cluster serves ServiceExports: stop waiting on it
        (when served, on the export loops' lists instead)."""
        if not served:
            log.info("no ServiceExport kind in this cluster: it exports nothing until the MCS CRDs "
                     "are installed", extra={"fields": {"source": self.name, "kind": str(SERVICE_EXPORTS)}})
        if _EXPORTS_DISCOVERY in self._loop_names:
            self._loop_names.remove(_EXPORTS_DISCOVERY)
        self._failing.discard(_EXPORTS_DISCOVERY)
        self._check_synced()

    def _discovery_failed(self, error: str | None) -> None:
        if error is not None:
            self._loop_failed(_EXPORTS_DISCOVERY, error)
        elif _EXPORTS_DISCOVERY in self._failing:
            self._failing.discard(_EXPORTS_DISCOVERY)
            if not self._failing:
                log.info("cluster API reachable again", extra={"fields": {"source": self.name}})
            self._check_synced()

    def _exports_gone(self, loop_name: str) -> None:
        """A ServiceExport loop got 404: the CRD was deleted, and with it every ServiceExport."""
        log.info("the ServiceExport kind is gone from this cluster: it exports nothing until the MCS "
                 "CRDs are installed again", extra={"fields": {"source": self.name}})
        if loop_name in self._loop_names:
            self._loop_names.remove(loop_name)
        self._synced_loops.discard(loop_name)
        self._failing.discard(loop_name)
        gone, self._exports = set(self._exports), {}
        self._changed({ServiceKey(*k) for k in gone})
        self._check_synced()

    def export(self, namespace: str, name: str) -> dict | None:
        """This cluster's ServiceExport of the service, as last seen (merge: exported only)."""
        return self._exports.get((namespace, name))

    def service_ports(self, namespace: str, name: str) -> dict[str, int] | None:
        """The ports (name -> number) of this cluster's Service, None without one."""
        ports = self._services.get((namespace, name))
        return None if ports is None else {p.name: p.port for p in ports}

    def _event(self, touched: set[ServiceKey]) -> None:
        self.events += 1
        self.last_event = time.time()
        self._changed(touched)

    def _synced(self, loop_name: str) -> None:
        self._synced_loops.add(loop_name)
        if loop_name in self._failing:
            self._failing.discard(loop_name)
            if not self._failing:
                log.info("cluster API reachable again", extra={"fields": {"source": self.name}})
        self._check_synced()
        self.last_event = time.time()

    def _check_synced(self) -> None:
        if not self._failing and self._synced_loops.issuperset(self._loop_names):
            self.state = SourceState.SYNCED
            self.error = None

    def _loop_failed(self, loop_name: str, error: str) -> None:
        first = not self._failing
        self._failing.add(loop_name)
        self.error = error
        if self.state == SourceState.SYNCED or self.state == SourceState.STALE:
            self.state = SourceState.STALE
        else:
            self.state = SourceState.ERROR
        if first:   # once per outage, not per retry
            log.warning("cluster API unreachable; keeping the last known endpoints (stale)",
                        extra={"fields": {"source": self.name, "error": error}})

    def _set_error(self, error: str) -> None:
        if self.error != error:
            log.error("source cannot start", extra={"fields": {"source": self.name, "error": error}})
        self.state = SourceState.ERROR
        self.error = error

    # -- the Source interface ---------------------------------------------------

    def endpoints(self, service: ServiceKey, port: int | str) -> list[SourceEndpoint] | None:
        if self.exported_only and (service.namespace, service.name) not in self._exports:
            return None                     # not exported from this cluster: not in the clusterset
        svc_ports = self._services.get((service.namespace, service.name))
        if svc_ports is None:
            return None
        wanted = _port_name(svc_ports, port)
        service_protocol = _app_protocol(svc_ports, wanted, port)
        result = []
        for view in self._by_service.get((service.namespace, service.name), {}).values():
            target = _target_port(view.ports, wanted, port)
            if target is None:
                continue
            protocol = target.app_protocol or service_protocol
            for ep in view.endpoints:
                result.append(SourceEndpoint(ip=ep.ip, port=target.port, ready=ep.ready, serving=ep.serving,
                                             terminating=ep.terminating, zone=ep.zone,
                                             app_protocol=protocol))
        return result

    def status(self) -> dict:
        extra = {"exported": len(self._exports),
                 "kinds": self.kinds.state() if self.kinds else {}} if self.exported_only else {}
        return {**super().status(), **extra, "services": len(self._services), "slices": len(self._slices),
                "events": self.events, "lists": self.lists, "last_event": self.last_event,
                "api": ("discovery.k8s.io/v1" if self.uses_endpointslices else
                        "v1/endpoints" if self.uses_endpointslices is False else None)}


def _export_lister(custom):
    """ServiceExports through CustomObjectsApi, shaped as the typed lists the loop reads
    (``.items``, ``.metadata._continue``, ``.resource_version``); a watch gets the raw dicts."""
    def list_exports(namespace=None, watch=False, **kwargs):
        """ServiceExports of one namespace or all.

        :return: object
        """
        # (The ":return:" line is what the client's Watch reads to decode events as dicts
        # and to follow their resourceVersion; without it the resume point would not move.)
        if namespace:
            result = custom.list_namespaced_custom_object(MCS_GROUP, MCS_VERSION, namespace, "serviceexports",
                                                          watch=watch, **kwargs)
        else:
            result = custom.list_cluster_custom_object(MCS_GROUP, MCS_VERSION, "serviceexports",
                                                       watch=watch, **kwargs)
        if watch or not isinstance(result, dict):
            return result
        meta = result.get("metadata") or {}
        return SimpleNamespace(items=result.get("items") or [], metadata=SimpleNamespace(
            _continue=meta.get("continue"), resource_version=meta.get("resourceVersion")))
    return list_exports


def api_client(config: SourceConfig):
    """The official client's ApiClient for a kubernetes source (kubeconfig or in-cluster)."""
    from kubernetes import client, config as kconfig
    configuration = client.Configuration()
    if config.in_cluster:
        kconfig.load_incluster_config(client_configuration=configuration)
    else:
        kconfig.load_kube_config(config_file=config.kubeconfig, context=config.context,
                                 client_configuration=configuration)
    # No urllib3 retries: they come at once, without backoff, and log a warning each
    # ("Retrying (Retry(total=2...))", three per request while the API is down). The
    # list+watch loop retries with backoff and jitter and warns once per outage.
    configuration.retries = 0
    return client.ApiClient(configuration)


def _describe(exc: Exception) -> str:
    """One line for the log.  str(ApiException) spans lines and carries the response headers,
    which on a real API server differ on every answer (Date, Audit-Id): _set_error, which logs
    only a changed error, then logged the same failure again on every retry."""
    from kubernetes.client.rest import ApiException
    if isinstance(exc, ApiException):
        return f"API error {exc.status}: {exc.reason}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _port_name(svc_ports: tuple[_ServicePort, ...], port: int | str) -> str | None:
    """The Service port's name for the configured port (number or name); None if unknown."""
    if isinstance(port, str):
        return port
    for p in svc_ports:
        if p.port == port:
            return p.name
    return None


def _app_protocol(svc_ports: tuple[_ServicePort, ...], name: str | None,
                  configured: int | str) -> str | None:
    """The Service port's appProtocol (for slices whose port has none)."""
    for p in svc_ports:
        if (p.name == name) if name is not None else p.port == configured:
            return p.app_protocol
    return None


def _target_port(ports: tuple[_Port, ...], name: str | None, configured: int | str) -> _Port | None:
    """The endpoints' port for the Service port: slices name their ports like the Service does."""
    if name is not None:
        for p in ports:
            if p.name == name:
                return p
        return None
    if isinstance(configured, int):
        if len(ports) == 1:
            return ports[0]
        for p in ports:
            if p.port == configured:
                return p
    return None
