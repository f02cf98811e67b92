# cython: freethreading_compatible = False
"""HTTP/2 framing: nghttp2 (the library nginx, curl and Apache use) behind a small session type.

nghttp2 does the frame layer, HPACK, stream states, flow-control accounting and the
protocol's validation (pseudo-headers, content-length, the rapid-reset and CONTINUATION
limits); this module feeds it bytes and hands its events to a handler object:

    h2_headers(stream_id, headers, end_stream)   a request (server) or response (client) head
    h2_data(stream_id, data)                     a body chunk
    h2_end(stream_id)                            the peer ended the stream (END_STREAM)
    h2_trailers(stream_id, headers)              trailers (END_STREAM follows as h2_end)
    h2_close(stream_id, error_code)              the stream is gone (0: cleanly)
    h2_drained(stream_id)                        a stream's queued output fell to empty after
                                                 ``send_data`` reported it over the limit
    h2_too_large(stream_id)                      a request head (server) or response head
                                                 (client) past max_header_list_size once
                                                 decoded: answer it 431 (server), reset it
                                                 (client); its fields were not kept

``headers`` is a list of (name, value) bytes pairs, pseudo-headers first, as received.
Windows are not opened by themselves: the handler calls ``consume(stream_id, n)`` once it
has passed n body bytes on (an upstream took them), so a slow reader on one side stalls
the writer on the other instead of the gateway buffering a whole body.

Output is pulled: after ``receive`` or any ``submit_*``/``send_*``, ``output()`` returns
the bytes to write (nghttp2_session_mem_send), or b"" when there is nothing.
"""
cimport cython
from cpython.bytearray cimport PyByteArray_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcmp, memcpy

from time import monotonic

