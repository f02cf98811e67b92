"""The resources the local API server serves: their discovery data, defaults and validation.

Defaults follow what a real API server fills in so that clients see the same shapes: Service
``type``/``clusterIP``/``sessionAffinity``/``ports[].protocol``/``targetPort``, EndpointSlice and
Endpoints port protocols, the namespace's ``kubernetes.io/metadata.name`` label. Validation
covers what a client is likely to get wrong (names, ports, address types, IP syntax,
immutable fields), not every rule of the real server.

Unlike a real server, loopback addresses (127.0.0.0/8) are accepted in Endpoints and
EndpointSlices: the local cluster's pods live there.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Collection

_ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_NAMESPACE_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")
_BASIC_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True)
class Resource:
    name: str                      # plural, as in URLs: "endpointslices"
    singular: str
    kind: str
    group: str                     # "" is the core group
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = _ALL_VERBS
    fields: frozenset[str] = _BASIC_FIELDS        # what fieldSelector may use
    create_on_update: bool = False                # PUT of a missing object creates it
    return_deleted_object: bool = False           # DELETE answers the object, not a Status
    # A custom resource with ``subresources: {status: {}}``: writes to the object leave
    # ``status`` alone, writes to ``/status`` change only ``status``, and ``metadata.generation``
    # counts changes to everything but metadata and status (what ``observedGeneration`` refers to).
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def discovery_entry(self) -> dict:
        entry = {"name": self.name, "singularName": self.singular, "namespaced": self.namespaced,
                 "kind": self.kind, "verbs": list(self.verbs)}
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        return entry

    def discovery_entries(self) -> list[dict]:
        """The resource and, as a real server lists it, its ``<name>/status`` subresource."""
        entries = [self.discovery_entry()]
        if self.status_subresource:
            entries.append({"name": f"{self.name}/status", "singularName": "", "namespaced": self.namespaced,
                            "kind": self.kind, "verbs": ["get", "patch", "update"]})
        return entries


NAMESPACES = Resource("namespaces", "namespace", "Namespace", "", "v1", False, ("ns",),
                      verbs=_NAMESPACE_VERBS, fields=_BASIC_FIELDS | {"status.phase"})
SERVICES = Resource("services", "service", "Service", "", "v1", True, ("svc",),
                    fields=_BASIC_FIELDS | {"spec.clusterIP", "spec.type"},
                    return_deleted_object=True)
ENDPOINTS = Resource("endpoints", "endpoints", "Endpoints", "", "v1", True, ("ep",),
                     create_on_update=True)
SECRETS = Resource("secrets", "secret", "Secret", "", "v1", True, fields=_BASIC_FIELDS | {"type"})
CONFIG_MAPS = Resource("configmaps", "configmap", "ConfigMap", "", "v1", True, ("cm",))
ENDPOINT_SLICES = Resource("endpointslices", "endpointslice", "EndpointSlice", "discovery.k8s.io",
                           "v1", True, fields=_BASIC_FIELDS | {"addressType"})
COORDINATION_GROUP = "coordination.k8s.io"
LEASES = Resource("leases", "lease", "Lease", COORDINATION_GROUP, "v1", True)

GATEWAY_GROUP = "gateway.networking.k8s.io"
MCS_GROUP = "multicluster.x-k8s.io"
GATEWAY_CLASSES = Resource("gatewayclasses", "gatewayclass", "GatewayClass", GATEWAY_GROUP, "v1", False,
                           ("gc",), status_subresource=True)
GATEWAYS = Resource("gateways", "gateway", "Gateway", GATEWAY_GROUP, "v1", True, ("gtw",),
                    status_subresource=True)
HTTP_ROUTES = Resource("httproutes", "httproute", "HTTPRoute", GATEWAY_GROUP, "v1", True,
                       status_subresource=True)
GRPC_ROUTES = Resource("grpcroutes", "grpcroute", "GRPCRoute", GATEWAY_GROUP, "v1", True,
                       status_subresource=True)
TLS_ROUTES = Resource("tlsroutes", "tlsroute", "TLSRoute", GATEWAY_GROUP, "v1", True, status_subresource=True)
LISTENER_SETS = Resource("listenersets", "listenerset", "ListenerSet", GATEWAY_GROUP, "v1", True, ("lset",),
                         status_subresource=True)
BACKEND_TLS_POLICIES = Resource("backendtlspolicies", "backendtlspolicy", "BackendTLSPolicy", GATEWAY_GROUP, "v1",
                                True, ("btlspolicy",), status_subresource=True)
# ReferenceGrant is v1beta1 in the standard channel (v1.0 to v1.2 of the Gateway API CRDs).
REFERENCE_GRANTS = Resource("referencegrants", "referencegrant", "ReferenceGrant", GATEWAY_GROUP,
                            "v1beta1", True, ("refgrant",))
SERVICE_EXPORTS = Resource("serviceexports", "serviceexport", "ServiceExport", MCS_GROUP, "v1alpha1",
                           True, ("svcex",), status_subresource=True)
SERVICE_IMPORTS = Resource("serviceimports", "serviceimport", "ServiceImport", MCS_GROUP, "v1alpha1",
                           True, ("svcim",), status_subresource=True)

# This project's policy CRDs (deploy/gatewayapi/policy-crds.yaml).
POLICY_GROUP = "policy.gateway.example"
SECURITY_POLICIES = Resource("securitypolicies", "securitypolicy", "SecurityPolicy", POLICY_GROUP, "v1alpha1",
                             True, ("secpol",), status_subresource=True)
RATE_LIMIT_POLICIES = Resource("ratelimitpolicies", "ratelimitpolicy", "RateLimitPolicy", POLICY_GROUP,
                               "v1alpha1", True, ("rlpol",), status_subresource=True)

CORE = (NAMESPACES, SERVICES, ENDPOINTS, SECRETS, CONFIG_MAPS)
DISCOVERY_GROUP = "discovery.k8s.io"
# group/version -> the resources served there; the CRD groups as the Gateway API and MCS
# installs define them (one version each).
GROUP_VERSIONS: dict[str, tuple[Resource, ...]] = {
    f"{GATEWAY_GROUP}/v1": (GATEWAY_CLASSES, GATEWAYS, HTTP_ROUTES, GRPC_ROUTES, TLS_ROUTES, LISTENER_SETS,
                            BACKEND_TLS_POLICIES),
    f"{GATEWAY_GROUP}/v1beta1": (REFERENCE_GRANTS,),
    f"{MCS_GROUP}/v1alpha1": (SERVICE_EXPORTS, SERVICE_IMPORTS),
    f"{POLICY_GROUP}/v1alpha1": (SECURITY_POLICIES, RATE_LIMIT_POLICIES),
}
CUSTOM = tuple(r for table in GROUP_VERSIONS.values() for r in table)
ALL = CORE + (ENDPOINT_SLICES, LEASES) + CUSTOM
BY_NAME = {r.name: r for r in ALL}
NAMESPACED = tuple(r for r in ALL if r.namespaced and r is not NAMESPACES)


# -- discovery documents ----------------------------------------------------------------------


def api_versions(server_address: str) -> dict:
    """GET /api"""
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def resource_list(group_version: str, resources: tuple[Resource, ...]) -> dict:
    """GET /api/v1, /apis/<group>/<version>"""
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": [entry for r in resources for entry in r.discovery_entries()]}


def api_group(name: str, *versions: str) -> dict:
    gvs = [{"groupVersion": f"{name}/{version}", "version": version} for version in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": gvs,
            "preferredVersion": gvs[0]}


def group_resources(group: str) -> tuple[Resource, ...]:
    """The resources of an API group (empty for an unknown one)."""
    if group == DISCOVERY_GROUP:
        return (ENDPOINT_SLICES,)
    return tuple(r for r in CUSTOM if r.group == group)


def custom_groups() -> dict[str, list[str]]:
    """group -> its served versions, the preferred (first declared) first."""
    groups: dict[str, list[str]] = {}
    for group_version in GROUP_VERSIONS:
        group, version = group_version.split("/")
        groups.setdefault(group, []).append(version)
    return groups


def api_group_list(absent_groups: Collection[str] = ()) -> dict:
    """GET /apis: the built-in groups (in a real server's order), then the custom ones; none of
    ``absent_groups`` (not installed)."""
    groups = [api_group(COORDINATION_GROUP, "v1")]
    if DISCOVERY_GROUP not in absent_groups:
        groups.append(api_group(DISCOVERY_GROUP, "v1"))
    groups += [api_group(name, *versions) for name, versions in custom_groups().items()
               if name not in absent_groups]
    for group in groups:
        del group["kind"], group["apiVersion"]      # list members carry no type meta
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def version_info() -> dict:
    return {"major": "1", "minor": "31", "gitVersion": "v1.31.0-devcluster", "gitCommit": "",
            "gitTreeState": "clean", "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5",
            "compiler": "gc", "platform": "linux/amd64"}


# -- validation and defaults ------------------------------------------------------------------


class Invalid(ValueError):
    """422 Invalid; ``causes`` are (field, message) pairs."""

    def __init__(self, kind: str, name: str, causes: list[tuple[str, str]]) -> None:
        self.kind, self.name, self.causes = kind, name, causes
        detail = ", ".join(f"{field}: {message}" for field, message in causes)
        super().__init__(f'{kind} "{name}" is invalid: {detail}')


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PROTOCOLS = ("TCP", "UDP", "SCTP")


def _check_name(resource: Resource, name: str, causes: list) -> None:
    if resource is SERVICES:
        ok, limit, what = _DNS1035_LABEL.match(name), 63, "a DNS-1035 label"
    elif resource is NAMESPACES:
        ok, limit, what = _DNS1123_LABEL.match(name), 63, "a DNS-1123 label"
    else:
        ok, limit, what = _DNS1123_SUBDOMAIN.match(name), 253, "a DNS-1123 subdomain"
    if not ok or len(name) > limit:
        causes.append(("metadata.name", f"Invalid value: {name!r}: must be {what}"))


def _check_string_map(obj: dict, field: str, causes: list) -> None:
    value = obj.get("metadata", {}).get(field)
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        causes.append((f"metadata.{field}", "must be a map of strings"))


def _check_port(value: object, field: str, causes: list, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        causes.append((field, f"Invalid value: {value!r}: must be between 1 and 65535, inclusive"))


def _check_protocol(port: dict, field: str, causes: list) -> None:
    port.setdefault("protocol", "TCP")
    if port["protocol"] not in _PROTOCOLS:
        causes.append((f"{field}.protocol", f"Unsupported value: {port['protocol']!r}"))


def _check_ip(value: object, family: int | None, field: str, causes: list) -> None:
    try:
        ip = ipaddress.ip_address(value)
    except (TypeError, ValueError):
        causes.append((field, f"Invalid value: {value!r}: must be a valid IP address"))
        return
    if family is not None and ip.version != family:
        causes.append((field, f"Invalid value: {value!r}: must be an IPv{family} address"))
    # A real server also rejects loopback and link-local here; we accept them on purpose.


def _items(value: object, field: str, causes: list) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        causes.append((field, "must be a list"))
        return []
    return value


def _namespace(obj: dict, old: dict | None, causes: list) -> None:
    name = obj["metadata"]["name"]
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    spec = obj.setdefault("spec", {})
    spec.setdefault("finalizers", ["kubernetes"])
    obj["status"] = {"phase": "Active"}


def _service(obj: dict, old: dict | None, causes: list) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        causes.append(("spec", "must be an object"))
        return
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    ports = _items(spec.get("ports"), "spec.ports", causes)
    if not ports and spec["type"] != "ExternalName":
        causes.append(("spec.ports", "Required value"))
    for i, port in enumerate(ports):
        field = f"spec.ports[{i}]"
        if not isinstance(port, dict):
            causes.append((field, "must be an object"))
            continue
        _check_port(port.get("port"), f"{field}.port", causes)
        _check_protocol(port, field, causes)
        port.setdefault("targetPort", port.get("port"))
        if len(ports) > 1 and not port.get("name"):
            causes.append((f"{field}.name", "Required value"))
    if spec["type"] != "ExternalName":
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    old_ip = (old or {}).get("spec", {}).get("clusterIP")
    if old_ip is not None:
        if spec.get("clusterIP") in (None, ""):
            spec["clusterIP"] = old_ip
        elif spec["clusterIP"] != old_ip:
            causes.append(("spec.clusterIP", "Invalid value: field is immutable"))
    if spec.get("clusterIP") not in (None, "", "None"):
        _check_ip(spec["clusterIP"], None, "spec.clusterIP", causes)
    if spec.get("clusterIP") and "clusterIPs" not in spec:
        spec["clusterIPs"] = [spec["clusterIP"]]
    obj.setdefault("status", {"loadBalancer": {}})


def _endpoint_slice(obj: dict, old: dict | None, causes: list) -> None:
    address_type = obj.get("addressType")
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        causes.append(("addressType", f"Unsupported value: {address_type!r}: supported values: "
                                      '"FQDN", "IPv4", "IPv6"'))
    if old is not None and address_type != old.get("addressType"):
        causes.append(("addressType", "Invalid value: field is immutable"))
    family = {"IPv4": 4, "IPv6": 6}.get(address_type)
    endpoints = _items(obj.get("endpoints"), "endpoints", causes)
    for i, endpoint in enumerate(endpoints):
        field = f"endpoints[{i}]"
        addresses = _items(endpoint.get("addresses") if isinstance(endpoint, dict) else None,
                           f"{field}.addresses", causes)
        if not 1 <= len(addresses) <= 100:
            causes.append((f"{field}.addresses", "must contain at least 1 address"))
        if family is not None:
            for j, address in enumerate(addresses):
                _check_ip(address, family, f"{field}.addresses[{j}]", causes)
    ports = _items(obj.get("ports"), "ports", causes)
    for i, port in enumerate(ports):
        if not isinstance(port, dict):
            causes.append((f"ports[{i}]", "must be an object"))
            continue
        _check_port(port.get("port"), f"ports[{i}].port", causes, required=False)
        _check_protocol(port, f"ports[{i}]", causes)
    # A real server stores empty lists as nil and serves them as null (no omitempty on these
    # fields); clients must cope with "endpoints": null, so we serve it the same way.
    obj["endpoints"] = endpoints or None
    obj["ports"] = ports or None


def _endpoints(obj: dict, old: dict | None, causes: list) -> None:
    subsets = _items(obj.get("subsets"), "subsets", causes)
    for i, subset in enumerate(subsets):
        field = f"subsets[{i}]"
        if not isinstance(subset, dict):
            causes.append((field, "must be an object"))
            continue
        for key in ("addresses", "notReadyAddresses"):
            for j, address in enumerate(_items(subset.get(key), f"{field}.{key}", causes)):
                _check_ip((address or {}).get("ip"), None, f"{field}.{key}[{j}].ip", causes)
        for j, port in enumerate(_items(subset.get("ports"), f"{field}.ports", causes)):
            _check_port((port or {}).get("port"), f"{field}.ports[{j}].port", causes)
            if isinstance(port, dict):
                _check_protocol(port, f"{field}.ports[{j}]", causes)
    if subsets:
        obj["subsets"] = subsets
    else:
        obj.pop("subsets", None)   # omitempty on Endpoints.subsets


_TLS_SECRET_KEYS = ("tls.crt", "tls.key")


def _secret(obj: dict, old: dict | None, causes: list) -> None:
    """A real server checks the keys a typed Secret needs (kubernetes.io/tls: tls.crt, tls.key)
    and that data values are base64; ``stringData`` is merged into ``data`` and not stored."""
    import base64
    import binascii
    obj.setdefault("type", "Opaque")
    if old is not None and obj["type"] != old.get("type"):
        causes.append(("type", "Invalid value: field is immutable"))
    data = _object(obj.get("data"), "data", causes)
    for key, text in (_object(obj.pop("stringData", None), "stringData", causes)).items():
        data[key] = base64.b64encode(str(text).encode()).decode()
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError):
            causes.append((f"data[{key}]", "Invalid value: must be base64"))
    if obj["type"] == "kubernetes.io/tls":
        for key in _TLS_SECRET_KEYS:
            if key not in data:
                causes.append((f"data[{key}]", "Required value"))
    obj["data"] = data


_CONFIG_MAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def _config_map(obj: dict, old: dict | None, causes: list) -> None:
    """A real server checks that ``data`` maps valid keys to strings and ``binaryData`` to base64."""
    import base64
    import binascii
    data, binary = _object(obj.get("data"), "data", causes), _object(obj.get("binaryData"), "binaryData", causes)
    for field, values in (("data", data), ("binaryData", binary)):
        for key, value in values.items():
            if not _CONFIG_MAP_KEY.fullmatch(str(key)) or len(str(key)) > 253:
                causes.append((f"{field}[{key}]", "Invalid value: a valid config key must consist of alphanumeric "
                                                 "characters, '-', '_' or '.'"))
            elif not isinstance(value, str):
                causes.append((f"{field}[{key}]", "Invalid value: must be a string"))
            elif field == "binaryData":
                try:
                    base64.b64decode(value, validate=True)
                except binascii.Error:
                    causes.append((f"binaryData[{key}]", "Invalid value: must be base64"))
    for key in data.keys() & binary.keys():
        causes.append((f"data[{key}]", "Invalid value: duplicate of key present in binaryData"))


def _object(value: object, field: str, causes: list, required: bool = False) -> dict:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        causes.append((field, "Required value" if value is None else "must be an object"))
        return {}
    return value


def _spec(obj: dict, causes: list) -> dict:
    return _object(obj.get("spec"), "spec", causes, required=True)


def _enum(value: object, allowed: tuple[str, ...], field: str, causes: list) -> None:
    if value not in allowed:
        wanted = ", ".join(f'"{a}"' for a in allowed)
        causes.append((field, f"Unsupported value: {value!r}: supported values: {wanted}"))


# The CRDs' OpenAPI schemas check much more; these are the rules a gateway author is likely to
# break and the defaults the CRDs fill in (so a reader sees what a real cluster would store).


def _gateway_class(obj: dict, old: dict | None, causes: list) -> None:
    spec = _spec(obj, causes)
    if not spec.get("controllerName"):
        causes.append(("spec.controllerName", "Required value"))
    if old is not None and spec.get("controllerName") != old["spec"].get("controllerName"):
        causes.append(("spec.controllerName", "Invalid value: Value is immutable"))


# ProtocolType is not an enum: the CRD allows any name matching this pattern (1-255 characters),
# the implementation decides (listener Accepted=False, UnsupportedProtocol); Gateway API
# apis/v1/gateway_types.go.
_LISTENER_PROTOCOL = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
                                r"|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]+$")


def _gateway(obj: dict, old: dict | None, causes: list) -> None:
    spec = _spec(obj, causes)
    if not spec.get("gatewayClassName"):
        causes.append(("spec.gatewayClassName", "Required value"))
    listeners = _items(spec.get("listeners"), "spec.listeners", causes)
    if not listeners:
        causes.append(("spec.listeners", "Required value"))
    _listeners(listeners, causes)
    # allowedListeners: which ListenerSets may attach; the CRD defaults what is given (absent,
    # it stays absent, which means None).
    if spec.get("allowedListeners") is not None:
        allowed = _object(spec["allowedListeners"], "spec.allowedListeners", causes)
        namespaces = _object(allowed.setdefault("namespaces", {"from": "None"}), "spec.allowedListeners.namespaces",
                             causes)
        namespaces.setdefault("from", "None")
        _enum(namespaces.get("from"), ("All", "Selector", "Same", "None"), "spec.allowedListeners.namespaces.from",
              causes)
    _frontend_tls(_object(_object(spec.get("tls"), "spec.tls", causes).get("frontend"), "spec.tls.frontend", causes),
                  causes)


def _listeners(listeners: list, causes: list) -> None:
    """A Gateway's or a ListenerSet's listeners: unique names, a port, a protocol of the
    ProtocolType pattern, ``allowedRoutes`` defaulted to routes of the same namespace."""
    names = set()
    for i, listener in enumerate(listeners):
        field = f"spec.listeners[{i}]"
        listener = _object(listener, field, causes, required=True)
        if not listener.get("name") or listener["name"] in names:
            causes.append((f"{field}.name", "Required value: a unique name"))
        names.add(listener.get("name"))
        _check_port(listener.get("port"), f"{field}.port", causes)
        protocol = listener.get("protocol")
        if not isinstance(protocol, str) or not 1 <= len(protocol) <= 255 or not _LISTENER_PROTOCOL.search(protocol):
            causes.append((f"{field}.protocol", f"Invalid value: {protocol!r}: must match the ProtocolType pattern"))
        allowed = listener.setdefault("allowedRoutes", {"namespaces": {"from": "Same"}})
        namespaces = _object(allowed, f"{field}.allowedRoutes", causes).setdefault("namespaces", {"from": "Same"})
        namespaces.setdefault("from", "Same")
        _enum(namespaces["from"], ("All", "Same", "Selector"), f"{field}.allowedRoutes.namespaces.from", causes)


_LISTENER_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _listener_set(obj: dict, old: dict | None, causes: list) -> None:
    """The ListenerSet CRD's (v1) defaults and checks: a parentRef with a name (group and kind
    defaulted to a Gateway's); 1 to 64 listeners as a Gateway's (unique names, a port, a
    protocol, allowedRoutes defaulted to Same), each name an RFC 1123 subdomain, a hostname of the
    listener hostname pattern and none on TCP or UDP, route kinds' group defaulted; ``tls``
    (certificateRefs defaulted to core Secrets, mode to Terminate, which needs a certificateRef
    or options) never on HTTP, TCP or UDP, required on TLS, Terminate on HTTPS; port, protocol
    and hostname unique together."""
    spec = _spec(obj, causes)
    parent = _object(spec.get("parentRef"), "spec.parentRef", causes, required=True)
    if not parent.get("name"):
        causes.append(("spec.parentRef.name", "Required value"))
    parent.setdefault("group", GATEWAY_GROUP)
    parent.setdefault("kind", "Gateway")
    listeners = _items(spec.get("listeners"), "spec.listeners", causes)
    if not 1 <= len(listeners) <= 64:
        causes.append(("spec.listeners", "Invalid value: must have 1 to 64 items"))
    _listeners(listeners, causes)
    seen = set()
    for i, listener in enumerate(listeners):
        if not isinstance(listener, dict):
            continue
        field, protocol, hostname = f"spec.listeners[{i}]", listener.get("protocol"), listener.get("hostname")
        name = listener.get("name")
        if isinstance(name, str) and (len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name)):
            causes.append((f"{field}.name", f"Invalid value: {name!r}: must be an RFC 1123 subdomain"))
        if hostname is not None and (not isinstance(hostname, str) or not 1 <= len(hostname) <= 253
                                     or not _LISTENER_HOSTNAME.fullmatch(hostname)):
            causes.append((f"{field}.hostname", f"Invalid value: {hostname!r}: must match the Hostname pattern"))
        if protocol in ("TCP", "UDP") and hostname:
            causes.append(("spec.listeners", "Invalid value: hostname must not be specified for protocols "
                                             "['TCP', 'UDP']"))
        allowed = listener.get("allowedRoutes")
        kinds = _items(allowed.get("kinds") if isinstance(allowed, dict) else None,
                       f"{field}.allowedRoutes.kinds", causes)
        if len(kinds) > 8:
            causes.append((f"{field}.allowedRoutes.kinds", "Too many: must have at most 8 items"))
        for j, kind in enumerate(kinds):
            kind = _object(kind, f"{field}.allowedRoutes.kinds[{j}]", causes, required=True)
            if not kind.get("kind"):
                causes.append((f"{field}.allowedRoutes.kinds[{j}].kind", "Required value"))
            kind.setdefault("group", GATEWAY_GROUP)
        if "tls" in listener:
            tls = _object(listener["tls"], f"{field}.tls", causes, required=True)
            _listener_tls(tls, f"{field}.tls", causes)
            if protocol in ("HTTP", "TCP", "UDP"):
                causes.append(("spec.listeners", "Invalid value: tls must not be specified for protocols "
                                                 "['HTTP', 'TCP', 'UDP']"))
            if protocol == "HTTPS" and tls.get("mode") not in ("", "Terminate"):
                causes.append(("spec.listeners", "Invalid value: tls mode must be Terminate for protocol HTTPS"))
        elif protocol == "TLS":
            causes.append(("spec.listeners", "Invalid value: tls mode must be set for protocol TLS"))
        key = (listener.get("port"), protocol, hostname)
        if listener.get("port") is not None and key in seen:
            causes.append(("spec.listeners", "Invalid value: Combination of port, protocol and hostname must be "
                                             "unique for each listener"))
        seen.add(key)


def _listener_tls(tls: dict, field: str, causes: list) -> None:
    refs = _items(tls.get("certificateRefs"), f"{field}.certificateRefs", causes)
    if len(refs) > 64:
        causes.append((f"{field}.certificateRefs", "Too many: must have at most 64 items"))
    for j, ref in enumerate(refs):
        ref = _object(ref, f"{field}.certificateRefs[{j}]", causes, required=True)
        if not ref.get("name"):
            causes.append((f"{field}.certificateRefs[{j}].name", "Required value"))
        ref.setdefault("group", "")
        ref.setdefault("kind", "Secret")
    tls.setdefault("mode", "Terminate")
    _enum(tls["mode"], ("Terminate", "Passthrough"), f"{field}.mode", causes)
    if tls["mode"] == "Terminate" and not refs and not tls.get("options"):
        causes.append((field, "Invalid value: certificateRefs or options must be specified when mode is Terminate"))


def _frontend_tls(frontend: dict, causes: list) -> None:
    """The CRD's checks and defaults of ``spec.tls.frontend``: ``default`` required, ports of
    ``perPort`` unique, each validation with 1 to 16 caCertificateRefs and a mode (AllowValidOnly)."""
    if not frontend:
        return
    if "default" not in frontend:
        causes.append(("spec.tls.frontend.default", "Required value"))
    configs = [("spec.tls.frontend.default", frontend.get("default"))]
    ports = set()
    for i, entry in enumerate(_items(frontend.get("perPort"), "spec.tls.frontend.perPort", causes)):
        entry = _object(entry, f"spec.tls.frontend.perPort[{i}]", causes, required=True)
        _check_port(entry.get("port"), f"spec.tls.frontend.perPort[{i}].port", causes)
        if entry.get("port") in ports:
            causes.append(("spec.tls.frontend.perPort", "Invalid value: Port for TLS configuration must be "
                                                        "unique within the Gateway"))
        ports.add(entry.get("port"))
        configs.append((f"spec.tls.frontend.perPort[{i}].tls", entry.get("tls")))
    for field, config in configs:
        validation = _object(config, field, causes).get("validation")
        if validation is None:
            continue
        validation = _object(validation, f"{field}.validation", causes)
        refs = _items(validation.get("caCertificateRefs"), f"{field}.validation.caCertificateRefs", causes)
        if not 1 <= len(refs) <= 16:
            causes.append((f"{field}.validation.caCertificateRefs", "Invalid value: must have 1 to 16 items"))
        validation.setdefault("mode", "AllowValidOnly")
        _enum(validation["mode"], ("AllowValidOnly", "AllowInsecureFallback"), f"{field}.validation.mode", causes)


def _backend_tls_policy(obj: dict, old: dict | None, causes: list) -> None:
    """The CRD's checks: 1 to 16 targetRefs, a validation with a hostname and exactly one of
    caCertificateRefs (at most 8) and wellKnownCACertificates, subjectAltNames of their type."""
    spec = _spec(obj, causes)
    refs = _items(spec.get("targetRefs"), "spec.targetRefs", causes)
    if not 1 <= len(refs) <= 16:
        causes.append(("spec.targetRefs", "Invalid value: must have 1 to 16 items"))
    for i, ref in enumerate(refs):
        ref = _object(ref, f"spec.targetRefs[{i}]", causes, required=True)
        for key in ("kind", "name"):
            if not ref.get(key):
                causes.append((f"spec.targetRefs[{i}].{key}", "Required value"))
    validation = _object(spec.get("validation"), "spec.validation", causes, required=True)
    if not validation.get("hostname"):
        causes.append(("spec.validation.hostname", "Required value"))
    cas = _items(validation.get("caCertificateRefs"), "spec.validation.caCertificateRefs", causes)
    if len(cas) > 8:
        causes.append(("spec.validation.caCertificateRefs", "Too many: must have at most 8 items"))
    if bool(cas) == bool(validation.get("wellKnownCACertificates")):
        causes.append(("spec.validation", "Invalid value: must specify either CACertificateRefs or "
                                          "WellKnownCACertificates, not both"))
    for i, san in enumerate(_items(validation.get("subjectAltNames"), "spec.validation.subjectAltNames", causes)):
        san = _object(san, f"spec.validation.subjectAltNames[{i}]", causes, required=True)
        field = {"Hostname": "hostname", "URI": "uri"}.get(san.get("type"))
        if field is None:
            causes.append((f"spec.validation.subjectAltNames[{i}].type", 'Unsupported value: must be "Hostname" '
                                                                        'or "URI"'))
        elif not san.get(field) or any(san.get(k) for k in ("hostname", "uri") if k != field):
            causes.append((f"spec.validation.subjectAltNames[{i}]", f"Invalid value: SubjectAltName element must "
                                                                    f"contain only {field} when type is {san['type']}"))


_PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
_VALUE_TYPES = ("Exact", "RegularExpression")


def _http_route(obj: dict, old: dict | None, causes: list) -> None:
    spec = _spec(obj, causes)
    _parent_refs(spec, causes)
    rules = _items(spec.setdefault("rules", [{}]), "spec.rules", causes)
    for i, rule in enumerate(rules):
        rule = _object(rule, f"spec.rules[{i}]", causes, required=True)
        matches = _items(rule.setdefault("matches", [{}]), f"spec.rules[{i}].matches", causes)
        for j, match in enumerate(matches):
            _http_route_match(_object(match, f"spec.rules[{i}].matches[{j}]", causes, required=True),
                              f"spec.rules[{i}].matches[{j}]", causes)
        _backend_refs(rule, f"spec.rules[{i}]", causes)


def _parent_refs(spec: dict, causes: list) -> None:
    for i, ref in enumerate(_items(spec.get("parentRefs"), "spec.parentRefs", causes)):
        if not _object(ref, f"spec.parentRefs[{i}]", causes, required=True).get("name"):
            causes.append((f"spec.parentRefs[{i}].name", "Required value"))


def _backend_refs(rule: dict, field: str, causes: list) -> None:
    """A route rule's backendRefs: a name each; group, kind and weight defaulted."""
    for j, ref in enumerate(_items(rule.get("backendRefs"), f"{field}.backendRefs", causes)):
        ref = _object(ref, f"{field}.backendRefs[{j}]", causes, required=True)
        if not ref.get("name"):
            causes.append((f"{field}.backendRefs[{j}].name", "Required value"))
        ref.setdefault("group", "")
        ref.setdefault("kind", "Service")
        ref.setdefault("weight", 1)


def _http_route_match(match: dict, field: str, causes: list) -> None:
    path = match.setdefault("path", {"type": "PathPrefix", "value": "/"})
    path = _object(path, f"{field}.path", causes)
    path.setdefault("type", "PathPrefix")
    path.setdefault("value", "/")
    _enum(path.get("type"), _PATH_TYPES, f"{field}.path.type", causes)
    if path.get("type") != "RegularExpression" and not str(path.get("value", "")).startswith("/"):
        causes.append((f"{field}.path.value", 'Invalid value: must be an absolute path'))
    for key in ("headers", "queryParams"):
        for k, item in enumerate(_items(match.get(key), f"{field}.{key}", causes)):
            item = _object(item, f"{field}.{key}[{k}]", causes, required=True)
            item.setdefault("type", "Exact")
            _enum(item["type"], _VALUE_TYPES, f"{field}.{key}[{k}].type", causes)
            if not item.get("name"):
                causes.append((f"{field}.{key}[{k}].name", "Required value"))


def _grpc_route(obj: dict, old: dict | None, causes: list) -> None:
    """The GRPCRoute CRD's defaults and the rules a route author is likely to break: a method
    match names a service or a method (or both), types Exact or RegularExpression."""
    spec = _spec(obj, causes)
    _parent_refs(spec, causes)
    for i, rule in enumerate(_items(spec.get("rules"), "spec.rules", causes)):
        rule = _object(rule, f"spec.rules[{i}]", causes, required=True)
        for j, match in enumerate(_items(rule.get("matches"), f"spec.rules[{i}].matches", causes)):
            field = f"spec.rules[{i}].matches[{j}]"
            method = _object(_object(match, field, causes, required=True).get("method"), f"{field}.method", causes)
            if method:
                method.setdefault("type", "Exact")
                _enum(method["type"], _VALUE_TYPES, f"{field}.method.type", causes)
                if not method.get("service") and not method.get("method"):
                    causes.append((f"{field}.method", "Invalid value: one or both of 'service' or 'method' "
                                                      "must be specified"))
            for k, item in enumerate(_items(match.get("headers"), f"{field}.headers", causes)):
                item = _object(item, f"{field}.headers[{k}]", causes, required=True)
                item.setdefault("type", "Exact")
                _enum(item["type"], _VALUE_TYPES, f"{field}.headers[{k}].type", causes)
        _backend_refs(rule, f"spec.rules[{i}]", causes)


def _tls_route(obj: dict, old: dict | None, causes: list) -> None:
    """The TLSRoute CRD's (v1) defaults and checks: 1 to 1024 hostnames, each an RFC 1123 name
    or one with a leading ``*.`` label, never an IP address (SNI carries no IPs); exactly one
    rule, with 1 to 16 backendRefs (group, kind and weight defaulted; a Service's needs a port)."""
    spec = _spec(obj, causes)
    _parent_refs(spec, causes)
    hostnames = _items(spec.get("hostnames"), "spec.hostnames", causes)
    if not 1 <= len(hostnames) <= 1024:
        causes.append(("spec.hostnames", "Invalid value: must have 1 to 1024 items"))
    for i, hostname in enumerate(hostnames):
        name = hostname[2:] if isinstance(hostname, str) and hostname.startswith("*.") else hostname
        if not isinstance(name, str) or len(hostname) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
            causes.append((f"spec.hostnames[{i}]", f"Invalid value: {hostname!r}: Hostnames must be valid based on "
                                                   "RFC-1123 (a wildcard only as the whole first label)"))
            continue
        try:
            ipaddress.ip_address(hostname)
        except ValueError:
            continue
        causes.append((f"spec.hostnames[{i}]", f"Invalid value: {hostname!r}: Hostnames cannot contain an IP"))
    rules = _items(spec.get("rules"), "spec.rules", causes)
    if len(rules) != 1:
        causes.append(("spec.rules", "Invalid value: must have exactly 1 item"))
    for i, rule in enumerate(rules):
        rule = _object(rule, f"spec.rules[{i}]", causes, required=True)
        refs = _items(rule.get("backendRefs"), f"spec.rules[{i}].backendRefs", causes)
        if not 1 <= len(refs) <= 16:
            causes.append((f"spec.rules[{i}].backendRefs", "Invalid value: must have 1 to 16 items"))
        _backend_refs(rule, f"spec.rules[{i}]", causes)
        for j, ref in enumerate(refs):
            if isinstance(ref, dict) and ref.get("group") == "" and ref.get("kind") == "Service" \
                    and ref.get("port") is None:
                causes.append((f"spec.rules[{i}].backendRefs[{j}]", "Invalid value: Must have port for Service "
                                                                    "reference"))


def _reference_grant(obj: dict, old: dict | None, causes: list) -> None:
    spec = _spec(obj, causes)
    for key in ("from", "to"):
        if not _items(spec.get(key), f"spec.{key}", causes):
            causes.append((f"spec.{key}", "Required value"))


def _service_export(obj: dict, old: dict | None, causes: list) -> None:
    obj.setdefault("spec", {})


def _service_import(obj: dict, old: dict | None, causes: list) -> None:
    spec = _spec(obj, causes)
    _enum(spec.setdefault("type", "ClusterSetIP"), ("ClusterSetIP", "Headless"), "spec.type", causes)
    for i, port in enumerate(_items(spec.get("ports"), "spec.ports", causes)):
        port = _object(port, f"spec.ports[{i}]", causes, required=True)
        _check_port(port.get("port"), f"spec.ports[{i}].port", causes)
        _check_protocol(port, f"spec.ports[{i}]", causes)


def _policy(obj: dict, old: dict | None, causes: list) -> None:
    """What the policy CRDs' schemas (deploy/gatewayapi/policy-crds.yaml) require: 1 to 16
    targetRefs, each with a kind and a name. The rest of the spec is the gateway's to check
    (its status says what is wrong)."""
    spec = _spec(obj, causes)
    refs = _items(spec.get("targetRefs"), "spec.targetRefs", causes)
    if not 1 <= len(refs) <= 16:
        causes.append(("spec.targetRefs", f"Invalid value: {len(refs)}: must have 1 to 16 items"))
    for i, ref in enumerate(refs):
        ref = _object(ref, f"spec.targetRefs[{i}]", causes, required=True)
        for field in ("kind", "name"):
            if not isinstance(ref.get(field), str) or not ref[field]:
                causes.append((f"spec.targetRefs[{i}].{field}", "Required value"))


_MICROTIME_FIELDS = ("acquireTime", "renewTime")


def _lease(obj: dict, old: dict | None, causes: list) -> None:
    """The real server's checks on what leader election writes: leaseDurationSeconds positive,
    leaseTransitions not negative (not those on preferredHolder and strategy). The times are
    MicroTime: served in UTC with exactly six fractional digits (``2026-12-06T04:10:30.123456Z``)
    whatever offset or precision the client sent."""
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        causes.append(("spec", "must be an object"))
        return
    if spec.get("holderIdentity") is not None and not isinstance(spec["holderIdentity"], str):
        causes.append(("spec.holderIdentity", "must be a string"))
    for field, lowest in (("leaseDurationSeconds", 1), ("leaseTransitions", 0)):
        value = spec.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < lowest):
            relation = "greater than 0" if lowest else "greater than or equal to 0"
            causes.append((f"spec.{field}", f"Invalid value: {value!r}: must be {relation}"))
    for field in _MICROTIME_FIELDS:
        if spec.get(field) is not None:
            # A real server fails to decode a bad time (400); a 422 names the field instead.
            try:
                spec[field] = _microtime(spec[field])
            except (TypeError, ValueError):
                causes.append((f"spec.{field}", f"Invalid value: {spec[field]!r}: must be an RFC3339 time"))


