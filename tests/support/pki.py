"""A throwaway PKI for TLS tests: a CA and leaf certificates signed by it, made with the
``openssl`` CLI (EC P-256 keys, valid 2 days)."""
from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path
    serial: int

    @property
    def serial_hex(self) -> str:           # as ssl's getpeercert() shows it
        return f"{self.serial:X}".zfill(2)


class Pki:
    """A CA and leaf certificates signed by it, made with the openssl CLI in ``root``."""

    _serials = itertools.count(0x1001)

    def __init__(self, root: Path, name: str = "Test CA") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = root / "ca.pem"
        self.ca_key = root / "ca.key"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "2",
                 "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(self, *dns_names: str, tag: str | None = None) -> Pair:
        """A server certificate for ``dns_names`` (subjectAltName) with a fresh serial number."""
        return self._issue(tag or dns_names[0].replace("*", "star"), dns_names[0],
                           "subjectAltName=" + ",".join(f"DNS:{n}" for n in dns_names) + "\n"
                           "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                           "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
                           "authorityKeyIdentifier=keyid,issuer\n")

    def client(self, name: str) -> Pair:
        """A client certificate (clientAuth) for ``name``, with a fresh serial number."""
        return self._issue(f"client-{name}", name, "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                                    "extendedKeyUsage=clientAuth\n")

    def _issue(self, tag: str, common_name: str, extensions: str) -> Pair:
        serial = next(self._serials)
        base = self.root / f"{tag}-{serial:x}"
        key, csr, cert, ext = (base.with_suffix(s) for s in (".key", ".csr", ".pem", ".ext"))
        ext.write_text(extensions)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={common_name}")
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                 "-set_serial", str(serial), "-days", "2", "-extfile", ext, "-out", cert)
        return Pair(cert, key, serial)


def _openssl(*args) -> None:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
