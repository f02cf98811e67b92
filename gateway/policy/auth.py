"""Authentication of a route's requests (``routes[].auth``): HTTP Basic against htpasswd,
API keys, and JWTs verified with a JWKS.

The compiled request path (``_speedups/policy.pyx`` RoutePolicy) calls ``authenticate(head)``
on the route's authenticator.  It returns a ``Denial`` (401 with a challenge, or 403), or an
``Identity``: the header fields to set on the request (the identity it forwards) after
dropping every field named in ``owned``, so a client cannot send its own ``X-User``.  A
credential seen before costs a field and a dict lookup in compiled code, no call here: every
verdict is remembered in the authenticator's ``verdicts`` (``_speedups.policy.Verdicts``) by
the credential's bytes, bounded.  A bcrypt password, which costs milliseconds of CPU, is checked
in a thread instead (``authenticate`` answers None and the exchange waits for ``ask``): one
client sending new passwords does not stall the worker's other requests.  Crypto is PyJWT with cryptography, and bcrypt; nothing here
logs a credential: reasons name what was wrong, never the value.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import binascii
import hashlib
import hmac
import logging
import ssl
import time
import urllib.parse
import urllib.request
import weakref

import jwt

from _speedups.policy import Denial, Identity, Verdicts
from _speedups.stats import DENY_FORBIDDEN, DENY_UNAUTHENTICATED
from gateway.config import ApiKeyAuth, AuthPolicy, BasicAuth, JwtAuth
from gateway.config.credentials import jwks_problem

log = logging.getLogger("gateway.policy.auth")

# Asymmetric algorithms only: a JWKS holds public keys, and an HS256 token "signed" with
# one of them must not pass (the classic algorithm confusion).
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
UNKNOWN_KID_REFETCH = 10.0      # seconds: a token naming an unknown key fetches the JWKS again, this seldom
HASHING_THREADS = 2             # per worker: bcrypt releases the GIL, so they run beside the loop
MAX_HASHING = 256               # distinct passwords waiting for a check per route; past it: 503
_hashing_pool = None
ANONYMOUS = Identity()          # let through, nothing to forward (optional auth, no forwarded name)


def _hashing() -> concurrent.futures.ThreadPoolExecutor:
    global _hashing_pool
    if _hashing_pool is None:
        _hashing_pool = concurrent.futures.ThreadPoolExecutor(HASHING_THREADS, thread_name_prefix="bcrypt")
    return _hashing_pool


class _Authenticator:
    """What the three methods share: the verdicts, the challenge, optional credentials.
    ``field``: the request field a credential comes in, where the compiled check finds it."""

    def __init__(self, route: str, required: bool, challenge: str, owned: tuple[str | None, ...],
                 field: bytes | None) -> None:
        self.route = route
        self.required = required
        self.challenge = f"WWW-Authenticate: {challenge}".encode()
        self.owned = frozenset(name.encode() for name in owned if name)
        self.verdicts = Verdicts(field)

    def missing(self) -> Identity | Denial:
        """No credentials: through without an identity when optional, else 401."""
        if not self.required:
            return ANONYMOUS
        return self.deny(401, "no credentials")

    def deny(self, status: int, why: str, challenge: bytes | None = None) -> Denial:
        kind = DENY_UNAUTHENTICATED if status == 401 else DENY_FORBIDDEN
        return Denial(status, f"{'unauthenticated' if status == 401 else 'forbidden'}: {why} (route {self.route})",
                      (challenge or self.challenge) if status == 401 else None, kind)


class BasicAuthenticator(_Authenticator):
    """``loop``: bcrypt hashes are checked in a thread, the verdict given on the loop (None:
    checked at once, for tests and benchmarks)."""

    def __init__(self, route: str, required: bool, cfg: BasicAuth,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(route, required, f'Basic realm="{cfg.realm}", charset="UTF-8"', (cfg.forward_username,),
                         b"authorization")
        self.users = dict(cfg.users)
        self.forward = cfg.forward_username.encode() if cfg.forward_username else None
        self.loop = loop
        self.hashing: dict[bytes, list] = {}        # credential -> the answers waiting for its check
        self.busy = Denial(503, f"too many passwords being checked (route {route})", None, DENY_UNAUTHENTICATED)

    def authenticate(self, head) -> Identity | Denial | None:
        value = head.header(b"authorization")
        if value is None:
            return self.missing()
        verdict = self.verdicts.lookup(value)
        if verdict is not None:
            return verdict
        found = self._user(value)
        if isinstance(found, Denial):
            return self.verdicts.remember(value, found)
        user, password, hashed = found
        if hashed.startswith("{SHA}"):
            return self.verdicts.remember(value, self._outcome(user, _sha_matches(password, hashed)))
        if self.loop is not None:
            return None                             # ask() checks it in a thread
        return self.verdicts.remember(value, self._outcome(user, _bcrypt_matches(password, hashed)))

    def ask(self, head, client_ip: bytes, answer) -> None:
        """Check a bcrypt password in a thread; ``answer(verdict)`` on the loop. Requests with
        the same credential meanwhile wait for the same check."""
        value = head.header(b"authorization")
        waiting = self.hashing.get(value)
        if waiting is not None:
            waiting.append(answer)
            return
        if len(self.hashing) >= MAX_HASHING:
            answer(self.busy)
            return
        self.hashing[value] = [answer]
        user, password, hashed = self._user(value)
        future = self.loop.run_in_executor(_hashing(), _bcrypt_matches, password, hashed)
        future.add_done_callback(lambda done: self._checked(value, user, done))

    def _checked(self, value: bytes, user: str, done: asyncio.Future) -> None:
        matched = not done.cancelled() and done.exception() is None and done.result()
        verdict = self.verdicts.remember(value, self._outcome(user, matched))
        for answer in self.hashing.pop(value, ()):
            answer(verdict)

    @staticmethod
    def verdict(answer: Identity | Denial) -> Identity | Denial:
        return answer

    def _user(self, value: bytes) -> tuple[str, str, str] | Denial:
        """(user, password, the user's hash) from an Authorization value, or why not."""
        scheme, _, encoded = value.partition(b" ")
        if scheme.lower() != b"basic":
            return self.deny(401, "not Basic credentials")
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return self.deny(401, "malformed Basic credentials")
        hashed = self.users.get(user) if sep else None
        if hashed is None:
            return self.deny(401, "wrong user or password")
        return user, password, hashed

    def _outcome(self, user: str, matched: bool) -> Identity | Denial:
        if not matched:
            return self.deny(401, "wrong user or password")
        return Identity([(self.forward, self.forward, user.encode())]) if self.forward else ANONYMOUS


def _sha_matches(password: str, hashed: str) -> bool:
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    return hmac.compare_digest(digest, hashed[5:])


def _bcrypt_matches(password: str, hashed: str) -> bool:
    import bcrypt
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:          # a hash bcrypt cannot read (checked at load; never a 500)
        return False


class ApiKeyAuthenticator(_Authenticator):
    def __init__(self, route: str, required: bool, cfg: ApiKeyAuth) -> None:
        header = cfg.header.encode() if cfg.header else None
        super().__init__(route, required, f'ApiKey realm="{route}"', (cfg.forward_client, cfg.header), header)
        self.clients = {digest: client for client, digest in cfg.keys}
        self.header = header
        self.query = cfg.query.encode() + b"=" if cfg.query else None
        self.forward = cfg.forward_client.encode() if cfg.forward_client else None

    def authenticate(self, head) -> Identity | Denial:
        key = head.header(self.header) if self.header is not None else None
        if key is None and self.query is not None:
            key = self._from_query(head)
        if key is None:
            return self.missing()
        verdict = self.verdicts.lookup(key)
        if verdict is None:
            client = self.clients.get(hashlib.sha256(key).hexdigest())
            if client is None:
                verdict = self.deny(401, "unknown API key")
            else:
                verdict = Identity([(self.forward, self.forward, client.encode())]) if self.forward else ANONYMOUS
            self.verdicts.remember(key, verdict)
        return verdict

    def _from_query(self, head) -> bytes | None:
        """The key from the query, which is then taken out of the target: the access log
        and the upstream get the request without it."""
        path, sep, query = head.target.partition(b"?")
        if not sep:
            return None
        key, kept = None, []
        for part in query.split(b"&"):
            if part.startswith(self.query) and key is None:
                key = urllib.parse.unquote_to_bytes(part[len(self.query):])
            else:
                kept.append(part)
        if key is not None:
            head.target = path + (b"?" + b"&".join(kept) if kept else b"")
        return key


class JwksKeys:
    """The keys a JWT is checked with, by ``kid``.  New keys empty the ``verdicts`` of every
    authenticator using them: what the old keys verified may differ now."""

    def __init__(self, text: str | None = None) -> None:
        self.by_kid: dict[str, jwt.PyJWK] = {}
        self.unnamed: list[jwt.PyJWK] = []
        self.text: str | None = None
        self.users: weakref.WeakSet[Verdicts] = weakref.WeakSet()
        if text is not None:
            self.load(text)

    def load(self, text: str) -> None:
        if text == self.text:
            return                      # the same keys: what they verified stays verified
        self.text = text
        by_kid, unnamed = {}, []
        for key in jwt.PyJWKSet.from_json(text).keys:
            if key.algorithm_name in JWT_ALGORITHMS:
                if key.key_id:
                    by_kid[key.key_id] = key
                else:
                    unnamed.append(key)
        self.by_kid, self.unnamed = by_kid, unnamed
        for verdicts in list(self.users):
            verdicts.clear()

    def find(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        if kid is not None:
            key = self.by_kid.get(kid)
            return [key] if key is not None and key.algorithm_name == alg else []
        return [k for k in (*self.by_kid.values(), *self.unnamed) if k.algorithm_name == alg]

    def refetch(self) -> None:
        """A token named a key we do not have (a file's keys are all there is)."""


class JwksFetcher(JwksKeys):
    """A JWKS URL, fetched at start and every ``refresh`` seconds in a thread (off the
    request path); a failed fetch or a bad answer keeps the last good keys."""

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str, ca_file: str | None, refresh: float) -> None:
        super().__init__()
        self.loop, self.url, self.refresh = loop, url, refresh
        self.context = ssl.create_default_context(cafile=ca_file) if url.startswith("https:") else None
        self.last_fetch = 0.0
        self.fetching = False
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.fetch()

    def fetch(self) -> None:
        if self.fetching:
            return
        self.fetching = True
        self.last_fetch = time.monotonic()
        future = self.loop.run_in_executor(None, self._download)
        future.add_done_callback(self._fetched)

    def _download(self) -> str:
        with urllib.request.urlopen(self.url, timeout=10, context=self.context) as answer:
            return answer.read(1 << 20).decode()

    def _fetched(self, future: asyncio.Future) -> None:
        self.fetching = False
        try:
            text = future.result()
            problem = jwks_problem(text)
            if problem:
                raise ValueError(problem)
            self.load(text)
        except Exception as exc:    # noqa: BLE001 - any failure keeps the last good keys
            log.warning("JWKS fetch failed; the last good keys stay",
                        extra={"fields": {"url": self.url, "error": str(exc)[:200]}})
        if self.closed:
            return
        if self.timer is None or self.timer.when() <= self.loop.time():
            self.timer = self.loop.call_later(self.refresh, self._tick)

    def _tick(self) -> None:
        self.timer = None
        self.fetch()

    def refetch(self) -> None:
        if time.monotonic() - self.last_fetch > UNKNOWN_KID_REFETCH:
            self.fetch()

    def close(self) -> None:
        """No route names the URL any more: no more fetches (one under way ends there)."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


_REASONS = [(jwt.ExpiredSignatureError, "token expired"), (jwt.ImmatureSignatureError, "token not yet valid"),
            (jwt.InvalidSignatureError, "bad token signature"), (jwt.MissingRequiredClaimError, "token lacks a claim"),
            (jwt.InvalidIssuedAtError, "bad iat claim"), (jwt.InvalidAlgorithmError, "token algorithm not allowed")]


class JwtAuthenticator(_Authenticator):
    def __init__(self, route: str, required: bool, cfg: JwtAuth, keys: JwksKeys) -> None:
        super().__init__(route, required, f'Bearer realm="{route}"', tuple(c.header for c in cfg.claims_to_headers),
                         b"authorization")
        self.keys = keys
        keys.users.add(self.verdicts)
        self.issuer = cfg.issuer
        self.audiences = list(cfg.audiences) or None
        self.skew = cfg.clock_skew
        self.claims = [(c.claim, c.header.encode()) for c in cfg.claims_to_headers]

    def authenticate(self, head) -> Identity | Denial:
        value = head.header(b"authorization")
        if value is None:
            return self.missing()
        verdict = self.verdicts.lookup(value)      # by the whole field: a repeat is one lookup
        if verdict is not None:
            return verdict
        if value[:7].lower() != b"bearer ":
            return self.missing()
        return self._verify(value, value[7:].strip())

    def _verify(self, value: bytes, token: bytes) -> Identity | Denial:
        """``token`` checked; the verdict is remembered under the field's ``value``."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            return self.verdicts.remember(value, self._invalid("malformed token"))
        alg = header.get("alg")
        keys = self.keys.find(header.get("kid"), alg) if alg in JWT_ALGORITHMS else []
        if not keys:
            if alg in JWT_ALGORITHMS:
                self.keys.refetch()
            return self._invalid("no key for the token's kid and alg" if alg in JWT_ALGORITHMS
                                 else "token algorithm not allowed")
        try:
            claims = self._decode(token, keys, alg)
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            why = "wrong audience" if isinstance(exc, jwt.InvalidAudienceError) else "wrong issuer"
            return self.verdicts.remember(value, self.deny(403, why))
        except jwt.PyJWTError as exc:
            why = next((text for cls, text in _REASONS if isinstance(exc, cls)), "invalid token")
            denial = self._invalid(why)
            if not isinstance(exc, (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError)):
                self.verdicts.remember(value, denial)       # time will not make it valid
            return denial
        identity = Identity([(header_name, header_name, str(claims[claim]).encode())
                             for claim, header_name in self.claims if claim in claims])
        expires = claims.get("exp")
        if isinstance(expires, (int, float)):
            return self.verdicts.remember(value, identity, expires + self.skew)
        return self.verdicts.remember(value, identity)

    def _decode(self, token: bytes, keys: list, alg: str) -> dict:
        error: jwt.PyJWTError | None = None
        for key in keys:
            try:
                return jwt.decode(token, key.key, algorithms=[alg], audience=self.audiences, issuer=self.issuer,
                                  leeway=self.skew, options={"verify_aud": self.audiences is not None})
            except jwt.InvalidSignatureError as exc:
                error = exc                 # another key without a kid may fit
        raise error

    def _invalid(self, why: str) -> Denial:
        return self.deny(401, why, f'WWW-Authenticate: Bearer realm="{self.route}", error="invalid_token", '
                                   f'error_description="{why}"'.encode())


def authenticator(route: str, policy: AuthPolicy, jwks: JwksKeys | None = None,
                  loop: asyncio.AbstractEventLoop | None = None):
    """The route's authenticator; ``jwks``: the keys of its JWT method (a JwksKeys of the
    file, or the data plane's JwksFetcher of the URL); ``loop``: where a bcrypt check's
    verdict is given (None: checked at once)."""
    if policy.basic is not None:
        return BasicAuthenticator(route, policy.required, policy.basic, loop)
    if policy.api_key is not None:
        return ApiKeyAuthenticator(route, policy.required, policy.api_key)
    return JwtAuthenticator(route, policy.required, policy.jwt, jwks)
