# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""HTTP/1.1 message framing for the proxy: strict head parsing and body delimiting.

Why our own parser rather than llhttp callbacks: a proxy forwards bodies as the
bytes it received.  Parsing the head in one C pass over the buffer gives the exact
offset where the body starts, so body bytes (chunked or sized) are forwarded as
slices with no per-chunk Python callback and no re-encoding, and every framing
rule of RFC 9112 that matters for request smuggling is decided here, in one place:

* a head must use CR LF line ends (bare LF or CR -> 400), no obs-fold, no
  whitespace between a field name and its colon (RFC 9112 section 5.1);
* Content-Length must be one decimal value; Transfer-Encoding only a lone
  "chunked"; both together -> 400 (section 6.1 / 6.3);
* only origin-form targets are accepted (no absolute or asterisk form);
* field values may not hold NUL or other control bytes (RFC 9110 section 5.5);
* an HTTP-version is "HTTP/" DIGIT "." DIGIT (else 400; 1.0 and 1.1 only, else 505);
* Host must be present once in HTTP/1.1 and hold only host[:port] characters
  (RFC 9112 section 3.2: a Host with an invalid value is answered 400);
* trailer fields after the last chunk are field lines: a token, a colon, a value
  (section 7.1.2), since they are forwarded as received.

httptools (llhttp) is kept as an independent oracle in the tests.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Realloc
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcmp, memcpy, memset

from _speedups.path cimport HEXVAL     # hex digit values (chunk sizes), 255 for anything else

cdef enum:
    MAX_CHUNK_SIZE_DIGITS = 15          # 16**15 bytes is far beyond any real chunk


