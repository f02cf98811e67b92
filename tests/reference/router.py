"""First-match route matching in plain Python: the oracle and baseline for ``_speedups.router``.

A loop over the routes in declared order that returns the first route whose
conditions all hold; no index.  Routes are built from the same arguments as
``RouteMatcher`` (target, path kind and value, hosts, methods, header
conditions), and ``match`` takes any request head with ``method``, ``path``,
``host`` and ``header(lname)`` (the compiled ``RequestHead`` has them).
"""
from __future__ import annotations

from typing import Any, Iterable
from urllib.parse import unquote_to_bytes


def query_value(target: bytes, name: bytes) -> bytes | None:
    """The first ``name=`` parameter's value, decoded ("+" is a space), or None."""
    _, sep, query = target.partition(b"?")
    if not sep:
        return None
    for part in query.split(b"&"):
        key, _, value = part.partition(b"=")
        if unquote_to_bytes(key.replace(b"+", b" ")) == name:
            return unquote_to_bytes(value.replace(b"+", b" "))
    return None


class ReferenceRoute:
    def __init__(self, target: Any, path_kind: str, path_value: Any,
                 hosts: Iterable[str] = (), methods: Iterable[str] = (),
                 headers: Iterable[tuple] = (), queries: Iterable[tuple] = ()) -> None:
        if path_kind not in ("any", "prefix", "exact", "regex", "segment_prefix"):
            raise KeyError(path_kind)
        self.target, self.path_kind = target, path_kind
        self.path = path_value if path_kind == "regex" else (path_value or "/").encode()
        if path_kind == "segment_prefix":
            self.path = self.path.rstrip(b"/")
        self.queries = list(queries)    # (name bytes, exact|regex, value)
        hosts = list(hosts)
        self.hosts = {h.lower().encode() for h in hosts if not h.startswith("*.")}
        self.host_suffixes = [h[1:].lower().encode() for h in hosts if h.startswith("*.")]
        self.any_host = not hosts
        self.methods = {m.upper().encode() for m in methods} or None
        self.headers = list(headers)    # (lower-case name bytes, exact|present|absent|regex, value)

    def matches(self, head: Any, host: bytes) -> bool:
        path = head.path
        if self.path_kind == "prefix" and not path.startswith(self.path):
            return False
        if self.path_kind == "exact" and path != self.path:
            return False
        if self.path_kind == "segment_prefix" and not (
                path == self.path or path.startswith(self.path + b"/")):
            return False
        if self.path_kind == "regex" and not self.path.match(path.decode("latin-1")):
            return False
        if self.methods is not None and head.method not in self.methods:
            return False
        if not self.any_host and host not in self.hosts and not any(
                host.endswith(s) and len(host) > len(s) for s in self.host_suffixes):
            return False
        for lname, kind, expected in self.headers:
            value = head.header(lname)
            if kind == "present" and value is None:
                return False
            if kind == "absent" and value is not None:
                return False
            if kind == "exact" and value != expected:
                return False
            if kind == "regex" and (value is None or not expected.search(value.decode("latin-1"))):
                return False
        for name, kind, expected in self.queries:
            value = query_value(head.target, name)
            if value is None or (kind == "exact" and value != expected) or (
                    kind == "regex" and not expected.search(value.decode("latin-1"))):
                return False
        return True


def request_host(head: Any) -> bytes:
    """Host without the port, lower-cased ("[::1]:80" -> "[::1]")."""
    host = head.host or b""
    colon = host.rfind(b":")
    if colon >= 0 and host.find(b"]", colon) < 0:
        host = host[:colon]
    return host.lower()


class ReferenceRouter:
    def __init__(self, routes: Iterable[ReferenceRoute]) -> None:
        self.routes = list(routes)

    def match(self, head: Any) -> Any:
        host = request_host(head)
        for route in self.routes:
            if route.matches(head, host):
                return route.target
        return None
