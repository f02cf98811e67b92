"""A Gateway is an instance: its own address from ``gateway_api.addresses``, a socket per
listener port there, and only its own routes (Gateway API listener isolation).

What the upstream conformance replays (tests/conformance) do not cover: the address pool
running out and coming back, a port that another process holds, addresses kept across a
restart, and how many status writes a change costs.  A real gateway process (``workers: 2``)
against the local API server, driven with the official client; every wait is bounded.
"""
from __future__ import annotations

import socket
import time

import pytest
from kubernetes import client, config

from support import Client, GatewayProcess
from gateway.devcluster.apiserver import ApiServerProcess
from test_gatewayapi import CONTROLLER, GW, NS, add_backend_service, kube_source, wait_for

POOL = ("127.0.22.1", "127.0.22.2", "127.0.22.3")


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory):
    server = ApiServerProcess(tmp_path_factory.mktemp("api"), name="instances", bookmark_interval=0.5).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(apiserver, backend_a, backend_b):
    with config.new_client_from_config(config_file=str(apiserver.kubeconfig), context=apiserver.context) as c:
        add_backend_service(c, NS, "svc-a", backend_a)
        add_backend_service(c, NS, "svc-b", backend_b)
        client.CustomObjectsApi(c).create_cluster_custom_object(GW, "v1", "gatewayclasses", {
            "metadata": {"name": "ours"}, "spec": {"controllerName": CONTROLLER}})
        yield c


def gateway_config(apiserver) -> dict:
    return {"sources": [kube_source(apiserver)], "workers": 2,
            "gateway_api": {"addresses": [f"{POOL[0]}-{POOL[-1]}"]}}


@pytest.fixture(scope="module")
def gw(api, apiserver, tmp_path_factory):
    proc = GatewayProcess(gateway_config(apiserver), tmp_path_factory.mktemp("gw")).start()
    yield proc
    proc.stop()


@pytest.fixture
def custom(api):
    return client.CustomObjectsApi(api)


def http_gateway(custom, name: str, *ports: int, **spec) -> None:
    custom.create_namespaced_custom_object(GW, "v1", NS, "gateways", {
        "metadata": {"name": name}, "spec": {"gatewayClassName": "ours", **spec, "listeners": [
            {"name": f"http-{port}", "port": port, "protocol": "HTTP"} for port in ports]}})


def route(custom, name: str, parent: dict, path: str, service: str) -> None:
    custom.create_namespaced_custom_object(GW, "v1", NS, "httproutes", {
        "metadata": {"name": name}, "spec": {"parentRefs": [parent], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": path}}],
            "backendRefs": [{"name": service, "port": 80}]}]}})


def gateway_status(custom, name: str) -> dict:
    return custom.get_namespaced_custom_object(GW, "v1", NS, "gateways", name).get("status") or {}


def condition(status: dict, type_: str, listener: str | None = None) -> tuple[str, str] | None:
    if listener is not None:
        status = next((l for l in status.get("listeners") or () if l["name"] == listener), {})
    found = {c["type"]: c for c in status.get("conditions") or ()}.get(type_)
    return (found["status"], found["reason"]) if found else None


def address_of(custom, name: str) -> str:
    return wait_for(lambda: (gateway_status(custom, name).get("addresses") or [{}])[0].get("value"))


def answer(address: str, port: int, path: str) -> int | str:
    """The backend address that answered, or the status the gateway answered itself."""
    try:
        with Client(address, port, timeout=5) as c:
            resp = c.request("GET", path)
    except OSError as exc:
        return type(exc).__name__
    return resp.json()["address"] if resp.status == 200 else resp.status


def expect(value, wanted) -> bool:
    """For wait_for: True when ``value`` is ``wanted``, else an AssertionError naming it."""
    assert value == wanted, value
    return True


def test_two_gateways_on_one_port_serve_only_their_own_routes(gw, custom, backend_a, backend_b):
    http_gateway(custom, "public", 80)
    http_gateway(custom, "internal", 80)
    route(custom, "pub", {"name": "public"}, "/pub", "svc-a")
    route(custom, "int", {"name": "internal"}, "/int", "svc-b")
    public, internal = address_of(custom, "public"), address_of(custom, "internal")
    assert {public, internal} == set(POOL[:2])           # the oldest Gateways first
    wait_for(lambda: answer(public, 80, "/pub") == backend_a.address)
    wait_for(lambda: answer(internal, 80, "/int") == backend_b.address)
    assert answer(public, 80, "/int") == 404             # the other Gateway's route does not leak
    assert answer(internal, 80, "/pub") == 404
    assert condition(gateway_status(custom, "public"), "Programmed") == ("True", "Programmed")


def test_parent_port_selects_the_listener(gw, custom, backend_a):
    http_gateway(custom, "ports", 8080, 8090)
    route(custom, "on-8090", {"name": "ports", "port": 8090}, "/ports", "svc-a")
    address = address_of(custom, "ports")
    assert address == POOL[0]                            # beside "public": its ports are free there
    wait_for(lambda: answer(address, 8090, "/ports") == backend_a.address)
    assert answer(address, 8080, "/ports") == 404        # its listener serves no such route


