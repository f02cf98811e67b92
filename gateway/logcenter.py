"""``gateway logs``: the log center: filter, group and measure the JSON access log.

Reads the access log (one JSON object per line, as the gateway writes it) from files or
stdin, keeps the entries that pass the filters, and prints per group the requests, their
share, the status classes and the latency percentiles (p50/p90/p99 of ``duration_ms``),
optionally per second or minute::

    gateway logs access.log --by upstream_host
    gateway logs access.log --route test --status 5xx --since 5m --by upstream_cluster --per second
    tail -f access.log | gateway logs --by status            # summary at EOF
    gateway logs --by route --json                           # the running gateway's log file

With no file and no piped input, the log file of the running gateway is found through its
admin API (``--admin``).  A TLS listener's connection (TLSRoutes) is an entry too, with its
``server_name`` and ``result`` and no status.  Lines that are not access-log entries (not
JSON, or neither a status nor a server_name) are skipped and counted.
"""
from __future__ import annotations

import argparse
import calendar
import collections
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Iterable, Iterator

import orjson

GROUP_FIELDS = ("upstream_host", "upstream_cluster", "status", "route", "upstream_service",
                "method", "client", "host", "server_name", "protocol", "result")
ALIASES = {"service": "upstream_service", "cluster": "upstream_cluster", "host_header": "host"}
PERIODS = {"second": 1, "minute": 60, "hour": 3600}
PERCENTILES = (50, 90, 99)


# --- reading -------------------------------------------------------------------------------

_second_cache: dict[str, float] = {}


def entry_time(entry: dict) -> float | None:
    """Epoch seconds of ``"2026-11-25T09:05:10.341Z"`` (the access log's format)."""
    t = entry.get("time")
    if not isinstance(t, str) or len(t) < 20:
        return None
    base = _second_cache.get(t[:19])
    if base is None:
        try:
            base = calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            return None
        if len(_second_cache) > 100_000:
            _second_cache.clear()
        _second_cache[t[:19]] = base
    frac = t[19:].rstrip("Z")
    try:
        return base + (float(frac) if frac.startswith(".") else 0.0)
    except ValueError:
        return base


@dataclass
class Reader:
    skipped: int = 0

    def entries(self, streams: Iterable[IO[bytes]]) -> Iterator[dict]:
        for stream in streams:
            for line in stream:
                if not line.strip():
                    continue
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    self.skipped += 1
                    continue
                if not isinstance(entry, dict) or ("status" not in entry and "server_name" not in entry):
                    self.skipped += 1       # e.g. a control-plane log line on the same stream
                    continue
                yield entry


# --- filters -------------------------------------------------------------------------------


def parse_status_filter(text: str) -> tuple[set[int], set[int]]:
    """"5xx", "200", "4xx,503" -> (exact codes, classes)."""
    codes, classes = set(), set()
    for part in text.split(","):
        part = part.strip().lower()
        if len(part) == 3 and part[0].isdigit() and part[1:] == "xx":
            classes.add(int(part[0]))
        elif part.isdigit():
            codes.add(int(part))
        elif part:
            raise ValueError(f'status filter: expected "5xx", "200" or a comma list of them, got "{part}"')
    return codes, classes


def parse_since(text: str, now: float) -> float:
    """"5m", "90s", "1h" ago, or an absolute "2026-11-25T09:05:10Z"."""
    from gateway.units import parse_duration
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    t = entry_time({"time": text if text.endswith("Z") else text + "Z"}) if "T" in text else None
    if t is None:
        raise ValueError(f'since: expected a duration like "5m" or a time like "2026-11-25T09:05:10Z", got "{text}"')
    return t


@dataclass
class Filters:
    route: str | None = None
    service: str | None = None
    cluster: str | None = None
    codes: set[int] = field(default_factory=set)
    classes: set[int] = field(default_factory=set)
    since: float | None = None
    until: float | None = None

    def __call__(self, e: dict) -> bool:
        if self.route is not None and e.get("route") != self.route:
            return False
        if self.service is not None and e.get("upstream_service") != self.service:
            return False
        if self.cluster is not None and e.get("upstream_cluster") != self.cluster:
            return False
        if self.codes or self.classes:
            status = e.get("status") or 0
            if status not in self.codes and status // 100 not in self.classes:
                return False
        if self.since is not None or self.until is not None:
            t = entry_time(e)
            if t is None or (self.since is not None and t < self.since) or \
                    (self.until is not None and t >= self.until):
                return False
        return True

    def describe(self) -> dict:
        out = {k: v for k, v in (("route", self.route), ("service", self.service),
                                 ("cluster", self.cluster)) if v is not None}
        if self.codes or self.classes:
            out["status"] = sorted(map(str, self.codes)) + [f"{c}xx" for c in sorted(self.classes)]
        if self.since is not None:
            out["since"] = _iso(self.since)
        return out


