"""Edge policy from Kubernetes: SecurityPolicy and RateLimitPolicy objects attached to
Gateways and HTTPRoutes by ``targetRefs`` (GEP-713 policy attachment), as the ``auth``,
``ip_filter`` and ``rate_limit`` of the route configs they reach.

A policy's spec is the file route's section of the same name, in Kubernetes spelling
(``forwardUsername`` for ``forward_username``), read by the file's own model and checks;
credentials come from Secrets of the policy's namespace, never from files of the gateway's pod.

Which policy applies (per kind, SecurityPolicy and RateLimitPolicy apart): the most specific
target wins whole, no merging: an HTTPRoute rule (``sectionName``: the rule's name), the
HTTPRoute, the Gateway listener (``sectionName``: the listener's name), the Gateway. Two
policies of one kind on one target: the older (creation time, then namespace/name) applies,
the other is not accepted (reason ``Conflicted``).

A spec that does not check out is not accepted (reason ``Invalid``, the message names the key).
The last valid spec of that policy goes on applying while the gateway runs; a SecurityPolicy
never valid makes its routes answer 500 rather than let requests through unchecked (a broken
RateLimitPolicy applies nothing and the less specific one, if any, applies).

Pure, as ``translate``: the same objects give the same answer, save for ``PolicyMemo``'s
last valid specs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from gateway.config import (ApiKeyAuth, AuthPolicy, BasicAuth, ExtAuthz, IpFilterPolicy, JwtAuth,
                            RateLimitPolicy)
from gateway.config import credentials
from gateway.config.loader import check_auth, ip_filter, rate_limit
from gateway.config.validate import _err, _keys, section
from gateway.gatewayapi.conditions import condition
from gateway.sources.discovery import GATEWAY_GROUP, POLICY_GROUP, POLICY_VERSION  # noqa: F401 (re-exported)

SECURITY, RATE_LIMIT = "SecurityPolicy", "RateLimitPolicy"
# World store -> policy kind, and the kinds' resources (plural) for watches and status writes.
STORES = {"security_policies": SECURITY, "rate_limit_policies": RATE_LIMIT}
PLURALS = {"security_policies": "securitypolicies", "rate_limit_policies": "ratelimitpolicies"}
TARGET_KINDS = ("Gateway", "HTTPRoute")
HTPASSWD_KEY, JWKS_KEY = ".htpasswd", "jwks.json"       # the Secrets' data keys read

Key = tuple[str, str]
# (kind of target, namespace, name, sectionName or None)
Target = tuple[str, str, str, str | None]


@dataclass(frozen=True)
class Edge:
    """What the policies attached to one route rule on one listener give its configs."""
    auth: AuthPolicy | None = None
    ip_filter: IpFilterPolicy | None = None
    rate_limit: RateLimitPolicy | None = None
    refused: str | None = None          # a SecurityPolicy never valid: its requests get 500
    sources: tuple[str, ...] = ()       # "SecurityPolicy namespace/name", ...

    def fields(self) -> dict:
        """The RouteConfig fields this edge sets."""
        out = {"policy_sources": self.sources} if self.sources else {}
        if self.refused:
            out.update(direct_status=500, direct_reason=self.refused)
        if self.auth is not None:
            out["auth"] = self.auth
        if self.ip_filter is not None:
            out["ip_filter"] = self.ip_filter
        if self.rate_limit is not None:
            out["rate_limit"] = self.rate_limit
        return out


NO_EDGE = Edge()


@dataclass
class Policy:
    """One policy object as read: its targets, what it applies, and why it is not accepted."""
    store: str
    key: Key
    obj: dict
    targets: tuple[Target, ...]
    value: dict | None              # Edge fields; None: nothing valid (now or before)
    problem: str | None = None      # Invalid: the first problem (its key path first)
    stale: bool = False             # ``value`` is the last valid spec's, not this one's
    reads: tuple[Key, ...] = ()     # the Secrets its spec names

    @property
    def kind(self) -> str:
        return STORES[self.store]

    @property
    def order(self) -> tuple:
        return self.obj["metadata"].get("creationTimestamp", ""), f"{self.key[0]}/{self.key[1]}"


class PolicyMemo:
    """Policies parsed (kept while the object and the Secrets it reads stay the same) and
    each one's last valid spec, across translations."""

    def __init__(self) -> None:
        self.parsed: dict[tuple[str, Key], tuple[dict, tuple, bool, Policy]] = {}
        self.last_valid: dict[tuple[str, Key], dict] = {}     # -> the Edge fields it applied
        self.secrets_read: set[Key] = set()

    def policies(self, world) -> list[Policy]:
        out, parsed, reads = [], {}, set()
        for store in STORES:
            for key, obj in getattr(world, store).items():
                entry = self.parsed.get((store, key))
                if entry is None or not _still(entry, obj, world):
                    policy = read_policy(store, key, obj, world.credentials, world.global_limits)
                    self._keep_valid(policy)
                    entry = (obj, tuple(world.credentials.get(k) for k in policy.reads), world.global_limits, policy)
                parsed[(store, key)] = entry
                reads.update(entry[3].reads)
                out.append(entry[3])
        self.parsed = parsed
        self.last_valid = {k: v for k, v in self.last_valid.items() if k in parsed}
        self.secrets_read = reads
        return out

    def _keep_valid(self, policy: Policy) -> None:
        """A valid policy is remembered; an invalid one applies its last valid spec."""
        slot = (policy.store, policy.key)
        if policy.problem is None:
            self.last_valid[slot] = policy.value
        elif slot in self.last_valid:
            policy.value, policy.stale = self.last_valid[slot], True


