"""Waiting for status, ported from the Gateway API conformance suite's
``conformance/utils/kubernetes/helpers.go`` (kubernetes-sigs/gateway-api, Apache-2.0, Copyright
The Kubernetes Authors; commit in ``harness.UPSTREAM_COMMIT``): the same checks on the same
fields, polled every ``poll`` seconds up to the harness's deadlines.

One deliberate difference: where Go's poll function returns an error for conditions that are
not yet at the object's generation (GatewayMustHaveCondition), which ends the wait at once,
these keep polling: a stale condition is "not yet", never a pass.

Most waits end the test when they time out (Go's ``require``); the few that only mark it failed
and let it go on (Go's ``t.Errorf``: GatewayMustHaveAttachedListeners) call ``suite.errorf``,
and the test fails once it has run to its end (tests/conformance/conftest.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, TypeVar

GROUP = "gateway.networking.k8s.io"
SKIP_READINESS = "gateway-api/skip-this-for-readiness"      # GatewayExcludedFromReadinessChecks
T = TypeVar("T")


class NN(NamedTuple):
    """types.NamespacedName."""
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


class NotYet(str):
    """A falsy poll answer that says why (shown when the wait times out)."""

    def __bool__(self) -> bool:
        return False


def done_unless(problem: NotYet | None):
    """A poll answer: ``problem`` if there is one, else True. (Not ``problem or True``: a NotYet
    is falsy, so that would always be True.)"""
    return True if problem is None else problem


def poll(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """``check()``'s first truthy answer; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: "
                                 f"{last if isinstance(last, str) and last else repr(last)}")
        time.sleep(interval)


@dataclass(frozen=True)
class Condition:
    type: str
    status: str = ""            # "" matches any status
    reason: str = ""            # "" matches any reason


@dataclass
class ListenerStatus:
    name: str
    supported_kinds: list[tuple[str, str]]          # (group, kind)
    conditions: list[Condition]
    attached_routes: int


@dataclass
class RouteParentStatus:
    parent_ref: dict                                # group, kind, name, namespace (as the API has them)
    controller_name: str
    conditions: list[Condition]


@dataclass
class GatewayRef:
    """kubernetes.NewGatewayRef: a Gateway and listener names (none given: one empty name)."""
    nn: tuple
    listener_names: list[str] = field(default_factory=lambda: [""])


def gateway_ref(nn, *listener_names: str) -> GatewayRef:
    return GatewayRef(nn, list(listener_names) or [""])


@dataclass
class ResourceRef:
    """kubernetes.NewResourceRef: a Gateway or a ListenerSet (group, kind) and listener names."""
    group: str
    kind: str
    nn: tuple
    listener_names: list[str] = field(default_factory=lambda: [""])


def resource_ref(group_kind: tuple[str, str], nn, *listener_names: str) -> ResourceRef:
    return ResourceRef(group_kind[0], group_kind[1], nn, list(listener_names) or [""])


def _generation(obj: dict) -> int:
    return obj["metadata"].get("generation", 0)


def stale_conditions(obj: dict, conditions) -> list[dict]:
    """FilterStaleConditions: the conditions whose observedGeneration is not the object's generation."""
    return [c for c in conditions or () if c.get("observedGeneration") != _generation(obj)]


def _latest(obj: dict, conditions) -> NotYet | None:
    stale = stale_conditions(obj, conditions)
    if not stale:
        return None
    return NotYet(f"expected observedGeneration to be updated to {_generation(obj)} for all conditions, "
                  f"stale: {[(c.get('type'), c.get('observedGeneration')) for c in stale]}")


def find_condition(conditions, type_: str, status: str = "", reason: str = "") -> bool:
    """findConditionInList: "" status or reason matches any."""
    return any(c.get("type") == type_ and (not status or c.get("status") == status)
               and (not reason or c.get("reason") == reason) for c in conditions or ())


def conditions_match(expected: list[Condition], actual) -> bool:
    actual = list(actual or ())
    return len(actual) >= len(expected) and all(find_condition(actual, c.type, c.status, c.reason)
                                                for c in expected)


def _status(obj: dict | None) -> dict:
    return (obj or {}).get("status") or {}


# -- GatewayClass ---------------------------------------------------------------------------


