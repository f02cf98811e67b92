"""BackendTLSPolicy (Gateway API v1): TLS from the gateway to a Service's endpoints.

A policy targets Services (a ``sectionName`` narrows it to the port of that name). Where our
routes send requests to a targeted Service on that port, the service's endpoints are spoken to
over TLS: SNI ``validation.hostname``, verified against the CAs of ``caCertificateRefs``
(ConfigMaps' ``ca.crt``) or the system's (``wellKnownCACertificates: System``), and
authenticated by the hostname, or by ``subjectAltNames`` when it has some.

Two policies on the same Service and section: the older (then the first by name) applies, the
other is ``Accepted=False`` ``Conflicted``; a policy with a section is more specific than one
without and applies to its port. A policy none of whose CA references is valid is
``Accepted=False`` ``NoValidCACertificate`` and its Service's connections fail (a trust store
without a CA): the spec wants 5xx, never plain text to a backend that expects TLS.

Status is written per Gateway of ours whose routes reach a targeted Service (``ancestors``).
"""
from __future__ import annotations

from dataclasses import dataclass

from gateway.config import UpstreamTls
from gateway.gatewayapi.ca_refs import resolve_ca_refs
from gateway.gatewayapi.conditions import condition

Key = tuple[str, str]
STORE = "backend_tls_policies"
WELL_KNOWN = "System"


@dataclass(frozen=True)
class _Verdict:
    tls: UpstreamTls
    accepted: tuple[str, str]       # Accepted's (reason, message); "Accepted" when it applies
    resolved: tuple[str, str]       # ResolvedRefs's


def _order(policy: dict) -> tuple:
    return policy["metadata"].get("creationTimestamp", ""), policy["metadata"]["name"]


def _read(world, ns: str, policy: dict) -> _Verdict:
    """What a policy asks, as UpstreamTls, and its own (reference) verdicts."""
    validation = (policy.get("spec") or {}).get("validation") or {}
    hostname = validation.get("hostname") or None
    sans = tuple(f"DNS:{s['hostname']}" if s.get("type") == "Hostname" else f"URI:{s.get('uri')}"
                 for s in validation.get("subjectAltNames") or ())
    refs = validation.get("caCertificateRefs") or ()
    well_known = validation.get("wellKnownCACertificates")
    if not refs:
        if well_known != WELL_KNOWN:
            return _Verdict(UpstreamTls(sni=hostname, ca_pem=""), ("Invalid", f"wellKnownCACertificates "
                            f"{well_known!r} is not supported (System is)"), ("ResolvedRefs", ""))
        return _Verdict(UpstreamTls(sni=hostname, subject_alt_names=sans), ("Accepted", ""), ("ResolvedRefs", ""))
    bundles, problems = resolve_ca_refs(world.ca_maps, ns, refs, "InvalidKind")
    resolved = problems[0] if problems else ("ResolvedRefs", "")
    if not bundles:
        return _Verdict(UpstreamTls(sni=hostname, ca_pem=""),
                        ("NoValidCACertificate", f"no caCertificateRef is valid: {problems[0][1]}"), resolved)
    return _Verdict(UpstreamTls(sni=hostname, ca_pem="".join(ca for _, ca in bundles), subject_alt_names=sans),
                    ("Accepted", ""), resolved)


class BackendTls:
    """The policies of one translation: which apply to which Service port, and their status."""

    def __init__(self, world) -> None:
        self.world = world
        # (namespace, service, section or None) -> the policies targeting it, the applying first
        self.by_target: dict[tuple[str, str, str | None], list[Key]] = {}
        self.verdicts: dict[Key, _Verdict] = {}
        for key, policy in sorted(world.backend_tls_policies.items(), key=lambda kv: _order(kv[1])):
            self.verdicts[key] = _read(world, key[0], policy)
            for ref in (policy.get("spec") or {}).get("targetRefs") or ():
                if (ref.get("group") or "", ref.get("kind")) == ("", "Service"):
                    self.by_target.setdefault((key[0], ref.get("name", ""), ref.get("sectionName") or None),
                                              []).append(key)

    def tls_for(self, ns: str, name: str, port: int) -> UpstreamTls | None:
        """The TLS of the policy that applies to Service ``ns``/``name`` on ``port``."""
        section = self._port_name(ns, name, port)
        for targeted in ((section, None) if section else (None,)):    # the port's own policy first
            keys = self.by_target.get((ns, name, targeted))
            if keys:
                return self.verdicts[keys[0]].tls
        return None

    def ca_maps_named(self) -> frozenset[Key]:
        """The ConfigMaps the policies name (a change to one is translated again)."""
        return frozenset((key[0], ref.get("name", "")) for key, policy in self.world.backend_tls_policies.items()
                         for ref in ((policy.get("spec") or {}).get("validation") or {}).get("caCertificateRefs") or ())

    def _port_name(self, ns: str, name: str, port: int) -> str | None:
        for spec in self.world.services.get((ns, name)) or ():
            if spec.get("port") == port:
                return spec.get("name") or None
        return None

    def status(self, reached: dict[str, set[Key]], controller: str) -> dict[tuple[str, Key], dict]:
        """``status.ancestors`` per policy: one entry per Gateway of ours whose routes reach a
        Service it targets (``reached``: service -> our Gateways that route to it)."""
        out = {}
        for key, verdict in self.verdicts.items():
            policy = self.world.backend_tls_policies[key]
            gen = policy["metadata"].get("generation", 1)
            targets = [(ref.get("name", ""), ref.get("sectionName") or None)
                       for ref in (policy.get("spec") or {}).get("targetRefs") or ()]
            gateways = sorted({gw for name, _ in targets for gw in reached.get(f"{key[0]}/{name}", ())})
            if not gateways:
                continue
            accepted = self._conflict(key, targets) or verdict.accepted
            conditions = [condition("Accepted", accepted[0] == "Accepted", accepted[0],
                                    accepted[1] or "the policy applies", gen),
                          condition("ResolvedRefs", verdict.resolved[0] == "ResolvedRefs", verdict.resolved[0],
                                    verdict.resolved[1] or "all references resolved", gen)]
            out[(STORE, key)] = {"ancestors": [
                {"ancestorRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": ns,
                                 "name": name}, "controllerName": controller, "conditions": conditions}
                for ns, name in gateways]}
        return out

    def _conflict(self, key: Key, targets: list[tuple[str, str | None]]) -> tuple[str, str] | None:
        for name, section in targets:
            first = self.by_target[(key[0], name, section)][0]
            if first != key:
                return ("Conflicted", f"BackendTLSPolicy {first[0]}/{first[1]}, older, targets Service "
                                      f"{key[0]}/{name}" + (f" section {section}" if section else "") + " too")
        return None