class HttpError(Exception):
    """A message that cannot be proxied; ``status`` is the answer to give."""

    def __init__(self, int status, str reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


# Character classes, computed once at import.
cdef unsigned char TOKEN[256]        # RFC 9110 tchar
cdef unsigned char FIELD_VALUE[256]  # VCHAR, obs-text, SP, HTAB
cdef unsigned char TARGET[256]       # visible ASCII in a request-target
cdef unsigned char HOST[256]         # RFC 3986 reg-name, IP-literal and port characters
cdef unsigned char LOWER[256]

cdef void _init_tables():
    cdef int c
    for c in range(256):
        TOKEN[c] = (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c in b"!#$%&'*+-.^_`|~"
        FIELD_VALUE[c] = (0x21 <= c <= 0x7e) or c >= 0x80 or c == 0x20 or c == 0x09
        TARGET[c] = 0x21 <= c <= 0x7e
        HOST[c] = (48 <= c <= 58) or (65 <= c <= 90) or (97 <= c <= 122) or c in b"-._~!$&'()*+,;=%[]"
        LOWER[c] = c + 32 if 65 <= c <= 90 else c

_init_tables()

cdef uint64_t ONES = <uint64_t>0x0101010101010101
cdef uint64_t HIGHS = <uint64_t>0x8080808080808080


cdef inline bint _valid_field_value(const char *p, Py_ssize_t n) noexcept nogil:
    """Every byte of ``p[:n]`` a field-value character (VCHAR, obs-text, SP, HTAB).  Eight
    bytes at a time: a word with no byte below 0x20 and none 0x7F is valid whole (the
    bit-twiddling "has less than" and "has zero" tests); one with such a byte, a tab
    perhaps, is looked at byte by byte.  A 600-byte token is checked in a tenth of the time."""
    cdef uint64_t word, dels
    cdef Py_ssize_t i = 0, j
    while i + 8 <= n:
        memcpy(&word, p + i, 8)
        dels = word ^ (ONES * 0x7F)
        if ((word - ONES * 0x20) & ~word & HIGHS) or ((dels - ONES) & ~dels & HIGHS):
            for j in range(i, i + 8):
                if not FIELD_VALUE[<unsigned char>p[j]]:
                    return False
        i += 8
    for j in range(i, n):
        if not FIELD_VALUE[<unsigned char>p[j]]:
            return False
    return True

# Header names the proxy acts on are told apart in C (``_field_kind``); these common
# names, as sent and in lower case, are reused when a field list is made, instead of two
# new bytes objects per field.  Matched byte for byte, so what is forwarded is unchanged.
cdef bytes EMPTY = b""

cdef list _KNOWN_BY_LENGTH = [() for _ in range(33)]   # [length] -> ((as sent, lower case), ...)


cdef void _init_known_names():
    for name in (b"Host", b"User-Agent", b"Accept", b"Accept-Encoding", b"Accept-Language",
                 b"Connection", b"Content-Length", b"Content-Type", b"Transfer-Encoding",
                 b"Cache-Control", b"Cookie", b"Set-Cookie", b"Authorization", b"Date", b"Server",
                 b"Last-Modified", b"ETag", b"Expires", b"Vary", b"Location", b"Content-Encoding",
                 b"Accept-Ranges", b"Referer", b"Origin", b"Keep-Alive", b"Upgrade", b"Expect",
                 b"X-Request-Id", b"X-Forwarded-For", b"X-Real-IP", b"Via", b"Pragma",
                 b"If-None-Match", b"If-Modified-Since", b"Content-Range", b"Range", b"Age"):
        lname = name.lower()
        _KNOWN_BY_LENGTH[len(name)] += ((name, lname), (lname, lname))

_init_known_names()

# Methods and the reason phrase of nearly every response, reused the same way.
cdef tuple _KNOWN_METHODS = (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")
cdef bytes _REASON_OK = b"OK"
cdef bytes _KEEP_ALIVE = b"keep-alive"


cdef inline tuple _known_name(const char *p, Py_ssize_t n):
    """(as sent, lower case) when ``p[:n]`` is a common field name as sent, else None."""
    if n >= 33:
        return None
    for pair in <tuple>_KNOWN_BY_LENGTH[n]:
        if memcmp(p, PyBytes_AS_STRING(<bytes>(<tuple>pair)[0]), n) == 0:
            return <tuple>pair
    return None


cdef inline bytes _known_method(const char *p, Py_ssize_t n):
    cdef bytes method
    for method in _KNOWN_METHODS:
        if PyBytes_GET_SIZE(method) == n and memcmp(p, PyBytes_AS_STRING(method), n) == 0:
            return method
    return None


cdef frozenset IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


# ---------------------------------------------------------------------------
# The bytes of a head being written: one buffer of the module's, reused by every head
# (one is finished before the next is begun) and copied once into the bytes object.
# Heads are parsed and built on the event loop's thread only (no other thread of the
# gateway touches HTTP/1.1), so no two ever share it.

cdef char *_out_buf = NULL
cdef Py_ssize_t _out_cap = 0
cdef Py_ssize_t _out_len = 0


cdef inline void _out_reset():
    global _out_len
    _out_len = 0


cdef int _out_grow(Py_ssize_t need) except -1:
    global _out_buf, _out_cap
    cdef Py_ssize_t cap = max(need, 2 * _out_cap, 4096)
    cdef char *grown = <char *>PyMem_Realloc(_out_buf, cap)
    if grown == NULL:
        raise MemoryError()
    _out_buf = grown
    _out_cap = cap
    return 0


cdef inline int _put(const char *p, Py_ssize_t n) except -1:
    global _out_len
    if _out_len + n > _out_cap:
        _out_grow(_out_len + n)
    memcpy(_out_buf + _out_len, p, n)
    _out_len += n
    return 0


cdef inline int _put_bytes(bytes b) except -1:
    return _put(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))


cdef int _put_decimal(long long n) except -1:
    cdef char digits[24]
    cdef int i = 24
    if n == 0:
        return _put(b"0", 1)
    while n > 0 and i > 0:
        i -= 1
        digits[i] = <char>(48 + n % 10)
        n //= 10
    return _put(digits + i, 24 - i)


cdef tuple _SMALL_DECIMALS = tuple(str(i).encode() for i in range(1000))


cdef bytes decimal(long long n):
    """``b"%d" % n`` for n >= 0 without the format machinery (status codes, content-lengths)."""
    cdef char digits[24]
    cdef int i = 24
    if n < 1000:
        return <bytes>_SMALL_DECIMALS[n]
    while n > 0:
        i -= 1
        digits[i] = <char>(48 + n % 10)
        n //= 10
    return PyBytes_FromStringAndSize(digits + i, 24 - i)


cdef inline bytes _out_take():
    return PyBytes_FromStringAndSize(_out_buf, _out_len) if _out_len else EMPTY


@cython.no_gc                  # bytes and lists of bytes tuples: no cycle to collect
cdef class MessageHead:
    """Fields common to requests and responses, after the head is parsed.

    The fields a proxy passes on are kept as ``field_lines``, the bytes they are forwarded
    as, so that the common request (no route matches a header, no filter changes one)
    makes no Python object per field.  An HTTP/2 request's fields are kept the same way as
    ``pairs``, the (name, value) tuples they came in.  The list of (lower-case name, name,
    value) is made from either when first asked for: ``peek_fields`` to read it, ``fields``
    to change it, after which the list is what is forwarded.
    """

    def __cinit__(self):
        self._fields = None
        self.field_lines = None
        self.content_length = -1
        self.extra_hop = None

    cdef list fields(self):
        """The field list, to change: from now on it is forwarded, not ``field_lines`` or
        ``pairs``."""
        cdef list fields = self.peek_fields()
        self.field_lines = self.pairs = None
        return fields

    cdef list peek_fields(self):
        """The field list, not to be changed (``field_lines`` or ``pairs`` still stand for it)."""
        if self._fields is None:
            if self.field_lines:
                self._fields = _split_field_lines(self.field_lines)
            elif self.pairs is not None:
                self._fields = [(name, name, value) for name, value in self.pairs]
            else:
                self._fields = []
        return self._fields

    cdef void set_fields(self, list fields):
        self._fields = fields
        self.field_lines = self.pairs = None

    cdef void append_fields(self, list fields, bytes lines):
        """Fields added at the end ([(lower name, name, value)], and the same as ``lines``,
        "Name: value\r\n" each); while the fields are still forwarded as ``field_lines``, as
        lines added to those (nothing split)."""
        if self.field_lines is not None:
            self.field_lines += lines
            self._fields = None         # a peeked list is stale now
        else:
            self.set_fields(self.peek_fields() + fields)

    cdef void replace_fields(self, frozenset names, list fields, bytes lines):
        """The fields named in ``names`` (lower-case) dropped, then ``fields`` (the same as
        ``lines``) added at the end; while ``field_lines`` stands, by cutting those lines out
        of it (nothing split)."""
        cdef const char *p
        cdef Py_ssize_t n, pos = 0, eol, k, kept = 0
        cdef list pieces = []
        if self.field_lines is None:
            self.set_fields([f for f in self.peek_fields() if f[0] not in names] + fields)
            return
        p = PyBytes_AS_STRING(self.field_lines)
        n = PyBytes_GET_SIZE(self.field_lines)
        while pos < n:
            eol = <const char *>memchr(p + pos, b'\n', n - pos) - p + 1
            for name in names:
                k = PyBytes_GET_SIZE(name)
                if pos + k < eol and p[pos + k] == b':' and _ieq(p + pos, PyBytes_AS_STRING(name), k):
                    if kept < pos:
                        pieces.append(PyBytes_FromStringAndSize(p + kept, pos - kept))
                    kept = eol
                    break
            pos = eol
        if kept < n:
            pieces.append(PyBytes_FromStringAndSize(p + kept, n - kept))
        pieces.append(lines)
        self.field_lines = b"".join(pieces)
        self._fields = None             # a peeked list is stale now

    @property
    def headers(self):
        """[(lower-case name, name, value)], hop-by-hop fields removed; may be changed."""
        return self.fields()

    @headers.setter
    def headers(self, list fields):
        self.set_fields(fields)


@cython.no_gc
cdef class RequestHead(MessageHead):
    """A parsed request head.  Its fields exclude hop-by-hop and proxy-set ones."""

    @property
    def idempotent(self):
        return self.method in IDEMPOTENT

    cpdef bytes header(self, bytes lname):
        """The value of the first field named ``lname`` (lower-case), or None."""
        cdef Py_ssize_t start, n
        if self.field_lines is not None:
            n = _find_field(self.field_lines, lname, &start)
            return PyBytes_FromStringAndSize(PyBytes_AS_STRING(self.field_lines) + start, n) if n >= 0 else None
        if self.pairs is not None:
            for name, value in self.pairs:
                if name == lname:
                    return value
            return None
        for name, _, value in self._fields or ():
            if name == lname:
                return value
        return None

    cdef Py_ssize_t header_span(self, bytes lname, const char **value):
        """Where the first field named ``lname`` has its value, without copying it: its length,
        ``value`` pointing at it (valid while the head is not changed); -1 if absent."""
        cdef Py_ssize_t start, n
        if self.field_lines is not None:
            n = _find_field(self.field_lines, lname, &start)
            if n >= 0:
                value[0] = PyBytes_AS_STRING(self.field_lines) + start
            return n
        found = self.header(lname)
        if found is None:
            return -1
        value[0] = PyBytes_AS_STRING(found)     # the bytes stays alive in the field list
        return PyBytes_GET_SIZE(found)


@cython.no_gc
cdef class ResponseHead(MessageHead):
    """A parsed response head.  Its fields exclude hop-by-hop ones."""
    pass


cdef inline bint _ieq(const char *p, const char *lower, Py_ssize_t n) noexcept:
    """``p[:n]`` equals the lower-case ``lower`` but for ASCII case."""
    cdef Py_ssize_t i
    for i in range(n):
        if LOWER[<unsigned char>p[i]] != <unsigned char>lower[i]:
            return False
    return True


cdef list _split_field_lines(bytes lines):
    """[(lower-case name, name, value)] from "Name: value\\r\\n" lines, as _parse_fields
    wrote them."""
    cdef const char *p = PyBytes_AS_STRING(lines)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(lines), pos = 0, colon, eol
    cdef tuple known
    cdef list out = []
    while pos < n:
        eol = <const char *>memchr(p + pos, b'\n', n - pos) - p
        colon = <const char *>memchr(p + pos, b':', eol - pos) - p
        known = _known_name(p + pos, colon - pos)
        if known is not None:
            out.append((known[1], known[0], lines[colon + 2:eol - 1]))
        else:
            name = lines[pos:colon]
            out.append((name.lower(), name, lines[colon + 2:eol - 1]))
        pos = eol + 1
    return out


cdef Py_ssize_t _find_field(bytes lines, bytes lname, Py_ssize_t *start):
    """The length of the value of the first of ``lines`` named ``lname`` (lower-case), which
    starts at ``start``; -1 if there is none."""
    cdef const char *p = PyBytes_AS_STRING(lines)
    cdef const char *want = PyBytes_AS_STRING(lname)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(lines), k = PyBytes_GET_SIZE(lname), pos = 0, eol
    while pos < n:
        eol = <const char *>memchr(p + pos, b'\n', n - pos) - p
        if pos + k < eol and p[pos + k] == b':' and _ieq(p + pos, want, k):
            start[0] = pos + k + 2
            return eol - 1 - start[0]
        pos = eol + 1
    return -1


cdef inline Py_ssize_t _find_line_end(const char *buf, Py_ssize_t pos, Py_ssize_t end,
                                      bint bare_cr=True) except -2:
    """Index of the CR of the next CR LF at or after ``pos``; a bare LF is an error, and a bare
    CR too unless ``bare_cr`` is False: a field line's caller, whose name and value checks
    refuse every CR anyway (TOKEN, FIELD_VALUE), spares the second scan."""
    cdef const char *lf = <const char *>memchr(buf + pos, b'\n', end - pos)
    if lf == NULL:
        raise HttpError(400, "unterminated header line")
    cdef Py_ssize_t i = lf - buf
    if i == pos or buf[i - 1] != b'\r':
        raise HttpError(400, "bare LF in head")
    if bare_cr and memchr(buf + pos, b'\r', i - 1 - pos) != NULL:
        raise HttpError(400, "bare CR in head")
    return i - 1


cpdef Py_ssize_t find_head_end(bytes data, Py_ssize_t start) except -2:
    """Offset just past the blank line that ends a head, searching from ``start``; -1 if none yet.

    Also stops at a bare "\\n\\n" so that a head with bare LF line ends is
    refused at once instead of waiting for a CR LF CR LF that never comes.
    Scans line feeds with memchr and stops at the first end: the bytes after it
    are the body (a 16 KiB response body scanned here cost a third of the
    gateway's CPU in a profile).
    """
    cdef const char *buf = PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i = start
    cdef const char *lf
    while i < n:
        lf = <const char *>memchr(buf + i, b'\n', n - i)
        if lf == NULL:
            return -1
        i = lf - buf
        if i + 1 < n and buf[i + 1] == b'\n':
            return i + 2                                # "\n\n"
        if (i + 2 < n and i - 1 >= start and buf[i - 1] == b'\r' and buf[i + 1] == b'\r'
                and buf[i + 2] == b'\n'):
            return i + 3                                # "\r\n\r\n"
        i += 1
    return -1


cdef long long _parse_digits(const char *p, Py_ssize_t n, Py_ssize_t max_digits) noexcept:
    """The value of 1 to ``max_digits`` (at most 18) ASCII digits; -1 for anything else."""
    cdef long long value = 0
    cdef Py_ssize_t i
    if n == 0 or n > max_digits:
        return -1
    for i in range(n):
        if not (b'0' <= p[i] <= b'9'):
            return -1
        value = value * 10 + (p[i] - 48)
    return value


cdef long long digits_value(bytes text, Py_ssize_t max_digits) noexcept:
    """``_parse_digits`` of a bytes object (an HTTP/2 :status, content-length, grpc-status)."""
    return _parse_digits(PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text), max_digits)


cdef long long _parse_content_length(const char *p, Py_ssize_t n) except -2:
    cdef long long value = _parse_digits(p, n, 18)
    if value < 0:
        raise HttpError(400, "invalid Content-Length")
    return value


# What a field name means to the proxy, compared without Python objects.
cdef enum FieldKind:
    F_OTHER                                 # passed on
    F_CONTENT_LENGTH                        # hop-by-hop or framing: never passed on
    F_TRANSFER_ENCODING
    F_CONNECTION
    F_UPGRADE
    F_KEEP_ALIVE
    F_PROXY_CONNECTION
    F_TE
    F_TRAILER
    F_HOST                                  # requests only: set by the proxy (below: dropped)
    F_REQUEST_ID
    F_FORWARDED_FOR
    F_FORWARDED_PROTO
    F_FORWARDED_HOST
    F_VIA
    F_REAL_IP
    F_EXPECT                                # requests only, passed on
    F_TRACEPARENT                           # requests only: kept aside, sent by build_request_head
    F_TRACESTATE                            # (the client's, or the gateway's own span's)
    F_B3                                    # requests only, passed on; noted (req.b3)


cdef FieldKind _field_kind(const char *p, Py_ssize_t n) noexcept:
    if n == 2:
        if _ieq(p, b"b3", 2):
            return F_B3
        return F_TE if _ieq(p, b"te", 2) else F_OTHER
    if n == 3:
        return F_VIA if _ieq(p, b"via", 3) else F_OTHER
    if n == 4:
        return F_HOST if _ieq(p, b"host", 4) else F_OTHER
    if n == 6:
        return F_EXPECT if _ieq(p, b"expect", 6) else F_OTHER
    if n == 7:
        if _ieq(p, b"upgrade", 7):
            return F_UPGRADE
        return F_TRAILER if _ieq(p, b"trailer", 7) else F_OTHER
    if n == 9:
        return F_REAL_IP if _ieq(p, b"x-real-ip", 9) else F_OTHER
    if n == 10:
        if _ieq(p, b"connection", 10):
            return F_CONNECTION
        if _ieq(p, b"tracestate", 10):
            return F_TRACESTATE
        return F_KEEP_ALIVE if _ieq(p, b"keep-alive", 10) else F_OTHER
    if n == 11:
        return F_TRACEPARENT if _ieq(p, b"traceparent", 11) else F_OTHER
    if n == 12:
        if _ieq(p, b"x-b3-traceid", 12):
            return F_B3
        return F_REQUEST_ID if _ieq(p, b"x-request-id", 12) else F_OTHER
    if n == 14:
        return F_CONTENT_LENGTH if _ieq(p, b"content-length", 14) else F_OTHER
    if n == 15:
        return F_FORWARDED_FOR if _ieq(p, b"x-forwarded-for", 15) else F_OTHER
    if n == 16:
        if _ieq(p, b"proxy-connection", 16):
            return F_PROXY_CONNECTION
        return F_FORWARDED_HOST if _ieq(p, b"x-forwarded-host", 16) else F_OTHER
    if n == 17:
        if _ieq(p, b"transfer-encoding", 17):
            return F_TRANSFER_ENCODING
        return F_FORWARDED_PROTO if _ieq(p, b"x-forwarded-proto", 17) else F_OTHER
    return F_OTHER


cdef struct FieldCount:                     # what one field tells about the next (per head)
    int fields
    int host
    int content_length
    bint transfer_encoding
    bint expect


cdef bint _take_field(MessageHead head, const char *name, Py_ssize_t nlen, const char *value,
                      Py_ssize_t vlen, bint is_request, Py_ssize_t max_headers,
                      FieldCount *seen) except -1:
    """The checks and meaning of one field, for HTTP/1.1 and HTTP/2 alike; True when it is
    passed on as it came (the caller keeps it, as a line or in a list)."""
    cdef FieldKind kind
    cdef bytes text
    cdef RequestHead req = head if is_request else None
    cdef Py_ssize_t i
    if not _valid_field_value(value, vlen):
        raise HttpError(400, "invalid character in header value")
    seen.fields += 1
    if seen.fields > max_headers:
        raise HttpError(431, "too many header fields")
    kind = _field_kind(name, nlen)
    if kind >= F_HOST and not is_request:
        kind = F_OTHER
    if kind == F_OTHER:
        return True
    if kind == F_B3:
        req.b3 = True
        return True
    if kind == F_EXPECT:
        if not seen.expect:
            seen.expect = True
            req.expect_continue = head.minor == 1 and vlen == 12 and _ieq(value, b"100-continue", 12)
        return True
    if kind == F_CONTENT_LENGTH:
        seen.content_length += 1
        if seen.content_length > 1:
            raise HttpError(400, "duplicate Content-Length")
        head.content_length = _parse_content_length(value, vlen)
    elif kind == F_TRANSFER_ENCODING:
        if seen.transfer_encoding or not (vlen == 7 and _ieq(value, b"chunked", 7)):
            raise HttpError(400 if is_request else 502, "unsupported Transfer-Encoding")
        seen.transfer_encoding = True
        head.chunked = True
    elif kind == F_CONNECTION:
        if vlen == 10 and memcmp(value, b"keep-alive", 10) == 0:
            head.connection = _KEEP_ALIVE               # nearly every one: no new object
        else:
            head.connection = PyBytes_FromStringAndSize(value, vlen)
    elif kind == F_UPGRADE:
        head.upgrade = PyBytes_FromStringAndSize(value, vlen)
    elif kind == F_HOST:
        seen.host += 1
        for i in range(vlen):
            if not HOST[<unsigned char>value[i]]:
                raise HttpError(400, "invalid Host header")
        req.host = PyBytes_FromStringAndSize(value, vlen)
    elif kind == F_REQUEST_ID:
        req.request_id = PyBytes_FromStringAndSize(value, vlen)
    elif kind == F_FORWARDED_FOR:
        text = PyBytes_FromStringAndSize(value, vlen)
        req.forwarded_for = text if req.forwarded_for is None else req.forwarded_for + b", " + text
    elif kind == F_VIA:
        text = PyBytes_FromStringAndSize(value, vlen)
        req.via = text if req.via is None else req.via + b", " + text
    elif kind == F_TRACEPARENT:
        if req.traceparent is None:         # the spec: more than one is invalid; keep the first
            req.traceparent = PyBytes_FromStringAndSize(value, vlen)
    elif kind == F_TRACESTATE:              # several are one list (the spec's section 3.3.1.1)
        text = PyBytes_FromStringAndSize(value, vlen)
        req.tracestate = text if req.tracestate is None else req.tracestate + b"," + text
    # Keep-Alive, Proxy-Connection, TE, Trailer: dropped.  X-Forwarded-Proto/-Host and
    # X-Real-IP from the client are not trusted: the proxy sets them.
    return False


cdef int _end_fields(MessageHead head, bint is_request, FieldCount *seen) except -1:
    """The checks across fields, once all are taken."""
    if seen.transfer_encoding and seen.content_length:
        raise HttpError(400, "both Content-Length and Transfer-Encoding")
    if is_request and seen.host > 1:
        raise HttpError(400, "duplicate Host")
    return 0


cdef Py_ssize_t _parse_fields(MessageHead head, const char *buf, Py_ssize_t pos,
                              Py_ssize_t end, bint is_request, Py_ssize_t max_headers) except -2:
    """Parse header lines from ``pos`` up to the blank line; return the offset after it.

    The fields passed on are written to ``head.field_lines`` as they are forwarded
    ("Name: value\\r\\n", the value without surrounding whitespace).  Lines already so
    spelled are copied as they came, each run of them at once.
    """
    cdef Py_ssize_t eol, colon, vstart, vend
    cdef Py_ssize_t run = -1                # where lines kept as they came start, not yet copied
    cdef bint kept
    cdef unsigned char c
    cdef FieldCount seen
    memset(&seen, 0, sizeof(seen))
    _out_reset()
    while True:
        eol = _find_line_end(buf, pos, end, False)
        if eol == pos:                      # the blank line
            if run >= 0:
                _put(buf + run, pos - run)
            pos = eol + 2
            break
        c = buf[pos]
        if c == b' ' or c == b'\t':
            raise HttpError(400, "obsolete line folding")
        colon = pos
        while colon < eol and TOKEN[<unsigned char>buf[colon]]:
            colon += 1
        if colon == pos or colon >= eol or buf[colon] != b':':
            raise HttpError(400, "invalid header name")
        vstart = colon + 1
        while vstart < eol and (buf[vstart] == b' ' or buf[vstart] == b'\t'):
            vstart += 1
        vend = eol
        while vend > vstart and (buf[vend - 1] == b' ' or buf[vend - 1] == b'\t'):
            vend -= 1
        kept = _take_field(head, buf + pos, colon - pos, buf + vstart, vend - vstart, is_request,
                           max_headers, &seen)
        if kept and vstart == colon + 2 and buf[colon + 1] == b' ' and vend == eol:
            if run < 0:
                run = pos
        else:
            if run >= 0:
                _put(buf + run, pos - run)
                run = -1
            if kept:
                _put(buf + pos, colon - pos)
                _put(b": ", 2)
                _put(buf + vstart, vend - vstart)
                _put(b"\r\n", 2)
        pos = eol + 2
    _end_fields(head, is_request, &seen)
    head.field_lines = _out_take()
    head.head_size = pos
    return pos


cdef int _apply_connection(MessageHead head, bint http11) except -1:
    """Keep-alive, upgrade and extra hop-by-hop names from the Connection field."""
    cdef bytes conn = head.connection
    cdef const char *p
    cdef Py_ssize_t n, pos = 0, start, stop
    cdef bint upgrade_listed = False
    cdef list extra = None
    head.keep_alive = http11
    if conn is None:
        head.upgrade = None                 # Upgrade without "Connection: upgrade" is ignored
        return 0
    p = PyBytes_AS_STRING(conn)
    n = PyBytes_GET_SIZE(conn)
    while pos <= n:
        stop = pos
        while stop < n and p[stop] != b',':
            stop += 1
        start = pos
        pos = stop + 1
        while start < stop and (p[start] == b' ' or p[start] == b'\t'):
            start += 1
        while stop > start and (p[stop - 1] == b' ' or p[stop - 1] == b'\t'):
            stop -= 1
        if stop - start == 5 and _ieq(p + start, b"close", 5):
            head.keep_alive = False
        elif stop - start == 10 and _ieq(p + start, b"keep-alive", 10):
            head.keep_alive = head.keep_alive or not http11
        elif stop - start == 7 and _ieq(p + start, b"upgrade", 7):
            upgrade_listed = True
        elif stop > start:
            if extra is None:
                extra = []
            extra.append(conn[start:stop].lower())
    if not upgrade_listed:
        head.upgrade = None
    if extra is not None:
        head.extra_hop = frozenset(extra)
        head.set_fields([h for h in head.fields() if h[0] not in head.extra_hop])
        if isinstance(head, RequestHead) and b"expect" in head.extra_hop:
            (<RequestHead>head).expect_continue = False
    return 0


cpdef RequestHead parse_request(bytes data, Py_ssize_t end, Py_ssize_t max_headers=100):
    """Parse the request head in ``data[:end]`` (``end`` from find_head_end)."""
    cdef const char *buf = PyBytes_AS_STRING(data)
    cdef Py_ssize_t pos = 0, sp1, sp2, eol
    cdef const char *query
    cdef RequestHead head = RequestHead.__new__(RequestHead)
    # RFC 9112 section 2.2: ignore empty lines before the request line.
    while pos + 1 < end and buf[pos] == b'\r' and buf[pos + 1] == b'\n':
        pos += 2
    eol = _find_line_end(buf, pos, end)
    sp1 = pos
    while sp1 < eol and TOKEN[<unsigned char>buf[sp1]]:
        sp1 += 1
    if sp1 == pos or sp1 >= eol or buf[sp1] != b' ':
        raise HttpError(400, "invalid method")
    sp2 = sp1 + 1
    while sp2 < eol and TARGET[<unsigned char>buf[sp2]]:
        sp2 += 1
    if sp2 == sp1 + 1 or sp2 >= eol or buf[sp2] != b' ':
        raise HttpError(400, "invalid request target")
    if buf[sp1 + 1] != b'/':
        raise HttpError(400, "only origin-form request targets are accepted")
    if (eol - sp2 - 1 != 8 or memcmp(buf + sp2 + 1, b"HTTP/", 5) != 0 or buf[sp2 + 7] != b'.'
            or not (b'0' <= buf[sp2 + 6] <= b'9') or not (b'0' <= buf[sp2 + 8] <= b'9')):
        raise HttpError(400, "invalid HTTP version")
    if buf[sp2 + 6] != b'1' or not (buf[sp2 + 8] == b'0' or buf[sp2 + 8] == b'1'):
        raise HttpError(505, "HTTP version not supported")
    head.minor = buf[sp2 + 8] - 48
    head.method = _known_method(buf + pos, sp1 - pos) or buf[pos:sp1]
    head.target = buf[sp1 + 1:sp2]
    query = <const char *>memchr(buf + sp1 + 1, b'?', sp2 - sp1 - 1)
    head.path = head.target if query == NULL else buf[sp1 + 1:query - buf]
    _parse_fields(head, buf, eol + 2, end, True, max_headers)
    if head.minor == 1 and head.host is None:
        raise HttpError(400, "missing Host header")
    if head.chunked and head.minor == 0:
        raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
    _apply_connection(head, head.minor == 1)
    return head



cpdef RequestHead request_from_fields(bytes method, bytes path, bytes authority, list fields,
                                      Py_ssize_t max_headers=100):
    """An HTTP/2 request (RFC 9113 8.3.1) as the exchange takes a head: its fields through
    the checks an HTTP/1.1 head's go through (``_take_field``), kept as the tuples they came
    in (``pairs``), nothing made text.  ``fields``: (lower-case name, value), pseudo-fields and Host
    taken out (``authority`` stands for both), Cookie fields joined."""
    cdef RequestHead head = RequestHead.__new__(RequestHead)
    cdef const char *p = PyBytes_AS_STRING(path)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(path), i
    cdef const char *query
    cdef list forwarded = []
    cdef Py_ssize_t size = PyBytes_GET_SIZE(method) + n + PyBytes_GET_SIZE(authority) + 20
    cdef FieldCount seen
    cdef bytes name, value
    memset(&seen, 0, sizeof(seen))
    head.minor = 1
    for i in range(PyBytes_GET_SIZE(method)):
        if not TOKEN[<unsigned char>PyBytes_AS_STRING(method)[i]]:
            raise HttpError(400, "invalid method")
    for i in range(n):
        if not TARGET[<unsigned char>p[i]]:
            raise HttpError(400, "invalid request target")
    if n == 0 or p[0] != b'/':
        raise HttpError(400, "only origin-form request targets are accepted")
    head.method = _known_method(PyBytes_AS_STRING(method), PyBytes_GET_SIZE(method)) or method
    head.target = path
    query = <const char *>memchr(p, b'?', n)
    head.path = path if query == NULL else path[:query - p]
    _take_field(head, b"host", 4, PyBytes_AS_STRING(authority), PyBytes_GET_SIZE(authority),
                True, max_headers, &seen)
    for field in fields:
        name, value = field
        if _take_field(head, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), PyBytes_AS_STRING(value),
                       PyBytes_GET_SIZE(value), True, max_headers, &seen):
            forwarded.append(field)         # the tuple as it came: nothing made per field
        size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4
    _end_fields(head, True, &seen)
    if head.chunked:                        # nghttp2 refuses it first (8.2.2)
        raise HttpError(400, "Transfer-Encoding in an HTTP/2 request")
    head.pairs = forwarded
    _apply_connection(head, True)           # only an extended CONNECT's "connection: upgrade"
    head.head_size = size
    return head