def _still(entry: tuple, obj: dict, world) -> bool:
    """A parse stands while its object, the Secrets it read and the Redis setting are the same."""
    before, secrets, global_limits, policy = entry
    return before is obj and global_limits == world.global_limits and all(
        world.credentials.get(k) is s for k, s in zip(policy.reads, secrets))


# -- reading one policy -------------------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), name)


def _camel(name: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)


def _snake_keys(value: Any) -> Any:
    """A Kubernetes-spelled section in the file's spelling (keys only, not values)."""
    if isinstance(value, dict):
        return {(_snake(k) if isinstance(k, str) else k): _snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_keys(v) for v in value]
    return value


def _kube_spelling(problem: str) -> str:
    """A problem found in the file's spelling, told in the object's: its key path and the
    quoted key names in its message."""
    where, sep, what = problem.partition(": ")
    if not sep:
        return problem
    return f"{_camel(where)}: " + re.sub(r'"([a-z0-9]+(?:_[a-z0-9]+)+)"', lambda m: f'"{_camel(m.group(1))}"', what)


def read_policy(store: str, key: Key, obj: dict, secrets: dict[Key, dict], global_limits: bool) -> Policy:
    """A policy object, checked: its targets and Edge fields, or its first problem."""
    errs: list[str] = []
    reads: list[Key] = []
    spec = obj.get("spec")
    if isinstance(spec, dict):
        body, refs = {k: v for k, v in spec.items() if k != "targetRefs"}, spec.get("targetRefs")
    else:
        body, refs = spec, None             # not a mapping: the checks below say so
    targets = _target_refs(refs, key[0], errs)
    read = _Secrets(key[0], secrets, reads)
    if store == "security_policies":
        value = _security(body, "spec", errs, read)
    else:
        value = _rate_limit(body, "spec", errs, global_limits)
    problem = _kube_spelling(errs[0]) if errs else None
    return Policy(store, key, obj, targets, None if problem else value, problem, reads=tuple(dict.fromkeys(reads)))


