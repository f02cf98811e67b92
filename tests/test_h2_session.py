"""_speedups.h2: nghttp2's framing behind H2Session, against other HTTP/2 implementations.

The `h2` library (hyper-h2, pure Python) is the other side in memory, and crafts the
attack frames; curl (libcurl's own HTTP/2 client code) talks to it over a real socket.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from hpack import Encoder
from hyperframe.frame import ContinuationFrame, HeadersFrame, RstStreamFrame, SettingsFrame

from _speedups.h2 import H2Error, H2Session

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"gw.test"),
           (b":path", b"/up")]


class Recorder:
    """An H2Session handler that records events; ``consume`` decides whether windows reopen."""

    def __init__(self, consume: bool = True) -> None:
        self.session: H2Session | None = None
        self.consume = consume
        self.events: list[tuple] = []
        self.body = bytearray()

    def h2_headers(self, sid, headers, end):
        self.events.append(("headers", sid, headers, end))

    def h2_data(self, sid, data):
        self.body += data
        if self.consume:
            self.session.consume(sid, len(data))

    def h2_end(self, sid):
        self.events.append(("end", sid))

    def h2_trailers(self, sid, headers):
        self.events.append(("trailers", sid, headers))

    def h2_close(self, sid, code):
        self.events.append(("close", sid, code))

    def h2_drained(self, sid):
        self.events.append(("drained", sid))

    def h2_too_large(self, sid):
        self.events.append(("too_large", sid))


def server(consume: bool = True, **settings) -> tuple[H2Session, Recorder]:
    handler = Recorder(consume)
    handler.session = H2Session(handler, server=True, **settings)
    return handler.session, handler


def h2_client() -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    return conn


def exchange(client: h2.connection.H2Connection, session: H2Session, rounds: int = 20) -> list:
    """Move bytes both ways until neither side has more; the client's events."""
    events = []
    for _ in range(rounds):
        out = client.data_to_send()
        if out:
            session.receive(out)
        back = session.output()
        if back:
            events += client.receive_data(back)
        if not out and not back:
            break
    return events


def send_what_fits(client: h2.connection.H2Connection, body: bytes, sent: int) -> int:
    """Queue as much of ``body`` (from ``sent``) on stream 1 as the window allows."""
    while sent < len(body) and client.local_flow_control_window(1) > 0:
        n = min(client.local_flow_control_window(1), client.max_outbound_frame_size, len(body) - sent)
        client.send_data(1, body[sent:sent + n], end_stream=sent + n == len(body))
        sent += n
    return sent


def test_a_request_body_larger_than_the_window_waits_for_consume():
    session, handler = server(consume=False)
    client = h2_client()
    client.send_headers(1, REQUEST)
    body = bytes(range(256)) * 800                      # 200 KiB, the window is 64 KiB
    sent = send_what_fits(client, body, 0)
    exchange(client, session)
    assert len(handler.body) == 65535, "the peer sent past the window it was given"
    handler.consume = True
    session.consume(1, len(handler.body))
    for _ in range(10):
        sent = send_what_fits(client, body, sent)
        exchange(client, session)
    assert bytes(handler.body) == body
    assert handler.events[-1] == ("end", 1)


def test_a_response_with_data_and_trailers_reaches_the_client():
    session, handler = server()
    client = h2_client()
    client.send_headers(1, REQUEST, end_stream=True)
    exchange(client, session)
    assert handler.events[0] == ("headers", 1, REQUEST, True)
    session.submit_response(1, [(b":status", b"200"), (b"content-type", b"application/grpc")])
    session.send_data(1, b"\x00\x00\x00\x00\x02hi")
    session.send_trailers(1, [(b"grpc-status", b"0"), (b"grpc-message", b"")])
    events = exchange(client, session)
    kinds = [type(e).__name__ for e in events]
    assert kinds[:3] == ["ResponseReceived", "DataReceived", "TrailersReceived"], kinds
    assert events[1].data == b"\x00\x00\x00\x00\x02hi"
    assert dict(events[2].headers)[b"grpc-status"] == b"0"
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)


