"""The local API server's storage: objects, one global resourceVersion, a bounded event history.

It plays etcd plus the watch cache. Every write bumps a global counter (the ``resourceVersion``
of the written object, as with etcd's revision) and appends an event to the history. A watch
may resume from any resourceVersion still covered by the history; older ones are "compacted"
and answered with 410 Expired. A list at an exact older resourceVersion (and a ``continue``
token, which pins one) is rebuilt by undoing the newer events, again within the history.

State is kept in memory and rewritten to ``state.json`` after every write (atomically, by
rename), so a restarted or SIGKILLed server comes back with the same objects, the same
resourceVersions and the same history.
"""
from __future__ import annotations

import os
import uuid
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import orjson

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"

Key = tuple[str, str]          # (namespace, name); namespace "" for cluster-scoped objects


class Expired(Exception):
    """The requested resourceVersion is older than the history: 410 Gone, reason Expired."""

    def __init__(self, requested: int, oldest: int) -> None:
        self.requested, self.oldest = requested, oldest
        super().__init__(f"too old resource version: {requested} ({oldest})")


class Event:
    """One write. ``obj`` is the object after it (for DELETED: its last state at the delete's
    resourceVersion); ``prev`` the object before it (None for ADDED)."""

    __slots__ = ("rv", "type", "resource", "obj", "prev")

    def __init__(self, rv: int, type: str, resource: str, obj: dict, prev: dict | None) -> None:
        self.rv, self.type, self.resource, self.obj, self.prev = rv, type, resource, obj, prev

    def to_json(self) -> list:
        return [self.rv, self.type, self.resource, self.obj, self.prev]


def key_of(obj: dict) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_rv(obj: dict, rv: int) -> dict:
    """A shallow copy of ``obj`` with metadata.resourceVersion = rv (stored dicts are never mutated)."""
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}


class Store:
    """Objects per resource, the global resourceVersion, history and subscribers."""

    def __init__(self, path: Path | None, history_size: int = 1000) -> None:
        self.path = path
        self.rv = 0
        self.compacted_rv = 0        # events with rv <= this are gone from the history
        self.history: deque[Event] = deque()
        self.history_size = history_size
        self.objects: dict[str, dict[Key, dict]] = {}
        self.subscribers: set[Callable[[Event], None]] = set()
        if path is not None and path.exists():
            self._load(path)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, resource: str, key: Key) -> dict | None:
        return self.objects.get(resource, {}).get(key)

    def items(self, resource: str) -> list[dict]:
        """All objects of ``resource`` in key order (namespace, name), like etcd's key order."""
        table = self.objects.get(resource, {})
        return [table[key] for key in sorted(table)]

    def items_at(self, resource: str, rv: int) -> list[dict]:
        """The objects of ``resource`` as they were at ``rv``; raises Expired outside the history."""
        if rv >= self.rv:
            return self.items(resource)
        if rv < self.compacted_rv:
            raise Expired(rv, self.compacted_rv)
        table = dict(self.objects.get(resource, {}))
        for event in reversed(self.history):
            if event.rv <= rv:
                break
            if event.resource != resource:
                continue
            key = key_of(event.obj)
            if event.type == ADDED:
                table.pop(key, None)
            else:
                table[key] = event.prev
        return [table[key] for key in sorted(table)]

    def events_after(self, rv: int) -> list[Event]:
        """Events with resourceVersion > rv; raises Expired if some of them are compacted."""
        if rv < self.compacted_rv:
            raise Expired(rv, self.compacted_rv)
        events = []
        for event in reversed(self.history):
            if event.rv <= rv:
                break
            events.append(event)
        events.reverse()
        return events

    # -- writes --------------------------------------------------------------------------------

    def create(self, resource: str, obj: dict) -> dict:
        """Store a new object (caller checked it does not exist) with uid and timestamps."""
        rv = self.rv + 1
        meta = {**obj["metadata"], "uid": str(uuid.uuid4()),
                "creationTimestamp": now_rfc3339(), "resourceVersion": str(rv)}
        stored = {**obj, "metadata": meta}
        self._commit(Event(rv, ADDED, resource, stored, None))
        return stored

    def update(self, resource: str, obj: dict, old: dict) -> dict:
        """Replace ``old`` by ``obj``, keeping the fields the server owns."""
        rv = self.rv + 1
        old_meta = old["metadata"]
        meta = {**obj["metadata"], "uid": old_meta["uid"],
                "creationTimestamp": old_meta["creationTimestamp"], "resourceVersion": str(rv)}
        stored = {**obj, "metadata": meta}
        self._commit(Event(rv, MODIFIED, resource, stored, old))
        return stored

    def delete(self, resource: str, old: dict) -> dict:
        """Remove ``old``; returns its last state at the delete's resourceVersion."""
        rv = self.rv + 1
        last = with_rv(old, rv)
        self._commit(Event(rv, DELETED, resource, last, old))
        return last

    def expire_history(self) -> int:
        """Compact everything: any watch or exact list from a past resourceVersion gets 410.

        The resourceVersion is bumped (as unrelated writes do on a real cluster) so that even a
        client whose last seen version is the current one must relist.
        """
        self.rv += 1
        self.compacted_rv = self.rv
        self.history.clear()
        self._save()
        return self.rv

    def _commit(self, event: Event) -> None:
        table = self.objects.setdefault(event.resource, {})
        key = key_of(event.obj)
        if event.type == DELETED:
            del table[key]
        else:
            table[key] = event.obj
        self.rv = event.rv
        self.history.append(event)
        while len(self.history) > self.history_size:
            self.compacted_rv = self.history.popleft().rv
        self._save()
        for notify in list(self.subscribers):
            notify(event)

    # -- persistence ---------------------------------------------------------------------------

    def _save(self) -> None:
        if self.path is None:
            return
        state = {"resourceVersion": self.rv, "compactedResourceVersion": self.compacted_rv,
                 "objects": {res: list(table.values()) for res, table in self.objects.items()},
                 "history": [event.to_json() for event in self.history]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(state))
        os.replace(tmp, self.path)   # atomic: a crash leaves the old or the new state, never half

    def _load(self, path: Path) -> None:
        state = orjson.loads(path.read_bytes())
        self.rv = state["resourceVersion"]
        self.compacted_rv = state["compactedResourceVersion"]
        for resource, objects in state["objects"].items():
            self.objects[resource] = {key_of(obj): obj for obj in objects}
        self.history.extend(Event(*item) for item in state["history"])
