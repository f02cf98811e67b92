"""Console writes: with a file config they keep the file's comments and layout, and a
read-only file is a clear 409 naming it (nothing applied, nothing lost); with routes from
Kubernetes they become HTTPRoute objects that every replica watching the cluster serves.
Real gateway processes, the admin API over HTTP, the local API server; bounded waits."""
from __future__ import annotations

import os
import subprocess

import pytest
import yaml
from kubernetes import client, config

from support import PYTHON, REPO, AdminClient, Client, GatewayProcess, free_port, static_source
from test_gatewayapi import GW, add_backend_service, kube_source, wait_for
from gateway.devcluster.apiserver import ApiServerProcess


def commented_gateway(tmp_path, backend_a) -> tuple[GatewayProcess, AdminClient]:
    admin = free_port()
    proc = GatewayProcess({"admin": f"127.0.0.1:{admin}",
                           "sources": [static_source("zone-a", {"svc-a": [backend_a.address]})],
                           "services": [{"name": "svc-a", "port": 80}],
                           "routes": [{"name": "first", "match": {"path": {"prefix": "/first"}},
                                       "service": "svc-a"}]}, tmp_path)
    text = "# the team's gateway: keep this comment\n"
    for key, value in proc.config.items():
        if key == "routes":
            text += "routes:   # routes, first match wins\n"
            text += yaml.safe_dump(value, sort_keys=False, default_flow_style=False)
        else:
            text += yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False)
    proc.config_path.write_text(text)
    proc.start()
    client_ = AdminClient(admin)
    client_.wait_up(proc.proc)
    return proc, client_


def test_admin_write_keeps_comments(tmp_path, backend_a):
    proc, admin = commented_gateway(tmp_path, backend_a)
    try:
        status, _, body = admin.request("POST", "/routes", {"name": "added", "match": {"path": {"prefix": "/added"}},
                                                            "service": "svc-a"})
        assert status == 201, body
        text = proc.config_path.read_text()
        assert text.startswith("# the team's gateway: keep this comment\n")
        assert "routes:   # routes, first match wins" in text
        assert [r["name"] for r in yaml.safe_load(text)["routes"]] == ["first", "added"]
        with proc.client() as c:
            assert c.request("GET", "/added/x").status == 200
    finally:
        proc.stop()


def test_read_only_config_file_is_a_409_naming_it_and_nothing_changes(tmp_path, backend_a):
    proc, admin = commented_gateway(tmp_path, backend_a)
    try:
        before = proc.config_path.read_bytes()
        os.chmod(proc.config_path, 0o444)       # as a ConfigMap volume mounts it
        status, _, body = admin.request("POST", "/routes", {"name": "nope", "match": {"path": {"prefix": "/nope"}},
                                                            "service": "svc-a"})
        assert status == 409, body
        assert str(proc.config_path) in body["error"] and "read-only" in body["error"]
        assert proc.config_path.read_bytes() == before              # nothing lost
        assert [r["name"] for r in admin.get("/routes")] == ["first"]   # nothing applied
        with proc.client() as c:
            assert c.request("GET", "/nope").status == 404
            assert c.request("GET", "/first").status == 200
    finally:
        os.chmod(proc.config_path, 0o644)
        proc.stop()


