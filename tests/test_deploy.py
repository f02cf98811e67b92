"""deploy/: the container image (Dockerfile, .dockerignore) and the Kubernetes manifests.

No container engine and no Kubernetes cluster run here, so what can be checked without them is:

* every manifest is valid for its kind: it parses, deserializes into the ``kubernetes`` client's
  model and serializes back unchanged (a misspelt or misplaced field would be dropped);
* the pieces agree with each other and with the gateway: RBAC grants read access to exactly
  what a kubernetes source watches, the Service reaches the port the ConfigMap's gateway.yaml
  listens on and the probes the admin API's /ready and /healthz (on the pod IP, token
  required), the mounts put the config, the kubeconfig and the admin token where gateway.yaml
  and the image's CMD expect them, the grace period outlasts the preStop sleep plus the drain;
* the ConfigMap's gateway.yaml passes ``gateway validate`` (with its credentials, which only
  exist in a pod, replaced by a kubeconfig and an admin token file written here);
* the Dockerfile has the intended structure, and its build steps work outside docker: the
  build stage's ``pip wheel`` commands on exactly what its COPY lines take from the build
  context (after .dockerignore), then the final stage's install, wheels only, into a fresh
  virtualenv where ``gateway version`` runs. ``docker build`` itself runs only where
  ``docker info`` reaches an engine.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from gateway import __version__
from gateway.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# Templates of Secrets made from real credentials: not in kustomization.yaml.
SECRET_TEMPLATES = {"secret-kubeconfig-cluster-b.yaml", "secret-admin-token.yaml"}
ADMIN_TOKEN_FILE = "/etc/gateway/admin/token"
# admin.<key> -> where the ConfigMap says it is (each a key of the Secret gateway-admin-token)
ADMIN_TOKEN_FILES = {"token_file": ADMIN_TOKEN_FILE,
                     "read_token_file": "/etc/gateway/admin/read-token",
                     "metrics_token_file": "/etc/gateway/admin/metrics-token"}

pytestmark = pytest.mark.timeout(60)


# --- manifests -----------------------------------------------------------------------------

def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_objects() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in manifest_files() for d in load_docs(p)]


def the(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in all_objects()
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def model_name(doc: dict) -> str:
    """The client's model for a kind: "apps/v1" Deployment -> V1Deployment, "autoscaling/v2" -> V2..."""
    return doc["apiVersion"].rsplit("/", 1)[-1].capitalize() + doc["kind"]


def without_nulls(value):
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


@pytest.mark.parametrize("name, doc", all_objects(),
                         ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in all_objects()])
def test_manifest_is_valid_for_its_kind(name, doc):
    from kubernetes import client
    api = client.ApiClient()
    # kubernetes >= 35 (pydantic models): ApiClient.deserialize(text, type, content_type) takes
    # the response *text*; older clients took a response object (``.data``). The models
    # validate types (a string where an integer belongs raises) but silently drop unknown
    # keys, so the round trip back to a dict must give the manifest unchanged.
    obj = api.deserialize(json.dumps(doc), model_name(doc), "application/json")
    assert type(obj).__name__ == model_name(doc)
    assert without_nulls(api.sanitize_for_serialization(obj)) == doc, \
        f"{name}: fields the {model_name(doc)} model does not know (misspelt or misplaced?)"
    if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding", "Namespace"):
        assert doc["metadata"]["namespace"] == "gateway", name


def test_kustomization_lists_every_manifest_but_the_secret_templates():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    assert kustomization["namespace"] == "gateway"
    assert all((K8S / r).is_file() for r in resources), resources
    # The Secrets are created from a real kubeconfig file and a random token (README); applying
    # a template with the rest would overwrite it with the placeholder on every `kubectl apply -k`.
    assert SECRET_TEMPLATES <= {p.name for p in manifest_files()}
    assert sorted(resources) == sorted(p.name for p in manifest_files() if p.name not in SECRET_TEMPLATES)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds_the_listed_objects():
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    built = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out) if d}
    listed = {(d["kind"], d["metadata"]["name"]) for n, d in all_objects() if n not in SECRET_TEMPLATES}
    assert built == listed


def _grants(role: dict) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule   # no resourceNames, URLs
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                grants.setdefault((g, r), set()).update(rule["verbs"])
    return grants


READ = {"get", "list", "watch"}


