"""Success-rate outlier detection (Envoy's outlier_detection success_rate_*), pure.

Every interval the health manager takes, per endpoint, how many tries it got and how
many failed (gateway errors and 5xx answers, from the counters the workers report:
gateway.stats.Stats.outcomes) and hands them here.  Only endpoints with at least
``request_volume`` tries count, and only when there are ``minimum_hosts`` of them: a
mean over two endpoints, or over a dozen requests, says nothing.  An endpoint whose
success rate is below mean - stdev_factor x standard deviation (population) is an
outlier.  Example: five endpoints at 100% and one at 60% have mean 93.3% and
deviation 14.9%: the threshold at factor 1.9 is 65.0%, so the one at 60% is ejected.
"""
from __future__ import annotations

from math import sqrt
from typing import Hashable, TypeVar

from gateway.config import SuccessRate

K = TypeVar("K", bound=Hashable)


def success_rates(samples: dict[K, tuple[int, int]], rule: SuccessRate) -> dict[K, float]:
    """The success rate (0..1) of each endpoint with enough tries: ``samples`` are (tries, failed)."""
    return {key: 1.0 - min(failed, tries) / tries for key, (tries, failed) in samples.items()
            if tries >= rule.request_volume}


def outliers(samples: dict[K, tuple[int, int]], rule: SuccessRate) -> tuple[list[K], float | None]:
    """The endpoints to eject and the threshold they fell under (None: too few to judge)."""
    rates = success_rates(samples, rule)
    if len(rates) < rule.minimum_hosts:
        return [], None
    mean = sum(rates.values()) / len(rates)
    stdev = sqrt(sum((r - mean) ** 2 for r in rates.values()) / len(rates))
    threshold = mean - rule.stdev_factor * stdev
    return [key for key, rate in rates.items() if rate < threshold], threshold
