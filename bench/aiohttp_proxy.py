"""A minimal aiohttp reverse proxy: what a Python developer would write instead of the gateway.

    python bench/aiohttp_proxy.py --listen 127.0.0.1:8080 --backend 127.0.0.2:8000 --backend 127.0.0.3:8000

One process, uvloop, one shared ClientSession with keep-alive connections to the
backends, round robin over them.  The request body (if any) is streamed up; the
response body is read whole and sent back (the common idiom).  Hop-by-hop headers
are dropped both ways.  Used by ``bench/run.py`` as the "aiohttp" target.
"""
from __future__ import annotations

import argparse
import itertools

import aiohttp
import uvloop
from aiohttp import web

HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Host", "Content-Length"))


def build_app(backends: list[str]) -> web.Application:
    rr = itertools.cycle([f"http://{b}" for b in backends])
    app = web.Application()

    async def on_startup(app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=None)
        app["session"] = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                               timeout=aiohttp.ClientTimeout(total=30))

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Forwarded-For"] = request.remote or ""
        data = request.content if request.body_exists else None
        try:
            async with app["session"].request(request.method, next(rr) + request.path_qs,
                                               headers=headers, data=data,
                                               allow_redirects=False) as upstream:
                body = await upstream.read()
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                return web.Response(status=upstream.status, headers=out, body=body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.Response(status=502, text=f"bad gateway: {exc.__class__.__name__}\n")

    app.router.add_route("*", "/{tail:.*}", handler)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8080", help="host:port")
    parser.add_argument("--backend", action="append", required=True, help="host:port (repeat)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    web.run_app(build_app(args.backend), host=host, port=int(port), access_log=None,
                print=None, backlog=4096, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