cdef extern from "nghttp2/nghttp2.h":
    ctypedef struct nghttp2_session_callbacks:
        pass
    ctypedef struct nghttp2_option:
        pass

    ctypedef struct nghttp2_frame_hd:
        size_t length
        int32_t stream_id
        uint8_t type
        uint8_t flags

    ctypedef enum nghttp2_headers_category:
        NGHTTP2_HCAT_REQUEST
        NGHTTP2_HCAT_RESPONSE
        NGHTTP2_HCAT_PUSH_RESPONSE
        NGHTTP2_HCAT_HEADERS

    ctypedef struct nghttp2_headers:
        nghttp2_frame_hd hd
        nghttp2_headers_category cat

    ctypedef union nghttp2_frame:
        nghttp2_frame_hd hd
        nghttp2_headers headers

    ctypedef struct nghttp2_nv:
        uint8_t *name
        uint8_t *value
        size_t namelen
        size_t valuelen
        uint8_t flags

    ctypedef struct nghttp2_settings_entry:
        int32_t settings_id
        uint32_t value

    ctypedef union nghttp2_data_source:
        int fd
        void *ptr

    ctypedef ssize_t (*nghttp2_data_source_read_callback)(
        nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
        uint32_t *data_flags, nghttp2_data_source *source, void *user_data) noexcept

    ctypedef struct nghttp2_data_provider:
        nghttp2_data_source source
        nghttp2_data_source_read_callback read_callback

    enum:
        NGHTTP2_DATA = 0
        NGHTTP2_HEADERS = 1
        NGHTTP2_RST_STREAM = 3
        NGHTTP2_FLAG_NONE = 0
        NGHTTP2_FLAG_END_STREAM = 1
        NGHTTP2_DATA_FLAG_EOF = 1
        NGHTTP2_DATA_FLAG_NO_END_STREAM = 2
        NGHTTP2_NV_FLAG_NONE = 0
        NGHTTP2_NV_FLAG_NO_INDEX = 1
        NGHTTP2_NV_FLAG_NO_COPY_NAME = 2
        NGHTTP2_NV_FLAG_NO_COPY_VALUE = 4
        NGHTTP2_ERR_DEFERRED = -508
        NGHTTP2_ERR_CALLBACK_FAILURE = -902
        NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE = -521
        NGHTTP2_ERR_FLOODED = -904
        NGHTTP2_ERR_TOO_MANY_CONTINUATIONS = -905
        NGHTTP2_SETTINGS_HEADER_TABLE_SIZE = 1
        NGHTTP2_SETTINGS_ENABLE_PUSH = 2
        NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS = 3
        NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE = 4
        NGHTTP2_SETTINGS_MAX_FRAME_SIZE = 5
        NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE = 6
        NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL = 8

    int nghttp2_session_callbacks_new(nghttp2_session_callbacks **callbacks_ptr)
    void nghttp2_session_callbacks_del(nghttp2_session_callbacks *callbacks)
    void nghttp2_session_callbacks_set_on_begin_headers_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame *, void *) noexcept)
    void nghttp2_session_callbacks_set_on_begin_frame_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame_hd *, void *) noexcept)
    void nghttp2_session_callbacks_set_on_header_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame *, const uint8_t *, size_t,
                  const uint8_t *, size_t, uint8_t, void *) noexcept)
    void nghttp2_session_callbacks_set_on_frame_recv_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame *, void *) noexcept)
    void nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, uint8_t, int32_t, const uint8_t *, size_t, void *) noexcept)
    void nghttp2_session_callbacks_set_on_stream_close_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, int32_t, uint32_t, void *) noexcept)

    int nghttp2_option_new(nghttp2_option **option_ptr)
    void nghttp2_option_del(nghttp2_option *option)
    void nghttp2_option_set_no_auto_window_update(nghttp2_option *option, int val)
    void nghttp2_option_set_max_settings(nghttp2_option *option, size_t val)
    void nghttp2_option_set_stream_reset_rate_limit(nghttp2_option *option, uint64_t burst,
                                                    uint64_t rate)
    void nghttp2_option_set_max_continuations(nghttp2_option *option, size_t val)
    void nghttp2_option_set_max_deflate_dynamic_table_size(nghttp2_option *option, size_t val)
    void nghttp2_option_set_max_outbound_ack(nghttp2_option *option, size_t val)

    int nghttp2_session_server_new2(nghttp2_session **session_ptr,
                                    const nghttp2_session_callbacks *callbacks,
                                    void *user_data, const nghttp2_option *option)
    int nghttp2_session_client_new2(nghttp2_session **session_ptr,
                                    const nghttp2_session_callbacks *callbacks,
                                    void *user_data, const nghttp2_option *option)
    void nghttp2_session_del(nghttp2_session *session)
    ssize_t nghttp2_session_mem_recv(nghttp2_session *session, const uint8_t *data, size_t n)
    ssize_t nghttp2_session_mem_send(nghttp2_session *session, const uint8_t **data_ptr)
    int nghttp2_session_want_read(nghttp2_session *session)
    int nghttp2_session_want_write(nghttp2_session *session)
    int nghttp2_session_consume(nghttp2_session *session, int32_t stream_id, size_t size)
    int nghttp2_session_resume_data(nghttp2_session *session, int32_t stream_id)
    int32_t nghttp2_session_get_last_proc_stream_id(nghttp2_session *session)
    int nghttp2_submit_settings(nghttp2_session *session, uint8_t flags,
                                const nghttp2_settings_entry *iv, size_t niv)
    int nghttp2_submit_response(nghttp2_session *session, int32_t stream_id,
                                const nghttp2_nv *nva, size_t nvlen,
                                const nghttp2_data_provider *data_prd)
    int32_t nghttp2_submit_request(nghttp2_session *session, const void *pri_spec,
                                   const nghttp2_nv *nva, size_t nvlen,
                                   const nghttp2_data_provider *data_prd, void *stream_user_data)
    int nghttp2_submit_trailer(nghttp2_session *session, int32_t stream_id,
                               const nghttp2_nv *nva, size_t nvlen)
    int32_t nghttp2_submit_headers(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                                   const void *pri_spec, const nghttp2_nv *nva, size_t nvlen,
                                   void *stream_user_data)
    int nghttp2_submit_rst_stream(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                                  uint32_t error_code)
    int nghttp2_submit_goaway(nghttp2_session *session, uint8_t flags, int32_t last_stream_id,
                              uint32_t error_code, const uint8_t *opaque_data, size_t n)
    const char *nghttp2_strerror(int lib_error_code)


NO_ERROR = 0
PROTOCOL_ERROR = 1
INTERNAL_ERROR = 2
REFUSED_STREAM = 7
CANCEL = 8
CONNECT_ERROR = 10          # a tunnel's TCP connection failed (RFC 9113 8.5)
ENHANCE_YOUR_CALM = 11

# A server's nghttp2 takes this many streams past SETTINGS_MAX_CONCURRENT_STREAMS before its own
# check: nghttp2 answers a stream over its limit with a connection error (GOAWAY PROTOCOL_ERROR:
# every stream in flight is lost), where RFC 9113 §5.1.2 allows a stream error that clients
# retry.  So the peer is told the limit, nghttp2 enforces the limit plus this, and the handler
# refuses the streams in between (REFUSED_STREAM).
cdef uint32_t STREAMS_PAST_LIMIT = 100

cdef double RESET_BURST = 1000     # the peer's stream resets allowed at once (nghttp2's default) ...
cdef double RESET_RATE = 33        # ... and a second after that


class H2Error(Exception):
    """nghttp2 refused the peer's bytes (a connection error: answer GOAWAY, then close)."""


@cython.no_gc                  # bytes, a bytearray, lists of bytes tuples
@cython.freelist(16)
cdef class _Outgoing:
    """A stream's queued body bytes, read out by nghttp2 as its flow-control window allows."""
    cdef bytearray buf
    cdef Py_ssize_t offset
    cdef bint eof
    cdef bint over_limit        # send_data reported the queue over the limit: h2_drained owed
    cdef list trailers
    # The head's fields: nghttp2 reads them uncopied until the stream closes (_fill_nv)
    cdef list head_fields
    cdef bytes head_lines

    def __cinit__(self):
        self.buf = PyByteArray_FromStringAndSize(NULL, 0)     # no Python call: one per stream


