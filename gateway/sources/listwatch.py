"""One list+watch loop for a resource, run in its own thread (the official client is synchronous).

1. list (paginated) and hand every item over at once, so a relist never shows an empty window;
2. watch from the list's resourceVersion with bookmarks; the resume point follows every event
   and bookmark;
3. on 410 Gone go back to 1; on any other failure back off with jitter and watch again from the
   last version seen: a LIST of a big cluster is the expensive call, and only 410 says the
   history it would replay is gone;
4. on 404, if the caller handles ``gone`` (an optional kind, ``gateway.sources.discovery``): the
   cluster no longer serves the resource (its CRD was deleted), and the loop ends.

Used by the Kubernetes endpoint source and the Gateway API controller; what they do with the
objects is theirs (the callbacks run in this thread: post them to the event loop).
"""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any, Callable

WATCH_TIMEOUT = 240             # seconds a watch request lasts before it is renewed
CONNECT_TIMEOUT = 3.0
# An API server sends a bookmark at least once a minute on a watch that asked for
# them: a longer silence means it hangs, and the loop starts over.
READ_TIMEOUT = 90
LIST_PAGE = 500
BACKOFF_MIN, BACKOFF_MAX = 0.2, 10.0


@dataclass
class Handlers:
    listed: Callable[[list], None]              # the whole list (a replace)
    event: Callable[[str, Any], None]           # ADDED / MODIFIED / DELETED, the object
    failed: Callable[[str], None]               # a failure, described in one line
    resumed: Callable[[], None] = lambda: None  # the first event after failures: nothing missed
    expired: Callable[[], None] = lambda: None  # a 410: about to relist
    # A 404 on the list or watch: the resource is no longer served. None: a failure like others
    # (a core kind is always served: a 404 there is a proxy or a server in trouble).
    gone: Callable[[], None] | None = None


def list_and_watch(list_fn, kwargs: dict, stopping: threading.Event, watches: list,
                   handlers: Handlers, on_list: Callable[[], None] | None = None) -> None:
    """Run until ``stopping`` is set.  ``watches`` holds the live Watch (so that stop can end it);
    ``on_list`` is called before each LIST (a counter, for tests)."""
    from kubernetes import watch
    from kubernetes.client.rest import ApiException
    failures = 0
    rv = None
    while not stopping.is_set():
        w = None
        try:
            if rv is None:
                if on_list is not None:
                    on_list()
                items, rv = _list_all(list_fn, kwargs)
                failures = 0
                handlers.listed(items)
            w = watch.Watch()
            watches.append(w)
            for event in w.stream(list_fn, resource_version=rv, allow_watch_bookmarks=True,
                                  timeout_seconds=WATCH_TIMEOUT,
                                  _request_timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), **kwargs):
                if stopping.is_set():
                    break
                if failures:
                    failures = 0
                    handlers.resumed()
                if event["type"] != "BOOKMARK":
                    handlers.event(event["type"], event["object"])
                rv = w.resource_version or rv   # bookmarks move it too
        except ApiException as exc:
            if stopping.is_set():
                break
            if exc.status == 410:               # our resourceVersion is too old: relist
                handlers.expired()
                rv = None
                continue
            if exc.status == 404 and handlers.gone is not None:
                handlers.gone()
                return
            failures += 1
            handlers.failed(f"API error {exc.status}: {exc.reason}")
        except Exception as exc:                # connection refused, reset, timeout, TLS ...
            if stopping.is_set():
                break
            failures += 1
            handlers.failed(f"{type(exc).__name__}: {exc}")
        finally:
            if w is not None:
                watches.remove(w)
        if failures:
            delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
            stopping.wait(delay)


def _list_all(list_fn, kwargs: dict) -> tuple[list, str]:
    items, token = [], None
    while True:
        page = list_fn(limit=LIST_PAGE, _continue=token, _request_timeout=(CONNECT_TIMEOUT, 30), **kwargs)
        if isinstance(page, dict):              # CustomObjectsApi answers plain dicts
            items.extend(page.get("items") or ())
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items, page["metadata"]["resourceVersion"]
        else:
            items.extend(page.items or ())
            token = page.metadata._continue
            if not token:
                return items, page.metadata.resource_version