cpdef ResponseHead parse_response(bytes data, Py_ssize_t end, Py_ssize_t max_headers=100):
    """Parse the response head in ``data[:end]``; framing errors are 502 (bad gateway)."""
    cdef const char *buf = PyBytes_AS_STRING(data)
    cdef ResponseHead head = ResponseHead.__new__(ResponseHead)
    cdef Py_ssize_t eol
    cdef int status
    try:
        eol = _find_line_end(buf, 0, end)
        # "HTTP/1.x NNN reason"
        if (eol < 12 or memcmp(buf, b"HTTP/1.", 7) != 0 or not (b'0' <= buf[7] <= b'9')
                or buf[8] != b' ' or (eol > 12 and buf[12] != b' ')):
            raise HttpError(502, "invalid status line from upstream")
        if not (b'0' <= buf[9] <= b'9' and b'0' <= buf[10] <= b'9' and b'0' <= buf[11] <= b'9'):
            raise HttpError(502, "invalid status code from upstream")
        status = (buf[9] - 48) * 100 + (buf[10] - 48) * 10 + (buf[11] - 48)
        if status < 100:
            raise HttpError(502, "invalid status code from upstream")
        head.status = status
        head.minor = 1 if buf[7] == b'1' else 0
        if eol == 15 and buf[13] == b'O' and buf[14] == b'K':
            head.reason = _REASON_OK
        else:
            head.reason = buf[13:eol] if eol > 13 else b""
        _parse_fields(head, buf, eol + 2, end, False, max_headers)
    except HttpError as err:
        raise HttpError(502, f"upstream sent a malformed response: {err.reason}") from None
    _apply_connection(head, head.minor == 1)
    return head