def _target_refs(refs: Any, namespace: str, errs: list[str]) -> tuple[Target, ...]:
    if not isinstance(refs, list) or not refs:
        _err(errs, "spec.targetRefs", "needs at least one target (a Gateway or an HTTPRoute)")
        return ()
    targets = []
    for i, ref in enumerate(refs):
        path = f"spec.targetRefs[{i}]"
        if not isinstance(ref, dict) or not isinstance(ref.get("name"), str) or not ref["name"]:
            _err(errs, path, "needs a name")
            continue
        group, kind = ref.get("group", GATEWAY_GROUP), ref.get("kind")
        if group != GATEWAY_GROUP or kind not in TARGET_KINDS:
            _err(errs, path, f"{group}/{kind} is not a target this gateway serves (Gateway, HTTPRoute of "
                             f"{GATEWAY_GROUP})")
        # Kept when not served: its status says why the policy is not accepted.
        targets.append((kind if group == GATEWAY_GROUP else f"{group}/{kind}", namespace, ref["name"],
                        ref.get("sectionName") or None))
    return tuple(targets)


class _Secrets:
    """The Opaque Secrets of the policy's namespace, recording which it names."""

    def __init__(self, namespace: str, secrets: dict[Key, dict], reads: list[Key]) -> None:
        self.namespace, self.secrets, self.reads = namespace, secrets, reads

    def data(self, ref: Any, path: str, errs: list[str]) -> dict[str, str] | None:
        """The data of the Secret ``ref`` ({name}) names."""
        if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
            _err(errs, path, "must name a Secret: {name: <Secret in the policy's namespace>}")
            return None
        if ref.get("namespace") not in (None, self.namespace):
            _err(errs, path, "must be a Secret in the policy's own namespace")
            return None
        key = (self.namespace, ref["name"])
        self.reads.append(key)
        found = self.secrets.get(key)
        if found is None:
            _err(errs, path, f"Secret {key[0]}/{key[1]} not found (an Opaque Secret is read)")
        return found

    def text(self, ref: Any, default_key: str, path: str, errs: list[str]) -> str | None:
        data = self.data(ref, path, errs)
        if data is None:
            return None
        item = ref.get("key", default_key)
        if item not in data:
            _err(errs, path, f"Secret {self.namespace}/{ref['name']} has no {item!r}")
            return None
        return data[item]


_AUTH_SPELLING = {"basic": "basicAuth", "api_key": "apiKeyAuth", "jwt": "jwt", "ext_authz": "extAuth",
                  "jwks_file": "jwks", "jwks_url": "jwksUrl"}


def _security(body: Any, path: str, errs: list[str], secrets: _Secrets) -> dict | None:
    d = _keys(body, path, errs, _SECURITY_KEYS)
    if d is None:
        return None
    kw = {field: read(d[name], f"{path}.{name}", errs, secrets)
          for name, (field, read) in _METHODS.items() if d.get(name) is not None}
    out: dict = {}
    if kw or "required" in d:
        before = len(errs)
        auth = section(AuthPolicy, {"required": d["required"]} if "required" in d else {}, path, errs, given=kw)
        if auth is not None and len(errs) == before:
            check_auth(auth, path, errs, spelled=_AUTH_SPELLING)
        out["auth"] = auth
    if d.get("ipFilter") is not None:
        out["ip_filter"] = ip_filter(d["ipFilter"], f"{path}.ipFilter", errs)
    if not out:
        _err(errs, path, "needs an authentication method (basicAuth, apiKeyAuth, jwt, extAuth) or ipFilter")
    return out


def _basic(value: Any, path: str, errs: list[str], secrets: _Secrets) -> BasicAuth | None:
    d = _snake_keys(value) if isinstance(value, dict) else value
    users = None
    if isinstance(d, dict) and "users" in d:
        d = dict(d)
        text = secrets.text(d.pop("users"), HTPASSWD_KEY, f"{path}.users", errs)
        users = credentials.htpasswd_users(text, f"{path}.users", errs) if text is not None else None
    elif isinstance(d, dict):
        _err(errs, path, f"needs users: the Secret whose {HTPASSWD_KEY!r} is an htpasswd file")
    return section(BasicAuth, d, path, errs, given={"users": users})