def gwc_must_have_accepted_condition(suite, name: str, status: str = "") -> str:
    """GWCMustHaveAcceptedConditionTrue (status "True") / ...Any (""); its controllerName."""
    def check():
        gwc = suite.kube.get("GatewayClass", NN("", name))
        if gwc is None:
            return NotYet("no such GatewayClass")
        conditions = _status(gwc).get("conditions")
        if (stale := _latest(gwc, conditions)) is not None:
            return stale
        if not find_condition(conditions, "Accepted", status):
            return NotYet(f"conditions: {conditions}")
        return gwc["spec"]["controllerName"]
    return poll(check, suite.timeouts.condition, f"GatewayClass {name} to be Accepted {status or '(any)'}")


def gatewayclass_must_have_latest_conditions(suite, name: str) -> None:
    def check():
        gwc = suite.kube.get("GatewayClass", NN("", name))
        return done_unless(_latest(gwc, _status(gwc).get("conditions")))
    poll(check, suite.timeouts.condition, f"GatewayClass {name} conditions at its generation")


# -- Gateway --------------------------------------------------------------------------------


def gateway_must_have_latest_conditions(suite, gw) -> None:
    def check():
        gateway = suite.kube.get("Gateway", gw)
        if gateway is None:
            return NotYet("no such Gateway")
        return done_unless(_latest(gateway, _status(gateway).get("conditions")))
    poll(check, suite.timeouts.condition, f"Gateway {gw} conditions at its generation")


def gateway_must_have_condition(suite, gw, expected: Condition) -> None:
    def check():
        gateway = suite.kube.get("Gateway", gw)
        conditions = _status(gateway).get("conditions")
        if gateway is None or (stale := _latest(gateway, conditions)) is not None:
            return stale if gateway is not None else NotYet("no such Gateway")
        return find_condition(conditions, expected.type, expected.status, expected.reason) or \
            NotYet(f"conditions: {conditions}")
    poll(check, suite.timeouts.condition, f"Gateway {gw} to have {expected}")


def namespaces_must_be_ready(suite, namespaces: list[str]) -> None:
    """NamespacesMustBeReady: every Gateway of the namespaces (but those annotated to be skipped)
    Accepted and Programmed at its generation, and the namespace's pods ready (played pods are
    ready once their processes listen)."""
    def check():
        for ns in namespaces:
            for gateway in suite.kube.list("Gateway", ns):
                if (gateway["metadata"].get("annotations") or {}).get(SKIP_READINESS) == "true":
                    continue
                name = gateway["metadata"]["name"]
                conditions = _status(gateway).get("conditions")
                if (stale := _latest(gateway, conditions)) is not None:
                    return NotYet(f"Gateway {ns}/{name}: {stale}")
                if not find_condition(conditions, "Accepted", "True"):
                    return NotYet(f"Gateway {ns}/{name} not Accepted yet")
                if not find_condition(conditions, "Programmed", "True"):
                    return NotYet(f"Gateway {ns}/{name} not Programmed yet")
            if not suite.cluster.pods(ns):
                return NotYet(f"no pods deployed yet in namespace {ns}")
        return True
    poll(check, suite.timeouts.condition, f"namespaces {namespaces} to be ready")


def gateway_listeners_must_have_conditions(suite, gw, conditions: list[Condition],
                                           listener_names: tuple[str, ...] = ()) -> None:
    def check():
        gateway = suite.kube.get("Gateway", gw)
        pending = set(listener_names)
        for condition in conditions:
            for listener in _status(gateway).get("listeners") or ():
                if listener_names and listener["name"] not in listener_names:
                    continue
                if not find_condition(listener.get("conditions"), condition.type, condition.status,
                                      condition.reason):
                    return NotYet(f"listener {listener['name']} has no {condition}: {listener.get('conditions')}")
                pending.discard(listener["name"])
        return NotYet(f"listeners {sorted(pending)} have no status") if pending else True
    poll(check, suite.timeouts.condition, f"Gateway {gw} listeners to have {conditions}")


def gateway_and_httproutes_must_be_accepted(suite, ref: GatewayRef, *routes) -> str:
    """GatewayAndHTTPRoutesMustBeAccepted: the Gateway's address, each route's parent Accepted by
    it, and every listener Accepted, ResolvedRefs and Programmed."""
    return gateway_and_routes_must_be_accepted(suite, ref, "HTTPRoute", *routes)


