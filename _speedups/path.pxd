# Typed interface of _speedups.path, so the proxy normalizes a request path at C speed.

# The value of a hex digit byte (0-15), 255 for any other byte: the one table of the percent
# decoding here and of chunk sizes in _speedups.http, which cimports it. Filled once when
# _speedups.path is imported (cimporting it imports it first).
cdef unsigned char HEXVAL[256]

cdef enum:                              # PathPolicy.flags
    PATH_NORMALIZE = 1                  # decode unreserved %XX, remove dot segments (RFC 3986 6.2.2)
    PATH_MERGE_SLASHES = 2              # "//" -> "/"
    PATH_FORWARD_ORIGINAL = 4           # match on the normalized path, send the client's

cdef enum:                              # PathPolicy.escaped_slashes: %2F, %5C and a raw "\"
    SLASHES_KEEP = 0                    # left as they are, never a separator
    SLASHES_REJECT = 1                  # 400
    SLASHES_REDIRECT = 2                # decoded to "/", answered with a redirect there

cdef enum:                              # what normalize() found
    NORM_OK = 0
    NORM_REDIRECT = 1
    NORM_BAD_ESCAPE = 2
    NORM_NUL = 3
    NORM_ESCAPED_SLASH = 4

cdef class PathPolicy:
    cdef readonly int flags
    cdef readonly int escaped_slashes
    cdef bytes normalize(self, bytes path, int *outcome)
    cdef bytes _rewrite(self, bytes path, const unsigned char *p, Py_ssize_t n, unsigned char *out,
                        int *outcome)

cdef str outcome_reason(int outcome)
