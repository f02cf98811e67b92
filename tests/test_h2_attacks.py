"""The known HTTP/2 attacks against a real gateway process, from a raw-frame client (h2c).

For each one: the attacking connection gets what a production proxy answers (GOAWAY with
the right error code, RST_STREAM, or a 431), the gateway's RSS stays bounded, and a
bystander, a second client connection opened before the attack and used during it, keeps
getting 200s, as does a connection opened after it.  Every attack loop is bounded in frames
and in time.  All of it with workers: 1 and 2 (RSS summed over the supervisor and workers).
"""
from __future__ import annotations

import socket
import time

import pytest
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import (ContinuationFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame,
                              WindowUpdateFrame)

from support import (GatewayProcess, RssSampler, descendants, start_backend, static_source,
                         upstream_connections)
from h2frames import CANCEL, ENHANCE_YOUR_CALM, REFUSED_STREAM, FrameClient

MAX_STREAMS = 10                    # limits.max_concurrent_streams here
MAX_HEAD = 16 * 1024                # limits.max_request_head (SETTINGS_MAX_HEADER_LIST_SIZE)
GROWTH_LIMIT = 32 * 1024 * 1024     # the gateway's RSS growth allowed during one attack
RESET_BURST = 1000                  # the stream resets a client may make at once (h2.pyx)
STALL_SIZE = 64 * 1024 * 1024
MAX_WINDOW = 2 ** 31 - 1


@pytest.fixture(scope="module")
def backends():
    """One backend for the bystanders and attacks, one only for the stalled downloads (so
    that its upstream connections can be counted)."""
    main = start_backend("127.0.0.2", "h2", "attacks-0")
    stall = start_backend("127.0.0.4", "h2", "stall-0")
    yield main, stall
    main.stop()
    stall.stop()


@pytest.fixture(scope="module", params=[1, 2], ids=["workers-1", "workers-2"])
def gw(backends, tmp_path_factory, request):
    main, stall = backends
    config = {
        "workers": request.param,
        "sources": [static_source("zone-a", {"httpbin": [main.address], "stall": [stall.address]})],
        "services": [{"name": "httpbin", "port": 80}, {"name": "stall", "port": 80}],
        "routes": [
            {"name": "stall", "match": {"host": ["stall.test"]}, "service": "stall", "timeout": "60s"},
            {"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin"},
        ],
        "limits": {"max_concurrent_streams": MAX_STREAMS, "max_request_head": MAX_HEAD},
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("h2-attacks")).start()
    yield proc
    proc.stop()


class Bystander:
    """A well-behaved client on its own connection, opened before the attack."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.client = FrameClient(gw.host, gw.port)
        self.answered = 0

    def check(self) -> None:
        stream = self.client.get(f"/anything/bystander-{self.answered}", timeout=5)
        assert stream.status == 200, (stream.status, stream.reset)
        self.answered += 1

    def finish(self) -> None:
        """Once more on its connection, and once on a fresh one."""
        self.check()
        self.client.close()
        with FrameClient(self.gw.host, self.gw.port) as fresh:
            assert fresh.get("/anything/after-attack", timeout=5).status == 200
        assert self.gw.proc.poll() is None, "the gateway exited"


@pytest.fixture
def bystander(gw):
    watcher = Bystander(gw)
    watcher.check()
    yield watcher
    watcher.finish()


@pytest.fixture
def connect(gw):
    """Opens client connections to the gateway, all closed at the end of the test."""
    opened = []

    def open_client(**kw) -> FrameClient:
        opened.append(FrameClient(gw.host, gw.port, **kw))
        return opened[-1]
    yield open_client
    for client in opened:
        client.close()


def connection_ended(client: FrameClient) -> bool:
    """Whether the server has closed the connection or sent something (GOAWAY) meanwhile,
    without reading: a peek, so a flood keeps the gateway's output unread."""
    client.sock.settimeout(0)
    try:
        return client.sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        client.sock.settimeout(client.timeout)