def gateway_and_routes_must_be_accepted(suite, ref: GatewayRef, kind: str, *routes) -> str:
    """GatewayAndRoutesMustBeAccepted: as above, for routes of ``kind`` (HTTPRoute, GRPCRoute)."""
    address = suite.gateway_address(ref.nn, ref.listener_names[0])
    routes_and_parent_must_be_accepted(suite, ResourceRef(GROUP, "Gateway", ref.nn, ref.listener_names), kind,
                                       *routes)
    return address


_LISTENER_READY = [Condition("ResolvedRefs", "True"), Condition("Accepted", "True"), Condition("Programmed", "True")]


def routes_and_parent_must_be_accepted(suite, ref: ResourceRef, kind: str, *routes) -> None:
    """RoutesAndParentMustBeAccepted: each route (of ``kind``) has a parent naming the resource
    (its group, kind, name and namespace; the namespace required when the route is in another)
    Accepted by our controller, and every listener of the resource (a Gateway or a ListenerSet)
    is ResolvedRefs, Accepted and Programmed."""
    ns = ref.nn.namespace
    for route in routes:
        parents = [RouteParentStatus({"group": ref.group, "kind": ref.kind, "name": ref.nn.name, "namespace": ns},
                                     suite.controller_name, [Condition("Accepted", "True", "Accepted")])
                   for _ in ref.listener_names]
        httproute_must_have_parents(suite, route, parents, namespace_required=route.namespace != ns, kind=kind)
    resource_listeners_must_have_conditions(suite, ref, _LISTENER_READY)


def resource_listeners_must_have_conditions(suite, ref: ResourceRef, conditions: list[Condition]) -> None:
    """ResourceListenersMustHaveConditions: every listener of the Gateway or ListenerSet."""
    if ref.kind == "Gateway":
        gateway_listeners_must_have_conditions(suite, ref.nn, conditions)
    elif ref.kind == "ListenerSet":
        listenerset_listeners_must_have_conditions(suite, ref.nn, conditions)
    else:
        suite.errorf(f"received unsupported resource kind {ref.kind}. Supported kinds are `Gateway` and "
                     f"`ListenerSet`")


def gateway_must_have_attached_listeners(suite, gw, expected: int) -> None:
    """GatewayMustHaveAttachedListeners: the Gateway's conditions at its generation and
    ``status.attachedListenerSets`` (absent: 0) is ``expected``. As upstream, a timeout marks
    the test failed (t.Errorf) and lets it go on."""
    def check():
        gateway = suite.kube.get("Gateway", gw)
        if gateway is None:
            return NotYet("failed to get gateway")
        if (stale := _latest(gateway, _status(gateway).get("conditions"))) is not None:
            return stale
        attached = _status(gateway).get("attachedListenerSets") or 0
        return attached == expected or NotYet(f"gateway {gw} got {attached} listeners, want {expected}")
    try:
        poll(check, suite.timeouts.condition, f"Gateway {gw} to have {expected} attached ListenerSets")
    except AssertionError as exc:
        gateway = suite.kube.get("Gateway", gw)
        suite.errorf(f"Error waiting for gateway, got Gateway Status {_status(gateway)}, want {expected} "
                     f"listeners ({exc})")


def gateway_must_have_zero_routes(suite, gw) -> None:
    """GatewayMustHaveZeroRoutes: no listener status, or one with 0 attached routes."""
    def check():
        gateway = suite.kube.get("Gateway", gw)
        if gateway is None:
            return NotYet("no such Gateway")
        if (stale := _latest(gateway, _status(gateway).get("conditions"))) is not None:
            return stale
        listeners = _status(gateway).get("listeners") or []
        if not listeners or (len(listeners) == 1 and listeners[0].get("attachedRoutes") == 0):
            return True
        return NotYet(f"listeners: {listeners}")
    poll(check, suite.timeouts.condition, f"Gateway {gw} to have zero routes")


def _listeners_match(expected: list[ListenerStatus], actual: list[dict]) -> NotYet | None:
    """gatewayListenersMatch (and listenerSetListenersMatch, the same for a ListenerSet's)."""
    if len(expected) != len(actual):
        return NotYet(f"expected {len(expected)} status listeners, got {len(actual)}: {actual}")
    for e in expected:
        a = next((l for l in actual if l.get("name") == e.name), None)
        if a is None:
            return NotYet(f"expected status for listener {e.name} to be present")
        kinds = [((k.get("group") or GROUP), k.get("kind")) for k in a.get("supportedKinds") or ()]
        if not e.supported_kinds and kinds:
            return NotYet(f"listener {e.name}: expected no supportedKinds, got {kinds}")
        for group, kind in e.supported_kinds:
            if (group or GROUP, kind) not in kinds:
                return NotYet(f"listener {e.name}: expected {group}/{kind} in supportedKinds {kinds}")
        if a.get("attachedRoutes") != e.attached_routes:
            return NotYet(f"listener {e.name}: expected attachedRoutes {e.attached_routes}, "
                          f"got {a.get('attachedRoutes')}")
        if not conditions_match(e.conditions, a.get("conditions")):
            return NotYet(f"listener {e.name}: expected conditions {e.conditions}, got {a.get('conditions')}")
    return None