def _api_key(value: Any, path: str, errs: list[str], secrets: _Secrets) -> ApiKeyAuth | None:
    d = _snake_keys(value) if isinstance(value, dict) else value
    keys = None
    if isinstance(d, dict) and isinstance(d.get("credential_refs"), list) and d["credential_refs"]:
        d = dict(d)
        entries = []
        for i, ref in enumerate(d.pop("credential_refs")):
            data = secrets.data(ref, f"{path}.credentialRefs[{i}]", errs) or {}
            entries += [(f"Secret {secrets.namespace}/{ref['name']} key {client!r}", client, key.strip())
                        for client, key in sorted(data.items())]
        keys = credentials.key_digests(entries, f"{path}.credentialRefs", errs,
                                       "the key (the value) must be 16 characters or more")
    elif isinstance(d, dict):
        _err(errs, path, "needs credentialRefs: Secrets whose keys are client names and values their API keys")
    return section(ApiKeyAuth, d, path, errs, given={"keys": keys})


def _jwt(value: Any, path: str, errs: list[str], secrets: _Secrets) -> JwtAuth | None:
    d = _snake_keys(value) if isinstance(value, dict) else value
    jwks = None
    if isinstance(d, dict) and d.get("jwks") is not None:
        d = dict(d)
        text = secrets.text(d.pop("jwks"), JWKS_KEY, f"{path}.jwks", errs)
        if text is not None and (problem := credentials.jwks_problem(text)):
            _err(errs, f"{path}.jwks", problem)
        elif text is not None:
            jwks = text
    # A private CA for jwksUrl would be a file of the gateway's pod: not offered here.
    return section(JwtAuth, d, path, errs, given={"jwks": jwks, "jwks_ca_file": None})


def _ext_authz(value: Any, path: str, errs: list[str], secrets: _Secrets) -> ExtAuthz | None:
    d = _snake_keys(value) if isinstance(value, dict) else value
    return section(ExtAuthz, d, path, errs, given={"ca_file": None})


# A SecurityPolicy's authentication methods: its key -> (AuthPolicy field, reader).
_METHODS: dict[str, tuple[str, Callable]] = {"basicAuth": ("basic", _basic), "apiKeyAuth": ("api_key", _api_key),
                                             "jwt": ("jwt", _jwt), "extAuth": ("ext_authz", _ext_authz)}
_SECURITY_KEYS = ("required", *_METHODS, "ipFilter")


def _rate_limit(body: Any, path: str, errs: list[str], global_limits: bool) -> dict | None:
    limit = rate_limit(_snake_keys(body), path, errs)
    if limit is not None and limit.scope == "global" and not global_limits:
        _err(errs, f"{path}.scope", 'a global limit needs the gateway\'s top-level "redis" section')
    return {"rate_limit": limit}


# -- which policy applies where -----------------------------------------------------------------


