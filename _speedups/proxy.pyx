# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The request path's face to Python: ``ProxyContext`` (what a worker's connections share,
and the protocol factories for its listeners) and the snapshot objects the data plane
builds (``Route``, ``Service``, ``Upstream``).

Callback protocols only (as uvloop's own benchmarks do): no coroutine, task or future
per request.  A task appears only to open a new upstream connection, which the pool makes
rare.  Bytes are moved with ``transport.write``, flow control with ``pause_reading`` /
``resume_reading``; bodies are never buffered whole in either direction.

The modules behind it, bottom up:

* ``stats``: counters by index, ``TrafficStats`` per upstream and route;
* ``accesslog``: the access log line, rendered as bytes into the log's buffer;
* ``service``: ``Route`` and ``Service`` (snapshot objects, read-only on the request path);
* ``upstream``: ``Upstream`` (an endpoint and its keep-alive pool) and
  ``UpstreamConnection`` (parses the response: head, interim heads, framed body);
* ``context``: ``Context`` (settings, counters, deadline timers) and the ``Connection``
  interface it drives;
* ``exchange``: ``Exchange``, one request/response as a state machine, with its retry and
  passive-health policies, and the ``Downstream`` interface it answers through;
* ``downstream``: ``Http1Connection``, the HTTP/1.1 client connection.
"""
from _speedups.context cimport Port
from _speedups.downstream cimport Http1Connection

from _speedups.accesslog import json_string
from _speedups.service import Route, Service
from _speedups.stats import LATENCY_BOUNDS, STAT_NAMES, TrafficStats
from _speedups.upstream import Upstream

__all__ = ["LATENCY_BOUNDS", "STAT_NAMES", "ProxyContext", "Route", "Service", "TrafficStats",
           "Upstream", "json_string"]


cdef class ProxyContext(Context):
    """What every connection of a worker shares (``context.Context``), and its listeners'
    protocol factories."""

    def protocol_factory(self):
        return Http1Connection(self)

    def tls_protocol_factory(self):
        return Http1Connection(self, b"https")

    def port_factory(self, Port port, bint tls):
        """The protocol factory of a Gateway listener's socket: its connections route
        with ``port``'s routes."""
        cdef bytes proto = b"https" if tls else b"http"
        return lambda: Http1Connection(self, proto, port)