# -- routes from Kubernetes: the console writes HTTPRoutes ---------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, backend_a):
    server = ApiServerProcess(tmp_path_factory.mktemp("api"), name="console", bookmark_interval=0.5).start()
    with config.new_client_from_config(config_file=str(server.kubeconfig), context=server.context) as api:
        add_backend_service(api, "default", "svc-a", backend_a)
        custom = client.CustomObjectsApi(api)
        custom.create_cluster_custom_object(GW, "v1", "gatewayclasses", {
            "metadata": {"name": "multi"}, "spec": {"controllerName": "gateway.example/multi-cluster"}})
        custom.create_namespaced_custom_object(GW, "v1", "default", "gateways", {
            "metadata": {"name": "gw"}, "spec": {"gatewayClassName": "multi",
                                                 "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}})
        yield server, custom
    server.stop()


def status_of(proc, path: str) -> int:
    with Client(proc.gateway_address, 80) as c:
        return c.request("GET", path).status


def test_admin_route_add_reaches_every_replica(cluster, backend_a, tmp_path):
    server, custom = cluster
    replicas = []
    try:
        for i in range(2):
            # Two replicas on one machine: each serves the Gateway on an address of its own
            # (as pods do on theirs); the second writes no status (the first does).
            admin = free_port()
            address = f"127.0.24.{i + 1}"
            proc = GatewayProcess({"admin": f"127.0.0.1:{admin}", "sources": [kube_source(server)],
                                   "gateway_api": {"console_gateway": "default/gw", "addresses": [address],
                                                   "write_status": i == 0}},
                                  tmp_path / f"r{i}").start()
            proc.gateway_address = address
            replicas.append((proc, AdminClient(admin)))
            replicas[-1][1].wait_up(proc.proc)
        (one, admin_one), (two, _) = replicas
        status, _, body = admin_one.request("POST", "/routes", {
            "name": "console", "match": {"path": {"prefix": "/console"}}, "service": "default/svc-a",
            "port": 80})
        assert status == 201, body
        assert body["httproute"] == "default/console"
        # The writer serves it when it answers; the other replica within the propagation time.
        with Client(one.gateway_address, 80) as c:
            assert c.request("GET", "/console/x").json()["address"] == backend_a.address
        wait_for(lambda: status_of(two, "/console/x") == 200)
        obj = custom.get_namespaced_custom_object(GW, "v1", "default", "httproutes", "console")
        assert obj["spec"]["rules"][0]["matches"][0]["path"] == {"type": "PathPrefix", "value": "/console"}
        # The config file is not touched: the route lives in the cluster.
        assert not yaml.safe_load(one.config_path.read_text()).get("routes")
        # The CLI too (it printed a file config version the HTTPRoute answer has not: a KeyError).
        removed = subprocess.run([PYTHON, "-m", "gateway", "route", "remove", "console", "--admin",
                                  f"http://127.0.0.1:{admin_one.port}"], cwd=str(REPO), capture_output=True,
                                 text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert removed.returncode == 0, removed.stderr
        assert "removed as HTTPRoute default/console" in removed.stdout
        wait_for(lambda: status_of(two, "/console/x") == 404)
    finally:
        for proc, _ in replicas:
            proc.stop()


@pytest.mark.parametrize("body", [
    {"name": "Not_A_Label", "match": {"path": {"prefix": "no-slash"}}, "service": "svc"},
    {"name": "r", "match": {"path": {"regex": "("}, "headers": [{"name": "x", "regex": "["}]},
     "backends": [{"service": "a/b/c"}]},
    {"name": "r", "service": "svc", "backends": [{"service": "svc"}]},
])
def test_a_console_route_is_checked_as_the_files_routes_are(body):
    """One validator: the console's HTTPRoute bodies get the file's errors, key path for key path."""
    from gateway.admin.http import HttpProblem
    from gateway.admin.httproutes import httproute
    from gateway.config import ConfigError, parse_config
    with pytest.raises(ConfigError) as file_error:
        parse_config({"services": [{"name": "svc", "port": 80}], "routes": [body]})
    expected = [e.removeprefix("routes[0].").removeprefix("routes[0]: ") for e in file_error.value.errors
                if e.startswith("routes[0]")]
    with pytest.raises(HttpProblem) as console_error:
        httproute(body, "default", ("default", "gw"), {"default/svc": 80})
    assert console_error.value.status == 400
    assert expected and console_error.value.payload["errors"] == expected


def test_a_console_route_says_what_an_httproute_cannot_hold():
    from gateway.admin.http import HttpProblem
    from gateway.admin.httproutes import httproute
    with pytest.raises(HttpProblem) as error:
        httproute({"name": "r", "service": "svc", "timeout": "1s",
                   "match": {"method": ["GET", "HEAD"], "headers": [{"name": "x", "present": True}]}},
                  "default", ("default", "gw"), {"default/svc": 80})
    assert [e.split(":")[0] for e in error.value.payload["errors"]] == ["timeout", "match.method", "match.headers"]
    route = httproute({"name": "r", "service": "other/svc", "port": 8080, "match": {"path": {"exact": "/x"}}},
                      "default", ("default", "gw"), {})
    assert route["spec"]["rules"] == [{"matches": [{"path": {"type": "Exact", "value": "/x"}}],
                                       "backendRefs": [{"name": "svc", "port": 8080, "weight": 1,
                                                        "namespace": "other"}]}]


def test_a_console_routes_cors_and_backend_headers_translate_back_to_the_same_route():
    """cors and backends[].request_headers/response_headers become the HTTPRoute's CORS filter and
    backendRef header modifiers, and the translation of that HTTPRoute gives them back equal."""
    from gateway.admin.httproutes import httproute
    from gateway.config import parse_route
    from gateway.gatewayapi.translate import World, translate
    body = {"name": "r", "match": {"path": {"prefix": "/api"}},
            "cors": {"allow_origins": ["https://app.example.com", "https://*.example.org"], "allow_methods": ["GET"],
                     "allow_headers": ["*"], "expose_headers": ["x-id"], "allow_credentials": True, "max_age": 60},
            "backends": [{"service": "svc", "weight": 3,
                          "request_headers": {"set": [{"name": "X-Backend", "value": "svc"}], "remove": ["x-drop"]},
                          "response_headers": {"add": [{"name": "X-From", "value": "svc"}]}}]}
    route = httproute(body, "default", ("default", "gw"), {"default/svc": 80})
    controller = "gateway.example/multi-cluster"
    world = World(controller)
    world.classes["c"] = {"metadata": {"name": "c"}, "spec": {"controllerName": controller}}
    world.gateways[("default", "gw")] = {"metadata": {"name": "gw", "namespace": "default", "generation": 1},
                                         "spec": {"gatewayClassName": "c",
                                                  "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}
    world.services[("default", "svc")] = [{"name": "http", "port": 80}]
    world.routes[("default", "r")] = {**route, "metadata": {**route["metadata"], "generation": 1,
                                                          "creationTimestamp": "2026-12-06T00:00:00Z"}}
    (config,) = translate(world).routes
    wanted = parse_route(body)
    assert config.cors == wanted.cors and config.cors is not None
    assert config.backends[0].filters == wanted.backends[0].filters and config.backends[0].weight == 3
