"""The local clusters' gRPC pods (gateway.devcluster.grpc_backend), from a grpcio client.

Each call kind answers with the pod's identity; Fail answers the status asked for; the
health service says SERVING, also to the gateway's own grpc probe; SIGTERM ends the pod.
"""
from __future__ import annotations

import asyncio
import signal

import orjson
import pytest

grpc = pytest.importorskip("grpc")

from gateway.config import HealthCheckConfig  # noqa: E402
from gateway.devcluster.grpc_backend import SERVICE, GrpcBackendProcess  # noqa: E402
from gateway.health.probe import probe  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def raw(data: bytes) -> bytes:
    return data


@pytest.fixture(scope="module")
def pod():
    backend = GrpcBackendProcess("127.0.0.2", 0, "zone-a", "echo-a-0").start()
    channel = grpc.insecure_channel(backend.address)
    yield backend, channel
    channel.close()
    backend.stop()


def method(channel, kind: str, name: str):
    return getattr(channel, kind)(f"/{SERVICE}/{name}", request_serializer=raw, response_deserializer=raw)


def test_each_call_kind_answers_with_the_pod(pod):
    backend, channel = pod
    unary = orjson.loads(method(channel, "unary_unary", "Unary")(b"hello", timeout=5))
    assert unary == {"cluster": "zone-a", "pod": "echo-a-0", "address": backend.address, "request": "hello"}
    streamed = [orjson.loads(m) for m in method(channel, "unary_stream", "ServerStream")(b"3", timeout=5)]
    assert [m["index"] for m in streamed] == [0, 1, 2]
    counted = orjson.loads(method(channel, "stream_unary", "ClientStream")(iter([b"a", b"b"]), timeout=5))
    assert counted["received"] == 2
    echoed = [orjson.loads(m)["request"] for m in method(channel, "stream_stream", "Bidi")(iter([b"x", b"y"]), timeout=5)]
    assert echoed == ["x", "y"]


def test_fail_answers_the_status_asked_for(pod):
    _, channel = pod
    with pytest.raises(grpc.RpcError) as err:
        method(channel, "unary_unary", "Fail")(b"14", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_gateways_grpc_probe_sees_it_serving_and_sigterm_ends_it():
    backend = GrpcBackendProcess("127.0.0.3", 0, "zone-b", "echo-b-0").start()
    try:
        check = HealthCheckConfig(type="grpc", grpc_service=SERVICE, timeout=2.0, interval=5.0)
        assert asyncio.run(probe("127.0.0.3", backend.port, check)) is None
        backend.send_signal(signal.SIGTERM)
        assert asyncio.run(probe("127.0.0.3", backend.port, check)) is not None
    finally:
        backend.stop()
