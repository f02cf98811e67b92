"""What tracing costs: the gateway's CPU per request with tracing off, at 1% sampling and at
100% sampling, side by side in one run (issue #28's budget: off unchanged, 1% <= +3%,
100% <= +20%).

Same layout and measurement as bench/run.py (whose machinery this imports): nginx backends
and wrk on CPU 1, each gateway (one process, ``workers: 1``, access log to a file) pinned to
CPU 0; CPU microseconds per request = utime+stime of the gateway's processes (its exporter
thread included) over the requests wrk completed.  The three gateways run at once and are
measured in turn, round robin, the order rotated each repetition, so that a noisy minute
is spread over all three.

The collector is a small OTLP/HTTP sink on CPU 1 (``--sink-cpu``) that answers 200 to every
POST and counts requests and bytes; each gateway's own /metrics says how many requests'
spans it recorded, exported and dropped, so a run that dropped spans (a sink that could not
keep up) is seen, not hidden in a low CPU figure.

    python bench/tracing.py --quick                  # a check that it works: 3 s runs, 1 repetition
    python bench/tracing.py                          # 10 s runs, 5 repetitions (~3 min)
    python bench/tracing.py --duration 20 --repeat 7 --cases c50-small,c1-small --json out.json

Everything started here is stopped by pid in a ``finally``; every wrk run is bounded.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # noqa: E402  (bench/run.py: processes, wrk, CPU accounting)

VARIANTS = {            # name -> tracing section (None: off)
    "off": None,
    "1%": 0.01,
    "100%": 1.0,
}


class Sink:
    """An OTLP/HTTP endpoint that accepts everything: threads of this process, which pins
    itself to the load CPU (with wrk and the backends), off the gateways' CPU."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):      # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                self.rfile.read(n)
                sink.requests += 1
                sink.bytes += n
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def gateway_conf(tmp: Path, name: str, port: int, admin_port: int, backend_port: int,
                 ratio: float | None, sink_port: int) -> str:
    tracing = ("" if ratio is None else
               f"tracing: {{endpoint: \"http://127.0.0.1:{sink_port}/v1/traces\", "
               f"sample_ratio: {ratio}}}\n")
    return base.gateway_conf(tmp, name, port, backend_port, access_log=True, workers=1,
                             admin=f"127.0.0.1:{admin_port}", extra=tracing)


def tracing_counters(admin_port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gateway_tracing_") or line.startswith("gateway_requests_total "):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _settled(admin_port: int, timeout: float = 10.0) -> dict[str, float]:
    """The counters once the last batch is exported (stable over a flush and a report)."""
    import time
    deadline = time.monotonic() + timeout
    before = tracing_counters(admin_port)
    while time.monotonic() < deadline:
        time.sleep(1.5)                 # > flush_interval (1 s) and the workers' report (1 s)
        now = tracing_counters(admin_port)
        if now == before:
            return now
        before = now
    return before


def main(argv=None) -> int:
    args = base.variant_args(__doc__.split("\n\n")[0], argv)
    cases = [base.CASES[c] for c in args.cases.split(",")]
    base.check_tools()
    os.sched_setaffinity(0, {int(base.LOAD_CPU)})     # the sink's threads: off the gateways' CPU
    if not args.no_build:
        base.build_extensions(base.REPO)
    bench = base.Bench(argparse.Namespace(keep_tmp=args.keep_tmp))
    sink = Sink()
    runs: list[dict] = []
    admin_ports: dict[str, int] = {}
    try:
        bench.start_backend()
        targets: dict[str, base.Target] = {}
        for name, ratio in VARIANTS.items():
            label = "gw-tracing-" + {"off": "off", "1%": "1pct", "100%": "100pct"}[name]
            port, admin_port = base.free_port("127.0.0.1"), base.free_port("127.0.0.1")
            conf = bench.tmp / f"{label}.yaml"
            conf.write_text(gateway_conf(bench.tmp, label, port, admin_port, bench.backend_port,
                                         ratio, sink.port))
            proc = bench.spawn(label, [base.PYTHON, "-m", "gateway", "run", "--config", str(conf),
                                       "--log-level", "warning"], base.PROXY_CPU, cwd=base.REPO)
            base.wait_ready(proc, "127.0.0.1", port, timeout=30)
            targets[name] = base.Target(label, "127.0.0.1", port, proc)
            admin_ports[name] = admin_port
        names = list(VARIANTS)
        for name in names:                  # warm up (imports, pools, the tracer's first batches)
            bench.run_wrk(targets[name], base.CASES["c50-small"], 2)
        for rep in range(args.repeat):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for case in cases:
                for name in order:
                    r = bench.run_wrk(targets[name], case, args.duration)
                    r.update(variant=name, case=case.name, repetition=rep)
                    runs.append(r)
                    print(f"rep {rep + 1}/{args.repeat} {case.name:<14} tracing {name:<5} "
                          f"{r['rps']:>9.0f} req/s  {r['cpu_us_per_req']:6.1f} CPU us/req  "
                          f"p99 {r['p99_us'] / 1000:6.2f} ms  (CPU 0 busy with others: "
                          f"{r['cpu0_other_util'] * 100:.0f}%)", flush=True)
        counters = {name: _settled(admin_ports[name]) for name in names}
    finally:
        bench.cleanup()
        sink.close()

    summary = {}
    for case in cases:
        off = [r["cpu_us_per_req"] for r in runs if r["variant"] == "off" and r["case"] == case.name]
        base_cpu = statistics.median(off)
        for name in names:
            sel = [r for r in runs if r["variant"] == name and r["case"] == case.name]
            cpu = statistics.median(r["cpu_us_per_req"] for r in sel)
            summary[f"{case.name}/{name}"] = {
                "cpu_us_per_req": cpu, "vs_off_pct": (cpu / base_cpu - 1) * 100,
                "rps": statistics.median(r["rps"] for r in sel),
                "p99_us": statistics.median(r["p99_us"] for r in sel)}
    print()
    print(f"{'case':<14} {'tracing':<8} {'req/s':>9} {'CPU us/req':>11} {'vs off':>8} {'p99 ms':>8}")
    for key, s in summary.items():
        case, name = key.split("/")
        print(f"{case:<14} {name:<8} {s['rps']:>9.0f} {s['cpu_us_per_req']:>11.1f} "
              f"{s['vs_off_pct']:>+7.1f}% {s['p99_us'] / 1000:>8.2f}")
    print()
    print("spans (from each gateway's /metrics; a request's spans are one server span and one per attempt):")
    full_q = 'gateway_tracing_requests_dropped_total{reason="queue_full"}'
    failed_q = 'gateway_tracing_requests_dropped_total{reason="export_failed"}'
    for name in names:
        c = counters[name]
        if VARIANTS[name] is None:
            print(f"  {name:<5} tracing off")
            continue
        print(f"  {name:<5} requests {c.get('gateway_requests_total', 0):.0f}, recorded "
              f"{c.get('gateway_tracing_requests_recorded_total', 0):.0f}, spans exported "
              f"{c.get('gateway_tracing_spans_exported_total', 0):.0f}, dropped (queue full) "
              f"{c.get(full_q, 0):.0f}, dropped (export failed) {c.get(failed_q, 0):.0f}")
    print(f"  sink: {sink.requests} export requests, {sink.bytes / 1e6:.1f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "summary": summary,
                                               "tracing": counters}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
