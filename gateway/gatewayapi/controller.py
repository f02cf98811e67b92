"""The Gateway API controller: watches the clusters, feeds the translation to the gateway,
writes statuses back.

Per cluster, one list+watch loop per kind in its own thread (the official client is
synchronous), as ``gateway.sources.kubernetes`` does: list, watch from the list's
resourceVersion with bookmarks, resume from the last version seen after a lost connection
(backoff with jitter), relist only on 410 Gone. Events go to the event loop with
``call_soon_threadsafe``; all state lives on the loop thread.

What is watched:
* in the clusters of ``gateway_api.sources``: GatewayClasses, Gateways, HTTPRoutes,
  GRPCRoutes, TLSRoutes, ListenerSets, BackendTLSPolicies (``gateway.gatewayapi.backend_tls``), ReferenceGrants,
  Namespaces (for ``allowedRoutes`` selectors), SecurityPolicies and
  RateLimitPolicies (``gateway.gatewayapi.policies``), Secrets of type kubernetes.io/tls (for
  HTTPS listeners' certificateRefs) and of type Opaque (the credentials policies name), and
  ConfigMaps (the CA certificates of client certificate validation and BackendTLSPolicies,
  only their ``ca.crt`` kept); all namespaces, or one loop per ``gateway_api.secret_namespaces`` entry
  so that RBAC can be a Role in each;
* in every kubernetes source (every associated cluster): Services and ServiceImports, so
  that a backendRef is resolved against the merged service, whichever cluster has it.

A change schedules one translation a moment later (``SETTLE`` seconds: the events of one
``kubectl apply`` arrive as a burst); a translation that gives other routes or services
calls ``on_change``, which applies them through the gateway's reload path. Statuses are
written only when they differ from what the object carries (so a status write, which comes
back as a watch event, does not write again), from a worker thread, each to the cluster the
object came from.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from typing import Callable

from gateway.config import GatewayApiConfig, SourceConfig
from gateway.gatewayapi.policies import PLURALS as POLICY_PLURALS, POLICY_GROUP, POLICY_VERSION, PolicyMemo
from gateway.gatewayapi.translate import (GATEWAY_GROUP, MCS_GROUP, UNSPECIFIED, Addressing, CaBundle, RouteMemo,
                                          TlsSecret, Translation, World, translate)
from gateway.listeners import PortReservations

log = logging.getLogger("gateway.gatewayapi")

SETTLE = 0.02

# (store name, group, version, plural, namespaced); group None: the core API
ROUTE_KINDS = (("classes", GATEWAY_GROUP, "v1", "gatewayclasses", False),
               ("gateways", GATEWAY_GROUP, "v1", "gateways", True),
               ("routes", GATEWAY_GROUP, "v1", "httproutes", True),
               ("grpc_routes", GATEWAY_GROUP, "v1", "grpcroutes", True),
               ("tls_routes", GATEWAY_GROUP, "v1", "tlsroutes", True),
               ("listener_sets", GATEWAY_GROUP, "v1", "listenersets", True),
               ("backend_tls_policies", GATEWAY_GROUP, "v1", "backendtlspolicies", True),
               ("grants", GATEWAY_GROUP, "v1beta1", "referencegrants", True),
               ("namespaces", None, "v1", "namespaces", False),
               *((store, POLICY_GROUP, POLICY_VERSION, plural, True) for store, plural in POLICY_PLURALS.items()))
SERVICE_KINDS = (("services", None, "v1", "services", True),
                 ("imports", MCS_GROUP, "v1alpha1", "serviceimports", True))
SECRETS = ("secrets", None, "v1", "secrets", True)
CREDENTIALS = ("credentials", None, "v1", "secrets", True)      # Opaque Secrets
CA_MAPS = ("ca_maps", None, "v1", "configmaps", True)           # ConfigMaps, for their ca.crt
TLS_SECRET_TYPE, CREDENTIALS_TYPE = "kubernetes.io/tls", "Opaque"
# store -> (group, version, plural) of the kinds whose status we write
STATUS_KINDS = {"classes": (GATEWAY_GROUP, "v1", "gatewayclasses"), "gateways": (GATEWAY_GROUP, "v1", "gateways"),
                "routes": (GATEWAY_GROUP, "v1", "httproutes"), "grpc_routes": (GATEWAY_GROUP, "v1", "grpcroutes"),
                "tls_routes": (GATEWAY_GROUP, "v1", "tlsroutes"),
                "listener_sets": (GATEWAY_GROUP, "v1", "listenersets"),
                "backend_tls_policies": (GATEWAY_GROUP, "v1", "backendtlspolicies"),
                **{store: (POLICY_GROUP, POLICY_VERSION, plural) for store, plural in POLICY_PLURALS.items()}}
# What the translation's World holds of a watched object, per store (the object itself when
# not named), and the stores merged from every associated cluster rather than the route ones.
_WORLD_VALUE = {"services": lambda obj: (obj.get("spec") or {}).get("ports") or [],
                "namespaces": lambda obj: obj["metadata"].get("labels") or {},
                "secrets": lambda obj: obj["secret"],
                "credentials": lambda obj: obj["data"],
                "ca_maps": lambda obj: obj["bundle"]}
_EVERY_CLUSTER = ("services", "imports")
_BY_NAME = ("classes", "namespaces")                   # cluster-scoped: keyed by name
WORLD_STORES = ("classes", "gateways", "routes", "grpc_routes", "tls_routes", "listener_sets", "backend_tls_policies", "grants", "services",
                "imports", "namespaces", "secrets", *POLICY_PLURALS, "credentials", "ca_maps")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _key(obj: dict) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


class GatewayApiController:
    def __init__(self, settings: GatewayApiConfig, sources: tuple[SourceConfig, ...],
                 on_change: Callable[[Translation], None],
                 taken: frozenset[tuple[str, int]] = frozenset(), global_limits: bool = False) -> None:
        self.settings = settings
        self.taken = taken                      # the file's own (address, port) pairs
        self.global_limits = global_limits      # the file has "redis": global rate limits can be kept
        self.reservations = PortReservations()
        self._unbindable: dict[tuple[str, int], str] = {}
        # (store, key) -> (status we wrote, the resourceVersion our write made): until the
        # watch shows that version, the object's status as we see it is older than ours.
        self._written: dict[tuple[str, tuple[str, str]], tuple[dict, int]] = {}
        self.route_clusters = [s for s in sources if s.name in settings.sources]
        self.all_clusters = [s for s in sources if s.type == "kubernetes"]
        self.on_change = on_change
        self.translation: Translation | None = None
        self.errors: dict[str, str] = {}
        self.status_writes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._watches: list = []
        self._apis: dict[str, object] = {}
        # (cluster, store name) -> {key: object}
        self._objects: dict[tuple[str, str], dict] = {}
        # store -> (its objects merged across clusters, key -> the cluster each came from):
        # an event changes its key's entry, a list the whole store.  A World built from them
        # is current, not a snapshot: it is read at once, on this thread, and not kept.
        self._merged: dict[str, tuple[dict, dict]] = {}
        self._unmerged: set[str] = set(WORLD_STORES)
        self._loops: set[str] = set()
        self._synced_loops: set[str] = set()
        self._synced = asyncio.Event()
        self._pending: asyncio.TimerHandle | None = None
        self._file_services: dict = {}
        # Bumped by every change but an HTTPRoute's (World.version): the routes' translations
        # are kept while it stays (RouteMemo).
        self._world_version = 0
        self._memo = RouteMemo()
        self._policy_memo = PolicyMemo()
        # HTTPRoutes whose status to compare at the next status pass besides those the
        # translation changed (a write failed, another writer's status came); None: all.
        self._status_due: set[tuple[str, str]] | None = None
        self.elector = None                     # gateway.gatewayapi.leader.LeaderElector

    # -- lifecycle ------------------------------------------------------------------

    def start(self, file_services: dict) -> None:
        from gateway.sources.discovery import Kind, is_optional
        self._loop = asyncio.get_running_loop()
        self._file_services = file_services
        self._kinds: dict[str, object] = {}     # cluster -> its OptionalKinds (discovery)
        for cluster in self.all_clusters:
            kinds = [(kind, None) for kind in SERVICE_KINDS]
            if cluster in self.route_clusters:
                kinds += [(kind, None) for kind in ROUTE_KINDS]
                kinds += [(secrets, ns) for ns in self.settings.secret_namespaces or (None,)
                          for secrets in (SECRETS, CREDENTIALS, CA_MAPS)]
            optional = {}
            for kind, namespace in kinds:
                name = f"{cluster.name}/{_loop_label(kind)}" + (f"/{namespace}" if namespace else "")
                self._loops.add(name)       # an optional kind too, until discovery answers
                if is_optional(kind[1]):
                    optional[Kind(*kind[1:4])] = (kind, name)
                else:
                    self._spawn(cluster, kind, name, namespace)
            if optional:
                threading.Thread(target=self._discover, args=(cluster, optional), daemon=True,
                                 name=f"gwapi-{cluster.name}/discovery").start()

    def _spawn(self, cluster: SourceConfig, kind: tuple, name: str, namespace: str | None) -> None:
        threading.Thread(target=self._run, args=(cluster, kind, name, namespace), daemon=True,
                         name=f"gwapi-{name}").start()

    async def wait_synced(self, timeout: float) -> list[str]:
        """Wait until every loop listed once (a kind the cluster does not serve, found by
        discovery, is not waited for); the loops that did not, on timeout."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        if self._pending is not None:           # translate now rather than a moment later
            self._pending.cancel()
            self._translate()
        return sorted(self._loops - self._synced_loops)

    async def stop(self) -> None:
        self._stopping.set()
        for w in list(self._watches):
            w.stop()
        if self._pending is not None:
            self._pending.cancel()
        self.reservations.close()
        if self.elector is not None:        # a successor need not wait for the lease to expire
            await asyncio.to_thread(self.elector.stop)

    # -- who writes status ---------------------------------------------------------------

    def writes_status(self) -> bool:
        """Status is written by the leader only (every replica serves); with leader_election
        off, by every replica."""
        if not self.settings.write_status:
            return False
        return self.settings.leader_election is None or (self.elector is not None and self.elector.is_leader)

    def _campaign(self) -> None:
        """(Its thread) Campaign for the status writer's Lease in the first Gateway API cluster."""
        from gateway.gatewayapi.leader import LeaderElector
        election = self.settings.leader_election
        api = self._api_or_stop(self.route_clusters[0], "leader-election")
        if api is None:
            return
        self.elector = LeaderElector(
            api, election.namespace or os.environ.get("POD_NAMESPACE") or "default",
            election.name or lease_name(self.settings.controller_name),
            lease_duration=election.lease_duration, renew_deadline=election.renew_deadline,
            retry_period=election.retry_period, on_started_leading=self._started_leading,
            on_new_leader=lambda who: log.info("status writer", extra={"fields": {"leader": who}}))
        self.elector.start(self._loop)
        if self._stopping.is_set():         # stopped meanwhile
            self.elector.stop()

    def _started_leading(self) -> None:
        log.info("this replica writes status", extra={"fields": {"identity": self.elector.identity}})
        self._status_due = None             # every status again: what the previous writer left undone
        self._schedule()

    def set_file(self, file_services: dict, taken: frozenset[tuple[str, int]], global_limits: bool) -> None:
        """The file changed (a reload): backendRefs to its services use the file's settings,
        Gateways keep off its listeners' ports, global rate limits follow its "redis"."""
        self._file_services = file_services
        self.taken = taken
        self.global_limits = global_limits
        self._world_version += 1
        self._schedule()

    def addressing(self) -> Addressing:
        pool = self.settings.addresses or tuple(dict.fromkeys(host for host, _ in sorted(self.taken))) or ("0.0.0.0",)
        pod_ip = os.environ.get("POD_IP")
        return Addressing(pool=pool, taken=self.taken, unbindable=dict(self._unbindable),
                          advertised={a: pod_ip for a in pool if a in UNSPECIFIED and pod_ip})

    def api(self, cluster: str):
        return self._apis.get(cluster)

    # -- the list+watch loop (its thread) ---------------------------------------------

    def _api_for(self, cluster: SourceConfig):
        from gateway.sources.kubernetes import api_client
        api = self._apis.get(cluster.name)
        if api is None:
            api = self._apis[cluster.name] = api_client(cluster)
        return api

    def _list_fn(self, api, store, group, version, plural, namespace):
        from kubernetes import client
        if plural == "secrets":
            # Only TLS and Opaque Secrets: the API server filters, so service account tokens
            # and the like never reach us.
            secret_type = CREDENTIALS_TYPE if store == "credentials" else TLS_SECRET_TYPE
            core, selector = client.CoreV1Api(api), {"field_selector": f"type={secret_type}"}
            if namespace:
                return core.list_namespaced_secret, {"namespace": namespace, **selector}
            return core.list_secret_for_all_namespaces, selector
        if plural == "configmaps":
            core = client.CoreV1Api(api)
            if namespace:
                return core.list_namespaced_config_map, {"namespace": namespace}
            return core.list_config_map_for_all_namespaces, {}
        if group is None:
            core = client.CoreV1Api(api)
            return {"services": core.list_service_for_all_namespaces,
                    "namespaces": core.list_namespace}[plural], {}
        custom = client.CustomObjectsApi(api)
        return custom.list_cluster_custom_object, {"group": group, "version": version, "plural": plural}

    def _run(self, cluster: SourceConfig, kind: tuple, loop_name: str, namespace: str | None) -> None:
        from gateway.sources.listwatch import Handlers, list_and_watch
        from gateway.sources.discovery import Kind, is_optional
        store, group, version, plural, _ = kind
        api = self._api_or_stop(cluster, loop_name)
        if api is None:
            return
        list_fn, kwargs = self._list_fn(api, store, group, version, plural, namespace)
        def gone() -> None:                         # its CRD was deleted: pending again
            self._post(self._absent, cluster.name, store, loop_name)
            self._kinds[cluster.name].lost(Kind(group, version, plural))

        def plain(obj) -> dict:                     # core API models -> the dicts custom objects are
            obj = obj if isinstance(obj, dict) else api.sanitize_for_serialization(obj)
            # A Secret is read here, in the watch's thread, once per version: its key stays out
            # of the loop's objects and the certificate is checked before any listener uses it.
            if store == "secrets":
                return tls_secret(obj)
            if store == "ca_maps":
                return ca_config_map(obj)
            return credential_secret(obj) if store == "credentials" else obj

        list_and_watch(list_fn, kwargs, self._stopping, self._watches, Handlers(
            listed=lambda items: self._post(self._replace, cluster.name, store,
                                            [plain(o) for o in items], loop_name, namespace),
            event=lambda kind_, obj: self._post(self._event, cluster.name, store, kind_, plain(obj)),
            failed=lambda error: self._post(self._failed, loop_name, error),
            gone=gone if is_optional(group) else None))

    def _api_or_stop(self, cluster: SourceConfig, loop_name: str):
        """The cluster's ApiClient, retried until it builds; None once stopping."""
        from gateway.sources.listwatch import BACKOFF_MAX
        while not self._stopping.is_set():
            try:
                return self._api_for(cluster)
            except Exception as exc:                # bad kubeconfig, unreachable at start ...
                self._post(self._failed, loop_name, f"{type(exc).__name__}: {exc}")
                if self._stopping.wait(BACKOFF_MAX):
                    return None
        return None

    # -- optional kinds: watched where the cluster serves them (gateway.sources.discovery) ---

    def _discover(self, cluster: SourceConfig, optional: dict) -> None:
        """(Its thread.) Start the loops of the optional kinds the cluster serves, now or once
        their CRDs appear; a kind it does not serve is not waited for."""
        from gateway.sources.discovery import OptionalKinds
        name = f"{cluster.name}/discovery"
        api = self._api_or_stop(cluster, name)
        if api is None:
            return

        def served(kind) -> None:
            (kind_, loop_name) = optional[kind]
            self._post(self._loops.add, loop_name)      # before its list: waited for again
            self._spawn(cluster, kind_, loop_name, None)

        kinds = self._kinds[cluster.name] = OptionalKinds(
            optional, on_served=served,
            on_absent=lambda kind: self._post(self._absent, cluster.name, optional[kind][0][0], optional[kind][1]),
            on_error=lambda error: self._post(self._discovery_failed, name, error))
        kinds.run(api, self._stopping)

    def _absent(self, cluster: str, store: str, loop_name: str) -> None:
        """The cluster does not serve this kind (no CRD, or it was deleted): it has none of its
        objects, and nothing waits for its list."""
        log.info("kind not served by this cluster: watched once its CRD is installed",
                 extra={"fields": {"loop": loop_name}})
        self._loops.discard(loop_name)
        self._synced_loops.discard(loop_name)
        self.errors.pop(loop_name, None)
        if self._objects.pop((cluster, store), None):
            self._world_changed(store)
        if self._synced_loops >= self._loops:
            self._set_synced()

    def _discovery_failed(self, name: str, error: str | None) -> None:
        if error is None:
            self.errors.pop(name, None)             # answered again
        else:
            self._failed(name, error)

    def _post(self, fn, *args) -> None:
        if self._stopping.is_set() or self._loop is None or self._loop.is_closed():
            return
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass

    # -- state (loop thread) ------------------------------------------------------------

    def _replace(self, cluster: str, store: str, items: list[dict], loop_name: str,
                 namespace: str | None = None) -> None:
        """The list of one loop; a namespaced loop replaces that namespace's objects only."""
        kept = {} if namespace is None else {key: obj for key, obj in self._objects.get((cluster, store), {}).items()
                                             if key[0] != namespace}
        self._objects[(cluster, store)] = {**kept, **{_key(obj): obj for obj in items}}
        self._unmerged.add(store)
        self._synced_loops.add(loop_name)
        self.errors.pop(loop_name, None)
        if self._synced_loops >= self._loops:
            self._set_synced()
        self._world_changed(store)

    def _set_synced(self) -> None:
        """Every watch has listed once: this replica sees the whole world, and only then
        may it campaign to write status (one denied a kind, say Services by its RBAC, would
        write what it cannot see, or hold the Lease and write nothing)."""
        if self._synced.is_set():
            return
        self._synced.set()
        if self.settings.write_status and self.settings.leader_election is not None and self.route_clusters:
            threading.Thread(target=self._campaign, daemon=True, name="gwapi-leader").start()

    def _event(self, cluster: str, store: str, kind: str, obj: dict) -> None:
        table = self._objects.setdefault((cluster, store), {})
        key = _key(obj)
        before = table.get(key)
        if kind == "DELETED":
            table.pop(key, None)
            self._written.pop((store, key), None)
        else:
            table[key] = obj
        self._merge_key(store, key)
        if store == "credentials" and key not in self._policy_memo.secrets_read:
            return          # no policy names it: nothing to translate again
        if store == "ca_maps" and (self.translation is None or key not in self.translation.ca_maps_read):
            return          # no Gateway's client validation names it
        # A status write (ours, mostly) changes nothing the translation reads: the route's
        # translation stays good for the object that carries it.
        if kind == "DELETED" or before is None or _without_status(before) != _without_status(obj):
            self._world_changed(store)
        elif store == "routes":
            self._memo.carry(key, before, obj)
            if self._status_due is not None:
                self._status_due.add(key)       # someone else's write: ours may need writing again

    def _world_changed(self, store: str) -> None:
        if store != "routes":
            self._world_version += 1
        self._schedule()

    def _failed(self, loop_name: str, error: str) -> None:
        if self.errors.get(loop_name) != error:
            log.warning("Gateway API watch failing", extra={"fields": {"loop": loop_name, "error": error}})
        self.errors[loop_name] = error

    def _schedule(self) -> None:
        if self._pending is None and self._loop is not None:
            self._pending = self._loop.call_later(SETTLE, self._translate)

    def world(self) -> tuple[World, dict]:
        """The objects of every cluster as one world, and per store each object's cluster
        (for status).

        Route kinds: the first cluster of ``gateway_api.sources`` holding an object wins;
        Services and ServiceImports: a key exists if any associated cluster has it."""
        for store in self._unmerged:
            self._merged[store] = self._merge(store)
        self._unmerged.clear()
        world = World(self.settings.controller_name, version=self._world_version, global_limits=self.global_limits,
                      **{store: self._merged[store][0] for store in WORLD_STORES})
        return world, {store: self._merged[store][1] for store in WORLD_STORES}

    def _merge_key(self, store: str, key: tuple[str, str]) -> None:
        """One object of ``store`` changed in one cluster: the world's entry for its key."""
        if store in self._unmerged:
            return                              # merged whole at the next translation
        merged, origin = self._merged[store]
        name = key[1] if store in _BY_NAME else key
        value = _WORLD_VALUE.get(store)
        for cluster in self._clusters_of(store):
            obj = self._objects.get((cluster.name, store), {}).get(key)
            if obj is not None:
                merged[name] = obj if value is None else value(obj)
                origin[name] = cluster.name
                return
        merged.pop(name, None)
        origin.pop(name, None)

    def _clusters_of(self, store: str) -> list[SourceConfig]:
        return self.all_clusters if store in _EVERY_CLUSTER else self.route_clusters

    def _merge(self, store: str) -> tuple[dict, dict]:
        merged, origin = {}, {}
        value = _WORLD_VALUE.get(store)
        by_name = store in _BY_NAME
        for cluster in self._clusters_of(store):
            for key, obj in self._objects.get((cluster.name, store), {}).items():
                name = key[1] if by_name else key
                if name not in merged:
                    merged[name] = obj if value is None else value(obj)
                    origin[name] = cluster.name
        return merged, origin

    def _translate(self) -> None:
        self._pending = None
        world, origin = self.world()
        # Hold the listeners' ports; one that cannot be bound is not served, and its
        # listener says why (a second translation with that fact).  Each translation tries
        # every port again: one freed meanwhile is taken.
        self._unbindable = {}
        translation = translate(world, self._file_services, self.addressing(), self._memo, self._policy_memo)
        unbindable = self.reservations.hold({(l.address, l.port) for l in translation.listeners})
        if unbindable:
            log.warning("cannot listen for Gateway listeners", extra={"fields": {
                "ports": {f"{a}:{p}": why for (a, p), why in unbindable.items()}}})
            self._unbindable = unbindable
            translation = translate(world, self._file_services, self.addressing(), self._memo, self._policy_memo)
            self.reservations.hold({(l.address, l.port) for l in translation.listeners})
        previous = self.translation
        self.translation = translation
        if previous is None or _served(translation) != _served(previous):
            try:
                self.on_change(translation)
            except Exception:
                log.exception("applying the Gateway API routes failed")
        if self._synced.is_set() and self.writes_status():
            self._write_statuses(world, origin, translation)
        else:
            self._status_due = None             # this translation's changes are not written

    # -- status ------------------------------------------------------------------------

    def _write_statuses(self, world: World, origin: dict, t: Translation) -> None:
        writes = []
        for name, status in t.class_status.items():
            writes.append(("classes", ("", name), world.classes[name], status))
        for key, status in t.gateway_status.items():
            writes.append(("gateways", key, world.gateways[key], status))
        for key, status in t.listener_set_status.items():
            writes.append(("listener_sets", key, world.listener_sets[key], status))
        due, self._status_due = self._status_due, set()
        for key in t.route_status if t.changed is None or due is None else t.changed | due:
            parents = t.route_status.get(key)
            if parents is None:
                continue            # gone, or no parentRef to a Gateway of ours
            route = world.routes[key]
            others = [p for p in (route.get("status") or {}).get("parents") or ()
                      if p.get("controllerName") != self.settings.controller_name]
            writes.append(("routes", key, route, {"parents": parents + others}))
        for store, statuses in (("grpc_routes", t.grpc_route_status), ("tls_routes", t.tls_route_status)):
            for key, parents in statuses.items():
                route = getattr(world, store)[key]
                others = [p for p in (route.get("status") or {}).get("parents") or ()
                          if p.get("controllerName") != self.settings.controller_name]
                writes.append((store, key, route, {"parents": parents + others}))
        for (store, key), status in t.policy_status.items():
            policy = getattr(world, store)[key]
            others = [a for a in (policy.get("status") or {}).get("ancestors") or ()
                      if a.get("controllerName") != self.settings.controller_name]
            writes.append((store, key, policy, {"ancestors": status["ancestors"] + others}))
        for store, key, obj, status in writes:
            current = self._current_status(store, key, obj)
            status = with_transition_times(status, current)
            if status != current:
                cluster = origin[store].get(key[1] if store in _BY_NAME else key)
                if cluster is not None:
                    self._written[(store, key)] = (status, 1 << 62)     # until the write answers
                    self._loop.run_in_executor(None, self._write_status, cluster, store, key, status)

    def _current_status(self, store: str, key: tuple[str, str], obj: dict) -> dict:
        """The object's status as it is on the server: what we last wrote while the watch
        has not yet shown our write, else what the watch shows."""
        seen = obj.get("status") or {}
        written = self._written.get((store, key))
        if written is None:
            return seen
        try:
            if int(obj["metadata"].get("resourceVersion", "0")) >= written[1]:
                del self._written[(store, key)]
                return seen
        except ValueError:          # not a number on this server: trust the watch
            return seen
        return written[0]

    def _wrote(self, store: str, key: tuple[str, str], status: dict, result: dict | None) -> None:
        """A status write answered (loop thread): ``result`` the object, None if it failed."""
        if result is None:
            self._written.pop((store, key), None)
            if store == "routes" and self._status_due is not None:
                self._status_due.add(key)                   # to be tried again
            return
        try:
            self._written[(store, key)] = (status, int(result["metadata"]["resourceVersion"]))
        except (KeyError, TypeError, ValueError):
            self._written.pop((store, key), None)

    def _write_status(self, cluster: str, store: str, key: tuple[str, str], status: dict) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException
        group, version, plural = STATUS_KINDS[store]
        custom = client.CustomObjectsApi(self._apis[cluster])
        result = None
        if not self.writes_status():        # leadership lost since the write was queued
            self._post(self._wrote, store, key, status, None)
            return
        try:
            if key[0]:
                result = custom.patch_namespaced_custom_object_status(group, version, key[0], plural,
                                                                      key[1], {"status": status})
            else:
                result = custom.patch_cluster_custom_object_status(group, version, plural, key[1],
                                                                   {"status": status})
            self.status_writes += 1
        except ApiException as exc:
            if exc.status != 404:   # deleted meanwhile: nothing to report on
                log.warning("status write failed", extra={"fields": {
                    "cluster": cluster, "kind": plural, "name": "/".join(k for k in key if k),
                    "error": f"{exc.status} {exc.reason}"}})
        except Exception as exc:
            log.warning("status write failed", extra={"fields": {"cluster": cluster, "error": str(exc)}})
        finally:
            self._post(self._wrote, store, key, status, result)

    def status(self) -> dict:
        t = self.translation
        return {"controller_name": self.settings.controller_name,
                "clusters": [c.name for c in self.route_clusters],
                "synced": self._synced.is_set(), "errors": dict(self.errors),
                "routes": len(t.routes) if t else 0, "listeners": len(t.listeners) if t else 0,
                "status_writes": self.status_writes, "writes_status": self.writes_status(),
                "leader_election": self.elector.status() if self.elector is not None else None}


