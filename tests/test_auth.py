"""Authentication on file routes (``routes[].auth``): a real gateway with ``workers: 2``,
devcluster backends that echo the headers they got, and real credentials:

* Basic: an htpasswd file with a bcrypt ($2y$, as ``htpasswd -B`` writes) and a {SHA} user.
* API keys: a key file, keys in a header or a query parameter.
* JWT: RS256, ES256 and EdDSA tokens made with PyJWT; keys from a JWKS file, and from an
  HTTPS JWKS endpoint (a private CA) whose keys rotate and which then stops answering.

Every 401/403 path, the identity forwarded (and a client's own copy of that header
dropped), no credential in the access log, a rate limit keyed by a JWT claim, optional
authentication, and the config errors for bad credential files.
"""
from __future__ import annotations

import base64
import hashlib
import os
import http.server
import json
import ssl
import threading
import time

import bcrypt
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from support import Client, Pki, start_backend, start_with_admin, static_source, wait_until
from gateway.config import ConfigError, parse_route

pytestmark = pytest.mark.timeout(90)

API_KEY = "k-3f1c9a7e5b2d4c6a8e0f"
ISSUER = "https://issuer.example"


def jwk(key, kid: str, alg: str) -> dict:
    data = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


def token(key, kid: str, alg: str, lifetime: float = 300, **claims) -> str:
    now = time.time()
    body = {"iss": ISSUER, "aud": "orders", "sub": "alice", "exp": now + lifetime, "iat": now, **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


class JwksServer:
    """An HTTPS server answering GET with ``self.body``; ``answering`` False: 503."""

    def __init__(self, pki: Pki) -> None:
        self.body = b"{}"
        self.answering = True
        self.fetches = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):           # noqa: N802 - the stdlib's name
                server.fetches += 1
                status, body = (200, server.body) if server.answering else (503, b"down")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        pair = pki.leaf("localhost", tag="jwks")
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pair.cert, pair.key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://localhost:{self.httpd.server_address[1]}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, *keys: dict) -> None:
        self.body = json.dumps({"keys": list(keys)}).encode()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def keys():
    return {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1()),
            "ed": ed25519.Ed25519PrivateKey.generate(),
            "rsa2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "other": rsa.generate_private_key(public_exponent=65537, key_size=2048)}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, keys):
    root = tmp_path_factory.mktemp("auth")
    pki = Pki(root / "pki")
    jwks_server = JwksServer(pki)
    jwks_server.serve(jwk(keys["rsa"], "r1", "RS256"))
    bcrypt_hash = bcrypt.hashpw(b"s3cret-pw", bcrypt.gensalt(rounds=8)).decode().replace("$2b$", "$2y$", 1)
    sha_hash = "{SHA}" + base64.b64encode(hashlib.sha1(b"other-pw").digest()).decode()
    (root / "htpasswd").write_text(f"# users\nalice:{bcrypt_hash}\nbob:{sha_hash}\n")
    (root / "keys").write_text(f"billing:{API_KEY}\n")
    (root / "jwks.json").write_text(json.dumps({"keys": [jwk(keys["rsa"], "r1", "RS256"), jwk(keys["ec"], "e1", "ES256"),
                                                         jwk(keys["ed"], "d1", "EdDSA")]}))
    backend = start_backend("127.0.0.2", "zone-a", "auth-0")
    jwt_file = {"jwks_file": str(root / "jwks.json"), "issuer": ISSUER, "audiences": ["orders"],
                "claims_to_headers": [{"claim": "sub", "header": "x-user"}]}

    def route(name, prefix, **extra):
        return {"name": name, "match": {"path": {"prefix": prefix}}, "service": "web", **extra}
    config = {
        "workers": 2,
        "sources": [static_source("zone-a", {"web": [backend.address]})],
        "services": [{"name": "web", "port": 80}],
        "routes": [
            route("basic", "/basic", auth={"basic": {"htpasswd": str(root / "htpasswd"), "realm": "staff",
                                                     "forward_username": "x-user"}}),
            route("keys", "/keys", auth={"api_key": {"keys_file": str(root / "keys"), "query": "api_key",
                                                     "forward_client": "x-client"}}),
            route("jwt", "/jwt", auth={"jwt": jwt_file}),
            route("per-user", "/per-user", auth={"jwt": jwt_file},
                  rate_limit={"requests": 2, "per": "1h", "key": "header:x-user"}),
            route("optional", "/optional", auth={"required": False, "jwt": jwt_file}),
            route("rotating", "/rotating", auth={"jwt": {"jwks_url": jwks_server.url, "jwks_ca_file": str(pki.ca),
                                                         "jwks_refresh": "1s"}}),
            route("rest", "/"),
        ],
    }
    proc, admin = start_with_admin(config, root, "auth")
    proc.admin = admin
    yield proc, jwks_server
    proc.stop()
    backend.stop()
    jwks_server.stop()