@cython.no_gc
@cython.freelist(4)
cdef class _Head:
    """A header block being received, and its size as the limit counts it (RFC 9113 §6.5.2)."""
    cdef list headers
    cdef Py_ssize_t size
    cdef bint too_large         # a server's request head past the limit: no fields kept

    def __cinit__(self):
        self.headers = []


cdef class H2Handler:
    """Where a session's events go (the module's docstring lists them), as C calls: the
    gateway's own handlers subclass this; any other object is wrapped (``_PythonHandler``)."""

    cdef void h2_headers(self, int32_t stream_id, list headers, bint end_stream) except *:
        pass

    cdef void h2_data(self, int32_t stream_id, bytes data) except *:
        pass

    cdef void h2_end(self, int32_t stream_id) except *:
        pass

    cdef void h2_trailers(self, int32_t stream_id, list headers) except *:
        pass

    cdef void h2_close(self, int32_t stream_id, uint32_t error_code) except *:
        pass

    cdef void h2_drained(self, int32_t stream_id) except *:
        pass

    cdef void h2_too_large(self, int32_t stream_id) except *:
        pass


cdef class _PythonHandler(H2Handler):
    """A Python object's methods of the same names (the health probe's, tests')."""
    cdef object target

    def __cinit__(self, target):
        self.target = target

    cdef void h2_headers(self, int32_t stream_id, list headers, bint end_stream) except *:
        self.target.h2_headers(stream_id, headers, end_stream)

    cdef void h2_data(self, int32_t stream_id, bytes data) except *:
        self.target.h2_data(stream_id, data)

    cdef void h2_end(self, int32_t stream_id) except *:
        self.target.h2_end(stream_id)

    cdef void h2_trailers(self, int32_t stream_id, list headers) except *:
        self.target.h2_trailers(stream_id, headers)

    cdef void h2_close(self, int32_t stream_id, uint32_t error_code) except *:
        self.target.h2_close(stream_id, error_code)

    cdef void h2_drained(self, int32_t stream_id) except *:
        self.target.h2_drained(stream_id)

    cdef void h2_too_large(self, int32_t stream_id) except *:
        self.target.h2_too_large(stream_id)


