# cython: language_level=3
"""What the ``ssl`` module cannot ask of OpenSSL: a server context that requests a client
certificate and accepts the handshake whatever comes of its verification (the Gateway API's
``AllowInsecureFallback`` client validation mode; ``ssl.CERT_OPTIONAL`` requests one too, but
fails the handshake when a presented certificate does not verify), word of a handshake this
side refused (a client certificate that failed, or none where one is required), and a peer
authenticated by any of several subjectAltNames, URIs among them (the ssl module checks one
host name).

The ``SSL_CTX`` is read from the ``ssl.SSLContext`` object: CPython's ``_ssl.c`` declares
``PySSLContext`` as ``PyObject_HEAD`` followed by ``SSL_CTX *ctx`` (3.7 to 3.13).  This module
links the libssl that ``_ssl`` links (setup.py; Debian's libssl3)."""

import ssl
import weakref

cdef extern from "openssl/ssl.h":
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
    ctypedef struct X509
    ctypedef struct ASN1_STRING
    long X509_V_OK
    long X509_V_ERR_HOSTNAME_MISMATCH
    const char *X509_verify_cert_error_string(long n) nogil
    int X509_STORE_CTX_get_error_depth(const X509_STORE_CTX *store) nogil
    X509 *X509_STORE_CTX_get_current_cert(const X509_STORE_CTX *store) nogil
    void X509_STORE_CTX_set_error(X509_STORE_CTX *store, int error) nogil
    void *X509_STORE_CTX_get_ex_data(const X509_STORE_CTX *store, int idx) nogil
    const unsigned char *ASN1_STRING_get0_data(const ASN1_STRING *string) nogil
    int ASN1_STRING_length(const ASN1_STRING *string) nogil
    ctypedef struct OPENSSL_STACK
    int OPENSSL_sk_num(const OPENSSL_STACK *stack) nogil
    void *OPENSSL_sk_value(const OPENSSL_STACK *stack, int i) nogil

cdef extern from "openssl/ssl.h":
    int SSL_get_ex_data_X509_STORE_CTX_idx() nogil
    SSL_CTX *SSL_get_SSL_CTX(const SSL *conn) nogil

cdef extern from "openssl/x509v3.h":
    ctypedef union _GeneralNameValue:
        ASN1_STRING *uniformResourceIdentifier
    ctypedef struct GENERAL_NAME:
        int type
        _GeneralNameValue d
    ctypedef struct GENERAL_NAMES
    int GEN_URI
    int NID_subject_alt_name
    void *X509_get_ext_d2i(const X509 *cert, int nid, int *crit, int *idx) nogil
    void GENERAL_NAMES_free(GENERAL_NAMES *names) nogil
    int X509_check_host(X509 *cert, const char *name, size_t length, unsigned int flags, char **peername) nogil

cdef extern from *:
    """
    typedef struct { PyObject_HEAD SSL_CTX *ctx; } gateway_PySSLContext;
    """
    ctypedef struct gateway_PySSLContext:
        SSL_CTX *ctx

cdef extern from "openssl/ssl.h":
    ctypedef int (*servername_callback)(SSL *conn, int *alert, void *arg) noexcept
    int SSL_TLSEXT_ERR_OK
    long SSL_CTX_set_tlsext_servername_callback(SSL_CTX *ctx, servername_callback callback)
    long SSL_CTX_set_tlsext_servername_arg(SSL_CTX *ctx, void *arg)
    SSL_CTX *SSL_set_SSL_CTX(SSL *conn, SSL_CTX *ctx)
    long SSL_MODE_NO_AUTO_CHAIN
    long SSL_CTX_set_mode(SSL_CTX *ctx, long mode)
    long SSL_SESS_CACHE_OFF
    long SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode)


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
    The client gets the alert; this is the server's trace of why."""
    global _refused
    _refused = callback
    SSL_CTX_set_info_callback(ssl_ctx_of(context), _on_info)


cdef SSL_CTX *ssl_ctx_of(context) except NULL:
    if not isinstance(context, ssl.SSLContext):
        raise TypeError("an ssl.SSLContext is needed")
    return (<gateway_PySSLContext *> <void *> context).ctx


# -- SNI: the certificate a handshake is served with, by the name the client asked for --

cdef dict _contexts_by_name = {}    # a listener's default SSL_CTX address -> its {name: SSLContext}