def test_client_and_server_sessions_talk_to_each_other_with_a_1xx_first():
    session, handler = server()
    up = Recorder()
    up.session = client = H2Session(up, server=False)
    sid = client.submit_request(REQUEST + [(b"expect", b"100-continue")])
    for _ in range(5):
        session.receive(client.output())
        client.receive(session.output())
    session.submit_response(sid, [(b":status", b"100")], end_stream=False)
    session.submit_response(sid, [(b":status", b"204")], end_stream=True)
    for _ in range(5):
        client.receive(session.output())
        session.receive(client.output())
    heads = [e for e in up.events if e[0] == "headers"]
    assert [dict(h[2])[b":status"] for h in heads] == [b"100", b"204"]
    assert ("end", sid) in up.events or heads[-1][3]


def test_output_over_the_queue_limit_reports_drained_once_written():
    session, handler = server(queue_limit=1000)
    client = h2_client()
    client.send_headers(1, REQUEST, end_stream=True)
    exchange(client, session)
    session.submit_response(1, [(b":status", b"200")])
    assert session.send_data(1, b"x" * 5000) == 5000      # over the limit: the caller pauses
    events = exchange(client, session)
    assert ("drained", 1) in handler.events
    assert sum(len(e.data) for e in events if isinstance(e, h2.events.DataReceived)) == 5000


def test_rapid_reset_ends_the_connection_and_what_follows_is_not_acted_on():
    """CVE-2023-44487: streams opened and reset at once, faster than any client needs.

    nghttp2 allows a burst of 1,000 resets (then 33 a second) and answers GOAWAY; the
    20,000 streams behind them in the same read never reach the handler.
    """
    session, handler = server()
    client = h2_client()
    session.receive(client.data_to_send())
    encoder = Encoder()
    frames = b""
    for sid in range(1, 40001, 2):
        headers = HeadersFrame(sid, encoder.encode(REQUEST), flags=["END_HEADERS"])
        frames += headers.serialize() + RstStreamFrame(sid, error_code=8).serialize()
    with pytest.raises(H2Error):
        session.receive(frames)
    assert _goaway_code(session.output()) is not None
    opened = sum(1 for e in handler.events if e[0] == "headers")
    assert 900 < opened < 1100, opened


def test_a_continuation_flood_is_refused():
    """CVE-2024-27316 class: HEADERS without END_HEADERS and CONTINUATIONs without end."""
    session, _ = server()
    client = h2_client()
    session.receive(client.data_to_send())
    frames = HeadersFrame(1, Encoder().encode(REQUEST)).serialize()
    frames += b"".join(ContinuationFrame(1, b"").serialize() for _ in range(100))
    with pytest.raises(H2Error):
        session.receive(frames)
    assert _goaway_code(session.output()) == 11, "no GOAWAY ENHANCE_YOUR_CALM"


def test_streams_past_the_advertised_limit_reach_the_handler():
    """The peer is told max_concurrent_streams; streams past it (up to nghttp2's ceiling
    above it) come to the handler, which refuses them one by one instead of nghttp2's
    connection error (which would lose the streams in flight)."""
    session, handler = server(max_concurrent_streams=3)
    client = h2_client()
    exchange(client, session)           # SETTINGS both ways, and their ACKs
    assert client.remote_settings.max_concurrent_streams == 3
    encoder = Encoder()
    session.receive(b"".join(HeadersFrame(sid, encoder.encode(REQUEST), flags=["END_HEADERS"]).serialize()
                             for sid in (1, 3, 5, 7, 9)))
    assert [e[1] for e in handler.events if e[0] == "headers"] == [1, 3, 5, 7, 9]
    assert _goaway_code(session.output()) is None


def test_a_settings_flood_is_refused():
    session, _ = server()
    client = h2_client()
    session.receive(client.data_to_send())
    flood = SettingsFrame(settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535}).serialize() * 5000
    with pytest.raises(H2Error):
        session.receive(flood)      # never reading the ACKs: nghttp2 stops queueing them


