"""The shipped Gateway API setup, as deployed: ``deploy/gatewayapi/gateway.yaml`` applied to a
local API server, two gateway replicas running the shipped ConfigMap's ``gateway.yaml``
(``workers: 2``, admin tokens, the two kubernetes sources, ``console_gateway``) with only
what differs off a pod changed (kubeconfigs, token files, loopback addresses).

* the example HTTPRoute is served on each replica's Gateway address, by both workers;
* exactly one replica writes status (leader election, on by default);
* a console route added with the CLI and the write token is an HTTPRoute that every replica
  serves: its backend lives in another namespace, which the shipped ReferenceGrant allows
  (without it: RefNotPermitted, 500);
* the example route changed in the cluster is served at its new path by both replicas;
* ``deploy/gatewayapi/policies.yaml`` applied (its key replaced): the example route wants the
  API key on both replicas, the rate limit's headers come back, both policies are Accepted.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess

import pytest
import yaml
from kubernetes import client

from support import PYTHON, REPO, AdminClient, Client, GatewayProcess, free_port, wait_until
from gateway.devcluster.cluster import LocalCluster

GW = "gateway.networking.k8s.io"
POLICY = "policy.gateway.example"
API_KEY = "deploy-test-key-5e8c1a9d3f7b"
PLURALS = {"GatewayClass": "gatewayclasses", "Gateway": "gateways", "HTTPRoute": "httproutes",
           "ReferenceGrant": "referencegrants"}
TOKENS = {"token_file": "write-token-0123456789abcdef", "read_token_file": "read-token-0123456789abcdef",
          "metrics_token_file": "metrics-token-0123456789abcdef"}

READ = {"Authorization": f"Bearer {TOKENS['read_token_file']}"}

pytestmark = pytest.mark.timeout(180)


def shipped_gateway_yaml() -> dict:
    configmap = yaml.safe_load((REPO / "deploy/kubernetes/configmap.yaml").read_text())
    return yaml.safe_load(configmap["data"]["gateway.yaml"])


def apply_example(cluster: LocalCluster) -> None:
    """deploy/gatewayapi/gateway.yaml, as `kubectl apply -f` would (the namespace first)."""
    custom = client.CustomObjectsApi(cluster.api_client)
    cluster.core_v1().create_namespace({"metadata": {"name": "gateway"}})
    for doc in yaml.safe_load_all((REPO / "deploy/gatewayapi/gateway.yaml").read_text()):
        version = doc["apiVersion"].split("/")[1]
        if doc["kind"] == "HTTPRoute":          # the example's Service port: the local cluster's
            doc["spec"]["rules"][0]["backendRefs"][0]["port"] = cluster.layout.port
        if doc["kind"] == "GatewayClass":
            custom.create_cluster_custom_object(GW, version, PLURALS[doc["kind"]], doc)
        else:
            custom.create_namespaced_custom_object(GW, version, doc["metadata"]["namespace"],
                                                   PLURALS[doc["kind"]], doc)


def replica_config(tmp_path, i: int, a: LocalCluster, b: LocalCluster, admin_port: int) -> dict:
    cfg = copy.deepcopy(shipped_gateway_yaml())
    for key, token in TOKENS.items():
        (tmp_path / f"{i}-{key}").write_text(token)
        cfg["admin"][key] = str(tmp_path / f"{i}-{key}")
    cfg["admin"]["listen"] = f"127.0.0.1:{admin_port}"
    local, other = cfg["sources"]
    local.pop("in_cluster")
    local.update(kubeconfig=str(a.kubeconfig), context=a.context)
    other.update(kubeconfig=str(b.kubeconfig), context=b.context)
    cfg["services"][0]["port"] = a.layout.port
    cfg["services"][0]["health_check"]["path"] = "/healthz"
    cfg["gateway_api"]["addresses"] = [f"127.0.51.{10 + i}"]
    return cfg


def apply_policies(cluster: LocalCluster) -> None:
    """deploy/gatewayapi/policies.yaml with its placeholder key replaced, as `kubectl apply -f`
    would (the local API server serves the policy kinds as if policy-crds.yaml were applied)."""
    custom = client.CustomObjectsApi(cluster.api_client)
    for doc in yaml.safe_load_all((REPO / "deploy/gatewayapi/policies.yaml").read_text()):
        if doc["kind"] == "Secret":
            assert doc["stringData"] == {"ci": "REPLACE-WITH-A-LONG-RANDOM-KEY"}
            doc["stringData"]["ci"] = API_KEY
            cluster.core_v1().create_namespaced_secret(doc["metadata"]["namespace"], doc)
        else:
            plural = {"SecurityPolicy": "securitypolicies", "RateLimitPolicy": "ratelimitpolicies"}[doc["kind"]]
            custom.create_namespaced_custom_object(POLICY, "v1alpha1", doc["metadata"]["namespace"], plural, doc)


def status_of(address: str, path: str, headers=()) -> int:
    with Client(address, 8000) as c:
        return c.request("GET", path, list(headers)).status


def served_everywhere(address: str, path: str) -> bool:
    """8 new connections in a row: the workers take them by SO_REUSEPORT, so both have it."""
    return all(status_of(address, path) == 200 for _ in range(8))


@pytest.fixture
def clusters(tmp_path):
    a = LocalCluster("a", tmp_path / "a", ["127.0.51.2"], port=0).start()
    b = LocalCluster("b", tmp_path / "b", ["127.0.51.3"], port=0).start()
    try:
        a.start_backends()
        b.start_backends()
        yield a, b
    finally:
        a.close()
        b.close()


def test_shipped_gatewayapi_setup_with_two_replicas(clusters, tmp_path):
    a, b = clusters
    apply_example(a)
    replicas = []
    try:
        for i in range(2):
            admin = AdminClient(free_port())
            proc = GatewayProcess(replica_config(tmp_path, i, a, b, admin.port), tmp_path / f"r{i}").start(timeout=60)
            replicas.append((proc, admin, f"127.0.51.{10 + i}"))
        writers = []
        for _, admin, address in replicas:
            wait_until(lambda: served_everywhere(address, "/api/x"), 30, "the example HTTPRoute",
                       ignore=(OSError,))
            # The admin API starts once the data plane serves: wait for it too.
            assert wait_until(lambda: admin.request("GET", "/status")[0], 30, "the admin API",
                              ignore=(OSError,)) == 401             # the tokens are required
            status, _, body = admin.request("GET", "/status", headers=READ)
            assert status == 200, body
            assert [w["ready"] for w in body["workers"]] == [True, True]
            writers.append(body["gateway_api"]["writes_status"])
        assert sorted(writers) == [False, True]

        env = {**os.environ, "GATEWAY_ADMIN_TOKEN": TOKENS["token_file"]}
        added = subprocess.run([PYTHON, "-m", "gateway", "route", "add", "console-r", "--prefix", "/console",
                                "--service", "httpbin", "--admin", f"http://127.0.0.1:{replicas[0][1].port}"],
                               cwd=str(REPO), env=env, capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
        assert added.returncode == 0, added.stderr
        assert "added as HTTPRoute gateway/console-r" in added.stdout
        for _, _, address in replicas:
            wait_until(lambda: served_everywhere(address, "/console/x"), 30, "the console route")

        custom = client.CustomObjectsApi(a.api_client)
        route = custom.get_namespaced_custom_object(GW, "v1", "default", "httproutes", "httpbin-api")
        route["spec"]["rules"][0]["matches"][0]["path"]["value"] = "/v2"
        custom.replace_namespaced_custom_object(GW, "v1", "default", "httproutes", "httpbin-api", route)
        for _, _, address in replicas:
            wait_until(lambda: served_everywhere(address, "/v2/x") and status_of(address, "/api/x") == 404,
                       30, "the changed route")
        parents = custom.get_namespaced_custom_object(GW, "v1", "default", "httproutes",
                                                      "httpbin-api")["status"]["parents"]
        accepted = {c["type"]: c for c in parents[0]["conditions"]}["Accepted"]
        assert accepted["status"] == "True", json.dumps(parents)

        apply_policies(a)
        key = [("X-Api-Key", API_KEY)]
        for _, admin, address in replicas:
            wait_until(lambda: all(status_of(address, "/v2/x") == 401 for _ in range(8)), 30, "the SecurityPolicy")
            with Client(address, 8000) as c:
                resp = c.request("GET", "/v2/x", key)
            assert resp.status == 200 and resp.json()["headers"]["x-client"] == "ci"
            _, _, routes = admin.request("GET", "/routes", headers=READ)
            (shown,) = [r for r in routes if r["name"].startswith("default.httpbin-api.")]
            assert shown["policy"]["from"] == ["SecurityPolicy default/httpbin-api-keys",
                                               "RateLimitPolicy default/httpbin-api-per-client"], shown
            assert shown["policy"]["rate_limit"] == {"requests": 100, "per_s": 1.0, "burst": 200, "key": "client"}
        for plural, name in (("securitypolicies", "httpbin-api-keys"), ("ratelimitpolicies", "httpbin-api-per-client")):
            ancestors = wait_until(lambda: (custom.get_namespaced_custom_object(
                POLICY, "v1alpha1", "default", plural, name).get("status") or {}).get("ancestors"), 30, "policy status")
            assert [c["status"] for c in ancestors[0]["conditions"]] == ["True"], json.dumps(ancestors)
    finally:
        for proc, _, _ in replicas:
            proc.stop()
