"""Edge policy as Kubernetes objects: SecurityPolicy and RateLimitPolicy
(policy.gateway.example/v1alpha1) attached by ``targetRefs`` to HTTPRoutes and Gateways of the
local API server, served by a real gateway process (``workers: 2``) watching it with the official
client. Credentials come from Secrets: an htpasswd with a bcrypt user, API keys, a JWKS.

Checked on the traffic (401/403/429/500 and what passes) and on the status the gateway writes
(``status.ancestors``: Accepted, or not with reason Conflicted, Invalid, TargetNotFound).
Every wait is bounded.
"""
from __future__ import annotations

import base64
import json
import time
import uuid

import bcrypt
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client, config

from support import AdminClient, Client, GatewayProcess, free_port, wait_listening
from gateway.devcluster.apiserver import ApiServerProcess
from test_gatewayapi import CONTROLLER, GW, add_backend_service, kube_source, wait_for

pytestmark = pytest.mark.timeout(120)

POLICY = "policy.gateway.example"
NS = "default"
ADDRESS = "127.0.21.1"
PASSWORD = "s3cret-pass"
API_KEY = "key-7c1e9a3b5d2f4a6c"


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory):
    server = ApiServerProcess(tmp_path_factory.mktemp("api"), name="policies", bookmark_interval=0.5).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(apiserver, backend_a):
    with config.new_client_from_config(config_file=str(apiserver.kubeconfig), context=apiserver.context) as c:
        add_backend_service(c, NS, "svc-a", backend_a)
        custom = client.CustomObjectsApi(c)
        custom.create_cluster_custom_object(GW, "v1", "gatewayclasses", {
            "metadata": {"name": "multi"}, "spec": {"controllerName": CONTROLLER}})
        custom.create_namespaced_custom_object(GW, "v1", NS, "gateways", {
            "metadata": {"name": "gw"},
            "spec": {"gatewayClassName": "multi", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "alt", "port": 8080, "protocol": "HTTP"}]}})
        yield c


@pytest.fixture(scope="module")
def gw(api, apiserver, tmp_path_factory):
    admin = free_port()
    proc = GatewayProcess({"sources": [kube_source(apiserver)], "workers": 2, "admin": f"127.0.0.1:{admin}",
                           "gateway_api": {"addresses": [ADDRESS]}},
                          tmp_path_factory.mktemp("gw")).start()
    proc.admin = AdminClient(admin)
    wait_listening(ADDRESS, 80, 20, proc.proc)
    wait_listening(ADDRESS, 8080, 20, proc.proc)
    yield proc
    proc.stop()


@pytest.fixture
def custom(api):
    return client.CustomObjectsApi(api)


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def get(path: str, headers=(), port: int = 80):
    with Client(ADDRESS, port) as c:
        return c.request("GET", path, list(headers), host="gw.test")


def basic(user: str, password: str) -> tuple[str, str]:
    return "Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def route(custom, path: str, section: str = "http", rule_name: str | None = None) -> str:
    """An HTTPRoute sending ``path`` to svc-a through listener ``section``; its name."""
    name = unique("r")
    rule = {"matches": [{"path": {"type": "PathPrefix", "value": path}}],
            "backendRefs": [{"name": "svc-a", "port": 80}], **({"name": rule_name} if rule_name else {})}
    custom.create_namespaced_custom_object(GW, "v1", NS, "httproutes", {
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "gw", "sectionName": section}], "rules": [rule]}})
    return name