def gateway_status_must_have_listeners(suite, gw, listeners: list[ListenerStatus]) -> None:
    def check():
        gateway = suite.kube.get("Gateway", gw)
        if gateway is None:
            return NotYet("no such Gateway")
        if (stale := _latest(gateway, _status(gateway).get("conditions"))) is not None:
            return stale
        return done_unless(_listeners_match(listeners, _status(gateway).get("listeners") or []))
    poll(check, suite.timeouts.condition, f"Gateway {gw} status listeners to match")


# -- ListenerSet ------------------------------------------------------------------------------


def listenerset_must_have_condition(suite, ls, expected: Condition) -> None:
    """ListenerSetMustHaveCondition: the ListenerSet's conditions at its generation, one of them
    ``expected``."""
    def check():
        obj = suite.kube.get("ListenerSet", ls)
        if obj is None:
            return NotYet("error fetching ListenerSet: not found")
        conditions = _status(obj).get("conditions")
        if (stale := _latest(obj, conditions)) is not None:
            return stale
        return find_condition(conditions, expected.type, expected.status, expected.reason) or \
            NotYet(f"conditions: {conditions}")
    poll(check, suite.timeouts.condition, f"ListenerSet {ls} status to have {expected}")


def listenerset_listeners_must_have_conditions(suite, ls, conditions: list[Condition],
                                               listener_names: tuple[str, ...] = ()) -> None:
    """ListenerSetListenersMustHaveConditions: the ListenerSet's conditions at its generation,
    and each named listener (none named: every listener in status) has every condition."""
    def check():
        obj = suite.kube.get("ListenerSet", ls)
        if obj is None:
            return NotYet("error fetching ListenerSet: not found")
        if (stale := _latest(obj, _status(obj).get("conditions"))) is not None:
            return stale
        pending = set(listener_names)
        for condition in conditions:
            for listener in _status(obj).get("listeners") or ():
                if listener_names and listener["name"] not in listener_names:
                    continue
                if not find_condition(listener.get("conditions"), condition.type, condition.status,
                                      condition.reason):
                    return NotYet(f"listener set {ls.name} doesn't have {condition} on {listener['name']} "
                                  f"listener: {listener.get('conditions')}")
                pending.discard(listener["name"])
        return NotYet(f"listeners {sorted(pending)} have no status") if pending else True
    poll(check, suite.timeouts.condition, f"ListenerSet {ls} listeners to have {conditions}")


def listenerset_status_must_have_listeners(suite, ls, listeners: list[ListenerStatus]) -> None:
    """ListenerSetStatusMustHaveListeners: the ListenerSet's conditions at its generation and its
    status listeners exactly these (by name: supportedKinds including the expected ones,
    attachedRoutes, conditions)."""
    def check():
        obj = suite.kube.get("ListenerSet", ls)
        if obj is None:
            return NotYet("error fetching ListenerSet: not found")
        if (stale := _latest(obj, _status(obj).get("conditions"))) is not None:
            return stale
        return done_unless(_listeners_match(listeners, _status(obj).get("listeners") or []))
    poll(check, suite.timeouts.condition, f"ListenerSet {ls} status listeners to match")


# -- HTTPRoute --------------------------------------------------------------------------------


def httproute_must_have_latest_conditions(suite, route) -> None:
    def check():
        obj = suite.kube.get("HTTPRoute", route)
        for parent in _status(obj).get("parents") or ():
            if (stale := _latest(obj, parent.get("conditions"))) is not None:
                return stale
        return True
    poll(check, suite.timeouts.condition, f"HTTPRoute {route} conditions at its generation")