def test_a_header_list_over_the_limit_resets_only_that_stream():
    """An HPACK bomb: small on the wire, a huge header list once decoded."""
    session, handler = server(max_header_list_size=16384)
    client = h2_client()
    session.receive(client.data_to_send())
    encoder = Encoder()
    big = REQUEST + [(b"x-bomb", b"a" * 4000)]
    frames = HeadersFrame(1, encoder.encode(big), flags=["END_HEADERS", "END_STREAM"]).serialize()
    # The same header again costs one byte each on the wire (an HPACK index).
    frames += HeadersFrame(3, encoder.encode(REQUEST + [(b"x-bomb", b"a" * 4000)] * 40),
                           flags=["END_HEADERS", "END_STREAM"]).serialize()
    frames += HeadersFrame(5, encoder.encode(REQUEST), flags=["END_HEADERS", "END_STREAM"]).serialize()
    try:
        session.receive(frames)
    except H2Error:
        pass                        # a connection error is an acceptable answer too
    heads = {e[1] for e in handler.events if e[0] == "headers"}
    assert 3 not in heads
    assert ("too_large", 3) in handler.events, "the bomb's stream was not handed over to be answered 431"
    assert {1, 5} <= heads, "the streams beside the bomb were not served"


def _goaway_code(data: bytes) -> int | None:
    """The error code of the first GOAWAY frame in ``data``."""
    i = 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i:i + 3], "big")
        if data[i + 3] == 0x7:
            return int.from_bytes(data[i + 13:i + 17], "big")
        i += 9 + length
    return None


# -- over a real socket, against curl ------------------------------------------------------------


class _EchoProtocol(asyncio.Protocol):
    """h2c with prior knowledge: answers each request with its path and body length."""

    def connection_made(self, transport):
        self.transport = transport
        self.handler = Recorder()
        self.handler.h2_end = self.answer
        self.session = self.handler.session = H2Session(self.handler, server=True)
        transport.write(self.session.output())

    def data_received(self, data):
        try:
            self.session.receive(data)
        except H2Error:
            self.transport.write(self.session.output())
            self.transport.close()
            return
        self.transport.write(self.session.output())

    def answer(self, sid):
        head = dict(next(e[2] for e in self.handler.events if e[0] == "headers" and e[1] == sid))
        body = f"{head[b':path'].decode()} {len(self.handler.body)}\n".encode()
        self.session.submit_response(sid, [(b":status", b"200"), (b"content-length", str(len(body)).encode())])
        self.session.send_data(sid, body, end_stream=True)
        self.transport.write(self.session.output())


@pytest.fixture
def echo_server():
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(_EchoProtocol, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    server.close()
    loop.run_until_complete(server.wait_closed())
    loop.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
def test_curl_http2_prior_knowledge_gets_an_answer(echo_server):
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "5",
                          "-d", "x" * 100000, "-w", "%{http_version}",
                          f"http://127.0.0.1:{echo_server}/hello"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "/hello 100000\n2"


def test_common_names_and_values_arrive_as_shared_objects_others_as_they_came():
    """HPACK's static table, gRPC's and browsers' usual fields are one bytes object each (no
    allocation per field); anything else, however close, arrives with its own spelling."""
    session, handler = server()
    client = h2_client()
    fields = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"gw.test"),
              (b":path", b"/"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
              (b"x-request-id", b"abc"), (b"x-custom", b"GET"), (b"accept", b"*/*"),
              (b"x-requesd-id", b"application/grpd"), (b"conten-type", b"/index.htm")]
    for sid in (1, 3):
        client.send_headers(sid, fields, end_stream=True)
    exchange(client, session)
    first, second = (event[2] for event in handler.events if event[0] == "headers")
    assert first == second == fields
    common = {b":method", b"GET", b":scheme", b"https", b":authority", b":path", b"/",
              b"content-type", b"application/grpc", b"te", b"trailers", b"x-request-id",
              b"accept", b"*/*"}
    for (name1, value1), (name2, value2) in zip(first, second):
        assert (name1 is name2) == (name1 in common), name1
        assert (value1 is value2) == (value1 in common), value1


def test_request_ids_and_trace_ids_stay_out_of_the_hpack_table():
    """A value new in every request would only push useful entries out of the table: it goes
    as a literal never indexed; the rest of the head is indexed and costs a byte next time."""
    up = Recorder()
    up.session = client = H2Session(up, server=False)
    origin = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    origin.initiate_connection()
    received = []
    for n in range(2):
        client.submit_request(REQUEST + [(b"x-request-id", b"id-%d" % n),
                                         (b"traceparent", b"00-%032x-%016x-01" % (n, n)),
                                         (b"x-tenant", b"blue")], end_stream=True)
        wire = client.output()
        received += [e for e in origin.receive_data(wire) if isinstance(e, h2.events.RequestReceived)]
        client.receive(origin.data_to_send())
    for request in received:
        kinds = {bytes(field[0]): type(field).__name__ for field in request.headers}
        assert kinds[b"x-request-id"] == kinds[b"traceparent"] == "NeverIndexedHeaderTuple", kinds
        assert kinds[b"x-tenant"] == kinds[b":path"] == "HeaderTuple", kinds


