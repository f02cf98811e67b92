"""Prometheus text exposition format 0.0.4, written by hand (no client library at run time).

The families come from ``views.metric_families``; this module only formats them.
"""
from __future__ import annotations

import math
from typing import Iterable

from gateway.admin.views import Family

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape_label(value: str) -> str:
    # Label values escape backslash, double quote and line feed.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(families: Iterable[Family]) -> bytes:
    out: list[str] = []
    for fam in families:
        out.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        out.append(f"# TYPE {fam.name} {fam.type}")
        for suffix, labels, value in fam.samples:
            if labels:
                body = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
                out.append(f"{fam.name}{suffix}{{{body}}} {_number(value)}")
            else:
                out.append(f"{fam.name}{suffix} {_number(value)}")
    out.append("")
    return "\n".join(out).encode()