def get(g, path: str, headers: dict | None = None):
    with g.client() as c:
        return c.request("GET", path, headers or {})


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(t: str) -> dict:
    return {"Authorization": f"Bearer {t}"}


def test_basic_auth(gw):
    g, _ = gw
    r = get(g, "/basic")
    assert r.status == 401 and r.header("www-authenticate") == 'Basic realm="staff", charset="UTF-8"'
    assert get(g, "/basic", basic("alice", "wrong")).status == 401
    assert get(g, "/basic", basic("nobody", "s3cret-pw")).status == 401
    assert get(g, "/basic", {"Authorization": "Basic !!!"}).status == 401
    for user, password in (("alice", "s3cret-pw"), ("bob", "other-pw")):
        r = get(g, "/basic", {**basic(user, password), "X-User": "mallory", "X-Request-Id": f"basic-{user}"})
        assert r.status == 200, (user, r.status)
        assert r.upstream_saw("x-user") == [user]        # the client's own X-User is dropped
    entries = g.log.by_ids(["basic-alice"])
    assert "s3cret" not in json.dumps(entries) and "czNjcmV0" not in g.log_path.read_text()


def test_a_bcrypt_check_does_not_hold_up_the_workers_other_requests(tmp_path):
    """bcrypt at cost 14 takes the better part of a second: checked on the event loop, every
    other request of the worker would wait for it. One worker; the slow check is seen to
    start (the worker's hashing thread appears), then another connection's request is answered
    while it runs, and the check's own answer comes after."""
    import select
    from support import children, static_source as source, start_backend as backend_at, start_with_admin as start
    slow = bcrypt.hashpw(b"right-pw", bcrypt.gensalt(rounds=14)).decode()
    (tmp_path / "htpasswd").write_text(f"carol:{slow}\n")
    upstream = backend_at("127.0.0.2", "zone-a", "auth-slow-0")
    config = {"workers": 1, "sources": [source("zone-a", {"web": [upstream.address]})],
              "services": [{"name": "web", "port": 80}],
              "routes": [{"name": "slow", "match": {"path": {"prefix": "/slow"}}, "service": "web",
                          "auth": {"basic": {"htpasswd": str(tmp_path / "htpasswd")}}},
                         {"name": "rest", "match": {"path": {"prefix": "/"}}, "service": "web"}]}
    g, _ = start(config, tmp_path, "auth-slow")
    try:
        worker = g.proc.pid             # workers: 1 serves in the gateway's own process
        assert children(worker) == []
        threads = lambda: len(os.listdir(f"/proc/{worker}/task"))     # noqa: E731
        assert get(g, "/warm").status == 200
        before = threads()
        with g.client() as checking, g.client() as other:
            checking.send(Client.build("GET", "/slow", basic("carol", "wrong-pw")))
            wait_until(lambda: threads() > before, 10, "the hashing thread")
            assert other.request("GET", "/other").status == 200
            assert select.select([checking.sock], [], [], 0)[0] == [], "the check answered before the other request"
            assert checking.read_response().status == 401
        assert get(g, "/slow", basic("carol", "right-pw")).status == 200
    finally:
        g.stop()
        upstream.stop()


def test_api_keys_in_a_header_or_the_query(gw):
    g, _ = gw
    r = get(g, "/keys")
    assert r.status == 401 and r.header("www-authenticate") == 'ApiKey realm="keys"'
    assert get(g, "/keys", {"X-Api-Key": "k-not-a-key-at-all"}).status == 401
    r = get(g, "/keys/a", {"X-Client-Hint": "kept", "x-API-key": API_KEY, "X-Client": "forged", "Accept": "*/*"})
    seen = {name.lower(): value for name, value in r.json()["headers"].items()}    # the echo keeps the case
    assert r.status == 200 and seen["x-client"] == "billing" and "x-api-key" not in seen
    assert seen["x-client-hint"] == "kept" and seen["accept"] == "*/*"      # only the owned fields go
    r = get(g, f"/keys/b?x=1&api_key={API_KEY}&y=2", {"X-Request-Id": "key-in-query"})
    assert r.status == 200 and r.json()["query"] == "x=1&y=2"
    entry = g.log.by_ids(["key-in-query"])["key-in-query"]
    assert API_KEY not in json.dumps(entry) and API_KEY not in g.log_path.read_text()


