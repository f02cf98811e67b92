# cython: language_level=3
"""What the ``ssl`` module cannot ask of OpenSSL: a server context that requests a client
certificate and accepts the handshake whatever comes of its verification (the Gateway API's
``AllowInsecureFallback`` client validation mode; ``ssl.CERT_OPTIONAL`` requests one too, but
fails the handshake when a presented certificate does not verify), and word of a handshake
this side refused (a client certificate that failed, or none where one is required).

The ``SSL_CTX`` is read from the ``ssl.SSLContext`` object: CPython's ``_ssl.c`` declares
``PySSLContext`` as ``PyObject_HEAD`` followed by ``SSL_CTX *ctx`` (3.7 to 3.13).  This module
links the libssl that ``_ssl`` links (setup.py; Debian's libssl3)."""

import ssl

cdef extern from "openssl/ssl.h":
    ctypedef struct SSL_CTX
    ctypedef struct SSL
    ctypedef struct X509_STORE_CTX
    ctypedef int (*verify_callback)(int, X509_STORE_CTX *) noexcept nogil
    ctypedef void (*info_callback)(const SSL *, int, int) noexcept nogil
    int SSL_VERIFY_PEER
    int SSL_CB_WRITE_ALERT
    int TLSEXT_NAMETYPE_host_name
    void SSL_CTX_set_verify(SSL_CTX *ctx, int mode, verify_callback callback) nogil
    void SSL_CTX_set_info_callback(SSL_CTX *ctx, info_callback callback) nogil
    const char *SSL_alert_desc_string_long(int value) nogil
    long SSL_get_verify_result(const SSL *conn) nogil
    const char *SSL_get_servername(const SSL *conn, int type) nogil

cdef extern from "openssl/x509.h":
    long X509_V_OK
    const char *X509_verify_cert_error_string(long n) nogil

cdef extern from *:
    """
    typedef struct { PyObject_HEAD SSL_CTX *ctx; } gateway_PySSLContext;
    """
    ctypedef struct gateway_PySSLContext:
        SSL_CTX *ctx


cdef int _accept_any(int preverified, X509_STORE_CTX *store) noexcept nogil:
    return 1


cdef object _refused = None         # report_refusals' callable


cdef void _on_info(const SSL *conn, int where, int value) noexcept nogil:
    # Called at each step of every handshake: only a fatal alert we send takes the GIL.
    if where & SSL_CB_WRITE_ALERT and (value >> 8) == 2:
        _report_refusal(conn, value & 0xff)


cdef void _report_refusal(const SSL *conn, int alert) noexcept with gil:
    cdef long verified = SSL_get_verify_result(conn)
    cdef const char *name = SSL_get_servername(conn, TLSEXT_NAMETYPE_host_name)
    if _refused is None:
        return
    try:
        # OpenSSL 3.0 has no name for TLS 1.3's certificate_required (RFC 8446 6.2).
        _refused("certificate required" if alert == 116 else SSL_alert_desc_string_long(alert).decode(),
                 None if verified == X509_V_OK else X509_verify_cert_error_string(verified).decode(),
                 None if name == NULL else name.decode("ascii", "replace"))
    except BaseException:
        pass                        # a report must not break the handshake's C stack


def report_refusals(context: ssl.SSLContext, callback) -> None:
    """Call ``callback(alert, verify_error or None, server_name or None)`` whenever a handshake
    on ``context`` ends with a fatal alert from this side (the last callback given is used).
    uvloop closes such a connection without sending the alert (its SSL transport aborts on a
    failed handshake): this is the only trace of why."""
    global _refused
    _refused = callback
    SSL_CTX_set_info_callback(_ssl_ctx(context), _on_info)


cdef SSL_CTX *_ssl_ctx(context) except NULL:
    if not isinstance(context, ssl.SSLContext):
        raise TypeError("an ssl.SSLContext is needed")
    return (<gateway_PySSLContext *> <void *> context).ctx


def request_client_certificate_unverified(context: ssl.SSLContext) -> None:
    """Ask every client of ``context`` for a certificate and go on with the handshake whether
    it presents none, one that verifies, or one that does not."""
    SSL_CTX_set_verify(_ssl_ctx(context), SSL_VERIFY_PEER, _accept_any)