def test_rbac_grants_only_read_access_to_endpoints():
    role = the("ClusterRole", "gateway-endpoint-reader")
    grants = _grants(role)
    # The one write: ServiceExport conditions (gateway.mcs, with merge: exported).
    assert grants.pop(("multicluster.x-k8s.io", "serviceexports/status")) == {"patch", "update"}
    assert set(grants) == {("", "services"), ("", "endpoints"), ("discovery.k8s.io", "endpointslices"),
                           ("multicluster.x-k8s.io", "serviceexports"),
                           ("multicluster.x-k8s.io", "serviceimports")}
    assert all(verbs == READ for verbs in grants.values()), grants
    # The one namespaced grant: the leader election's Lease (below).
    assert [d["metadata"]["name"] for _, d in all_objects() if d["kind"] in ("Role", "RoleBinding")] == \
        ["gateway-leader-election"] * 2

    sa = the("ServiceAccount")
    pod = the("Deployment")["spec"]["template"]["spec"]
    for name in ("gateway-endpoint-reader", "gateway-route-controller"):
        binding = the("ClusterRoleBinding", name)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                      "name": name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                        "namespace": sa["metadata"]["namespace"]}]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert pod.get("automountServiceAccountToken", True)      # in_cluster reads the token


def test_route_controller_reads_gateway_api_writes_status_and_httproutes_only():
    """What the controller watches (ROUTE_KINDS) is readable, what it writes status of
    (STATUS_KINDS) patchable, and nothing more: the lists come from the controller itself."""
    from gateway.gatewayapi.controller import ROUTE_KINDS, STATUS_KINDS
    grants = _grants(the("ClusterRole", "gateway-route-controller"))
    gw = "gateway.networking.k8s.io"
    watched = [plural for _, group, _, plural, _ in ROUTE_KINDS if group == gw]
    statuses = [f"{plural}/status" for group, _, plural in STATUS_KINDS.values() if group == gw]
    assert "tlsroutes" in watched and "tlsroutes/status" in statuses
    for kind in watched:
        if kind != "httproutes":
            assert grants[(gw, kind)] == READ, kind
    for kind in statuses:
        assert grants[(gw, kind)] == {"patch", "update"}, kind
    assert grants[("", "namespaces")] == READ
    assert grants[("", "secrets")] == READ          # certificateRefs, and the credentials policies name
    assert grants[("", "configmaps")] == READ       # CA certificates of client certificate validation
    policy = "policy.gateway.example"               # the gateway's own policy kinds
    for kind in ("securitypolicies", "ratelimitpolicies"):
        assert grants[(policy, kind)] == READ and grants[(policy, f"{kind}/status")] == {"patch", "update"}
    # The console writes routes as HTTPRoutes because the ConfigMap says console_gateway.
    assert configmap_gateway_yaml()["gateway_api"]["console_gateway"]
    assert grants[(gw, "httproutes")] == READ | {"create", "delete", "patch", "update"}
    assert set(grants) == {(gw, k) for k in (*watched, *statuses)} \
        | {(policy, k) for k in ("securitypolicies", "ratelimitpolicies", "securitypolicies/status",
                                 "ratelimitpolicies/status")} | {("", "namespaces"), ("", "secrets"), ("", "configmaps")}


def test_rbac_covers_what_the_kubernetes_source_lists():
    """Every ``list_*`` call of the kubernetes source is on a resource the ClusterRole grants."""
    source = (REPO / "gateway" / "sources" / "kubernetes.py").read_text()
    calls = set(re.findall(r"\b(?:core|discovery)\.list_(?:namespaced_)?(\w+?)(?:_for_all_namespaces)?\b",
                           source))
    resources = {"endpoint_slice": "endpointslices", "endpoints": "endpoints", "service": "services"}
    assert calls and calls <= resources.keys(), calls
    granted = {r for rule in the("ClusterRole", "gateway-endpoint-reader")["rules"] for r in rule["resources"]}
    assert {resources[c] for c in calls} <= granted
    assert '"serviceexports"' in source and "serviceexports" in granted