def beyond_socket_buffers(batch: bytes) -> int:
    """How many ``batch`` writes exceed what the kernel's buffers of one loopback connection can
    hold (the receiver's largest autotuned buffer plus the sender's): a flood of that many
    that ends early was ended by the gateway, however late the gateway got to read it."""
    def largest(name: str) -> int:
        with open(f"/proc/sys/net/ipv4/{name}") as sysctl:
            return int(sysctl.read().split()[-1])
    return (largest("tcp_rmem") + largest("tcp_wmem")) // len(batch) + 2


def flood(client: FrameClient, batch: bytes, batches: int, seconds: float, bystander: Bystander) -> int:
    """Send ``batch`` up to ``batches`` times (or ``seconds``) without reading; the batches sent
    before the gateway closed the connection.  The bystander asks between batches."""
    deadline = time.monotonic() + seconds
    for sent in range(batches):
        if time.monotonic() > deadline:
            return sent
        try:
            client.sock.sendall(batch)
        except OSError:                 # reset or broken pipe: the gateway closed it
            return sent
        if sent % 200 == 0:
            bystander.check()
    return batches


def test_rapid_reset_ends_in_enhance_your_calm(gw, backends, bystander, connect):
    """CVE-2023-44487: HEADERS then RST_STREAM at once, over and over.  After the burst the
    gateway answers GOAWAY ENHANCE_YOUR_CALM and closes; few of the streams reached the
    upstream (each reset one is dropped where it stands)."""
    main, _ = backends
    before, asked = main.stats()["requests"], bystander.answered
    attacker = connect()
    attacker.pump(1.0)                  # the server's SETTINGS
    pairs = 0
    with RssSampler(gw.pid, tree=True) as rss:
        for _ in range(50):             # up to 5000 streams, 100 per write
            batch = []
            for _ in range(100):
                stream = attacker.open_stream()
                batch += [HeadersFrame(stream.id, attacker.head_block("/anything/reset"),
                                       flags=["END_HEADERS", "END_STREAM"]),
                          RstStreamFrame(stream.id, error_code=CANCEL)]
            try:
                attacker.send(*batch)
            except OSError:
                break
            pairs += 100
            attacker.pump(0)
            if attacker.goaway is not None or attacker.closed:
                break
            if pairs % 1000 == 0:
                bystander.check()
        assert attacker.wait_closed(10), "the attacking connection was not closed"
    assert attacker.goaway is not None and attacker.goaway.error_code == ENHANCE_YOUR_CALM, attacker.goaway
    assert attacker.goaway.last_stream_id <= 2 * (RESET_BURST + 200), attacker.goaway.last_stream_id
    upstream = main.stats()["requests"] - before - (bystander.answered - asked)
    print(f"rapid reset: {pairs} streams sent, GOAWAY after stream {attacker.goaway.last_stream_id}, "
          f"{upstream} upstream requests, RSS +{rss.growth / 2**20:.1f} MiB")
    assert upstream <= RESET_BURST + 100, upstream
    assert rss.growth < GROWTH_LIMIT, rss.growth