cdef class H2Session:
    """One HTTP/2 connection, server or client side, without I/O of its own."""

    def __cinit__(self, handler, bint server=True, *, int max_concurrent_streams=100,
                  int initial_window_size=65535, int max_header_list_size=65536,
                  Py_ssize_t queue_limit=65536, bint connect_protocol=False):
        cdef nghttp2_session_callbacks *cbs
        cdef nghttp2_option *opt
        cdef int rc
        self.handler = handler if isinstance(handler, H2Handler) else _PythonHandler(handler)
        self.server = server
        self.outgoing = {}
        self.queue_limit = queue_limit
        self.max_header_list_size = max_header_list_size
        self.reset_tokens, self.reset_refilled = RESET_BURST, monotonic()
        nghttp2_session_callbacks_new(&cbs)
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, _on_begin_headers)
        if server:
            self.last_client_stream, self.skipped = -1, []
            nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, _on_begin_frame)
        nghttp2_session_callbacks_set_on_header_callback(cbs, _on_header)
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, _on_frame_recv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, _on_data_chunk)
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, _on_stream_close)
        nghttp2_option_new(&opt)
        nghttp2_option_set_no_auto_window_update(opt, 1)
        nghttp2_option_set_max_settings(opt, 32)                # SETTINGS flood
        nghttp2_option_set_max_outbound_ack(opt, 1000)          # PING/SETTINGS ack flood
        nghttp2_option_set_stream_reset_rate_limit(opt, <uint64_t>RESET_BURST, <uint64_t>RESET_RATE)
        nghttp2_option_set_max_continuations(opt, 8)            # CONTINUATION flood
        nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096)
        if server:
            rc = nghttp2_session_server_new2(&self.session, cbs, <void *>self, opt)
        else:
            rc = nghttp2_session_client_new2(&self.session, cbs, <void *>self, opt)
        nghttp2_option_del(opt)
        nghttp2_session_callbacks_del(cbs)
        if rc != 0:
            raise MemoryError(nghttp2_strerror(rc).decode())
        cdef nghttp2_settings_entry iv[5]
        cdef size_t niv = 4
        cdef uint32_t enforced_streams = max_concurrent_streams
        if server:
            self.advertised_streams = max_concurrent_streams
            enforced_streams += STREAMS_PAST_LIMIT
        iv[0].settings_id, iv[0].value = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, enforced_streams
        iv[1].settings_id, iv[1].value = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, initial_window_size
        iv[2].settings_id, iv[2].value = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, max_header_list_size
        iv[3].settings_id, iv[3].value = NGHTTP2_SETTINGS_ENABLE_PUSH, 0
        if server and connect_protocol:
            # RFC 8441: the client may open extended CONNECT streams (":protocol", for
            # WebSocket); nghttp2 accepts the pseudo-header from here on, before the ACK.
            iv[4].settings_id, iv[4].value = NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1
            niv = 5
        _check(nghttp2_submit_settings(self.session, NGHTTP2_FLAG_NONE, iv, niv))

    def __dealloc__(self):
        if self.session is not NULL:
            nghttp2_session_del(self.session)

    # -- input ---------------------------------------------------------------------

    cpdef receive(self, data):
        """Feed the peer's bytes; the handler's methods run meanwhile."""
        cdef ssize_t n = 0
        cdef Py_buffer view
        if type(data) is bytes:             # what transports deliver: no buffer view to make
            if PyBytes_GET_SIZE(data):
                n = nghttp2_session_mem_recv(self.session, <const uint8_t *>PyBytes_AS_STRING(data),
                                             PyBytes_GET_SIZE(data))
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                if view.len:
                    n = nghttp2_session_mem_recv(self.session, <const uint8_t *>view.buf, view.len)
            finally:
                PyBuffer_Release(&view)
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        if n < 0:
            # nghttp2 sends no GOAWAY after a fatal error of its own (a flood, too many
            # CONTINUATION frames, a bad preface): this side says why before closing.
            self._go_away(ENHANCE_YOUR_CALM if n == NGHTTP2_ERR_FLOODED or n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
                          else PROTOCOL_ERROR, nghttp2_strerror(<int>n).decode())
            raise H2Error(self.going_away)
        if self.going_away:
            raise H2Error(self.going_away)

    cpdef consume(self, int32_t stream_id, size_t n):
        """n body bytes of the stream were passed on: open the windows by that much."""
        if n:
            nghttp2_session_consume(self.session, stream_id, n)

    # -- output --------------------------------------------------------------------

    cpdef bytes output(self):
        """What to write to the peer now (b"": nothing): nghttp2's frames, gathered in one
        buffer (each chunk it hands out is valid until the next call) and made one bytes.
        The module's buffer, unless another session's output() is gathering in it: a
        callback of that one (a stream drained, its upstream resumed) may flush this one."""
        global _frames_busy
        cdef const uint8_t *chunk
        cdef ssize_t n = nghttp2_session_mem_send(self.session, &chunk)
        cdef Frames own
        cdef Frames *frames = &own
        if n <= 0:
            self._raise_pending(n)
            return b""
        own.data, own.size, own.cap = NULL, 0, 0
        if not _frames_busy:
            _frames_busy, frames = True, &_frames
            _frames.size = 0
        try:
            while n > 0:
                _frames_add(frames, chunk, n)
                if self.advertised_streams:
                    self._advertise_streams(frames.data + frames.size - n, n)
                n = nghttp2_session_mem_send(self.session, &chunk)
            self._raise_pending(n)
            return PyBytes_FromStringAndSize(frames.data, frames.size)
        finally:
            if frames == &_frames:
                _frames_busy = False
            else:
                PyMem_Free(own.data)

    cdef void _advertise_streams(self, char *frame, Py_ssize_t n):
        """The server's first frame out, its SETTINGS (MAX_CONCURRENT_STREAMS the first entry),
        given the limit the peer is told in place of nghttp2's (see STREAMS_PAST_LIMIT)."""
        cdef uint32_t limit = self.advertised_streams
        cdef int i
        self.advertised_streams = 0
        if n < 15 or frame[3] != 4 or frame[9] != 0 or frame[10] != 3:
            return
        for i in range(4):
            frame[11 + i] = (limit >> (24 - 8 * i)) & 0xFF

    cdef object key(self, int32_t stream_id):
        """``stream_id`` as the int the maps by stream id are keyed by (see h2.pxd)."""
        if stream_id != self.key_id or self.key_int is None:
            self.key_id, self.key_int = stream_id, stream_id
        return self.key_int

    cdef _raise_pending(self, ssize_t rc):
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        if rc < 0:
            raise H2Error(nghttp2_strerror(<int>rc).decode())

    cpdef submit_response(self, int32_t stream_id, list headers, bint end_stream=False,
                          bytes lines=None):
        """``headers`` [(name, value)], then the fields of ``lines`` ("Name: value\\r\\n" each,
        as an HTTP/1.1 head's field lines are kept): a response passed on unchanged makes no
        Python object per field.  Neither may change afterwards: with a body to follow,
        nghttp2 reads them in place until the stream closes (names not in lower case it
        copies, lowered)."""
        _check(self._submit_head(stream_id, headers, lines, end_stream))

    cpdef int32_t submit_request(self, list headers, bint end_stream=False) except? -1:
        """Open a stream (client side); its id.  ``headers`` may not change afterwards (as
        ``submit_response``'s)."""
        cdef int32_t stream_id = self._submit_head(-1, headers, None, end_stream)
        _check(stream_id)
        return stream_id

    cdef int32_t _submit_head(self, int32_t stream_id, list headers, bytes lines,
                              bint end_stream) except? -1:
        cdef Py_ssize_t count = len(headers) + (_count_lines(lines) if lines else 0)
        cdef nghttp2_nv *nva = <nghttp2_nv *>malloc(max(count, 1) * sizeof(nghttp2_nv))
        count = len(headers)
        cdef nghttp2_data_provider provider
        cdef const nghttp2_data_provider *body = NULL
        cdef _Outgoing out = None
        cdef int32_t rc
        if nva is NULL:
            raise MemoryError()
        try:
            # With a body, its queue keeps the head's bytes alive too: nghttp2 need not copy them
            _fill_nv(nva, headers, not end_stream)
            if lines:
                count += _fill_nv_lines(nva + count, lines, not end_stream)
            if not end_stream:
                # _read_body finds the queue here; self.outgoing keeps it alive until the
                # stream closes, after which nghttp2 reads no more of it.
                out = _Outgoing.__new__(_Outgoing)
                out.head_fields, out.head_lines = headers, lines
                provider.source.ptr = <void *>out
                provider.read_callback = _read_body
                body = &provider
            if stream_id < 0:
                rc = nghttp2_submit_request(self.session, NULL, nva, count, body, NULL)
            else:
                rc = nghttp2_submit_response(self.session, stream_id, nva, count, body)
        finally:
            free(nva)
        if rc >= 0 and out is not None:
            self.outgoing[self.key(stream_id if stream_id >= 0 else rc)] = out
        return rc

    cpdef submit_informational(self, int32_t stream_id, list headers):
        """A 1xx head (":status" first) before the response (server side)."""
        cdef Py_ssize_t count = len(headers)
        cdef nghttp2_nv *nva = <nghttp2_nv *>malloc(max(count, 1) * sizeof(nghttp2_nv))
        if nva is NULL:
            raise MemoryError()
        try:
            _fill_nv(nva, headers, False)
            rc = nghttp2_submit_headers(self.session, NGHTTP2_FLAG_NONE, stream_id, NULL, nva, count, NULL)
        finally:
            free(nva)
        _check(rc)

    cpdef Py_ssize_t send_data(self, int32_t stream_id, data, bint end_stream=False) except -1:
        """Queue body bytes of a stream whose head was submitted without end_stream.

        Returns the bytes now queued for it; over ``queue_limit`` the caller should stop
        reading its source until ``h2_drained(stream_id)``.
        """
        cdef _Outgoing out = self.outgoing.get(self.key(stream_id))
        if out is None:
            return 0            # the stream was reset or closed meanwhile
        if data:
            out.buf += data
        if end_stream:
            out.eof = True
        nghttp2_session_resume_data(self.session, stream_id)
        cdef Py_ssize_t queued = len(out.buf) - out.offset
        if queued > self.queue_limit:
            out.over_limit = True
        return queued

    cpdef send_trailers(self, int32_t stream_id, list headers):
        """End the stream with trailers (after its data)."""
        cdef _Outgoing out = self.outgoing.get(self.key(stream_id))
        if out is None:
            return
        out.trailers = headers
        out.eof = True
        nghttp2_session_resume_data(self.session, stream_id)

    cpdef reset(self, int32_t stream_id, uint32_t error_code=CANCEL):
        nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, stream_id, error_code)

    cpdef goaway(self, uint32_t error_code=NO_ERROR):
        """Tell the peer to open no more streams; those already open run to their end."""
        last = nghttp2_session_get_last_proc_stream_id(self.session)
        _check(nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE, last, error_code, NULL, 0))

    cdef bint _reset_over_limit(self):
        """Rapid reset (CVE-2023-44487): more resets than RESET_BURST, refilled RESET_RATE a second.

        nghttp2 has the same limit, but keeps handing over the streams that follow in the
        same read; here nothing after it reaches the handler.
        """
        now = monotonic()
        self.reset_tokens = min(RESET_BURST, self.reset_tokens + (now - self.reset_refilled) * RESET_RATE)
        self.reset_refilled = now
        self.reset_tokens -= 1
        if self.reset_tokens >= 0:
            return False
        self._go_away(ENHANCE_YOUR_CALM, "too many stream resets")
        return True

    cdef _go_away(self, uint32_t error_code, str why):
        self.going_away = why
        nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(self.session),
                              error_code, NULL, 0)

    cpdef bint want_read(self):
        return nghttp2_session_want_read(self.session) != 0

    cpdef bint want_write(self):
        return nghttp2_session_want_write(self.session) != 0

    cpdef Py_ssize_t queued(self, int32_t stream_id):
        cdef _Outgoing out = self.outgoing.get(self.key(stream_id))
        return 0 if out is None else len(out.buf) - out.offset

    # -- the client side's view of the peer (upstream sessions) ----------------------

    cpdef long long remote_max_concurrent_streams(self):
        """SETTINGS_MAX_CONCURRENT_STREAMS of the peer (nghttp2's assumption until it comes)."""
        return nghttp2_session_get_remote_settings(self.session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)

    cpdef bint remote_allows_extended_connect(self):
        """SETTINGS_ENABLE_CONNECT_PROTOCOL of the peer (RFC 8441 §3): a WebSocket may go to it."""
        return nghttp2_session_get_remote_settings(self.session, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL) == 1

    cpdef bint request_allowed(self):
        """May a new stream be opened (False once either side sent GOAWAY)?"""
        return nghttp2_session_check_request_allowed(self.session) != 0

    cpdef set_connection_window(self, int32_t size):
        """The connection's receive window (65535 by default), so that one stream whose
        reader is slow cannot stall the others on the connection."""
        _check(nghttp2_session_set_local_window_size(self.session, NGHTTP2_FLAG_NONE, 0, size))


