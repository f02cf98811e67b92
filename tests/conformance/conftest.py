"""Fixtures of the Gateway API conformance replay (see harness.py): one API server, the played
pods and one gateway per session; ``conformance`` gives a test the suite and deletes what the
test applied once it ends (last applied first, each delete waited for). A test that called
``suite.errorf`` (Go's t.Errorf) fails once it has run to its end, with those messages."""
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
    suite.errors.clear()
    try:
        yield suite
    finally:
        suite.cleanup()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """The test's call, failed after it ran to its end if it reported t.Errorf failures."""
    suite = item.funcargs.get("conformance")
    try:
        result = yield
    except BaseException as exc:
        if suite is not None and suite.errors:
            exc.add_note("and, before that (t.Errorf):\n" + "\n".join(suite.errors))
        raise
    if suite is not None and suite.errors:
        raise AssertionError(f"{len(suite.errors)} failure(s) reported while the test went on (t.Errorf):\n"
                             + "\n".join(suite.errors))
    return result