def test_continuation_flood_is_a_connection_error(gw, bystander, connect):
    """A HEADERS without END_HEADERS, then CONTINUATION frames without end: GOAWAY
    ENHANCE_YOUR_CALM after a few, not a header block growing without bound."""
    attacker = connect()
    attacker.pump(1.0)                  # the SETTINGS ack must not land inside the header block
    stream = attacker.open_stream()
    attacker.send(HeadersFrame(stream.id, attacker.head_block("/anything/continued"), flags=["END_STREAM"]))
    piece = ContinuationFrame(stream.id, attacker.encoder.encode([("x-more", "m" * 10)])).serialize()
    with RssSampler(gw.pid, tree=True) as rss:
        batch = piece * 1000
        limit = beyond_socket_buffers(batch)
        batches = flood(attacker, batch, limit, 20.0, bystander)
        assert attacker.wait_closed(10), "the attacking connection was not closed"
    print(f"CONTINUATION flood: closed after {batches} of {limit} batches of 1000 frames, "
          f"RSS +{rss.growth / 2**20:.1f} MiB")
    # The gateway's limit is 8 CONTINUATION frames (h2.pyx), which ENHANCE_YOUR_CALM shows; the
    # batches the client got out before the close are what the kernel's socket buffers took
    # meanwhile (a busy machine lets them take all of a small flood, as a CI run once showed):
    # a flood larger than the buffers must not run to its end.
    assert batches < limit
    assert attacker.goaway is not None and attacker.goaway.error_code == ENHANCE_YOUR_CALM, attacker.goaway
    assert rss.growth < GROWTH_LIMIT, rss.growth


def bomb_block(client: FrameClient, path: str, big: tuple[str, str], copies: int) -> bytes:
    """A request head whose ``copies`` fields are one dynamic-table entry: about a byte each
    on the wire.  The pseudo-fields are never indexed, so they do not evict the entry."""
    fields = [NeverIndexedHeaderTuple(":method", "GET"), NeverIndexedHeaderTuple(":scheme", "http"),
              NeverIndexedHeaderTuple(":authority", "gw.test"), NeverIndexedHeaderTuple(":path", path)]
    return client.encoder.encode(fields + [big] * copies)


def test_hpack_bomb_refuses_the_stream_only(gw, bystander, connect):
    """One 4000-byte field enters the dynamic table with a legitimate request (200), then
    each bomb refers to it 1000 times: ~1 KiB on the wire, 4 MB decoded, far past
    limits.max_request_head.  Each bomb is answered 431 (RFC 9113 §10.5.1) without its
    fields being kept, and the connection's HPACK state stays right (the next request on it
    is answered)."""
    attacker = connect()
    big = ("x-big", "b" * 4000)
    first = attacker.open_stream()
    attacker.send(HeadersFrame(first.id, bomb_block(attacker, "/anything/seed", big, 1),
                               flags=["END_HEADERS", "END_STREAM"]))
    assert attacker.response(first).status == 200
    refused = []
    with RssSampler(gw.pid, tree=True) as rss:
        for i in range(100):            # 400 MB decoded in all
            stream = attacker.open_stream()
            block = bomb_block(attacker, f"/anything/bomb-{i}", big, 1000)
            assert len(block) < 2000
            attacker.send(HeadersFrame(stream.id, block, flags=["END_HEADERS", "END_STREAM"]))
            attacker.response(stream, timeout=5)
            refused.append(stream.status if stream.status else f"RST {stream.reset}")
            if i % 20 == 0:
                bystander.check()
        after = attacker.get("/anything/after-bombs", headers=[big])
    print(f"HPACK bomb: 100 bombs answered {sorted(set(map(str, refused)))}, RSS +{rss.growth / 2**20:.1f} MiB")
    assert refused == [431] * 100, refused
    assert after.status == 200
    assert rss.growth < GROWTH_LIMIT, rss.growth


@pytest.mark.parametrize("kind", ["settings", "ping"])
def test_control_frame_flood_closes_the_connection(gw, bystander, connect, kind):
    """SETTINGS or PING frames sent without ever reading the acks: once the acks queued for
    the client pass nghttp2's bound, the connection is closed."""
    attacker = connect(rcvbuf=4096)
    attacker.pump(1.0)
    frame = (SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535}) if kind == "settings"
             else PingFrame(0, opaque_data=b"flooding"))
    with RssSampler(gw.pid, tree=True) as rss:
        batch = frame.serialize() * 1000
        limit = beyond_socket_buffers(batch)
        batches = flood(attacker, batch, limit, 20.0, bystander)
        closed = connection_ended(attacker) or attacker.wait_closed(10)
    print(f"{kind} flood: closed after {batches} of {limit} batches of 1000 frames, RSS +{rss.growth / 2**20:.1f} MiB")
    assert closed, "the flooding connection was not closed"
    assert batches < limit
    if attacker.goaway is not None:     # readable only if it came before the reset
        assert attacker.goaway.error_code == ENHANCE_YOUR_CALM, attacker.goaway
    assert rss.growth < GROWTH_LIMIT, rss.growth


