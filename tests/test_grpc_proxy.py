"""gRPC through the gateway: grpcio clients and servers, two local clusters, one channel.

A gRPC channel is one long-lived HTTP/2 connection, so only balancing per call spreads it over
both clusters; here each call kind goes through, one channel's calls split about evenly, and
when cluster A's pod crashes or is stopped the calls keep succeeding (the route marks them
idempotent: a reset or refused call is retried on B) while streams that were on A end
UNAVAILABLE instead of hanging.
"""
from __future__ import annotations

import threading
import time
from collections import Counter

import orjson
import pytest

grpc = pytest.importorskip("grpc")

from gateway.devcluster.grpc_backend import SERVICE, GrpcBackendProcess  # noqa: E402
from support import GatewayProcess, start_with_admin, static_source  # noqa: E402

pytestmark = pytest.mark.timeout(120)

CHECK = {"type": "grpc", "interval": "250ms", "timeout": "200ms", "jitter": "0s",
         "healthy_threshold": 1, "unhealthy_threshold": 1}


def raw(data: bytes) -> bytes:
    return data


def method(channel, kind: str, name: str):
    return getattr(channel, kind)(f"/{SERVICE}/{name}", request_serializer=raw, response_deserializer=raw)


def gateway_config(a: GrpcBackendProcess, b: GrpcBackendProcess, **extra) -> dict:
    return {
        "sources": [static_source("a", {"demo/echo": [a.address]}),
                    static_source("b", {"demo/echo": [b.address]})],
        "services": [{"namespace": "demo", "name": "echo", "port": 9000, "protocol": "h2c",
                      "health_check": CHECK}],
        "routes": [{"name": "echo", "match": {"path": {"prefix": f"/{SERVICE}/"}},
                    "service": "demo/echo", "retries": {"attempts": 3, "idempotent": True}}],
        **extra,
    }


def start_pods() -> tuple[GrpcBackendProcess, GrpcBackendProcess]:
    a = GrpcBackendProcess("127.0.0.2", 0, "a", "echo-a-0").start()
    try:
        return a, GrpcBackendProcess("127.0.0.3", 0, "b", "echo-b-0").start()
    except BaseException:
        a.stop()
        raise


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    a, b = start_pods()
    gw = GatewayProcess(gateway_config(a, b), tmp_path_factory.mktemp("grpc"), "grpc").start()
    channel = grpc.insecure_channel(f"127.0.0.1:{gw.port}")
    yield gw, channel
    channel.close()
    gw.stop()
    a.stop()
    b.stop()


def test_every_call_kind_goes_through(setup):
    _, channel = setup
    unary = orjson.loads(method(channel, "unary_unary", "Unary")(b"hello", timeout=5))
    assert unary["request"] == "hello" and unary["cluster"] in ("a", "b")
    streamed = [orjson.loads(m) for m in method(channel, "unary_stream", "ServerStream")(b"5", timeout=5)]
    assert [m["index"] for m in streamed] == list(range(5))
    counted = orjson.loads(method(channel, "stream_unary", "ClientStream")(iter([b"x"] * 7), timeout=5))
    assert counted["received"] == 7
    echoed = [orjson.loads(m)["request"] for m in
              method(channel, "stream_stream", "Bidi")(iter([b"p", b"q", b"r"]), timeout=5)]
    assert echoed == ["p", "q", "r"]


