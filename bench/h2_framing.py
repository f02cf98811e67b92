"""HTTP/2 framing cost: nghttp2 through _speedups.h2 against the pure-Python `h2` library.

    python bench/h2_framing.py                  # 20,000 requests per run, best of 5 (quiet machine)
    python bench/h2_framing.py --requests 500 --runs 1      # a quick check that it runs

The server side of a gRPC-like unary exchange, no I/O: the client's bytes for N requests
(HEADERS + a 20-byte DATA each, over 10 batches of streams) are made once; each framing
layer then parses them, and answers each stream with HEADERS, a 20-byte DATA and trailers,
and serialises its output.  Microseconds per request; this is the frame layer's share
of the gateway's cost per HTTP/2 request, which decided issue #17's "compiled framing"
question (nghttp2 vs the project's own framing with h2 as the oracle).
"""
from __future__ import annotations

import argparse
import time

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"gw.test"),
           (b":path", b"/pkg.Service/Method"), (b"content-type", b"application/grpc"),
           (b"te", b"trailers"), (b"user-agent", b"bench/1.0")]
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]
TRAILERS = [(b"grpc-status", b"0")]
MESSAGE = b"\x00\x00\x00\x00\x0fhello, world!!!"
BATCH = 100                     # streams in flight at once (max concurrent streams)


def client_bytes(requests: int) -> list[bytes]:
    """The client's side of the connection, one chunk per batch of streams (made with h2)."""
    import h2.config
    import h2.connection

    import h2.events
    import h2.settings

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    # The answers are never read: windows large enough that they never stop the server.
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2 ** 31 - 1})
    conn.increment_flow_control_window(2 ** 31 - 1 - 65535)
    # A server that only opens the windows again, so that the client may go on sending.
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    peer.initiate_connection()
    chunks = []
    for _ in range(requests // BATCH):
        for _ in range(BATCH):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, REQUEST)
            conn.send_data(sid, MESSAGE, end_stream=True)
        chunks.append(conn.data_to_send())
        for event in peer.receive_data(chunks[-1]):
            if isinstance(event, h2.events.DataReceived):
                peer.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                peer.reset_stream(event.stream_id)      # room for the next batch's streams
        conn.receive_data(peer.data_to_send())
    return chunks


class _Answer:
    """An _speedups.h2 handler that answers every stream once its request ends."""

    def __init__(self) -> None:
        self.session = None
        self.answered = 0

    def h2_headers(self, sid, headers, end):
        pass

    def h2_data(self, sid, data):
        self.session.consume(sid, len(data))

    def h2_end(self, sid):
        s = self.session
        s.submit_response(sid, RESPONSE)
        s.send_data(sid, MESSAGE)
        s.send_trailers(sid, TRAILERS)
        self.answered += 1

    def h2_trailers(self, sid, headers):
        pass

    def h2_close(self, sid, code):
        pass

    def h2_drained(self, sid):
        pass


def run_nghttp2(chunks: list[bytes]) -> int:
    from _speedups.h2 import H2Session

    handler = _Answer()
    session = handler.session = H2Session(handler, server=True, max_concurrent_streams=BATCH)
    written = len(session.output())
    for chunk in chunks:
        session.receive(chunk)
        written += len(session.output())
    return handler.answered


def run_h2(chunks: list[bytes]) -> int:
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    conn.data_to_send()
    answered = 0
    for chunk in chunks:
        for event in conn.receive_data(chunk):
            if isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                sid = event.stream_id
                conn.send_headers(sid, RESPONSE)
                conn.send_data(sid, MESSAGE)
                conn.send_headers(sid, TRAILERS, end_stream=True)
                answered += 1
        conn.data_to_send()
    return answered


def us_per_request(run, chunks: list[bytes], requests: int, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        answered = run(chunks)
        best = min(best, time.perf_counter() - start)
        assert answered == requests, f"{run.__name__} answered {answered} of {requests}"
    return best / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    requests = args.requests // BATCH * BATCH
    chunks = client_bytes(requests)
    native = us_per_request(run_nghttp2, chunks, requests, args.runs)
    python = us_per_request(run_h2, chunks, requests, args.runs)
    print(f"{requests} unary requests, {BATCH} streams at once, best of {args.runs}")
    print(f"  nghttp2 (_speedups.h2)  {native:8.2f} us/request")
    print(f"  h2 (pure Python)        {python:8.2f} us/request   {python / native:.1f}x")


if __name__ == "__main__":
    main()