def _microtime(text: str) -> str:
    when = datetime.fromisoformat(text)     # 3.11: "Z", any offset, up to nine fractional digits
    if when.tzinfo is None:
        raise ValueError("no time zone")
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_PREPARE = {"namespaces": _namespace, "services": _service, "secrets": _secret, "configmaps": _config_map,
            "endpointslices": _endpoint_slice, "endpoints": _endpoints, "leases": _lease,
            "gatewayclasses": _gateway_class, "gateways": _gateway, "httproutes": _http_route, "grpcroutes": _grpc_route,
            "tlsroutes": _tls_route, "listenersets": _listener_set, "backendtlspolicies": _backend_tls_policy,
            "referencegrants": _reference_grant, "serviceexports": _service_export,
            "serviceimports": _service_import, "securitypolicies": _policy, "ratelimitpolicies": _policy}


def prepare(resource: Resource, obj: dict, old: dict | None = None) -> dict:
    """Default and validate ``obj`` (modified in place, returned); raise Invalid.

    ``old`` is the stored object on update, for immutable fields.
    """
    causes: list[tuple[str, str]] = []
    meta = obj.get("metadata")
    name = meta.get("name", "") if isinstance(meta, dict) else ""
    if obj.get("kind") not in (None, resource.kind):
        causes.append(("kind", f"Invalid value: {obj['kind']!r}: must be {resource.kind}"))
    if obj.get("apiVersion") not in (None, resource.api_version):
        causes.append(("apiVersion", f"Invalid value: {obj['apiVersion']!r}: must be {resource.api_version}"))
    if not isinstance(meta, dict):
        causes.append(("metadata", "Required value"))
        raise Invalid(resource.kind, name, causes)
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    else:
        _check_name(resource, name, causes)
    _check_string_map(obj, "labels", causes)
    _check_string_map(obj, "annotations", causes)
    obj["kind"], obj["apiVersion"] = resource.kind, resource.api_version
    _PREPARE[resource.name](obj, old, causes)
    if causes:
        raise Invalid(resource.kind, name, causes)
    return obj