cdef extern from "nghttp2/nghttp2.h":
    uint32_t nghttp2_session_get_remote_settings(nghttp2_session *session, int settings_id)
    int nghttp2_session_check_request_allowed(nghttp2_session *session)
    int nghttp2_session_set_local_window_size(nghttp2_session *session, uint8_t flags,
                                              int32_t stream_id, int32_t window_size)


# output()'s frames, gathered: in the module's buffer (the loop is single-threaded), or in
# one of their own for a session flushed from inside another's output()
cdef struct Frames:
    char *data
    Py_ssize_t size, cap

cdef Frames _frames
cdef bint _frames_busy = False


cdef int _frames_add(Frames *frames, const uint8_t *chunk, Py_ssize_t n) except -1:
    cdef Py_ssize_t cap
    cdef char *grown
    if frames.size + n > frames.cap:
        cap = max(frames.size + n, 2 * frames.cap, 16384)
        grown = <char *>PyMem_Realloc(frames.data, cap)
        if grown is NULL:
            raise MemoryError()
        frames.data, frames.cap = grown, cap
    memcpy(frames.data + frames.size, chunk, n)
    frames.size += n
    return 0


cdef inline void _check(int rc) except *:
    if rc < 0:
        raise H2Error(nghttp2_strerror(rc).decode())


