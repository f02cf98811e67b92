"""A local cluster: one API server process plus backend pod processes on loopback addresses.

``LocalCluster`` plays both the cluster and its controllers: it starts the pods, then writes the
Service ``default/httpbin``, an EndpointSlice and the v1 Endpoints that describe them, through
the real ``kubernetes`` client against its own API server, the way a user (or the endpoint
controllers) would on a real cluster. Every change of pod state it is asked to make
(scale, readiness, termination, removal) is published the same way.

Pods and the API server are separate processes so that tests can SIGKILL, SIGSTOP or restart
them; ``close()`` stops every process the cluster started, by pid.
"""
from __future__ import annotations

import json
import os
import signal
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .apiserver import ApiServerProcess
from .backend import BackendProcess

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
LAYOUT_FILE = "cluster.json"


@dataclass
class PodState:
    """One pod as the endpoint objects describe it."""
    name: str
    ip: str
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    ready: bool = True
    terminating: bool = False


@dataclass
class ServiceLayout:
    """Everything needed to (re)write a Service and its endpoints; saved as ``cluster.json``."""
    cluster: str
    port: int
    pods: list[PodState]
    namespace: str = "default"
    service: str = "httpbin"
    slice_name: str | None = None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "ServiceLayout":
        data = json.loads(path.read_text())
        data["pods"] = [PodState(**pod) for pod in data["pods"]]
        return cls(**data)


# -- manifests --------------------------------------------------------------------------------


def service_manifest(layout: ServiceLayout) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": layout.service, "namespace": layout.namespace,
                         "labels": {"app": layout.service}},
            "spec": {"selector": {"app": layout.service},
                     "ports": [{"name": "http", "port": layout.port, "targetPort": layout.port,
                                "protocol": "TCP"}]}}


def _target_ref(layout: ServiceLayout, pod: PodState) -> dict:
    return {"kind": "Pod", "namespace": layout.namespace, "name": pod.name, "uid": pod.uid}


def endpoint_slice_manifest(layout: ServiceLayout, service_uid: str | None) -> dict:
    """What the EndpointSlice controller would write for these pods (one address per endpoint)."""
    metadata: dict = {"namespace": layout.namespace,
                      "labels": {SERVICE_NAME_LABEL: layout.service, MANAGED_BY_LABEL: MANAGED_BY}}
    if layout.slice_name:
        metadata["name"] = layout.slice_name
    else:
        metadata["generateName"] = layout.service + "-"
    if service_uid:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Service", "name": layout.service,
                                        "uid": service_uid, "controller": True,
                                        "blockOwnerDeletion": True}]
    endpoints = [{"addresses": [pod.ip],
                  "conditions": {"ready": pod.ready and not pod.terminating,
                                 "serving": pod.ready, "terminating": pod.terminating},
                  "nodeName": f"{layout.cluster}-node", "zone": f"zone-{layout.cluster}",
                  "targetRef": _target_ref(layout, pod)}
                 for pod in layout.pods]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": metadata,
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "http", "port": layout.port, "protocol": "TCP"}]}


def endpoints_manifest(layout: ServiceLayout) -> dict:
    """What the Endpoints controller would write: terminating pods are left out entirely."""
    def address(pod: PodState) -> dict:
        return {"ip": pod.ip, "nodeName": f"{layout.cluster}-node", "targetRef": _target_ref(layout, pod)}

    ready = [address(p) for p in layout.pods if p.ready and not p.terminating]
    not_ready = [address(p) for p in layout.pods if not p.ready and not p.terminating]
    subset: dict = {"ports": [{"name": "http", "port": layout.port, "protocol": "TCP"}]}
    if ready:
        subset["addresses"] = ready
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": layout.service, "namespace": layout.namespace,
                         "labels": {"app": layout.service}},
            "subsets": [subset] if ready or not_ready else []}


# -- writing them through the kubernetes client ------------------------------------------------


def api_client(kubeconfig: str | os.PathLike, context: str | None = None) -> client.ApiClient:
    """An ApiClient for one kubeconfig context (TLS verified, token auth), not the global default."""
    return config.new_client_from_config(config_file=str(kubeconfig), context=context)


def has_endpoint_slices(api: client.ApiClient) -> bool:
    groups = client.ApisApi(api).get_api_versions().groups or []
    return any(group.name == "discovery.k8s.io" for group in groups)


