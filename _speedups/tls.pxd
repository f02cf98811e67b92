cdef extern from "openssl/ssl.h":
    ctypedef struct SSL_CTX
    ctypedef struct SSL

cdef SSL_CTX *ssl_ctx_of(context) except NULL      # an ssl.SSLContext's SSL_CTX
