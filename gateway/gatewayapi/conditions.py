"""A status condition as the Gateway API and Multi-Cluster Services objects carry them (the
Kubernetes ``metav1.Condition`` shape; ``lastTransitionTime`` is added where the status is
written, gateway.gatewayapi.controller.with_transition_times)."""
from __future__ import annotations


def condition(type_: str, ok: bool, reason: str, message: str, generation: int) -> dict:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message,
            "observedGeneration": generation}
