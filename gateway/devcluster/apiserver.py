"""A local Kubernetes API server for the demo and the tests: HTTPS, bearer token, JSON.

It serves namespaces, services, endpoints, secrets and configmaps (v1), endpointslices
(discovery.k8s.io/v1), leases (coordination.k8s.io/v1, for leader election), the Gateway API
kinds (gateway.networking.k8s.io/v1 GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute,
ListenerSet, BackendTLSPolicy; v1beta1 ReferenceGrant) and the Multi-Cluster Services kinds
(multicluster.x-k8s.io/v1alpha1 ServiceExport, ServiceImport) with the real API conventions,
well enough for the official ``kubernetes`` Python client and
therefore for the gateway, which cannot tell it from a real server:

* discovery documents (``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>[/<version>]``:
  discovery.k8s.io, coordination.k8s.io and each custom group's);
  ``endpoint_slices=False`` starts it without the discovery.k8s.io group (404 on its paths),
  like a pre-1.21 cluster, to exercise the v1 Endpoints fallback; ``absent_groups`` (CLI:
  ``--absent-group``, repeatable) starts it without those groups likewise, e.g.
  ``("multicluster.x-k8s.io",)`` for a cluster without the MCS CRDs, or
  ``gateway.networking.k8s.io`` without the Gateway API's: absent from ``/apis``, 404 on their
  paths, as a real server answers before the CRDs are installed;
* get, list (namespaced and all-namespace, ``labelSelector``, ``fieldSelector``, ``limit`` +
  ``continue`` over a consistent snapshot, ``resourceVersion`` + ``resourceVersionMatch``),
  create (201, 409 AlreadyExists, ``generateName``), update (409 Conflict on a stale
  ``resourceVersion``; a no-op update writes nothing), patch (JSON merge, strategic merge
  treated as merge, JSON patch), delete (Service: the object; others: a Status),
  deletecollection; errors are ``Status`` objects with the real codes and reasons;
* watch (``?watch=true``): a chunked stream of ``{"type", "object"}`` lines. Without a
  resourceVersion (or with "0") it starts with synthetic ADDED events for the current objects;
  with one it replays the history after it, or sends one ``ERROR`` event (410 Expired) if that
  is compacted. ``allowWatchBookmarks`` gets a BOOKMARK every ``bookmark_interval`` seconds,
  ``sendInitialEvents`` the initial-events-end bookmark, ``timeoutSeconds`` a clean end. An
  object leaving a label selector's match is sent as DELETED, entering it as ADDED;
* one global resourceVersion counter; state (with the event history) persisted in the state
  directory, so a restart keeps objects and resourceVersions and watches can resume;
* test hooks outside ``/api``: ``GET /_devcluster/state`` (with ``lists``: the LIST
  requests served per resource since this process started, continue pages not counted;
  ``writes``: the create/update/patch/delete requests per ``resource[/subresource]``, no-ops
  and refused ones included), ``POST /_devcluster/expire-history``
  (every older resourceVersion now gets 410), ``POST /_devcluster/drop-watches[?graceful=true]``,
  ``POST /_devcluster/restricted-token?deny=services,endpointslices`` (a second bearer
  token, answered 403 Forbidden on those resources as RBAC would; in memory only),
  ``POST /_devcluster/pause?seconds=N`` (stop listening and cut every connection for N seconds;
  SIGUSR1 / SIGUSR2 pause and resume the process indefinitely),
  ``POST /_devcluster/install-group?group=G`` (an absent group is served from now on, as once its
  CRDs are installed: listed in ``/apis``, its paths answer) and
  ``POST /_devcluster/remove-group?group=G`` (as deleting its CRDs: its objects are deleted, with
  DELETED events, open watches on them end, and the group is absent).

Differences from a real API server, on purpose or by omission:

* loopback addresses (127.0.0.0/8) are accepted in Endpoints and EndpointSlices (a real server
  answers 422): the local pods live there;
* the custom kinds are built in, as if their CRDs were installed (unless their group is absent:
  installing or removing one is a hook, not a CRD object): ``metadata.generation``
  counts spec changes, ``/status`` subresources (Gateway API kinds, ServiceExport/Import)
  write only the status while object writes keep it; their schemas are checked only in
  part (required fields, enums, the CRDs' defaults such as a match's ``PathPrefix /``);
* only the resources above; no admission, no RBAC (one token
  with every right, and restricted tokens a test asks for), no managedFields, no server-side apply (415), no protobuf/CBOR (JSON
  only, YAML accepted on input), no aggregated discovery, no OpenAPI documents, no dry-run;
* strategic merge patch replaces lists instead of merging them by key;
* deleting a namespace removes its objects and itself at once (no Terminating phase);
* a list or watch with a resourceVersion newer than the current one answers 504 at once (a
  real server waits up to 3 s for it); slow watchers are never cut off;
* no controllers: Endpoints and EndpointSlices are written by whoever drives the cluster
  (``LocalCluster``), not derived from pods, except for the ``default/kubernetes`` Service,
  whose endpoints the server maintains itself as a real one does.

Run: ``python -m gateway.devcluster.apiserver --port 0 --state-dir DIR --name a`` prints
``READY https://127.0.0.1:PORT kubeconfig=DIR/kubeconfig.yaml context=zone-a pid=N`` and writes
``DIR/kubeconfig.yaml``.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import ipaddress
import os
import random
import signal
import ssl
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
import yaml

from . import _process, certs
from .patch import PatchError, json_patch, merge_patch
from .resources import (COORDINATION_GROUP, DISCOVERY_GROUP, ENDPOINT_SLICES, ENDPOINTS, GROUP_VERSIONS, LEASES,
                        NAMESPACED, NAMESPACES, SERVICES, Invalid, Resource, prepare)
from . import resources
from .selectors import SelectorError, both, parse_field_selector, parse_label_selector
from .store import ADDED, DELETED, MODIFIED, Event, Expired, Store, key_of, with_rv

MAX_BODY = 3 * 1024 * 1024          # the real server's limit on request bodies
DEFAULT_WATCH_TIMEOUT = 1800.0      # a real server picks 30-60 min when the client sets none
_PUBLIC_PATHS = frozenset({"/version", "/healthz", "/livez", "/readyz"})
_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"     # apimachinery's, no vowels: no words


# -- errors ---------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer: HTTP ``code`` with a ``Status`` body."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def _details(resource: Resource, name: str | None) -> dict:
    details = {"kind": resource.name}
    if name:
        details["name"] = name
    if resource.group:
        details["group"] = resource.group
    return details


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_qualified(resource)} "{name}" not found', _details(resource, name))


def _qualified(resource: Resource) -> str:
    return f"{resource.name}.{resource.group}" if resource.group else resource.name


def _method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource")


def _forbidden(target: "Target", request: "Request") -> ApiError:
    """RBAC's answer, in its words."""
    verb = {"GET": "list" if target.name is None else "get", "POST": "create", "PUT": "update",
            "PATCH": "patch", "DELETE": "delete"}.get(request.method, request.method.lower())
    scope = f'in the namespace "{target.namespace}"' if target.namespace else "at the cluster scope"
    resource = target.resource
    return ApiError(403, "Forbidden", f'{resource.name} is forbidden: User "restricted" cannot {verb} '
                                      f'resource "{resource.name}" in API group "{resource.group}" {scope}',
                    {"kind": resource.name, "group": resource.group})


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _gone(exc: Expired, message: str | None = None) -> ApiError:
    return ApiError(410, "Expired", message or str(exc))


