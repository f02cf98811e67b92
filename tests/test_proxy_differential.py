"""The request path against its recorded behaviour: ``tests/reference/exchange_cases.json``
holds request sequences (``tests/reference/exchange.py`` draws them from a seeded generator:
methods, sized and chunked bodies, pipelining, keep-alive, HTTP/1.0, malformed heads, route
filters rewriting headers and paths, redirects, retries past a refusing and a 503-answering
endpoint) with what the upstream received and what the client read when they were recorded.
Each is replayed through a gateway process here; both sides must match byte for byte
(Date, generated request ids and ports normalized).

After a deliberate change of behaviour, record again (``cd tests && python -m
reference.exchange``) and review the fixture's diff.
"""
from __future__ import annotations

import json

import pytest

from tests.reference.exchange import FIXTURE, generate, harness, run_case

RECORDED = json.loads(FIXTURE.read_text())
CASES = RECORDED["cases"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with harness(tmp_path_factory.mktemp("differential")) as h:
        yield h


def test_fixture_is_what_the_generator_draws():
    """The stored inputs are the generator's (so a re-record changes only the answers)."""
    drawn = generate(RECORDED["seed"], len(CASES))
    assert [(c["send"], c["cuts"]) for c in drawn] == [(c["send"], c["cuts"]) for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_replay_matches_recording(gateway, case):
    got = run_case(gateway, case)
    assert got["upstream"] == case["expect"]["upstream"], "the upstream received other bytes"
    assert got["client"] == case["expect"]["client"], "the client read other bytes"