@dataclass
class PolicyIndex:
    """Per kind and target, the policy that applies (the oldest of those naming it), and the
    ones that lost it."""
    policies: list[Policy]
    winners: dict[tuple[str, Target], Policy] = field(default_factory=dict)
    conflicts: dict[tuple[str, Key, Target], Policy] = field(default_factory=dict)    # -> the winner

    def __post_init__(self) -> None:
        for policy in sorted(self.policies, key=lambda p: p.order):
            for target in policy.targets:
                winner = self.winners.setdefault((policy.store, target), policy)
                if winner is not policy:
                    self.conflicts[(policy.store, policy.key, target)] = winner

    def edge(self, gateway: Key, listener: str, route: Key, rule: str | None) -> Edge:
        """The fields the policies give one rule of ``route`` on ``listener`` of ``gateway``."""
        fields: dict = {}
        sources = []
        candidates = [("HTTPRoute", *route, rule)] if rule else []
        candidates += [("HTTPRoute", *route, None), ("Gateway", *gateway, listener), ("Gateway", *gateway, None)]
        for store in STORES:
            for target in candidates:
                policy = self.winners.get((store, target))
                if policy is None:
                    continue
                if policy.value is not None or store == "security_policies":
                    sources.append(f"{policy.kind} {policy.key[0]}/{policy.key[1]}")
                if policy.value is not None:
                    fields.update({k: v for k, v in policy.value.items() if v is not None})
                    break
                if store == "security_policies":
                    fields["refused"] = (f"{SECURITY} {policy.key[0]}/{policy.key[1]} is not valid: "
                                         f"{policy.problem}")
                    break
        return Edge(**fields, sources=tuple(sources)) if fields else NO_EDGE

    def status(self, world, ours: dict[Key, Any], route_parents: dict[Key, list[dict]],
               controller: str) -> dict[tuple[str, Key], dict]:
        """Each policy's ``status.ancestors`` entries of ours: per Gateway of ours its targets
        reach, whether it is accepted there."""
        out = {}
        for policy in self.policies:
            gen = policy.obj["metadata"].get("generation", 1)
            ancestors: dict[str, dict] = {}
            for target in policy.targets:
                for ref, found in _ancestors(world, ours, route_parents, target):
                    reason, message = self._verdict(policy, target, found)
                    entry = {"ancestorRef": ref, "controllerName": controller,
                             "conditions": [condition("Accepted", reason == "Accepted", reason, message, gen)]}
                    slot = repr(sorted(ref.items()))
                    if slot not in ancestors or reason != "Accepted":     # one not accepted shows
                        ancestors[slot] = entry
            if ancestors:
                out[(policy.store, policy.key)] = {"ancestors": list(ancestors.values())}
        return out

    def _verdict(self, policy: Policy, target: Target, found: str | None) -> tuple[str, str]:
        if found is not None:
            return "TargetNotFound", found
        winner = self.conflicts.get((policy.store, policy.key, target))
        if winner is not None:
            return "Conflicted", (f"{policy.kind} {winner.key[0]}/{winner.key[1]}, older, targets "
                                  f"{target[0]} {target[2]}" + (f" section {target[3]}" if target[3] else "") +
                                  " too: that one applies")
        if policy.problem is not None:
            return "Invalid", policy.problem + ("; the last valid spec still applies" if policy.stale else "")
        return "Accepted", "the policy applies"


def _ancestors(world, ours: dict[Key, Any], route_parents: dict[Key, list[dict]],
               target: Target) -> list[tuple[dict, str | None]]:
    """(ancestorRef, why the target is not found or None) for each Gateway of ours the target
    is or hangs from; a target of another controller's Gateway gives none."""
    kind, ns, name, section_name = target
    if kind not in TARGET_KINDS:
        group, _, kind = kind.rpartition("/")
        return [({"group": group or GATEWAY_GROUP, "kind": kind, "namespace": ns, "name": name}, None)]
    if kind == "Gateway":
        ref = {"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": ns, "name": name}
        if section_name:
            ref["sectionName"] = section_name
        gateway = ours.get((ns, name))
        if gateway is None:
            return [] if (ns, name) in world.gateways else [(ref, f"Gateway {ns}/{name} not found")]
        if section_name and section_name not in {l.name for l in gateway.listeners}:
            return [(ref, f"Gateway {ns}/{name} has no listener {section_name!r}")]
        return [(ref, None)]
    route = world.routes.get((ns, name))
    if route is None:
        return [({"group": GATEWAY_GROUP, "kind": "HTTPRoute", "namespace": ns, "name": name},
                 f"HTTPRoute {ns}/{name} not found")]
    missing = None
    if section_name and section_name not in {r.get("name") for r in (route.get("spec") or {}).get("rules") or ()}:
        missing = f"HTTPRoute {ns}/{name} has no rule named {section_name!r}"
    return [(dict(parent["parentRef"]), missing) for parent in route_parents.get((ns, name)) or ()]
