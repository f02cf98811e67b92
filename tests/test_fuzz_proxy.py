"""Hypothesis fuzzing of the running gateway over real sockets.

Random and mutated requests (heads and bodies, pipelined, written in random pieces) go to a
gateway in front of a ``RecordingUpstream``, while a well-formed keep-alive client keeps
requesting on another connection (to the devcluster backend).  For every example:

* the gateway process is alive and the steady client is still being answered;
* the exchange ends within the gateway's timeouts (the client socket times out otherwise);
* the answers are those the compiled parser and path normalizer predict, run here in process
  on the same bytes (``expect``): 200 for each forwarded request, 400 for a refused path (the
  connection kept when no body follows), then the rejection status and a closed connection,
  or 408 for a head or body that never completes;
* every request forwarded upstream has the framing the gateway parsed: same method and
  target (normalized as the gateway's default ``http.path`` does), chunked stays chunked with identical chunk bytes (extensions and trailers
  included), Content-Length identical with identical body bytes; and no other byte reaches
  the upstream (a broken chunked body may leave a partial request, on a connection the
  gateway then resets).

CI runs ``EXAMPLES`` examples; ``-m fuzz_long`` runs ``LONG_EXAMPLES``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from _speedups.http import FRAMING_CHUNKED, BodyFramer, HttpError, find_head_end, parse_request
from _speedups.path import PathPolicy
from support import Client, GatewayProcess, PeerClosed, static_source
from test_fuzz_parser import body_mutated_request, mutated_request, request
from test_security_smuggling import RecordingUpstream

EXAMPLES = 200
LONG_EXAMPLES = 5000
HEADER_TIMEOUT = 0.5
BODY_IDLE = 0.5
MAX_WAITED = 12                     # incomplete examples per run that wait for the 408
STEADY = b"/anything/steady"
# The gateway's default limits (the fuzz gateway keeps them).
MAX_HEAD, MAX_URI, MAX_HEADERS, MAX_BODY = 64 * 1024, 8 * 1024, 100, 1024 ** 3
PATH_POLICY = PathPolicy()          # the default http.path settings, which the gateway keeps

SETTINGS = dict(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@dataclass
class Expected:
    forwarded: list                 # [(RequestHead, raw body bytes, target sent)] answered 200, in order
    answers: list                   # (method, status) of each request answered before the end, in order
    end: str                        # "reject", "body-error", "wait-head", "wait-body", "close", "open"
    status: int = 0                 # for "reject" / "body-error"


def expect(data: bytes) -> Expected:
    """What the gateway must do with ``data``, from the same compiled functions it runs."""
    forwarded: list = []
    answers: list[int] = []
    pos = 0

    def ends(end: str, status: int = 0) -> Expected:
        return Expected(forwarded, answers, end, status)

    for _ in range(16):
        rest = data[pos:]
        if not rest:
            return ends("open")
        end = find_head_end(rest, 0)
        if end < 0:
            if len(rest) > MAX_HEAD:
                return ends("reject", 414 if rest.find(b"\n", 0, MAX_URI) < 0 else 431)
            return ends("wait-head")
        if end > MAX_HEAD:
            return ends("reject", 431)
        try:
            head = parse_request(rest, end, MAX_HEADERS)
        except HttpError as err:
            return ends("reject", err.status)
        if len(head.target) > MAX_URI:
            return ends("reject", 414)
        if head.content_length > MAX_BODY:
            return ends("reject", 413)
        refused, normalized = PATH_POLICY(head.path)
        if refused:
            # Answered before the body is read: with a body unread the connection must close.
            if head.chunked or head.content_length > 0:
                return ends("reject", refused)
            answers.append((head.method, refused))
            pos += end
            if not (head.keep_alive and head.minor == 1):
                return ends("close")
            continue
        assume(not normalized.startswith(STEADY))
        if head.chunked:
            framer = BodyFramer(FRAMING_CHUNKED, 0, 400)
            try:
                stop = framer.feed(rest, end)
            except HttpError as err:
                return ends("body-error", err.status)
            if not framer.done:
                return ends("wait-body")
        else:
            stop = end + max(head.content_length, 0)
            if stop > len(rest):
                return ends("wait-body")
        forwarded.append((head, rest[end:stop], normalized + head.target[len(head.path):]))
        answers.append((head.method, 200))
        pos += stop
        if not (head.keep_alive and head.minor == 1):
            return ends("close")
    assume(False)                   # more pipelined requests than this test follows


class Steady:
    """A well-formed keep-alive client on its own connection, requesting in a loop (bounded)."""

    def __init__(self, gw) -> None:
        self.gw = gw
        self.ok = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        client = None
        try:
            for i in range(1_000_000):
                if self._stop.wait(0.005):
                    return
                if client is None:
                    client = self.gw.client()
                resp = client.request("GET", f"{STEADY.decode()}-{i}")
                if resp.status != 200:
                    self.errors.append(f"steady request {i}: {resp.status}")
                    return
                self.ok += 1
                if resp.closes:         # limits.max_requests_per_connection (10,000) reached
                    assert self.ok % 10_000 == 0, f"steady connection closed after {self.ok} requests"
                    client.close()
                    client = None
        except Exception as exc:
            self.errors.append(repr(exc))
        finally:
            if client is not None:
                client.close()

    def __enter__(self) -> "Steady":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=20)
        assert not self._thread.is_alive()


@pytest.fixture(scope="module")
def upstream():
    server = RecordingUpstream("127.0.0.9")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(backend_a, upstream, tmp_path_factory):
    config = {
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address], "rec": [upstream.address]})],
        "services": [{"name": "httpbin", "port": 80},
                     {"name": "rec", "port": 80, "outlier_detection": "off"}],
        "routes": [
            {"name": "steady", "match": {"path": {"prefix": STEADY.decode()}}, "service": "httpbin"},
            {"name": "rec", "match": {"path": {"prefix": "/"}}, "service": "rec", "retries": {"attempts": 1}},
        ],
        "timeouts": {"downstream_header": f"{HEADER_TIMEOUT}s", "body_idle": f"{BODY_IDLE}s",
                     "response_header": "5s"},
    }
    proc = GatewayProcess(config, tmp_path_factory.mktemp("fuzz-proxy")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def steady(gw):
    with Steady(gw) as client:
        yield client
    assert client.errors == []


class Run:
    """Counters over one property's examples (reported at the end, checked for sanity)."""

    def __init__(self) -> None:
        self.examples = 0
        self.waited = 0
        self.ends: dict[str, int] = {}
        self.forwarded = 0


