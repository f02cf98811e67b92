"""Micro-benchmarks of request-head parsing: compiled vs pure Python vs httptools (llhttp).

    python -m pytest bench/test_micro_http.py --benchmark-only -p no:cacheprovider

Each group times the work the proxy does per request before routing: find the
end of the head in the receive buffer and parse it into a ``RequestHead``
(method, target, path, Host, the end-to-end fields, framing).  The baselines:

* ``reference``: ``tests/reference/http.py``, what a Python developer would write
  with ``bytes.split`` and ``re`` under the same RFC 9112 rules;
* ``httptools``: llhttp through its Python callbacks (on_url, on_header per
  field, on_headers_complete), one parser reused as on a keep-alive
  connection.  It only tokenizes: no lower-casing, no hop-by-hop filtering,
  no Host/Content-Length checks, so it does less than the other two.
"""
from __future__ import annotations

import httptools
import pytest

from _speedups import http as compiled
from tests.reference import http as reference

HEADS = {
    # What wrk sends: the bench/run.py case.
    "wrk": b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    # A browser's API call through the gateway: 10 fields, ~500 bytes.
    "browser": (
        b"GET /api/v1/users/12345/orders?limit=20&offset=40 HTTP/1.1\r\n"
        b"Host: shop.example.com\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        b"Chrome/120.0.0.0 Safari/537.36\r\n"
        b"Accept: application/json, text/plain, */*\r\n"
        b"Accept-Language: en-US,en;q=0.9\r\n"
        b"Accept-Encoding: gzip, deflate, br\r\n"
        b"Referer: https://shop.example.com/account/orders\r\n"
        b"Cookie: session=4f2a9c1e8b7d6a5f; theme=dark; consent=1\r\n"
        b"X-Request-Id: 9b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e\r\n"
        b"X-Forwarded-For: 203.0.113.7\r\n"
        b"Connection: keep-alive\r\n"
        b"\r\n"),
}
FIELDS = ("method", "target", "path", "minor", "headers", "host", "content_length", "chunked",
          "keep_alive", "connection", "upgrade", "extra_hop", "request_id", "forwarded_for", "via",
          "expect_continue", "head_size")


def parse_compiled(data: bytes):
    return compiled.parse_request(data, compiled.find_head_end(data, 0))


def parse_reference(data: bytes):
    return reference.parse_request(data, reference.find_head_end(data, 0))


class _Collector:
    """The callbacks a proxy on httptools needs to see the head."""

    __slots__ = ("url", "headers", "complete")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True


def httptools_parser():
    collector = _Collector()
    parser = httptools.HttpRequestParser(collector)

    def parse(data: bytes):
        collector.headers = []
        collector.complete = False
        parser.feed_data(data)
        return parser.get_method(), collector.url, collector.headers

    return parse


@pytest.mark.parametrize("name", HEADS)
def test_reference_parser_agrees(name):
    c, r = parse_compiled(HEADS[name]), parse_reference(HEADS[name])
    assert {f: getattr(c, f) for f in FIELDS} == {f: getattr(r, f) for f in FIELDS}


@pytest.mark.parametrize("impl", ["compiled", "reference", "httptools"])
@pytest.mark.parametrize("name", HEADS)
def test_parse_head(benchmark, impl, name):
    data = HEADS[name]
    fields = data.count(b"\n") - 2
    benchmark.group = f"parse head: {name} ({fields} fields, {len(data)} B)"
    parse = {"compiled": parse_compiled, "reference": parse_reference,
             "httptools": httptools_parser()}[impl]
    result = benchmark(parse, data)
    if impl == "httptools":
        assert result[0] == b"GET" and len(result[2]) == fields
    else:
        assert result.method == b"GET" and result.head_size == len(data)


@pytest.mark.parametrize("impl", ["compiled", "reference"])
def test_build_upstream_head(benchmark, impl):
    benchmark.group = "build upstream head: browser"
    module = compiled if impl == "compiled" else reference
    head = parse_compiled(HEADS["browser"])
    out = benchmark(module.build_request_head, head, head.target, b"10.1.2.3:8080", b"198.51.100.1",
                    b"req-1", b"1.1 gateway", False)
    assert out == compiled.build_request_head(head, head.target, b"10.1.2.3:8080", b"198.51.100.1",
                                              b"req-1", b"1.1 gateway", False)