cdef void _fill_nv(nghttp2_nv *nva, list headers, bint kept) except *:
    """``nva`` pointing at ``headers``' bytes.  ``kept``: they stay alive until the stream
    closes (its _Outgoing holds them), so nghttp2 reads them where they are; else it copies
    them before the submit returns."""
    cdef Py_ssize_t i = 0
    cdef bytes name, value
    for name, value in headers:
        nva[i].name = <uint8_t *><char *>name
        nva[i].namelen = len(name)
        nva[i].value = <uint8_t *><char *>value
        nva[i].valuelen = len(value)
        nva[i].flags = (_index_flag(nva[i].name, nva[i].namelen)
                        | _copy_flags(nva[i].name, nva[i].namelen, kept))
        i += 1


cdef inline uint8_t _copy_flags(const uint8_t *name, size_t n, bint kept) noexcept:
    """What nghttp2 need not copy of a field whose bytes are ``kept``: the value, and the name
    when in lower case already (a copied name is lowered by nghttp2)."""
    if not kept:
        return NGHTTP2_NV_FLAG_NONE
    if _has_upper(name, n):
        return NGHTTP2_NV_FLAG_NO_COPY_VALUE
    return NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE


cdef uint64_t ONES = <uint64_t>0x0101010101010101
cdef uint64_t HIGHS = <uint64_t>0x8080808080808080


cdef inline bint _has_upper(const uint8_t *p, size_t n) noexcept:
    """A byte of ``p[:n]`` (an ASCII token: a field name) is in A-Z.  Eight at a time: adding
    128 - 'A' to a byte sets its high bit when it is 'A' or above, adding 128 - '[' when it is
    past 'Z' (no carry between bytes below 128)."""
    cdef uint64_t word
    cdef size_t i = 0
    while i + 8 <= n:
        memcpy(&word, p + i, 8)
        if (word + ONES * (128 - 65)) & ~(word + ONES * (128 - 91)) & HIGHS:
            return True
        i += 8
    while i < n:
        if 65 <= p[i] <= 90:
            return True
        i += 1
    return False


cdef inline uint8_t _index_flag(const uint8_t *name, size_t n) noexcept:
    """Fields whose value is new in every request are not put in the HPACK table: each
    would push out an entry that is used again, and nghttp2's encoder keeps a table's
    entries of one name in one chain, so every later field of that name compared its value
    with all of them (~50 x-request-ids in a 4 KiB table: ~150 memcmp per gRPC call)."""
    if n == 12 and memcmp(name, b"x-request-id", 12) == 0:
        return NGHTTP2_NV_FLAG_NO_INDEX
    if n == 11 and memcmp(name, b"traceparent", 11) == 0:
        return NGHTTP2_NV_FLAG_NO_INDEX
    return NGHTTP2_NV_FLAG_NONE