# ---------------------------------------------------------------------------
# Body delimiting.  A BodyFramer is told how a body is framed and then fed the
# bytes that follow the head; it answers how many of them belong to the body.

cdef enum ChunkState:
    CH_SIZE_START, CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF,
    CH_TRAILER_START, CH_TRAILER_NAME, CH_TRAILER, CH_TRAILER_LF, CH_END_LF, CH_DONE

# BodyFramer.mode: C constants in http.pxd (cimported by the request path), the same
# values under these names for Python.
FRAMING_NONE = MODE_NONE
FRAMING_LENGTH = MODE_LENGTH
FRAMING_CHUNKED = MODE_CHUNKED
FRAMING_UNTIL_CLOSE = MODE_UNTIL_CLOSE
FRAMING_STREAM = MODE_STREAM


cdef class BodyFramer:
    """Tracks where a message body ends, validating chunked framing on the way."""

    def __init__(self, int mode=MODE_NONE, long long length=0, int error_status=400):
        self.reset(mode, length)
        self.error_status = error_status

    cpdef reset(self, int mode, long long length):
        self.mode = mode
        self.remaining = length
        self.state = CH_SIZE_START
        self.size_digits = 0
        self.received = 0
        self.payload = 0
        self.done = mode == MODE_NONE or (mode == MODE_LENGTH and length == 0)

    cpdef Py_ssize_t feed(self, bytes data, Py_ssize_t start) except -2:
        """Consume body bytes from ``data[start:]``; return the offset where the body ends there.

        The result equals ``len(data)`` while the body goes on; when it is less,
        or ``done`` became true, the rest belongs to the next message.
        """
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), take, end
        if self.done:
            return start
        if self.mode == MODE_LENGTH:
            take = n - start
            if take > self.remaining:
                take = <Py_ssize_t>self.remaining
            self.remaining -= take
            self.received += take
            self.payload += take
            if self.remaining == 0:
                self.done = True
            return start + take
        if self.mode == MODE_UNTIL_CLOSE or self.mode == MODE_STREAM:
            self.received += n - start
            self.payload += n - start
            return n
        end = self._feed_chunked(PyBytes_AS_STRING(data), start, n)
        self.received += end - start
        return end

    cdef Py_ssize_t _feed_chunked(self, const char *buf, Py_ssize_t pos, Py_ssize_t n) except -2:
        cdef unsigned char c, v
        cdef Py_ssize_t take
        while pos < n:
            c = buf[pos]
            if self.state == CH_DATA:
                take = n - pos
                if take > self.remaining:
                    take = <Py_ssize_t>self.remaining
                self.remaining -= take
                self.payload += take
                pos += take
                if self.remaining == 0:
                    self.state = CH_DATA_CR
                continue
            pos += 1
            if self.state == CH_SIZE_START or self.state == CH_SIZE:
                v = HEXVAL[c]
                if v != 255:
                    self.size_digits += 1
                    if self.size_digits > MAX_CHUNK_SIZE_DIGITS:
                        self._fail("chunk size too large")
                    self.remaining = self.remaining * 16 + v if self.state == CH_SIZE else v
                    self.state = CH_SIZE
                elif self.state == CH_SIZE_START:
                    self._fail("invalid chunk size")
                elif c == b';':
                    self.state = CH_EXT
                elif c == b'\r':
                    self.state = CH_SIZE_LF
                else:
                    self._fail("invalid chunk size")
            elif self.state == CH_EXT:
                # Extensions are passed through untouched, but may not hide line breaks or controls.
                if c == b'\r':
                    self.state = CH_SIZE_LF
                elif not FIELD_VALUE[c]:
                    self._fail("invalid chunk extension")
            elif self.state == CH_SIZE_LF:
                if c != b'\n':
                    self._fail("bare CR in chunk header")
                self.size_digits = 0
                self.state = CH_DATA if self.remaining > 0 else CH_TRAILER_START
            elif self.state == CH_DATA_CR:
                if c != b'\r':
                    self._fail("chunk data longer than its size")
                self.state = CH_DATA_LF
            elif self.state == CH_DATA_LF:
                if c != b'\n':
                    self._fail("chunk data not followed by CRLF")
                self.state = CH_SIZE_START
            elif self.state == CH_TRAILER_START:
                if c == b'\r':
                    self.state = CH_END_LF
                elif TOKEN[c]:
                    self.state = CH_TRAILER_NAME
                else:
                    self._fail("invalid trailer field")
            elif self.state == CH_TRAILER_NAME:
                # A token up to the colon: "X y" or "X : y" would be read otherwise upstream.
                if c == b':':
                    self.state = CH_TRAILER
                elif not TOKEN[c]:
                    self._fail("invalid trailer field")
            elif self.state == CH_TRAILER:
                if c == b'\r':
                    self.state = CH_TRAILER_LF
                elif not FIELD_VALUE[c]:
                    self._fail("invalid trailer field")
            elif self.state == CH_TRAILER_LF:
                if c != b'\n':
                    self._fail("bare CR in trailer")
                self.state = CH_TRAILER_START
            elif self.state == CH_END_LF:
                if c != b'\n':
                    self._fail("bare CR after last chunk")
                self.state = CH_DONE
                self.done = True
                return pos
        return pos

    cdef int _fail(self, str reason) except -1:
        raise HttpError(self.error_status, reason)