def _invalid(exc: Invalid, resource: Resource) -> ApiError:
    details = _details(resource, exc.name)
    details["kind"] = resource.kind
    details["causes"] = [{"reason": "FieldValueInvalid", "message": message, "field": field}
                         for field, message in exc.causes]
    return ApiError(422, "Invalid", str(exc), details)


def parse_bool(value: str | None) -> bool:
    """Go's strconv.ParseBool, which the real server uses for query flags."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


# -- requests -------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]     # lower-case names
    body: bytes
    after: Callable[[], None] | None = None     # run once the answer is written

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One HTTP/1.1 request, or None on a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise ConnectionError("truncated request head") from None
        return None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ")
    except ValueError:
        raise ConnectionError(f"bad request line {lines[0]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        length = int(headers.get("content-length") or 0)
        if length > MAX_BODY:
            raise ConnectionError("request body too large")
        body = await reader.readexactly(length) if length else b""
    url = urlsplit(target)
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    return Request(method, unquote(url.path), query, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts, total = [], 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            raise ConnectionError("request body too large")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    reason = http.client.responses.get(status, "Unknown")
    lines = [f"HTTP/1.1 {status} {reason}", "Cache-Control: no-cache, private",
             *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# -- routing --------------------------------------------------------------------------------


@dataclass
class Target:
    """A resource URL: collection when ``name`` is None, all namespaces when ``namespace`` is."""
    resource: Resource
    namespace: str | None
    name: str | None
    watch: bool                 # legacy /watch/ path
    subresource: str | None = None      # "status"


def parse_resource_path(path: str, absent_groups: Collection[str] = ()) -> Target | None:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        table, rest = resources.CORE, parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3 and parts[1] in absent_groups:
        return None
    elif parts[:3] == ["apis", DISCOVERY_GROUP, "v1"]:
        table, rest = (ENDPOINT_SLICES,), parts[3:]
    elif parts[:3] == ["apis", COORDINATION_GROUP, "v1"]:
        table, rest = (LEASES,), parts[3:]
    elif parts[:1] == ["apis"] and "/".join(parts[1:3]) in GROUP_VERSIONS:
        table, rest = GROUP_VERSIONS["/".join(parts[1:3])], parts[3:]
    else:
        return None
    watch = bool(rest) and rest[0] == "watch"
    if watch:
        rest = rest[1:]
    by_name = {r.name: r for r in table}
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    resource = by_name.get(rest[0]) if rest else None
    subresource = None
    if resource is not None and len(rest) == 3 and rest[2] == "status" and resource.status_subresource \
            and not watch:
        subresource, rest = "status", rest[:2]
    if resource is None or len(rest) > 2 or (namespace is not None and not resource.namespaced):
        return None
    name = rest[1] if len(rest) == 2 else None
    if resource.namespaced and namespace is None and name is not None:
        return None
    return Target(resource, namespace, name, watch, subresource)


# -- watches --------------------------------------------------------------------------------


class WatchStream:
    """The events one watch request still has to send, already encoded as JSON lines."""

    def __init__(self, resource: Resource, predicate) -> None:
        self.resource = resource
        self.predicate = predicate
        self.lines: deque[bytes] = deque()
        self.dropped: str | None = None          # "abort" or "graceful" once dropped
        self._waiter: asyncio.Future | None = None

    @staticmethod
    def encode(type_: str, obj: dict) -> bytes:
        return b'{"type":"%s","object":%s}\n' % (type_.encode(), orjson.dumps(obj))

    def convert(self, event: Event) -> bytes | None:
        """The line this watcher sees for ``event``, if any (selector transitions included)."""
        if event.resource != self.resource.name:
            return None
        now = event.type != DELETED and self.predicate(event.obj)
        before = event.prev is not None and self.predicate(event.prev)
        if event.type == DELETED:
            return self.encode(DELETED, event.obj) if before else None
        if now:
            return self.encode(MODIFIED if before else ADDED, event.obj)
        if before:   # left the selection: a real server says DELETED, with the old object
            return self.encode(DELETED, with_rv(event.prev, event.rv))
        return None

    def offer(self, event: Event) -> None:
        line = self.convert(event)
        if line is not None:
            self.lines.append(line)
            self.wake()

    def bookmark(self, rv: int, initial_events_end: bool = False) -> bytes:
        meta: dict = {"resourceVersion": str(rv)}
        if initial_events_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return self.encode("BOOKMARK", {"kind": self.resource.kind,
                                        "apiVersion": self.resource.api_version, "metadata": meta})

    def drop(self, graceful: bool) -> None:
        self.dropped = "graceful" if graceful else "abort"
        self.wake()

    def wait(self) -> asyncio.Future:
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _expired_event(exc: Expired) -> bytes:
    status = ApiError(410, "Expired", str(exc)).status()
    return WatchStream.encode("ERROR", status)


# -- the server -----------------------------------------------------------------------------


class ApiServer:
    """The API server in this process (asyncio). See the module docstring for what it does."""

    def __init__(self, state_dir: str | os.PathLike, *, name: str = "local", host: str = "127.0.0.1",
                 port: int = 0, endpoint_slices: bool = True, absent_groups: Iterable[str] = (),
                 bookmark_interval: float = 1.0,
                 history_size: int = 1000, watch_timeout: float = DEFAULT_WATCH_TIMEOUT,
                 log_requests: bool = False, persist: bool = True) -> None:
        self.state_dir = Path(state_dir)
        self.name = name
        self.host = host
        self.port = port
        # The API groups not served (their CRDs not installed); endpoint_slices=False is
        # discovery.k8s.io among them.
        self.absent_groups: set[str] = {_known_group(g) for g in absent_groups}
        if not endpoint_slices:
            self.absent_groups.add(DISCOVERY_GROUP)
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.log_requests = log_requests
        # persist=False keeps the data in memory only: each write rewrites the whole state
        # file otherwise, which at 100,000 endpoints costs more than the write (bench/scale.py).
        self.store = Store(self.state_dir / "state.json" if persist else None, history_size)
        self.credentials: certs.Credentials | None = None
        self.kubeconfig_path = self.state_dir / "kubeconfig.yaml"
        self._server: asyncio.AbstractServer | None = None
        self._ssl: ssl.SSLContext | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()
        self._watches: set[WatchStream] = set()
        self._resume_handle: asyncio.TimerHandle | None = None
        self.lists: dict[str, int] = {}     # resource name -> LIST calls (first pages)
        self.writes: dict[str, int] = {}    # "resource[/subresource]" -> writes asked for (no-ops too)
        self.restricted_tokens: dict[str, frozenset] = {}   # token -> resource names it is denied

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> "ApiServer":
        self.credentials = certs.ensure_credentials(self.state_dir, self.name)
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ssl.load_cert_chain(self.credentials.server_cert, self.credentials.server_key)
        await self._listen()
        self._bootstrap()
        certs.write_kubeconfig(self.kubeconfig_path, self.name, self.url, self.credentials)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self.port, ssl=self._ssl, reuse_address=True,
            ssl_handshake_timeout=10.0, limit=256 * 1024)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def context(self) -> str:
        return certs.context_name(self.name)

    @property
    def token(self) -> str:
        assert self.credentials is not None, "start() first"
        return self.credentials.token

    @property
    def paused(self) -> bool:
        return self._server is None

    async def pause(self) -> None:
        """Look unreachable: stop listening and cut every open connection; data is kept."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for writer in list(self._connections):
            writer.transport.abort()
        await server.wait_closed()

    async def resume(self) -> None:
        """Listen again on the same port."""
        if self._resume_handle is not None:
            self._resume_handle.cancel()
            self._resume_handle = None
        if self._server is None:
            await self._listen()

    def pause_for(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        loop.create_task(self.pause())
        self._resume_handle = loop.call_later(seconds, lambda: loop.create_task(self.resume()))

    async def close(self) -> None:
        for stream in list(self._watches):
            stream.drop(graceful=False)
        await self.pause()
        # Let the connection handlers see their aborted connections and return: a handler
        # cancelled at loop shutdown makes Python 3.11's asyncio.streams log a traceback.
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)

    @property
    def endpoint_slices(self) -> bool:
        return DISCOVERY_GROUP not in self.absent_groups

    # -- test hooks ----------------------------------------------------------------------------

    def install_group(self, group: str) -> None:
        """Serve ``group`` from now on, as once its CRDs are installed."""
        self.absent_groups.discard(_known_group(group))

    def remove_group(self, group: str) -> int:
        """Stop serving ``group``, as when its CRDs are deleted: its objects are deleted first
        (watchers see DELETED events), then its watches end and its paths answer 404. Returns
        the number of objects deleted."""
        deleted = 0
        for resource in resources.group_resources(_known_group(group)):
            for obj in self.store.items(resource.name):
                self.store.delete(resource.name, obj)
                deleted += 1
        self.absent_groups.add(group)
        for stream in list(self._watches):
            if stream.resource.group == group:
                stream.drop(graceful=True)      # after the DELETED lines already queued
        return deleted

    def expire_history(self) -> int:
        """Compact the history: every watch or exact list from an older resourceVersion gets 410."""
        return self.store.expire_history()

    def drop_watches(self, graceful: bool = False) -> int:
        """End every watch: cut the connection (default) or end the stream cleanly."""
        streams = list(self._watches)
        for stream in streams:
            stream.drop(graceful)
        return len(streams)

    def state(self) -> dict:
        return {"name": self.name, "url": self.url, "resourceVersion": str(self.store.rv),
                "compactedResourceVersion": str(self.store.compacted_rv),
                "watches": len(self._watches), "connections": len(self._connections),
                "endpointSlices": self.endpoint_slices, "absentGroups": sorted(self.absent_groups),
                "pid": os.getpid(), "lists": dict(self.lists), "writes": dict(self.writes)}

    # -- connections ---------------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        self._handlers.add(asyncio.current_task())
        try:
            while True:
                request = await read_request(reader)
                if request is None or not await self._answer(request, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ssl.SSLError, ValueError):
            pass    # the client went away or spoke garbage: drop it
        finally:
            self._connections.discard(writer)
            self._handlers.discard(asyncio.current_task())
            writer.close()

    async def _answer(self, request: Request, reader, writer) -> bool:
        """Answer one request; False when the connection must close."""
        if self.log_requests:
            print(f"{request.method} {request.path} {request.query}", file=sys.stderr)
        try:
            denied: frozenset = frozenset()
            if request.path not in _PUBLIC_PATHS:
                denied = self._authenticate(request)
            target = parse_resource_path(request.path, self.absent_groups)
            if target is not None and target.resource.name in denied:
                raise _forbidden(target, request)
            if target is not None and request.method == "GET" and (
                    target.watch or parse_bool(request.query.get("watch"))):
                return await self._watch(target, request, reader, writer)
            status, body = self._handle(target, request)
        except ApiError as exc:
            status, body = exc.code, exc.status()
        if isinstance(body, str):
            data, ctype = body.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = orjson.dumps(body), "application/json"
        headers = [("Content-Type", ctype), ("Content-Length", str(len(data)))]
        if not request.keep_alive:
            headers.append(("Connection", "close"))
        writer.write(_head(status, headers) + data)
        await writer.drain()
        if request.after is not None:
            request.after()
        return request.keep_alive

    def _authenticate(self, request: Request) -> frozenset:
        """The resources the request's token may not touch (none for the cluster's own)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token == self.token:
            return frozenset()
        if scheme.lower() == "bearer" and token in self.restricted_tokens:
            return self.restricted_tokens[token]
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def _handle(self, target: Target | None, request: Request) -> tuple[int, dict | str]:
        if target is not None:
            return self._handle_resource(target, request)
        path = request.path.rstrip("/") or "/"
        if path.startswith("/_devcluster/"):
            return self._handle_admin(path, request)
        if request.method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {path}")
        document = self._document(path)
        if document is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           {"causes": [{"reason": "UnexpectedServerResponse",
                                        "message": "404 page not found"}]})
        return 200, document

    def _document(self, path: str) -> dict | str | None:
        if path in ("/healthz", "/livez", "/readyz"):
            return "ok"
        if path == "/version":
            return resources.version_info()
        if path == "/api":
            return resources.api_versions(f"{self.host}:{self.port}")
        if path == "/api/v1":
            return resources.resource_list("v1", resources.CORE)
        if path == "/apis":
            return resources.api_group_list(self.absent_groups)
        group_version = path.removeprefix("/apis/")
        if group_version.split("/")[0] in self.absent_groups:
            return None
        if path == f"/apis/{DISCOVERY_GROUP}":
            return resources.api_group(DISCOVERY_GROUP, "v1")
        if path == f"/apis/{DISCOVERY_GROUP}/v1":
            return resources.resource_list(f"{DISCOVERY_GROUP}/v1", (ENDPOINT_SLICES,))
        if path == f"/apis/{COORDINATION_GROUP}":
            return resources.api_group(COORDINATION_GROUP, "v1")
        if path == f"/apis/{COORDINATION_GROUP}/v1":
            return resources.resource_list(f"{COORDINATION_GROUP}/v1", (LEASES,))
        if group_version in GROUP_VERSIONS:
            return resources.resource_list(group_version, GROUP_VERSIONS[group_version])
        versions = resources.custom_groups().get(group_version)
        if versions:
            return resources.api_group(group_version, *versions)
        return None

    def _handle_admin(self, path: str, request: Request) -> tuple[int, dict]:
        if path == "/_devcluster/state" and request.method == "GET":
            return 200, self.state()
        if request.method != "POST":
            raise ApiError(405, "MethodNotAllowed", f"{request.method} {path}")
        if path == "/_devcluster/expire-history":
            self.expire_history()
            return 200, self.state()
        if path == "/_devcluster/restricted-token":
            # A second identity, denied the named resources (403 as RBAC would), e.g. a
            # replica whose ServiceAccount may not read Services.  In memory only.
            deny = frozenset(filter(None, (request.query.get("deny") or "").split(",")))
            token = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
            self.restricted_tokens[token] = deny
            return 200, {"token": token, "deny": sorted(deny)}
        if path == "/_devcluster/drop-watches":
            return 200, {"dropped": self.drop_watches(parse_bool(request.query.get("graceful")))}
        if path == "/_devcluster/pause":
            seconds = _number(request.query.get("seconds"), "seconds")
            if not 0 < seconds <= 3600:
                raise _bad_request("seconds must be in (0, 3600]")
            # After this answer is written: the pause cuts this connection too.
            request.after = lambda: self.pause_for(seconds)
            return 200, {"paused": seconds}
        if path == "/_devcluster/install-group":
            self.install_group(_group_param(request))
            return 200, self.state()
        if path == "/_devcluster/remove-group":
            deleted = self.remove_group(_group_param(request))
            return 200, {**self.state(), "deleted": deleted}
        raise ApiError(404, "NotFound", f"no admin hook {path}")

    # -- resources -----------------------------------------------------------------------------

    def _handle_resource(self, target: Target, request: Request) -> tuple[int, dict]:
        method, collection = request.method, target.name is None
        if target.subresource is not None and method not in ("GET", "PUT", "PATCH"):
            raise _method_not_allowed()
        if method == "GET":
            return 200, self._list(target, request) if collection else self._get(target)
        name = target.resource.name + (f"/{target.subresource}" if target.subresource else "")
        self.writes[name] = self.writes.get(name, 0) + 1
        if method == "POST" and collection and (target.namespace or not target.resource.namespaced):
            return 201, self._create(target, self._body(request), request)
        if method == "PUT" and not collection:
            return self._update(target, self._body(request), request)
        if method == "PATCH" and not collection:
            return 200, self._patch(target, request)
        if method == "DELETE":
            if collection:
                return 200, self._delete_collection(target, request)
            return 200, self._delete(target, request)
        raise _method_not_allowed()

    def _body(self, request: Request) -> dict:
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
        try:
            if ctype in ("application/yaml", "text/yaml"):
                body = yaml.safe_load(request.body)
            elif ctype == "application/json" or ctype.endswith("+json"):
                body = orjson.loads(request.body)
            else:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown "
                               "format - accepted media types include: application/json, application/yaml")
        except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
            raise _bad_request(f"error decoding request body: {exc}") from None
        if not isinstance(body, (dict, list)):
            raise _bad_request("the request body must be a JSON object")
        return body

    def _predicate(self, target: Target, request: Request):
        try:
            predicate = both(parse_label_selector(request.query.get("labelSelector")),
                             parse_field_selector(request.query.get("fieldSelector"), target.resource.fields))
        except SelectorError as exc:
            raise _bad_request(str(exc)) from None
        if target.namespace is not None:
            namespace = target.namespace
            predicate = both(lambda obj: obj["metadata"].get("namespace") == namespace, predicate)
        if target.name is not None:   # watch on an item URL
            name = target.name
            predicate = both(lambda obj: obj["metadata"]["name"] == name, predicate)
        return predicate

    def _key(self, target: Target, name: str | None = None) -> tuple[str, str]:
        namespace = (target.namespace or "") if target.resource.namespaced else ""
        return namespace, name or target.name

    def _get(self, target: Target) -> dict:
        obj = self.store.get(target.resource.name, self._key(target))
        if obj is None:
            raise not_found(target.resource, target.name)
        return obj

    def _list(self, target: Target, request: Request) -> dict:
        resource, query = target.resource, request.query
        predicate = self._predicate(target, request)
        limit = int(_number(query.get("limit") or "0", "limit"))
        if not query.get("continue"):
            self.lists[resource.name] = self.lists.get(resource.name, 0) + 1
        rv, start = self._list_version(resource, query)
        try:
            items = self.store.items_at(resource.name, rv)
        except Expired as exc:
            raise _gone(exc, _CONTINUE_EXPIRED if start is not None else None) from None
        items = [obj for obj in items if predicate(obj) and (start is None or key_of(obj) > start)]
        meta: dict = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            items, remaining = items[:limit], len(items) - limit
            meta["continue"] = _continue_token(rv, key_of(items[-1]))
            if not query.get("labelSelector") and not query.get("fieldSelector"):
                meta["remainingItemCount"] = remaining
        # List members carry no kind/apiVersion on a real server: the list says them once.
        members = [{k: v for k, v in obj.items() if k not in ("kind", "apiVersion")} for obj in items]
        return {"kind": resource.list_kind, "apiVersion": resource.api_version, "metadata": meta,
                "items": members}

    def _list_version(self, resource: Resource, query: dict) -> tuple[int, tuple | None]:
        """The resourceVersion a list is served at, and where a continued list resumes."""
        if query.get("continue"):
            return _parse_continue(query["continue"])
        requested = query.get("resourceVersion")
        if requested in (None, "", "0"):
            return self.store.rv, None
        rv = int(_number(requested, "resourceVersion"))
        if rv > self.store.rv:
            raise ApiError(504, "Timeout", f"Too large resource version: {rv}, current: {self.store.rv}",
                           {"causes": [{"reason": "ResourceVersionTooLarge",
                                        "message": "Too large resource version"}], "retryAfterSeconds": 1})
        if query.get("resourceVersionMatch") == "Exact":
            return rv, None
        return self.store.rv, None

    def _create(self, target: Target, obj: dict, request: Request) -> dict:
        resource = target.resource
        meta = self._metadata(obj, target)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generate_name(resource, target, meta["generateName"])
        for owned in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                      "managedFields", "selfLink"):
            meta.pop(owned, None)
        if resource.namespaced and self.store.get(NAMESPACES.name, ("", target.namespace)) is None:
            raise not_found(NAMESPACES, target.namespace)
        try:
            prepare(resource, obj)
        except Invalid as exc:
            raise _invalid(exc, resource) from None
        if self.store.get(resource.name, key_of(obj)) is not None:
            raise ApiError(409, "AlreadyExists", f'{_qualified(resource)} "{meta["name"]}" already exists',
                           _details(resource, meta["name"]))
        if resource.status_subresource:
            obj.pop("status", None)      # a create cannot set status when /status is a subresource
        if resource in resources.CUSTOM:
            meta["generation"] = 1       # as for every custom resource
        if resource is SERVICES:
            self._allocate_cluster_ip(obj)
        return self.store.create(resource.name, obj)

    def _metadata(self, obj: dict, target: Target) -> dict:
        """Check the body's metadata against the URL and fill in the namespace (and name)."""
        if not isinstance(obj, dict):
            raise _bad_request("the request body must be a JSON object")
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            problem = Invalid(target.resource.kind, "", [("metadata", "must be an object")])
            raise _invalid(problem, target.resource)
        if target.resource.namespaced:
            if meta.get("namespace") not in (None, "", target.namespace):
                raise _bad_request("the namespace of the provided object does not match the "
                                   "namespace sent on the request")
            meta["namespace"] = target.namespace
        else:
            meta.pop("namespace", None)
        if target.name is not None:
            if meta.get("name") not in (None, "", target.name):
                raise _bad_request(f"the name of the object ({meta['name']}) does not match the "
                                   f"name on the URL ({target.name})")
            meta["name"] = target.name
        return meta

    def _generate_name(self, resource: Resource, target: Target, prefix: str) -> str:
        while True:
            name = prefix + "".join(random.choices(_GENERATE_ALPHABET, k=5))
            if self.store.get(resource.name, self._key(target, name)) is None:
                return name

    def _allocate_cluster_ip(self, service: dict) -> None:
        spec = service["spec"]
        if spec.get("clusterIP") or spec["type"] == "ExternalName":
            return
        used = {s["spec"].get("clusterIP") for s in self.store.items(SERVICES.name)}
        for host in _SERVICE_CIDR.hosts():
            if str(host) not in used:
                spec["clusterIP"] = str(host)
                spec["clusterIPs"] = [str(host)]
                return
        raise ApiError(500, "InternalError", "no cluster IP left")

    def _update(self, target: Target, obj: dict, request: Request) -> tuple[int, dict]:
        resource = target.resource
        meta = self._metadata(obj, target)
        old = self.store.get(resource.name, self._key(target))
        if old is None:
            if resource.create_on_update:
                return 201, self._create(target, obj, request)
            raise not_found(resource, target.name)
        return 200, self._replace(resource, obj, old, meta.get("resourceVersion"), target.subresource)

    def _replace(self, resource: Resource, obj: dict, old: dict, expected_rv: str | None,
                 subresource: str | None = None) -> dict:
        """Store ``obj`` in place of ``old`` unless it is stale (409) or changes nothing."""
        old_meta = old["metadata"]
        if expected_rv not in (None, "") and expected_rv != old_meta["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(resource)} '
                           f'"{old_meta["name"]}": the object has been modified; please apply your '
                           f'changes to the latest version and try again',
                           _details(resource, old_meta["name"]))
        if resource.status_subresource:
            obj = _split_status(obj, old, subresource)
        try:
            prepare(resource, obj, old)
        except Invalid as exc:
            raise _invalid(exc, resource) from None
        if "generation" in old_meta:
            obj = _with_generation(obj, old)
        server_owned = {k: old_meta[k] for k in ("uid", "creationTimestamp", "resourceVersion")}
        candidate = {**obj, "metadata": {**obj["metadata"], **server_owned}}
        candidate["metadata"].pop("managedFields", None)
        if candidate == old:
            return old      # a no-op write: a real server does not touch etcd, so no new version
        return self.store.update(resource.name, obj, old)

    def _patch(self, target: Target, request: Request) -> dict:
        resource = target.resource
        old = self._get(target)
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        body = self._body(request) if ctype != "application/apply-patch+yaml" else None
        try:
            if ctype == "application/json-patch+json" and isinstance(body, list):
                patched = json_patch(old, body)
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json") \
                    and isinstance(body, dict):
                patched = merge_patch(old, body)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an "
                               f"unknown format - accepted media types include: application/json-patch+json, "
                               f"application/merge-patch+json, application/strategic-merge-patch+json")
        except PatchError as exc:
            raise ApiError(422, "Invalid", str(exc), _details(resource, target.name)) from None
        meta = patched.get("metadata") if isinstance(patched, dict) else None
        if not isinstance(meta, dict) or meta.get("name") != target.name or \
                meta.get("namespace", "") != old["metadata"].get("namespace", ""):
            raise _invalid(Invalid(resource.kind, target.name,
                                   [("metadata.name", "Invalid value: field is immutable")]), resource)
        # A patch that sets metadata.resourceVersion makes it a precondition, as on a real server.
        return self._replace(resource, patched, old, meta.get("resourceVersion"), target.subresource)

    def _delete(self, target: Target, request: Request) -> dict:
        resource = target.resource
        old = self._get(target)
        self._check_preconditions(resource, old, request)
        if resource is NAMESPACES:
            for namespaced in NAMESPACED:
                for obj in self.store.items(namespaced.name):
                    if obj["metadata"]["namespace"] == target.name:
                        self.store.delete(namespaced.name, obj)
        last = self.store.delete(resource.name, old)
        if resource.return_deleted_object or resource is NAMESPACES:
            return last
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {**_details(resource, target.name), "uid": old["metadata"]["uid"]}}

    def _check_preconditions(self, resource: Resource, old: dict, request: Request) -> None:
        if not request.body:
            return
        options = self._body(request)
        preconditions = (options.get("preconditions") or {}) if isinstance(options, dict) else {}
        for field in ("uid", "resourceVersion"):
            wanted = preconditions.get(field)
            if wanted is not None and wanted != old["metadata"][field]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(resource)} '
                               f'"{old["metadata"]["name"]}": Precondition failed: {field}: {wanted}, '
                               f'ObjectMeta.{field}: {old["metadata"][field]}',
                               _details(resource, old["metadata"]["name"]))

    def _delete_collection(self, target: Target, request: Request) -> dict:
        if target.resource is NAMESPACES:
            raise _method_not_allowed()
        predicate = self._predicate(target, request)
        for obj in self.store.items(target.resource.name):
            if predicate(obj):
                self.store.delete(target.resource.name, obj)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    # -- watch ---------------------------------------------------------------------------------

    async def _watch(self, target: Target, request: Request, reader, writer) -> bool:
        """Stream events until timeout, a drop or the client leaving; False: close the connection."""
        query = request.query
        stream = WatchStream(target.resource, self._predicate(target, request))
        timeout = _number(query.get("timeoutSeconds") or "0", "timeoutSeconds") or self.watch_timeout
        bookmarks = parse_bool(query.get("allowWatchBookmarks"))
        initial_events = self._initial_events(target, stream, query)   # raises before any byte is sent
        writer.write(_head(200, [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")]))
        if initial_events is None:       # the resourceVersion is compacted: one ERROR event, then end
            expired = Expired(int(query["resourceVersion"]), self.store.compacted_rv)
            writer.write(_chunk(_expired_event(expired)))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        # Subscribed in the same loop iteration as the snapshot above: no event can fall between.
        self.store.subscribers.add(stream.offer)
        self._watches.add(stream)
        stream.lines.extend(initial_events)
        if parse_bool(query.get("sendInitialEvents")) and bookmarks:
            stream.lines.append(stream.bookmark(self.store.rv, initial_events_end=True))
        try:
            return await self._pump(stream, reader, writer, timeout, bookmarks)
        finally:
            self.store.subscribers.discard(stream.offer)
            self._watches.discard(stream)

    def _initial_events(self, target: Target, stream: WatchStream, query: dict) -> list[bytes] | None:
        """ADDED lines for a watch from "now", history lines after a resourceVersion, or None
        if that resourceVersion is compacted."""
        requested = query.get("resourceVersion")
        send_initial = query.get("sendInitialEvents")
        if parse_bool(send_initial) or (requested in (None, "", "0") and send_initial is None):
            return [stream.encode(ADDED, obj) for obj in self.store.items(target.resource.name)
                    if stream.predicate(obj)]
        if requested in (None, "", "0"):
            return []
        rv = int(_number(requested, "resourceVersion"))
        if rv > self.store.rv:
            raise ApiError(504, "Timeout", f"Too large resource version: {rv}, current: {self.store.rv}")
        try:
            events = self.store.events_after(rv)
        except Expired:
            return None
        return [line for event in events if (line := stream.convert(event)) is not None]

    async def _pump(self, stream: WatchStream, reader, writer, timeout: float, bookmarks: bool) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        next_bookmark = loop.time() + self.bookmark_interval if bookmarks else float("inf")
        client_gone = loop.create_task(reader.read(1))   # a watch client sends nothing: data == EOF
        try:
            while True:
                if stream.lines:
                    writer.write(b"".join(_chunk(line) for line in stream.lines))
                    stream.lines.clear()
                    await writer.drain()
                    continue
                if stream.dropped == "abort":
                    writer.transport.abort()
                    return False
                now = loop.time()
                if stream.dropped == "graceful" or now >= end:
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    return not client_gone.done()
                if now >= next_bookmark:
                    # The queue is empty, so every event up to the current version was sent.
                    writer.write(_chunk(stream.bookmark(self.store.rv)))
                    next_bookmark = now + self.bookmark_interval
                    await writer.drain()
                    continue
                await asyncio.wait({stream.wait(), client_gone}, timeout=min(end, next_bookmark) - now,
                                   return_when=asyncio.FIRST_COMPLETED)
                if client_gone.done():
                    return False
        finally:
            # Wait for the cancellation: the next request on this connection reads from the
            # same StreamReader, which allows a single waiter.
            client_gone.cancel()
            await asyncio.wait({client_gone})

    # -- bootstrap -----------------------------------------------------------------------------

    def _bootstrap(self) -> None:
        """What a fresh real cluster has: system namespaces and the ``default/kubernetes``
        Service, whose endpoints the API server itself keeps pointing at its own address."""
        for name in _SYSTEM_NAMESPACES:
            self._ensure(NAMESPACES, {"metadata": {"name": name}})
        port = {"name": "https", "port": self.port, "protocol": "TCP"}
        self._ensure(SERVICES, {"metadata": {"name": "kubernetes", "namespace": "default",
                                             "labels": {"component": "apiserver", "provider": "kubernetes"}},
                                "spec": {"clusterIP": "10.96.0.1", "ports": [
                                    {"name": "https", "port": 443, "protocol": "TCP",
                                     "targetPort": self.port}]}})
        self._ensure(ENDPOINTS, {"metadata": {"name": "kubernetes", "namespace": "default"},
                                 "subsets": [{"addresses": [{"ip": self.host}], "ports": [port]}]})
        self._ensure(ENDPOINT_SLICES, {
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4", "endpoints": [{"addresses": [self.host], "conditions": {"ready": True}}],
            "ports": [port]})

    def _ensure(self, resource: Resource, obj: dict) -> None:
        """Create ``obj`` or bring the stored one's content in line (a no-op when equal)."""
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        old = self.store.get(resource.name, key)
        if old is None:
            self.store.create(resource.name, prepare(resource, obj))
            return
        merged = {**old, **{k: v for k, v in obj.items() if k != "metadata"},
                  "metadata": {**old["metadata"], **obj["metadata"]}}
        self._replace(resource, merged, old, None)


def _split_status(obj: dict, old: dict, subresource: str | None) -> dict:
    """What a write stores when status is a subresource: through ``/status`` only the status
    changes; through the object everything but the status."""
    if subresource == "status":
        stored = {k: v for k, v in old.items() if k != "status"}
        if obj.get("status") is not None:
            stored["status"] = obj["status"]
        return stored
    stored = {k: v for k, v in obj.items() if k != "status"}
    if "status" in old:
        stored["status"] = old["status"]
    return stored


def _with_generation(obj: dict, old: dict) -> dict:
    """``obj`` with ``metadata.generation``: the old one, plus one if the spec (anything outside
    metadata and status, compared after defaulting) changed."""
    generation = old["metadata"].get("generation", 1)
    if _content(obj) != _content(old):
        generation += 1
    return {**obj, "metadata": {**obj["metadata"], "generation": generation}}


def _content(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


_CONTINUE_EXPIRED = ("The provided continue parameter is too old to display a consistent list result. "
                     "You can start a new list without the continue parameter.")


def _continue_token(rv: int, last_key: tuple[str, str]) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(last_key)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(data["rv"]), tuple(data["start"])
    except (ValueError, KeyError, TypeError):
        raise _bad_request("continue key is not valid") from None


def _known_group(group: str) -> str:
    """``group`` if this server has it (to install or leave out); ValueError otherwise."""
    if not resources.group_resources(group):
        known = ", ".join([DISCOVERY_GROUP, *resources.custom_groups()])
        raise ValueError(f"unknown API group {group!r} (known: {known})")
    return group


def _group_param(request: Request) -> str:
    try:
        return _known_group(request.query.get("group", ""))
    except ValueError as exc:
        raise _bad_request(str(exc)) from None


def _number(text: str | None, name: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise _bad_request(f"invalid value for {name}: {text!r}") from None


# -- running it in a process ----------------------------------------------------------------


class ApiServerProcess:
    """An API server in its own process, with its test hooks as methods.

    ``stop()`` then ``start()`` restarts it on the same port with the same data (the port picked
    by the first start is kept), so clients see an API that went away and came back.
    """

    def __init__(self, state_dir: str | os.PathLike, *, name: str = "local", port: int = 0,
                 endpoint_slices: bool = True, absent_groups: Iterable[str] = (),
                 bookmark_interval: float = 1.0,
                 history_size: int = 1000, host: str = "127.0.0.1", persist: bool = True) -> None:
        self.state_dir = Path(state_dir)
        self.persist = persist
        self.name, self.port, self.host = name, port, host
        self.endpoint_slices = endpoint_slices
        # As started: a restart starts without these again (install_group is not remembered).
        self.absent_groups = tuple(_known_group(g) for g in absent_groups)
        self.bookmark_interval = bookmark_interval
        self.history_size = history_size
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "ApiServerProcess":
        args = ["--state-dir", str(self.state_dir), "--name", self.name, "--host", self.host,
                "--port", str(self.port), "--bookmark-interval", str(self.bookmark_interval),
                "--history-size", str(self.history_size)]
        if not self.endpoint_slices:
            args.append("--no-endpointslices")
        for group in self.absent_groups:
            args += ["--absent-group", group]
        if not self.persist:
            args.append("--in-memory")
        if self._proc is not None:
            _process.stop(self._proc)     # reap a previous (killed) process and close its pipe
        self._proc, line = _process.spawn("gateway.devcluster.apiserver", args, timeout)
        self.port = int(line.split()[0].rsplit(":", 1)[1])
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._proc is not None:
            _process.stop(self._proc, timeout)

    def restart(self) -> "ApiServerProcess":
        self.stop()
        return self.start()

    def send_signal(self, sig: int) -> None:
        if self.running:
            self._proc.send_signal(sig)
            if sig == signal.SIGKILL:
                self._proc.wait(timeout=10)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP: connections open (kernel backlog) but nothing answers, like a hung server."""
        self.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.send_signal(signal.SIGCONT)

    def pause(self, seconds: float | None = None) -> None:
        """Stop listening and cut connections, for ``seconds`` or until ``resume()``."""
        if seconds is None:
            self.send_signal(signal.SIGUSR1)
        else:
            self._admin("POST", f"/_devcluster/pause?seconds={seconds}")

    def resume(self) -> None:
        self.send_signal(signal.SIGUSR2)

    def expire_history(self) -> dict:
        return self._admin("POST", "/_devcluster/expire-history")

    def install_group(self, group: str) -> dict:
        """Serve an absent API group from now on (as installing its CRDs)."""
        return self._admin("POST", f"/_devcluster/install-group?group={group}")

    def remove_group(self, group: str) -> dict:
        """Stop serving an API group (as deleting its CRDs: its objects go first)."""
        return self._admin("POST", f"/_devcluster/remove-group?group={group}")

    def drop_watches(self, graceful: bool = False) -> int:
        return self._admin("POST", f"/_devcluster/drop-watches?graceful={str(graceful).lower()}")["dropped"]

    def state(self) -> dict:
        return self._admin("GET", "/_devcluster/state")

    def restricted_kubeconfig(self, path: Path, deny: tuple[str, ...]) -> Path:
        """A kubeconfig like the server's own whose token is denied ``deny`` (403, as RBAC)."""
        token = self._admin("POST", f"/_devcluster/restricted-token?deny={','.join(deny)}")["token"]
        doc = yaml.safe_load(self.kubeconfig.read_text())
        for user in doc["users"]:
            user["user"]["token"] = token
        path.write_text(yaml.safe_dump(doc))
        return path

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig.yaml"

    @property
    def context(self) -> str:
        return certs.context_name(self.name)

    @property
    def token(self) -> str:
        return (self.state_dir / "token").read_text().strip()

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "ca.crt"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _admin(self, method: str, path: str) -> dict:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ssl_context(), timeout=10)
        try:
            conn.request(method, path, headers={"Authorization": f"Bearer {self.token}"})
            response = conn.getresponse()
            body = orjson.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: {response.status} {body}")
            return body
        finally:
            conn.close()

    def __enter__(self) -> "ApiServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _quiet_exceptions(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Clients that drop TLS connections mid-handshake are normal here, not worth a traceback."""
    if isinstance(context.get("exception"), (ssl.SSLError, ConnectionError)):
        return
    loop.default_exception_handler(context)


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_exceptions)
    server = ApiServer(args.state_dir, name=args.name, host=args.host, port=args.port,
                       endpoint_slices=not args.no_endpointslices, absent_groups=args.absent_group,
                       bookmark_interval=args.bookmark_interval, history_size=args.history_size,
                       watch_timeout=args.watch_timeout, log_requests=args.log_requests,
                       persist=not args.in_memory)
    await server.start()
    done = _process.stop_requested(loop, args.parent_pid)
    loop.add_signal_handler(signal.SIGUSR1, lambda: loop.create_task(server.pause()))
    loop.add_signal_handler(signal.SIGUSR2, lambda: loop.create_task(server.resume()))
    _process.announce(f"{server.url} kubeconfig={server.kubeconfig_path} context={server.context} "
                      f"pid={os.getpid()}")
    await done.wait()
    await server.close()


def main(argv: list[str] | None = None) -> None:
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--state-dir", required=True, help="certificates, token, data, kubeconfig")
    parser.add_argument("--name", default="local", help="cluster name; the context is zone-<name>")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--no-endpointslices", action="store_true",
                        help="serve without the discovery.k8s.io group (v1 Endpoints only)")
    parser.add_argument("--absent-group", action="append", default=[], metavar="GROUP",
                        help="serve without this API group, as if its CRDs were not installed "
                             "(repeatable; e.g. multicluster.x-k8s.io)")
    parser.add_argument("--bookmark-interval", type=float, default=1.0, help="seconds")
    parser.add_argument("--history-size", type=int, default=1000, help="events kept for watches")
    parser.add_argument("--watch-timeout", type=float, default=DEFAULT_WATCH_TIMEOUT,
                        help="seconds a watch lasts when the client sets no timeoutSeconds")
    parser.add_argument("--log-requests", action="store_true", help="one stderr line per request")
    parser.add_argument("--in-memory", action="store_true",
                        help="keep objects in memory only (a restart starts empty)")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    uvloop.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
