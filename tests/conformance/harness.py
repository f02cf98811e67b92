"""The harness that replays the Gateway API conformance suite against this gateway.

The suite is kubernetes-sigs/gateway-api ``conformance/`` (Apache-2.0, Copyright The Kubernetes
Authors) at ``UPSTREAM_COMMIT``: its manifests are copied into ``manifests/`` as they are, and
each Go test is re-expressed in ``test_conformance_*.py`` with the same objects, requests,
expected answers and status conditions. What the upstream suite gets from a real cluster, the
harness plays on one machine:

* the cluster: the local Kubernetes API server (``gateway.devcluster.apiserver``), driven with the
  official ``kubernetes`` client. It serves Namespaces, Services, Secrets, ConfigMaps,
  EndpointSlices and the Gateway API kinds; ReferenceGrants only at v1beta1 (the manifests say
  v1; the object is the same, so it is written at the version the server has).
* the pods: each echo-basic Deployment becomes ``replicas`` backend processes in echo-basic mode
  (``gateway.devcluster.echo_basic``), each on its own loopback address with echo-basic's ports
  (HTTP on 3000, h2c on 3001 where a Service port targets it), named like Deployment pods
  ("<deployment>-<template hash>-<n>", which the suite's weight test takes apart). Those in
  gRPC mode (GRPC_ECHO_SERVER) run the devcluster's gRPC backend instead, whose GrpcEcho answers
  as echo-basic's does, on 3000 (h2c). TLS backends (TLS_SERVER_CERT) also serve HTTPS (the gRPC
  ones gRPC over TLS) on 8443 with their mounted Secret (and TLS_CLIENT_CACERTS, from a ConfigMap
  volume), after the suite's programmatic Secrets exist. Those in TCP mode (TCP_ECHO_SERVER, the
  TLSRoute tests' tcp-backend) run ``gateway.devcluster.tcp_echo``: plain TCP on TCP_PORT (3000)
  and, with TLS_SERVER_CERT and TLS_SERVER_PRIV_KEY, TLS on TLS_PORT (8443), one process each.
  Deployments of other images or modes (UDP, coredns) serve out-of-scope tests and are not
  played.
* the controllers: the EndpointSlice controller (a slice per Service with a selector, listing the
  played pods it selects), and ``kubectl logs`` for the mirror tests (each pod's echo log file).
* the gateway: ``python -m gateway run`` with ``gateway_config()``, one per session, waited for
  until it logs "listening" (a Gateway API change that arrives while it starts is otherwise
  applied only with the next change: gateway/app.py, ``_routes_changed`` before ``_started``).

Two functions stand between the suite and the gateway's addressing and will change with it:
``Suite.gateway_config()`` (the config file) and ``Suite.gateway_address()`` (where a Gateway's
listener is reached). Every process started here is stopped by its pid.
"""
from __future__ import annotations

import base64
import concurrent.futures
import copy
import hashlib
import random
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from support import GatewayProcess
from gateway.config import DEFAULT_CONTROLLER_NAME
from gateway.devcluster.apiserver import ApiServerProcess
from gateway.devcluster.echo_basic import EchoBasicProcess
from gateway.devcluster.grpc_backend import GrpcBackendProcess
from gateway.devcluster.h2_backend import H2BackendProcess
from gateway.devcluster.tcp_echo import TcpEchoProcess
import status
from roundtrip import TIMEOUTS, Timeouts
from status import NN

UPSTREAM = "kubernetes-sigs/gateway-api"
UPSTREAM_COMMIT = "4564255ac2c35d582249b3cdf261bdf51c8bca32"
MANIFESTS = Path(__file__).resolve().parent / "manifests"

INFRA_NS = "gateway-conformance-infra"
APP_BACKEND_NS = "gateway-conformance-app-backend"
WEB_BACKEND_NS = "gateway-conformance-web-backend"
INFRA_BACKEND_V1 = "infra-backend-v1"
INFRA_BACKEND_V2 = "infra-backend-v2"
INFRA_BACKEND_V3 = "infra-backend-v3"
GATEWAY_CLASS_NAME = "gateway-conformance"
CONTROLLER_NAME = DEFAULT_CONTROLLER_NAME
GROUP = "gateway.networking.k8s.io"
ECHO_IMAGE = "gateway-api/conformance/echo-basic"
ECHO_HTTP_PORT, ECHO_H2C_PORT, ECHO_HTTPS_PORT = 3000, 3001, 8443
H2C = "kubernetes.io/h2c"



# -- objects in the API server ---------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    group: str
    version: str                # the version this API server serves
    plural: str
    namespaced: bool