def stall_connections(gw, stall) -> int:
    """Upstream connections to the stall backend, from the gateway or any of its workers."""
    return sum(len(upstream_connections(pid, [stall.address])) for pid in [gw.pid, *descendants(gw.pid)])


def staller(connect, kind: str) -> FrameClient:
    """A client that takes no response bytes: a zero window, or all windows wide open
    (2 GiB) and its socket never read."""
    if kind == "zero-window":
        return connect(settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}, auto_window=False)
    client = connect(settings={SettingsFrame.INITIAL_WINDOW_SIZE: MAX_WINDOW}, rcvbuf=4096)
    client.send(WindowUpdateFrame(0, window_increment=MAX_WINDOW - 65535))
    return client


@pytest.mark.parametrize("kind", ["zero-window", "unread-socket"])
def test_stalled_client_is_bounded_and_released(gw, backends, bystander, connect, kind):
    """A client that takes nothing asks for 64 MiB on each of its streams: the gateway holds
    a bounded queue per stream (the upstreams are paused), other clients go on, and once the
    client's connection closes the upstreams are let go."""
    _, stall = backends
    client = staller(connect, kind)
    with RssSampler(gw.pid, tree=True) as rss:
        streams = [client.request(f"/bytes/{STALL_SIZE}", authority="stall.test",
                                   headers=[("x-request-id", f"stall-{i}")]) for i in range(MAX_STREAMS)]
        deadline = time.monotonic() + 10
        while stall_connections(gw, stall) < MAX_STREAMS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stall_connections(gw, stall) == MAX_STREAMS
        for _ in range(20):             # 2 s of stall: the backends write as fast as they are let
            bystander.check()
            time.sleep(0.1)
    print(f"{kind}: {MAX_STREAMS} stalled 64 MiB downloads, RSS +{rss.growth / 2**20:.1f} MiB")
    assert rss.growth < GROWTH_LIMIT, rss.growth
    if kind == "zero-window":       # what did arrive: heads at most, no DATA past the window
        for _ in range(5):
            client.pump(0.1)
        assert sum(s.received for s in streams) == 0
    client.close()
    deadline = time.monotonic() + 10
    while stall_connections(gw, stall) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stall_connections(gw, stall) == 0, "upstream connections still held after the client left"
    entries = gw.log.by_ids([f"stall-{i}" for i in range(MAX_STREAMS)])
    assert all(e["bytes_sent"] < STALL_SIZE for e in entries.values()), entries


def test_streams_past_the_limit_are_refused(gw, bystander, connect):
    """limits.max_concurrent_streams is advertised, and the streams past it are refused with
    REFUSED_STREAM (which a client may retry) while the others are answered, on the same
    connection, before and after the client acknowledged the SETTINGS."""
    client = connect()
    early = client.request_all(["/delay/1"] * (MAX_STREAMS + 3))     # before the ack
    for stream in early:
        client.response(stream)
    assert client.server_settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == MAX_STREAMS
    late = client.request_all(["/delay/1"] * (MAX_STREAMS + 5))      # after it
    for stream in late:
        client.response(stream)
    for streams in (early, late):
        assert [s.status for s in streams[:MAX_STREAMS]] == [200] * MAX_STREAMS
        assert all(s.reset == REFUSED_STREAM and s.status is None for s in streams[MAX_STREAMS:]), \
            [(s.status, s.reset) for s in streams]
    assert client.goaway is None
    assert client.get("/anything/after-refusals").status == 200