cdef Py_ssize_t _count_lines(bytes lines):
    """At most the fields ``_fill_nv_lines`` finds in ``lines``."""
    cdef const char *p = PyBytes_AS_STRING(lines)
    cdef const char *end = p + PyBytes_GET_SIZE(lines)
    cdef Py_ssize_t count = 0
    while p != NULL and p < end:
        p = <const char *>memchr(p, b'\n', end - p)
        if p != NULL:
            p += 1
        count += 1
    return count


cdef Py_ssize_t _fill_nv_lines(nghttp2_nv *nva, bytes lines, bint kept):
    """One entry per "Name: value\\r\\n" line (as MessageHead keeps them), pointing into
    ``lines`` (``kept``: as ``_fill_nv``); how many."""
    cdef const char *p = PyBytes_AS_STRING(lines)
    cdef const char *end = p + PyBytes_GET_SIZE(lines)
    cdef const char *eol
    cdef const char *colon
    cdef Py_ssize_t count = 0
    while p < end:
        eol = <const char *>memchr(p, b'\n', end - p)
        if eol == NULL:
            break
        colon = <const char *>memchr(p, b':', eol - p)
        if colon != NULL and colon + 2 < eol:
            nva[count].name = <uint8_t *>p
            nva[count].namelen = colon - p
            nva[count].value = <uint8_t *>colon + 2
            nva[count].valuelen = eol - 1 - (colon + 2)
            nva[count].flags = _copy_flags(nva[count].name, nva[count].namelen, kept)
            count += 1
        p = eol + 1
    return count


# -- header fields as bytes objects ----------------------------------------------------------

# HPACK's static table (RFC 7541 Appendix A): its names and values, plus the names gRPC and
# browsers send on every request.  A field spelled like one of them gets that bytes object
# instead of a new one: most of a request's names, and its method and scheme, cost nothing.
cdef frozenset _COMMON = frozenset({text.encode() for text in (
    ":authority :method :path :scheme :status :protocol accept-charset accept-encoding "
    "accept-language accept-ranges accept access-control-allow-origin age allow authorization "
    "cache-control content-disposition content-encoding content-language content-length "
    "content-location content-range content-type cookie date etag expect expires from host "
    "if-match if-modified-since if-none-match if-range if-unmodified-since last-modified link "
    "location max-forwards proxy-authenticate proxy-authorization range referer refresh "
    "retry-after server set-cookie strict-transport-security transfer-encoding user-agent vary "
    "via www-authenticate te trailers grpc-timeout grpc-encoding grpc-accept-encoding "
    "grpc-status grpc-message origin sec-websocket-version sec-websocket-protocol "
    "sec-websocket-extensions sec-websocket-key upgrade-insecure-requests x-forwarded-for "
    "x-request-id traceparent tracestate application/grpc GET POST PUT DELETE HEAD OPTIONS "
    "PATCH CONNECT websocket http https / /index.html 200 204 206 304 400 404 500"
).split()} | {b"gzip, deflate", b"*/*"})


cdef inline size_t _slot(const uint8_t *data, size_t n) noexcept:
    return (n * 31 + data[0] * 7 + data[n - 1]) & 255


# _SLOTS[_slot(field)]: the shared objects that may be spelled like it (mostly one or none)
cdef list _SLOTS = [() for _ in range(256)]
for _known in sorted(_COMMON):
    _SLOTS[_slot(<const uint8_t *><const char *>_known, len(_known))] += (_known,)


cdef bytes _field_bytes(const uint8_t *data, size_t n):
    """``data`` as bytes: the shared object when it is one of _COMMON."""
    cdef bytes known
    if n:
        for known in <tuple>_SLOTS[_slot(data, n)]:
            if <size_t>PyBytes_GET_SIZE(known) == n and memcmp(PyBytes_AS_STRING(known), data, n) == 0:
                return known
    return PyBytes_FromStringAndSize(<const char *>data, n)


# -- nghttp2's callbacks: errors a handler raises are kept and raised after the call ------------

cdef enum:
    SKIPPED_RANGES = 16


cdef int _on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user_data) noexcept:
    """(server) A client's HEADERS on a stream id it skipped: PROTOCOL_ERROR (RFC 9113 §5.1.1)."""
    cdef H2Session self = <H2Session>user_data
    cdef int32_t sid = hd.stream_id
    if hd.type != NGHTTP2_HEADERS or not sid & 1 or self.going_away:
        return 0
    if sid > self.last_client_stream:
        if sid > self.last_client_stream + 2:
            if len(self.skipped) == SKIPPED_RANGES:
                del self.skipped[0]
            self.skipped.append((self.last_client_stream + 2, sid - 2))
        self.last_client_stream = sid
        return 0
    for first, last in self.skipped:
        if first <= sid <= last:
            self._go_away(PROTOCOL_ERROR, f"HEADERS on stream {sid}, below stream {self.last_client_stream} "
                                          f"already opened (RFC 9113 §5.1.1)")
            break
    return 0


cdef int _on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame,
                           void *user_data) noexcept:
    cdef H2Session self = <H2Session>user_data
    if frame.hd.type == NGHTTP2_HEADERS:
        self.receiving, self.receiving_id = _Head.__new__(_Head), frame.hd.stream_id
    return 0