KINDS = {
    "Namespace": Kind("", "v1", "namespaces", False),
    "Service": Kind("", "v1", "services", True),
    "Secret": Kind("", "v1", "secrets", True),
    "ConfigMap": Kind("", "v1", "configmaps", True),
    "EndpointSlice": Kind("discovery.k8s.io", "v1", "endpointslices", True),
    "GatewayClass": Kind(GROUP, "v1", "gatewayclasses", False),
    "Gateway": Kind(GROUP, "v1", "gateways", True),
    "HTTPRoute": Kind(GROUP, "v1", "httproutes", True),
    "GRPCRoute": Kind(GROUP, "v1", "grpcroutes", True),
    "TLSRoute": Kind(GROUP, "v1", "tlsroutes", True),
    "ListenerSet": Kind(GROUP, "v1", "listenersets", True),
    "BackendTLSPolicy": Kind(GROUP, "v1", "backendtlspolicies", True),
    "ReferenceGrant": Kind(GROUP, "v1beta1", "referencegrants", True),
}


class Kube:
    """Get, list, create, replace, merge-patch and delete objects as dicts, by kind."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def _plain(self, obj) -> dict:
        return obj if isinstance(obj, dict) else self.api.sanitize_for_serialization(obj)

    def _typed(self, kind: str, verb: str):
        """The typed API method for a core/discovery kind: ``read_namespaced_service`` and the like."""
        singular = {"Namespace": "namespace", "Service": "service", "Secret": "secret",
                    "ConfigMap": "config_map", "EndpointSlice": "endpoint_slice"}[kind]
        api = self.discovery if kind == "EndpointSlice" else self.core
        scope = "" if kind == "Namespace" else "namespaced_"
        if verb == "list":
            return getattr(api, f"list_{scope}{singular}")
        return getattr(api, f"{verb}_{scope}{singular}")

    def get(self, kind: str, nn: NN) -> dict | None:
        k = KINDS[kind]
        try:
            if k.group in ("", "discovery.k8s.io"):
                args = (nn.name,) if not k.namespaced else (nn.name, nn.namespace)
                return self._plain(self._typed(kind, "read")(*args))
            if k.namespaced:
                return self.custom.get_namespaced_custom_object(k.group, k.version, nn.namespace, k.plural, nn.name)
            return self.custom.get_cluster_custom_object(k.group, k.version, k.plural, nn.name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        k = KINDS[kind]
        if k.group in ("", "discovery.k8s.io"):
            result = self._typed(kind, "list")(*((namespace,) if k.namespaced else ()))
            return [self._plain(o) for o in result.items]
        if k.namespaced:
            return self.custom.list_namespaced_custom_object(k.group, k.version, namespace, k.plural)["items"]
        return self.custom.list_cluster_custom_object(k.group, k.version, k.plural)["items"]

    def create(self, obj: dict) -> dict:
        kind, k, nn = self._about(obj)
        if k.group in ("", "discovery.k8s.io"):
            args = (obj,) if not k.namespaced else (nn.namespace, obj)
            return self._plain(self._typed(kind, "create")(*args))
        if k.namespaced:
            return self.custom.create_namespaced_custom_object(k.group, k.version, nn.namespace, k.plural, obj)
        return self.custom.create_cluster_custom_object(k.group, k.version, k.plural, obj)

    def replace(self, obj: dict) -> dict:
        kind, k, nn = self._about(obj)
        if k.group in ("", "discovery.k8s.io"):
            args = (nn.name, obj) if not k.namespaced else (nn.name, nn.namespace, obj)
            return self._plain(self._typed(kind, "replace")(*args))
        if k.namespaced:
            return self.custom.replace_namespaced_custom_object(k.group, k.version, nn.namespace, k.plural,
                                                                nn.name, obj)
        return self.custom.replace_cluster_custom_object(k.group, k.version, k.plural, nn.name, obj)

    def merge_patch(self, kind: str, nn: NN, patch: dict) -> dict:
        """client.MergeFrom: an RFC 7386 merge patch (lists are replaced whole)."""
        k = KINDS[kind]
        if k.group in ("", "discovery.k8s.io"):
            args = (nn.name, patch) if not k.namespaced else (nn.name, nn.namespace, patch)
            return self._plain(self._typed(kind, "patch")(*args))
        if k.namespaced:
            return self.custom.patch_namespaced_custom_object(k.group, k.version, nn.namespace, k.plural,
                                                              nn.name, patch)
        return self.custom.patch_cluster_custom_object(k.group, k.version, k.plural, nn.name, patch)

    def delete(self, kind: str, nn: NN) -> None:
        k = KINDS[kind]
        try:
            if k.group in ("", "discovery.k8s.io"):
                self._typed(kind, "delete")(*((nn.name,) if not k.namespaced else (nn.name, nn.namespace)))
            elif k.namespaced:
                self.custom.delete_namespaced_custom_object(k.group, k.version, nn.namespace, k.plural, nn.name)
            else:
                self.custom.delete_cluster_custom_object(k.group, k.version, k.plural, nn.name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    @staticmethod
    def _about(obj: dict) -> tuple[str, Kind, NN]:
        kind = obj["kind"]
        meta = obj["metadata"]
        return kind, KINDS[kind], NN(meta.get("namespace", ""), meta["name"])


# -- the pods and the EndpointSlice controller -------------------------------------------------


@dataclass
class Pod:
    namespace: str
    name: str
    labels: dict[str, str]
    ip: str
    log: Path
    processes: list = field(default_factory=list)       # BackendProcess, stopped by pid

    @property
    def ports(self) -> set[int]:
        return {p.port for p in self.processes}


@dataclass
class Deployment:
    namespace: str
    name: str
    selector: dict[str, str]
    pods: list[Pod]


def _selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def echo_mode(deployment: dict) -> str | None:
    """How an echo-basic Deployment is played: "http" in its plain HTTP mode, "https" with
    HTTPS on 8443 besides (TLS_SERVER_CERT), "grpc" as the gRPC echo (GRPC_ECHO_SERVER; its plain
    h2c port only), "tcp" as the TCP echo (TCP_ECHO_SERVER), None when not played (UDP)."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"] for c in containers for e in c.get("env") or ()}
    if not all(ECHO_IMAGE in c.get("image", "") for c in containers):
        return None
    if "GRPC_ECHO_SERVER" in env:
        return "grpc"
    if "UDP_ECHO_SERVER" in env:
        return None
    if "TCP_ECHO_SERVER" in env:
        return "tcp"
    return "https" if "TLS_SERVER_CERT" in env else "http"


