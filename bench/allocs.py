"""Python allocations per proxied keep-alive request, in one process (deterministic enough
to compare two builds on a busy machine, unlike CPU time).

    .venv/bin/python bench/allocs.py                  # both modes, 20,000 requests each
    .venv/bin/python bench/allocs.py --requests 5000 --json out.json
    .venv/bin/python bench/allocs.py --src /tmp/main-export   # another checkout's build (before/after)

One uvloop loop holds two backends (a fixed 20-byte answer), the gateway's data plane
(``DataPlane`` from a parsed config: a route with a request-header rewrite, two endpoints
in smooth WRR, health flags) on a listening socket served as a worker serves it, and a
keep-alive client that sends the next request when an answer is complete.  The object
allocator is wrapped by ``bench/_alloccount.pyx`` (compiled here with pyximport) to count
its calls; the same
client run straight against a backend gives the client's and backend's own share, which is
subtracted.  ``allocs/req`` is that difference; ``retained/req`` is the growth of
``sys.getallocatedblocks()`` over the run (a leak shows there).  Modes: the JSON access log
rendered into a buffer that is dropped when full (no writer thread to count), or off.

HTTP/2 (when ``h2load`` is installed): h2load, in its own process, sends the requests over h2c
with prior knowledge on one connection, 1 or 100 streams at a time, through the gateway (log
on) to the same backends; ``h2load --h1`` straight to a backend gives the backend's own share,
which is subtracted.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import re
import shutil
import sys
from pathlib import Path

import uvloop

REPO = Path(__file__).resolve().parent.parent


def _source_tree(argv: list[str]) -> Path:
    """--src DIR: import gateway and _speedups from that checkout (built in place)."""
    if "--src" in argv:
        src = Path(argv[argv.index("--src") + 1]).resolve()
        if not (src / "gateway").is_dir():
            sys.exit(f"allocs.py: no gateway/ in --src {src}")
        return src
    return REPO


sys.path.insert(0, str(_source_tree(sys.argv)))

try:
    import pyximport  # noqa: E402  (Cython's: the counter below is compiled on import)
except ImportError:
    sys.exit("bench/allocs.py needs Cython in this environment: pip install -e '.[bench]'")

pyximport.install(language_level=3, build_dir=str(REPO / "build" / "pyxbld"))
sys.path.insert(0, str(REPO / "bench"))
import _alloccount  # noqa: E402

from gateway.config import parse_config  # noqa: E402
from gateway.dataplane import DataPlane, ProxyContext  # noqa: E402
from gateway.snapshot import EndpointSpec, Snapshot  # noqa: E402

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n\r\n0123456789abcdefghi\n"
REQUEST = b"GET /small HTTP/1.1\r\nHost: bench\r\nUser-Agent: allocs\r\n\r\n"
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.I)


class Backend(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            self.buf = self.buf[end + 4:]
            self.transport.write(ANSWER)


class Client(asyncio.Protocol):
    """Keep-alive: the next request when the answer to the last one is complete."""

    def __init__(self, left: int, done: asyncio.Future) -> None:
        self.left = left
        self.done = done
        self.buf = b""

    def connection_made(self, transport):
        self.transport = transport
        transport.write(REQUEST)

    def data_received(self, data):
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        size = end + 4 + int(_LENGTH.search(self.buf, 0, end + 2).group(1))
        if len(self.buf) < size:
            return
        self.buf = self.buf[size:]
        self.left -= 1
        if self.left:
            self.transport.write(REQUEST)
        else:
            self.transport.close()
            self.done.set_result(None)


class DroppedLog:
    """An access log that keeps nothing: the request path renders and appends its lines,
    ``flush`` drops them (the real one hands them to a writer thread)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.limit = 64 * 1024

    def flush(self) -> None:
        self.parts.clear()