def test_jwt_from_a_jwks_file(gw, keys):
    g, _ = gw
    for key, kid, alg in ((keys["rsa"], "r1", "RS256"), (keys["ec"], "e1", "ES256"), (keys["ed"], "d1", "EdDSA")):
        r = get(g, "/jwt", {**bearer(token(key, kid, alg, sub=f"user-{alg}")), "X-User": "forged"})
        assert r.status == 200, (alg, r.status, r.body)
        assert r.upstream_saw("x-user") == [f"user-{alg}"]
    r = get(g, "/jwt")
    assert r.status == 401 and r.header("www-authenticate") == 'Bearer realm="jwt"'


def test_a_token_with_a_genuine_signature_but_other_claims_is_refused(gw, keys):
    """Verdicts are cached by the credential's last bytes (a JWT's signature) and hold the
    whole credential: a forged payload under the genuine signature, sent on one connection
    right after the genuine token passed, and the genuine token again after it, each get
    their own verdict."""
    g, _ = gw
    genuine = token(keys["rsa"], "r1", "RS256", sub="carol")
    header, _, signature = genuine.split(".")
    claims = base64.urlsafe_b64encode(json.dumps({"iss": ISSUER, "aud": "orders", "sub": "mallory",
                                                  "exp": time.time() + 300}).encode()).rstrip(b"=").decode()
    forged = f"{header}.{claims}.{signature}"
    with g.client() as c:
        answers = [c.request("GET", "/jwt", bearer(t)) for t in (genuine, forged, genuine, forged)]
    assert [r.status for r in answers] == [200, 401, 200, 401]
    assert [r.upstream_saw("x-user") for r in answers[::2]] == [["carol"], ["carol"]]
    assert answers[1].header("www-authenticate").endswith('error_description="bad token signature"')


@pytest.mark.parametrize("case, status, reason", [
    ("expired", 401, "token expired"),
    ("not yet valid", 401, "token not yet valid"),
    ("other key", 401, "bad token signature"),
    ("unknown kid", 401, "no key for the token's kid and alg"),
    ("malformed", 401, "malformed token"),
    ("HS256 with the public key", 401, "token algorithm not allowed"),
    ("wrong audience", 403, "wrong audience"),
    ("wrong issuer", 403, "wrong issuer"),
])
def test_jwt_refusals(gw, keys, case, status, reason):
    g, _ = gw
    rsa_key = keys["rsa"]
    made = {
        "expired": lambda: token(rsa_key, "r1", "RS256", lifetime=-120),
        "not yet valid": lambda: token(rsa_key, "r1", "RS256", nbf=time.time() + 600),
        "other key": lambda: token(keys["other"], "r1", "RS256"),
        "unknown kid": lambda: token(rsa_key, "zz", "RS256"),
        "malformed": lambda: "not.a.jwt",
        "HS256 with the public key": lambda: jwt.encode({"sub": "x"}, "a-shared-secret-of-32-bytes-or-more", algorithm="HS256",
                                                        headers={"kid": "r1"}),
        "wrong audience": lambda: token(rsa_key, "r1", "RS256", aud="payments"),
        "wrong issuer": lambda: token(rsa_key, "r1", "RS256", iss="https://elsewhere"),
    }[case]()
    rid = "jwt-" + case.replace(" ", "-")
    r = get(g, "/jwt", {**bearer(made), "X-Request-Id": rid})
    assert r.status == status, (case, r.status)
    if status == 401:
        assert r.header("www-authenticate") == f'Bearer realm="jwt", error="invalid_token", error_description="{reason}"'
    entry = g.log.by_ids([rid])[rid]
    assert entry["error"] == f"{'unauthenticated' if status == 401 else 'forbidden'}: {reason} (route jwt)", entry
    assert made not in g.log_path.read_text()


def test_a_rate_limit_keyed_by_a_claim(gw, keys):
    g, _ = gw
    statuses = {user: [get(g, "/per-user", bearer(token(keys["rsa"], "r1", "RS256", sub=user))).status
                       for _ in range(3)] for user in ("carol", "dave")}
    assert statuses == {"carol": [200, 200, 429], "dave": [200, 200, 429]}


