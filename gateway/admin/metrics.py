"""Prometheus text exposition format 0.0.4 and OpenMetrics 1.0, written by hand (no client
library at run time).

The families come from ``views.metric_families``; this module only formats them.  OpenMetrics
is served when the scraper asks for it (Prometheus does, first, in its Accept field): it is
the format with exemplars, the trace id of a request a latency bucket counted.  It differs
from 0.0.4 in a few places: a counter's family is named without ``_total`` (its samples keep
it), the text ends with ``# EOF``, and a sample may end with ``# {trace_id="..."} value time``.
"""
from __future__ import annotations

import math
from typing import Iterable

from gateway.admin.views import Family

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def wants_openmetrics(accept: str | None) -> bool:
    """Does an Accept field ask for OpenMetrics (at a q above 0)?"""
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media != "application/openmetrics-text":
            continue
        q = next((p[2:].strip() for p in params if p.replace(" ", "").startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            pass                        # a malformed q: this part asks for nothing
    return False


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


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items()) + "}"


def render(families: Iterable[Family]) -> bytes:
    """The 0.0.4 text format (exemplars left out: it has no place for them)."""
    out: list[str] = []
    for fam in families:
        out.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        out.append(f"# TYPE {fam.name} {fam.type}")
        for suffix, labels, value, *_ in fam.samples:
            out.append(f"{fam.name}{suffix}{_labels(labels)} {_number(value)}")
    out.append("")
    return "\n".join(out).encode()


def render_openmetrics(families: Iterable[Family]) -> bytes:
    """OpenMetrics 1.0 text, with the exemplars."""
    families = list(families)
    names = {fam.name for fam in families}
    out: list[str] = []
    for fam in families:
        name, kind = fam.name, fam.type
        if kind == "counter":
            if name.endswith("_total") and name[:-6] not in names:
                name = name[:-6]            # the family; its samples are <family>_total
            else:
                kind = "unknown"            # the base name is a gauge's too: kept whole, untyped
        out.append(f"# HELP {name} {_escape_label(fam.help)}")     # escaped as a label value there
        out.append(f"# TYPE {name} {kind}")
        for suffix, labels, value, *exemplar in fam.samples:
            line = f"{fam.name}{suffix}{_labels(labels)} {_number(value)}"
            if exemplar:
                trace_id, seconds, wall_time = exemplar[0]
                line += f' # {{trace_id="{trace_id}"}} {_number(seconds)} {wall_time:.3f}'
            out.append(line)
    out.append("# EOF")
    out.append("")
    return "\n".join(out).encode()