# --- summary -------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (the value at rank ceil(p/100 * n))."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _latency(values: list[float]) -> dict:
    values.sort()
    out = {f"p{p}": percentile(values, p) for p in PERCENTILES}
    out["max"] = values[-1] if values else None
    return out


def _key(entry: dict, by: str) -> str:
    value = entry.get(by)
    return "-" if value is None else str(value)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + "Z"


def summarize(entries: Iterable[dict], by: str = "upstream_host", per: str | None = None) -> dict:
    """Counts, shares, status classes and latency percentiles per group (and per period)."""
    counts: collections.Counter = collections.Counter()
    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    durations: dict[str, list[float]] = collections.defaultdict(list)
    clusters: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    all_durations: list[float] = []
    period = PERIODS[per] if per else None
    buckets: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    first = last = None
    total = 0
    for e in entries:
        total += 1
        k = _key(e, by)
        counts[k] += 1
        status = e.get("status") or 0
        statuses[k][f"{status // 100}xx" if status else "none"] += 1
        d = e.get("duration_ms")
        if isinstance(d, (int, float)):
            durations[k].append(d)
            all_durations.append(d)
        if by == "upstream_host":
            clusters[k][e.get("upstream_cluster") or "-"] += 1
        t = entry_time(e)
        if t is not None:
            first = t if first is None or t < first else first
            last = t if last is None or t > last else last
            if period:
                buckets[int(t // period) * period][k] += 1
    groups = []
    for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        g = {"key": k, "requests": n, "share": round(n / total, 4) if total else 0.0,
             "statuses": dict(sorted(statuses[k].items())), "latency_ms": _latency(durations[k])}
        if by == "upstream_host":
            g["upstream_cluster"] = clusters[k].most_common(1)[0][0]
        groups.append(g)
    out = {"by": by, "requests": total, "first": _iso(first) if first else None,
           "last": _iso(last) if last else None,
           "seconds": round(last - first, 3) if first is not None else 0.0,
           "latency_ms": _latency(all_durations), "groups": groups}
    if period:
        out["per"] = per
        out["buckets"] = [{"start": _iso(start), "requests": sum(c.values()), "groups": dict(c)}
                          for start, c in sorted(buckets.items())]
    return out


# --- printing ------------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def format_summary(s: dict, filters: dict | None = None, skipped: int = 0) -> str:
    from gateway.admin.cli import table
    lines = []
    span = f", {s['first']} .. {s['last']} ({s['seconds']:.1f}s)" if s["first"] else ""
    filt = ", ".join(f"{k}={v if isinstance(v, str) else ','.join(v)}" for k, v in (filters or {}).items())
    lines.append(f"{s['requests']} requests{span}" + (f"; filters: {filt}" if filt else "")
                 + (f"; {skipped} lines skipped" if skipped else ""))
    if not s["groups"]:
        return "\n".join(lines)
    classes = sorted({c for g in s["groups"] for c in g["statuses"]})
    host = s["by"] == "upstream_host"
    headers = [s["by"].upper()] + (["CLUSTER"] if host else []) + ["REQUESTS", "SHARE"] + \
        [c.upper() for c in classes] + ["P50 MS", "P90 MS", "P99 MS"]
    rows = []
    for g in s["groups"]:
        lat = g["latency_ms"]
        rows.append([g["key"]] + ([g["upstream_cluster"]] if host else []) +
                    [g["requests"], f"{g['share'] * 100:.1f}%"] + [g["statuses"].get(c, 0) for c in classes] +
                    [_ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"])])
    lat = s["latency_ms"]
    rows.append(["total"] + ([""] if host else []) + [s["requests"], "100.0%"] +
                [sum(g["statuses"].get(c, 0) for g in s["groups"]) for c in classes] +
                [_ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"])])
    lines.append(table(headers, rows))
    if s.get("buckets"):
        keys = [g["key"] for g in s["groups"]]
        fmt = "%H:%M:%S" if s["per"] != "hour" else "%H:%M"
        brows = []
        for b in s["buckets"]:
            t = calendar.timegm(time.strptime(b["start"], "%Y-%m-%dT%H:%M:%SZ"))
            brows.append([time.strftime(fmt, time.gmtime(t)), b["requests"]] +
                         [b["groups"].get(k, 0) for k in keys])
        lines.append("")
        lines.append(f"per {s['per']} (UTC):")
        lines.append(table(["TIME", "TOTAL"] + keys, brows))
    return "\n".join(lines)


# --- the command ---------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE", help='access log files ("-": stdin)')
    p.add_argument("--route", help="only this route")
    p.add_argument("--service", help="only this service (ns/name)")
    p.add_argument("--cluster", help="only requests answered by this upstream_cluster")
    p.add_argument("--status", help='only these statuses: "5xx", "200", "4xx,503"')
    p.add_argument("--since", help='only the last "5m", or since "2026-11-25T09:05:00Z"')
    p.add_argument("--by", default="upstream_host",
                   help=f"group by: {', '.join(GROUP_FIELDS)} (default: %(default)s)")
    p.add_argument("--per", choices=sorted(PERIODS, key=PERIODS.get), help="also count per period")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--admin", default=os.environ.get("GATEWAY_ADMIN", "http://127.0.0.1:9901"),
                   help="with no FILE and no piped input: read the running gateway's log file")
    rotate = p.add_argument_group("rotation (logrotate's postrotate)")
    rotate.add_argument("--reopen", action="store_true",
                        help="make the running gateway reopen its access log file: SIGUSR1 to "
                             "--pid/--pid-file, else POST /logs/reopen on --admin")
    rotate.add_argument("--pid", type=int, help="with --reopen: the gateway's main process")
    rotate.add_argument("--pid-file", help="with --reopen: a file holding it (gateway run --pid-file)")


def _streams(args) -> list[IO[bytes]]:
    if args.files:
        return [sys.stdin.buffer if f == "-" else open(f, "rb") for f in args.files]
    if not sys.stdin.isatty():
        return [sys.stdin.buffer]
    from gateway.admin.cli import call
    path = call(args.admin, "GET", "/config")["access_log"]["path"]
    if not path or path in ("stdout", "stderr"):
        raise ValueError(f"the running gateway logs to {path or 'nowhere'}; give a FILE or pipe the log in")
    return [open(path, "rb")]


def main(args: argparse.Namespace) -> int:
    if args.reopen:
        from gateway import reopen
        return reopen.main(args)
    if args.pid is not None or args.pid_file is not None:
        print("gateway logs: --pid and --pid-file go with --reopen", file=sys.stderr)
        return 1
    by = ALIASES.get(args.by, args.by)
    try:
        codes, classes = parse_status_filter(args.status) if args.status else (set(), set())
        filters = Filters(route=args.route, service=args.service and _service_key(args.service),
                          cluster=args.cluster, codes=codes, classes=classes,
                          since=parse_since(args.since, time.time()) if args.since else None)
        if by not in GROUP_FIELDS:
            raise ValueError(f"--by: one of {', '.join(GROUP_FIELDS)}, got {args.by!r}")
        streams = _streams(args)
    except (ValueError, OSError) as err:
        print(f"gateway logs: {err}", file=sys.stderr)
        return 1
    except Exception as err:    # the admin lookup: AdminError / Unreachable
        print(f"gateway logs: {err}", file=sys.stderr)
        return 2
    reader = Reader()
    try:
        summary = summarize((e for e in reader.entries(streams) if filters(e)), by, args.per)
    finally:
        for s in streams:
            if s is not sys.stdin.buffer:
                s.close()
    summary["filters"] = filters.describe()
    summary["skipped_lines"] = reader.skipped
    if args.json:
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_summary(summary, summary["filters"], reader.skipped))
    return 0


def _service_key(text: str) -> str:
    ns, _, name = text.rpartition("/")
    return f"{ns or 'default'}/{name}"