def _serves_tls(deployment: dict) -> bool:
    return any(e["name"] == "TLS_SERVER_CERT" for c in deployment["spec"]["template"]["spec"]["containers"]
               for e in c.get("env") or ())


def _env(deployment: dict) -> dict[str, str]:
    """The (first) container's environment variables that have a value."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env") or () if "value" in e}


def playable(deployment: dict) -> bool:
    return echo_mode(deployment) is not None


class Cluster:
    """The played pods, their addresses, and the EndpointSlices of the Services selecting them."""

    def __init__(self, kube: Kube, workdir: Path) -> None:
        self.kube = kube
        self.workdir = workdir
        self.deployments: dict[NN, Deployment] = {}
        self.block = _free_block()          # the pods are 127.<block>.x.y
        self._next_ip = 0
        self._lock = threading.Lock()

    def _ip(self) -> str:
        with self._lock:
            self._next_ip += 1
            n = self._next_ip
        return f"127.{self.block}.{n // 250}.{n % 250 + 1}"

    def pods(self, namespace: str, selector: dict[str, str] | None = None) -> list[Pod]:
        return [p for d in self.deployments.values() if d.namespace == namespace for p in d.pods
                if selector is None or _selects(selector, p.labels)]

    def play(self, deployment: dict) -> None:
        """Start a Deployment's pods (in parallel), then write the slices of the Services selecting them."""
        meta, spec = deployment["metadata"], deployment["spec"]
        nn = NN(meta["namespace"], meta["name"])
        labels = spec["template"]["metadata"].get("labels") or {}
        template_hash = hashlib.sha256(str(nn).encode()).hexdigest()[:10]
        h2c = any(port.get("appProtocol") == H2C and port.get("targetPort") == ECHO_H2C_PORT
                  for svc in self.kube.list("Service", nn.namespace)
                  if _selects((svc.get("spec") or {}).get("selector"), labels)
                  for port in svc["spec"].get("ports") or ())
        pods = [Pod(nn.namespace, f"{nn.name}-{template_hash}-{i}", labels, self._ip(),
                    self.workdir / f"{nn.namespace}.{nn.name}-{i}.log")
                for i in range(spec.get("replicas", 1))]
        starts = []
        mode = echo_mode(deployment)
        grpc, tcp = mode == "grpc", mode == "tcp"
        env = _env(deployment)
        # The TCP echo serves TLS only when given both files (tcpserver's newTLSConfig).
        tcp_tls = tcp and {"TLS_SERVER_CERT", "TLS_SERVER_PRIV_KEY"} <= env.keys()
        tls = self._tls_files(deployment) if mode == "https" or (grpc and _serves_tls(deployment)) or tcp_tls \
            else None
        tcp_port, tls_port = env.get("TCP_PORT") or "3000", env.get("TLS_PORT") or "8443"
        for pod in pods:
            if tcp:
                reset = env.get("TCP_MODE") == "RESET"
                pod.processes.append(TcpEchoProcess(pod.ip, int(tcp_port), pod.namespace, pod.name,
                                                    tcp_port=tcp_port, tls_port=tls_port, reset=reset))
                if tls is not None:
                    pod.processes.append(TcpEchoProcess(pod.ip, int(tls_port), pod.namespace, pod.name, tls=tls,
                                                        tcp_port=tcp_port, tls_port=tls_port, reset=reset))
                starts += pod.processes
                continue
            if grpc:
                pod.processes.append(GrpcBackendProcess(pod.ip, ECHO_HTTP_PORT, "conformance", pod.name,
                                                        namespace=pod.namespace))
            else:
                pod.processes.append(EchoBasicProcess(pod.ip, ECHO_HTTP_PORT, pod.namespace, pod.name,
                                                      str(pod.log)))
            if tls is not None and grpc:
                pod.processes.append(GrpcBackendProcess(pod.ip, ECHO_HTTPS_PORT, "conformance", pod.name,
                                                        namespace=pod.namespace, tls=tls))
            elif tls is not None:
                pod.processes.append(EchoBasicProcess(pod.ip, ECHO_HTTPS_PORT, pod.namespace, pod.name,
                                                      str(pod.log), tls=tls))
            if h2c and not grpc:
                pod.processes.append(H2BackendProcess(pod.ip, ECHO_H2C_PORT, "conformance", pod.name,
                                                      namespace=pod.namespace))
            starts += pod.processes
        self.deployments[nn] = Deployment(nn.namespace, nn.name, spec["selector"]["matchLabels"], pods)
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(p.start, 30.0) for p in starts]:
                future.result()
        self.sync_namespace(nn.namespace)

    def _tls_files(self, deployment: dict) -> tuple[str, str, str | None]:
        """A TLS echo-basic's files, as its pod would mount them: TLS_SERVER_CERT and
        TLS_SERVER_PRIVKEY (and TLS_CLIENT_CACERTS) are paths into Secret (ConfigMap) volumes;
        each is written here from the key the volume's items map to that path."""
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e.get("value", "") for e in container.get("env") or ()}
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts") or ()}
        files: dict[str, Path] = {}
        ns = deployment["metadata"]["namespace"]
        for volume in pod.get("volumes") or ():
            if volume["name"] not in mounts:
                continue
            if "secret" in volume:
                source = volume["secret"]
                data = {k: base64.b64decode(v) for k, v in
                        ((self.kube.get("Secret", NN(ns, source["secretName"])) or {}).get("data") or {}).items()}
            elif "configMap" in volume:
                source = volume["configMap"]
                data = {k: v.encode() for k, v in
                        ((self.kube.get("ConfigMap", NN(ns, source["name"])) or {}).get("data") or {}).items()}
            else:
                continue
            for item in source.get("items") or ():
                path = f"{mounts[volume['name']].rstrip('/')}/{item['path']}"
                local = self.workdir / f"{deployment['metadata']['name']}{path.replace('/', '.')}"
                local.write_bytes(data.get(item["key"], b""))
                files[path] = local
        # The gRPC echo's manifests spell the key's variable TLS_SERVER_PRIV_KEY.
        key_variable = "TLS_SERVER_PRIVKEY" if "TLS_SERVER_PRIVKEY" in env else "TLS_SERVER_PRIV_KEY"
        cert, key = files[env["TLS_SERVER_CERT"]], files[env[key_variable]]
        client_ca = files.get(env.get("TLS_CLIENT_CACERTS", ""))
        return str(cert), str(key), str(client_ca) if client_ca else None

    def stop(self, nn: NN) -> None:
        deployment = self.deployments.pop(nn, None)
        if deployment is not None:
            for pod in deployment.pods:
                for process in pod.processes:
                    process.stop()
            self.sync_namespace(nn.namespace)

    def stop_all(self) -> None:
        for deployment in self.deployments.values():
            for pod in deployment.pods:
                for process in pod.processes:
                    process.stop()
        self.deployments.clear()

    def logs(self, namespace: str, app: str) -> list[str]:
        """DumpEchoLogs: the log lines of the pods labelled app=<app>. (Echo lines name their
        request's path, which the suite makes unique per check, so no time window is needed.)"""
        lines = []
        for pod in self.pods(namespace, {"app": app}):
            try:
                lines += pod.log.read_text().splitlines()
            except FileNotFoundError:
                pass
        return lines

    # the EndpointSlice controller

    def sync_namespace(self, namespace: str) -> None:
        for svc in self.kube.list("Service", namespace):
            self.sync_service(svc)

    def sync_service(self, svc: dict) -> None:
        selector = (svc.get("spec") or {}).get("selector")
        if not selector:
            return                                  # no selector: slices are the user's
        nn = NN(svc["metadata"]["namespace"], svc["metadata"]["name"])
        ports = []
        for port in svc["spec"].get("ports") or ():
            target = port.get("targetPort", port["port"])
            if isinstance(target, int):             # echo-basic names no container ports
                entry = {"name": port.get("name") or "", "port": target, "protocol": port.get("protocol", "TCP")}
                if port.get("appProtocol"):
                    entry["appProtocol"] = port["appProtocol"]
                ports.append(entry)
        endpoints = [{"addresses": [pod.ip], "conditions": {"ready": True, "serving": True, "terminating": False},
                      "targetRef": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace}}
                     for pod in self.pods(nn.namespace, selector)]
        name = f"{nn.name}-{hashlib.sha256(nn.name.encode()).hexdigest()[:5]}"
        slice_ = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                  "metadata": {"name": name, "namespace": nn.namespace,
                               "labels": {"kubernetes.io/service-name": nn.name,
                                          "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
                  "addressType": "IPv4", "endpoints": endpoints, "ports": ports}
        existing = self.kube.get("EndpointSlice", NN(nn.namespace, name))
        if existing is None:
            self.kube.create(slice_)
        elif (existing.get("endpoints") or []) != endpoints or existing.get("ports") != ports:
            slice_["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            self.kube.replace(slice_)

    def delete_slices_of(self, nn: NN) -> None:
        name = f"{nn.name}-{hashlib.sha256(nn.name.encode()).hexdigest()[:5]}"
        self.kube.delete("EndpointSlice", NN(nn.namespace, name))


def _free_block() -> int:
    """A second octet B such that nothing listens on echo-basic's ports in 127.B/16 (so that two
    runs on one machine, each with its own block, do not collide)."""
    candidates = list(range(100, 250))
    random.shuffle(candidates)
    for b in candidates:
        try:
            for port in (ECHO_HTTP_PORT, ECHO_H2C_PORT):
                with socket.socket() as s:
                    s.bind((f"127.{b}.0.2", port))
        except OSError:
            continue
        return b
    raise RuntimeError("no free 127.B/16 block for the pods")


# -- certificates (conformance/utils/kubernetes/certificate.go) --------------------------------


def self_signed_secret(workdir: Path, namespace: str, name: str, hosts: list[str]) -> dict:
    """MustCreateSelfSignedCertSecret: an RSA 2048 self-signed serverAuth certificate for
    ``hosts`` (DNS names; "*" included as the suite does), as a kubernetes.io/tls Secret."""
    key, cert = workdir / f"{namespace}.{name}.key", workdir / f"{namespace}.{name}.crt"
    sans = ",".join(f"DNS:{h}" for h in hosts)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
                    "-subj", "/O=Acme Co/CN=default", "-keyout", str(key), "-out", str(cert),
                    "-addext", f"subjectAltName={sans}",
                    "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
                    "-addext", "extendedKeyUsage=serverAuth",
                    "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, capture_output=True, timeout=60)
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"namespace": namespace, "name": name},
            "data": {"tls.crt": base64.b64encode(cert.read_bytes()).decode(),
                     "tls.key": base64.b64encode(key.read_bytes()).decode()}}