def _loop_label(kind: tuple) -> str:
    """A watch loop's name in logs and errors: the kind's plural (Opaque Secrets told apart)."""
    return "secrets-opaque" if kind is CREDENTIALS else kind[3]


def lease_name(controller_name: str) -> str:
    """The status writer's Lease for a controller name: every version of one controller
    (a rolling upgrade) campaigns for the same one."""
    name = re.sub(r"[^a-z0-9.-]+", "-", controller_name.lower()).strip("-.")
    return f"{name[:230]}-status-writer"


def _served(t: Translation) -> tuple:
    """What of a translation the data plane uses (statuses aside)."""
    return t.routes, t.services, t.listeners, t.tls_routes


def _without_status(obj: dict) -> tuple:
    """What of an object a translation reads: all but its status and bookkeeping."""
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion", "managedFields")}
    return meta, {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def tls_secret(obj: dict) -> dict:
    """A watched Secret as the translation reads it: metadata and a TlsSecret (PEM pair or problem)."""
    import base64
    import ssl
    from gateway.config import Certificate
    from gateway.tls import load_certificate
    data = obj.get("data") or {}
    meta = {"namespace": obj["metadata"].get("namespace", ""), "name": obj["metadata"]["name"]}
    if obj.get("type") != TLS_SECRET_TYPE:
        return {"metadata": meta, "secret": TlsSecret(problem=f"type is {obj.get('type')!r}, not {TLS_SECRET_TYPE}")}
    try:
        cert, key = (base64.b64decode(data[k]).decode() for k in ("tls.crt", "tls.key"))
        load_certificate(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), Certificate(cert, key, pem=True))
    except KeyError as exc:
        return {"metadata": meta, "secret": TlsSecret(problem=f"no {exc.args[0]} in data")}
    except (ssl.SSLError, ValueError, OSError) as exc:     # ValueError: bad base64 or UTF-8
        return {"metadata": meta, "secret": TlsSecret(problem=f"tls.crt/tls.key do not load: {exc}")}
    return {"metadata": meta, "secret": TlsSecret(cert, key)}