cdef int _on_header(nghttp2_session *session, const nghttp2_frame *frame,
                    const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen,
                    uint8_t flags, void *user_data) noexcept:
    cdef H2Session self = <H2Session>user_data
    cdef _Head head = self.receiving
    if head is None or self.receiving_id != frame.hd.stream_id:
        return 0
    if head.too_large:
        return 0
    head.size += namelen + valuelen + 32
    if head.size > self.max_header_list_size:
        # An HPACK bomb (small on the wire, huge decoded) or just too much: a request is
        # answered 431 (RFC 9113 §10.5.1), a response is a bad one (the client resets the
        # stream), trailers are reset; the connection goes on.
        if frame.headers.cat == (NGHTTP2_HCAT_REQUEST if self.server else NGHTTP2_HCAT_RESPONSE):
            head.too_large = True
            head.headers = None
            return 0
        self.receiving = None
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    head.headers.append((_field_bytes(name, namelen), _field_bytes(value, valuelen)))
    return 0


cdef int _on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                        void *user_data) noexcept:
    cdef H2Session self = <H2Session>user_data
    cdef int32_t stream_id = frame.hd.stream_id
    cdef bint end = (frame.hd.flags & NGHTTP2_FLAG_END_STREAM) != 0
    if self.going_away:
        return 0                # the rest of the peer's bytes are not acted on
    if frame.hd.type == NGHTTP2_RST_STREAM and self._reset_over_limit():
        return 0
    try:
        if frame.hd.type == NGHTTP2_HEADERS:
            head = self.receiving
            if head is None or self.receiving_id != stream_id:
                return 0
            self.receiving = None
            if (<_Head>head).too_large:
                self.handler.h2_too_large(stream_id)
                return 0
            headers = (<_Head>head).headers
            if frame.headers.cat == NGHTTP2_HCAT_HEADERS and not _informational_before(headers):
                self.handler.h2_trailers(stream_id, headers)
                if end:
                    self.handler.h2_end(stream_id)
            else:
                self.handler.h2_headers(stream_id, headers, end)
        elif frame.hd.type == NGHTTP2_DATA and end:
            self.handler.h2_end(stream_id)
    except BaseException as exc:
        self.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef inline bint _informational_before(list head):
    """A final response after a 1xx comes as a later HEADERS frame: a head, not trailers."""
    return bool(head) and head[0][0] == b":status"


cdef int _on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                        const uint8_t *data, size_t n, void *user_data) noexcept:
    cdef H2Session self = <H2Session>user_data
    if self.going_away:
        return 0
    try:
        self.handler.h2_data(stream_id, PyBytes_FromStringAndSize(<const char *>data, n))
    except BaseException as exc:
        self.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                          void *user_data) noexcept:
    cdef H2Session self = <H2Session>user_data
    self.outgoing.pop(self.key(stream_id), None)
    if self.receiving_id == stream_id:
        self.receiving = None
    try:
        self.handler.h2_close(stream_id, error_code)
    except BaseException as exc:
        self.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef ssize_t _read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                        size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                        void *user_data) noexcept:
    cdef H2Session self = <H2Session>user_data
    cdef _Outgoing out = <_Outgoing>source.ptr
    cdef Py_ssize_t available, n
    cdef const char *start
    available = len(out.buf) - out.offset
    if available == 0 and not out.eof:
        return NGHTTP2_ERR_DEFERRED
    n = min(<Py_ssize_t>length, available)
    if n:
        start = out.buf
        memcpy(buf, start + out.offset, n)
        out.offset += n
        if out.offset == len(out.buf):
            del out.buf[:]
            out.offset = 0
        elif out.offset > 65536:
            del out.buf[:out.offset]
            out.offset = 0
    if out.eof and len(out.buf) == out.offset:
        data_flags[0] = NGHTTP2_DATA_FLAG_EOF
        if out.trailers is not None:
            data_flags[0] |= NGHTTP2_DATA_FLAG_NO_END_STREAM
            _submit_trailers(self, stream_id, out.trailers)
    elif out.over_limit and len(out.buf) == out.offset:
        out.over_limit = False
        try:
            self.handler.h2_drained(stream_id)
        except BaseException as exc:
            self.error = exc
            return NGHTTP2_ERR_CALLBACK_FAILURE
    return n


cdef void _submit_trailers(H2Session self, int32_t stream_id, list headers) noexcept:
    cdef Py_ssize_t count = len(headers)
    cdef nghttp2_nv *nva = <nghttp2_nv *>malloc(max(count, 1) * sizeof(nghttp2_nv))
    if nva is NULL:
        return
    try:
        _fill_nv(nva, headers, True)           # kept by the stream's _Outgoing (its trailers)
        nghttp2_submit_trailer(self.session, stream_id, nva, count)
    except BaseException as exc:
        self.error = exc
    finally:
        free(nva)
