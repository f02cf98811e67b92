"""One I/O engine: the gateway's CPU per request when its upstream connections are made on the
reactor (this work tree) and by uvloop (``--ref``, a commit before), side by side in one run.

Cases (wrk, nginx backends, CPU microseconds of the gateway's processes per request):
  keep-alive     50 client connections, upstream connections kept (the common case: the
                 upstream I/O path)
  upstream-close 50 client connections, an upstream that closes every connection after its
                 answer (``keepalive_timeout 0``): a new upstream connection per request (the
                 connect path)
The gateways run at once, each alone on CPU 0 while measured, in turn, the order rotated each
repetition; wrk and the backends on CPU 1 (bench/run.py's layout and accounting).

    python bench/engine.py --ref HEAD~1              # quiet machine only: ~2 minutes
    python bench/engine.py --ref A,B --repeat 5      # several commits and this tree
    python bench/engine.py --quick                   # a check that it runs (this tree only)
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # noqa: E402  (bench/run.py: processes, wrk, CPU accounting)


def closing_backend_conf(tmp: Path, port: int) -> str:
    """bench/run.py's nginx backend, closing every connection after one answer."""
    conf = base.backend_conf(tmp, port).replace("keepalive_timeout 120s;", "keepalive_timeout 0;")
    return conf.replace(f"pid {tmp}/backend.pid;", f"pid {tmp}/closing.pid;")


def gateway_conf(port: int, keep_port: int, close_port: int) -> str:
    backends = lambda p: f'["127.0.0.2:{p}", "127.0.0.3:{p}"]'     # noqa: E731
    return f"""listen: 127.0.0.1:{port}
admin: off
access_log: {{path: off}}
timeouts: {{drain: 2s}}
sources:
  - name: bench
    type: static
    services:
      - {{name: keep, namespace: default, endpoints: {backends(keep_port)}}}
      - {{name: close, namespace: default, endpoints: {backends(close_port)}}}
services:
  - {{name: keep, namespace: default, port: {keep_port}}}
  - {{name: close, namespace: default, port: {close_port}}}
routes:
  - {{name: close, match: {{path: {{prefix: /close/}}}}, service: default/close, rewrite: {{prefix: /}}}}
  - {{name: keep, match: {{path: {{prefix: /}}}}, service: default/keep}}
"""


CASES = {"keep-alive": "/small", "upstream-close": "/close/small"}


def main(argv=None) -> int:
    args = base.ref_args(__doc__.split("\n\n")[0], 8.0, argv)
    bench = base.Bench(args)
    try:
        base.check_tools()
        trees = base.source_trees(bench, args.ref)
        bench.start_backend()
        close_port = base.free_port("127.0.0.2", "127.0.0.3")
        conf = bench.tmp / "closing.conf"
        conf.write_text(closing_backend_conf(bench.tmp, close_port))
        closing = bench.spawn("closing", ["nginx", "-p", str(bench.tmp), "-e", "stderr", "-c", str(conf)],
                              base.LOAD_CPU)
        for host in ("127.0.0.2", "127.0.0.3"):
            base.wait_ready(closing, host, close_port)
        gateways = {label: base.start_gateway_from(bench, f"gateway-{i}", src,
                                                   lambda port: gateway_conf(port, bench.backend_port, close_port))
                    for i, (label, src) in enumerate(trees.items())}
        labels = list(gateways)
        print(f"CPU us per request, wrk -c50, {args.duration:g} s runs, median of {args.repeat}")
        print(f"{'case':<16}" + "".join(f"{label:>14}" for label in labels) + "  tree/first")
        for name, url in CASES.items():
            case = base.Case(name, 50, url)
            runs: dict[str, list[float]] = {label: [] for label in labels}
            for r in range(args.repeat):
                for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                    got = bench.run_wrk(gateways[label], case, args.duration)
                    if got["non2xx"] or any(got["socket_errors"].values()):
                        raise base.BenchError(f"{label} {name}: errors\n{got['wrk_output']}")
                    runs[label].append(got["cpu_us_per_req"])
            medians = [statistics.median(runs[label]) for label in labels]
            print(f"{name:<16}" + "".join(f"{m:>14.2f}" for m in medians) + f"{medians[-1] / medians[0]:12.2f}")
        return 0
    except base.BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
