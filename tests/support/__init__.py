"""Support shared by the tests (tests/) and the benchmarks (bench/): real processes, real
sockets, no mocks.  Every wait here is bounded in time; every process started is stopped by pid.

Modules (each name below is exported here too):

* ``waiting``: ``wait_until``, the one bounded poll (``WaitTimeout``).
* ``processes``: ``stop_process``, ``children``, ``descendants``, ``process_tree``,
  ``pid_alive``, ``process_state``, ``cpu_ticks``, ``fd_targets`` (from /proc).
* ``memory``: ``rss_bytes``, ``peak_rss_bytes``, ``RssSampler`` (from /proc/<pid>/status).
* ``net``: ``free_port``, ``wait_listening``, ``upstream_connections``, ``connection_owners``.
* ``client``: ``Client``, the raw-socket HTTP/1.1 client, its ``Response`` and body helpers.
* ``upstreams``: ``start_backend``, ``two_cluster_pods``, ``TinyServer`` and its handlers.
* ``gateways``: ``GatewayProcess``, ``AccessLog``, ``AdminClient``, ``start_with_admin``,
  ``static_source``, ``REPO``, ``PYTHON``.
* ``pki``: ``Pki`` (a CA and its leaf certificates, by the openssl CLI) and its ``Pair``.
* ``loop``: ``LoopThread`` (a uvloop loop in a thread) and ``stop_backend``.

tests/ is on ``sys.path`` under pytest (rootdir conftest) and the benchmarks put it there, so
both write ``from support import ...``.  The shipped package never imports this one.
"""
from __future__ import annotations

from .client import (Client, Pacer, PeerClosed, Response, encode_chunked, expected_sha256, http10_get,
                     pattern_bytes)
from .gateways import (PYTHON, REPO, AccessLog, AdminClient, GatewayProcess, start_with_admin,
                      static_source)
from .loop import LoopThread, stop_backend
from .memory import MiB, RssSampler, peak_rss_bytes, rss_bytes, status_bytes
from .net import connection_owners, free_port, socket_inodes, upstream_connections, wait_listening
from .pki import Pair, Pki
from .processes import (CLK_TCK, children, children_map, cpu_ticks, descendants, fd_targets, pid_alive,
                        process_state, process_tree, stop_process)
from .upstreams import TinyServer, answering, read_request_head, start_backend, two_cluster_pods
from .waiting import WaitTimeout, wait_until

__all__ = [
    "Client", "Pacer", "PeerClosed", "Response", "encode_chunked", "expected_sha256", "http10_get", "pattern_bytes",
    "PYTHON", "REPO", "AccessLog", "AdminClient", "GatewayProcess", "start_with_admin", "static_source",
    "LoopThread", "stop_backend",
    "MiB", "RssSampler", "peak_rss_bytes", "rss_bytes", "status_bytes",
    "connection_owners", "free_port", "socket_inodes", "upstream_connections", "wait_listening",
    "Pair", "Pki",
    "CLK_TCK", "children", "children_map", "cpu_ticks", "descendants", "fd_targets", "pid_alive",
    "process_state", "process_tree", "stop_process",
    "TinyServer", "answering", "read_request_head", "start_backend", "two_cluster_pods",
    "WaitTimeout", "wait_until",
]
