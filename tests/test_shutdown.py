"""SIGTERM / SIGINT under load: the gateway drains and exits 0 within ``timeouts.drain``.

Every request the gateway accepted is answered.  The load (test_workers.Load: 20 keep-alive
connections, one thread each) accounts for every request it sends: a full response; a connect
that failed or a connection the server had closed before the request was written (never
accepted: fine); or a request written on an open connection that then got no full response
(a failure: there must be none).  Responses during the drain say ``Connection: close``, and
no worker process outlives the main one.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from support import pid_alive
from test_workers import Load, base_config, start_gateway, worker_pids

pytestmark = pytest.mark.timeout(60)

DRAIN = 5.0         # timeouts.drain in base_config


@pytest.mark.parametrize("workers,sig", [(2, signal.SIGTERM), (2, signal.SIGINT),
                                         (1, signal.SIGTERM), (1, signal.SIGINT)],
                         ids=["2-workers-SIGTERM", "2-workers-SIGINT", "1-worker-SIGTERM", "1-worker-SIGINT"])
def test_signal_under_load_drains_every_accepted_request(tmp_path, backend_a, backend_b, workers, sig):
    g, admin = start_gateway(tmp_path, base_config(backend_a, backend_b, workers))
    try:
        pids = worker_pids(admin)
        load = Load(g.port, total=10 ** 6, connections=20, until_refused=True, limit=20).start()
        try:
            load.wait_answered(3000)
            signalled = time.monotonic()
            os.kill(g.pid, sig)
            deadline = signalled + DRAIN + 2
            while g.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            exited = time.monotonic() - signalled
            code = g.proc.poll()
            left = [p for p in pids if p != g.pid and pid_alive(p)]
        finally:
            load.join(25)
    finally:
        g.stop()
    failures = load.failures
    print(f"{workers} worker(s), {signal.Signals(sig).name}: {len(failures)} failed requests; "
          f"exit {code} after {exited:.2f}s; {load.summary()}")
    assert code == 0, g.output()[-3000:]
    assert exited < DRAIN, f"exited {exited:.2f}s after the signal (drain timeout {DRAIN}s)"
    assert not left, f"worker processes left: {left}"
    assert not failures, load.summary()
    assert set(load.statuses()) == {200}, load.summary()
    # Every connection ended: answered with Connection: close, or closed by the gateway before
    # the next request was written; every thread stopped at a refused connect.
    ended = {c.ended for c in load.conns}
    assert ended <= {"close-header", "eof-before-write"}, [c for c in load.conns if c.ended not in
                                                           ("close-header", "eof-before-write")]
    assert all(s.refused == 1 for s in load.stats), load.summary()
    assert load.total("close_responses") >= 1, load.summary()
    # Responses during the drain carry Connection: close: a keep-alive response comes at most
    # for a request already in flight when the process got the drain (well under 0.5 s).
    last_keepalive = max(s.last_keepalive for s in load.stats) - signalled
    assert last_keepalive < 0.5, f"a keep-alive response {last_keepalive:.3f}s after the signal"


# -- the listener's handshake filter ---------------------------------------------------------


def test_refusing_handshakes_lets_one_under_way_complete():
    """The drain's socket filter drops new SYNs but not what completes a handshake under way.

    Dropping every packet instead (the first version) left such a client, which already
    counts itself connected and has sent its request, to be reset when the listener closed:
    a failed request in the SIGTERM test above, about once in a few hundred runs.  The
    handshake is held half-way here with TCP_DEFER_ACCEPT: the listener ignores the last
    ACK and completes the connection when the first data arrives.
    """
    import socket

    from gateway.worker import _refuse_handshakes

    listener = socket.socket()
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    address = listener.getsockname()
    under_way = socket.create_connection(address, timeout=2)
    time.sleep(0.05)
    with pytest.raises(BlockingIOError):
        listener.accept()               # not complete yet on the listener's side
    _refuse_handshakes(listener)
    late = socket.socket()
    late.setblocking(False)
    late.connect_ex(address)            # a SYN after the filter: dropped
    under_way.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    accepted, deadline = [], time.monotonic() + 1
    while time.monotonic() < deadline and len(accepted) < 2:
        try:
            accepted.append(listener.accept()[0])
        except BlockingIOError:
            time.sleep(0.02)
    try:
        assert [conn.getpeername() for conn in accepted] == [under_way.getsockname()]
        assert accepted[0].recv(100).startswith(b"GET / HTTP/1.1")
    finally:
        for sock in [listener, late, under_way, *accepted]:
            sock.close()