def ca_config_map(workdir: Path, namespace: str, name: str) -> dict:
    """MustCreateCACertConfigMap: an RSA 2048 CA (Go's template: the same subject for every CA
    the suite makes, CA:TRUE, digitalSignature and keyCertSign, clientAuth and serverAuth) as a
    ConfigMap's ``ca.crt``; its key stays in ``workdir`` for ``ca_signed_client_secret``."""
    key, cert = workdir / f"{namespace}.{name}.key", workdir / f"{namespace}.{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
                    "-subj", "/C=US/O=Kubernetes Gateway API/CN=gatewayapi", "-keyout", str(key), "-out", str(cert),
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
                    "-addext", "extendedKeyUsage=clientAuth,serverAuth"],
                   check=True, capture_output=True, timeout=60)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": namespace, "name": name},
            "data": {"ca.crt": cert.read_text()}}


def ca_signed_client_secret(workdir: Path, namespace: str, name: str, ca_name: str) -> dict:
    """MustCreateCASignedClientCertSecret: an RSA 2048 clientAuth certificate with no names,
    signed by the CA ``ca_config_map`` made as ``ca_name`` in the same namespace."""
    return _ca_signed_secret(workdir, namespace, name, ca_name, "clientAuth", [])


def ca_signed_server_secret(workdir: Path, namespace: str, name: str, ca_name: str, hosts: list[str],
                            ca_namespace: str | None = None) -> dict:
    """MustCreateCASignedCertSecret: an RSA 2048 serverAuth certificate for ``hosts`` (a DNS
    name, or a URI for one with "://"), signed by the CA made as ``ca_name`` (in ``ca_namespace``,
    by default the same)."""
    return _ca_signed_secret(workdir, namespace, name, ca_name, "serverAuth", hosts, ca_namespace)