def _check_example(gw, upstream, steady, run: Run, data: bytes, cuts: list[int]) -> None:
    exp = expect(data)
    run.examples += 1
    run.ends[exp.end] = run.ends.get(exp.end, 0) + 1
    run.forwarded += len(exp.forwarded)
    lengths_before = upstream.lengths()
    requests_before = upstream.requests()
    wait = exp.end in ("wait-head", "wait-body") and run.waited < MAX_WAITED
    timeout = 5.0
    with gw.client(timeout=timeout) as client:
        pos = 0
        try:
            for cut in sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]:
                client.send(data[pos:cut])
                pos = cut
        except OSError:
            assert exp.end in ("reject", "body-error", "close"), "the gateway closed on a good request"
        for method, status in exp.answers:
            resp = client.read_response(method.decode("latin-1"))
            assert resp.status == status, (resp.status, resp.body, data)
        if exp.end in ("reject", "body-error"):
            try:
                resp = client.read_response("GET")
            except (PeerClosed, ConnectionResetError):
                raise AssertionError(f"no {exp.status} answer to {data!r}") from None
            assert resp.status == exp.status and resp.closes, (resp.status, exp.status, data)
            assert client.wait_closed(timeout), "connection left open after a rejection"
        elif exp.end == "close":
            assert client.wait_closed(timeout), "connection left open after a last request"
        elif wait:
            run.waited += 1
            start = time.monotonic()
            resp = client.read_response("GET")
            elapsed = time.monotonic() - start
            assert resp.status == 408 and resp.closes, (resp.status, data)
            assert elapsed < max(HEADER_TIMEOUT, BODY_IDLE) + 1.0, elapsed
            assert client.wait_closed(timeout)
    # The upstream got exactly the forwarded requests, framed as parsed, and nothing else.
    want = len(requests_before) + len(exp.forwarded)
    assert upstream.wait(lambda conns: sum(len(c.requests) for c in conns) >= want), "request not forwarded"
    new = upstream.requests()[len(requests_before):]
    assert len(new) == len(exp.forwarded), (new, data)
    for (head, body, target), got in zip(exp.forwarded, new):
        assert (got.method, got.target) == (head.method, target)
        if head.chunked:
            assert got.field(b"transfer-encoding") == [b"chunked"] and not got.field(b"content-length")
        elif head.content_length >= 0:
            assert got.field(b"content-length") == [b"%d" % head.content_length]
            assert not got.field(b"transfer-encoding")
        else:
            assert not got.field(b"content-length") and not got.field(b"transfer-encoding")
        assert got.body == body, (got.body, body)
    with upstream.lock:
        extra = sum(len(c.data) for c in upstream.conns) - sum(lengths_before)
        unparseable = [c.unparseable for c in upstream.conns if c.unparseable is not None]
    assert not unparseable, unparseable
    framed = sum(len(r.head) + len(r.body) for r in new)
    if exp.end not in ("body-error", "wait-body"):
        assert extra == framed, f"{extra - framed} bytes reached the upstream beyond the forwarded requests"
    if exp.end in ("body-error", "wait-body"):
        # Parts of the body may still be on their way to the upstream: let them land first,
        # so that they are neither missed here nor counted against the next example.
        upstream.quiet(0.05)
    # A partial request (a broken or abandoned body) is never left on a live connection.
    assert upstream.wait(lambda conns: all(
        c.closed for c in conns if len(c.data) > sum(len(r.head) + len(r.body) for r in c.requests))), \
        "an upstream connection holding a partial request was not closed"
    assert gw.proc.poll() is None, "the gateway exited"
    assert not steady.errors, steady.errors


