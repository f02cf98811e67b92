"""A plain-Python request path normalizer: the oracle for ``_speedups.path.PathPolicy``.

Written the way the RFC reads, one step after the other over the whole string,
rather than in one pass like the compiled one:

1. refuse ``%`` not followed by two hex digits, and ``%00`` (when normalizing);
2. the escaped-slash policy for ``%2F``, ``%5C`` and a raw backslash;
3. decode ``%XX`` of unreserved characters, upper-case the hex of the others
   (RFC 3986 6.2.2.1, 6.2.2.2);
4. collapse runs of "/" (merge_slashes);
5. ``remove_dot_segments`` exactly as RFC 3986 section 5.2.4 writes it, with its
   input and output buffers and rules A to E.

The answer has the compiled one's shape: (0, path), (307, location) or (400, reason).
Not used by the gateway.
"""
from __future__ import annotations

import re

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_ESCAPED_SLASH = re.compile(rb"%2[Ff]|%5[Cc]|\\")


def normalize(path: bytes, normalize: bool = True, merge_slashes: bool = True,
              escaped_slashes: str = "reject") -> tuple[int, bytes | str]:
    if normalize:
        if _BAD_ESCAPE.search(path):
            return 400, "invalid percent-encoding in the request path"
        if re.search(rb"%00", path):
            return 400, "encoded NUL (%00) in the request path"
    redirect = False
    if escaped_slashes != "keep":
        # With normalization off a stray "%" is an ordinary byte, so an escape is only a
        # "%" with two hex digits that no earlier escape has taken: tokenize left to right.
        tokens = re.findall(rb"%[0-9A-Fa-f]{2}|.", path, re.S)
        if any(_ESCAPED_SLASH.fullmatch(t) for t in tokens):
            if escaped_slashes == "reject":
                return 400, "escaped slash (%2F, %5C or \\) in the request path"
            redirect = True
            path = b"".join(b"/" if _ESCAPED_SLASH.fullmatch(t) else t for t in tokens)
    if normalize:
        def fix(m: re.Match) -> bytes:
            value = int(m.group(1), 16)
            return bytes([value]) if value in _UNRESERVED else b"%" + m.group(1).upper()
        path = _ESCAPE.sub(fix, path)
    if merge_slashes:
        path = re.sub(rb"/{2,}", b"/", path)
    if normalize:
        path = remove_dot_segments(path)
    return (307 if redirect else 0), path


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 section 5.2.4, step by step."""
    inp, out = path, b""
    while inp:
        if inp.startswith(b"../"):                                  # A
            inp = inp[3:]
        elif inp.startswith(b"./"):
            inp = inp[2:]
        elif inp.startswith(b"/./"):                                # B
            inp = b"/" + inp[3:]
        elif inp == b"/.":
            inp = b"/"
        elif inp.startswith(b"/../"):                               # C
            inp = b"/" + inp[4:]
            out = out[:out.rfind(b"/")] if b"/" in out else b""
        elif inp == b"/..":
            inp = b"/"
            out = out[:out.rfind(b"/")] if b"/" in out else b""
        elif inp in (b".", b".."):                                  # D
            inp = b""
        else:                                                       # E
            start = 1 if inp.startswith(b"/") else 0
            end = inp.find(b"/", start)
            end = len(inp) if end < 0 else end
            out += inp[:end]
            inp = inp[end:]
    return out
