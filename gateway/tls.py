"""TLS: HTTPS listeners (SNI among several certificates, reloaded without a restart)
and TLS from the gateway to upstreams (verification on unless turned off)."""
from __future__ import annotations

import contextlib
import logging
import os
import ssl
import tempfile
from typing import Iterator

from _speedups.tls import (TICKET_KEY_SIZE, report_refusals, request_client_certificate_unverified,
                           require_subject_alt_names, select_by_server_name, send_chain_as_loaded,
                           set_ticket_keys, use_ticket_keys)
from gateway.config import Certificate, ClientValidation, TlsListener, UpstreamTls

log = logging.getLogger("gateway.tls")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def certificate_names(path: str) -> list[str]:
    """DNS names (subjectAltName, else the common name) a certificate is for."""
    info = ssl._ssl._test_decode_cert(path)     # the stdlib's own PEM reader; no new dependency
    names = [value for kind, value in info.get("subjectAltName", ()) if kind == "DNS"]
    if not names:
        names = [value for rdn in info.get("subject", ()) for key, value in rdn if key == "commonName"]
    return [n.lower() for n in names]


@contextlib.contextmanager
def pem_files(cert: Certificate) -> Iterator[tuple[str, str]]:
    """(chain path, key path) of ``cert``: its files, or for PEM text two files that exist
    only meanwhile (the ssl module loads certificates from paths only)."""
    if not cert.pem:
        yield cert.cert, cert.key
        return
    with tempfile.TemporaryDirectory(prefix="gateway-cert-") as tmp:     # mode 0700
        paths = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
        for path, text in zip(paths, (cert.cert, cert.key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        yield paths


def load_certificate(context: ssl.SSLContext, cert: Certificate) -> list[str]:
    """Load ``cert`` into ``context``; the names it serves (raises ssl.SSLError, OSError, ValueError)."""
    with pem_files(cert) as (chain, key):
        context.load_cert_chain(chain, key)
        return list(cert.names) or certificate_names(chain)


def _rotation_interval() -> float:
    text = os.environ.get("GATEWAY_TICKET_ROTATION")     # seconds; the tests set it small
    return float(text) if text else 3600.0


class TicketKeys:
    """The session ticket keys of one replica, which every worker and every HTTPS listener
    share: a client resumes its session whichever worker its next connection reaches (each
    SSL context's own random keys resumed one in N with N workers).

    A new key every ``ROTATION`` seconds encrypts the new tickets; the ``KEEP - 1`` before it
    still decrypt (then the ticket is renewed), so a ticket stays good for two rotations at
    least (OpenSSL gives TLS 1.3 tickets two hours). The keys live in the control plane and
    reach the workers as a message; they are never written anywhere."""

    ROTATION = _rotation_interval()
    KEEP = 3

    def __init__(self) -> None:
        self.keys = [os.urandom(TICKET_KEY_SIZE)]

    def rotate(self) -> None:
        self.keys = [os.urandom(TICKET_KEY_SIZE), *self.keys][:self.KEEP]

    def message(self) -> dict:
        return {"t": "ticket_keys", "keys": [key.hex() for key in self.keys]}


# Until the control plane's keys arrive (and in a process without one): keys of its own.
set_ticket_keys([os.urandom(TICKET_KEY_SIZE)])


def certificates_only_differ(a: TlsListener, b: TlsListener) -> bool:
    """``a`` becomes ``b`` by ``ServerTls.replace_certificates``: the same address, versions and
    client validation (a context's trusted CAs can be added to, never taken away: a change
    there is a new listening socket)."""
    return (a.listen, a.min_version, a.client_validation) == (b.listen, b.min_version, b.client_validation)


def require_client_certificates(context: ssl.SSLContext, validation: ClientValidation) -> None:
    """Ask ``context``'s clients for a certificate and verify it against the validation's CAs.
    Every context of a listener gets the same: a handshake starts on the default one (which
    decides whether a certificate is asked for) and SNI may move it to another (whose CAs then
    verify)."""
    context.load_verify_locations(cadata=validation.ca)
    if validation.insecure_fallback:
        request_client_certificate_unverified(context)
    else:
        context.verify_mode = ssl.CERT_REQUIRED
        report_refusals(context, _log_refusal)


# Handshakes this process refused on mutual-TLS ports, by reason (gateway_tls_handshakes_refused_total)
TLS_REFUSAL_REASONS = ("certificate_rejected", "no_certificate", "other")
tls_refusals = [0] * len(TLS_REFUSAL_REASONS)


def _log_refusal(alert: str, verify_error: str | None, server_name: str | None) -> None:
    """A handshake refused for its client certificate (or another fatal alert on an mTLS port)."""
    reason = 0 if verify_error else 1 if alert == "certificate required" else 2
    tls_refusals[reason] += 1
    log.info("TLS handshake refused", extra={"fields": {
        "alert": alert, "verify_error": verify_error, "server_name": server_name}})


class ServerTls:
    """The SSL contexts of one HTTPS listener.

    The first certificate's context is the listener's; an SNI callback moves a
    handshake to the context whose certificate names the requested server (exact,
    then "*.domain").  ``reload()`` loads the files again into the same contexts,
    so renewed certificates apply to new handshakes with no restart.
    """

    def __init__(self, config: TlsListener, alpn: bool = True) -> None:
        self.config = config
        self.alpn = alpn                # HTTPS offers h2 and http/1.1; a TLS listener (streams) nothing
        self.contexts: list[ssl.SSLContext] = []
        self.names: list[list[str]] = []
        for cert in config.certificates:
            context, names = self._context(cert)
            self.contexts.append(context)
            self.names.append(names)
        self.by_name: dict[str, ssl.SSLContext] = {}
        self._mtimes: dict[str, float] = {}
        self._index_names()
        self._remember_mtimes()
        select_by_server_name(self.default, self.by_name)     # read at each handshake

    @property
    def default(self) -> ssl.SSLContext:
        return self.contexts[0]

    def _new_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _VERSIONS[self.config.min_version]
        if self.alpn:
            context.set_alpn_protocols(["h2", "http/1.1"])     # h2: _speedups/h2_downstream.pyx
        use_ticket_keys(context)                            # the replica's (TicketKeys)
        send_chain_as_loaded(context)
        if self.config.client_validation is not None:
            require_client_certificates(context, self.config.client_validation)
        return context

    def _context(self, cert: Certificate) -> tuple[ssl.SSLContext, list[str]]:
        context = self._new_context()
        return context, load_certificate(context, cert)

    def replace_certificates(self, config: TlsListener) -> None:
        """Serve ``config``'s certificates from the next handshake on (``certificates_only_differ``:
        a Secret rotated, a listener's certificateRefs changed). The default context
        stays the listener's (the server holds it) and gets the first certificate."""
        old = self.config
        self.config = config
        try:
            contexts, names = [self.default], [load_certificate(self._new_context(), config.certificates[0])]
            load_certificate(self.default, config.certificates[0])
            for cert in config.certificates[1:]:
                context, cert_names = self._context(cert)
                contexts.append(context)
                names.append(cert_names)
        except (ssl.SSLError, OSError, ValueError) as exc:   # checked in the control plane; kept safe
            self.config = old
            log.error("certificates not replaced; keeping the loaded ones", extra={"fields": {"error": str(exc)}})
            return
        self.contexts, self.names = contexts, names
        self._index_names()
        self._remember_mtimes()

    def _index_names(self) -> None:
        self.by_name.clear()
        for names, context in zip(self.names, self.contexts):
            for name in names:
                self.by_name.setdefault(name, context)

    def _remember_mtimes(self) -> None:
        self._mtimes = {path: _mtime(path) for cert in self.config.certificates if not cert.pem
                        for path in (cert.cert, cert.key)}

    def reload(self) -> None:
        """Load every certificate file again; a pair that fails to load keeps the old one."""
        kept = []
        for i, (cert, context) in enumerate(zip(self.config.certificates, self.contexts)):
            if cert.pem:
                continue                # PEM text changes only with a new config
            try:
                # Try the files on a scratch context first: a load_cert_chain that fails on the
                # key (say, a new certificate beside the old key) has already replaced the live
                # context's certificate, and every handshake on it would fail.  Read the names
                # before touching the live context too (an unreadable file raises there).
                self._context(cert)
                names = list(cert.names) or certificate_names(cert.cert)
                context.load_cert_chain(cert.cert, cert.key)
                self.names[i] = names
            except (ssl.SSLError, OSError, ValueError) as exc:
                log.error("certificate reload failed; keeping the loaded one",
                          extra={"fields": {"cert": cert.cert, "error": str(exc)}})
                kept.append(cert.cert)
        self._index_names()
        self._remember_mtimes()
        if kept:        # not "reloaded" right after a failure: a reader would take it for success
            log.warning("certificates reloaded but for those that failed, which keep their loaded pair",
                        extra={"fields": {"kept": kept, "names": sorted(self.by_name)}})
        else:
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


def upstream_context(config: UpstreamTls, alpn: str = "http/1.1") -> ssl.SSLContext:
    """``alpn``: "h2" for services with ``protocol: h2``."""
    if config.ca_pem == "":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)      # verifies against no CA at all
    else:
        context = ssl.create_default_context(cafile=config.ca, cadata=config.ca_pem)
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.subject_alt_names:
        context.check_hostname = False          # the names below authenticate, not the SNI
        require_subject_alt_names(context, config.subject_alt_names)
    if config.client_certificate is not None:
        load_certificate(context, config.client_certificate)
    context.set_alpn_protocols([alpn])
    return context