cpdef int response_framing(ResponseHead head, bytes request_method) except -1:
    """How the body of ``head`` is delimited, per RFC 9112 section 6.3."""
    cdef int status = head.status
    if request_method == b"HEAD" or status < 200 or status == 204 or status == 304:
        return MODE_NONE
    if head.chunked:
        return MODE_CHUNKED
    if head.content_length >= 0:
        return MODE_LENGTH
    if head.streamed:
        return MODE_STREAM
    return MODE_UNTIL_CLOSE


# ---------------------------------------------------------------------------
# Building heads.

cdef int _put_fields(MessageHead head) except -1:
    """The head's fields as forwarded: its ``field_lines``, or its (changed) field list."""
    cdef bytes name, value
    if head.field_lines is not None:
        return _put_bytes(head.field_lines)
    if head.pairs is not None:
        for name, value in head.pairs:
            _put_field(name, value)
        return 0
    for _, name, value in head._fields or ():
        _put_field(name, value)
    return 0


cdef inline int _put_field(bytes name, bytes value) except -1:
    _put_bytes(name)
    _put(b": ", 2)
    _put_bytes(value)
    return _put(b"\r\n", 2)


cdef int _put_trace_fields(RequestHead head) except -1:
    """The client's trace context, passed on unchanged (tracing off)."""
    if head.traceparent is not None:
        _put(b"traceparent: ", 13)
        _put_bytes(head.traceparent)
        _put(b"\r\n", 2)
    if head.tracestate is not None:
        _put(b"tracestate: ", 12)
        _put_bytes(head.tracestate)
        _put(b"\r\n", 2)
    return 0


