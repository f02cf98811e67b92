"""Credential files a route's ``auth`` names, read and checked when the config is: an
unreadable or malformed file is a config error naming its key (and line), never a surprise
on the request path.  Each parser keeps the validate.py contract: (value, path, errs), None
when bad.  gateway.policy.auth verifies requests against what these return.
"""
from __future__ import annotations

import hashlib
import os
import ssl
from typing import Any

from gateway.config.validate import _err, _Errors, _str

# htpasswd hashes we verify: bcrypt (Apache's $2y$, and $2a$/$2b$) and {SHA} (base64 SHA-1).
# Apache's MD5 ($apr1$) and crypt() are refused: weak, and not in a well-kept library here.
HASH_PREFIXES = ("$2y$", "$2b$", "$2a$", "{SHA}")


def _read(value: Any, path: str, errs: _Errors) -> str | None:
    name = _str(value, path, errs)
    if name is None:
        return None
    try:
        with open(os.path.expanduser(name), encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        _err(errs, path, f"cannot read {name}: {exc.strerror if isinstance(exc, OSError) else exc}")
        return None


def _lines(text: str):
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def htpasswd(value: Any, path: str, errs: _Errors) -> tuple[tuple[str, str], ...] | None:
    """An htpasswd file: "user:hash" lines -> ((user, hash), ...)."""
    text = _read(value, path, errs)
    return None if text is None else htpasswd_users(text, path, errs)


def htpasswd_users(text: str, path: str, errs: _Errors) -> tuple[tuple[str, str], ...] | None:
    """htpasswd text (a file's, a Secret's) -> ((user, hash), ...)."""
    users, before = [], len(errs)
    for number, line in _lines(text):
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            _err(errs, path, f'line {number}: must be "user:hash"')
        elif not hashed.startswith(HASH_PREFIXES):
            _err(errs, path, f"line {number} (user {user}): the hash must be bcrypt ($2y$, made by "
                             f"htpasswd -B) or {{SHA}} (htpasswd -s)")
        else:
            users.append((user, hashed))
    if len(errs) == before and not users:
        _err(errs, path, "has no users")
    return tuple(users) if len(errs) == before else None


def api_keys(value: Any, path: str, errs: _Errors) -> tuple[tuple[str, str], ...] | None:
    """An API key file: "client:key" lines -> ((client, sha256 of the key), ...): only the
    digests are kept, so the keys themselves are in no object the gateway holds."""
    text = _read(value, path, errs)
    if text is None:
        return None
    entries = []
    for number, line in _lines(text):
        client, sep, key = line.partition(":")
        entries.append((f"line {number}", client if sep else "", key))
    return key_digests(entries, path, errs, 'must be "client:key" with a key of 16 characters or more')


def key_digests(entries, path: str, errs: _Errors, form: str) -> tuple[tuple[str, str], ...] | None:
    """(where, client, key) entries -> ((client, sha256 of the key), ...); ``form`` says what an
    entry must look like."""
    keys, seen, before = [], set(), len(errs)
    for where, client, key in entries:
        if not client or len(key) < 16:
            _err(errs, path, f"{where}: {form}")
            continue
        digest = hashlib.sha256(key.encode()).hexdigest()
        if digest in seen:
            _err(errs, path, f"{where} (client {client}): the same key as an earlier one")
        seen.add(digest)
        keys.append((client, digest))
    if len(errs) == before and not keys:
        _err(errs, path, "has no keys")
    return tuple(keys) if len(errs) == before else None


def ca_file(value: Any, path: str, errs: _Errors) -> str | None:
    """A PEM file of CA certificates (for fetching from a private HTTPS server)."""
    name = _str(value, path, errs)
    if name is None:
        return None
    try:
        ssl.create_default_context(cafile=os.path.expanduser(name))
    except (OSError, ssl.SSLError) as exc:
        _err(errs, path, f"not a readable PEM CA file: {exc}")
        return None
    return os.path.expanduser(name)


def jwks(value: Any, path: str, errs: _Errors) -> str | None:
    """A JWKS file (RFC 7517 JSON), returned as its text once it parses with a usable key."""
    text = _read(value, path, errs)
    if text is None:
        return None
    problem = jwks_problem(text)
    if problem:
        _err(errs, path, problem)
        return None
    return text


def jwks_problem(text: str) -> str | None:
    """Why ``text`` is not a JWKS with at least one key we can verify with (None: it is)."""
    import jwt
    try:
        keys = jwt.PyJWKSet.from_json(text).keys
    except (jwt.PyJWKSetError, jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
        return f"not a usable JWKS: {exc}"
    if not [k for k in keys if k.key_type in ("RSA", "EC", "OKP")]:
        return "the JWKS has no RSA, EC or OKP (Ed25519) key"
    return None