def select_by_server_name(default: ssl.SSLContext, by_name: dict) -> None:
    """Serve each handshake that starts on ``default`` from ``by_name``'s context for the
    server name the client sent (exact, then "*." and the name's parent; lowercase keys), or
    from ``default``.  ``by_name`` is read at each handshake: its owner may change it in
    place.  In C, unlike ``SSLContext.sni_callback``, so it serves handshakes OpenSSL runs on
    a socket of its own (``_speedups.tls_transport``) as well as the ``ssl`` module's."""
    cdef SSL_CTX *ctx = ssl_ctx_of(default)
    _contexts_by_name[<size_t> ctx] = by_name
    weakref.finalize(default, _contexts_by_name.pop, <size_t> ctx, None)
    SSL_CTX_set_tlsext_servername_arg(ctx, <void *> ctx)
    SSL_CTX_set_tlsext_servername_callback(ctx, _on_server_name)


cdef int _on_server_name(SSL *conn, int *alert, void *default_ctx) noexcept with gil:
    cdef const char *sent = SSL_get_servername(conn, TLSEXT_NAMETYPE_host_name)
    cdef SSL_CTX *chosen
    if sent == NULL:
        return SSL_TLSEXT_ERR_OK
    try:
        by_name = _contexts_by_name.get(<size_t> default_ctx)
        if not by_name:
            return SSL_TLSEXT_ERR_OK
        name = sent.decode("ascii", "replace").lower()
        context = by_name.get(name)
        if context is None and "." in name:
            context = by_name.get("*." + name.split(".", 1)[1])
        if context is not None:
            chosen = ssl_ctx_of(context)
            if chosen != SSL_get_SSL_CTX(conn):
                SSL_set_SSL_CTX(conn, chosen)
    except BaseException:
        pass                        # the default certificate, rather than a broken C stack
    return SSL_TLSEXT_ERR_OK



def send_chain_as_loaded(context: ssl.SSLContext) -> None:
    """Send the certificate chain as the files give it, as nginx does: without this OpenSSL
    builds a chain for a certificate loaded without one at every handshake (a verification
    of the leaf against the context's store: a tenth of a full TLS 1.3 handshake's CPU for a
    self-signed certificate), and finds nothing to add, since a server context's store holds
    only client-validation CAs."""
    SSL_CTX_set_mode(ssl_ctx_of(context), SSL_MODE_NO_AUTO_CHAIN)


def request_client_certificate_unverified(context: ssl.SSLContext) -> None:
    """Ask every client of ``context`` for a certificate and go on with the handshake whether
    it presents none, one that verifies, or one that does not."""
    SSL_CTX_set_verify(ssl_ctx_of(context), SSL_VERIFY_PEER, _accept_any)


# SSL_CTX address -> (DNS names, URIs) its peers' leaf certificates must show one of
cdef dict _wanted_names = {}


def require_subject_alt_names(context: ssl.SSLContext, names) -> None:
    """Accept a peer only if its certificate (verified as the context says) has one of
    ``names`` ("DNS:host", "URI:uri") among its subjectAltNames: a DNS name as OpenSSL
    matches a host name (wildcards included), a URI exactly. The Gateway API's
    BackendTLSPolicy ``subjectAltNames``, which then authenticate instead of the hostname."""
    cdef SSL_CTX *ctx = ssl_ctx_of(context)
    dns = tuple(n[4:].encode() for n in names if n.startswith("DNS:"))
    uris = tuple(n[4:].encode() for n in names if n.startswith("URI:"))
    _wanted_names[<size_t> ctx] = (dns, uris)
    weakref.finalize(context, _wanted_names.pop, <size_t> ctx, None)
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, _verify_names)


cdef int _verify_names(int ok, X509_STORE_CTX *store) noexcept nogil:
    if not ok or X509_STORE_CTX_get_error_depth(store) != 0:
        return ok                   # the chain's own verdict; names are the leaf's
    return _leaf_has_a_wanted_name(store)


cdef int _leaf_has_a_wanted_name(X509_STORE_CTX *store) noexcept with gil:
    cdef const SSL *conn = <const SSL *> X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx())
    cdef X509 *cert = X509_STORE_CTX_get_current_cert(store)
    cdef GENERAL_NAMES *names
    cdef GENERAL_NAME *name
    cdef int i
    wanted = _wanted_names.get(<size_t> SSL_get_SSL_CTX(conn))
    if wanted is None:
        return 1
    dns, uris = wanted
    for host in dns:
        if X509_check_host(cert, <const char *> host, len(host), 0, NULL) == 1:
            return 1
    if uris:
        names = <GENERAL_NAMES *> X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL)
        if names != NULL:
            try:
                for i in range(OPENSSL_sk_num(<OPENSSL_STACK *> names)):
                    name = <GENERAL_NAME *> OPENSSL_sk_value(<OPENSSL_STACK *> names, i)
                    if name.type == GEN_URI and (<bytes> ASN1_STRING_get0_data(name.d.uniformResourceIdentifier)[
                            :ASN1_STRING_length(name.d.uniformResourceIdentifier)]) in uris:
                        return 1
            finally:
                GENERAL_NAMES_free(names)
    X509_STORE_CTX_set_error(store, X509_V_ERR_HOSTNAME_MISMATCH)
    return 0