def _upsert(read, create, replace, namespace: str, body: dict, name: str | None) -> object:
    """Create ``body`` or replace the stored object with it (carrying its resourceVersion)."""
    if name is not None:
        try:
            current = read(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
        else:
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            return replace(name, namespace, body)
    return create(namespace, body)


def apply_service_objects(api: client.ApiClient, layout: ServiceLayout) -> ServiceLayout:
    """Write the Service, the EndpointSlice (if the API has them) and the Endpoints.

    Returns the layout with the EndpointSlice's name (generated on first creation)."""
    core = client.CoreV1Api(api)
    svc = _upsert(core.read_namespaced_service, core.create_namespaced_service,
                  core.replace_namespaced_service, layout.namespace, service_manifest(layout),
                  layout.service)
    if has_endpoint_slices(api):
        discovery = client.DiscoveryV1Api(api)
        if layout.slice_name is None:
            layout.slice_name = _existing_slice(discovery, layout)
        slice_ = _upsert(discovery.read_namespaced_endpoint_slice,
                         discovery.create_namespaced_endpoint_slice,
                         discovery.replace_namespaced_endpoint_slice, layout.namespace,
                         endpoint_slice_manifest(layout, svc.metadata.uid), layout.slice_name)
        layout.slice_name = slice_.metadata.name
    _upsert(core.read_namespaced_endpoints, core.create_namespaced_endpoints,
            core.replace_namespaced_endpoints, layout.namespace, endpoints_manifest(layout),
            layout.service)
    return layout


def _existing_slice(discovery: client.DiscoveryV1Api, layout: ServiceLayout) -> str | None:
    slices = discovery.list_namespaced_endpoint_slice(
        layout.namespace, label_selector=f"{SERVICE_NAME_LABEL}={layout.service}").items
    return slices[0].metadata.name if slices else None


def delete_service_objects(api: client.ApiClient, namespace: str = "default",
                           service: str = "httpbin") -> None:
    """Delete the Service, its EndpointSlices and its Endpoints; missing ones are fine."""
    core = client.CoreV1Api(api)
    _ignore_missing(core.delete_namespaced_service, service, namespace)
    if has_endpoint_slices(api):
        discovery = client.DiscoveryV1Api(api)
        for slice_ in discovery.list_namespaced_endpoint_slice(
                namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}").items:
            _ignore_missing(discovery.delete_namespaced_endpoint_slice, slice_.metadata.name, namespace)
    _ignore_missing(core.delete_namespaced_endpoints, service, namespace)


def _ignore_missing(delete, name: str, namespace: str) -> None:
    try:
        delete(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


# -- the cluster ------------------------------------------------------------------------------


class LocalCluster:
    """An API server and backend pods on loopback addresses, as one "cluster".

    ``port`` is the pods' port (the same on every pod IP, as for a Deployment); 0 picks one
    free port on the first IP and uses it everywhere. ``pod_ips`` is the pool of addresses:
    the cluster starts with one pod on each; ``scale()`` shrinks to a prefix of it and grows
    back along it (or onto new addresses given to it). ``endpoint_slices=False`` and
    ``absent_groups`` start its API server without those API groups (see ``apiserver``).

    Use as a context manager, or call ``start()`` and ``close()``.
    """

    def __init__(self, name: str, state_dir: str | os.PathLike, pod_ips: Sequence[str],
                 port: int = 8000, *, endpoint_slices: bool = True, api_port: int = 0,
                 bookmark_interval: float = 1.0, absent_groups: Sequence[str] = ()) -> None:
        if not pod_ips:
            raise ValueError("a LocalCluster needs at least one pod IP")
        self.name = name
        self.state_dir = Path(state_dir)
        self.api = ApiServerProcess(self.state_dir, name=name, port=api_port,
                                    endpoint_slices=endpoint_slices, absent_groups=absent_groups,
                                    bookmark_interval=bookmark_interval)
        self._pool = list(pod_ips)
        self.layout = ServiceLayout(name, port, [self._pod(i, ip) for i, ip in enumerate(pod_ips)])
        self._backends: dict[str, BackendProcess] = {}
        self._client: client.ApiClient | None = None

    def _pod(self, index: int, ip: str) -> PodState:
        return PodState(f"httpbin-{self.name}-{index}", ip)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "LocalCluster":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.api.start()
            self.start_backends()
            self._publish()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every process this cluster started."""
        self.stop_backends()
        self.api.stop()
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what a client needs -------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.api.kubeconfig

    @property
    def context(self) -> str:
        return self.api.context

    @property
    def api_url(self) -> str:
        return self.api.url

    @property
    def port(self) -> int:
        return self.layout.port

    @property
    def pods(self) -> list[PodState]:
        return list(self.layout.pods)

    @property
    def pod_ips(self) -> list[str]:
        return [pod.ip for pod in self.layout.pods]

    @property
    def backends(self) -> dict[str, BackendProcess]:
        """Running backend processes by pod IP."""
        return dict(self._backends)

    @property
    def api_client(self) -> client.ApiClient:
        if self._client is None:
            self._client = api_client(self.kubeconfig, self.context)
        return self._client

    def core_v1(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    def discovery_v1(self) -> client.DiscoveryV1Api:
        return client.DiscoveryV1Api(self.api_client)

    # -- the service ---------------------------------------------------------------------------

    def remove_service(self) -> None:
        """Delete the Service, its EndpointSlice and Endpoints, then stop the pods."""
        delete_service_objects(self.api_client, self.layout.namespace, self.layout.service)
        self.layout.slice_name = None
        self._save_layout()
        self.stop_backends()

    def restore_service(self) -> None:
        """Start the pods again and recreate the Service and its endpoints."""
        self.start_backends()
        self._publish()

    # -- pods ----------------------------------------------------------------------------------

    def start_backends(self) -> None:
        """Start a process for every pod that has none (API objects are not touched)."""
        for pod in self.layout.pods:
            backend = self._backends.get(pod.ip)
            if backend is None:
                self._start_backend(pod)
            elif not backend.running:
                backend.start()         # same address and port, a new process

    def _start_backend(self, pod: PodState) -> None:
        # Pods of one cluster share a port (a Service has one targetPort): with port 0 the
        # first pod picks it and the others follow.
        backend = BackendProcess(pod.ip, self.layout.port, self.name, pod.name).start()
        self.layout.port = backend.port
        self._backends[pod.ip] = backend

    def stop_backends(self) -> None:
        """Stop every pod process (SIGTERM, then SIGKILL); API objects are not touched."""
        for ip in list(self._backends):
            self._backends.pop(ip).stop()

    def kill_backends(self, sig: int = signal.SIGKILL, ips: Sequence[str] | None = None) -> None:
        """Send ``sig`` to the pods (all, or those at ``ips``), as a crash or a freeze would.

        The endpoint objects are not updated: the API still lists the pods, as it does
        until a real cluster notices. SIGSTOPped pods stay registered (``start_backends``
        does not replace them; send SIGCONT to thaw); dead ones are restarted by it.
        """
        for ip, backend in list(self._backends.items()):
            if ips is None or ip in ips:
                backend.send_signal(sig)

    def scale(self, replicas: int, ips: Sequence[str] | None = None) -> None:
        """Run ``replicas`` pods: shrink to the first ones, or grow along the pool of addresses
        (extended by ``ips`` first), then publish the new endpoints."""
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        for ip in ips or ():
            if ip not in self._pool:
                self._pool.append(ip)
        if replicas > len(self._pool):
            raise ValueError(f"scale({replicas}): only {len(self._pool)} pod IPs known; pass ips=[...]")
        current = {pod.ip: pod for pod in self.layout.pods}
        wanted = self._pool[:replicas]
        self.layout.pods = [current.get(ip) or self._pod(self._pool.index(ip), ip) for ip in wanted]
        self.start_backends()
        self._publish()
        # Removed pods stop only once the endpoints no longer list them, as on a real cluster.
        for ip in current:
            if ip not in wanted and ip in self._backends:
                self._backends.pop(ip).stop()

    def set_ready(self, ip: str, ready: bool) -> None:
        """Flip a pod's readiness in the EndpointSlice (and ready/notReady in Endpoints)."""
        self._find(ip).ready = ready
        self._publish()

    def set_terminating(self, ip: str) -> None:
        """Mark a pod terminating: not ready, still serving, left out of v1 Endpoints."""
        self._find(ip).terminating = True
        self._publish()

    def _find(self, ip: str) -> PodState:
        for pod in self.layout.pods:
            if pod.ip == ip:
                return pod
        raise KeyError(f"no pod at {ip} in cluster {self.name}")

    # -- the API server ------------------------------------------------------------------------

    def stop_api(self) -> None:
        """Stop the API server process; data and port are kept for ``start_api``."""
        self.api.stop()

    def start_api(self) -> None:
        self.api.start()

    def _publish(self) -> None:
        apply_service_objects(self.api_client, self.layout)
        self._save_layout()

    def _save_layout(self) -> None:
        self.layout.save(self.state_dir / LAYOUT_FILE)
