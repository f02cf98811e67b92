"""TLS: HTTPS listeners (SNI among several certificates, reloaded without a restart)
and TLS from the gateway to upstreams (verification on unless turned off)."""
from __future__ import annotations

import logging
import os
import ssl

from gateway.config import Certificate, TlsListener, UpstreamTls

log = logging.getLogger("gateway.tls")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def certificate_names(path: str) -> list[str]:
    """DNS names (subjectAltName, else the common name) a certificate is for."""
    info = ssl._ssl._test_decode_cert(path)     # the stdlib's own PEM reader; no new dependency
    names = [value for kind, value in info.get("subjectAltName", ()) if kind == "DNS"]
    if not names:
        names = [value for rdn in info.get("subject", ()) for key, value in rdn if key == "commonName"]
    return [n.lower() for n in names]


class ServerTls:
    """The SSL contexts of one HTTPS listener.

    The first certificate's context is the listener's; an SNI callback moves a
    handshake to the context whose certificate names the requested server (exact,
    then "*.domain").  ``reload()`` loads the files again into the same contexts,
    so renewed certificates apply to new handshakes with no restart.
    """

    def __init__(self, config: TlsListener) -> None:
        self.config = config
        self.contexts = [self._context(cert) for cert in config.certificates]
        self.by_name: dict[str, ssl.SSLContext] = {}
        self.names = [certificate_names(cert.cert) for cert in config.certificates]
        self._mtimes: dict[str, float] = {}
        self._index_names()
        self._remember_mtimes()
        self.default.sni_callback = self._select

    @property
    def default(self) -> ssl.SSLContext:
        return self.contexts[0]

    def _context(self, cert: Certificate) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _VERSIONS[self.config.min_version]
        context.set_alpn_protocols(["http/1.1"])
        context.load_cert_chain(cert.cert, cert.key)
        return context

    def _index_names(self) -> None:
        self.by_name.clear()
        for names, context in zip(self.names, self.contexts):
            for name in names:
                self.by_name.setdefault(name, context)

    def _select(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx) -> None:
        if not server_name:
            return
        name = server_name.lower()
        context = self.by_name.get(name)
        if context is None and "." in name:
            context = self.by_name.get("*." + name.split(".", 1)[1])
        if context is not None and context is not sslobj.context:
            sslobj.context = context

    def _remember_mtimes(self) -> None:
        for cert in self.config.certificates:
            for path in (cert.cert, cert.key):
                self._mtimes[path] = _mtime(path)

    def reload(self) -> None:
        """Load every certificate again; a pair that fails to load keeps the old one."""
        for i, (cert, context) in enumerate(zip(self.config.certificates, self.contexts)):
            try:
                # Try the files on a scratch context first: a load_cert_chain that fails on the
                # key (say, a new certificate beside the old key) has already replaced the live
                # context's certificate, and every handshake on it would fail.  Read the names
                # before touching the live context too (an unreadable file raises there).
                self._context(cert)
                names = certificate_names(cert.cert)
                context.load_cert_chain(cert.cert, cert.key)
                self.names[i] = names
            except (ssl.SSLError, OSError, ValueError) as exc:
                log.error("certificate reload failed; keeping the loaded one",
                          extra={"fields": {"cert": cert.cert, "error": str(exc)}})
        self._index_names()
        self._remember_mtimes()
        log.info("certificates reloaded", extra={"fields": {"names": sorted(self.by_name)}})

    def reload_if_changed(self) -> bool:
        if any(_mtime(path) != mtime for path, mtime in self._mtimes.items()):
            self.reload()
            return True
        return False


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0


def upstream_context(config: UpstreamTls) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca)
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context