def test_a_full_pool_is_address_not_assigned_until_an_address_frees(gw, custom, backend_a):
    http_gateway(custom, "third", 80)
    assert address_of(custom, "third") == POOL[2]
    # Port 80 is now taken on every address of the pool.
    http_gateway(custom, "late", 80)
    route(custom, "late", {"name": "late"}, "/late", "svc-a")
    programmed = wait_for(lambda: condition(gateway_status(custom, "late"), "Programmed"))
    assert programmed == ("False", "AddressNotAssigned")
    assert "addresses" not in gateway_status(custom, "late")
    custom.delete_namespaced_custom_object(GW, "v1", NS, "gateways", "third")
    assert address_of(custom, "late") == POOL[2]
    wait_for(lambda: condition(gateway_status(custom, "late"), "Programmed") == ("True", "Programmed"))
    wait_for(lambda: answer(POOL[2], 80, "/late") == backend_a.address)


def test_a_port_another_process_holds_is_not_programmed_until_it_is_free(gw, custom, backend_a):
    squatter = socket.socket()
    squatter.bind((POOL[0], 9099))          # no SO_REUSEPORT: nobody else can bind it
    squatter.listen(1)
    try:
        # A Gateway asking for .1 explicitly gets it (9099 is free there for this gateway),
        # but its port is another process's.
        custom.create_namespaced_custom_object(GW, "v1", NS, "gateways", {
            "metadata": {"name": "squatted"}, "spec": {
                "gatewayClassName": "ours", "addresses": [{"type": "IPAddress", "value": POOL[0]}],
                "listeners": [{"name": "http", "port": 9099, "protocol": "HTTP"}]}})
        wait_for(lambda: condition(gateway_status(custom, "squatted"), "Programmed", "http"))
        listener = next(l for l in gateway_status(custom, "squatted")["listeners"])
        programmed = {c["type"]: c for c in listener["conditions"]}["Programmed"]
        assert programmed["status"] == "False" and "in use" in programmed["message"], programmed
        assert condition(gateway_status(custom, "squatted"), "Programmed") == ("False", "Invalid")
    finally:
        squatter.close()
    # The next translation binds it (any change to the Gateway starts one).
    custom.patch_namespaced_custom_object(GW, "v1", NS, "gateways", "squatted",
                                          {"metadata": {"labels": {"retry": "1"}}})
    wait_for(lambda: condition(gateway_status(custom, "squatted"), "Programmed") == ("True", "Programmed"))
    route(custom, "squatted", {"name": "squatted"}, "/squatted", "svc-a")
    wait_for(lambda: answer(POOL[0], 9099, "/squatted") == backend_a.address)


def test_an_address_outside_the_pool_is_not_usable(gw, custom):
    http_gateway(custom, "outside", 80, addresses=[{"type": "IPAddress", "value": "127.0.23.1"}])
    programmed = wait_for(lambda: condition(gateway_status(custom, "outside"), "Programmed"))
    assert programmed == ("False", "AddressNotUsable")
    assert condition(gateway_status(custom, "outside"), "Accepted") == ("True", "Accepted")


def quiet_writes(apiserver, quiet: float = 1.0, timeout: float = 30.0) -> dict:
    """The API server's write counts once none came for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = apiserver.state()["writes"], time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = apiserver.state()["writes"]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"status writes did not settle in {timeout}s: {last}")


def status_writes(writes: dict) -> int:
    return sum(n for name, n in writes.items() if name.endswith("/status"))


def test_status_is_written_once_per_change(gw, apiserver, custom, backend_a):
    """200 HTTPRoutes on one Gateway: each route's status is written once, the Gateway's
    as its attachedRoutes count moves; one route changed afterwards writes its own status
    and nothing else (the count did not move)."""
    http_gateway(custom, "many", 8300)
    address = address_of(custom, "many")
    before = status_writes(quiet_writes(apiserver))
    for i in range(200):
        route(custom, f"many-{i}", {"name": "many"}, f"/many-{i}", "svc-a")
    wait_for(lambda: answer(address, 8300, "/many-199") == backend_a.address, timeout=30)
    settled = status_writes(quiet_writes(apiserver))
    print(f"\n200 HTTPRoutes: {settled - before} status writes to settle")
    assert settled - before <= 200 + 200, settled - before        # routes, plus the Gateway's counts
    custom.patch_namespaced_custom_object(GW, "v1", NS, "httproutes", "many-7", {"spec": {"rules": [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/many-7-changed"}}],
        "backendRefs": [{"name": "svc-a", "port": 80}]}]}})
    wait_for(lambda: answer(address, 8300, "/many-7-changed") == backend_a.address)
    changed = status_writes(quiet_writes(apiserver))
    print(f"one HTTPRoute changed: {changed - settled} status writes")
    assert changed - settled <= 3, changed - settled


def test_addresses_stay_when_an_older_gateway_goes_and_across_a_restart(gw, apiserver, custom, backend_b,
                                                                          tmp_path):
    """Last in this module: it restarts the gateway.  A Gateway keeps the address its
    status shows when an older one (which had the first pool address) is deleted, and a
    new gateway process gives it that address again."""
    internal, public = address_of(custom, "internal"), address_of(custom, "public")
    custom.delete_namespaced_custom_object(GW, "v1", NS, "gateways", "public")
    wait_for(lambda: expect(answer(public, 80, "/pub"), "ConnectionRefusedError"))     # its socket is gone
    assert address_of(custom, "internal") == internal
    assert answer(internal, 80, "/int") == backend_b.address
    gw.stop()
    proc = GatewayProcess(gateway_config(apiserver), tmp_path).start()
    try:
        wait_for(lambda: answer(internal, 80, "/int") == backend_b.address, timeout=20)
        assert address_of(custom, "internal") == internal
    finally:
        proc.stop()