def _ca_signed_secret(workdir: Path, namespace: str, name: str, ca_name: str, usage: str, hosts: list[str],
                      ca_namespace: str | None = None) -> dict:
    key, csr, cert = (workdir / f"{namespace}.{name}.{ext}" for ext in ("key", "csr", "crt"))
    ext = workdir / f"{namespace}.{name}.ext"
    sans = ",".join(f"URI:{h}" if "://" in h else f"DNS:{h}" for h in hosts)
    ext.write_text("basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n"
                   f"extendedKeyUsage = {usage}\n" + (f"subjectAltName = {sans}\n" if sans else ""))
    ca = workdir / f"{ca_namespace or namespace}.{ca_name}"
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/O=Acme Co/CN=default",
                    "-keyout", str(key), "-out", str(csr)], check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                    "-set_serial", str(random.getrandbits(127)), "-days", "365", "-extfile", str(ext),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"namespace": namespace, "name": name},
            "data": {"tls.crt": base64.b64encode(cert.read_bytes()).decode(),
                     "tls.key": base64.b64encode(key.read_bytes()).decode()}}


# -- the suite -----------------------------------------------------------------------------------


def load_manifest(name: str) -> list[dict]:
    with open(MANIFESTS / name) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


class Suite:
    """One API server, the played pods and one gateway for a whole session; each test applies
    its manifests with ``apply`` and they are deleted (and waited for) after it."""

    controller_name = CONTROLLER_NAME

    def __init__(self, workdir: Path, timeouts: Timeouts = TIMEOUTS) -> None:
        self.workdir = Path(workdir)
        self.timeouts = timeouts
        self.apiserver: ApiServerProcess | None = None
        self.api: client.ApiClient | None = None
        self.kube: Kube | None = None
        self.cluster: Cluster | None = None
        self.gateway: GatewayProcess | None = None
        self._cleanups: list[Callable[[], None]] = []
        self.errors: list[str] = []         # the running test's t.Errorf failures (conftest.py)

    # lifecycle

    def start(self) -> "Suite":
        self.apiserver = ApiServerProcess(self.workdir / "api", name="conformance", bookmark_interval=0.5,
                                          persist=False).start()
        self.api = config.new_client_from_config(config_file=str(self.apiserver.kubeconfig),
                                                 context=self.apiserver.context)
        self.kube = Kube(self.api)
        self.cluster = Cluster(self.kube, self.workdir)
        # The implementation's GatewayClass, which the suite expects to exist (--gateway-class).
        self.kube.create({"apiVersion": f"{GROUP}/v1", "kind": "GatewayClass",
                          "metadata": {"name": GATEWAY_CLASS_NAME}, "spec": {"controllerName": CONTROLLER_NAME}})
        # TLS echo-basic pods mount Secrets the programmatic setup below makes: started after it.
        tls_pods = []
        for obj in load_manifest("base-manifests.yaml"):
            if obj["kind"] == "Deployment" and playable(obj) and _serves_tls(obj):
                tls_pods.append(obj)
            else:
                self._apply_object(obj, cleanup=False)
        # The programmatic resources of the suite's setup that in-scope tests use.
        self.kube.create(self_signed_secret(self.workdir, WEB_BACKEND_NS, "certificate", ["*"]))
        self.kube.create(self_signed_secret(self.workdir, INFRA_NS, "tls-validity-checks-certificate",
                                            ["*", "*.org", "*.wildcard.org"]))
        self.kube.create(ca_config_map(self.workdir, WEB_BACKEND_NS, "web-backend-cm"))
        # The client certificates of the frontend validation tests, each pair under its own CA.
        for prefix in ("tls-validity-checks", "tls-validity-checks-per-port"):
            self.kube.create(ca_config_map(self.workdir, INFRA_NS, f"{prefix}-ca-certificate"))
            self.kube.create(ca_signed_client_secret(self.workdir, INFRA_NS, f"{prefix}-client-certificate",
                                                     f"{prefix}-ca-certificate"))
        # The TLS backends' (BackendTLSPolicy tests): a serving certificate under its own CA.
        self.kube.create(ca_config_map(self.workdir, INFRA_NS, "tls-checks-ca-certificate"))
        self.kube.create(ca_signed_server_secret(self.workdir, INFRA_NS, "tls-checks-certificate",
                                                 "tls-checks-ca-certificate",
                                                 ["abc.example.com", "spiffe://abc.example.com/test-identity",
                                                  "other.example.com"]))
        self.kube.create(ca_signed_client_secret(self.workdir, INFRA_NS, "tls-checks-client-certificate",
                                                 "tls-checks-ca-certificate"))
        for ns in (INFRA_NS, APP_BACKEND_NS):       # the TLSRoute tests' TLS backends (tcp-backend's)
            self.kube.create(ca_signed_server_secret(self.workdir, ns, "tls-passthrough-checks-certificate",
                                                     "tls-checks-ca-certificate", ["abc.example.com"], INFRA_NS))
        # The certificate of the TLSRoute tests' Terminate listeners.
        self.kube.create(ca_signed_server_secret(self.workdir, INFRA_NS, "tls-terminate-checks-certificate",
                                                 "tls-checks-ca-certificate", ["tls.example.com"]))
        self.kube.create(ca_config_map(self.workdir, INFRA_NS, "mismatch-ca-certificate"))
        for obj in tls_pods:
            self._apply_object(obj, cleanup=False)
        self.gateway = GatewayProcess(self.gateway_config(), self.workdir / "gateway").start(timeout=60)
        # Its workers take connections before the gateway has finished starting, and a Gateway
        # API change that arrives in between is applied only with the next one (gateway/app.py
        # start(): _routes_changed returns early until _started): wait for "listening", which is
        # logged once start() is done.
        status.poll(lambda: '"message":"listening"' in self.gateway.output(), 60, "the gateway to finish starting")
        status.gwc_must_have_accepted_condition(self, GATEWAY_CLASS_NAME, "True")
        status.namespaces_must_be_ready(self, [INFRA_NS, APP_BACKEND_NS, WEB_BACKEND_NS])
        return self

    def stop(self) -> None:
        """Stop the gateway, the pods and the API server (each by its pid), whatever the others do."""
        for part in (self.gateway, self.cluster, self.apiserver):
            if part is not None:
                try:
                    part.stop_all() if part is self.cluster else part.stop()
                except Exception:           # noqa: BLE001 - the next ones are stopped all the same
                    pass
        if self.api is not None:
            self.api.close()

    # the two functions the per-Gateway addresses work changes

    def gateway_config(self) -> dict:
        """The gateway's config file (GatewayProcess adds ``listen`` on a free port, the access
        log and ``admin: off``). Each Gateway gets an address of the pool ``gateway_api.addresses``
        and is served there on its listeners' ports: 30 addresses in this run's own
        127.<block>/16 (the pods' block), so that two runs on one machine do not meet. No
        ``tls:``: HTTPS listeners are served on their Gateway's address (and a ``tls:`` without
        certificates is refused)."""
        block = self.cluster.block
        return {"workers": 2,
                "sources": [{"name": "conformance", "type": "kubernetes",
                             "kubeconfig": str(self.apiserver.kubeconfig), "context": self.apiserver.context}],
                "gateway_api": {"addresses": [f"127.{block}.200.1-127.{block}.200.30"]}}

    def gateway_address(self, gw: NN, listener_name: str | None = None) -> str:
        """WaitForGatewayAddress: "host:port" where a Gateway's listener is reached.

        Waits for the Gateway's conditions to be at its generation, takes its first listener (or
        the one named), and answers ``status.addresses[0].value`` with that listener's port, as
        the suite does; with an address pool in ``gateway_config()`` it waits for the address.
        (Without a pool and without an address in status, a gateway that predates per-Gateway
        addresses, the file's ``listen``, or ``tls.listen`` for HTTPS, served every Gateway.)"""
        pool = (self.gateway.config.get("gateway_api") or {}).get("addresses")

        def ready():
            gateway = self.kube.get("Gateway", gw)
            if gateway is None or status.stale_conditions(gateway, (gateway.get("status") or {}).get("conditions")):
                return None
            listeners = gateway["spec"]["listeners"]
            listener = next((l for l in listeners if l["name"] == listener_name), listeners[0])
            addresses = (gateway.get("status") or {}).get("addresses") or []
            if addresses:
                return f"{addresses[0]['value']}:{listener['port']}"
            if pool:
                return None
            if listener.get("protocol") == "HTTPS":
                return self.gateway.config.get("tls", {}).get("listen")
            return f"{self.gateway.host}:{self.gateway.port}"
        return status.poll(ready, self.timeouts.condition, f"Gateway {gw} to have an address")

    def static_addresses(self) -> tuple[list[dict], list[dict]]:
        """GatewayStaticAddresses' usable and unusable addresses (the suite's
        --usable-network-addresses and --unusable-network-addresses, overlaid on its
        PLACEHOLDER_* addresses): the last address of the gateway's pool (127.0.10.30 while
        ``gateway_config()`` has none), and one it can never serve (TEST-NET-1, RFC 5737)."""
        pool = (self.gateway_config().get("gateway_api") or {}).get("addresses") or ["127.0.10.30"]
        return ([{"type": "IPAddress", "value": pool[-1].rpartition("-")[2]}],
                [{"type": "IPAddress", "value": "192.0.2.1"}])

    # manifests

    def apply(self, name: str) -> None:
        """MustApplyWithCleanup: create (or update) every object of ``manifests/<name>``; deleted,
        last first, after the test (``cleanup``)."""
        for obj in load_manifest(name):
            self._apply_object(obj, cleanup=True)

    def apply_objects(self, objects: list[dict]) -> None:
        """MustApplyObjectsWithCleanup: as ``apply``, for objects the test made."""
        for obj in objects:
            self._apply_object(obj, cleanup=True)

    def _apply_object(self, obj: dict, cleanup: bool) -> None:
        kind = obj["kind"]
        meta = obj["metadata"]
        nn = NN(meta.get("namespace", ""), meta["name"])
        if kind == "Deployment":
            if playable(obj):
                self.cluster.play(obj)
                if cleanup:
                    self._cleanups.append(lambda: self.cluster.stop(nn))
            return
        obj = prepare(obj, *self.static_addresses())
        existing = self.kube.get(kind, nn)
        if existing is None:
            self.kube.create(obj)
        else:
            obj["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            self.kube.replace(obj)
        if kind == "Service":
            self.cluster.sync_service(obj)
        if cleanup:
            self._cleanups.append(lambda: self.delete_and_wait(kind, nn))

    def delete_and_wait(self, kind: str, nn: NN) -> None:
        """deleteAndWait: delete, then poll until the API answers NotFound."""
        self.kube.delete(kind, nn)
        status.poll(lambda: self.kube.get(kind, nn) is None or None, self.timeouts.delete,
                    f"{kind} {nn} to be deleted")
        if kind == "Service":
            self.cluster.delete_slices_of(nn)

    def cleanup(self) -> None:
        """The test's t.Cleanup functions, last registered first; all run, the first error raised."""
        errors = []
        while self._cleanups:
            try:
                self._cleanups.pop()()
            except Exception as exc:        # noqa: BLE001 - reported below, after the others ran
                errors.append(exc)
        if errors:
            raise errors[0]

    # failures that do not stop the test

    def errorf(self, message: str) -> None:
        """t.Errorf: the test is marked failed and goes on; it fails with every such message
        once it has run to its end (conftest.py)."""
        self.errors.append(message)

    # what tests read

    def tls_secret(self, nn: NN) -> tuple[bytes, bytes]:
        """GetTLSSecret: the Secret's tls.crt and tls.key (PEM)."""
        secret = self.kube.get("Secret", nn)
        data = secret.get("data") or {}
        return base64.b64decode(data.get("tls.crt", "")), base64.b64decode(data.get("tls.key", ""))


def prepare(obj: dict, usable: list[dict], unusable: list[dict]) -> dict:
    """The Applier's preparation: our GatewayClass name on Gateways, our controller on
    GatewayClasses, the static address pools over the PLACEHOLDER_* addresses, and the version
    this API server serves."""
    obj = copy.deepcopy(obj)
    kind = obj["kind"]
    if kind == "Gateway":
        obj["spec"]["gatewayClassName"] = GATEWAY_CLASS_NAME
        addresses = obj["spec"].get("addresses")
        if addresses:
            overlay = [a for a in addresses if a.get("type") == "test/fake-invalid-type"]
            values = {a.get("value") for a in addresses}
            if "PLACEHOLDER_UNUSABLE_ADDRS" in values:
                overlay += unusable
            if "PLACEHOLDER_USABLE_ADDRS" in values:
                overlay += usable
            # The overlay replaces the list: other entries are dropped, and an empty overlay is
            # a null list, which the real API server prunes (the field is not nullable).
            if overlay:
                obj["spec"]["addresses"] = overlay
            else:
                del obj["spec"]["addresses"]
    elif kind == "GatewayClass":
        obj["spec"]["controllerName"] = CONTROLLER_NAME
    k = KINDS[kind]
    obj["apiVersion"] = f"{k.group}/{k.version}" if k.group else k.version
    return obj
