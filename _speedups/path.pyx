# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Request path normalization before route matching (RFC 3986 section 6.2.2).

Why: a route is chosen from the path's bytes, but the backend reads the path
after its own decoding and dot-segment removal.  ``/public/%2e%2e/test/x``
starts with ``/public/`` yet names ``/test/x`` to any backend that normalizes,
so per-route policy would be bypassed.  The path is normalized first (as nginx
does before location matching and Envoy with ``normalize_path``), the route is
matched on the result, and by default the result is what goes upstream, so the
gateway and the backend read the same path.

One pass over the path, in this order for each byte (RFC 3986 6.2.2):

* ``%XX`` of an unreserved character (ALPHA DIGIT ``-._~``, section 2.3) is
  decoded; any other escape gets upper-case hex digits (6.2.2.1).  Decoding is
  done once: ``%252e`` is ``%25`` then ``2e`` and stays as it is.  A ``%`` not
  followed by two hex digits, and ``%00``, are refused (400): nothing reads them
  the same way twice.
* ``%2F``, ``%5C`` and a raw ``\\`` follow the escaped-slash policy: kept as
  bytes of their segment (never a separator here), refused, or decoded to ``/``
  and answered with a redirect to the result.
* with merge_slashes, an empty segment (``//``) is dropped as it is met, so a
  following ``..`` removes the segment before it, as a file system and nginx
  read ``/a//../b`` (``/b``).
* ``.`` and ``..`` segments are removed when their segment ends (5.2.4); ``..``
  at the root stays at the root (``/../x`` is ``/x``, as 5.2.4 says).

The output is never longer than the input, so it is written into one buffer
of the input's size.  The fast path -- no ``%``, no ``\\``, no ``/`` followed
by ``/`` or ``.`` -- is a single scan that returns the same bytes object.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcmp

cdef unsigned char UNRESERVED[256]  # RFC 3986 section 2.3
cdef const char *HEXUP = b"0123456789ABCDEF"

cdef void _init_tables():
    cdef int c
    for c in range(256):                # HEXVAL: declared in path.pxd, cimported by http.pyx too
        UNRESERVED[c] = (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c in b"-._~"
        if 48 <= c <= 57:
            HEXVAL[c] = c - 48
        elif 97 <= c <= 102:
            HEXVAL[c] = c - 87
        elif 65 <= c <= 70:
            HEXVAL[c] = c - 55
        else:
            HEXVAL[c] = 255

_init_tables()

cdef enum:
    STACK_BUFFER = 512                  # most paths are shorter: no allocation for them

_SLASH_NAMES = {"keep": SLASHES_KEEP, "reject": SLASHES_REJECT,
                "unescape_and_redirect": SLASHES_REDIRECT}


cdef str outcome_reason(int outcome):
    if outcome == NORM_BAD_ESCAPE:
        return "invalid percent-encoding in the request path"
    if outcome == NORM_NUL:
        return "encoded NUL (%00) in the request path"
    if outcome == NORM_ESCAPED_SLASH:
        return "escaped slash (%2F, %5C or \\) in the request path"
    return None


cdef class PathPolicy:
    """How request paths are normalized; built once per config, used for every request."""

    def __init__(self, bint normalize=True, bint merge_slashes=True, str escaped_slashes="reject",
                 bint forward_original=False):
        self.flags = ((PATH_NORMALIZE if normalize else 0) | (PATH_MERGE_SLASHES if merge_slashes else 0)
                      | (PATH_FORWARD_ORIGINAL if forward_original else 0))
        self.escaped_slashes = _SLASH_NAMES[escaped_slashes]

    @property
    def forward_original(self):
        return bool(self.flags & PATH_FORWARD_ORIGINAL)

    def __call__(self, bytes path):
        """(0, normalized path) | (307, path to redirect to) | (400, reason); for tests and tools."""
        cdef int outcome = NORM_OK
        result = self.normalize(path, &outcome)
        if outcome == NORM_OK:
            return 0, result
        if outcome == NORM_REDIRECT:
            return 307, result
        return 400, outcome_reason(outcome)

    cdef bytes normalize(self, bytes path, int *outcome):
        """The normalized ``path`` (``path`` itself when nothing changes), or None with ``outcome`` set.

        ``path`` is an origin-form path without the query: it starts with "/"
        (the parser refuses anything else).
        """
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(path)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(path), i
        cdef unsigned char c
        outcome[0] = NORM_OK
        if n == 0 or p[0] != b'/':
            return path                             # not origin-form: the parser refuses it anyway
        if (self.flags & (PATH_NORMALIZE | PATH_MERGE_SLASHES)) == 0 and self.escaped_slashes == SLASHES_KEEP:
            return path
        # The fast path: nothing below can change a path without these.
        for i in range(n):
            c = p[i]
            if c == b'%' or c == b'\\' or (c == b'/' and i + 1 < n and (p[i + 1] == b'/' or p[i + 1] == b'.')):
                break
        else:
            return path
        cdef unsigned char stack[STACK_BUFFER]
        cdef unsigned char *out = stack
        if n > STACK_BUFFER:
            out = <unsigned char *>PyMem_Malloc(n)
            if out == NULL:
                raise MemoryError()
        try:
            return self._rewrite(path, p, n, out, outcome)
        finally:
            if out != stack:
                PyMem_Free(out)

    cdef bytes _rewrite(self, bytes path, const unsigned char *p, Py_ssize_t n, unsigned char *out,
                        int *outcome):
        cdef bint normalize = self.flags & PATH_NORMALIZE
        cdef bint merge = self.flags & PATH_MERGE_SLASHES
        cdef int slashes = self.escaped_slashes
        cdef bint redirect = False
        cdef Py_ssize_t i = 1, o = 1, seg = 1      # seg: where the current segment starts in out
        cdef unsigned char c, h1, h2, v
        # Each input byte gives at most one output byte, so o <= i <= n: out holds n bytes.
        out[0] = b'/'
        while i < n:
            c = p[i]
            if c == b'%':
                h1 = HEXVAL[p[i + 1]] if i + 1 < n else 255
                h2 = HEXVAL[p[i + 2]] if i + 2 < n else 255
                if h1 == 255 or h2 == 255:
                    if normalize:
                        outcome[0] = NORM_BAD_ESCAPE
                        return None
                    out[o] = c                      # not normalizing: an ordinary byte
                    o += 1
                    i += 1
                    continue
                v = h1 * 16 + h2
                if (v == b'/' or v == b'\\') and slashes != SLASHES_KEEP:
                    if slashes == SLASHES_REJECT:
                        outcome[0] = NORM_ESCAPED_SLASH
                        return None
                    redirect = True                 # a separator, below
                    i += 3
                else:
                    if normalize and v == 0:
                        outcome[0] = NORM_NUL
                        return None
                    if normalize and UNRESERVED[v]:
                        out[o] = v
                        o += 1
                    elif normalize:
                        out[o] = b'%'
                        out[o + 1] = HEXUP[h1]
                        out[o + 2] = HEXUP[h2]
                        o += 3
                    else:
                        out[o] = c
                        out[o + 1] = p[i + 1]
                        out[o + 2] = p[i + 2]
                        o += 3
                    i += 3
                    continue
            elif c == b'\\' and slashes != SLASHES_KEEP:
                if slashes == SLASHES_REJECT:
                    outcome[0] = NORM_ESCAPED_SLASH
                    return None
                redirect = True
                i += 1
            elif c == b'/':
                i += 1
            else:
                out[o] = c
                o += 1
                i += 1
                continue
            # A separator: the segment out[seg:o] has ended.
            if not (normalize and _drop_dot_segment(out, seg, &o)):
                if not (merge and o == seg):        # an empty segment: "//" gives one "/"
                    out[o] = b'/'
                    o += 1
            seg = o
        if normalize:
            _drop_dot_segment(out, seg, &o)         # the last segment ("/a/.." -> "/")
        if redirect:
            outcome[0] = NORM_REDIRECT
        elif o == n and memcmp(out, p, n) == 0:
            return path                             # e.g. "/.well-known": scanned, unchanged
        return PyBytes_FromStringAndSize(<char *>out, o)


cdef inline bint _drop_dot_segment(unsigned char *out, Py_ssize_t seg, Py_ssize_t *o):
    """Remove out[seg:o] if it is "." or ".." (with the segment before it); True if it was."""
    cdef Py_ssize_t end = o[0]
    if end - seg == 1 and out[seg] == b'.':
        o[0] = seg                                  # "." goes; the "/" before it stays
        return True
    if end - seg == 2 and out[seg] == b'.' and out[seg + 1] == b'.':
        end = seg
        if end > 1:                                 # at the root, ".." stays at the root
            end -= 1
            while out[end - 1] != b'/':
                end -= 1
        o[0] = end
        return True
    return False