# -- session tickets: one key ring per process, set by whoever owns it (gateway.tls.TicketKeys) --

cdef extern from *:
    """
    #include <string.h>
    #include <openssl/evp.h>
    #include <openssl/rand.h>
    #include <openssl/core_names.h>
    #include <openssl/params.h>
    #include <openssl/ssl.h>

    #define GW_TICKET_KEY_SIZE 80          /* name 16, HMAC-SHA256 key 32, AES-256 key 32 */
    #define GW_TICKET_KEYS_MAX 8
    static unsigned char gw_ticket_keys[GW_TICKET_KEYS_MAX][GW_TICKET_KEY_SIZE];
    static int gw_ticket_count = 0;

    /* OpenSSL's ticket key callback: a new ticket under the first key, an old one under the
       key its name says (2: decrypted, issue a new one under the first key), 0: no such key.
       TLS 1.3 renews every ticket it resumes: clients use a ticket once (RFC 8446 C.4), and
       with 1 returned OpenSSL sent none after a resumption, so a browser's resumptions ran out
       with the full handshake's two tickets (OpenSSL's own keys, nginx's default, renew). */
    static int gw_ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv,
                            EVP_CIPHER_CTX *cipher, EVP_MAC_CTX *mac, int encrypt) {
        const unsigned char *key = NULL;
        OSSL_PARAM params[3];
        int i;
        if (encrypt) {
            if (gw_ticket_count == 0 || RAND_bytes(iv, 16) <= 0)
                return -1;
            key = gw_ticket_keys[0];
            memcpy(name, key, 16);
        } else {
            for (i = 0; i < gw_ticket_count && key == NULL; i++)
                if (memcmp(name, gw_ticket_keys[i], 16) == 0)
                    key = gw_ticket_keys[i];
            if (key == NULL)
                return 0;
        }
        params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)(key + 16), 32);
        params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
        params[2] = OSSL_PARAM_construct_end();
        if (!EVP_MAC_CTX_set_params(mac, params))
            return -1;
        if (encrypt)
            return EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, key + 48, iv) ? 1 : -1;
        if (!EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, key + 48, iv))
            return -1;
        return key == gw_ticket_keys[0] && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2;
    }

    static void gw_set_ticket_key(int i, const unsigned char *key) {
        memcpy(gw_ticket_keys[i], key, GW_TICKET_KEY_SIZE);
    }

    static void gw_use_ticket_keys(SSL_CTX *ctx) {
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, gw_ticket_cb);
    }
    """
    int GW_TICKET_KEY_SIZE
    int GW_TICKET_KEYS_MAX
    int gw_ticket_count
    void gw_set_ticket_key(int i, const unsigned char *key)
    void gw_use_ticket_keys(SSL_CTX *ctx)


TICKET_KEY_SIZE = GW_TICKET_KEY_SIZE


def set_ticket_keys(keys) -> None:
    """This process's session ticket keys (80 random bytes each): the first encrypts new
    tickets, every one decrypts (a ticket under another than the first is renewed). Handshakes
    run on the event loop's thread, as this call does: no lock."""
    global gw_ticket_count
    keys = list(keys)
    if not 1 <= len(keys) <= GW_TICKET_KEYS_MAX or any(len(k) != GW_TICKET_KEY_SIZE for k in keys):
        raise ValueError(f"1 to {GW_TICKET_KEYS_MAX} keys of {GW_TICKET_KEY_SIZE} bytes are needed")
    for i, key in enumerate(keys):
        gw_set_ticket_key(i, key)
    gw_ticket_count = len(keys)


def use_ticket_keys(context: ssl.SSLContext) -> None:
    """Issue and accept ``context``'s session tickets under this process's keys (set_ticket_keys)
    instead of the context's own random ones: every worker given the same keys resumes the
    sessions of every other.  Tickets are the only resumption: the context's own session
    cache is off (a session ID resumed on one worker in N, and storing each session cost a
    TLS 1.2 full handshake a tenth more CPU; nginx's default, ``ssl_session_cache none``)."""
    cdef SSL_CTX *ctx = ssl_ctx_of(context)
    gw_use_ticket_keys(ctx)
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF)
