"""The Gateway API translation with its memo gives what a translation from scratch gives.

``RouteMemo`` keeps each HTTPRoute's translation and the sums over them (order, status,
attached routes, Service ports) across translations, and translates again only the routes
that changed.  Here random sequences of HTTPRoute additions, changes, status-only changes
and removals, with Gateway changes among them, are translated both ways after each step:
the routes, services, statuses and listeners must be equal, and the keys the memo names as
changed must cover every route whose status or configs differ from the step before.
"""
from __future__ import annotations

import copy

from hypothesis import example, given, settings, strategies as st

from gateway.gatewayapi.translate import RouteMemo, World, translate

CONTROLLER = "gateway.example/multi-cluster"


def _world() -> World:
    world = World(CONTROLLER)
    world.classes["ours"] = {"metadata": {"name": "ours"}, "spec": {"controllerName": CONTROLLER}}
    for name, listeners in (("gw", [{"name": "http", "port": 8000, "protocol": "HTTP"},
                                    {"name": "a", "port": 8000, "protocol": "HTTP", "hostname": "a.example.com"}]),
                            ("other", [{"name": "http", "port": 8001, "protocol": "HTTP"}])):
        world.gateways[("default", name)] = {"metadata": {"name": name, "namespace": "default", "generation": 1},
                                             "spec": {"gatewayClassName": "ours", "listeners": listeners}}
    world.services[("default", "s1")] = [{"name": "http", "port": 80}]
    world.services[("default", "s2")] = [{"name": "http", "port": 81}, {"name": "alt", "port": 82}]
    return world


def _route(name: int, second: int, parent: str, section: str | None, path: str, service: str, port: int,
           hostnames: list[str]) -> dict:
    ref = {"name": parent, **({"sectionName": section} if section else {})}
    return {"metadata": {"name": f"r{name}", "namespace": "default", "generation": 1,
                         "creationTimestamp": f"2026-12-06T10:00:{second:02d}Z"},
            "spec": {"parentRefs": [ref], "hostnames": hostnames, "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                "backendRefs": [{"name": service, "port": port}]}]}}


route = st.builds(_route, st.integers(0, 7), st.integers(0, 3), st.sampled_from(["gw", "other", "elsewhere"]),
                  st.sampled_from([None, "http", "a"]), st.sampled_from(["/", "/a", "/b/c"]),
                  st.sampled_from(["s1", "s2", "missing"]), st.sampled_from([80, 81, 82]),
                  st.sampled_from([[], ["a.example.com"], ["b.example.com"]]))
step = st.one_of(st.tuples(st.just("put"), route), st.tuples(st.just("remove"), st.integers(0, 7)),
                 st.tuples(st.just("status"), st.integers(0, 7)), st.tuples(st.just("gateway"), st.integers(0, 1)))


def _moved(before, after) -> set:
    """The routes whose status or configs are not what they were."""
    def configs(t):
        by_route: dict = {}
        for rc in t.routes:
            ns, name = rc.name.split(".")[:2]
            by_route.setdefault((ns, name), []).append(rc)
        return by_route
    old, new = configs(before), configs(after)
    return ({k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
            | {k for k in before.route_status.keys() | after.route_status.keys()
               if before.route_status.get(k) != after.route_status.get(k)})


def _served(t) -> tuple:
    return (t.routes, t.services, t.route_status, t.gateway_status, t.class_status, t.listeners)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=14))
@example(steps=[("put", _route(0, 0, "gw", None, "/", "s1", 80, [])),      # found by a loaded CI run:
                ("put", _route(1, 0, "gw", None, "/", "s1", 81, [])),      # r0 moves after r1 in the
                ("put", _route(0, 1, "gw", None, "/", "s1", 80, []))])     # order, so s1's port is r1's
def test_the_memo_gives_what_a_translation_from_scratch_gives(steps):
    world, memo = _world(), RouteMemo()
    before = translate(world, memo=memo)
    for kind, value in steps:
        key = ("default", f"r{value['metadata']['name'][1:] if kind == 'put' else value}")
        if kind == "put":
            world.routes[key] = value
        elif kind == "remove":
            world.routes.pop(key, None)
        elif kind == "status" and key in world.routes:
            old = world.routes[key]
            world.routes[key] = {**copy.deepcopy(old), "status": {"parents": []}}
            memo.carry(key, old, world.routes[key])     # as the controller does for a status write
        elif kind == "gateway":
            gw = world.gateways[("default", "gw")]
            listeners = gw["spec"]["listeners"][:1] if value else gw["spec"]["listeners"] + [
                {"name": "b", "port": 8000, "protocol": "HTTP", "hostname": "b.example.com"}]
            world.gateways[("default", "gw")] = {**gw, "spec": {**gw["spec"], "listeners": listeners}}
            world.version += 1
        after = translate(world, memo=memo)
        assert _served(after) == _served(translate(world))
        if after.changed is not None:
            assert _moved(before, after) <= after.changed
        before = after