def test_leader_election_may_get_create_and_update_leases_in_its_namespace_only():
    """What gateway.gatewayapi.leader calls on leases, granted by a Role in the gateway's
    namespace and bound to its ServiceAccount."""
    role, binding, sa = the("Role", "gateway-leader-election"), the("RoleBinding", "gateway-leader-election"), \
        the("ServiceAccount")
    source = (REPO / "gateway" / "gatewayapi" / "leader.py").read_text()
    calls = set(re.findall(r"_leases\.(\w+)_namespaced_lease\b", source))
    assert calls == {"read", "create", "replace"}, calls
    verbs = {"read": "get", "create": "create", "replace": "update"}
    assert _grants(role) == {("coordination.k8s.io", "leases"): {verbs[c] for c in calls}}
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == sa["metadata"]["namespace"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "gateway-leader-election"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]


def test_rbac_covers_what_the_gateway_api_controller_watches():
    from gateway.gatewayapi.controller import CREDENTIALS, ROUTE_KINDS, SECRETS, SERVICE_KINDS, STATUS_KINDS
    routes = _grants(the("ClusterRole", "gateway-route-controller"))
    readers = _grants(the("ClusterRole", "gateway-endpoint-reader"))
    for _, group, _, plural, _ in ROUTE_KINDS + (SECRETS, CREDENTIALS):
        assert READ <= routes.get((group or "", plural), set()), plural
    for _, group, _, plural, _ in SERVICE_KINDS:
        assert READ <= readers.get((group or "", plural), set()), plural
    for group, _, plural in STATUS_KINDS.values():        # status writes, policies' included
        assert "patch" in routes.get((group, f"{plural}/status"), set()), plural


def test_policy_crds_define_the_kinds_the_gateway_watches():
    """deploy/gatewayapi/policy-crds.yaml: one CRD per policy kind the controller watches, with
    the group, version, plural, scope and status subresource it reads and writes."""
    from gateway.gatewayapi.controller import ROUTE_KINDS
    from gateway.gatewayapi.policies import POLICY_GROUP
    crds = {d["spec"]["names"]["plural"]: d for d in yaml.safe_load_all(
        (REPO / "deploy/gatewayapi/policy-crds.yaml").read_text())}
    watched = {plural: version for _, group, version, plural, _ in ROUTE_KINDS if group == POLICY_GROUP}
    assert set(crds) == set(watched) == {"securitypolicies", "ratelimitpolicies"}
    for plural, crd in crds.items():
        spec = crd["spec"]
        assert crd["metadata"]["name"] == f"{plural}.{POLICY_GROUP}" and spec["group"] == POLICY_GROUP
        assert spec["scope"] == "Namespaced"
        (version,) = spec["versions"]
        assert version["name"] == watched[plural] and version["subresources"] == {"status": {}}
        assert version["schema"]["openAPIV3Schema"]["properties"]["spec"]["required"] == ["targetRefs"]


# --- the ConfigMap's gateway.yaml ------------------------------------------------------------

def configmap_gateway_yaml() -> dict:
    return yaml.safe_load(the("ConfigMap", "gateway-config")["data"]["gateway.yaml"])


