"""CA certificate references (``caCertificateRefs``) as a Gateway's client certificate
validation and a BackendTLSPolicy name them: ConfigMaps whose ``ca.crt`` holds PEM CAs."""
from __future__ import annotations

from typing import Callable


def resolve_ca_refs(ca_maps: dict, namespace: str, refs, kind_reason: str,
                    permitted: Callable[[str, str], bool] | None = None) -> tuple[list[tuple[str, str]],
                                                                               list[tuple[str, str]]]:
    """(the valid refs' (origin, PEM CAs), the others' (reason, message)), refs in order.

    ``kind_reason``: the reason for a ref that is not a ConfigMap (the two specs name it
    differently); ``permitted(namespace, name)``: whether a ref to another namespace is allowed
    (None: refs are local, their namespace is ``namespace``)."""
    bundles, problems = [], []
    for ref in refs or ():
        name = ref.get("name", "")
        ns = (ref.get("namespace") or namespace) if permitted else namespace
        if (ref.get("group") or "", ref.get("kind")) != ("", "ConfigMap"):
            problems.append((kind_reason, f"caCertificateRef {ref.get('group') or 'core'}/{ref.get('kind')} "
                                          f"{name!r}: only ConfigMaps are supported"))
        elif ns != namespace and not permitted(ns, name):
            problems.append(("RefNotPermitted", f"caCertificateRef ConfigMap {ns}/{name}: no ReferenceGrant in "
                                                f"{ns} allows it"))
        elif (bundle := ca_maps.get((ns, name))) is None:
            problems.append(("InvalidCACertificateRef", f"ConfigMap {ns}/{name} not found"))
        elif bundle.problem:
            problems.append(("InvalidCACertificateRef", f"ConfigMap {ns}/{name}: {bundle.problem}"))
        else:
            bundles.append((f"ConfigMap {ns}/{name}", bundle.ca if bundle.ca.endswith("\n") else bundle.ca + "\n"))
    return bundles, problems