def test_optional_auth(gw, keys):
    g, _ = gw
    r = get(g, "/optional", {"X-User": "forged"})
    assert r.status == 200 and r.upstream_saw("x-user") == []
    assert get(g, "/optional", bearer("not.a.jwt")).status == 401
    assert get(g, "/optional", bearer(token(keys["rsa"], "r1", "RS256"))).upstream_saw("x-user") == ["alice"]


def test_jwks_url_rotation_and_outage(gw, keys):
    """Keys from an HTTPS JWKS: a rotation is picked up by the refresh (1 s); the retired
    key's tokens are refused then; with the endpoint down, the last good keys stay.  Each
    worker fetches on its own: four fetches after a change (at 1 s each) include both's."""
    g, jwks_server = gw
    old = token(keys["rsa"], "r1", "RS256")
    wait_until(lambda: get(g, "/rotating", bearer(old)).status == 200, timeout=20, message="first JWKS fetch")
    jwks_server.serve(jwk(keys["rsa2"], "r2", "RS256"))
    fetches = jwks_server.fetches
    wait_until(lambda: jwks_server.fetches >= fetches + 4, timeout=20, message="refreshes after the rotation")
    new = token(keys["rsa2"], "r2", "RS256")
    assert [get(g, "/rotating", bearer(new)).status for _ in range(10)] == [200] * 10
    assert [get(g, "/rotating", bearer(old)).status for _ in range(10)] == [401] * 10
    jwks_server.answering = False
    fetches = jwks_server.fetches
    wait_until(lambda: jwks_server.fetches >= fetches + 4, timeout=20, message="failed refreshes")
    assert [get(g, "/rotating", bearer(new)).status for _ in range(10)] == [200] * 10
    assert "JWKS fetch failed" in g.output()


def test_the_console_shows_the_policy_and_no_credential(gw):
    g, _ = gw
    shown = g.admin.get("/routes/per-user")
    assert shown["policy"]["auth"] == {"method": "jwt", "required": True, "jwks_url": None, "issuer": ISSUER,
                                       "audiences": ["orders"], "claims_to_headers": {"sub": "x-user"}}
    assert shown["policy"]["rate_limit"] == {"requests": 2, "per_s": 3600.0, "burst": 2, "key": "header:x-user"}
    assert set(shown["denied"]) == {"rate_limited", "unauthenticated", "forbidden"}
    assert g.admin.get("/routes/basic")["policy"]["auth"]["users"] == 2
    config = json.dumps(g.admin.get("/config"))
    assert "$2y$" not in config and "{SHA}" not in config
    assert hashlib.sha256(API_KEY.encode()).hexdigest() not in config


@pytest.mark.parametrize("auth, error", [
    ({"basic": {"htpasswd": "/nonexistent/htpasswd"}},
     "auth.basic.htpasswd: cannot read /nonexistent/htpasswd: No such file or directory"),
    ({"jwt": {"jwks_url": "ftp://x"}}, "auth.jwt.jwks_url: must be an http(s) URL"),
    ({"jwt": {"issuer": "x"}}, "auth.jwt: needs exactly one of jwks_file, jwks_url"),
    ({}, "auth: needs exactly one of basic, api_key, jwt, ext_authz (got none)"),
])
def test_bad_auth_config_names_its_key(auth, error):
    with pytest.raises(ConfigError) as e:
        parse_route({"name": "r", "service": "web", "auth": auth})
    assert error in str(e.value), str(e.value)


def test_bad_credential_files_name_the_line(tmp_path):
    (tmp_path / "htpasswd").write_text("alice:$apr1$abc$def\n")
    (tmp_path / "keys").write_text("billing:short\n")
    (tmp_path / "jwks.json").write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    cases = [({"basic": {"htpasswd": str(tmp_path / "htpasswd")}},
              "auth.basic.htpasswd: line 1 (user alice): the hash must be bcrypt"),
             ({"api_key": {"keys_file": str(tmp_path / "keys")}},
              'auth.api_key.keys_file: line 1: must be "client:key" with a key of 16 characters or more'),
             ({"jwt": {"jwks_file": str(tmp_path / "jwks.json")}},
              "auth.jwt.jwks_file: the JWKS has no RSA, EC or OKP (Ed25519) key")]
    for auth, error in cases:
        with pytest.raises(ConfigError) as e:
            parse_route({"name": "r", "service": "web", "auth": auth})
        assert error in str(e.value), str(e.value)