def _parents_match(expected: list[RouteParentStatus], actual: list[dict], namespace_required: bool) -> NotYet | None:
    """parentsForRouteMatch (sectionName and port are not compared, as upstream)."""
    for e in expected:
        matched = False
        for a in actual:
            ref = a.get("parentRef") or {}
            if a.get("controllerName") != e.controller_name:
                continue
            if ref.get("group") != e.parent_ref.get("group") or ref.get("kind") != e.parent_ref.get("kind"):
                continue
            if ref.get("name") != e.parent_ref.get("name"):
                continue
            if ref.get("namespace") != e.parent_ref.get("namespace") and (namespace_required or
                                                                          ref.get("namespace") is not None):
                continue
            if not conditions_match(e.conditions, a.get("conditions")):
                continue
            matched = True
        if not matched:
            return NotYet(f"no parent matches {e}; parents: {actual}")
    return None


def httproute_must_have_parents(suite, route, parents: list[RouteParentStatus], namespace_required: bool,
                                kind: str = "HTTPRoute") -> None:
    """HTTPRouteMustHaveParents (RouteMustHaveParents, for a route of ``kind``)."""
    def check():
        obj = suite.kube.get(kind, route)
        if obj is None:
            return NotYet(f"no such {kind}")
        actual = _status(obj).get("parents") or []
        for parent in actual:
            if (stale := _latest(obj, parent.get("conditions"))) is not None:
                return stale
        return done_unless(_parents_match(parents, actual, namespace_required))
    poll(check, suite.timeouts.condition, f"{kind} {route} to have the expected parents")


def httproute_must_have_condition(suite, route, gw, condition: Condition, kind: str = "HTTPRoute") -> None:
    """HTTPRouteMustHaveCondition (TLSRouteMustHaveCondition for ``kind`` TLSRoute: the same
    check): the parent entry naming ``gw`` has ``condition``."""
    def check():
        obj = suite.kube.get(kind, route)
        found = False
        for parent in _status(obj).get("parents") or ():
            if (stale := _latest(obj, parent.get("conditions"))) is not None:
                return stale
            ref = parent.get("parentRef") or {}
            if ref.get("name") == gw.name and ref.get("namespace") in (None, gw.namespace):
                if find_condition(parent.get("conditions"), condition.type, condition.status, condition.reason):
                    found = True
        return found or NotYet(f"parents: {_status(obj).get('parents')}")
    poll(check, suite.timeouts.condition, f"{kind} {route} to have {condition} for Gateway {gw}")


def httproute_must_have_resolved_refs_conditions_true(suite, route, gw) -> None:
    httproute_must_have_condition(suite, route, gw, Condition("ResolvedRefs", "True", "ResolvedRefs"))


def httproute_must_have_no_accepted_parents(suite, route, kind: str = "HTTPRoute") -> None:
    """HTTPRouteMustHaveNoAcceptedParents (TLSRouteMustHaveNoAcceptedParents for ``kind``
    TLSRoute: the same check): no parents (seen twice) or one not Accepted; polled every second
    as upstream does for this negative check."""
    empty_checked = False

    def check():
        nonlocal empty_checked
        obj = suite.kube.get(kind, route)
        actual = _status(obj).get("parents") or []
        if not actual:
            if not empty_checked:
                empty_checked = True
                return NotYet("no parents (checking once more)")
            return True
        if len(actual) > 1:
            return NotYet(f"more than one parent: {actual}")
        if (stale := _latest(obj, actual[0].get("conditions"))) is not None:
            return stale
        return conditions_match([Condition("Accepted", "False")], actual[0].get("conditions")) or \
            NotYet(f"parent: {actual[0]}")
    poll(check, suite.timeouts.condition, f"{kind} {route} to have no accepted parents", interval=1.0)


def wait_for_gateway_address(suite, gw, listener_name: str = "") -> str:
    """WaitForGatewayAddress as the suite has it, for the tests about addresses themselves: a
    typed entry in status.addresses, with the port of the first (or the named) listener. (The
    address requests go to is ``Suite.gateway_address``, which has today's fallback.)"""
    def check():
        gateway = suite.kube.get("Gateway", gw)
        if gateway is None:
            return NotYet("no such Gateway")
        if (stale := _latest(gateway, _status(gateway).get("conditions"))) is not None:
            return stale
        listeners = gateway["spec"]["listeners"]
        listener = next((l for l in listeners if l["name"] == listener_name), listeners[0])
        for address in _status(gateway).get("addresses") or ():
            if address.get("type"):
                return f"{address['value']}:{listener['port']}"
        return NotYet(f"status.addresses: {_status(gateway).get('addresses')}")
    return poll(check, suite.timeouts.condition, f"Gateway {gw} to have at least one IP address in status")


