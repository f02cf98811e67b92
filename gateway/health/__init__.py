"""Endpoint health: active probes, passive outlier detection, cluster-aware panic routing."""

from gateway.health.manager import HealthManager

__all__ = ["HealthManager"]
