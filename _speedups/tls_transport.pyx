# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""HTTPS connections on the reactor: OpenSSL reads and writes the socket itself.

uvloop's TLS runs every connection through its ``SSLProtocol``: a libuv transport, an
``ssl.SSLObject`` over two memory BIOs (each record copied in and out of them), a Python
state machine around the handshake, ``call_soon`` callbacks.  At one handshake per request
that was most of the gap to nginx (bench/RESULTS.md, "HTTPS against nginx": 350-490 us more
per connection whatever the crypto, libpython and uvloop above OpenSSL in the profile).  Here,
as nginx does, an ``SSL`` made from the listener's ``ssl.SSLContext`` owns the socket's fd:
the handshake is ``SSL_do_handshake`` on readiness, the records are ``SSL_read_ex`` and
``SSL_write_ex`` on the socket, and the protocol sees a transport of the reactor's kind.

The contexts stay ``ssl.SSLContext`` objects, configured by ``gateway.tls`` as before
(certificates, versions, ALPN, client validation, the replica's ticket keys); the SNI choice
is ``_speedups.tls.select_by_server_name`` (in C: the ``ssl`` module's SNI callback needs
its own socket objects).  The protocol is made once the handshake completes, so a failed or
abandoned handshake costs no protocol and no ``connection_lost``.
"""
import ssl
from collections import deque

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport errno
from posix.unistd cimport close

from _speedups.clock cimport monotonic

from _speedups.reactor cimport (EPOLL_CTL_ADD, EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, READ_SIZE,
                                Listener, Reactor, SocketTransport, sockaddr_storage)
from _speedups.tls cimport SSL, SSL_CTX, ssl_ctx_of


cdef extern from "openssl/ssl.h" nogil:
    int SSL_ERROR_NONE
    int SSL_ERROR_SSL
    int SSL_ERROR_WANT_READ
    int SSL_ERROR_WANT_WRITE
    int SSL_ERROR_SYSCALL
    int SSL_ERROR_ZERO_RETURN
    long SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
    unsigned long SSL_OP_IGNORE_UNEXPECTED_EOF
    int TLSEXT_NAMETYPE_host_name
    ctypedef struct SSL_CIPHER
    SSL *SSL_new(SSL_CTX *ctx)
    void SSL_free(SSL *conn)
    int SSL_set_fd(SSL *conn, int fd)
    void SSL_set_accept_state(SSL *conn)
    void SSL_set_read_ahead(SSL *conn, int yes)
    long SSL_set_mode(SSL *conn, long mode)
    unsigned long SSL_set_options(SSL *conn, unsigned long options)
    int SSL_do_handshake(SSL *conn)
    int SSL_read_ex(SSL *conn, void *buf, size_t num, size_t *readbytes)
    int SSL_write_ex(SSL *conn, const void *buf, size_t num, size_t *written)
    int SSL_has_pending(const SSL *conn)
    int SSL_get_error(const SSL *conn, int ret)
    int SSL_shutdown(SSL *conn)
    int SSL_session_reused(const SSL *conn)
    const char *SSL_get_servername(const SSL *conn, int type)
    const char *SSL_get_version(const SSL *conn)
    void SSL_get0_alpn_selected(const SSL *conn, const unsigned char **data, unsigned int *length)
    const SSL_CIPHER *SSL_get_current_cipher(const SSL *conn)
    const char *SSL_CIPHER_get_name(const SSL_CIPHER *cipher)
    int SSL_CIPHER_get_bits(const SSL_CIPHER *cipher, int *alg_bits)

cdef extern from "openssl/err.h" nogil:
    unsigned long ERR_get_error()
    void ERR_clear_error()
    void ERR_error_string_n(unsigned long e, char *buf, size_t length)


cdef enum:
    MAX_RECORD = 16384              # a full TLS record's plaintext: more is likely behind it


cdef object _ssl_error(str what):
    """An ``ssl.SSLError`` with OpenSSL's reason (the queue is emptied)."""
    cdef char text[256]
    cdef unsigned long code = ERR_get_error()
    if code == 0:
        return ssl.SSLError(f"{what}: the peer broke the protocol")
    ERR_error_string_n(code, text, sizeof(text))
    ERR_clear_error()
    return ssl.SSLError(f"{what}: {text.decode('ascii', 'replace')}")


cdef class TlsTransport


cdef class TlsListener(Listener):
    """A listening socket whose connections are TLS: each handshake on a ``TlsTransport``,
    then ``protocol_factory()`` gets the connection."""

    cdef object context             # the listener's ssl.SSLContext (SNI may pick another)
    cdef SSL_CTX *ctx
    cdef double handshake_timeout
    # Handshakes in accept order, so their deadlines ascend: one loop timer, at the first
    # unfinished one's, serves them all (a timer per connection cost ~5 us of its ~280).
    cdef object handshaking         # deque of TlsTransport; finished ones leave from the front
    cdef object deadline_timer

    def __init__(self, Reactor reactor, sock, protocol_factory, context, double handshake_timeout):
        self.context = context
        self.ctx = ssl_ctx_of(context)
        self.handshake_timeout = handshake_timeout
        self.handshaking = deque()
        Listener.__init__(self, reactor, sock, protocol_factory)

    cdef void start(self, int fd, sockaddr_storage *addr) except *:
        cdef TlsTransport transport
        cdef SSL *conn = SSL_new(self.ctx)
        if conn == NULL or SSL_set_fd(conn, fd) != 1:
            if conn != NULL:
                SSL_free(conn)
            close(fd)
            self.reactor.report(_ssl_error("a TLS connection could not be set up"),
                                "accepting a connection failed", None, None)
            return
        SSL_set_accept_state(conn)
        SSL_set_read_ahead(conn, 1)         # a record's header and body in one read()
        # A write that waits for the socket is retried from the queue's copy of the data.
        SSL_set_mode(conn, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)
        SSL_set_options(conn, SSL_OP_IGNORE_UNEXPECTED_EOF)      # a TCP end without close_notify: an end
        transport = TlsTransport.__new__(TlsTransport)
        transport.init(self.reactor, fd, addr)
        transport.conn = conn
        transport.factory = self.factory
        try:
            self.reactor.watch(fd, transport, EPOLLIN, EPOLL_CTL_ADD)
        except Exception as exc:
            transport.finish(exc)
            self.reactor.report(exc, "accepting a connection failed", transport, None)
            return
        transport.deadline = monotonic() + self.handshake_timeout
        self.drop_settled()
        self.handshaking.append(transport)
        if self.deadline_timer is None:
            self.deadline_timer = self.reactor.loop.call_later(self.handshake_timeout, self.time_out_handshakes)

    cdef void drop_settled(self):
        """Forget the handshakes at the front that finished or failed (most, by far)."""
        cdef TlsTransport first
        while self.handshaking:
            first = self.handshaking[0]
            if not first.handshaken and first.fd >= 0:
                return
            self.handshaking.popleft()

    def time_out_handshakes(self):
        """Close the connections whose handshake is past its deadline (quietly: no alert);
        then wait for the next unfinished one's.  Connections outlive their listener's close,
        and so do their deadlines."""
        cdef TlsTransport first
        cdef double now = monotonic()
        self.deadline_timer = None
        self.drop_settled()
        while self.handshaking:
            first = self.handshaking[0]
            if first.deadline > now:
                self.deadline_timer = self.reactor.loop.call_later(first.deadline - now,
                                                                   self.time_out_handshakes)
                return
            self.handshaking.popleft()
            first.quiet = True
            first.finish(None)
            self.drop_settled()


cdef class TlsTransport(SocketTransport):
    """One TLS connection: the handshake, then ``SocketTransport``'s interface over records.
    TLS has no half close: ``can_write_eof()`` is False and the peer's end closes it."""

    cdef SSL *conn                  # NULL once closed
    cdef object factory             # the listener's, until the handshake completes
    cdef double deadline            # the handshake's (its listener keeps the timer)
    cdef bint handshaken
    cdef bint quiet                 # closing without close_notify (abort, failure)
    cdef unsigned int tls_wants     # what OpenSSL waits for, beside reading and writing

    def __dealloc__(self):
        if self.conn != NULL:
            SSL_free(self.conn)

    cdef unsigned int wanted(self):
        if not self.handshaken:
            return self.tls_wants or EPOLLIN
        return SocketTransport.wanted(self) | self.tls_wants

    cdef void on_event(self, unsigned int events) except *:
        cdef object protocol = self.protocol
        cdef unsigned int owed = self.tls_wants         # a write waiting to read, or the reverse
        try:
            if not self.handshaken:
                self.handshake()
                return
            self.tls_wants = 0
            if self.pending and events & (EPOLLOUT | EPOLLERR | EPOLLHUP | (owed & EPOLLIN)):
                self.flush()
            if self.fd < 0:
                return
            if self.reading and events & (EPOLLIN | EPOLLERR | EPOLLHUP | (owed & EPOLLOUT)):
                self.read_once()
            elif events & (EPOLLERR | EPOLLHUP) and not self.pending:
                self.park()
            if owed and self.fd >= 0:
                self.rewatch()
        except Exception as exc:
            self.reactor.report(exc, "a protocol callback failed", self, protocol)
            self.fail(exc)

    # -- the handshake -----------------------------------------------------

    cdef void handshake(self) except *:
        cdef int result, err
        ERR_clear_error()
        result = SSL_do_handshake(self.conn)
        if result == 1:
            self.established()
            return
        err = SSL_get_error(self.conn, result)
        if err == SSL_ERROR_WANT_READ or err == SSL_ERROR_WANT_WRITE:
            self.tls_wants = EPOLLIN if err == SSL_ERROR_WANT_READ else EPOLLOUT
            self.rewatch()
            return
        # Refused or broken (OpenSSL has sent its alert): no protocol ever saw it.
        # gateway.tls reports refusals on mutual-TLS ports (report_refusals).
        ERR_clear_error()
        self.quiet = True
        self.finish(None)

    cdef void established(self) except *:
        self.handshaken = True
        self.tls_wants = 0
        self.protocol, self.factory = self.factory(), None
        self.rewatch()
        self.protocol.connection_made(self)
        # Bytes that came with the handshake's last flight are OpenSSL's now, not the socket's.
        if self.fd >= 0 and self.reading and SSL_has_pending(self.conn):
            self.read_once()

    # -- reading -----------------------------------------------------------

    cdef void read_once(self) except *:
        """Decrypt what the socket has (at most the reactor's buffer per ``data_received``)."""
        cdef size_t got
        cdef int err
        while True:
            err = self.decrypt(&got)
            if got:
                self.deliver(PyBytes_FromStringAndSize(self.reactor.read_buf, got))
                if self.fd < 0 or not self.reading:
                    return              # resume_reading() delivers what OpenSSL still holds
            if err == SSL_ERROR_NONE and SSL_has_pending(self.conn):
                continue                # the buffer filled up
            if err != SSL_ERROR_NONE:
                self.read_stopped(err)
            return

    cdef int decrypt(self, size_t *total) except -1:
        """Fill the reactor's buffer from the connection: SSL_ERROR_NONE when it is full or a
        short record left OpenSSL holding nothing more, else why the reading stopped."""
        cdef size_t n
        total[0] = 0
        while total[0] < READ_SIZE:
            ERR_clear_error()
            if SSL_read_ex(self.conn, self.reactor.read_buf + total[0], READ_SIZE - total[0], &n) != 1:
                return SSL_get_error(self.conn, 0)
            total[0] += n
            if n < MAX_RECORD and not SSL_has_pending(self.conn):
                break                   # likely a message's end: no read() to hear EAGAIN
        return SSL_ERROR_NONE

    cdef void read_stopped(self, int err) except *:
        if err == SSL_ERROR_WANT_READ:
            return
        if err == SSL_ERROR_WANT_WRITE:         # a reply OpenSSL owes (a KeyUpdate) waits
            self.tls_wants |= EPOLLOUT
            self.rewatch()
            return
        if err == SSL_ERROR_ZERO_RETURN or (err == SSL_ERROR_SYSCALL and errno == 0):
            self.end_of_stream()                # close_notify, or the TCP end without it
            return
        self.broken(err, "reading a TLS connection failed")

    cdef void broken(self, int err, str what) except *:
        """Fail the connection for OpenSSL's error ``err``, without a close_notify."""
        self.quiet = True
        if err == SSL_ERROR_SYSCALL:
            ERR_clear_error()
            self.fail(OSError(errno, what))
        else:
            self.fail(_ssl_error(what))

    cdef void end_of_stream(self) except *:
        self.read_eof = True
        self.reading = False
        self.rewatch()
        self.protocol.eof_received()
        self.close()                            # no half close over TLS (as asyncio's)

    def resume_reading(self):
        SocketTransport.resume_reading(self)
        if self.reading and self.handshaken and self.conn != NULL and SSL_has_pending(self.conn):
            self.reactor.loop.call_soon(self.read_held)

    def read_held(self):
        """What OpenSSL decrypted ahead while the protocol had paused reading."""
        protocol = self.protocol
        if self.fd < 0 or not self.reading:
            return
        try:
            self.read_once()
        except Exception as exc:
            self.reactor.report(exc, "a protocol callback failed", self, protocol)
            self.fail(exc)

    # -- writing -----------------------------------------------------------

    cpdef write(self, data):
        cdef Py_buffer view
        cdef size_t written
        cdef int result
        if self.closing or self.fd < 0:
            return
        if self.pending:
            self.queue(data, 0)
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len == 0:
                return
            ERR_clear_error()
            result = SSL_write_ex(self.conn, view.buf, view.len, &written)
        finally:
            PyBuffer_Release(&view)
        if result != 1:
            self.write_stopped(SSL_get_error(self.conn, 0), data)

    def writelines(self, list_of_data):
        """One record for all of them (a response head and its body) rather than one each."""
        self.write(b"".join(list_of_data))

    cdef void write_stopped(self, int err, object data) except *:
        """``data`` did not all go: OpenSSL keeps what it encrypted and wants the same bytes
        again (from the queue's copy) once the socket can take them."""
        if err == SSL_ERROR_WANT_WRITE or err == SSL_ERROR_WANT_READ:
            if err == SSL_ERROR_WANT_READ:
                self.tls_wants |= EPOLLIN
            self.queue(data, 0)
            return
        self.broken(err, "writing a TLS connection failed")

    cdef void flush(self) except *:
        cdef bytes data
        cdef size_t written
        cdef int err
        while self.pending:
            data = self.pending[0]
            ERR_clear_error()
            if SSL_write_ex(self.conn, <char *> data, len(data), &written) != 1:
                err = SSL_get_error(self.conn, 0)
                if err == SSL_ERROR_WANT_WRITE:
                    return                          # still watching for writable
                if err == SSL_ERROR_WANT_READ:
                    self.tls_wants |= EPOLLIN
                    return
                self.broken(err, "writing a TLS connection failed")
                return
            del self.pending[0]
            self.pending_size -= len(data)
        self.flushed()

    def can_write_eof(self):
        return False

    def write_eof(self):
        raise NotImplementedError("TLS has no half close")

    # -- closing -----------------------------------------------------------

    def abort(self):
        self.quiet = True
        SocketTransport.abort(self)

    cdef void finish(self, object exc) except *:
        if self.fd < 0:
            return
        if self.conn != NULL:
            if exc is None and not self.quiet and self.handshaken:
                ERR_clear_error()
                SSL_shutdown(self.conn)             # close_notify, if the socket takes it now
                ERR_clear_error()
            SSL_free(self.conn)
            self.conn = NULL
        self.factory = None
        SocketTransport.finish(self, exc)

    # -- the rest of asyncio's transport ---------------------------------------

    def get_extra_info(self, name, default=None):
        if name == "ssl_object":
            return TlsSession(self) if self.conn != NULL and self.handshaken else default
        if name == "cipher":
            session = self.get_extra_info("ssl_object")
            return session.cipher() if session is not None else default
        return SocketTransport.get_extra_info(self, name, default)


cdef class TlsSession:
    """The part of ``ssl.SSLObject`` the protocols read, for a ``TlsTransport``
    (``transport.get_extra_info("ssl_object")``)."""

    cdef TlsTransport transport

    def __init__(self, TlsTransport transport):
        self.transport = transport

    cdef SSL *conn(self) except NULL:
        if self.transport.conn == NULL:
            raise ValueError("the TLS connection is closed")
        return self.transport.conn

    def selected_alpn_protocol(self):
        cdef const unsigned char *data
        cdef unsigned int length
        SSL_get0_alpn_selected(self.conn(), &data, &length)
        return (<bytes> data[:length]).decode("ascii") if length else None

    def version(self):
        return SSL_get_version(self.conn()).decode("ascii")

    def cipher(self):
        cdef const SSL_CIPHER *cipher = SSL_get_current_cipher(self.conn())
        if cipher == NULL:
            return None
        return (SSL_CIPHER_get_name(cipher).decode("ascii"), self.version(), SSL_CIPHER_get_bits(cipher, NULL))

    @property
    def session_reused(self):
        return bool(SSL_session_reused(self.conn()))

    @property
    def server_name(self):
        """The name the client sent (SNI), as sent, or None."""
        cdef const char *name = SSL_get_servername(self.conn(), TLSEXT_NAMETYPE_host_name)
        return None if name == NULL else name.decode("ascii", "replace")

    @property
    def gateway_sni(self):
        """The SNI name lowercase, as bytes: what a request's Host is held to (421)."""
        name = self.server_name
        return name.lower().encode() if name else None