def secret(core, name: str, data: dict[str, str]) -> None:
    core.create_namespaced_secret(NS, {"metadata": {"name": name}, "type": "Opaque",
                                       "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def htpasswd_secret(core, user: str = "alice") -> str:
    name = unique("htpasswd")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    secret(core, name, {".htpasswd": f"{user}:{hashed}\n"})
    return name


def policy(custom, kind: str, target: dict, spec: dict, name: str | None = None) -> str:
    name = name or unique(kind.lower())
    plural = {"SecurityPolicy": "securitypolicies", "RateLimitPolicy": "ratelimitpolicies"}[kind]
    custom.create_namespaced_custom_object(POLICY, "v1alpha1", NS, plural, {
        "metadata": {"name": name}, "spec": {"targetRefs": [{"group": GW, **target}], **spec}})
    return name


def on_route(name: str, rule: str | None = None) -> dict:
    return {"kind": "HTTPRoute", "name": name, **({"sectionName": rule} if rule else {})}


def accepted(custom, kind: str, name: str) -> list[dict]:
    """Our ``status.ancestors`` entries' Accepted conditions, once written for this generation."""
    plural = {"SecurityPolicy": "securitypolicies", "RateLimitPolicy": "ratelimitpolicies"}[kind]

    def written():
        obj = custom.get_namespaced_custom_object(POLICY, "v1alpha1", NS, plural, name)
        ours = [a for a in (obj.get("status") or {}).get("ancestors") or () if a["controllerName"] == CONTROLLER]
        conditions = [next(c for c in a["conditions"] if c["type"] == "Accepted") for a in ours]
        assert conditions and all(c["observedGeneration"] == obj["metadata"]["generation"] for c in conditions)
        return [{**c, "ancestorRef": a["ancestorRef"]} for c, a in zip(conditions, ours)]
    return wait_for(written)


def status_of(path: str, headers=(), port: int = 80) -> int:
    return get(path, headers, port).status


# -- SecurityPolicy ---------------------------------------------------------------------------


def test_basic_auth_from_a_secret_on_an_httproute(gw, custom, core):
    name = route(custom, "/basic")
    assert wait_for(lambda: status_of("/basic") == 200)
    pol = policy(custom, "SecurityPolicy", on_route(name),
                 {"basicAuth": {"users": {"name": htpasswd_secret(core)}, "realm": "orders",
                                "forwardUsername": "x-user"}})
    wait_for(lambda: status_of("/basic") == 401)
    denied = get("/basic")
    assert denied.header("www-authenticate").startswith('Basic realm="orders"')
    assert get("/basic", [basic("alice", "wrong")]).status == 401
    for _ in range(4):          # new connections: both workers serve the policy
        ok = get("/basic", [basic("alice", PASSWORD), ("X-User", "mallory")])
        assert ok.status == 200 and ok.upstream_saw("x-user") == ["alice"]
    (cond,) = accepted(custom, "SecurityPolicy", pol)
    assert (cond["status"], cond["reason"]) == ("True", "Accepted")
    assert cond["ancestorRef"] == {"group": GW, "kind": "Gateway", "namespace": NS, "name": "gw",
                                   "sectionName": "http"}
    # The console says what applies to the route and where it comes from, no credential.
    (shown,) = [r for r in gw.admin.get("/routes") if r["name"].startswith(f"{NS}.{name}.")]
    assert shown["policy"] == {"from": [f"SecurityPolicy {NS}/{pol}"],
                               "auth": {"method": "basic", "required": True, "realm": "orders", "users": 1}}


def test_api_keys_on_a_gateway_listener_and_a_route_policy_overriding_it(gw, custom, core):
    keys = unique("keys")
    secret(core, keys, {"ci": API_KEY})
    route(custom, "/listener-wide", section="alt")
    own = route(custom, "/own-policy", section="alt")
    route(custom, "/http-side")
    wait_for(lambda: status_of("/own-policy", port=8080) == 200 and status_of("/http-side") == 200)
    on_listener = policy(custom, "SecurityPolicy", {"kind": "Gateway", "name": "gw", "sectionName": "alt"},
                         {"apiKeyAuth": {"credentialRefs": [{"name": keys}], "header": "x-api-key"}})
    try:
        wait_for(lambda: status_of("/listener-wide", port=8080) == 401)
        assert status_of("/listener-wide", [("X-Api-Key", API_KEY)], port=8080) == 200
        assert status_of("/http-side") == 200          # listener "http" is not its target
        # A policy on the route replaces the listener's for that route (no merging).
        policy(custom, "SecurityPolicy", on_route(own), {"ipFilter": {"allow": ["10.0.0.0/8"]}})
        wait_for(lambda: status_of("/own-policy", [("X-Api-Key", API_KEY)], port=8080) == 403)
        assert status_of("/listener-wide", [("X-Api-Key", API_KEY)], port=8080) == 200
        (cond,) = accepted(custom, "SecurityPolicy", on_listener)
        assert cond["status"] == "True" and cond["ancestorRef"]["sectionName"] == "alt"
    finally:
        custom.delete_namespaced_custom_object(POLICY, "v1alpha1", NS, "securitypolicies", on_listener)
    wait_for(lambda: status_of("/listener-wide", port=8080) == 200)


def test_jwt_with_jwks_from_a_secret_and_claims_to_headers(gw, custom, core):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "alg": "RS256"}
    jwks = unique("jwks")
    secret(core, jwks, {"jwks.json": json.dumps({"keys": [jwk]})})
    name = route(custom, "/jwt")
    policy(custom, "SecurityPolicy", on_route(name),
           {"jwt": {"jwks": {"name": jwks}, "issuer": "https://issuer.example", "audiences": ["orders"],
                    "claimsToHeaders": [{"claim": "sub", "header": "x-subject"}]}})
    wait_for(lambda: status_of("/jwt") == 401)
    now = time.time()
    good = jwt.encode({"iss": "https://issuer.example", "aud": "orders", "sub": "bob", "exp": now + 300},
                      key, algorithm="RS256", headers={"kid": "k1"})
    ok = get("/jwt", [("Authorization", f"Bearer {good}")])
    assert ok.status == 200 and ok.upstream_saw("x-subject") == ["bob"]
    other_audience = jwt.encode({"iss": "https://issuer.example", "aud": "billing", "sub": "bob", "exp": now + 300},
                                key, algorithm="RS256", headers={"kid": "k1"})
    assert get("/jwt", [("Authorization", f"Bearer {other_audience}")]).status == 403
    assert get("/jwt", [("Authorization", "Bearer not.a.token")]).status == 401


def test_an_older_policy_on_the_same_target_wins_and_the_newer_is_conflicted(gw, custom, core):
    name = route(custom, "/conflict")
    # Created within one second the two tie on age, and "namespace/name" decides: the older
    # one's name sorts first too.
    older = policy(custom, "SecurityPolicy", on_route(name), {"ipFilter": {"deny": ["127.0.0.0/8"]}},
                   name=unique("a-older"))
    wait_for(lambda: status_of("/conflict") == 403)
    newer = policy(custom, "SecurityPolicy", on_route(name), {"ipFilter": {"allow": ["127.0.0.0/8"]}},
                   name=unique("b-newer"))
    (cond,) = accepted(custom, "SecurityPolicy", newer)
    assert (cond["status"], cond["reason"]) == ("False", "Conflicted") and older in cond["message"]
    assert status_of("/conflict") == 403
    (cond,) = accepted(custom, "SecurityPolicy", older)
    assert cond["status"] == "True"
    # The older one gone, the newer one applies and says so.
    custom.delete_namespaced_custom_object(POLICY, "v1alpha1", NS, "securitypolicies", older)
    wait_for(lambda: status_of("/conflict") == 200)
    wait_for(lambda: accepted(custom, "SecurityPolicy", newer)[0]["status"] == "True")


def test_a_policy_never_valid_fails_closed_then_applies_once_its_secret_comes(gw, custom, core):
    name = route(custom, "/closed")
    wait_for(lambda: status_of("/closed") == 200)
    users = unique("htpasswd-later")
    pol = policy(custom, "SecurityPolicy", on_route(name), {"basicAuth": {"users": {"name": users}}})
    (cond,) = accepted(custom, "SecurityPolicy", pol)
    assert (cond["status"], cond["reason"]) == ("False", "Invalid")
    assert cond["message"].startswith(f"spec.basicAuth.users: Secret {NS}/{users} not found")
    wait_for(lambda: status_of("/closed") == 500)       # not let through unchecked
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    secret(core, users, {".htpasswd": f"carol:{hashed}\n"})
    wait_for(lambda: status_of("/closed") == 401)
    assert status_of("/closed", [basic("carol", PASSWORD)]) == 200
    wait_for(lambda: accepted(custom, "SecurityPolicy", pol)[0]["status"] == "True")


def test_a_bad_change_names_the_key_and_the_last_valid_spec_goes_on(gw, custom, core):
    name = route(custom, "/last-good")
    pol = policy(custom, "SecurityPolicy", on_route(name),
                 {"basicAuth": {"users": {"name": htpasswd_secret(core, "dave")}}})
    wait_for(lambda: status_of("/last-good") == 401)
    obj = custom.get_namespaced_custom_object(POLICY, "v1alpha1", NS, "securitypolicies", pol)
    obj["spec"]["basicAuth"]["forwardUsername"] = "not a header"
    custom.replace_namespaced_custom_object(POLICY, "v1alpha1", NS, "securitypolicies", pol, obj)
    (cond,) = accepted(custom, "SecurityPolicy", pol)
    assert (cond["status"], cond["reason"]) == ("False", "Invalid")
    assert cond["message"].startswith("spec.basicAuth.forwardUsername:")
    assert cond["message"].endswith("the last valid spec still applies")
    assert status_of("/last-good") == 401
    assert status_of("/last-good", [basic("dave", PASSWORD)]) == 200


def test_target_not_found_and_an_unknown_key(gw, custom):
    missing = policy(custom, "SecurityPolicy", on_route("no-such-route"), {"ipFilter": {"deny": ["0.0.0.0/0"]}})
    (cond,) = accepted(custom, "SecurityPolicy", missing)
    assert (cond["status"], cond["reason"]) == ("False", "TargetNotFound")
    assert cond["ancestorRef"]["kind"] == "HTTPRoute"
    name = route(custom, "/typo")
    typo = policy(custom, "SecurityPolicy", on_route(name), {"ipFilter": {"denny": ["0.0.0.0/0"]}})
    (cond,) = accepted(custom, "SecurityPolicy", typo)
    assert cond["reason"] == "Invalid" and 'unknown key "denny"' in cond["message"], cond["message"]
    assert cond["message"].startswith("spec.ipFilter:")


# -- RateLimitPolicy --------------------------------------------------------------------------


def test_rate_limit_policy_on_a_rule_shared_by_both_workers(gw, custom):
    name = route(custom, "/limited", rule_name="checkout")
    wait_for(lambda: status_of("/limited") == 200)
    pol = policy(custom, "RateLimitPolicy", on_route(name, "checkout"), {"requests": 4, "per": "1h"})
    (cond,) = accepted(custom, "RateLimitPolicy", pol)
    assert cond["status"] == "True"
    (shown,) = [r for r in gw.admin.get("/routes") if r["name"].startswith(f"{NS}.{name}.")]
    assert shown["policy"]["from"] == [f"RateLimitPolicy {NS}/{pol}"]
    # The policy reached both workers once a request is refused; then the budget is spent.
    wait_for(lambda: status_of("/limited") == 429, timeout=15)
    statuses = [get("/limited") for _ in range(6)]      # new connections, both workers
    assert {r.status for r in statuses} == {429}
    assert int(statuses[0].header("retry-after")) > 0
    assert statuses[0].header("ratelimit-policy").endswith(";q=4;w=3600")


def test_a_global_limit_without_redis_is_invalid_and_names_the_key(gw, custom):
    name = route(custom, "/global")
    pol = policy(custom, "RateLimitPolicy", on_route(name), {"requests": 5, "scope": "global"})
    (cond,) = accepted(custom, "RateLimitPolicy", pol)
    assert cond["reason"] == "Invalid" and cond["message"].startswith("spec.scope:")
    assert status_of("/global") == 200          # an invalid rate limit applies nothing
