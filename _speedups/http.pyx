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
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memchr, memcmp

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
cdef unsigned char HEXVAL[256]

cdef void _init_tables():
    cdef int c
    for c in range(256):
        TOKEN[c] = (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c in b"!#$%&'*+-.^_`|~"
        FIELD_VALUE[c] = (0x21 <= c <= 0x7e) or c >= 0x80 or c == 0x20 or c == 0x09
        TARGET[c] = 0x21 <= c <= 0x7e
        HOST[c] = (48 <= c <= 58) or (65 <= c <= 90) or (97 <= c <= 122) or c in b"-._~!$&'()*+,;=%[]"
        LOWER[c] = c + 32 if 65 <= c <= 90 else c
        if 48 <= c <= 57:
            HEXVAL[c] = c - 48
        elif 97 <= c <= 102:
            HEXVAL[c] = c - 87
        elif 65 <= c <= 70:
            HEXVAL[c] = c - 55
        else:
            HEXVAL[c] = 255

_init_tables()

# Header names are compared after lower-casing; these are interned once.
cdef bytes H_HOST = b"host"
cdef bytes H_CONTENT_LENGTH = b"content-length"
cdef bytes H_TRANSFER_ENCODING = b"transfer-encoding"
cdef bytes H_CONNECTION = b"connection"
cdef bytes H_UPGRADE = b"upgrade"
cdef bytes H_EXPECT = b"expect"
cdef bytes H_REQUEST_ID = b"x-request-id"
cdef bytes H_FORWARDED_FOR = b"x-forwarded-for"
cdef bytes H_FORWARDED_PROTO = b"x-forwarded-proto"
cdef bytes H_FORWARDED_HOST = b"x-forwarded-host"
cdef bytes H_VIA = b"via"
cdef bytes H_REAL_IP = b"x-real-ip"
cdef bytes H_KEEP_ALIVE = b"keep-alive"
cdef bytes H_PROXY_CONNECTION = b"proxy-connection"
cdef bytes H_TE = b"te"
cdef bytes H_TRAILER = b"trailer"

# Hop-by-hop fields (RFC 9110 section 7.6.1) and fields the proxy sets itself.
cdef frozenset DROPPED_REQUEST = frozenset((
    H_CONTENT_LENGTH, H_TRANSFER_ENCODING, H_CONNECTION, H_UPGRADE, H_KEEP_ALIVE,
    H_PROXY_CONNECTION, H_TE, H_TRAILER, H_REQUEST_ID, H_FORWARDED_FOR,
    H_FORWARDED_PROTO, H_FORWARDED_HOST, H_VIA, H_HOST, H_REAL_IP))
cdef frozenset DROPPED_RESPONSE = frozenset((
    H_CONTENT_LENGTH, H_TRANSFER_ENCODING, H_CONNECTION, H_UPGRADE, H_KEEP_ALIVE,
    H_PROXY_CONNECTION, H_TE, H_TRAILER))

# Common field names, as sent and in lower case: parsing reuses these objects instead of
# making two bytes objects per field (the name and its lower case), and the lookups of
# ``dropped`` hash each once.  Matched byte for byte, so what is forwarded is unchanged.
cdef list _KNOWN_BY_LENGTH = [() for _ in range(33)]   # [length] -> ((as sent, lower case), ...)


cdef void _init_known_names():
    interned = {h: h for h in DROPPED_REQUEST | {H_EXPECT}}
    for name in (b"Host", b"User-Agent", b"Accept", b"Accept-Encoding", b"Accept-Language",
                 b"Connection", b"Content-Length", b"Content-Type", b"Transfer-Encoding",
                 b"Cache-Control", b"Cookie", b"Set-Cookie", b"Authorization", b"Date", b"Server",
                 b"Last-Modified", b"ETag", b"Expires", b"Vary", b"Location", b"Content-Encoding",
                 b"Accept-Ranges", b"Referer", b"Origin", b"Keep-Alive", b"Upgrade", b"Expect",
                 b"X-Request-Id", b"X-Forwarded-For", b"X-Real-IP", b"Via", b"Pragma",
                 b"If-None-Match", b"If-Modified-Since", b"Content-Range", b"Range", b"Age"):
        lname = interned.get(name.lower(), name.lower())
        _KNOWN_BY_LENGTH[len(name)] += ((name, lname), (lname, lname))

_init_known_names()

# Methods and the reason phrase of nearly every response, reused the same way.
cdef tuple _KNOWN_METHODS = (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")
cdef bytes _REASON_OK = b"OK"


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


cdef dict _METHODS = {}             # interned method bytes -> str, filled lazily
cdef frozenset IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


cdef class MessageHead:
    """Fields common to requests and responses, after the head is parsed."""

    def __cinit__(self):
        self.headers = []
        self.content_length = -1
        self.extra_hop = None


cdef class RequestHead(MessageHead):
    """A parsed request head.  ``headers`` excludes hop-by-hop and proxy-set fields."""

    @property
    def idempotent(self):
        return self.method in IDEMPOTENT

    def header(self, bytes lname):
        """The value of the first field named ``lname`` (lower-case), or None."""
        for name, _, value in self.headers:
            if name == lname:
                return value
        return None


cdef class ResponseHead(MessageHead):
    """A parsed response head.  ``headers`` excludes hop-by-hop fields."""
    pass


cdef inline Py_ssize_t _find_line_end(const char *buf, Py_ssize_t pos, Py_ssize_t end) except -2:
    """Index of the CR of the next CR LF at or after ``pos``; a bare LF or CR is an error."""
    cdef const char *lf = <const char *>memchr(buf + pos, b'\n', end - pos)
    if lf == NULL:
        raise HttpError(400, "unterminated header line")
    cdef Py_ssize_t i = lf - buf
    if i == pos or buf[i - 1] != b'\r':
        raise HttpError(400, "bare LF in head")
    cdef const char *cr = <const char *>memchr(buf + pos, b'\r', i - 1 - pos)
    if cr != NULL:
        raise HttpError(400, "bare CR in head")
    return i - 1


cpdef Py_ssize_t find_head_end(bytes data, Py_ssize_t start) except -2:
    """Offset just past the blank line that ends a head, searching from ``start``; -1 if none yet.

    Also stops at a bare "\\n\\n" so that a head with bare LF line ends is
    refused at once instead of waiting for a CR LF CR LF that never comes.
    """
    cdef Py_ssize_t crlf = data.find(b"\r\n\r\n", start)
    # Only up to the CR LF CR LF: the bytes after it are the body (a 16 KiB response
    # body scanned here cost a third of the gateway's CPU in a profile).
    cdef Py_ssize_t lflf = data.find(b"\n\n", start, crlf if crlf >= 0 else PyBytes_GET_SIZE(data))
    if lflf >= 0:
        return lflf + 2
    return crlf + 4 if crlf >= 0 else -1


cdef long long _parse_content_length(const char *p, Py_ssize_t n) except -2:
    cdef long long value = 0
    cdef Py_ssize_t i
    if n == 0 or n > 18:
        raise HttpError(400, "invalid Content-Length")
    for i in range(n):
        if not (b'0' <= p[i] <= b'9'):
            raise HttpError(400, "invalid Content-Length")
        value = value * 10 + (p[i] - 48)
    return value


cdef bint _token_in_list(bytes value, bytes token):
    """Case-insensitive membership of ``token`` in a comma-separated field value."""
    for item in value.lower().split(b","):
        if item.strip(b" \t") == token:
            return True
    return False


cdef Py_ssize_t _parse_fields(MessageHead head, const char *buf, Py_ssize_t pos,
                              Py_ssize_t end, bint is_request, Py_ssize_t max_headers) except -2:
    """Parse header lines from ``pos`` up to the blank line; return the offset after it."""
    cdef Py_ssize_t eol, colon, vstart, vend, i, count = 0
    cdef unsigned char c
    cdef bytes lname, name, value
    cdef tuple known
    cdef int host_count = 0, cl_count = 0
    cdef bint has_te = False
    cdef frozenset dropped = DROPPED_REQUEST if is_request else DROPPED_RESPONSE
    cdef RequestHead req = head if is_request else None
    while True:
        eol = _find_line_end(buf, pos, end)
        if eol == pos:                      # the blank line
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
        for i in range(vstart, vend):
            if not FIELD_VALUE[<unsigned char>buf[i]]:
                raise HttpError(400, "invalid character in header value")
        count += 1
        if count > max_headers:
            raise HttpError(431, "too many header fields")
        known = _known_name(buf + pos, colon - pos)
        if known is not None:
            name = <bytes>known[0]
            lname = <bytes>known[1]
        else:
            name = buf[pos:colon]
            lname = name.lower()
        pos = eol + 2
        if lname not in dropped:
            head.headers.append((lname, name, buf[vstart:vend]))
            continue
        if lname is H_CONTENT_LENGTH or lname == H_CONTENT_LENGTH:
            cl_count += 1
            if cl_count > 1:
                raise HttpError(400, "duplicate Content-Length")
            head.content_length = _parse_content_length(buf + vstart, vend - vstart)
            continue                        # read in place: no bytes object for the value
        value = buf[vstart:vend]
        if lname == H_TRANSFER_ENCODING:
            if has_te or value.lower() != b"chunked":
                raise HttpError(400 if is_request else 502, "unsupported Transfer-Encoding")
            has_te = True
            head.chunked = True
        elif lname == H_CONNECTION:
            head.connection = value
        elif lname == H_UPGRADE:
            head.upgrade = value
        elif lname == H_KEEP_ALIVE or lname == H_PROXY_CONNECTION or lname == H_TE or lname == H_TRAILER:
            pass
        elif req is not None:
            if lname == H_HOST:
                host_count += 1
                for i in range(vstart, vend):
                    if not HOST[<unsigned char>buf[i]]:
                        raise HttpError(400, "invalid Host header")
                req.host = value
            elif lname == H_REQUEST_ID:
                req.request_id = value
            elif lname == H_FORWARDED_FOR:
                req.forwarded_for = value if req.forwarded_for is None else req.forwarded_for + b", " + value
            elif lname == H_VIA:
                req.via = value if req.via is None else req.via + b", " + value
            # X-Forwarded-Proto/-Host and X-Real-IP from the client are not trusted: the
            # proxy sets them.
    if has_te and cl_count:
        raise HttpError(400, "both Content-Length and Transfer-Encoding")
    if is_request and host_count > 1:
        raise HttpError(400, "duplicate Host")
    head.head_size = pos
    return pos


cdef void _apply_connection(MessageHead head, bint http11):
    """Keep-alive, upgrade and extra hop-by-hop names from the Connection field."""
    cdef bytes conn = head.connection
    head.keep_alive = http11
    if conn is None:
        if head.upgrade is not None:
            head.upgrade = None             # Upgrade without "Connection: upgrade" is ignored
        return
    cdef list extra = []
    for item in conn.lower().split(b","):
        token = item.strip(b" \t")
        if token == b"close":
            head.keep_alive = False
        elif token == b"keep-alive":
            head.keep_alive = head.keep_alive or not http11
        elif token and token != b"upgrade":
            extra.append(token)
    if head.upgrade is not None and not _token_in_list(conn, b"upgrade"):
        head.upgrade = None
    if extra:
        head.extra_hop = frozenset(extra)
        head.headers = [h for h in head.headers if h[0] not in head.extra_hop]


cpdef RequestHead parse_request(bytes data, Py_ssize_t end, Py_ssize_t max_headers=100):
    """Parse the request head in ``data[:end]`` (``end`` from find_head_end)."""
    cdef const char *buf = PyBytes_AS_STRING(data)
    cdef Py_ssize_t pos = 0, sp1, sp2, eol, i
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
    i = head.target.find(b"?")
    head.path = head.target if i < 0 else head.target[:i]
    _parse_fields(head, buf, eol + 2, end, True, max_headers)
    if head.minor == 1 and head.host is None:
        raise HttpError(400, "missing Host header")
    if head.chunked and head.minor == 0:
        raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
    _apply_connection(head, head.minor == 1)
    head.expect_continue = False
    if head.minor == 1:
        for lname, _, value in head.headers:
            if lname == H_EXPECT:
                head.expect_continue = value.lower() == b"100-continue"
                break
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
        if self.mode == MODE_UNTIL_CLOSE:
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
    return MODE_UNTIL_CLOSE


# ---------------------------------------------------------------------------
# Building heads.

cdef bytes CRLF = b"\r\n"
cdef bytes COLON_SP = b": "

cdef list _DECIMALS = [None] * 4096     # Content-Length values as bytes, made once each


cdef bytes _decimal(long long n):
    """``str(n).encode()``; no new object for the small values most bodies have."""
    cdef bytes out
    if 0 <= n < 4096:
        out = <bytes>_DECIMALS[n] if _DECIMALS[n] is not None else None
        if out is None:
            out = _DECIMALS[n] = str(n).encode()
        return out
    return str(n).encode()


cpdef bytes build_request_head(RequestHead head, bytes target, bytes host, bytes client_ip,
                               bytes request_id, bytes via, bint upgrade, bytes proto=b"http",
                               bytes real_ip=None):
    """The head sent upstream: the client's fields minus hop-by-hop ones, plus proxy fields.

    ``client_ip`` is the peer, appended to X-Forwarded-For; ``real_ip`` (default: the peer)
    is the client address the gateway decided on (trusted proxies), sent as X-Real-IP.
    """
    cdef list parts = [head.method, b" ", target, b" HTTP/1.1\r\nHost: ", host, CRLF]
    for _, name, value in head.headers:
        parts += (name, COLON_SP, value, CRLF)
    if head.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif head.content_length >= 0:
        parts += (b"Content-Length: ", _decimal(head.content_length), CRLF)
    parts += (b"X-Forwarded-For: ", client_ip if head.forwarded_for is None
              else head.forwarded_for + b", " + client_ip,
              b"\r\nX-Forwarded-Proto: ", proto, b"\r\nX-Forwarded-Host: ", head.host or host,
              b"\r\nX-Real-IP: ", real_ip if real_ip is not None else client_ip,
              b"\r\nX-Request-Id: ", request_id,
              b"\r\nVia: ", via if head.via is None else head.via + b", " + via, CRLF)
    if upgrade:
        parts += (b"Connection: upgrade\r\nUpgrade: ", head.upgrade, b"\r\n\r\n")
    else:
        parts.append(b"\r\n")
    return b"".join(parts)


cdef dict _STATUS_LINES = {}

cdef bytes _status_line(int status, bytes reason):
    cdef bytes line = _STATUS_LINES.get((status, reason))
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(_STATUS_LINES) < 1000:
            _STATUS_LINES[(status, reason)] = line
    return line


cpdef bytes build_response_head(ResponseHead head, int framing, bint keep_alive):
    """The head sent to the client.  ``keep_alive`` is the downstream decision."""
    cdef list parts = [_status_line(head.status, head.reason)]
    for _, name, value in head.headers:
        parts += (name, COLON_SP, value, CRLF)
    if framing == MODE_CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif head.content_length >= 0:
        parts += (b"Content-Length: ", _decimal(head.content_length), CRLF)
    if head.status == 101:
        parts += (b"Connection: upgrade\r\nUpgrade: ", head.upgrade or b"", b"\r\n\r\n")
    elif keep_alive:
        parts.append(b"\r\n")               # HTTP/1.1 default; the client's version is 1.1
    else:
        parts.append(b"Connection: close\r\n\r\n")
    return b"".join(parts)


cpdef bytes build_interim_head(ResponseHead head):
    """A 1xx other than 101, forwarded as it came (minus hop-by-hop fields)."""
    cdef list parts = [_status_line(head.status, head.reason)]
    for _, name, value in head.headers:
        parts += (name, COLON_SP, value, CRLF)
    parts.append(CRLF)
    return b"".join(parts)


_REASONS = {301: b"Moved Permanently", 302: b"Found", 303: b"See Other", 307: b"Temporary Redirect",
            308: b"Permanent Redirect", 400: b"Bad Request", 404: b"Not Found", 408: b"Request Timeout",
            413: b"Content Too Large", 414: b"URI Too Long", 431: b"Request Header Fields Too Large",
            502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
            505: b"HTTP Version Not Supported", 500: b"Internal Server Error"}


cpdef bytes build_error_response(int status, str message, bytes request_id, bint keep_alive,
                                 bytes location=None, bint with_body=True, bytes extra_header=None):
    """A short text/plain answer the gateway makes itself; the body says which error it is.

    ``location`` (a redirect's target) must be a path the gateway made: visible ASCII only.
    ``with_body`` is false for an answer to HEAD: Content-Length says the size, no body
    follows (RFC 9110 9.3.2), or a keep-alive client would read it as the next response.
    ``extra_header``: one more "Name: value" line the gateway made (no CR/LF in it).
    """
    cdef bytes body = message.encode() + b"\n"
    return b"".join((
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: ", str(len(body)).encode(),
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
