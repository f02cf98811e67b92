"""Route deltas and the data-plane spec on the wire.

* Every field of every dataclass of the spec survives the wire (``gateway.wire``): a
  config with each field set to a value other than its default comes back equal.
* A sequence of route additions, changes and removals applied as deltas
  (``DataPlane.apply_routes``) gives every listener the Router a full rebuild of the
  resulting config gives: the same routes, in the same order, the same sockets' Routers.

Route changes through worker processes are exercised end to end by the reload, console and
Gateway API tests (``workers: 2``), and their cost by ``bench/httproutes.py``.
"""
from __future__ import annotations

import asyncio
import dataclasses
import types
import typing
from dataclasses import replace

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from gateway.config import (Config, GatewayListener, Limits, RouteConfig, RouteMatch, ServiceConfig, Timeouts,
                            WeightedBackend)
from gateway.dataplane import DataPlane, ProxyContext
from gateway.wire import (SPEC_FIELDS, SPEC_VERSION, decode_routes, decode_spec, route_changes, routes_message,
                          spec_message)


# -- the spec on the wire ---------------------------------------------------------------------

def _sample(hint, depth: int = 0):
    """A value of type ``hint`` unlike any default: non-empty, non-zero, set."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return hint(**{f.name: _sample(hints[f.name], depth + 1) for f in dataclasses.fields(hint) if f.init})
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _sample(inner[-1], depth)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return (_sample(args[0], depth), _sample(args[0], depth))
        return tuple(_sample(a, depth) for a in args)
    if hint is tuple:
        return (1, "rank", 2)
    if hint is dict or origin is dict:
        return {"k": [1, "v"]}
    return {str: f"value-{depth}", int: 7 + depth, float: 1.5 + depth, bool: True}[hint]


def _on_the_wire(frame: bytes) -> dict:
    return orjson.loads(frame[4:])


def test_every_field_of_the_spec_survives_the_wire():
    config = _sample(Config)
    sent = replace(Config(), **{name: getattr(config, name) for name in SPEC_FIELDS})
    assert decode_spec(_on_the_wire(spec_message(config))) == sent
    # The control plane's own fields stay home: sources (kubeconfigs), admin tokens.
    assert decode_spec(_on_the_wire(spec_message(config))).admin_token is None
    assert decode_spec(_on_the_wire(spec_message(config))).sources == ()
    upserts, removed = decode_routes(_on_the_wire(routes_message(list(config.routes), [("l", "gone")])))
    assert upserts == list(config.routes) and removed == [("l", "gone")]


def test_a_spec_of_another_version_is_refused():
    message = _on_the_wire(spec_message(Config()))
    message["version"] = SPEC_VERSION + 1
    with pytest.raises(ValueError, match="version"):
        decode_spec(message)


# -- deltas give what a full rebuild gives ------------------------------------------------------

LISTENERS = (GatewayListener("ns/gw/a", "127.0.0.1", 8000, False, "a.example.com"),
             GatewayListener("ns/gw/b", "127.0.0.1", 8000, False, None),
             GatewayListener("ns/gw/c", "127.0.0.2", 8001, False, None))
SERVICES = (ServiceConfig(namespace="default", name="s1", port=80),
            ServiceConfig(namespace="default", name="s2", port=80))

match = st.one_of(
    st.builds(lambda p: RouteMatch(path_prefix=p), st.sampled_from(["/", "/a", "/a/b", "/c/"])),
    st.builds(lambda p: RouteMatch(path_exact=p), st.sampled_from(["/a", "/a/b"])),
    st.builds(lambda p, m: RouteMatch(path_segment_prefix=p, methods=m),
              st.sampled_from(["/a", "/b"]), st.sampled_from([(), ("GET",)])),
    st.builds(lambda h: RouteMatch(path_prefix="/", hosts=h), st.sampled_from([("x.example.com",), ("*.example.com",)])),
)
route = st.builds(
    lambda name, listener, m, service, rank: RouteConfig(
        name=f"r{name}", match=m, backends=(WeightedBackend(service, 1),), listener=listener, rank=(1, rank, name)),
    st.integers(0, 9), st.sampled_from(["", "ns/gw/a", "ns/gw/b", "ns/gw/c"]), match,
    st.sampled_from(["default/s1", "default/s2"]), st.integers(0, 3))
edit = st.one_of(st.tuples(st.just("put"), route), st.tuples(st.just("remove"), st.integers(0, 30)))


def _tables(dp: DataPlane) -> dict:
    """What each Router tries, in order, by route name and listener."""
    def names(router):
        if router.dispatches:
            return ("by host", sorted((h, names(r)) for h, r in router.listener_exact.items()),
                    [(s, names(r)) for s, r in router.listener_wildcards],
                    names(router.listener_default) if router.listener_default else None)
        return [(m.target.name, m.path_kind) for m in router.matchers]
    return {"file": names(dp.ctx.router), **{str(pair): names(r) for pair, r in dp.port_routers.items()}}


@settings(max_examples=60, deadline=None)
@given(start=st.lists(route, max_size=12), edits=st.lists(edit, min_size=1, max_size=12))
def test_route_deltas_give_what_a_full_rebuild_gives(start, edits):
    async def run():
        loop = asyncio.get_running_loop()
        base = Config(services=SERVICES, listeners=LISTENERS, route_order="precedence")

        def config(routes):
            unique = {(rc.listener, rc.name): rc for rc in routes}     # keys are unique
            return replace(base, routes=tuple(unique.values()))
        current = config(start)
        incremental = DataPlane(ProxyContext(loop, Limits(), Timeouts()))
        incremental.apply_config(current)
        for kind, value in edits:
            routes = list(current.routes)
            if kind == "put":
                routes.append(value)
            elif routes:
                routes.pop(value % len(routes))
            changed = config(routes)
            incremental.apply_routes(*route_changes(current.routes, changed.routes))
            current = changed
            rebuilt = DataPlane(ProxyContext(loop, Limits(), Timeouts()))
            rebuilt.apply_config(current)
            assert _tables(incremental) == _tables(rebuilt)
    asyncio.run(run())


def test_unchanged_routes_are_not_sent_again():
    a = RouteConfig(name="a", match=RouteMatch(path_prefix="/a"), backends=(WeightedBackend("default/s1", 1),))
    b = replace(a, name="b")
    assert route_changes((a, b), (a, b)) == ([], [])
    assert route_changes((a, b), (replace(a), b)) == ([], [])           # equal, not the same object
    changed = replace(b, match=RouteMatch(path_prefix="/b"))
    assert route_changes((a, b), (a, changed)) == ([changed], [])
    assert route_changes((a, b), (b,)) == ([], [("", "a")])


@settings(max_examples=200, deadline=None)
@given(before=st.lists(route, max_size=8), after=st.lists(route, max_size=8), shuffle=st.randoms())
def test_route_changes_name_every_difference(before, after, shuffle):
    """Applied to ``before``, the changes give ``after``; a config not changed is not sent
    (the same keys at the same positions, the changes' usual shape, included)."""
    def unique(routes):
        return list({(rc.listener, rc.name): rc for rc in routes}.values())
    before = unique(before)
    after = unique(after) if shuffle.random() < 0.5 else [
        replace(rc, match=RouteMatch(path_prefix="/moved")) if shuffle.random() < 0.3 else rc for rc in before]
    upserts, removed = route_changes(before, after)
    state = {(rc.listener, rc.name): rc for rc in before}
    for key in removed:
        del state[key]
    for rc in upserts:
        state[(rc.listener, rc.name)] = rc
    assert state == {(rc.listener, rc.name): rc for rc in after}
    assert not any(rc in before for rc in upserts)
