"""Session fixtures shared by the end-to-end tests: backend processes on two loopback addresses.

Backends are started once per session (a process each takes ~0.3 s to start) and stopped by
pid in the finalizer; each test module starts its own gateway process with its own config.
"""
from __future__ import annotations

import pytest

from support import start_backend


@pytest.fixture(scope="session")
def backend_a():
    """Cluster "zone-a": a backend on 127.0.0.2."""
    backend = start_backend("127.0.0.2", "zone-a", "httpbin-a-0")
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def backend_b():
    """Cluster "zone-b": a backend on 127.0.0.3."""
    backend = start_backend("127.0.0.3", "zone-b", "httpbin-b-0")
    yield backend
    backend.stop()
