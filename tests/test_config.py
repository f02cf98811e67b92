"""Config loading and validation: good documents parse into the expected objects, and every
rule reports its own ``key.path: problem`` line."""
from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import (
    AccessLogConfig,
    Address,
    ConfigError,
    HeaderMatch,
    HttpConfig,
    PathConfig,
    RetryPolicy,
    RouteMatch,
    StaticEndpoint,
    Timeouts,
    TrustedProxies,
    WeightedBackend,
    load_config,
    parse_config,
)
from gateway.units import parse_duration, parse_size

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
  - {name: a, cluster: {server: "https://127.0.0.1:6443"}}
users:
  - {name: u, user: {token: t}}
contexts:
  - {name: zone-a, context: {cluster: a, user: u}}
  - {name: zone-b, context: {cluster: a, user: u}}
current-context: zone-a
"""


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    return path


def base() -> dict:
    """A small valid document; each invalid case changes one thing in it."""
    return {
        "sources": [
            {"name": "zone-a", "type": "static",
             "services": [{"name": "httpbin", "endpoints": ["127.0.0.2:8000"]}]},
            {"name": "zone-b", "type": "static",
             "services": [{"name": "httpbin", "endpoints": ["127.0.0.3:8000"]}]},
            {"name": "local", "type": "kubernetes", "in_cluster": True},
        ],
        "services": [{"name": "httpbin", "port": 8000},
                     {"name": "canary", "namespace": "default", "port": "http"},
                     {"name": "unused", "port": 80}],
        "routes": [
            {"name": "test", "match": {"path": {"prefix": "/test"}}, "service": "httpbin"},
            {"name": "split", "backends": [{"service": "default/httpbin", "weight": 90},
                                           {"service": "canary", "weight": 10}]},
        ],
    }


DELETE = object()


def changed(changes: dict[str, object]) -> dict:
    """base() with ``{"routes.0.match.path": value}`` applied; DELETE removes the key."""
    doc = base()
    for dotted, value in changes.items():
        *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
        node = doc
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        elif isinstance(node, list) and last == len(node):
            node.append(copy.deepcopy(value))
        else:
            node[last] = copy.deepcopy(value)
    return doc


def errors(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.errors


# --- Good documents ----------------------------------------------------------------------------

def test_full_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "a.yaml").write_text(KUBECONFIG)
    monkeypatch.setenv("HOME", str(tmp_path))     # so "~/.kube/a.yaml" is the file above
    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent("""\
        listen: 0.0.0.0:8080
        admin: 127.0.0.1:9901
        access_log: {path: stdout, buffer: 64KiB, flush_interval: 1s}
        timeouts: {connect: 1s, response_header: 15s, downstream_idle: 60s,
                   downstream_header: 10s, upstream_idle: 60s, drain: 20s}
        sources:
          - {name: zone-a, type: static, services: [{name: httpbin, namespace: default, endpoints: ["127.0.0.2:8000"]}]}
          - {name: zone-b, type: static, weight: 100, services: [{name: httpbin, namespace: default, endpoints: [{address: "127.0.0.3:8000", weight: 1}]}]}
          - {name: cluster-a, type: kubernetes, kubeconfig: ~/.kube/a.yaml, context: zone-a, namespaces: [default]}
          - {name: local, type: kubernetes, in_cluster: true}
        services:
          - {name: httpbin, namespace: default, port: 8000, sources: [zone-a, zone-b]}
          - {name: canary, port: http}
        routes:
          - name: test
            match:
              path: {prefix: /test}
              host: ["*.Example.com", api.example.com]
              method: get
              headers: [{name: X-Env, exact: prod}, {name: x-debug, present: true}, {name: x-v, regex: "^v[12]$"}]
            service: default/httpbin
            rewrite: {prefix: /}
            timeout: 15s
            retries: {attempts: 2, on_5xx: false, on_timeout: true, per_try_timeout: 2s}
          - name: split
            backends: [{service: default/httpbin, weight: 90}, {service: canary, weight: 10}]
        """))
    config = load_config(str(path))

    assert config.path == str(path)
    assert config.listen == Address("0.0.0.0", 8080)
    assert config.admin == Address("127.0.0.1", 9901)
    assert config.access_log == AccessLogConfig("stdout", 64 * 1024, 1.0)
    assert config.timeouts == Timeouts(connect=1.0, response_header=15.0, downstream_idle=60.0,
                                       downstream_header=10.0, upstream_idle=60.0, body_idle=30.0,
                                       drain=20.0)

    zone_a, zone_b, cluster_a, local = config.sources
    assert (zone_a.name, zone_a.type, zone_a.weight) == ("zone-a", "static", 100)
    assert zone_a.services[0].namespace == "default"
    assert zone_a.services[0].endpoints == (StaticEndpoint("127.0.0.2", 8000, 1),)
    assert zone_b.services[0].endpoints == (StaticEndpoint("127.0.0.3", 8000, 1),)
    assert cluster_a.type == "kubernetes"
    assert cluster_a.kubeconfig == str(tmp_path / ".kube" / "a.yaml")
    assert (cluster_a.context, cluster_a.in_cluster, cluster_a.namespaces) == ("zone-a", False, ("default",))
    assert (local.in_cluster, local.kubeconfig, local.context, local.services) == (True, None, None, ())

    httpbin, canary = config.services
    assert (httpbin.key, httpbin.port, httpbin.sources) == ("default/httpbin", 8000, ("zone-a", "zone-b"))
    assert (canary.key, canary.port, canary.sources) == ("default/canary", "http", ())

    test, split = config.routes
    assert test.match == RouteMatch(
        path_prefix="/test", hosts=("*.example.com", "api.example.com"), methods=("GET",),
        headers=(HeaderMatch("x-env", exact="prod"), HeaderMatch("x-debug", present=True),
                 HeaderMatch("x-v", regex="^v[12]$")))
    assert test.backends == (WeightedBackend("default/httpbin", 1),)
    assert (test.rewrite_prefix, test.timeout) == ("/", 15.0)
    assert test.retries == RetryPolicy(attempts=2, on_5xx=False, on_timeout=True, per_try_timeout=2.0)
    assert split.match == RouteMatch(path_prefix="/")
    assert split.backends == (WeightedBackend("default/httpbin", 90), WeightedBackend("default/canary", 10))
    assert (split.rewrite_prefix, split.timeout, split.retries) == (None, None, RetryPolicy())


def test_defaults() -> None:
    config = parse_config(base())
    assert config.listen == Address("0.0.0.0", 8080)
    assert config.admin == Address("127.0.0.1", 9901)
    assert config.access_log == AccessLogConfig()
    assert config.timeouts == Timeouts()
    # Paths normalized, escaped slashes refused, the normalized path forwarded; nobody trusted.
    assert config.http == HttpConfig(PathConfig(True, True, "reject", "normalized"), None)
    assert config.path is None
    assert config.sources[0].weight == 100
    assert config.sources[0].services[0].namespace == "default"
    assert config.services[0].namespace == "default"
    assert config.routes[0].retries == RetryPolicy()


def test_minimal_documents() -> None:
    assert parse_config({}).routes == ()
    assert parse_config({"sources": None, "services": None, "routes": None}).sources == ()


@pytest.mark.parametrize("changes, attr, expected", [
    ({"listen": "[::1]:8080"}, "listen", Address("::1", 8080)),
    ({"listen": "localhost:80"}, "listen", Address("localhost", 80)),
    ({"admin": None}, "admin", None),
    ({"admin": False}, "admin", None),             # YAML 1.1 reads a bare `off` as false
    ({"admin": "off"}, "admin", None),
    ({"access_log": {"path": None}}, "access_log", AccessLogConfig(path=None)),
    ({"access_log": {"path": False}}, "access_log", AccessLogConfig(path=None)),
    ({"access_log": {"path": "/var/log/gw.log", "buffer": "1MiB"}}, "access_log",
     AccessLogConfig("/var/log/gw.log", 1 << 20, 1.0)),
    ({"timeouts": {"connect": "250ms", "drain": 5}}, "timeouts", Timeouts(connect=0.25, drain=5.0)),
    ({"http": {}}, "http", HttpConfig()),
    ({"http": {"path": {"escaped_slashes": "keep", "forward": "original", "merge_slashes": False}}},
     "http", HttpConfig(PathConfig(escaped_slashes="keep", forward="original", merge_slashes=False))),
    ({"http": {"path": {"normalize": False, "escaped_slashes": "unescape_and_redirect"}}}, "http",
     HttpConfig(PathConfig(normalize=False, escaped_slashes="unescape_and_redirect"))),
    ({"http": {"trusted_proxies": {"cidrs": ["10.0.0.0/8", "192.0.2.1", "2001:DB8::/32"]}}}, "http",
     HttpConfig(trusted_proxies=TrustedProxies(cidrs=("10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32")))),
    ({"http": {"trusted_proxies": {"cidrs": "10.0.0.0/8"}}}, "http",
     HttpConfig(trusted_proxies=TrustedProxies(cidrs=("10.0.0.0/8",)))),
    ({"http": {"cleartext": "h2c"}}, "http", HttpConfig(cleartext="h2c")),
    ({"http": {"trusted_proxies": {"hops": 2}}}, "http", HttpConfig(trusted_proxies=TrustedProxies(hops=2))),
])
def test_top_level_values(changes: dict, attr: str, expected: object) -> None:
    assert getattr(parse_config(changed(changes)), attr) == expected


@pytest.mark.parametrize("endpoint, expected", [
    ("127.0.0.2:8000", StaticEndpoint("127.0.0.2", 8000)),
    ("127.0.0.2", StaticEndpoint("127.0.0.2", None)),
    ("[::1]:8000", StaticEndpoint("::1", 8000)),
    ("[0:0::1]", StaticEndpoint("::1", None)),
    ("::1", StaticEndpoint("::1", None)),
    ({"address": "10.0.0.1:80", "weight": 1000}, StaticEndpoint("10.0.0.1", 80, 1000)),
])
def test_static_endpoints(endpoint: object, expected: StaticEndpoint) -> None:
    config = parse_config(changed({"sources.0.services.0.endpoints.0": endpoint}))
    assert config.sources[0].services[0].endpoints == (expected,)


@pytest.mark.parametrize("changes, expected", [
    ({"routes.0.match.path": {"exact": "/x"}}, RouteMatch(path_exact="/x")),
    ({"routes.0.match.path": {"regex": "^/v[0-9]+/"}}, RouteMatch(path_regex="^/v[0-9]+/")),
    ({"routes.0.match": {"method": ["get", "PURGE"]}}, RouteMatch(path_prefix="/", methods=("GET", "PURGE"))),
    ({"routes.0.match": {"host": "A.Example.COM"}}, RouteMatch(path_prefix="/", hosts=("a.example.com",))),
    ({"routes.0.match": {"headers": [{"name": "X-A", "exact": ""}]}},
     RouteMatch(path_prefix="/", headers=(HeaderMatch("x-a", exact=""),))),
    ({"routes.0.match": {"headers": [{"name": "x-a", "present": False}]}},
     RouteMatch(path_prefix="/", headers=(HeaderMatch("x-a", present=False),))),
])
def test_route_matches(changes: dict, expected: RouteMatch) -> None:
    assert parse_config(changed(changes)).routes[0].match == expected


def test_service_port_quoted_number_is_a_number() -> None:
    assert parse_config(changed({"services.0.port": "8080"})).services[0].port == 8080


def test_example_static_yaml_loads() -> None:
    config = load_config(str(EXAMPLES / "static.yaml"))
    assert config.listen == Address("127.0.0.1", 8080)
    assert config.access_log.path == "stdout"
    assert [(s.name, s.services[0].endpoints) for s in config.sources] == [
        ("zone-a", (StaticEndpoint("127.0.0.2", 8000),)),
        ("zone-b", (StaticEndpoint("127.0.0.3", 8000),)),
    ]
    assert [(s.key, s.port) for s in config.services] == [("default/httpbin", 8000)]
    (route,) = config.routes
    assert (route.name, route.match.path_prefix, route.timeout, route.retries.attempts) == (
        "test", "/test", 15.0, 2)
    assert route.backends == (WeightedBackend("default/httpbin"),)


# --- One rule, one error line ------------------------------------------------------------------

EP = "sources.0.services.0.endpoints.0"
EP_ERR = "sources[0].services[0].endpoints[0]"
LABEL = 'must be a DNS label (lowercase letters, digits and "-", at most 63), got'

INVALID = [
    # top level
    ({"liste": "0.0.0.0:80"}, 'unknown key "liste" (did you mean "listen"?)'),
    ({"zzz": 1}, 'unknown key "zzz"'),
    ({"listen": "abc"}, 'listen: expected "host:port", got "abc"'),
    ({"listen": 8080}, 'listen: expected "host:port", got 8080'),
    ({"listen": "a b:80"}, 'listen: expected "host:port", got "a b:80"'),
    ({"listen": "1.2.3.4:0"}, 'listen: port must be from 1 to 65535, got "0"'),
    ({"listen": "1.2.3.4:http"}, 'listen: port must be from 1 to 65535, got "http"'),
    ({"admin": "[::1]"}, 'admin: expected "host:port", got "[::1]"'),
    ({"admin": "[foo]:80"}, 'admin: expected "host:port", got "[foo]:80"'),
    ({"access_log": "stdout"}, 'access_log: must be a mapping, got "stdout"'),
    ({"access_log": {"path": ""}}, "access_log.path: must not be empty"),
    ({"access_log": {"buffer": "lots"}}, 'access_log.buffer: invalid size "lots" '
                                         '(use bytes or B, KB, MB, GB, KiB, MiB, GiB, e.g. "64KiB")'),
    ({"access_log": {"flush_interval": 0}}, "access_log.flush_interval: must be greater than 0"),
    ({"access_log": {"flush_intreval": "1s"}},
     'access_log: unknown key "flush_intreval" (did you mean "flush_interval"?)'),
    ({"timeouts": {"connect": "1 sec"}}, 'timeouts.connect: invalid duration "1 sec" (use a number '
                                         'with us, ms, s, m or h, e.g. "250ms", "1.5s", "1m30s")'),
    ({"timeouts": {"drain": "0s"}}, "timeouts.drain: must be greater than 0"),
    ({"timeouts": {"drain": -1}}, "timeouts.drain: a duration must be a finite number of seconds >= 0, got -1"),
    ({"timeouts": {"conect": "1s"}}, 'timeouts: unknown key "conect" (did you mean "connect"?)'),
    ({"sources": {"name": "a"}}, "sources: must be a list, got a mapping"),
    # sources
    ({"sources.0.name": "Zone_A"}, f'sources[0].name: {LABEL} "Zone_A"'),
    ({"sources.0.name": "a" * 64}, f'sources[0].name: {LABEL} "{"a" * 64}"'),
    ({"sources.0.name": "-a"}, f'sources[0].name: {LABEL} "-a"'),
    ({"sources.0.name": ""}, "sources[0].name: must not be empty"),
    ({"sources.0.name": 7}, "sources[0].name: must be a string, got 7"),
    ({"sources.0.name": DELETE}, "sources[0].name: required"),
    ({"sources.1.name": "zone-a"}, 'sources[1].name: duplicate source name "zone-a"'),
    ({"sources.0.type": "consul"}, 'sources[0].type: must be "static" or "kubernetes", got "consul"'),
    ({"sources.0.type": DELETE}, "sources[0].type: required"),
    ({"sources.0.tpye": "static"}, 'sources[0]: unknown key "tpye" (did you mean "type"?)'),
    ({"sources.1.weight": 0}, "sources[1].weight: must be an integer from 1 to 10000"),
    ({"sources.1.weight": 10001}, "sources[1].weight: must be an integer from 1 to 10000"),
    ({"sources.1.weight": True}, "sources[1].weight: must be an integer from 1 to 10000"),
    ({"sources.1.weight": "100"}, "sources[1].weight: must be an integer from 1 to 10000"),
    ({"sources.1.weight": 1.5}, "sources[1].weight: must be an integer from 1 to 10000"),
    ({"sources.0.services": DELETE}, "sources[0].services: required for a static source"),
    ({"sources.0.services": "httpbin"}, 'sources[0].services: must be a list, got "httpbin"'),
    ({"sources.0.kubeconfig": "/x"}, "sources[0].kubeconfig: not allowed for a static source"),
    ({"sources.0.context": "a"}, "sources[0].context: not allowed for a static source"),
    ({"sources.0.in_cluster": False}, "sources[0].in_cluster: not allowed for a static source"),
    ({"sources.2.services": []}, "sources[2].services: not allowed for a kubernetes source "
                                 "(its services come from the cluster)"),
    ({"sources.2.kubeconfig": "/x"}, "sources[2].kubeconfig: not allowed with in_cluster: true"),
    ({"sources.2.context": "zone-a"}, "sources[2].context: not allowed with in_cluster: true"),
    ({"sources.2.in_cluster": "yes"}, 'sources[2].in_cluster: must be true or false, got "yes"'),
    ({"sources.2.namespaces": ["Default"]}, f'sources[2].namespaces[0]: {LABEL} "Default"'),
    ({"sources.2.namespaces": "default"}, 'sources[2].namespaces: must be a list, got "default"'),
    ({"sources.2": {"name": "c", "type": "kubernetes", "kubeconfig": "/nonexistent/kubeconfig"}},
     "sources[2].kubeconfig: file not found: /nonexistent/kubeconfig"),
    # static services and endpoints
    ({"sources.0.services.1": {"name": "httpbin", "endpoints": []}},
     'sources[0].services[1]: duplicate service "default/httpbin"'),
    ({"sources.0.services.0.endpoints": DELETE}, "sources[0].services[0].endpoints: required"),
    ({"sources.0.services.0.namespace": "A"}, f'sources[0].services[0].namespace: {LABEL} "A"'),
    ({EP: "backend.local:8000"}, f'{EP_ERR}: "backend.local" is not an IP address '
                                 '(static endpoints take IP addresses)'),
    ({EP: "127.0.0.2:http"}, f'{EP_ERR}: port must be from 1 to 65535, got "http"'),
    ({EP: "127.0.0.2:"}, f'{EP_ERR}: port must be from 1 to 65535, got ""'),
    ({EP: "[::1]:70000"}, f'{EP_ERR}: port must be from 1 to 65535, got "70000"'),
    ({EP: "[::1"}, f'{EP_ERR}: expected "ip:port", got "[::1"'),
    ({EP: 8000}, f'{EP_ERR}: expected "ip:port", "ip" or {{address, weight}}, got 8000'),
    ({EP: {"address": "127.0.0.2", "weight": 1001}}, f"{EP_ERR}.weight: must be an integer from 1 to 1000"),
    ({EP: {"address": "127.0.0.2", "weight": 0}}, f"{EP_ERR}.weight: must be an integer from 1 to 1000"),
    ({EP: {"weight": 1}}, f"{EP_ERR}.address: required"),
    ({EP: {"address": "example.com"}}, f'{EP_ERR}.address: "example.com" is not an IP address '
                                       '(static endpoints take IP addresses)'),
    ({EP: {"address": "127.0.0.2", "wieght": 2}}, f'{EP_ERR}: unknown key "wieght" (did you mean "weight"?)'),
    # services
    ({"services.2.name": "httpbin"}, 'services[2]: duplicate service "default/httpbin"'),
    ({"services.2": {"name": "httpbin", "namespace": "default", "port": 1}},
     'services[2]: duplicate service "default/httpbin"'),
    ({"services.2.name": DELETE}, "services[2].name: required"),
    ({"services.2.name": "Unused"}, f'services[2].name: {LABEL} "Unused"'),
    ({"services.2.namespace": "kube_system"}, f'services[2].namespace: {LABEL} "kube_system"'),
    ({"services.0.port": DELETE}, "services[0].port: required"),
    ({"services.0.port": 0}, "services[0].port: must be a port number from 1 to 65535 or a port name, got 0"),
    ({"services.0.port": 65536},
     "services[0].port: must be a port number from 1 to 65535 or a port name, got 65536"),
    ({"services.0.port": ""}, 'services[0].port: must be a port number from 1 to 65535 or a port name, got ""'),
    ({"services.0.port": True},
     "services[0].port: must be a port number from 1 to 65535 or a port name, got true"),
    ({"services.0.sources": ["zone-a", "zone-c"]}, 'services[0].sources[1]: unknown source "zone-c"'),
    ({"services.0.sources": {"zone-a": 1}}, "services[0].sources: must be a list, got a mapping"),
    ({"services.0.ports": 80}, 'services[0]: unknown key "ports" (did you mean "port"?)'),
    # routes
    ({"routes.0.name": DELETE}, "routes[0].name: required"),
    ({"routes.1.name": "test"}, 'routes[1].name: duplicate route name "test"'),
    ({"routes.0.name": "Test"}, f'routes[0].name: {LABEL} "Test"'),
    ({"routes.0.servce": "x"}, 'routes[0]: unknown key "servce" (did you mean "service"?)'),
    ({"routes.0.match.pth": {}}, 'routes[0].match: unknown key "pth" (did you mean "path"?)'),
    ({"routes.0.match": "/test"}, 'routes[0].match: must be a mapping, got "/test"'),
    ({"routes.0.match.path": {"prefix": "test"}}, 'routes[0].match.path.prefix: must start with "/"'),
    ({"routes.0.match.path": {"exact": "test"}}, 'routes[0].match.path.exact: must start with "/"'),
    ({"routes.0.match.path": {"regex": "("}},
     "routes[0].match.path.regex: invalid regex: missing ), unterminated subpattern at position 0"),
    ({"routes.0.match.path": {"prefix": "/", "exact": "/"}},
     "routes[0].match.path: needs exactly one of prefix, segment_prefix, exact, regex"),
    ({"routes.0.match.path": {}}, "routes[0].match.path: needs exactly one of prefix, segment_prefix, exact, regex"),
    ({"routes.0.match.path": {"prefix": "/", "prefx": "/"}},
     'routes[0].match.path: unknown key "prefx" (did you mean "prefix"?)'),
    ({"routes.0.match.host": "a b"}, 'routes[0].match.host: invalid host "a b" (an exact name or "*." and a name)'),
    ({"routes.0.match.host": ["ok.example.com", "*"]},
     'routes[0].match.host[1]: invalid host "*" (an exact name or "*." and a name)'),
    ({"routes.0.match.host": ["a.*.com"]},
     'routes[0].match.host[0]: invalid host "a.*.com" (an exact name or "*." and a name)'),
    ({"routes.0.match.host": 5}, "routes[0].match.host: must be a list, got 5"),
    ({"routes.0.match.method": "GE T"}, 'routes[0].match.method: invalid method "GE T" (must be an HTTP token)'),
    ({"routes.0.match.method": ["GET", 1]}, "routes[0].match.method[1]: must be a string, got 1"),
    ({"routes.0.match.headers": [{"name": "x y", "exact": "1"}]},
     'routes[0].match.headers[0].name: invalid header name "x y" (must be an HTTP token)'),
    ({"routes.0.match.headers": [{"name": "x", "regex": "["}]},
     "routes[0].match.headers[0].regex: invalid regex: unterminated character set at position 0"),
    ({"routes.0.match.headers": [{"name": "x"}]},
     "routes[0].match.headers[0]: needs exactly one of exact, regex, present"),
    ({"routes.0.match.headers": [{"name": "x", "exact": "a", "present": True}]},
     "routes[0].match.headers[0]: needs exactly one of exact, regex, present"),
    ({"routes.0.match.headers": [{"name": "x", "present": "yes"}]},
     'routes[0].match.headers[0].present: must be true or false, got "yes"'),
    ({"routes.0.match.headers": [{"name": "x", "exact": 1}]},
     "routes[0].match.headers[0].exact: must be a string, got 1"),
    ({"routes.0.match.headers": [{"exact": "1"}]}, "routes[0].match.headers[0].name: required"),
    ({"routes.0.service": "default/foo"}, 'routes[0].service: unknown service "default/foo" (not in services)'),
    ({"routes.0.service": "foo"}, 'routes[0].service: unknown service "default/foo" (not in services)'),
    ({"routes.0.service": "a/b/c"}, 'routes[0].service: expected "namespace/name" or "name", got "a/b/c"'),
    ({"routes.0.service": "/httpbin"}, 'routes[0].service: expected "namespace/name" or "name", got "/httpbin"'),
    ({"routes.0.backends": [{"service": "httpbin"}]}, 'routes[0]: "service" and "backends" are mutually exclusive'),
    ({"routes.0.service": DELETE}, 'routes[0]: needs "service" or "backends"'),
    ({"routes.1.backends": []}, "routes[1].backends: must not be empty"),
    ({"routes.1.backends.1.service": "default/nope"},
     'routes[1].backends[1].service: unknown service "default/nope" (not in services)'),
    ({"routes.1.backends.1.service": DELETE}, "routes[1].backends[1].service: required"),
    ({"routes.1.backends.0.weight": 0}, "routes[1].backends[0].weight: must be an integer from 1 to 10000"),
    ({"routes.1.backends.0.weight": 10001}, "routes[1].backends[0].weight: must be an integer from 1 to 10000"),
    ({"routes.0.rewrite": {"prefix": "x"}}, 'routes[0].rewrite.prefix: must start with "/"'),
    ({"routes.0.rewrite": {}}, "routes[0].rewrite: needs prefix, full_path or host"),
    ({"routes.0.request_headers": {"set": {"Content-Length": "1"}}},
     "routes[0].request_headers.set: \"Content-Length\" is written by the gateway itself (use rewrite.host for Host)"),
    ({"routes.0.service": DELETE, "routes.0.redirect": {"status": 304}},
     "routes[0].redirect.status: must be one of 301, 302, 303, 307, 308"),
    ({"routes.0.redirect": {}}, 'routes[0].redirect: a redirect answers the request itself: no "service" or "backends"'),
    ({"routes.0.match.query": [{"name": "a"}]}, "routes[0].match.query[0]: needs exactly one of exact, regex"),
    ({"route_order": "random"}, "route_order: must be \"declared\" or \"precedence\", got \"random\""),
    ({"routes.0.match.path": {"exact": "/t"}, "routes.0.rewrite": {"prefix": "/"}},
     "routes[0].rewrite.prefix: requires a path prefix match"),
    ({"routes.0.match.path": {"regex": "^/t"}, "routes.0.rewrite": {"prefix": "/"}},
     "routes[0].rewrite.prefix: requires a path prefix match"),
    ({"routes.0.timeout": "0s"}, "routes[0].timeout: must be greater than 0"),
    ({"routes.0.timeout": True}, 'routes[0].timeout: expected a duration like "2s", got true'),
    ({"routes.0.retries": {"attempts": 0}}, "routes[0].retries.attempts: must be an integer from 1 to 10"),
    ({"routes.0.retries": {"attempts": 11}}, "routes[0].retries.attempts: must be an integer from 1 to 10"),
    ({"routes.0.retries": {"on_5xx": "yes"}}, 'routes[0].retries.on_5xx: must be true or false, got "yes"'),
    ({"routes.0.retries": {"on_timeout": 1}}, "routes[0].retries.on_timeout: must be true or false, got 1"),
    ({"routes.0.retries": {"per_try_timeout": 0}}, "routes[0].retries.per_try_timeout: must be greater than 0"),
    ({"routes.0.retries": {"atempts": 2}}, 'routes[0].retries: unknown key "atempts" (did you mean "attempts"?)'),
    ({"http": 1}, "http: must be a mapping, got 1"),
    ({"http": {"paths": {}}}, 'http: unknown key "paths" (did you mean "path"?)'),
    ({"http": {"path": {"normalize": "yes"}}}, 'http.path.normalize: must be true or false, got "yes"'),
    ({"http": {"path": {"merge_slashes": 0}}}, "http.path.merge_slashes: must be true or false, got 0"),
    ({"http": {"path": {"escaped_slashes": "decode"}}},
     'http.path.escaped_slashes: must be one of keep, reject, unescape_and_redirect, got "decode"'),
    ({"http": {"path": {"forward": "raw"}}}, 'http.path.forward: must be one of normalized, original, got "raw"'),
    ({"http": {"cleartext": "h2"}}, 'http.cleartext: must be one of auto, http1, h2c, got "h2"'),
    ({"http": {"path": {"normalise": True}}}, 'http.path: unknown key "normalise" (did you mean "normalize"?)'),
    ({"http": {"trusted_proxies": {}}}, "http.trusted_proxies: needs exactly one of cidrs, hops"),
    ({"http": {"trusted_proxies": {"cidrs": ["10.0.0.0/8"], "hops": 1}}},
     "http.trusted_proxies: needs exactly one of cidrs, hops"),
    ({"http": {"trusted_proxies": {"cidrs": []}}}, "http.trusted_proxies.cidrs: must not be empty"),
    ({"http": {"trusted_proxies": {"cidrs": ["10.0.0.0/8", "10.0.0.1/8"]}}},
     'http.trusted_proxies.cidrs[1]: invalid network "10.0.0.1/8": 10.0.0.1/8 has host bits set '
     '(did you mean 10.0.0.0/8?)'),
    ({"http": {"trusted_proxies": {"cidrs": ["lb.internal"]}}},
     "http.trusted_proxies.cidrs[0]: invalid network \"lb.internal\": 'lb.internal' does not appear "
     "to be an IPv4 or IPv6 network"),
    ({"http": {"trusted_proxies": {"cidrs": [8]}}}, "http.trusted_proxies.cidrs[0]: must be a string, got 8"),
    ({"http": {"trusted_proxies": {"hops": 0}}}, "http.trusted_proxies.hops: must be an integer from 1 to 64"),
    ({"http": {"trusted_proxies": {"hops": "2"}}}, "http.trusted_proxies.hops: must be an integer from 1 to 64"),
]


@pytest.mark.parametrize("changes, expected", INVALID, ids=[e for _, e in INVALID])
def test_invalid(changes: dict, expected: str) -> None:
    # Each case breaks one rule, so exactly one line: a bad value must not cascade.
    assert errors(changed(changes)) == [expected]


@pytest.mark.parametrize("data, expected", [
    (None, "empty config"),
    ([1, 2], "the top level must be a mapping, got a list"),
    ("listen: 1", 'the top level must be a mapping, got "listen: 1"'),
])
def test_invalid_top_level(data: object, expected: str) -> None:
    assert errors(data) == [expected]


def test_all_errors_reported_at_once() -> None:
    found = errors(changed({
        "liste": "x",
        "sources.1.weight": 0,
        "services.0.sources": ["zone-c"],
        "routes.0.match.path": {"prefix": "x"},
        "routes.1.backends.0.service": "default/foo",
        "routes.1.backends.1.weight": -1,
    }))
    assert found == [
        'unknown key "liste" (did you mean "listen"?)',
        "sources[1].weight: must be an integer from 1 to 10000",
        'services[0].sources[0]: unknown source "zone-c"',
        'routes[0].match.path.prefix: must start with "/"',
        'routes[1].backends[0].service: unknown service "default/foo" (not in services)',
        "routes[1].backends[1].weight: must be an integer from 1 to 10000",
    ]


# Anything YAML can produce, biased towards the words the config uses.
SCALARS = (st.none() | st.booleans() | st.integers(-2, 70_000) | st.floats() | st.text(max_size=6)
           | st.sampled_from(["/", "/x", "1s", "0s", "64KiB", "127.0.0.1:80", "[::1]", "static",
                              "kubernetes", "httpbin", "default/httpbin", "zone-a", "off", "("]))
KEYS = st.text(max_size=6) | st.integers(0, 3) | st.sampled_from(
    ["name", "type", "weight", "services", "endpoints", "address", "port", "sources", "match",
     "path", "prefix", "exact", "regex", "host", "method", "headers", "present", "service",
     "backends", "rewrite", "timeout", "retries", "attempts", "kubeconfig", "context", "in_cluster"])
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(KEYS, inner, max_size=4), max_leaves=12)
PLACES = sorted({dotted for changes, _ in INVALID for dotted in changes if dotted != "sources.2"})


def parses_or_reports(data: object) -> None:
    try:
        parse_config(data)
    except ConfigError as e:
        assert e.errors and all(isinstance(line, str) and line for line in e.errors)


@settings(deadline=None)
@given(place=st.sampled_from(PLACES), value=VALUES)
def test_any_value_anywhere_is_reported_not_crashed(place: str, value: object) -> None:
    parses_or_reports(changed({place: value}))


@settings(deadline=None)
@given(VALUES)
def test_any_document_is_reported_not_crashed(data: object) -> None:
    parses_or_reports(data)


def test_config_error_message_joins_lines() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(changed({"listen": "abc", "admin": "def"}))
    assert str(info.value) == 'listen: expected "host:port", got "abc"\nadmin: expected "host:port", got "def"'


# --- Kubeconfig contexts -----------------------------------------------------------------------

def kube_source(**fields: object) -> dict:
    return changed({"sources.2": {"name": "cluster-a", "type": "kubernetes", **fields}})


def test_kubeconfig_context_found(kubeconfig: Path) -> None:
    source = parse_config(kube_source(kubeconfig=str(kubeconfig), context="zone-b")).sources[2]
    assert (source.kubeconfig, source.context, source.in_cluster) == (str(kubeconfig), "zone-b", False)


def test_kubeconfig_context_missing(kubeconfig: Path) -> None:
    assert errors(kube_source(kubeconfig=str(kubeconfig), context="zone-c")) == [
        f'sources[2].context: context "zone-c" not found in {kubeconfig} (available: zone-a, zone-b)']


def test_kubeconfig_without_contexts(tmp_path: Path) -> None:
    path = tmp_path / "empty-kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\n")
    assert errors(kube_source(kubeconfig=str(path), context="zone-a")) == [
        f'sources[2].context: context "zone-a" not found in {path} (available: none)']


def test_kubeconfig_unreadable_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken"
    path.write_text("contexts: [\n")
    (found,) = errors(kube_source(kubeconfig=str(path), context="zone-a"))
    assert found.startswith(f"sources[2].context: cannot read the contexts of {path}: ")


def test_kubeconfig_defaults_to_none() -> None:
    # None: the source resolves $KUBECONFIG or ~/.kube/config where it runs; no check here.
    source = parse_config(kube_source(context="anything")).sources[2]
    assert (source.kubeconfig, source.context, source.namespaces) == (None, "anything", ())


def test_kubeconfig_home_expanded(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(kubeconfig.parent))
    source = parse_config(kube_source(kubeconfig="~/kubeconfig")).sources[2]
    assert source.kubeconfig == str(kubeconfig)


def test_kubeconfig_missing_after_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert errors(kube_source(kubeconfig="~/nope.yaml")) == [
        f"sources[2].kubeconfig: file not found: {tmp_path}/nope.yaml"]


# --- Reading files -----------------------------------------------------------------------------

def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.errors == [f"{path}: file not found"]


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert info.value.errors == [f"{tmp_path}: cannot read: Is a directory"]


def test_load_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("routes:\n  - name: a\n   service: b\n")     # mis-indented
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.errors == [
        f"{path}: invalid YAML at line 3, column 4: expected <block end>, "
        "but found '<block mapping start>' (while parsing a block collection)"]


def test_load_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.errors == ["empty config"]


# --- Units -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("250ms", 0.25), ("2s", 2.0), ("1m", 60.0), ("1.5s", 1.5), ("1h", 3600.0), ("1m30s", 90.0),
    ("500us", 0.0005), (".5s", 0.5), ("3", 3.0), ("0.1", 0.1), (2, 2.0), (0.5, 0.5), (" 2s ", 2.0),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "s", "2x", "2 s", "-1s", "1.2.3s", "2S", "1d", True, None, [1],
                                   -1, float("nan"), float("inf")])
def test_parse_duration_invalid(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("text, size", [
    ("64KiB", 65536), ("1MiB", 1 << 20), ("512", 512), ("10KB", 10_000), ("1GiB", 1 << 30),
    ("2mb", 2_000_000), ("100B", 100), ("1.5KiB", 1536), ("1.1KB", 1100), ("4 KiB", 4096), (0, 0), (7, 7),
])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("value", ["", "KiB", "10XB", "1.5B", "-1", "1e3", True, 1.5, None, -1])
def test_parse_size_invalid(value: object) -> None:
    with pytest.raises(ValueError):
        parse_size(value)  # type: ignore[arg-type]


# -- each section's keys, defaults and parsers come from the model, declared once ---------------

def _declared_sections():
    import dataclasses
    from gateway.config import model
    return [cls for cls in vars(model).values() if dataclasses.is_dataclass(cls) and isinstance(cls, type)
            and any("parse" in f.metadata for f in dataclasses.fields(cls))]


@pytest.mark.parametrize("cls", _declared_sections(), ids=lambda cls: cls.__name__)
def test_a_section_reads_its_keys_defaults_and_parsers_from_the_model(cls):
    import dataclasses
    from gateway.config.validate import section
    declared = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls) if "parse" in f.metadata}
    required = {key: f for key, f in declared.items() if f.default is dataclasses.MISSING}
    errs: list[str] = []
    got = section(cls, {}, "s", errs)
    if required:        # a required key missing: named, nothing built
        assert got is None and errs == [f"s.{key}: required" for key in required]
        return
    assert got == cls() and errs == []
    for key, f in declared.items():
        errs = []
        kept = section(cls, {key: {"not": "a value"}}, "s", errs)
        # at the key, or within it (a nested section names its own keys)
        assert errs and all(e.startswith((f"s.{key}: ", f"s.{key}.")) for e in errs), (key, errs)
        assert getattr(kept, f.name) == f.default       # a bad key keeps its default
    errs = []
    section(cls, {"no_such_key": 1}, "s", errs)
    assert errs == ['s: unknown key "no_such_key"'] or errs[0].startswith('s: unknown key "no_such_key" (did')


def test_every_flat_section_of_the_model_is_declared_with_its_parser():
    """The sections the loader reads by their fields; more join as they are declared."""
    names = {cls.__name__ for cls in _declared_sections()}
    assert {"Timeouts", "Limits", "PathConfig", "SuccessRate", "CircuitBreakers", "Capacity", "AccessLogConfig",
            "TracingConfig", "HealthCheckConfig", "OutlierConfig", "SlowStart", "LeaderElection"} <= names