async def _requests(port: int, n: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    await loop.create_connection(lambda: Client(n, done), "127.0.0.1", port)
    await done


async def _measure(port: int, n: int) -> tuple[float, float]:
    await _requests(port, 2000)         # warm: pools, free lists, caches
    gc.collect()
    blocks, calls = sys.getallocatedblocks(), _alloccount.count()
    await _requests(port, n)
    calls = _alloccount.count() - calls
    gc.collect()
    return calls / n, (sys.getallocatedblocks() - blocks) / n


async def _h2load(port: int, n: int, streams: int, h1: bool = False) -> None:
    proc = await asyncio.create_subprocess_exec(
        "h2load", "-n", str(n), "-c", "1", "-m", str(streams), *(["--h1"] if h1 else []),
        f"http://127.0.0.1:{port}/small", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode or f"status codes: {n} 2xx".encode() not in out:
        raise SystemExit(f"allocs.py: h2load failed:\n{out.decode(errors='replace')[-800:]}")


async def _measure_h2load(port: int, n: int, streams: int, h1: bool = False) -> tuple[float, float]:
    await _h2load(port, 2000, streams, h1)      # warm
    gc.collect()
    blocks, calls = sys.getallocatedblocks(), _alloccount.count()
    await _h2load(port, n, streams, h1)
    calls = _alloccount.count() - calls
    gc.collect()
    return calls / n, (sys.getallocatedblocks() - blocks) / n


def _gateway(loop, ports: list[int], log: bool) -> ProxyContext:
    config = parse_config({
        "listen": "127.0.0.1:8080", "admin": None,   # not listened on: the server is made here
        "sources": [{"name": "zone-a", "type": "static", "services": []}],
        "services": [{"name": "svc", "namespace": "default", "port": 80, "outlier_detection": "off"}],
        "routes": [{"name": "small", "match": {"path": {"prefix": "/small"}}, "service": "default/svc",
                    "request_headers": {"set": [{"name": "X-Bench", "value": "1"}]}}],
    })
    # One client connection for the whole run (the default limit would close it at 10,000).
    limits = dataclasses.replace(config.limits, max_requests_per_connection=1 << 30)
    access_log = DroppedLog() if log else None
    try:
        ctx = ProxyContext(loop, limits, config.timeouts, access_log=access_log)
    except TypeError:           # a --src tree from before ProxyContext took the config's limits
        ctx = ProxyContext(loop, access_log=access_log, max_requests_per_connection=1 << 30)
    plane = DataPlane(ctx)
    plane.apply_config(config)
    plane.apply_full(Snapshot(1, {"default/svc": tuple(
        EndpointSpec("zone-a", "127.0.0.1", p, 1) for p in ports)}))
    return ctx


async def _serve(loop, ctx):
    """The plain port as a worker serves it: through the reactor (uvloop's server in
    checkouts from before it, for --src comparisons).  Returns (port, close)."""
    try:
        from _speedups.reactor import Reactor
        from gateway.config import Address
        from gateway.listeners import ReactorServer, bind_listeners
    except ImportError:
        server = await loop.create_server(ctx.protocol_factory, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1], server.close
    reactor = Reactor(loop)
    server = ReactorServer(reactor, bind_listeners(Address("127.0.0.1", 0)), ctx.protocol_factory)
    return server.sockets[0].getsockname()[1], reactor.close


async def main_async(n: int) -> dict:
    loop = asyncio.get_running_loop()
    backends = [await loop.create_server(Backend, "127.0.0.1", 0) for _ in range(2)]
    ports = [b.sockets[0].getsockname()[1] for b in backends]
    _alloccount.start()
    direct, direct_kept = await _measure(ports[0], n)
    out = {"requests": n, "direct_allocs_per_request": round(direct, 2)}
    for mode, log in (("gateway", True), ("gateway-nolog", False)):
        ctx = _gateway(loop, ports, log)
        port, close = await _serve(loop, ctx)
        calls, kept = await _measure(port, n)
        assert ctx.stats["responses_2xx"] == n + 2000, ctx.stats    # all proxied, none refused
        out[mode] = {"allocs_per_request": round(calls - direct, 2),
                     "retained_blocks_per_request": round(kept - direct_kept, 3)}
        close()
    if shutil.which("h2load"):
        backend, backend_kept = await _measure_h2load(ports[0], n, 1, h1=True)
        ctx = _gateway(loop, ports, True)
        port, close = await _serve(loop, ctx)
        for streams in (1, 100):
            calls, kept = await _measure_h2load(port, n, streams)
            out[f"h2-m{streams}"] = {"allocs_per_request": round(calls - backend, 2),
                                     "retained_blocks_per_request": round(kept - backend_kept, 3)}
        close()
    for b in backends:
        b.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--src", help="the checkout whose build is measured (default: this one)")
    args = ap.parse_args()
    result = uvloop.run(main_async(args.requests))
    import gateway
    measured = Path(gateway.__file__).resolve().parent.parent
    if measured != _source_tree(sys.argv):      # an editable install can shadow sys.path
        sys.exit(f"allocs.py: imported the gateway from {measured}, not {_source_tree(sys.argv)}")
    print(f"{measured}: per proxied keep-alive request "
          f"({args.requests} requests, client and backend subtracted):")
    for mode in ("gateway", "gateway-nolog", "h2-m1", "h2-m100"):
        if mode not in result:
            continue
        r = result[mode]
        print(f"  {mode:14} {r['allocs_per_request']:7.2f} allocs/req  "
              f"{r['retained_blocks_per_request']:6.3f} retained blocks/req")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
