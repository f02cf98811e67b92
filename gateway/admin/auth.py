"""Who may do what on the admin API: bearer tokens, browser sessions, scopes and CSRF.

Three scopes, each with its own token file (gateway.config ``admin:``):

    write    token_file           everything (reads, changes, reload, reopen)
    read     read_token_file      GET and HEAD only
    metrics  metrics_token_file   GET /metrics only (a Prometheus scrape)

An API client sends ``Authorization: Bearer <token>`` on every request, as before.  A
browser cannot, so the dashboard has a login: the token is pasted once on /login and
exchanged for a session cookie (HttpOnly: no script reads it; SameSite=Strict: no other
site's page makes the browser send it; Secure when the admin API is served over TLS).
A cookie is sent by the browser on its own, so a change made with one must also prove it
comes from the dashboard's own page (CSRF): the ``X-CSRF-Token`` header carries the
session's CSRF token, which only a script of this origin can read (GET /session), and an
``Origin`` header, when the browser sends one, must be this server's.

Sessions live in this process's memory: a restart signs everyone out.  A session ends at
its expiry (``session_ttl``), at logout, or when the token it was opened with changes
(a reload with a new token file): rotating a token ends the sessions it opened.
Tokens are compared in constant time (``hmac.compare_digest``); session ids (32 random
bytes) are looked up by their SHA-256, so a lookup's timing says nothing about an id.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import NamedTuple

from gateway.admin.http import HttpProblem, Request
from gateway.config import Config

WRITE, READ, METRICS = "write", "read", "metrics"
COOKIE = "gateway_session"
CSRF_HEADER = "x-csrf-token"
MAX_SESSIONS = 10_000           # a login flood (with a valid token) cannot grow memory without bound
SAFE_METHODS = frozenset({"GET", "HEAD"})
# Answered with no credentials at all: the kubelet's probes, and what the login page needs.
OPEN_PATHS = frozenset({"/healthz", "/ready", "/login", "/static/login.js", "/static/style.css"})

NEEDS_TOKEN = "a bearer token is required (Authorization: Bearer ...), or sign in at /login"


class Unauthenticated(HttpProblem):
    """401: no valid credentials (a browser asking for a page is sent to /login instead)."""

    def __init__(self, message: str = NEEDS_TOKEN) -> None:
        super().__init__(401, message)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


@dataclass(slots=True)
class Session:
    scope: str
    csrf: str
    expires: float              # time.monotonic()
    token_digest: bytes         # of the token it was opened with


class Principal(NamedTuple):
    scope: str | None           # None: an open path, no credentials
    via: str                    # "bearer", "session", "open" (no token configured) or "none"
    session: Session | None = None


def scope_tokens(config: Config) -> list[tuple[str, str]]:
    opts = config.admin_options
    return [(scope, token) for scope, token in ((WRITE, config.admin_token), (READ, opts.read_token),
                                                (METRICS, opts.metrics_token)) if token]


def match_token(config: Config, sent: str) -> str | None:
    """The scope whose token ``sent`` is, compared in constant time with every token."""
    found = None
    for scope, token in scope_tokens(config):
        if hmac.compare_digest(sent.encode(), token.encode()) and found is None:
            found = scope
    return found


def _token_of(config: Config, scope: str) -> str | None:
    return dict(scope_tokens(config)).get(scope)


class Sessions:
    """Session id (by its SHA-256) -> Session, in memory."""

    def __init__(self) -> None:
        self._by_digest: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._by_digest)

    def create(self, scope: str, token: str, ttl: float) -> tuple[str, Session]:
        now = time.monotonic()
        if len(self._by_digest) >= MAX_SESSIONS:
            self._purge(now)
        if len(self._by_digest) >= MAX_SESSIONS:    # still full: the oldest goes
            oldest = min(self._by_digest, key=lambda d: self._by_digest[d].expires)
            del self._by_digest[oldest]
        session_id = secrets.token_urlsafe(32)      # 32 random bytes
        session = Session(scope, secrets.token_urlsafe(32), now + ttl, _digest(token))
        self._by_digest[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        key = _digest(session_id)
        session = self._by_digest.get(key)
        if session is not None and session.expires <= time.monotonic():
            del self._by_digest[key]
            return None
        return session

    def drop(self, session_id: str) -> None:
        self._by_digest.pop(_digest(session_id), None)

    def _purge(self, now: float) -> None:
        for key in [k for k, s in self._by_digest.items() if s.expires <= now]:
            del self._by_digest[key]


def cookie_value(req: Request, name: str = COOKIE) -> str | None:
    for part in req.headers.get("cookie", "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def session_cookie(session_id: str, ttl: float, secure: bool) -> str:
    return (f"{COOKIE}={session_id}; Path=/; Max-Age={int(ttl)}; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))


def cleared_cookie(secure: bool) -> str:
    return f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")


class Authenticator:
    def __init__(self) -> None:
        self.sessions = Sessions()

    def authenticate(self, req: Request, config: Config, secure: bool) -> Principal:
        """Who sent ``req``; raises Unauthenticated (401) or HttpProblem (403).
        ``secure``: the admin API is served over TLS (this server's origin is https)."""
        if config.admin_token is None:      # no token configured: loopback only (config.py)
            return Principal(WRITE, "open")
        if req.path in OPEN_PATHS:
            return Principal(None, "none")
        sent = req.headers.get("authorization")
        if sent is not None:        # a bearer client; a wrong token is never rescued by a cookie
            kind, _, token = sent.partition(" ")
            scope = match_token(config, token.strip()) if kind == "Bearer" and token.strip() else None
            if scope is None:
                raise Unauthenticated()
            return Principal(scope, "bearer")
        session_id = cookie_value(req)
        session = self.sessions.get(session_id) if session_id else None
        if session is None:
            raise Unauthenticated()
        token = _token_of(config, session.scope)
        if token is None or not hmac.compare_digest(_digest(token), session.token_digest):
            self.sessions.drop(session_id)
            raise Unauthenticated("the session ended: its token was changed or removed; sign in again at /login")
        if req.method not in SAFE_METHODS:
            self.check_csrf(req, session, secure)
        return Principal(session.scope, "session", session)

    @staticmethod
    def check_origin(req: Request, secure: bool) -> None:
        """A browser's cross-site request names its page's origin (Fetch: Origin on every
        request but GET/HEAD; Sec-Fetch-Site too): only this server's own is accepted."""
        origin = req.headers.get("origin")
        expected = f"{'https' if secure else 'http'}://{req.headers.get('host', '')}"
        if origin is not None and origin != expected:
            raise HttpProblem(403, f"cross-origin request refused (Origin {origin}, this is {expected})")
        site = req.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise HttpProblem(403, f"cross-site request refused (Sec-Fetch-Site: {site})")

    def check_csrf(self, req: Request, session: Session, secure: bool) -> None:
        sent = req.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise HttpProblem(403, "CSRF check failed: a change made with a session cookie needs the "
                                   "X-CSRF-Token header (the csrf_token of GET /session)")
        self.check_origin(req, secure)

    @staticmethod
    def authorize(req: Request, principal: Principal) -> None:
        """403 when the scope does not allow the request."""
        scope = principal.scope
        if scope is None or scope == WRITE:
            return
        if scope == METRICS:
            if req.method in SAFE_METHODS and req.path == "/metrics":
                return
            raise HttpProblem(403, "the metrics token reads /metrics only")
        if req.method in SAFE_METHODS or (req.path == "/logout" and principal.via == "session"):
            return
        raise HttpProblem(403, f"read-only access (signed in with the read token): {req.method} "
                               f"{req.path} needs the write token")
