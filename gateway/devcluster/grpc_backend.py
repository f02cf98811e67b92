"""gRPC backends: the gRPC "pods" of the local clusters (grpcio, h2c).

Each answers who it is, so a test can see which cluster served a call, without any
generated code (messages are raw bytes; JSON for the identity):

    /gateway.test.Echo/Unary         the identity JSON, with "request": the request as text
    /gateway.test.Echo/ServerStream  the request is a count n: n identity messages
    /gateway.test.Echo/ClientStream  one answer once the client is done: {"received": count}
    /gateway.test.Echo/Bidi          each request echoed back with the identity as it comes
    /gateway.test.Echo/Fail          the request is a gRPC status code: answers with it
    grpc.health.v1.Health            SERVING for "" and "gateway.test.Echo"

and the Gateway API conformance suite's gRPC echo (echo-basic with GRPC_ECHO_SERVER), for its
GRPCRoute tests: ``gateway_api_conformance.echo_basic.grpcecho.GrpcEcho`` Echo and EchoTwo
answer an EchoResponse whose assertions name the method, the request's headers, its
authority and the pod (``--namespace``), EchoThree is not implemented. Its messages are
encoded here (``grpcecho_response``), the proto's field numbers by hand.

Run one with ``python -m gateway.devcluster.grpc_backend --host 127.0.0.2 --port 9000
--cluster a --pod echo-a-0``; it prints ``READY 127.0.0.2:9000 cluster=a pod=echo-a-0 pid=N``.
SIGTERM stops it gracefully (calls in progress get 1 s to end), as a pod's termination.
"""
from __future__ import annotations

import argparse
import asyncio
import os

import orjson

from gateway.protobuf import field

from . import _process
from .backend import BackendProcess

try:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gateway.devcluster.grpc_backend needs grpcio and grpcio-health-checking: "
                      "pip install 'gateway[test]'") from exc

SERVICE = "gateway.test.Echo"


def _raw(data: bytes) -> bytes:
    return data


class EchoService:
    """The Echo methods, answering as ``cluster``/``pod``."""

    def __init__(self, address: str, cluster: str, pod: str) -> None:
        self.identity = {"cluster": cluster, "pod": pod, "address": address}

    def _answer(self, **extra) -> bytes:
        return orjson.dumps({**self.identity, **extra})

    async def unary(self, request: bytes, context) -> bytes:
        return self._answer(request=request.decode(errors="replace"))

    async def server_stream(self, request: bytes, context):
        for i in range(int(request or b"1")):
            yield self._answer(index=i)

    async def client_stream(self, requests, context) -> bytes:
        count = 0
        async for _ in requests:
            count += 1
        return self._answer(received=count)

    async def bidi(self, requests, context):
        async for request in requests:
            yield self._answer(request=request.decode(errors="replace"))

    async def fail(self, request: bytes, context) -> bytes:
        code = int(request or b"14")
        await context.abort(grpc.StatusCode(_status_codes()[code]), f"failed with {code} as asked")

    def handler(self) -> grpc.GenericRpcHandler:
        kw = {"request_deserializer": _raw, "response_serializer": _raw}
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary, **kw),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream, **kw),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream, **kw),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi, **kw),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail, **kw),
        })


GRPC_ECHO = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"


def grpcecho_response(method: str, headers: list[tuple[str, str]], authority: str, namespace: str, pod: str) -> bytes:
    """EchoResponse{assertions: Assertions{fully_qualified_method=1, headers=2 (Header{key=1,
    value=2}), authority=3, context=4 (Context{namespace=1, pod=4})}, request=2 (empty)}."""
    assertions = field(1, method.encode()) + b"".join(
        field(2, field(1, k.encode()) + field(2, v.encode())) for k, v in headers)
    assertions += field(3, authority.encode()) + field(4, field(1, namespace.encode()) + field(4, pod.encode()))
    return field(1, assertions) + field(2, b"")


class GrpcEchoService:
    """The conformance suite's GrpcEcho, as pod ``pod`` of ``namespace``."""

    def __init__(self, namespace: str, pod: str) -> None:
        self.namespace, self.pod = namespace, pod

    def method(self, name: str):
        async def echo(request: bytes, context) -> bytes:
            metadata = [(k, v) for k, v in context.invocation_metadata() if isinstance(v, str)]
            authority = next((v for k, v in metadata if k == ":authority"), "")
            return grpcecho_response(f"/{GRPC_ECHO}/{name}", metadata, authority, self.namespace, self.pod)
        return echo

    def handler(self) -> grpc.GenericRpcHandler:
        kw = {"request_deserializer": _raw, "response_serializer": _raw}
        return grpc.method_handlers_generic_handler(GRPC_ECHO, {
            name: grpc.unary_unary_rpc_method_handler(self.method(name), **kw) for name in ("Echo", "EchoTwo")})


def _status_codes() -> dict[int, tuple]:
    return {code.value[0]: code.value for code in grpc.StatusCode}


async def start(host: str, port: int, cluster: str, pod: str, namespace: str = "default",
                tls: tuple[str, str] | None = None):
    """A started grpc.aio server and its port; with ``tls`` (certificate and key files) over TLS."""
    server = grpc.aio.server()
    if tls is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        pair = tuple(open(path, "rb").read() for path in (tls[1], tls[0]))      # (key, chain)
        bound = server.add_secure_port(f"{host}:{port}", grpc.ssl_server_credentials([pair]))
    server.add_generic_rpc_handlers((EchoService(f"{host}:{bound}", cluster, pod).handler(),
                                     GrpcEchoService(namespace, pod).handler()))
    servicer = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ("", SERVICE):
        result = servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        if asyncio.iscoroutine(result):
            await result
    await server.start()
    return server, bound


class GrpcBackendProcess(BackendProcess):
    """A gRPC backend in its own process, so a test can SIGKILL or SIGSTOP it (its ``stats``
    and ``url`` are the HTTP backend's and do not apply)."""

    module = "gateway.devcluster.grpc_backend"

    def __init__(self, host: str, port: int, cluster: str, pod: str, namespace: str = "default",
                 tls: tuple[str, str, str | None] | None = None) -> None:
        super().__init__(host, port, cluster, pod, tls=tls)
        self.namespace = namespace

    def options(self) -> list[str]:
        return ["--namespace", self.namespace]


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    server, port = await start(args.host, args.port, args.cluster, args.pod, args.namespace, tls)
    done = _process.stop_requested(loop, args.parent_pid)
    _process.announce(f"{args.host}:{port} cluster={args.cluster} pod={args.pod} pid={os.getpid()}")
    await done.wait()
    await server.stop(grace=1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a gRPC backend pod of the local clusters (h2c)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--pod", required=True)
    parser.add_argument("--namespace", default="default", help="GrpcEcho's namespace in its answers")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.add_argument("--tls-cert", help="serve gRPC over TLS with this certificate chain (PEM file)")
    parser.add_argument("--tls-key", help="... and this key")
    parser.add_argument("--tls-client-ca", help="(accepted for the HTTP backend's options; not used)")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