def test_a_servers_status_and_message_reach_the_client(setup):
    gw, channel = setup
    with pytest.raises(grpc.RpcError) as err:
        method(channel, "unary_unary", "Fail")(b"5", timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "failed with 5 as asked"
    entry = gw.log.matching(lambda e: e["path"].endswith("/Fail"))[-1]
    assert entry["grpc_status"] == 5 and entry["protocol"] == "HTTP/2" and entry["status"] == 200
    assert entry["attempts"] == 1               # the server's own answer: not retried


@pytest.mark.parametrize("code, status", [(14, grpc.StatusCode.UNAVAILABLE),
                                          (1, grpc.StatusCode.CANCELLED)])
def test_a_call_the_server_refused_is_retried_on_the_other_cluster(setup, code, status):
    # Both pods refuse here, so the last answer reaches the client after every attempt;
    # a pod that stops mid-traffic answers CANCELLED to calls arriving meanwhile.
    gw, channel = setup
    with pytest.raises(grpc.RpcError) as err:
        method(channel, "unary_unary", "Fail")(str(code).encode(), timeout=5)
    assert err.value.code() == status
    entry = gw.log.matching(lambda e: e["path"].endswith("/Fail") and e["grpc_status"] == code)[-1]
    assert entry["attempts"] == 3, entry        # retries: {attempts: 3, idempotent: true}
    assert len(set(entry["tried_hosts"])) == 2, entry   # one pod per cluster: both were tried


def test_one_channels_calls_split_over_both_clusters(setup):
    _, channel = setup
    unary = method(channel, "unary_unary", "Unary")
    clusters = Counter(orjson.loads(unary(b"n", timeout=5))["cluster"] for _ in range(200))
    print(f"\none channel, 200 unary calls: {dict(clusters)}")
    assert 70 <= clusters["a"] <= 130 and clusters["a"] + clusters["b"] == 200, clusters


def test_a_grpc_timeout_shorter_than_the_route_ends_deadline_exceeded(setup):
    _, channel = setup
    stream = method(channel, "stream_stream", "Bidi")
    requests = threading.Event()

    def never_ending():                 # the call stays open: the server waits for requests
        requests.wait(10)
        return
        yield

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        list(stream(never_ending(), timeout=0.5))
    requests.set()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3


class CallLoop:
    """Unary calls on one channel from a thread, bounded in count; what each one got."""

    def __init__(self, channel, calls: int = 3000, pause: float = 0.002) -> None:
        self.unary = method(channel, "unary_unary", "Unary")
        self.calls, self.pause = calls, pause
        self.clusters: list[str] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        for _ in range(self.calls):
            if self.stop.is_set():
                return
            try:
                self.clusters.append(orjson.loads(self.unary(b"loop", timeout=5))["cluster"])
            except grpc.RpcError as err:
                self.failures.append(f"{err.code()}: {err.details()}")
            time.sleep(self.pause)

    def __enter__(self) -> "CallLoop":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(15)

    def wait_for(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.clusters) + len(self.failures) < n and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.mark.parametrize("how", ["crash", "sigterm"])
def test_cluster_a_going_away_fails_no_unary_call(how, tmp_path):
    a, b = start_pods()
    try:
        gw, admin = start_with_admin(gateway_config(a, b), tmp_path, f"failover-{how}")
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{gw.port}")
            with CallLoop(channel) as loop:
                loop.wait_for(150)
                assert set(loop.clusters) == {"a", "b"}
                mark = len(loop.clusters)
                if how == "crash":
                    a.kill()
                else:
                    a.stop()                # SIGTERM: grpcio's graceful stop (GOAWAY, 1 s grace)
                loop.wait_for(mark + 400)
            channel.close()
            print(f"\n{how}: {len(loop.clusters)} unary calls ok, {len(loop.failures)} failed; "
                  f"before: {dict(Counter(loop.clusters[:mark]))}, after: {dict(Counter(loop.clusters[mark:]))}, "
                  f"retried: {sum(1 for e in gw.log.entries() if e.get('attempts', 1) > 1)}")
            assert loop.failures == []
            after = Counter(loop.clusters[mark + 50:])
            assert after["b"] >= 300 and after["a"] == 0, after
        finally:
            gw.stop()
    finally:
        a.stop()
        b.stop()


def test_streams_on_the_lost_cluster_end_unavailable_and_the_others_go_on(tmp_path):
    a, b = start_pods()
    try:
        gw = GatewayProcess(gateway_config(a, b), tmp_path, "streams").start()
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{gw.port}")
            calls = [BidiCall(channel) for _ in range(4)]
            on = {call: call.ask(b"hello")["cluster"] for call in calls}
            assert set(on.values()) == {"a", "b"}, on
            a.kill()
            for call, cluster in on.items():
                if cluster == "a":
                    assert call.ended_with(timeout=5) == grpc.StatusCode.UNAVAILABLE
                else:
                    assert call.ask(b"still there")["cluster"] == "b"
            for call in calls:
                call.close()
            channel.close()
        finally:
            gw.stop()
    finally:
        a.stop()
        b.stop()


class BidiCall:
    """A Bidi call kept open: ``ask`` sends one message and reads its echo."""

    def __init__(self, channel) -> None:
        self.outbox: list[bytes] = []
        self.ready = threading.Condition()
        self.closed = False
        self.responses = method(channel, "stream_stream", "Bidi")(self.requests(), timeout=30)

    def requests(self):
        while True:
            with self.ready:
                self.ready.wait_for(lambda: self.outbox or self.closed, timeout=30)
                if self.closed or not self.outbox:
                    return
                message = self.outbox.pop(0)
            yield message

    def ask(self, message: bytes) -> dict:
        with self.ready:
            self.outbox.append(message)
            self.ready.notify()
        return orjson.loads(next(self.responses))

    def ended_with(self, timeout: float):
        """The status the call ended with (reading on until it ends, within ``timeout``)."""
        result: list = []

        def read() -> None:
            try:
                for _ in self.responses:
                    pass
                result.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                result.append(err.code())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        assert result, f"the call did not end within {timeout} s"
        return result[0]

    def close(self) -> None:
        with self.ready:
            self.closed = True
            self.ready.notify()
        self.responses.cancel()
