"""The compiled path normalizer (``_speedups.path``) against the plain reference (``tests/reference/path.py``).

The reference follows RFC 3986 step by step (decode, merge, then section 5.2.4 with its two
buffers); the compiled one does everything in one pass.  Hypothesis drives both with paths
made of the pieces path-confusion attacks are made of, under every combination of settings,
and they must give the same answer: the same path, the same redirect, or both a 400.
"""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _speedups.path import PathPolicy
from tests.reference.path import normalize as reference

POLICIES = [dict(normalize=n, merge_slashes=m, escaped_slashes=s)
            for n, m, s in itertools.product((True, False), (True, False),
                                             ("keep", "reject", "unescape_and_redirect"))]

PIECES = ["/", "/", "/", ".", "..", "%2e", "%2E", ".%2e", "%2e.", "%2f", "%2F", "%5c", "%5C", "\\",
          "%25", "%252e", "%252f", "%00", "%41", "%7e", "%7E", "%2d", "%5f", "%c0%ae", "%C0%AE",
          "%20", "%3F", "%", "%z", "%2", "a", "b", "abc", "~", "-", "_", "x.y", ";", "=", "//"]

paths = st.lists(st.sampled_from(PIECES), max_size=14).map(lambda ps: ("/" + "".join(ps)).encode())
# Any visible ASCII but "?" (the query is split off before the path is normalized).
raw_paths = st.binary(max_size=40).map(
    lambda b: b"/" + bytes(0x21 + c % 94 for c in b).replace(b"?", b"/"))


def same(policy: dict, path: bytes):
    compiled = PathPolicy(**policy)(path)
    expected = reference(path, **policy)
    if expected[0] == 400:
        assert compiled[0] == 400, (path, policy, compiled, expected)
    else:
        assert compiled == expected, (path, policy, compiled, expected)
    return compiled


@settings(max_examples=400, deadline=None)
@given(path=paths, policy=st.sampled_from(POLICIES))
def test_compiled_agrees_with_reference(path, policy):
    same(policy, path)


@settings(max_examples=400, deadline=None)
@given(path=raw_paths, policy=st.sampled_from(POLICIES))
def test_compiled_agrees_with_reference_on_any_target_bytes(path, policy):
    same(policy, path)


@settings(max_examples=300, deadline=None)
@given(path=st.one_of(paths, raw_paths),
       policy=st.sampled_from([p for p in POLICIES if p["normalize"]]))
def test_normalizing_twice_changes_nothing(path, policy):
    """A backend that normalizes the forwarded path again reads the path the route was chosen for."""
    status, result = PathPolicy(**policy)(path)
    if status == 0:
        assert PathPolicy(**policy)(result) == (0, result)


@settings(max_examples=300, deadline=None)
@given(path=st.lists(st.sampled_from(["/", "a", "b", "x.y", "-", "_", "~", "v1", ";", "="]), max_size=12)
       .map(lambda ps: ("/" + "".join(ps)).encode())
       .filter(lambda p: b"//" not in p and b"/." not in p))
def test_fast_path_returns_the_same_object(path):
    policy = PathPolicy()
    status, result = policy(path)
    assert status == 0 and result is path


@pytest.mark.parametrize("path, expected", [
    (b"/public/../test/x", (0, b"/test/x")),
    (b"/public/%2e%2e/test", (0, b"/test")),
    (b"/public/%2E%2E/test", (0, b"/test")),
    (b"/public/.%2e/test", (0, b"/test")),
    (b"/public/./x", (0, b"/public/x")),
    (b"/..", (0, b"/")),
    (b"/../x", (0, b"/x")),
    (b"/a/b/..", (0, b"/a/")),
    (b"/a/.", (0, b"/a/")),
    (b"//a///b", (0, b"/a/b")),
    (b"/a//../b", (0, b"/b")),              # merged first, as a file system reads it
    (b"/%41%7e%2d%5F", (0, b"/A~-_")),
    (b"/%252e%252e/x", (0, b"/%252e%252e/x")),   # decoded once only
    (b"/%c0%ae%c0%ae/x", (0, b"/%C0%AE%C0%AE/x")),  # overlong UTF-8 is not unreserved
    (b"/a%3fb", (0, b"/a%3Fb")),
    (b"/public/..%2ftest", (400, None)),
    (b"/public/..%5Ctest", (400, None)),
    (b"/public/..\\test", (400, None)),
    (b"/a%00b", (400, None)),
    (b"/a%zz", (400, None)),
    (b"/a%2", (400, None)),
])
def test_default_policy(path, expected):
    status, result = PathPolicy()(path)
    assert status == expected[0]
    if status != 400:
        assert result == expected[1]
    assert same({}, path)[0] == status


def test_escaped_slash_policies():
    keep = PathPolicy(escaped_slashes="keep")
    assert keep(b"/public/..%2ftest") == (0, b"/public/..%2Ftest")     # a byte of its segment
    assert keep(b"/a\\b") == (0, b"/a\\b")
    redirect = PathPolicy(escaped_slashes="unescape_and_redirect")
    assert redirect(b"/public/..%2ftest") == (307, b"/test")
    assert redirect(b"/a%5Cb") == (307, b"/a/b")
    assert redirect(b"/a%2f%2fb") == (307, b"/a/b")
    assert redirect(b"/a/b") == (0, b"/a/b")


def test_everything_off_leaves_the_path_alone():
    off = PathPolicy(normalize=False, merge_slashes=False, escaped_slashes="keep")
    for path in (b"/a/../b", b"/%2e%2e", b"//x", b"/%00", b"/%zz", b"/a%2fb"):
        assert off(path) == (0, path)
    merge_only = PathPolicy(normalize=False, escaped_slashes="keep")
    assert merge_only(b"//a/../%2e//b") == (0, b"/a/../%2e/b")


def test_long_paths_use_the_heap_buffer():
    path = b"/x" * 600 + b"/%2e%2e" + b"/y" * 600
    status, result = PathPolicy()(path)
    assert status == 0 and result == b"/x" * 599 + b"/y" * 600
    assert same({}, path)[0] == 0