def _pieces():
    return st.lists(st.integers(1, 400), max_size=3)


_RUN = Run()


@given(st.one_of(request(), mutated_request(), body_mutated_request()), _pieces())
@settings(max_examples=EXAMPLES, **SETTINGS)
def test_fuzzed_requests_through_gateway(gw, upstream, steady, data, cuts):
    _check_example(gw, upstream, steady, _RUN, data, cuts)


def test_fuzz_run_covered_the_outcomes(gw, steady):
    """The run above met forwarded, rejected and incomplete requests, and the steady client
    was served throughout."""
    print(f"\nfuzz_proxy: {_RUN.examples} examples, {_RUN.forwarded} requests forwarded, ends {_RUN.ends}")
    assert _RUN.examples >= EXAMPLES // 2, _RUN.examples
    assert _RUN.forwarded > 0 and _RUN.ends.get("reject", 0) > 0, _RUN.ends
    ok = steady.ok
    deadline = time.monotonic() + 5
    while steady.ok < ok + 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert steady.ok >= ok + 3 and not steady.errors
    # Every rejection wrote an access-log line with its status and error.
    rejected = [e for e in gw.log.entries() if e["status"] >= 400 and e["status"] != 404]
    assert all(e.get("error") for e in rejected)
    assert len(rejected) >= _RUN.ends.get("reject", 0)


_LONG_RUN = Run()


@pytest.mark.fuzz_long
@pytest.mark.timeout(3600)
@given(st.one_of(request(), mutated_request(), body_mutated_request()), _pieces())
@settings(max_examples=LONG_EXAMPLES, **SETTINGS)
def test_fuzzed_requests_through_gateway_long(gw, upstream, steady, data, cuts):
    _check_example(gw, upstream, steady, _LONG_RUN, data, cuts)