def ca_config_map(obj: dict) -> dict:
    """A watched ConfigMap as a caCertificateRef sees it: metadata and a CaBundle (its
    ``ca.crt``, checked to load, or the problem); nothing else of it is kept."""
    from gateway.config import ca_bundle_problem
    meta = {"namespace": obj["metadata"].get("namespace", ""), "name": obj["metadata"]["name"]}
    ca = (obj.get("data") or {}).get("ca.crt")
    if ca is None:
        return {"metadata": meta, "bundle": CaBundle(problem="no ca.crt in data")}
    problem = ca_bundle_problem(ca)
    return {"metadata": meta, "bundle": CaBundle(problem=f"ca.crt: {problem}") if problem else CaBundle(ca)}


def credential_secret(obj: dict) -> dict:
    """A watched Opaque Secret as policies read it: metadata and its data decoded (a value that
    is not UTF-8 text is left out: no credential format here is binary)."""
    import base64
    data = {}
    for name, value in (obj.get("data") or {}).items():
        try:
            data[name] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            continue
    meta = {"namespace": obj["metadata"].get("namespace", ""), "name": obj["metadata"]["name"]}
    return {"metadata": meta, "data": data}


def with_transition_times(status: dict, old: dict) -> dict:
    """``status`` with each condition's lastTransitionTime: kept from ``old`` when that
    condition's status did not change (the API convention), now otherwise."""
    def conditions(new: list, before: list) -> list:
        by_type = {c.get("type"): c for c in before or ()}
        out = []
        for c in new:
            prev = by_type.get(c["type"])
            same = prev is not None and prev.get("status") == c["status"]
            out.append({**c, "lastTransitionTime": prev.get("lastTransitionTime") if same and
                        prev.get("lastTransitionTime") else _now()})
        return out

    result = dict(status)
    if "conditions" in status:
        result["conditions"] = conditions(status["conditions"], old.get("conditions"))
    if "listeners" in status:
        before = {l.get("name"): l for l in old.get("listeners") or ()}
        result["listeners"] = [{**l, "conditions": conditions(l["conditions"],
                                                              (before.get(l["name"]) or {}).get("conditions"))}
                               for l in status["listeners"]]
    # A route's parents, a policy's ancestors: conditions per referenced Gateway.
    for entries, ref in (("parents", "parentRef"), ("ancestors", "ancestorRef")):
        if entries not in status:
            continue
        before = {repr(sorted((p.get(ref) or {}).items())): p for p in old.get(entries) or ()}
        result[entries] = [p if "conditions" not in p or p.get("controllerName") is None else
                           {**p, "conditions": conditions(
                               p["conditions"], (before.get(repr(sorted(p[ref].items()))) or {}).get("conditions"))}
                           for p in status[entries]]
    return result
