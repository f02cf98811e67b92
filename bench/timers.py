"""Deadlines: how late each fires, and what keeping them costs per request, for this work tree
and a commit (``--ref``, say the one before the timer heap) side by side in one run.

Lateness: for each kind (a route's ``timeout``, ``timeouts.response_header``,
``downstream_header``, ``body_idle``, ``downstream_idle``; all 300 ms) SAMPLES connections are
started STAGGER apart, so they fall at every phase of a periodic timer, and each is timed from
the client: sent -> answered (or: answer read -> closed, for idle); lateness = that - 300 ms.
Cost: CPU microseconds of the gateway per request (wrk, 50 keep-alive connections, nginx
backends), on a route with a 5 s ``timeout`` (a deadline armed per request) and on one without.

Layout as bench/run.py: each gateway (one process) on CPU 0; wrk, the nginx backends and the
slow backend (gateway.devcluster.backend, for answers that do not come) on CPU 1.

    python bench/timers.py --ref HEAD~3              # quiet machine only: ~2 minutes (--ref A,B: several)
    python bench/timers.py --quick                   # a check that it runs (this tree only)
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # noqa: E402  (bench/run.py: processes, wrk, CPU accounting)

TIMEOUT = 0.3
SAMPLES = 60
STAGGER = 0.007

SLOW_ROUTE = b"GET /slow-timed/delay/5 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
SLOW = b"GET /slow/delay/5 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
PARTIAL_HEAD = b"GET /small HTTP/1.1\r\nHost: b\r\n"
PARTIAL_BODY = b"POST /slow/upload HTTP/1.1\r\nHost: b\r\nContent-Length: 10\r\n\r\nhello"
KEEP_ALIVE = b"GET /small HTTP/1.1\r\nHost: b\r\n\r\n"


def gateway_conf(port: int, backend_port: int, slow: str) -> str:
    return f"""listen: 127.0.0.1:{port}
admin: off
access_log: {{path: off}}
timeouts: {{drain: 2s, response_header: {TIMEOUT}s, downstream_idle: {TIMEOUT}s,
            downstream_header: {TIMEOUT}s, body_idle: {TIMEOUT}s}}
sources:
  - name: bench
    type: static
    services:
      - {{name: backend, namespace: default, endpoints: ["127.0.0.2:{backend_port}", "127.0.0.3:{backend_port}"]}}
      - {{name: slow, namespace: default, endpoints: ["{slow}"]}}
services:
  - {{name: backend, namespace: default, port: {backend_port}}}
  - {{name: slow, namespace: default, port: {slow.rsplit(":", 1)[1]}}}
routes:
  - {{name: slow-timed, match: {{path: {{prefix: /slow-timed/}}}}, service: default/slow,
     rewrite: {{prefix: /}}, timeout: {TIMEOUT}s}}
  - {{name: slow, match: {{path: {{prefix: /slow/}}}}, service: default/slow, rewrite: {{prefix: /}}}}
  - {{name: timed, match: {{path: {{prefix: /timed/}}}}, service: default/backend,
     rewrite: {{prefix: /}}, timeout: 5s}}
  - {{name: all, match: {{path: {{prefix: /}}}}, service: default/backend}}
"""


async def sent_until_closed(port: int, request: bytes) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    start = time.monotonic()
    await reader.read(-1)
    writer.close()
    return time.monotonic() - start


async def idle_until_closed(port: int, request: bytes) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    await reader.readexactly(length)
    start = time.monotonic()
    await reader.read(-1)
    writer.close()
    return time.monotonic() - start


KINDS = {               # name -> (how it is timed, what is sent)
    "route timeout": (sent_until_closed, SLOW_ROUTE),
    "response_header": (sent_until_closed, SLOW),
    "downstream_header": (sent_until_closed, PARTIAL_HEAD),
    "body_idle": (sent_until_closed, PARTIAL_BODY),
    "downstream_idle": (idle_until_closed, KEEP_ALIVE),
}


async def lateness_ms(port: int, timed, request: bytes) -> list[float]:
    async def one(i: int) -> float:
        await asyncio.sleep(i * STAGGER)
        return (await timed(port, request) - TIMEOUT) * 1000
    return sorted(await asyncio.gather(*(one(i) for i in range(SAMPLES))))


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))]


def main(argv=None) -> int:
    args = base.ref_args(__doc__.split("\n\n")[0], 5.0, argv)
    bench = base.Bench(args)
    slow = None
    try:
        base.check_tools()
        trees = base.source_trees(bench, args.ref)
        bench.start_backend()
        from gateway.devcluster.backend import BackendProcess
        slow = BackendProcess("127.0.0.4", 0, "slow", "slow-0").start()
        gateways = {label: base.start_gateway_from(bench, f"gateway-{i}", src,
                                                   lambda port: gateway_conf(port, bench.backend_port, slow.address))
                    for i, (label, src) in enumerate(trees.items())}

        print(f"Lateness (ms) of a {TIMEOUT * 1000:g} ms deadline, {SAMPLES} connections "
              f"{STAGGER * 1000:g} ms apart: p50 / p90 / max")
        print(f"{'kind':<20}" + "".join(f"{label:>26}" for label in gateways))
        for kind, (timed, request) in KINDS.items():
            row = []
            for target in gateways.values():
                late = asyncio.run(lateness_ms(target.port, timed, request))
                row.append(f"{percentile(late, 0.5):7.1f} {percentile(late, 0.9):7.1f} {late[-1]:7.1f}")
            print(f"{kind:<20}" + "".join(f"{cell:>26}" for cell in row))

        print(f"\nCPU us per request (wrk -c50, {args.duration:g} s, median of {args.repeat})")
        print(f"{'route':<20}" + "".join(f"{label:>26}" for label in gateways))
        for path, about in (("/timed/small", "timeout: 5s"), ("/small", "no timeout")):
            case = base.Case(about, 50, path)
            runs: dict[str, list[float]] = {label: [] for label in gateways}
            for _ in range(args.repeat):            # in turn, so a noisy moment hits both
                for label, target in gateways.items():
                    runs[label].append(bench.run_wrk(target, case, args.duration)["cpu_us_per_req"])
            print(f"{about:<20}" + "".join(f"{statistics.median(r):>26.2f}" for r in runs.values()))
        return 0
    except base.BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if slow is not None:
            slow.stop()
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