def test_a_response_head_given_as_field_lines_reaches_the_client_field_by_field():
    """``lines`` as an HTTP/1.1 head's fields are kept ("Name: value\\r\\n"): names lower-cased,
    an empty value kept, a line that is no field (no colon) left out, order kept."""
    session, handler = server()
    client = h2_client()
    client.send_headers(1, REQUEST, end_stream=True)
    exchange(client, session)
    lines = (b"Content-Type: text/plain\r\nX-Empty: \r\nnot a field\r\n"
             b"Set-Cookie: a=1\r\nSET-COOKIE: b=2\r\n")
    session.submit_response(1, [(b":status", b"200"), (b"content-length", b"0")], True, lines)
    head = next(e for e in exchange(client, session) if isinstance(e, h2.events.ResponseReceived))
    assert head.headers == [(b":status", b"200"), (b"content-length", b"0"),
                            (b"content-type", b"text/plain"), (b"x-empty", b""),
                            (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]


def test_a_head_with_a_body_to_follow_is_read_in_place_and_kept_alive():
    """With a body to follow nghttp2 reads the head's names and values where they are, not
    copies: the session keeps them alive until the stream closes, whatever the caller drops.
    Here the caller keeps nothing, and new objects of the same sizes take the memory it
    freed: the fields still arrive as submitted (upper-case names still lowered)."""
    session, handler = server()
    client = h2_client()
    client.send_headers(1, REQUEST, end_stream=True)
    exchange(client, session)
    session.submit_response(1, [(b":status", b"200"), (b"x-kept", bytes(bytearray(b"kept-value-7")))],
                            False, bytes(bytearray(b"X-Line: line-value\r\nx-lower: lower\r\n")))
    junk = [bytes(bytearray(b"Z" * n)) for n in range(1, 80) for _ in range(20)]
    session.send_data(1, b"body", True)
    head = next(e for e in exchange(client, session) if isinstance(e, h2.events.ResponseReceived))
    assert head.headers == [(b":status", b"200"), (b"x-kept", b"kept-value-7"),
                            (b"x-line", b"line-value"), (b"x-lower", b"lower")]
    del junk                                # (held until the head was written)


def test_a_session_flushed_from_inside_anothers_output_writes_its_own_frames():
    """output() gathers frames in a buffer the module shares; a handler called from inside one
    session's output() (its stream's queue drained, an upstream resumed) may flush another
    session then: each writes its own frames, neither the other's."""
    a, handler_a = server()
    b, _ = server()
    client_a, client_b = h2_client(), h2_client()
    for client, session in ((client_a, a), (client_b, b)):
        client.send_headers(1, REQUEST, end_stream=True)
        exchange(client, session)
    nested = []

    def drained(stream_id):                 # called by a.output(), mid-way
        b.submit_response(1, [(b":status", b"204")], True)
        nested.append(b.output())

    handler_a.h2_drained = drained
    a.queue_limit = 10
    a.submit_response(1, [(b":status", b"200"), (b"x-side", b"a")])
    assert a.send_data(1, b"a" * 100) > a.queue_limit       # drained is owed once it is read
    events_a = client_a.receive_data(a.output())
    assert len(nested) == 1
    events_b = client_b.receive_data(nested[0])
    head_a = next(e for e in events_a if isinstance(e, h2.events.ResponseReceived))
    assert head_a.headers[:2] == [(b":status", b"200"), (b"x-side", b"a")]
    assert b"".join(e.data for e in events_a if isinstance(e, h2.events.DataReceived)) == b"a" * 100
    head_b = next(e for e in events_b if isinstance(e, h2.events.ResponseReceived))
    assert head_b.headers[0] == (b":status", b"204")
    assert any(isinstance(e, h2.events.StreamEnded) for e in events_b)
