"""docs/conformance.md is current: the report tests/conformance/report.py makes when every
replayed conformance test passes (CI runs them all, so a failing one fails CI first), and
every replayed test is an upstream one under its ShortName."""
from __future__ import annotations

import sys
from pathlib import Path

CONFORMANCE = Path(__file__).resolve().parent / "conformance"
sys.path.insert(0, str(CONFORMANCE))

import report  # noqa: E402


def test_every_replayed_test_is_an_upstream_test():
    upstream = report.upstream()["tests"]
    assert [name for name in report.replayed() if name not in upstream] == []


def test_the_committed_report_is_what_the_replayed_tests_give():
    expected = report.render({name: "passed" for name in report.replayed()})
    assert report.REPORT.read_text() == expected, (
        "docs/conformance.md is stale: run python tests/conformance/report.py")