FAKE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: test, user: {token: test}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
"""


FAKE_ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
FAKE_TOKENS = {"token_file": FAKE_ADMIN_TOKEN, "read_token_file": "test-read-token-0123456789abcdef",
               "metrics_token_file": "test-metrics-token-0123456789abcdef"}


@pytest.fixture
def validatable_config(tmp_path) -> Path:
    """The ConfigMap's gateway.yaml with its credentials pointed at files written here.

    In a pod, ``in_cluster: true`` reads the ServiceAccount token, and the `cluster-b`
    kubeconfig and the admin token are the mounted Secrets; none exists on this machine, and
    validation reads the kubeconfig and token files. Everything else (listen, the admin
    address, timeouts, services, routes, the sources' names and namespaces) is validated as
    written.
    """
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(FAKE_KUBECONFIG)
    config = configmap_gateway_yaml()
    for source in config["sources"]:
        if source.get("type") == "kubernetes":
            source.pop("in_cluster", None)
            source["kubeconfig"] = str(kubeconfig)
    for key, path in ADMIN_TOKEN_FILES.items():
        assert config["admin"][key] == path
        token = tmp_path / f"admin-{key}"
        token.write_text(FAKE_TOKENS[key] + "\n")
        config["admin"][key] = str(token)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_configmap_config_needs_only_the_credentials_rewritten():
    with pytest.raises(ConfigError) as err:
        parse_config(configmap_gateway_yaml())
    assert err.value.errors == [
        *(f"admin.{key}: file not found: {path}" for key, path in ADMIN_TOKEN_FILES.items()),
        # without its token file, the admin API on the pod IP is refused: it never runs open
        "admin: the admin API on 0.0.0.0 (not loopback) needs a token: "
        "admin: {listen: ..., token_file: ...}",
        "sources[1].kubeconfig: file not found: /etc/gateway/clusters/cluster-b/kubeconfig"]


def test_configmap_config_passes_gateway_validate(validatable_config):
    result = subprocess.run([sys.executable, "-m", "gateway", "validate", "--config",
                             str(validatable_config)], cwd=str(REPO), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "ok (2 sources, 1 services, 1 routes)" in result.stdout
    sources = {s["name"]: s for s in configmap_gateway_yaml()["sources"]}
    assert sources["local"]["in_cluster"] is True
    assert sources["cluster-b"]["kubeconfig"] == "/etc/gateway/clusters/cluster-b/kubeconfig"
    assert all(s.get("health_check") for s in configmap_gateway_yaml()["services"])


# --- the Deployment against the config, the Service, the Dockerfile --------------------------

def container() -> dict:
    (c,) = the("Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def container_port(port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container()["ports"] if p.get("name") == port]
    return number


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def test_probes_reach_what_the_gateway_listens_on(validatable_config):
    config = load_config(str(validatable_config))
    c = container()
    assert config.listen.port == container_port("http")
    assert not is_loopback(config.listen.host)       # the kubelet and the Service use the pod IP
    expected_path = {"readinessProbe": "/ready", "livenessProbe": "/healthz", "startupProbe": None}
    assert c.get("readinessProbe") and c.get("livenessProbe") and c.get("startupProbe")
    for kind, path in expected_path.items():
        probe = c.get(kind)
        if probe is None:
            continue
        assert not probe.get("exec"), f"{kind}: exec probes start a process every period"
        if "httpGet" in probe:
            # Only an admin API bound to the pod IP answers the kubelet.
            assert config.admin is not None and not is_loopback(config.admin.host), kind
            assert container_port(probe["httpGet"]["port"]) == config.admin.port, kind
            if path:
                assert probe["httpGet"]["path"] == path, kind
            # The kubelet sends no token: only these two paths answer without one.
            assert probe["httpGet"]["path"] in ("/ready", "/healthz"), kind
            assert "httpHeaders" not in probe["httpGet"], kind
        else:
            assert container_port(probe["tcpSocket"]["port"]) == config.listen.port, kind
    # Every probe asks the gateway itself (a TCP connect is answered by the kernel).
    assert all("httpGet" in c[kind] for kind in expected_path), "httpGet probes on the admin API"
    # The admin API listens on the pod IP only because it requires a token there (it can
    # change the config); validation refuses it otherwise.
    assert config.admin is not None and not is_loopback(config.admin.host)
    assert config.admin_token == FAKE_ADMIN_TOKEN
    # The scrape and the read-only console have their own, narrower tokens.
    assert config.admin_options.read_token == FAKE_TOKENS["read_token_file"]
    assert config.admin_options.metrics_token == FAKE_TOKENS["metrics_token_file"]
    assert container_port("admin") == config.admin.port == 9901


def test_service_sends_port_80_to_the_listener(validatable_config):
    config = load_config(str(validatable_config))
    svc = the("Service")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    port, gateway_port = svc["spec"]["ports"]
    assert port["port"] == 80 and container_port(port["targetPort"]) == config.listen.port == 8080
    # The example Gateway's listener: its port on the Service, the pod and the Gateway alike.
    example = yaml.safe_load_all((REPO / "deploy" / "gatewayapi" / "gateway.yaml").read_text())
    gateway = next(doc for doc in example if doc and doc["kind"] == "Gateway")
    (listener,) = gateway["spec"]["listeners"]
    assert gateway_port["port"] == container_port(gateway_port["targetPort"]) == listener["port"] >= 1024
    labels = the("Deployment")["spec"]["template"]["metadata"]["labels"]
    for selector in (svc["spec"]["selector"], the("Deployment")["spec"]["selector"]["matchLabels"],
                     the("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()


def prestop_sleep_seconds() -> int:
    pre_stop = container()["lifecycle"]["preStop"]
    if "sleep" in pre_stop:                                  # Kubernetes >= 1.30
        return pre_stop["sleep"]["seconds"]
    argv = pre_stop["exec"]["command"]
    if argv[:2] in (["sh", "-c"], ["/bin/sh", "-c"]):
        argv = shlex.split(argv[2])
    assert Path(argv[0]).name == "sleep" and len(argv) == 2, argv
    return int(argv[1])


def test_grace_period_outlasts_prestop_and_drain(validatable_config):
    drain = load_config(str(validatable_config)).timeouts.drain
    sleep = prestop_sleep_seconds()
    grace = the("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert 2 <= sleep <= 15
    # With workers > 1 the supervisor waits drain + 5 s before it kills a worker that is still
    # draining; the grace period must outlast that too, or SIGKILL cuts the last requests.
    assert grace > drain + sleep + 5, (grace, drain, sleep)


def cpu_cores(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_workers_fit_the_cpu_limit(validatable_config):
    raw = configmap_gateway_yaml().get("workers", 1)
    assert raw != "auto", "os.cpu_count() in a container counts the node's CPUs, not the pod's"
    workers = load_config(str(validatable_config)).workers
    limit = cpu_cores(container()["resources"]["limits"]["cpu"])
    assert workers <= max(1, limit), (workers, limit)


def test_deployment_is_spread_bounded_and_locked_down():
    deployment = the("Deployment")
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    zone = [t for t in pod.get("topologySpreadConstraints", ())
            if t["topologyKey"] == "topology.kubernetes.io/zone"]
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    assert zone or "topology.kubernetes.io/zone" in json.dumps(anti)

    c = container()
    assert {"cpu", "memory"} <= c["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= c["resources"]["limits"].keys()
    security = {**pod.get("securityContext", {}), **c["securityContext"]}
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}   # PodSecurity "restricted"
    assert security["runAsUser"] == dockerfile_user() != 0
    # A writable /tmp: the kubernetes client writes a kubeconfig's inline certificates there.
    tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and not tmp[0].get("readOnly")

    pdb, hpa = the("PodDisruptionBudget"), the("HorizontalPodAutoscaler")
    assert pdb["spec"]["minAvailable"] == 1
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def mounted_files() -> dict[str, tuple[str, str, str]]:
    """Path in the container -> (configMap|secret, object name, key), from the pod's volumes."""
    pod = the("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = {}
    for mount in container()["volumeMounts"]:
        volume = volumes[mount["name"]]
        assert "subPath" not in mount          # subPath mounts do not follow updates
        sources = list(volume.get("projected", {}).get("sources", []))
        if "configMap" in volume:
            sources.append({"configMap": volume["configMap"]})
        if "secret" in volume:
            sources.append({"secret": {**volume["secret"], "name": volume["secret"]["secretName"]}})
        for source in sources:
            for kind, ref in source.items():
                for item in ref.get("items", ()):
                    files[f"{mount['mountPath']}/{item['path']}"] = (kind, ref["name"], item["key"])
    return files


def test_config_kubeconfig_and_admin_token_are_mounted_where_gateway_yaml_says():
    files = mounted_files()
    args = container()["args"]
    config_path = args[args.index("--config") + 1]
    assert args == dockerfile_instruction("CMD", json_form=True)          # the image's default
    assert files[config_path] == ("configMap", "gateway-config", "gateway.yaml")
    secret = the("Secret", "kubeconfig-cluster-b")
    assert yaml.safe_load(secret["stringData"]["kubeconfig"])["kind"] == "Config"
    for source in configmap_gateway_yaml()["sources"]:
        if source.get("kubeconfig"):
            kind, name, key = files[source["kubeconfig"]]
            assert (kind, name) == ("secret", secret["metadata"]["name"])
            assert key in secret["stringData"]
    token_secret = the("Secret", "gateway-admin-token")
    for admin_key, path in ADMIN_TOKEN_FILES.items():
        token_file = configmap_gateway_yaml()["admin"][admin_key]
        assert token_file == path
        kind, name, key = files[token_file]
        assert (kind, name) == ("secret", token_secret["metadata"]["name"]), admin_key
        assert key in token_secret["stringData"], admin_key


def test_admin_token_template_fails_closed(validatable_config, tmp_path):
    """Applied by mistake, the template's placeholder is refused (too short): the gateway does
    not start rather than run its admin API with a token published in this repository."""
    placeholders = the("Secret", "gateway-admin-token")["stringData"]
    config = yaml.safe_load(validatable_config.read_text())
    for admin_key, secret_key in (("token_file", "token"), ("read_token_file", "read-token"),
                                  ("metrics_token_file", "metrics-token")):
        placeholder = tmp_path / f"placeholder-{secret_key}"
        placeholder.write_text(placeholders[secret_key])
        config["admin"][admin_key] = str(placeholder)
    with pytest.raises(ConfigError) as err:
        parse_config(config)
    for admin_key in ADMIN_TOKEN_FILES:
        assert f"admin.{admin_key}: the token must be at least 16 characters" in err.value.errors


# --- Dockerfile --------------------------------------------------------------------------------

def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuations joined, comments gone.

    Instructions before the first FROM (global ARGs) form stage 0's preamble entry ``ARGS``.
    """
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args, stages = {}, []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), " ".join(rest.split())
        if word == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        if word == "FROM":
            rest = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], rest)
            stages.append([])
        assert stages, f"{word} before FROM"
        stages[-1].append((word, rest))
    return stages


def dockerfile_instruction(word: str, stage: int = -1, json_form: bool = False):
    found = [rest for w, rest in dockerfile_stages()[stage] if w == word]
    assert found, f"no {word} in stage {stage}"
    return json.loads(found[-1]) if json_form else found[-1]


def dockerfile_user() -> int:
    return int(dockerfile_instruction("USER"))


def test_dockerfile_structure():
    build, final = dockerfile_stages()
    assert build[0] == ("FROM", "python:3.11-slim AS build")
    build_runs = " ".join(rest for w, rest in build if w == "RUN")
    assert "build-essential" in build_runs
    assert "pip wheel --no-deps -w /wheels ." in build_runs

    assert final[0] == ("FROM", "python:3.11-slim")
    final_text = " ".join(rest for _, rest in final)
    # Nothing to compile with in the final image, and nothing installed but the wheels.
    for tool in ("build-essential", "gcc", "g++", "clang", "make", "apt-get", "Cython", "pip wheel"):
        assert not re.search(rf"(^|[\s/]){re.escape(tool)}(\s|$)", final_text), tool
    installs = [rest for w, rest in final if w == "RUN" and "pip install" in rest]
    assert len(installs) == 1 and "--no-index" in installs[0] and "/wheels" in installs[0]
    assert "from=build" in installs[0]
    for w, rest in final:
        assert w not in ("COPY", "ADD") or "--from=build" in rest, (w, rest)

    words = [w for w, _ in final]
    assert words.index("USER") > max(i for i, (w, r) in enumerate(final) if w == "RUN")
    assert dockerfile_user() == 10001
    assert re.search(r"useradd .*--uid 10001\b", final_text)
    assert set(dockerfile_instruction("EXPOSE").split()) == {"8080", "9901"}
    assert dockerfile_instruction("STOPSIGNAL") == "SIGTERM"
    assert dockerfile_instruction("ENTRYPOINT", json_form=True) == ["gateway"]
    assert dockerfile_instruction("CMD", json_form=True) == ["run", "--config", "/etc/gateway/gateway.yaml"]


# --- the build context and the build steps -------------------------------------------------------

def dockerignore_patterns() -> list[re.Pattern]:
    """.dockerignore lines as regexes over context-relative paths (Go filepath.Match + ``**``)."""
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "exceptions are not supported by this test"
        rx = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", line.strip("/")):
            rx += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        patterns.append(re.compile(rx))
    return patterns


def build_context() -> list[str]:
    """The files docker would send: the repository minus .dockerignore (relative paths)."""
    patterns = dockerignore_patterns()

    def ignored(rel: str) -> bool:
        return any(p.fullmatch(rel) for p in patterns)

    files = []
    for root, dirs, names in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        rel_root = "" if rel_root == "." else rel_root + "/"
        dirs[:] = [d for d in dirs if not ignored(rel_root + d)]
        files += [rel_root + n for n in names if not ignored(rel_root + n)]
    return files


def git_files() -> list[str] | None:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.split()


def test_dockerignore_keeps_out_builds_and_keeps_in_the_sources():
    context = set(build_context())
    for rel in context:
        assert not re.search(r"(^|/)(\.git|\.venv|build|artifacts|__pycache__|\.pytest_cache)/", rel), rel
        assert not rel.endswith((".so", ".c", ".pyc")), rel
    tracked = git_files()
    if tracked is None:
        pytest.skip("not a git checkout")
    needed = {f for f in tracked if f.startswith(("gateway/", "_speedups/"))}
    needed |= {"pyproject.toml", "setup.py", "README.md"}
    assert needed <= context, sorted(needed - context)


def copy_build_sources(dest: Path) -> None:
    """Do the build stage's COPY instructions: from the build context into ``dest`` (its WORKDIR)."""
    context = build_context()
    (build, _) = dockerfile_stages()
    for word, rest in build:
        if word != "COPY":
            continue
        *sources, target = shlex.split(rest)
        assert not any(s.startswith("--") for s in sources), rest
        base = dest / target
        for src in sources:
            src = src.rstrip("/")
            assert not re.search(r"[*?\[]", src), "wildcards are not supported by this test"
            if src in context:                                   # a file
                to = base / Path(src).name if target.endswith("/") or len(sources) > 1 else base
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / src, to)
            else:                                                # a directory: its contents
                inside = [f for f in context if f.startswith(src + "/")]
                assert inside, f"COPY {src}: not in the build context"
                for f in inside:
                    to = base / f[len(src) + 1:]
                    to.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(REPO / f, to)


def run_stage_command(command: str, wheels: Path, cwd: Path, env: dict) -> None:
    # The stage's absolute paths go under the test's directory: on the host they would
    # outlive the test (a second run's "mkdir /runtime-libs" failed on the first's).
    command = (re.sub(r"--mount=\S+\s*", "", command).replace("/wheels", str(wheels))
               .replace("/runtime-libs", str(wheels.parent / "runtime-libs")))
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (command, result.stdout[-3000:], result.stderr[-3000:])


# Compiles the Cython modules: 60-80 s on 2 idle cores, over 240 s beside other work; the
# bounds are there to end a hung build, not to time it.
@pytest.mark.timeout(1200)
def test_wheel_builds_and_installs_into_a_fresh_venv(tmp_path):
    """The Dockerfile's own build commands, run here against a copy of the build context."""
    src, wheels, venv = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv"
    copy_build_sources(src)
    (build, final) = dockerfile_stages()

    # Stage 1: `pip wheel` (this interpreter's pip, with this machine's package index).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for word, rest in build:
        if word == "RUN" and "pip wheel" in rest:
            run_stage_command(rest, wheels, src, env)
    built = [w.name for w in wheels.glob("gateway-*.whl")]
    assert len(built) == 1 and built[0].startswith(f"gateway-{__version__}-cp3"), built
    assert any(w.name.startswith("uvloop-") for w in wheels.glob("*.whl"))

    # Stage 2: the install, from the wheels only: no package index, no pip config.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", PIP_CONFIG_FILE=os.devnull,
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    for word, rest in final:
        if word == "RUN" and "pip install" in rest:
            run_stage_command(rest, wheels, tmp_path, env)

    version = subprocess.run([str(venv / "bin" / "gateway"), "version"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"gateway {__version__}", version
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import _speedups.proxy, gateway.app; print(_speedups.proxy.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(venv)) and where.stdout.strip().endswith(".so")


def docker_engine() -> str | None:
    """None when an engine answers, else why not (the reason the docker build test is skipped)."""
    if shutil.which("docker") is None:
        return "no docker client"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        return "`docker info` failed: " + (lines[-1] if lines else f"exit {info.returncode}")
    return None


@pytest.mark.timeout(1200)
def test_docker_build():
    reason = docker_engine()
    if reason:
        pytest.skip(f"no container engine: {reason}")
    tag = f"gateway-deploy-test:{uuid.uuid4().hex[:12]}"
    try:
        subprocess.run(["docker", "build", "-f", str(DOCKERFILE), "-t", tag, str(REPO)],
                       check=True, timeout=1100)
        out = subprocess.run(["docker", "run", "--rm", tag, "version"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
        assert out.strip() == f"gateway {__version__}"
        uid = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        assert uid.strip() == "10001"
        gcc = subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", tag, "-c",
                              "command -v gcc cc make || true"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        assert gcc.strip() == ""
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60)
