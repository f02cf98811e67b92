"""Fixtures of the Gateway API conformance replay (see harness.py): one API server, the played
pods and one gateway per session; ``conformance`` gives a test the suite and deletes what the
test applied once it ends (last applied first, each delete waited for)."""
from __future__ import annotations

import pytest

from harness import Suite


@pytest.fixture(scope="session")
def suite(tmp_path_factory):
    s = Suite(tmp_path_factory.mktemp("conformance"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def conformance(suite):
    try:
        yield suite
    finally:
        suite.cleanup()