# -- TLSRoute -----------------------------------------------------------------------------------


def tlsroute_must_have_parents(suite, route, parents: list[RouteParentStatus], namespace_required: bool) -> dict:
    """TLSRouteMustHaveParents: the route's status parents match ``parents``; the route. (Unlike
    RouteMustHaveParents, upstream's TLSRoute wait does not look at the conditions' generations,
    and neither does this one.)"""
    def check():
        obj = suite.kube.get("TLSRoute", route)
        if obj is None:
            return NotYet("no such TLSRoute")
        return done_unless(_parents_match(parents, _status(obj).get("parents") or [], namespace_required)) and obj
    return poll(check, suite.timeouts.condition, f"TLSRoute {route} to have the expected parents")


def gateway_and_tlsroutes_must_be_accepted(suite, ref: GatewayRef, *routes) -> tuple[str, list[str]]:
    """GatewayAndTLSRoutesMustBeAccepted: the Gateway's address (with its first, or first named,
    listener's port) and each route's parent Accepted by it; the hostnames of the last route's
    spec. (Unlike the HTTPRoute wait, nothing is asked of the listeners.)"""
    address = suite.gateway_address(ref.nn, ref.listener_names[0])
    hostnames: list[str] = []
    for route in routes:
        parents = [RouteParentStatus({"group": GROUP, "kind": "Gateway", "name": ref.nn.name,
                                      "namespace": ref.nn.namespace},
                                     suite.controller_name, [Condition("Accepted", "True", "Accepted")])
                   for _ in ref.listener_names]
        obj = tlsroute_must_have_parents(suite, route, parents, namespace_required=route.namespace != ref.nn.namespace)
        hostnames = list(obj["spec"].get("hostnames") or [])
    return address, hostnames


def tlsroute_must_have_condition(suite, route, gw, condition: Condition) -> None:
    """TLSRouteMustHaveCondition."""
    httproute_must_have_condition(suite, route, gw, condition, kind="TLSRoute")


def tlsroute_must_have_resolved_refs_conditions_true(suite, route, gw) -> None:
    """TLSRouteMustHaveResolvedRefsConditionsTrue."""
    tlsroute_must_have_condition(suite, route, gw, Condition("ResolvedRefs", "True", "ResolvedRefs"))


def tlsroute_must_have_no_accepted_parents(suite, route) -> None:
    """TLSRouteMustHaveNoAcceptedParents."""
    httproute_must_have_no_accepted_parents(suite, route, kind="TLSRoute")


def get_config_map_data(suite, nn) -> dict[str, str]:
    """GetConfigMapData: the ConfigMap's data (AssertionError if there is no such ConfigMap)."""
    obj = suite.kube.get("ConfigMap", nn)
    assert obj is not None, f"error fetching ConfigMap: {nn} not found"
    return obj.get("data") or {}


# -- BackendTLSPolicy -----------------------------------------------------------------------


def backend_tls_policy_must_have_condition(suite, policy, gw, condition: Condition) -> None:
    """BackendTLSPolicyMustHaveCondition: every ancestor's conditions at the policy's generation,
    and the one naming ``gw`` has ``condition``."""
    def check():
        obj = suite.kube.get("BackendTLSPolicy", policy)
        if obj is None:
            return NotYet("no such BackendTLSPolicy")
        for ancestor in _status(obj).get("ancestors") or ():
            if (stale := _latest(obj, ancestor.get("conditions"))) is not None:
                return stale
            ref = ancestor.get("ancestorRef") or {}
            if ref.get("name") == gw.name and ref.get("namespace") in (None, gw.namespace) and \
                    find_condition(ancestor.get("conditions"), condition.type, condition.status, condition.reason):
                return True
        return NotYet(f"ancestors: {_status(obj).get('ancestors')}")
    poll(check, suite.timeouts.condition, f"BackendTLSPolicy {policy} to have {condition} for Gateway {gw}")


def backend_tls_policy_must_have_latest_conditions(obj: dict) -> None:
    """BackendTLSPolicyMustHaveLatestConditions: fails at once on a stale ancestor condition."""
    for ancestor in _status(obj).get("ancestors") or ():
        stale = _latest(obj, ancestor.get("conditions"))
        assert stale is None, f"BackendTLSPolicy ancestor {ancestor.get('ancestorRef')}: {stale}"
