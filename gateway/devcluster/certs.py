"""Credentials of a local API server: a CA, a server certificate, a bearer token, a kubeconfig.

Certificates come from the ``openssl`` command line so that no Python crypto package is needed.
The CA is a real CA (basicConstraints CA:TRUE, keyCertSign) and the server certificate a real
leaf (SAN IP:127.0.0.1 and DNS:localhost, serverAuth, authority key id): urllib3 verifies it with
``verify_ssl`` on, including Python 3.13's VERIFY_X509_STRICT checks.

Everything lives in the state directory and is reused on restart, so a kubeconfig written before
a restart stays valid after it.
"""
from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

_DAYS = "3650"
_LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


@dataclass(frozen=True)
class Credentials:
    ca_cert: Path
    server_cert: Path      # leaf followed by the CA: the full chain the server presents
    server_key: Path
    token: str


def ensure_credentials(state_dir: Path, name: str) -> Credentials:
    """Create the CA, server certificate and token in ``state_dir`` unless they exist."""
    state_dir.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = state_dir / "ca.crt", state_dir / "ca.key"
    chain, server_key = state_dir / "server.crt", state_dir / "server.key"
    if not (ca_cert.exists() and chain.exists() and server_key.exists()):
        _make_certificates(state_dir, name, ca_cert, ca_key, chain, server_key)
    token_file = state_dir / "token"
    if not token_file.exists():
        _write_private(token_file, secrets.token_urlsafe(32))
    return Credentials(ca_cert, chain, server_key, token_file.read_text().strip())


def _make_certificates(state_dir: Path, name: str, ca_cert: Path, ca_key: Path,
                       chain: Path, server_key: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the local API server needs the openssl command line (apt-get install openssl)")
    csr, leaf, ext = state_dir / "server.csr", state_dir / "server.leaf.crt", state_dir / "server.ext"
    ext.write_text(_LEAF_EXTENSIONS)
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run([openssl, "req", "-x509", *ec_key, "-keyout", ca_key, "-out", ca_cert, "-days", _DAYS,
          "-subj", f"/CN=devcluster-{name}-ca",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign",
          "-addext", "subjectKeyIdentifier=hash"])
    _run([openssl, "req", "-new", *ec_key, "-keyout", server_key, "-out", csr,
          "-subj", f"/CN=devcluster-{name}-apiserver"])
    _run([openssl, "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
          "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
          "-out", leaf, "-days", _DAYS, "-extfile", ext])
    chain.write_bytes(leaf.read_bytes() + ca_cert.read_bytes())
    for path in (csr, leaf, ext):
        path.unlink()
    os.chmod(ca_key, 0o600)
    os.chmod(server_key, 0o600)


def _run(argv: list) -> None:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv[:3]))} failed: {result.stderr.strip()}")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def context_name(name: str) -> str:
    """The kubeconfig context (and cluster) name of local cluster ``name``: ``zone-<name>``."""
    return f"zone-{name}"


def write_kubeconfig(path: Path, name: str, server_url: str, creds: Credentials) -> Path:
    """A kubeconfig with one cluster (CA embedded), one token user and one context."""
    context = context_name(name)
    user = f"{context}-admin"
    ca_data = base64.b64encode(creds.ca_cert.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context,
                      "cluster": {"server": server_url, "certificate-authority-data": ca_data}}],
        "users": [{"name": user, "user": {"token": creds.token}}],
        "contexts": [{"name": context,
                      "context": {"cluster": context, "user": user, "namespace": "default"}}],
        "current-context": context,
        "preferences": {},
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    os.replace(tmp, path)
    return path