cdef int _put_framing(MessageHead head, bint chunked) except -1:
    if chunked:
        _put(b"Transfer-Encoding: chunked\r\n", 28)
    elif head.content_length >= 0:
        _put(b"Content-Length: ", 16)
        _put_decimal(head.content_length)
        _put(b"\r\n", 2)
    return 0


cpdef bytes build_request_head(RequestHead head, bytes target, bytes host, bytes client_ip,
                               bytes request_id, bytes via, bint upgrade, bytes proto=b"http",
                               bytes real_ip=None, bytes trace_fields=None):
    """The head sent upstream: the client's fields minus hop-by-hop ones, plus proxy fields.

    ``client_ip`` is the peer, appended to X-Forwarded-For; ``real_ip`` (default: the peer)
    is the client address the gateway decided on (trusted proxies), sent as X-Real-IP.
    ``trace_fields``: the traceparent (and tracestate) lines of the gateway's span, when
    tracing; None passes on the client's own (kept aside by the parser).
    """
    _out_reset()
    _put_bytes(head.method)
    _put(b" ", 1)
    _put_bytes(target)
    _put(b" HTTP/1.1\r\nHost: ", 17)
    _put_bytes(host)
    _put(b"\r\n", 2)
    _put_fields(head)
    if trace_fields is not None:
        _put_bytes(trace_fields)
    elif head.traceparent is not None or head.tracestate is not None:
        _put_trace_fields(head)
    _put_framing(head, head.chunked or head.streamed)
    _put(b"X-Forwarded-For: ", 17)
    if head.forwarded_for is not None:
        _put_bytes(head.forwarded_for)
        _put(b", ", 2)
    _put_bytes(client_ip)
    _put(b"\r\nX-Forwarded-Proto: ", 21)
    _put_bytes(proto)
    _put(b"\r\nX-Forwarded-Host: ", 20)
    _put_bytes(head.host if head.host else host)
    _put(b"\r\nX-Real-IP: ", 13)
    _put_bytes(real_ip if real_ip is not None else client_ip)
    _put(b"\r\nX-Request-Id: ", 16)
    _put_bytes(request_id)
    _put(b"\r\nVia: ", 7)
    if head.via is not None:
        _put_bytes(head.via)
        _put(b", ", 2)
    _put_bytes(via)
    if upgrade:
        _put(b"\r\nConnection: upgrade\r\nUpgrade: ", 32)
        _put_bytes(head.upgrade)
    _put(b"\r\n\r\n", 4)
    return _out_take()


