"""The messages between the control plane and its worker processes, and their one codec.

Both ends import this module (the supervisor to encode, a worker to decode), so the
format is defined once.  A frame is a 4-byte length and an orjson payload: a dict whose
``"t"`` names the message (see gateway.worker for the conversation).

Two messages carry the data-plane spec, the validated config a worker serves:

* ``config``: the whole spec (``SPEC_FIELDS`` of the ``Config``; the control plane's own
  fields, such as sources, kubeconfigs and admin tokens, are not sent), at start and
  whenever anything but the routes changed;
* ``routes``: the routes added or changed, and the keys of those removed, when only routes
  changed.  A route change then costs that route in every worker, not the whole table.

Dataclasses travel as JSON objects (orjson writes them natively) and are rebuilt from
their type hints; ``SPEC_VERSION`` changes whenever the spec changes shape, and a worker
refuses a spec of another version rather than misreading it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import struct
import types
import typing
from typing import Any, Callable, Iterable

import orjson

from gateway.config import Config, RouteConfig

SPEC_VERSION = 8                        # 2: tracing; 3: routes' edge policy, redis; 4: direct_reason; 5: access_log.otlp_endpoint;
                                        # 6: listeners' client_validation, services' port_in_key, BackendTLSPolicy TLS;
                                        # 7: TLS listeners (tls_mode) and tls_routes; 8: routes' session persistence
# What a worker reads of a Config; the other fields keep their defaults in a worker.
SPEC_FIELDS = ("listen", "tls", "workers", "access_log", "tracing", "timeouts", "limits", "http",
               "services", "routes", "route_order", "listeners", "tls_routes", "redis")
MESSAGE_LIMIT = 256 * 1024 * 1024       # a full view of 100,000 endpoints is ~5 MiB
_LENGTH = struct.Struct("!I")

RouteKey = tuple[str, str]              # (listener, route name): a name repeats across listeners


def encode(message: dict) -> bytes:
    """One frame; encoded once, the same bytes go to every worker."""
    payload = orjson.dumps(message)
    return _LENGTH.pack(len(payload)) + payload


async def read_message(reader: asyncio.StreamReader) -> dict | None:
    """The next message, or None when the peer closed the connection."""
    try:
        length, = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MESSAGE_LIMIT:
            raise ValueError(f"message of {length} bytes is over the limit")
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None
    return orjson.loads(payload)


# -- the data-plane spec ---------------------------------------------------------------------

def spec_message(config: Config) -> bytes:
    return encode({"t": "config", "version": SPEC_VERSION,
                   "spec": {name: getattr(config, name) for name in SPEC_FIELDS}})


def decode_spec(message: dict) -> Config:
    if message.get("version") != SPEC_VERSION:
        raise ValueError(f"data-plane spec version {message.get('version')!r}; this worker "
                         f"reads version {SPEC_VERSION} (a worker of another gateway version?)")
    return _decoder(Config)(message["spec"])


def route_key(rc: RouteConfig) -> RouteKey:
    return rc.listener, rc.name


def route_changes(before: Iterable[RouteConfig],
                  after: Iterable[RouteConfig]) -> tuple[list[RouteConfig], list[RouteKey]]:
    """(routes added or changed, keys of routes removed) from ``before`` to ``after``.

    Unchanged routes are usually the same objects (the Gateway API translation keeps a
    route's configs while the route is unchanged), so most comparisons are by identity."""
    before, after = tuple(before), tuple(after)
    if len(before) == len(after):
        # Most often a route changed in place: the same keys at the same positions.
        moved = [(b, a) for b, a in zip(before, after) if b is not a]
        if all((b.listener, b.name) == (a.listener, a.name) for b, a in moved):
            return [a for b, a in moved if b != a], []
    old = {(rc.listener, rc.name): rc for rc in before}       # route_key, inlined: 2,000 calls a change
    upserts = []
    for rc in after:
        previous = old.pop((rc.listener, rc.name), None)
        if previous is not rc and previous != rc:
            upserts.append(rc)
    return upserts, list(old)


def routes_message(upserts: list[RouteConfig], removed: list[RouteKey]) -> bytes:
    return encode({"t": "routes", "version": SPEC_VERSION, "upsert": upserts, "remove": removed})


def decode_routes(message: dict) -> tuple[list[RouteConfig], list[RouteKey]]:
    if message.get("version") != SPEC_VERSION:
        raise ValueError(f"routes message of spec version {message.get('version')!r}, "
                         f"expected {SPEC_VERSION}")
    route = _decoder(RouteConfig)
    return [route(r) for r in message["upsert"]], [tuple(k) for k in message["remove"]]


# -- rebuilding dataclasses from JSON, by their type hints ---------------------------------------

_decoders: dict[Any, Callable[[Any], Any]] = {}


def _decoder(hint: Any) -> Callable[[Any], Any]:
    """A function turning JSON (as orjson decodes it) into a value of type ``hint``;
    made once per type."""
    found = _decoders.get(hint)
    if found is None:
        found = _decoders[hint] = _make_decoder(hint)
    return found


def _identity(value: Any) -> Any:
    return value


def _make_decoder(hint: Any) -> Callable[[Any], Any]:
    if dataclasses.is_dataclass(hint):
        return _dataclass_decoder(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if all(_is_plain(a) for a in inner):
            return _identity                    # e.g. "int | str", "float | None"
        if len(inner) != 1:
            raise TypeError(f"the wire format cannot tell apart the members of {hint}")
        member = _decoder(inner[0])
        return lambda value: None if value is None else member(value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _decoder(args[0])
            return (lambda value: tuple(value)) if item is _identity else \
                (lambda value: tuple(item(v) for v in value))
        items = [_decoder(a) for a in args]
        return lambda value: tuple(f(v) for f, v in zip(items, value))
    if origin is None and hint is tuple:
        return lambda value: tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if _is_plain(hint):
        return _identity
    raise TypeError(f"the wire format has no decoder for {hint}")


def _is_plain(hint: Any) -> bool:
    """JSON gives the value as it is: a scalar, or a dict."""
    return hint in (str, int, float, bool, type(None), Any) or hint is dict or typing.get_origin(hint) is dict


def _dataclass_decoder(cls: type) -> Callable[[dict], Any]:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    _decoders[cls] = lambda value: build(value)     # found by a field of its own type meanwhile
    fields = [(name, _decoder(hints[name])) for name in names]

    def build(value: dict) -> Any:
        return cls(**{name: decode(value[name]) for name, decode in fields if name in value})
    return build