# Connection-specific fields are not sent in HTTP/2 (RFC 9113 8.2.2); Host is :authority.
CONNECTION_SPECIFIC = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
    b"te", b"host", b"trailer"))
cdef frozenset _CONNECTION_SPECIFIC = CONNECTION_SPECIFIC


cpdef list request_fields(RequestHead head, bytes scheme, bytes target, bytes host,
                          bytes client_ip, bytes request_id, bytes via, bytes proto=b"http",
                          bytes real_ip=None, bytes trace_fields=None):
    """The HTTP/2 fields of the request sent upstream: the fields ``build_request_head``
    writes as HTTP/1.1 text, as (lower-case name, value), pseudo-fields first and nothing
    connection-specific; ``te: trailers`` last (gRPC servers require it).  The two are held
    to the same fields by tests/test_http_fields.py."""
    cdef list fields = [(b":method", head.method), (b":scheme", scheme), (b":authority", host),
                        (b":path", target)]
    if head.pairs is not None:              # an HTTP/2 client's, as they came (none is
        fields += head.pairs                # connection-specific: request_from_fields)
    else:
        for lname, _, value in head.peek_fields():
            if lname not in _CONNECTION_SPECIFIC:
                fields.append((lname, value))
    if trace_fields is not None:
        for line in trace_fields.split(b"\r\n"):
            if line:
                name, _, value = line.partition(b": ")
                fields.append((name, value))
    else:
        if head.traceparent is not None:
            fields.append((b"traceparent", head.traceparent))
        if head.tracestate is not None:
            fields.append((b"tracestate", head.tracestate))
    if head.content_length >= 0:
        fields.append((b"content-length", decimal(head.content_length)))
    fields += (
        (b"x-forwarded-for", client_ip if head.forwarded_for is None
                             else head.forwarded_for + b", " + client_ip),
        (b"x-forwarded-proto", proto),
        (b"x-forwarded-host", head.host if head.host else host),
        (b"x-real-ip", real_ip if real_ip is not None else client_ip),
        (b"x-request-id", request_id),
        (b"via", via if head.via is None else head.via + b", " + via),
        (b"te", b"trailers"))
    return fields


cdef int _put_status_line(int status, bytes reason) except -1:
    cdef char line[13]
    if 100 <= status <= 999:
        memcpy(line, b"HTTP/1.1 ", 9)
        line[9] = <char>(48 + status // 100)
        line[10] = <char>(48 + status // 10 % 10)
        line[11] = <char>(48 + status % 10)
        line[12] = b' '
        _put(line, 13)
    else:
        _put_bytes(b"HTTP/1.1 %d " % status)
    _put_bytes(reason)
    return _put(b"\r\n", 2)


cpdef bytes build_response_head(ResponseHead head, int framing, bint keep_alive):
    """The head sent to the client.  ``keep_alive`` is the downstream decision."""
    _out_reset()
    _put_status_line(head.status, head.reason)
    _put_fields(head)
    _put_framing(head, framing == MODE_CHUNKED or framing == MODE_STREAM)
    if head.status == 101:
        _put(b"Connection: upgrade\r\nUpgrade: ", 30)
        _put_bytes(head.upgrade or b"")
        _put(b"\r\n\r\n", 4)
    elif keep_alive:
        _put(b"\r\n", 2)                    # HTTP/1.1 default; the client's version is 1.1
    else:
        _put(b"Connection: close\r\n\r\n", 21)
    return _out_take()


cpdef bytes build_interim_head(ResponseHead head):
    """A 1xx other than 101, forwarded as it came (minus hop-by-hop fields)."""
    _out_reset()
    _put_status_line(head.status, head.reason)
    _put_fields(head)
    _put(b"\r\n", 2)
    return _out_take()



_REASONS = {301: b"Moved Permanently", 302: b"Found", 303: b"See Other", 307: b"Temporary Redirect",
            308: b"Permanent Redirect", 400: b"Bad Request", 404: b"Not Found", 408: b"Request Timeout",
            413: b"Content Too Large", 414: b"URI Too Long", 421: b"Misdirected Request", 431: b"Request Header Fields Too Large",
            502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
            505: b"HTTP Version Not Supported", 500: b"Internal Server Error"}


cpdef bytes build_error_response(int status, str message, bytes request_id, bint keep_alive,
                                 bytes location=None, bint with_body=True, bytes extra_header=None):
    """A short text/plain answer the gateway makes itself; the body says which error it is.

    ``location`` (a redirect's target) must be a path the gateway made: visible ASCII only.
    ``with_body`` is false for an answer to HEAD: Content-Length says the size, no body
    follows (RFC 9110 9.3.2), or a keep-alive client would read it as the next response.
    ``extra_header``: more "Name: value" lines the gateway made, joined by CRLF.  An empty
    ``message``: no body (a CORS preflight's answer).
    """
    cdef bytes body = message.encode() + b"\n" if message else b""
    return b"".join((
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
        b"Content-Type: text/plain; charset=utf-8\r\n" if body else b"",
        b"Content-Length: ", str(len(body)).encode(),
        b"\r\nX-Request-Id: ", request_id or b"-",
        b"\r\nLocation: " + location if location is not None else b"",
        b"\r\n" + extra_header if extra_header is not None else b"",
        b"\r\n" if keep_alive else b"\r\nConnection: close\r\n",
        b"Server: gateway\r\n\r\n", body if with_body else b""))


# Not passed on from a chunked body's trailer section (RFC 9110 6.5.1, RFC 9113 8.2.2).
cdef frozenset HOP_BY_HOP_TRAILERS = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
    b"te", b"host", b"trailer", b"content-length"))


cdef class Dechunker:
    """The payload of a chunked body a BodyFramer validated already, and its trailer fields
    (lower-case names; the hop-by-hop ones are left out)."""

    def __cinit__(self):
        self.line = b""
        self.trailers = []

    cdef bytes feed(self, bytes data):
        cdef Py_ssize_t pos = 0, n = len(data), take, eol
        parts = []
        while pos < n and self.state != DC_DONE:
            if self.state == DC_DATA:
                take = min(<long long>(n - pos), self.left)
                parts.append(data[pos:pos + take])
                pos += take
                self.left -= take
                if self.left == 0:
                    self.state = DC_DATA_END
                continue
            eol = data.find(b"\n", pos)
            if eol < 0:
                self.line += data[pos:]
                break
            line = (self.line + data[pos:eol]).rstrip(b"\r")
            self.line = b""
            pos = eol + 1
            if self.state == DC_SIZE:
                self.left = int(line.split(b";", 1)[0], 16)
                self.state = DC_DATA if self.left else DC_TRAILERS
            elif self.state == DC_DATA_END:
                self.state = DC_SIZE
            elif line:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name not in HOP_BY_HOP_TRAILERS:
                    self.trailers.append((name, value.strip(b" \t")))
            else:
                self.state = DC_DONE
        self.done = self.state == DC_DONE
        return parts[0] if len(parts) == 1 else b"".join(parts)
