"""The config file: YAML parsed and checked into the model (``gateway.config.model``).

Every problem found is reported with its key path (``routes[0].match.path.prefix:
must start with "/"``), all of them at once; nothing half-valid is returned.

The file (durations: "250ms", "2s", "1m30s", "1h" or seconds; sizes: "64KiB", "10KB" or bytes)::

    listen: 0.0.0.0:8080                # host:port, IPv6 as [::1]:8080
    admin: 127.0.0.1:9901               # off or null: no admin API; or (docs/security.md):
    # admin: {listen: 0.0.0.0:9901, token_file: F, read_token_file: F, metrics_token_file: F,
    #         session_ttl: 12h, tls: {cert: F, key: F}}
    access_log: {path: stdout, buffer: 64KiB, flush_interval: 1s}   # stdout|stderr|/file|off
    tracing: {endpoint: "http://127.0.0.1:4318/v1/traces",   # OTLP HTTP/protobuf; absent: off
              sample_ratio: 0.01, service_name: gateway, max_queue: 4096, batch_size: 512,
              flush_interval: 1s, timeout: 2s}      # errors are always kept, whatever the ratio
    timeouts: {connect: 1s, response_header: 15s, downstream_idle: 60s,
               downstream_header: 10s, upstream_idle: 60s, drain: 20s}
    http:
      path: {normalize: true, merge_slashes: true,     # before route matching (RFC 3986 6.2.2)
             escaped_slashes: reject,                  # %2F %5C, backslash: keep | reject | unescape_and_redirect
             forward: normalized}                      # what goes upstream: normalized | original
      trusted_proxies: {cidrs: [10.0.0.0/8]}           # or {hops: 1}; default: trust no one
    sources:                            # weight: 1..10000, default 100
      - name: zone-a
        type: static
        services:                       # endpoint: "ip:port", "ip" (the service's port),
          - name: httpbin               # "[v6]:port", or {address: ..., weight: 1..1000}
            namespace: default
            endpoints: ["127.0.0.2:8000", {address: "127.0.0.3:8000", weight: 2}]
      - {name: cluster-a, type: kubernetes, kubeconfig: ~/.kube/a.yaml, context: zone-a,
         namespaces: [default]}         # kubeconfig default: $KUBECONFIG or ~/.kube/config
      - {name: local, type: kubernetes, in_cluster: true}
    services:                           # port: number or port name; sources: default all
      - {name: httpbin, namespace: default, port: 8000, sources: [zone-a, cluster-a]}
      - {name: echo, port: grpc, protocol: h2c}   # auto (appProtocol) | http1 | h2c | h2;
                                        # http2_connections: per endpoint per worker (2)
    routes:
      - name: test
        match:                          # all optional; no path: prefix "/"
          path: {prefix: /test}         # exactly one of prefix | exact | regex
          host: "*.example.com"         # string or list: exact or "*." wildcard
          method: [GET, HEAD]           # string or list
          headers: [{name: x-env, exact: prod}, {name: x-debug, present: true},
                    {name: x-v, regex: "^v[12]$"}]
        service: default/httpbin        # "ns/name" or "name" (namespace "default"), or:
        # backends: [{service: httpbin, weight: 90}, {service: canary, weight: 10}]
        rewrite: {prefix: /}            # replaces the matched path prefix
        timeout: 15s                    # whole request; default none
        retries: {attempts: 2, on_5xx: true, on_timeout: false, per_try_timeout: 2s}
        # ... idempotent: true: sent requests of any method retried (gRPC: also on
        #     UNAVAILABLE and CANCELLED answered before any message)

Names (sources, services, namespaces, routes) are DNS labels.  Hosts and header names are
lower-cased, methods upper-cased.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import replace
from functools import partial
from typing import Any

import yaml

from gateway.config.model import (Address, AccessLogConfig, TracingConfig, Timeouts, Limits, PathConfig, TrustedProxies,
                                  HttpConfig, Certificate, ClientValidation, TlsListener, UpstreamTls, AdminOptions,
                                  StaticEndpoint, StaticService, SourceConfig, HealthCheckConfig,
                                  OutlierConfig, HashCookie, LbConfig, SlowStart,
                                  CircuitBreakers, Capacity, ServiceConfig, HeaderMatch, QueryMatch, RouteMatch,
                                  WeightedBackend, RetryPolicy, HeaderFilter, Redirect, MirrorConfig,
                                  BackendFilters, CorsPolicy, SessionPersistence, IpFilterPolicy, RateLimitPolicy, RedisConfig, AuthPolicy, RouteConfig,
                                  LeaderElection, GatewayApiConfig,
                                  MultiClusterConfig, Config,
                                  CLEARTEXT, DEFAULT_NAMESPACE, DEFAULT_SOURCE_WEIGHT, PROTOCOLS, LB_POLICIES,
                                  DEFAULT_CONTROLLER_NAME, MAX_RATE_WINDOW)
from gateway.config.validate import (_at, _bool, _choice, ConfigError, _duration, _err, _Errors,
                                     _HOSTNAME, _int, _is_off, _keys, _kwargs, _LABEL, _list, _list_of,
                                     _name, _opt, _parse_each, _regex, _ROUTE_HOST, _share, _show,
                                     _str, _str_list, _token, _unique, absolute_path, ca_bundle_problem, networks,
                                     one_of, section)


def load_config(path: str) -> Config:
    """Read and validate a YAML config file; raise ConfigError naming every problem."""
    try:
        # Binary, so that PyYAML detects the encoding and reports bad bytes with a position.
        with open(path, "rb") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([_yaml_error(path, e)]) from None
    return parse_config(data, path=path)


def parse_config(data: object, path: str | None = None) -> Config:
    """Validate an already-parsed YAML document."""
    if data is None:
        raise ConfigError(["empty config"])
    if not isinstance(data, dict):
        raise ConfigError([f"the top level must be a mapping, got {_show(data)}"])
    errs: list[str] = []
    _keys(data, "", errs, _TOP_KEYS)
    top = _kwargs(data, "", errs, {"listen": _address, "tls": _tls_listener, "workers": _workers,
                                   "access_log": _access_log, "route_order": _route_order,
                                   "tracing": _tracing, "redis": partial(section, RedisConfig),
                                   "multicluster": _multicluster,
                                   "timeouts": _timeouts, "limits": _limits, "http": _http})
    if "admin" in data:  # absent: the default address; null or off: no admin API
        top["admin"], top["admin_token"], top["admin_options"] = _admin(data["admin"], "admin", errs)

    # Sections in dependency order: services name sources, routes name services.
    sources = _parse_each(data.get("sources"), "sources", errs, _source)
    _unique(((f"{p}.name", s.name) for p, s in sources), "source name", errs)
    source_names = {s.name: s.priority for _, s in sources if s.name}    # name -> priority

    services = _parse_each(data.get("services"), "services", errs,
                           partial(_service, sources=source_names))
    _unique(((p, s.key) for p, s in services if s.name and s.namespace), "service", errs)
    service_keys = {s.key for _, s in services}

    routes = _parse_each(data.get("routes"), "routes", errs, partial(_route, services=service_keys))
    for p, r in routes:
        if r.rate_limit is not None and r.rate_limit.scope == "global" and data.get("redis") is None:
            _err(errs, f"{p}.rate_limit.scope", 'a global limit needs the top-level "redis" section')
    _unique(((f"{p}.name", r.name) for p, r in routes), "route name", errs)
    if data.get("gateway_api") is not None:
        kubernetes_sources = [s.name for _, s in sources if s.type == "kubernetes"]
        top["gateway_api"] = _gateway_api(data["gateway_api"], "gateway_api", errs, kubernetes_sources)

    tls = top.get("tls")
    if tls is not None and not tls.certificates:
        _err(errs, "tls.certificates", "at least one certificate is needed (a Gateway's HTTPS listeners "
                                       "are served on their own ports, not here)")
    top["document"] = data
    if errs:
        raise ConfigError(errs)
    return Config(**top, sources=tuple(s for _, s in sources),
                  services=tuple(s for _, s in services),
                  routes=tuple(replace(r, rank=(0, i)) for i, (_, r) in enumerate(routes)), path=path)


def _yaml_error(path: str, e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(e, "problem", None) or " ".join(str(e).split())
    context = getattr(e, "context", None)
    return f"{path}: invalid YAML{where}: {problem}" + (f" ({context})" if context else "")


# --- Addresses ---------------------------------------------------------------------------------

def _ip(text: str) -> str | None:
    """The canonical form of an IP address, so that one address is spelled one way."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _split_host_port(text: str) -> tuple[str, str | None]:
    """"host:port", "host", "[v6]:port", "[v6]" or a bare IPv6 address -> (host, port or None)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or rest[:1] not in ("", ":") or ":" not in host:
            raise ValueError(text)
        return host, (rest[1:] if rest else None)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, port
    return text, None


def _port_number(text: str) -> int | None:
    if text.isascii() and text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    return None


def _address(value: Any, path: str, errs: _Errors) -> Address | None:
    """A "host:port" to listen on; the host is an IP address or a name such as localhost."""
    expected = f'expected "host:port", got {_show(value)}'
    try:
        host, port = _split_host_port(value) if isinstance(value, str) else ("", None)
    except ValueError:
        host, port = "", None
    ip = _ip(host)
    if port is None or not (ip or _HOSTNAME.fullmatch(host.lower())):
        _err(errs, path, expected)
        return None
    number = _port_number(port)
    if number is None:
        _err(errs, path, f'port must be from 1 to 65535, got "{port}"')
        return None
    return Address(ip or host.lower(), number)


# --- Sections -----------------------------------------------------------------------------------

_TOP_KEYS = ("listen", "tls", "workers", "admin", "access_log", "timeouts", "limits", "http",
             "sources", "services", "routes", "route_order", "gateway_api", "multicluster",
             "tracing", "redis")
_KUBERNETES_KEYS = ("kubeconfig", "context", "in_cluster", "namespaces")
_SOURCE_KEYS = ("name", "type", "weight", "priority", "drained", "services", *_KUBERNETES_KEYS)
_ROUTE_KEYS = ("name", "match", "service", "backends", "rewrite", "timeout", "retries",
               "request_headers", "response_headers", "redirect", "mirrors", "cors",
               "session_persistence", "ip_filter", "rate_limit", "auth")

_SOURCE_WEIGHT = partial(_int, lo=1, hi=10_000)
_PRIORITY = partial(_int, lo=0, hi=100)
_ENDPOINT_WEIGHT = partial(_int, lo=1, hi=1000)
_BACKEND_WEIGHT = partial(_int, lo=1, hi=10_000)
_ATTEMPTS = partial(_int, lo=1, hi=10)


_ADMIN_KEYS = ("listen", "token_file", "read_token_file", "metrics_token_file", "session_ttl", "tls")


def _admin(value: Any, path: str, errs: _Errors) -> tuple[Address | None, str | None, AdminOptions]:
    """``admin: host:port`` or ``{listen: host:port, token_file: path, ...}``.

    Bound to anything but loopback, the admin API must have a token: it can
    change routes and sources.  ``token_file`` is the write token (everything);
    ``read_token_file`` reads only, ``metrics_token_file`` reads /metrics only
    (for a Prometheus scrape); both need ``token_file`` (without it the API is
    open on loopback, and a narrower token would guard nothing).
    """
    if _is_off(value):
        return None, None, AdminOptions()
    token = None
    options: dict[str, Any] = {}
    if isinstance(value, dict):
        d = _keys(value, path, errs, _ADMIN_KEYS, required=("listen",))
        address = _opt(d, "listen", _address, path, errs) if d else None
        tokens: dict[str, str | None] = {}
        for key in ("token_file", "read_token_file", "metrics_token_file"):
            token_file = _opt(d, key, _existing_file, path, errs) if d else None
            if token_file:
                tokens[key] = _read_token(token_file, _at(path, key), errs)
        token = tokens.get("token_file")
        for key in ("read_token_file", "metrics_token_file"):
            if key in tokens and "token_file" not in (d or {}):
                _err(errs, _at(path, key), "needs admin.token_file (the write token) beside it")
        seen: dict[str, str] = {}
        for key, text in tokens.items():
            if text is not None and text in seen:   # one token in two scopes: the wider one wins
                _err(errs, _at(path, key), f"the same token as admin.{seen[text]}: give each scope its own")
            elif text is not None:
                seen[text] = key
        options["read_token"] = tokens.get("read_token_file")
        options["metrics_token"] = tokens.get("metrics_token_file")
        if d and "session_ttl" in d:
            ttl = _duration(d["session_ttl"], _at(path, "session_ttl"), errs)
            if ttl is not None:
                options["session_ttl"] = ttl
        if d and "tls" in d:
            options["tls"] = _admin_tls(d["tls"], _at(path, "tls"), errs)
    else:
        address = _address(value, path, errs)
    if address is not None and token is None and not _is_loopback(address.host):
        _err(errs, path, f"the admin API on {address.host} (not loopback) needs a token: "
                         "admin: {listen: ..., token_file: ...}")
    return address, token, AdminOptions(**options)


def _admin_tls(value: Any, path: str, errs: _Errors) -> Certificate | None:
    c = _keys(value, path, errs, ("cert", "key"), required=("cert", "key"))
    if c is None:
        return None
    cert = _opt(c, "cert", _existing_file, path, errs)
    key = _opt(c, "key", _existing_file, path, errs)
    if not (cert and key):
        return None
    before = len(errs)
    _check_certificate(cert, key, path, errs)
    return Certificate(cert, key) if len(errs) == before else None


def _read_token(token_file: str, path: str, errs: _Errors) -> str | None:
    try:
        with open(token_file, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        _err(errs, path, f"cannot read the token: {exc}")
        return None
    if len(token) < 16:
        _err(errs, path, "the token must be at least 16 characters")
        return None
    return token


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _workers(value: Any, path: str, errs: _Errors) -> int | None:
    if value == "auto":
        return os.cpu_count() or 1
    return _int(value, path, errs, 1, 256)


def _access_log(value: Any, path: str, errs: _Errors) -> AccessLogConfig:
    if _is_off(value):                      # `access_log: off`
        return AccessLogConfig(path=None)
    if isinstance(value, dict) and "path" in value and value["path"] is None:
        value = {**value, "path": "off"}    # `path: null`
    return section(AccessLogConfig, value, path, errs)


def _tracing(value: Any, path: str, errs: _Errors) -> TracingConfig | None:
    if _is_off(value):                      # `tracing: off`
        return None
    return section(TracingConfig, value, path, errs, required=("endpoint",))


_timeouts = partial(section, Timeouts)
_limits = partial(section, Limits)
_path_config = partial(section, PathConfig)
_circuit_breakers = partial(section, CircuitBreakers)
_capacity = partial(section, Capacity)


def _http(value: Any, path: str, errs: _Errors) -> HttpConfig:
    d = _keys(value, path, errs, ("path", "trusted_proxies", "cleartext"))
    if d is None:
        return HttpConfig()
    return HttpConfig(**_kwargs(d, path, errs, {"path": _path_config,
                                                "trusted_proxies": _trusted_proxies,
                                                "cleartext": one_of(*CLEARTEXT)}))





def _trusted_proxies(value: Any, path: str, errs: _Errors) -> TrustedProxies | None:
    d = _keys(value, path, errs, ("cidrs", "hops"))
    if d is None:
        return None
    if (d.get("cidrs") is None) == (d.get("hops") is None):
        _err(errs, path, "needs exactly one of cidrs, hops")
        return None
    if d.get("hops") is not None:
        hops = _int(d["hops"], _at(path, "hops"), errs, 1, 64)
        return TrustedProxies(hops=hops) if hops is not None else None
    p = _at(path, "cidrs")
    if d["cidrs"] == []:
        _err(errs, p, "must not be empty")
    cidrs = networks(d["cidrs"], p, errs)
    return TrustedProxies(cidrs=cidrs) if cidrs else None


def _source(value: Any, path: str, errs: _Errors) -> SourceConfig | None:
    d = _keys(value, path, errs, _SOURCE_KEYS, required=("name", "type"))
    if d is None:
        return None
    name = _opt(d, "name", _name, path, errs)
    weight = _opt(d, "weight", _SOURCE_WEIGHT, path, errs, DEFAULT_SOURCE_WEIGHT)
    priority = _opt(d, "priority", _PRIORITY, path, errs, 0)
    kind = d.get("type")
    if kind == "static":
        source = SourceConfig(name, kind, weight, services=_static_services(d, path, errs))
    elif kind == "kubernetes":
        source = _kubernetes_source(d, path, errs, name, weight)
    else:
        if kind is not None:
            _err(errs, _at(path, "type"), f'must be "static" or "kubernetes", got {_show(kind)}')
        # Still returned, so that references to its name do not add "unknown source" errors.
        source = SourceConfig(name, kind, weight)
    drained = _opt(d, "drained", _bool, path, errs, False)
    return replace(source, priority=priority or 0, drained=bool(drained))


def _static_services(d: dict, path: str, errs: _Errors) -> tuple[StaticService, ...]:
    for key in _KUBERNETES_KEYS:
        if key in d:
            _err(errs, _at(path, key), "not allowed for a static source")
    if d.get("services") is None:
        _err(errs, _at(path, "services"), "required for a static source")
        return ()
    services = _parse_each(d["services"], _at(path, "services"), errs, _static_service)
    _unique(((p, f"{s.namespace}/{s.name}") for p, s in services if s.name), "service", errs)
    return tuple(s for _, s in services)


def _static_service(value: Any, path: str, errs: _Errors) -> StaticService | None:
    d = _keys(value, path, errs, ("name", "namespace", "endpoints"), required=("name", "endpoints"))
    if d is None:
        return None
    return StaticService(namespace=_opt(d, "namespace", _name, path, errs, DEFAULT_NAMESPACE),
                         name=_opt(d, "name", _name, path, errs),
                         endpoints=_opt(d, "endpoints", _list_of(_endpoint), path, errs, ()))


def _endpoint(value: Any, path: str, errs: _Errors) -> StaticEndpoint | None:
    """"ip:port", "ip" (the service's port), "[v6]:port", or {address, weight}."""
    if not isinstance(value, dict):
        return _endpoint_address(value, path, errs, weight=1)
    d = _keys(value, path, errs, ("address", "weight"), required=("address",))
    weight = _opt(d, "weight", _ENDPOINT_WEIGHT, path, errs, 1)
    if d.get("address") is None:
        return None
    return _endpoint_address(d["address"], _at(path, "address"), errs, weight)


def _endpoint_address(value: Any, path: str, errs: _Errors, weight: int) -> StaticEndpoint | None:
    if not isinstance(value, str):
        _err(errs, path, f'expected "ip:port", "ip" or {{address, weight}}, got {_show(value)}')
        return None
    try:
        host, port = _split_host_port(value)
    except ValueError:
        _err(errs, path, f'expected "ip:port", got {_show(value)}')
        return None
    ip = _ip(host)
    if ip is None:
        # Refused, not resolved: a name resolved once at load would pin a stale address.
        _err(errs, path, f'"{host}" is not an IP address (static endpoints take IP addresses)')
        return None
    number = None if port is None else _port_number(port)
    if port is not None and number is None:
        _err(errs, path, f'port must be from 1 to 65535, got "{port}"')
        return None
    return StaticEndpoint(ip, number, weight)


def _kubernetes_source(d: dict, path: str, errs: _Errors, name: str | None,
                       weight: int | None) -> SourceConfig:
    if "services" in d:
        _err(errs, _at(path, "services"),
             "not allowed for a kubernetes source (its services come from the cluster)")
    in_cluster = _opt(d, "in_cluster", _bool, path, errs, False)
    namespaces = _opt(d, "namespaces", _list_of(_name), path, errs, ())
    kubeconfig = context = None
    if in_cluster:
        for key in ("kubeconfig", "context"):
            if d.get(key) is not None:
                _err(errs, _at(path, key), "not allowed with in_cluster: true")
    else:
        context = _opt(d, "context", _str, path, errs)
        kubeconfig = _opt(d, "kubeconfig", _existing_file, path, errs)
        # Without an explicit kubeconfig the source resolves $KUBECONFIG or ~/.kube/config
        # itself; that depends on where the gateway runs, so it is not checked here.
        if kubeconfig is not None and context is not None:
            _check_context(kubeconfig, context, _at(path, "context"), errs)
    return SourceConfig(name, "kubernetes", weight, kubeconfig=kubeconfig, context=context,
                        in_cluster=bool(in_cluster), namespaces=namespaces)


def _existing_file(value: Any, path: str, errs: _Errors) -> str | None:
    """A path ("~" expanded) to a file that exists."""
    text = _str(value, path, errs)
    if text is None:
        return None
    expanded = os.path.expanduser(text)
    if not os.path.isfile(expanded):
        _err(errs, path, f"file not found: {expanded}")
        return None
    return expanded


def _check_context(kubeconfig: str, context: str, path: str, errs: _Errors) -> None:
    """A context missing from the kubeconfig fails at startup; say so now, with the choices."""
    try:
        with open(kubeconfig, "rb") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        _err(errs, path, f"cannot read the contexts of {kubeconfig}: {' '.join(str(e).split())}")
        return
    contexts = doc.get("contexts") if isinstance(doc, dict) else None
    if not isinstance(contexts, list):
        contexts = []
    names = [c["name"] for c in contexts if isinstance(c, dict) and isinstance(c.get("name"), str)]
    if context not in names:
        _err(errs, path, f'context "{context}" not found in {kubeconfig} '
                         f'(available: {", ".join(names) or "none"})')


def _service(value: Any, path: str, errs: _Errors, sources: dict[str, int]) -> ServiceConfig | None:
    d = _keys(value, path, errs, ("name", "namespace", "port", "sources", "health_check",
                                  "outlier_detection", "panic_threshold", "tls", "prefer", "failover",
                                  "priorities", "overprovisioning_factor", "circuit_breakers", "lb",
                                  "slow_start", "protocol", "http2_connections", "capacity"),
              required=("name", "port"))
    if d is None:
        return None
    namespace = _opt(d, "namespace", _name, path, errs, DEFAULT_NAMESPACE)
    name = _opt(d, "name", _name, path, errs)
    port = _opt(d, "port", _port, path, errs)
    names = []
    for p, source in _opt(d, "sources", _str_list, path, errs, []):
        if source in sources:
            names.append(source)
        else:
            _err(errs, p, f'unknown source "{source}"')
    health = _opt(d, "health_check", _health_check, path, errs)
    outlier = OutlierConfig()
    if "outlier_detection" in d:
        outlier = None if _is_off(d["outlier_detection"]) else _outlier(
            d["outlier_detection"], _at(path, "outlier_detection"), errs)
    panic = _opt(d, "panic_threshold", _share, path, errs, 0.5)
    tls = _opt(d, "tls", _upstream_tls, path, errs)
    priorities = _service_priorities(d, path, errs, sources)
    factor = _opt(d, "overprovisioning_factor", _factor, path, errs, 1.4)
    breakers = _opt(d, "circuit_breakers", _circuit_breakers, path, errs, CircuitBreakers())
    lb = _opt(d, "lb", _lb, path, errs, LbConfig())
    slow_start = None
    if not _is_off(d.get("slow_start")):
        slow_start = _opt(d, "slow_start", _slow_start, path, errs)
    if slow_start is not None and lb.policy == "ring_hash":
        # A ramp would move the ring's points, and so keys, twice per recovery.
        _err(errs, _at(path, "slow_start"), "not with lb policy ring_hash (it would remap keys)")
    protocol = _opt(d, "protocol", partial(_choice, choices=PROTOCOLS), path, errs, "auto")
    connections = _opt(d, "http2_connections", partial(_int, lo=1, hi=64), path, errs, 2)
    capacity = _opt(d, "capacity", _capacity, path, errs, Capacity())
    if capacity.max_in_flight_per_endpoint or capacity.max_rate_per_endpoint:
        levels = dict(priorities)
        if len({levels.get(name, 0) for name in (names or sources)}) < 2:
            # The excess goes to the next level: with one, a limit would do nothing.
            _err(errs, _at(path, "capacity"), "needs a second priority level to spill to "
                                              "(failover, prefer, priorities or sources[].priority)")
    return ServiceConfig(namespace, name, port, tuple(names), health, outlier, panic, tls,
                         priorities, factor, breakers, lb, slow_start, protocol, connections, capacity)


def _slow_start(value: Any, path: str, errs: _Errors) -> SlowStart | None:
    return section(SlowStart, value, path, errs)


def _lb(value: Any, path: str, errs: _Errors) -> LbConfig:
    d = _keys(value, path, errs, ("policy", "header", "source_ip", "cookie", "decay"))
    if d is None:
        return LbConfig()
    kw = {k: v for k, v in _kwargs(d, path, errs, {
        "policy": partial(_choice, choices=LB_POLICIES), "header": _token_name,
        "source_ip": _bool, "cookie": _hash_cookie, "decay": _duration}).items() if v is not None}
    lb = LbConfig(**kw)
    keys = [k for k, given in (("header", lb.header is not None), ("source_ip", lb.source_ip),
                               ("cookie", lb.cookie is not None)) if given]
    if lb.policy == "ring_hash" and len(keys) > 1:
        _err(errs, _at(path, keys[1]), f"use one key of header, source_ip and cookie, not {' and '.join(keys)}")
    elif lb.policy == "ring_hash" and not keys:
        _err(errs, _at(path, "policy"),
             "ring_hash needs a key: header: <name>, source_ip: true or cookie: {name: <name>}")
    elif lb.policy != "ring_hash" and keys:
        _err(errs, _at(path, keys[0]), f"only for policy ring_hash, not {lb.policy}")
    if "decay" in d and lb.policy != "peak_ewma":
        _err(errs, _at(path, "decay"), f"only for policy peak_ewma, not {lb.policy}")
    return lb


def _hash_cookie(value: Any, path: str, errs: _Errors) -> HashCookie | None:
    d = _keys(value, path, errs, ("name", "ttl", "path"))
    if d is None:
        return None
    if "name" not in d:
        _err(errs, _at(path, "name"), "is required")
        return None
    kw = _kwargs(d, path, errs, {"name": partial(_token, what="cookie name"), "ttl": _duration,
                                 "path": absolute_path})
    if kw.get("name") is None:
        return None
    return HashCookie(**{k: v for k, v in kw.items() if v is not None})


def _token_name(value: Any, path: str, errs: _Errors) -> str | None:
    return _token(value, path, errs, "header name")




def _service_priorities(d: dict, path: str, errs: _Errors,
                        sources: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """Each source's priority level for this service.

    ``prefer: [a, b]`` puts a at level 0, b at 1 and every other source after them (in
    its sources[].priority order), so each gateway replica can prefer its own zone's
    cluster; ``priorities: {a: 0, b: 1}`` sets levels by name, the rest keep theirs;
    ``failover: [b, c]``: the sources not listed keep their levels, then b on the next level,
    c on the one after it -- ordered failover over any number of clusters.
    """
    levels = dict(sources)
    if "failover" in d and ("prefer" in d or "priorities" in d):
        _err(errs, _at(path, "failover"), "use one of prefer, priorities or failover")
    elif "prefer" in d and "priorities" in d:
        _err(errs, _at(path, "prefer"), "use prefer or priorities, not both")
    elif "failover" in d:
        failover = _opt(d, "failover", _str_list, path, errs, [])
        for p, name in failover:
            if name not in sources:
                _err(errs, p, f'unknown source "{name}"')
        _unique(failover, "source", errs)
        listed = [name for _, name in failover]
        base = 1 + max((level for name, level in sources.items() if name not in listed), default=-1)
        levels.update({name: base + i for i, name in enumerate(listed)})
    elif "prefer" in d:
        prefer = _opt(d, "prefer", _str_list, path, errs, [])
        for p, name in prefer:
            if name not in sources:
                _err(errs, p, f'unknown source "{name}"')
        listed = [name for _, name in prefer]
        _unique(prefer, "source", errs)
        levels = {name: len(listed) + level for name, level in sources.items()}
        levels.update({name: i for i, name in enumerate(listed)})
    elif "priorities" in d:
        value, where = d["priorities"], _at(path, "priorities")
        if not isinstance(value, dict):
            _err(errs, where, f"must be a mapping of source name to level, got {_show(value)}")
        else:
            for name, level in value.items():
                if name not in sources:
                    _err(errs, _at(where, str(name)), f'unknown source "{name}"')
                    continue
                parsed = _PRIORITY(level, _at(where, name), errs)
                if parsed is not None:
                    levels[name] = parsed
    if not any(levels.values()):
        return ()               # one level: today's balancing over every endpoint
    return tuple(sorted(levels.items()))


def _factor(value: Any, path: str, errs: _Errors) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 100:
        _err(errs, path, f"must be a number from 1 to 100, got {_show(value)}")
        return None
    return float(value)


def _tls_listener(value: Any, path: str, errs: _Errors) -> TlsListener | None:
    d = _keys(value, path, errs, ("listen", "certificates", "min_version", "client_validation"),
              required=("listen",))
    if d is None:
        return None
    listen = _opt(d, "listen", _address, path, errs)
    certs = []
    for p, item in _list(d.get("certificates") or [], _at(path, "certificates"), errs):
        c = _keys(item, p, errs, ("cert", "key"), required=("cert", "key"))
        if c is not None:
            cert = _opt(c, "cert", _existing_file, p, errs)
            key = _opt(c, "key", _existing_file, p, errs)
            if cert and key:
                _check_certificate(cert, key, p, errs)
                certs.append(Certificate(cert, key))
    version = str(d.get("min_version", "1.2"))
    if version not in ("1.2", "1.3"):
        _err(errs, _at(path, "min_version"), f'must be "1.2" or "1.3", got {_show(d.get("min_version"))}')
    validation = _opt(d, "client_validation", _client_validation, path, errs)
    if listen is None or len(certs) != len(d.get("certificates") or ()):
        return None
    return TlsListener(listen, tuple(certs), version, validation)


CLIENT_VALIDATION_MODES = {"required": False, "allow_insecure_fallback": True}


def _client_validation(value: Any, path: str, errs: _Errors) -> ClientValidation | None:
    """``{ca_file: F, mode: required | allow_insecure_fallback}``: the CAs client certificates
    are verified against (read now: a reload reads the file again)."""
    d = _keys(value, path, errs, ("ca_file", "mode"), required=("ca_file",))
    if d is None:
        return None
    mode = d.get("mode", "required")
    if mode not in CLIENT_VALIDATION_MODES:
        _err(errs, _at(path, "mode"), f'must be "required" or "allow_insecure_fallback", got {_show(mode)}')
        return None
    ca_file = _opt(d, "ca_file", _existing_file, path, errs)
    if ca_file is None:
        return None
    try:
        with open(ca_file) as f:
            ca = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        _err(errs, _at(path, "ca_file"), f"cannot read {ca_file}: {exc}")
        return None
    problem = ca_bundle_problem(ca)
    if problem:
        _err(errs, _at(path, "ca_file"), f"{ca_file}: {problem}")
        return None
    return ClientValidation(ca, CLIENT_VALIDATION_MODES[mode], origin=ca_file)


def _check_certificate(cert: str, key: str, path: str, errs: _Errors) -> None:
    import ssl
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        _err(errs, path, f"cannot load the certificate and key: {exc}")


def _upstream_tls(value: Any, path: str, errs: _Errors) -> UpstreamTls | None:
    if value is True:
        return UpstreamTls()
    d = _keys(value, path, errs, ("ca", "sni", "verify"))
    if d is None:
        return None
    kw = _kwargs(d, path, errs, {"ca": _existing_file, "sni": _str, "verify": _bool})
    return UpstreamTls(**{k: v for k, v in kw.items() if v is not None})


def _health_check(value: Any, path: str, errs: _Errors) -> HealthCheckConfig | None:
    check = section(HealthCheckConfig, value, path, errs)
    if check is not None and check.timeout >= check.interval:
        _err(errs, _at(path, "timeout"), "must be shorter than the interval")
    return check


def _outlier(value: Any, path: str, errs: _Errors) -> OutlierConfig | None:
    return section(OutlierConfig, value, path, errs)


def _port(value: Any, path: str, errs: _Errors) -> int | str | None:
    """A Service port: its number, or its name (each source resolves the name)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)    # a quoted number is still a number
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    _err(errs, path, f"must be a port number from 1 to 65535 or a port name, got {_show(value)}")
    return None


def parse_route(value: Any, services: set[str] | None = None) -> RouteConfig:
    """One route body, as a ``routes:`` entry of the file says it, checked as the file's are
    (the admin console's HTTPRoutes use it); ConfigError names every problem.  ``services``:
    the services it may name, None for any."""
    errs: _Errors = []
    route = _route(value, "", errs, services)
    if errs:
        raise ConfigError(errs)
    return route


def _route(value: Any, path: str, errs: _Errors, services: set[str] | None) -> RouteConfig | None:
    d = _keys(value, path, errs, _ROUTE_KEYS, required=("name",))
    if d is None:
        return None
    match = _opt(d, "match", _match, path, errs, RouteMatch(path_prefix="/"))
    rewrite = _opt(d, "rewrite", partial(_rewrite, match=match), path, errs, {})
    redirect = _opt(d, "redirect", partial(_redirect, match=match), path, errs)
    if redirect is not None and (d.get("service") is not None or d.get("backends") is not None):
        _err(errs, _at(path, "redirect"), 'a redirect answers the request itself: no "service" or "backends"')
    return RouteConfig(name=_opt(d, "name", _name, path, errs),
                       match=match,
                       backends=() if redirect is not None else _backends(d, path, errs, services),
                       rewrite_prefix=rewrite.get("prefix"),
                       rewrite_full_path=rewrite.get("full_path"),
                       rewrite_host=rewrite.get("host"),
                       timeout=_opt(d, "timeout", _duration, path, errs),
                       retries=_opt(d, "retries", _retries, path, errs, RetryPolicy()),
                       request_headers=_opt(d, "request_headers", _header_filter, path, errs),
                       response_headers=_opt(d, "response_headers", _header_filter, path, errs),
                       redirect=redirect,
                       mirrors=_opt(d, "mirrors", partial(_mirrors, services=services), path, errs, ()),
                       cors=_opt(d, "cors", partial(section, CorsPolicy), path, errs),
                       session=_opt(d, "session_persistence", partial(section, SessionPersistence), path, errs),
                       ip_filter=_opt(d, "ip_filter", ip_filter, path, errs),
                       rate_limit=_opt(d, "rate_limit", rate_limit, path, errs),
                       auth=_opt(d, "auth", _auth, path, errs))


def _auth(value: Any, path: str, errs: _Errors) -> AuthPolicy | None:
    before = len(errs)
    policy = section(AuthPolicy, value, path, errs)
    if policy is not None and len(errs) == before:
        check_auth(policy, path, errs)
    return policy


def check_auth(policy: AuthPolicy, path: str, errs: _Errors,
               spelled: dict[str, str] | None = None) -> None:
    """What spans an auth section's keys: one method, and a JWT's keys from one place.
    ``spelled``: names of keys as the caller's format writes them (a Kubernetes policy's)."""
    name = (spelled or {}).get
    methods = [m for m in ("basic", "api_key", "jwt", "ext_authz") if getattr(policy, m) is not None]
    if len(methods) != 1:
        _err(errs, path, f"needs exactly one of {', '.join(name(m, m) for m in ('basic', 'api_key', 'jwt', 'ext_authz'))} "
                         f"(got {', '.join(name(m, m) for m in methods) or 'none'})")
    if policy.jwt is not None and (policy.jwt.jwks is None) == (policy.jwt.jwks_url is None):
        _err(errs, _at(path, name("jwt", "jwt")),
             f"needs exactly one of {name('jwks_file', 'jwks_file')}, {name('jwks_url', 'jwks_url')}")


def ip_filter(value: Any, path: str, errs: _Errors) -> IpFilterPolicy | None:
    policy = section(IpFilterPolicy, value, path, errs)
    if policy is not None and not policy.allow and not policy.deny:
        _err(errs, path, "needs allow or deny networks")
    return policy


def rate_limit(value: Any, path: str, errs: _Errors) -> RateLimitPolicy | None:
    policy = section(RateLimitPolicy, value, path, errs)
    if policy is not None and policy.bucket * policy.per / policy.requests > MAX_RATE_WINDOW:
        _err(errs, path, f"burst x per / requests must be at most {MAX_RATE_WINDOW:g} seconds "
                         f"(a bucket empties and fills within a day)")
    return policy


_CONTROLLER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9/\-._~%!$&'()*+,;=:]+")


def _gateway_api(value: Any, path: str, errs: _Errors, kubernetes_sources: list[str]) -> GatewayApiConfig | None:
    if value is True or value == {}:
        value = {}
    d = _keys(value, path, errs, ("controller_name", "sources", "write_status", "console_gateway",
                                  "secret_namespaces", "addresses", "leader_election"))
    if d is None:
        return None
    name = _opt(d, "controller_name", _str, path, errs, DEFAULT_CONTROLLER_NAME)
    if name is not None and not _CONTROLLER_NAME.fullmatch(name):
        _err(errs, _at(path, "controller_name"), f'must be "domain/path" (a GatewayClass controllerName), got "{name}"')
    names = []
    for p, text in _str_list(d.get("sources") or [], _at(path, "sources"), errs):
        if text not in kubernetes_sources:
            _err(errs, p, f'unknown kubernetes source "{text}" (kubernetes sources: '
                          f'{", ".join(kubernetes_sources) or "none"})')
        names.append(text)
    if not kubernetes_sources:
        _err(errs, path, "needs a kubernetes source to read the Gateway API objects from")
    console = _opt(d, "console_gateway", _str, path, errs)
    if console is not None and not (len(console.split("/")) == 2 and all(_LABEL.fullmatch(p) for p in console.split("/"))):
        _err(errs, _at(path, "console_gateway"), f'expected "namespace/name" of a Gateway, got "{console}"')
    secret_namespaces = []
    for p, text in _str_list(d.get("secret_namespaces") or [], _at(path, "secret_namespaces"), errs):
        if not _LABEL.fullmatch(text):
            _err(errs, p, f'expected a namespace name, got "{text}"')
        secret_namespaces.append(text)
    return GatewayApiConfig(controller_name=name or DEFAULT_CONTROLLER_NAME,
                            sources=tuple(names) or tuple(kubernetes_sources),
                            write_status=_opt(d, "write_status", _bool, path, errs, True),
                            console_gateway=console, secret_namespaces=tuple(secret_namespaces),
                            addresses=_address_pool(d.get("addresses") or [], _at(path, "addresses"), errs),
                            leader_election=_leader_election(d.get("leader_election", {}),
                                                             _at(path, "leader_election"), errs))


def _leader_election(value: Any, path: str, errs: _Errors) -> LeaderElection | None:
    if value is False or value == "off":
        return None
    election = section(LeaderElection, value or {}, path, errs) or LeaderElection()
    # client-go's checks: the leader gives up before its lease could be taken, and retries
    # (jittered by up to 1.2x) in time; the Lease stores whole seconds.
    if not (election.retry_period * 1.2 < election.renew_deadline < election.lease_duration):
        _err(errs, path, f"needs retry_period x 1.2 < renew_deadline < lease_duration, got "
                         f"{election.retry_period:g}s, {election.renew_deadline:g}s, {election.lease_duration:g}s")
    if election.lease_duration != int(election.lease_duration):
        _err(errs, _at(path, "lease_duration"), f"must be whole seconds, got {election.lease_duration:g}s")
    return election


MAX_ADDRESS_POOL = 4096


def _address_pool(value: Any, path: str, errs: _Errors) -> tuple[str, ...]:
    """IP addresses and "first-last" ranges, expanded in order, each address once."""
    out: dict[str, None] = {}
    for p, text in _str_list(value, path, errs):
        first, _, last = text.partition("-")
        try:
            start, end = ipaddress.ip_address(first.strip()), ipaddress.ip_address((last or first).strip())
        except ValueError:
            _err(errs, p, f'expected an IP address or a range "first-last", got "{text}"')
            continue
        if start.version != end.version or int(end) < int(start):
            _err(errs, p, f'range "{text}" is empty or mixes IPv4 and IPv6')
            continue
        if len(out) + int(end) - int(start) + 1 > MAX_ADDRESS_POOL:
            _err(errs, p, f"the pool is limited to {MAX_ADDRESS_POOL} addresses")
            break
        for n in range(int(start), int(end) + 1):
            out[str(ipaddress.ip_address(n) if start.version == 4 else ipaddress.IPv6Address(n))] = None
    return tuple(out)


def _multicluster(value: Any, path: str, errs: _Errors) -> MultiClusterConfig | None:
    d = _keys(value, path, errs, ("merge",))
    if d is None:
        return None
    merge = d.get("merge", "all")
    if merge not in ("all", "exported"):
        _err(errs, _at(path, "merge"), f'must be "all" or "exported", got {_show(merge)}')
        return None
    return MultiClusterConfig(merge=merge)


def _route_order(value: Any, path: str, errs: _Errors) -> str | None:
    if value not in ("declared", "precedence"):
        _err(errs, path, f'must be "declared" or "precedence", got {_show(value)}')
        return None
    return value


def _match(value: Any, path: str, errs: _Errors) -> RouteMatch | None:
    d = _keys(value, path, errs, ("path", "host", "method", "headers", "query"))
    if d is None:
        return None
    path_kw = _opt(d, "path", _path_match, path, errs, {"path_prefix": "/"})
    return RouteMatch(**(path_kw or {}),
                      hosts=_opt(d, "host", _hosts, path, errs, ()),
                      methods=_opt(d, "method", _methods, path, errs, ()),
                      headers=_opt(d, "headers", _list_of(_header_match), path, errs, ()),
                      queries=_opt(d, "query", _list_of(_query_match), path, errs, ()))


_PATH_KINDS = ("prefix", "segment_prefix", "exact", "regex")


def _path_match(value: Any, path: str, errs: _Errors) -> dict[str, str] | None:
    """Exactly one of prefix, segment_prefix, exact, regex, as RouteMatch keyword arguments."""
    d = _keys(value, path, errs, _PATH_KINDS)
    if d is None:
        return None
    given = [key for key in _PATH_KINDS if d.get(key) is not None]
    if len(given) != 1:
        _err(errs, path, "needs exactly one of prefix, segment_prefix, exact, regex")
        return None
    kind = given[0]
    p = _at(path, kind)
    text = _regex(d[kind], p, errs) if kind == "regex" else _str(d[kind], p, errs)
    if text is None:
        return None
    if kind != "regex" and not text.startswith("/"):
        _err(errs, p, 'must start with "/"')
        return None
    if kind == "segment_prefix":
        text = text.rstrip("/") or "/"      # "/foo/" is "/foo": both match "/foo" and "/foo/x"
    return {f"path_{kind}": text}


def _query_match(value: Any, path: str, errs: _Errors) -> QueryMatch | None:
    d = _keys(value, path, errs, ("name", "exact", "regex"), required=("name",))
    if d is None:
        return None
    if sum(d.get(key) is not None for key in ("exact", "regex")) != 1:
        _err(errs, path, "needs exactly one of exact, regex")
    return QueryMatch(name=_opt(d, "name", _str, path, errs),
                      exact=_opt(d, "exact", partial(_str, empty=True), path, errs),
                      regex=_opt(d, "regex", _regex, path, errs))


# Fields the gateway itself writes from the message's framing and routing: changing them
# through a filter would desynchronize the framing (request smuggling) or the routing.
_FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade",
                              "keep-alive", "te", "trailer", "proxy-connection"})


def _header_filter(value: Any, path: str, errs: _Errors) -> HeaderFilter | None:
    d = _keys(value, path, errs, ("set", "add", "remove"))
    if d is None:
        return None
    remove = tuple(name.lower() for p, text in _str_list(d.get("remove") or [], _at(path, "remove"), errs)
                   if (name := _token(text, p, errs, "header name")) is not None)
    hf = HeaderFilter(set=_opt(d, "set", _header_pairs, path, errs, ()),
                      add=_opt(d, "add", _header_pairs, path, errs, ()),
                      remove=remove)
    for key, names in (("set", [n for n, _ in hf.set]), ("add", [n for n, _ in hf.add]), ("remove", remove)):
        for name in names:
            if name.lower() in _FRAMING_HEADERS:
                _err(errs, _at(path, key), f'"{name}" is written by the gateway itself '
                                           f'(use rewrite.host for Host)')
    return hf


def _header_pairs(value: Any, path: str, errs: _Errors) -> tuple[tuple[str, str], ...]:
    """[{name, value}] (the Gateway API's shape) or a mapping name: value."""
    if isinstance(value, dict):
        value = [{"name": k, "value": v} for k, v in value.items()]
    pairs = []
    for p, item in _list(value, path, errs):
        d = _keys(item, p, errs, ("name", "value"), required=("name", "value"))
        if d is None:
            continue
        name = _opt(d, "name", partial(_token, what="header name"), p, errs)
        text = _opt(d, "value", partial(_str, empty=True), p, errs)
        if text is not None and ("\r" in text or "\n" in text or "\0" in text):
            _err(errs, _at(p, "value"), "must not contain CR, LF or NUL")
            continue
        if name is not None and text is not None:
            pairs.append((name, text))
    return tuple(pairs)


_REDIRECT_STATUSES = (301, 302, 303, 307, 308)


def _redirect(value: Any, path: str, errs: _Errors, match: RouteMatch | None) -> Redirect | None:
    d = _keys(value, path, errs, ("scheme", "host", "port", "path", "status"))
    if d is None:
        return None
    scheme = _opt(d, "scheme", _str, path, errs)
    if scheme is not None and scheme not in ("http", "https"):
        _err(errs, _at(path, "scheme"), f'must be "http" or "https", got "{scheme}"')
    host = _opt(d, "host", _str, path, errs)
    if host is not None and not _HOSTNAME.fullmatch(host.lower()):
        _err(errs, _at(path, "host"), f'invalid host "{host}"')
    status = _opt(d, "status", partial(_int, lo=300, hi=399), path, errs, 302)
    if status is not None and status not in _REDIRECT_STATUSES:
        _err(errs, _at(path, "status"), "must be one of 301, 302, 303, 307, 308")
    paths = _opt(d, "path", partial(_replace_path, match=match), path, errs, {})
    return Redirect(scheme=scheme, host=host and host.lower(),
                    port=_opt(d, "port", partial(_int, lo=1, hi=65535), path, errs),
                    full_path=paths.get("full_path"), prefix=paths.get("prefix"),
                    status=status or 302)


def _replace_path(value: Any, path: str, errs: _Errors, match: RouteMatch | None) -> dict:
    """{full: /x} (ReplaceFullPath) or {prefix: /y} (ReplacePrefixMatch, needs a prefix match)."""
    d = _keys(value, path, errs, ("full", "prefix"))
    if d is None:
        return {}
    if sum(d.get(key) is not None for key in ("full", "prefix")) != 1:
        _err(errs, path, "needs exactly one of full, prefix")
        return {}
    key = "full" if d.get("full") is not None else "prefix"
    p = _at(path, key)
    text = _str(d[key], p, errs)
    if text is None:
        return {}
    if not text.startswith("/"):
        _err(errs, p, 'must start with "/"')
        return {}
    if key == "prefix" and match is not None and match.matched_prefix is None:
        _err(errs, p, "requires a path prefix match")
        return {}
    return {"full_path": text} if key == "full" else {"prefix": text}


def _mirrors(value: Any, path: str, errs: _Errors, services: set[str]) -> tuple[MirrorConfig, ...]:
    """``[svc, {service: svc, percent: 10}]``: every request, or that share of them."""
    out = []
    for p, item in _list(value, path, errs):
        if not isinstance(item, dict):
            if (key := _service_ref(item, p, errs, services)) is not None:
                out.append(MirrorConfig(key))
            continue
        d = _keys(item, p, errs, ("service", "percent"), required=("service",))
        key = _service_ref(d.get("service"), _at(p, "service"), errs, services) if d else None
        percent = d.get("percent", 100) if d else 100
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            _err(errs, _at(p, "percent"), f"must be a number from 0 to 100, got {_show(percent)}")
        elif key is not None:
            out.append(MirrorConfig(key, percent / 100))
    return tuple(out)


def _hosts(value: Any, path: str, errs: _Errors) -> tuple[str, ...]:
    hosts = []
    for p, text in _str_list(value, path, errs):
        host = text.lower()     # DNS names are case-insensitive; the matcher compares lower-case
        if _ROUTE_HOST.fullmatch(host):
            hosts.append(host)
        else:
            _err(errs, p, f'invalid host "{text}" (an exact name or "*." and a name)')
    return tuple(hosts)


def _methods(value: Any, path: str, errs: _Errors) -> tuple[str, ...]:
    # Methods are case-sensitive (RFC 9110 9.1), but a lower-case "get" here is a typo for GET.
    return tuple(m.upper() for p, text in _str_list(value, path, errs)
                 if (m := _token(text, p, errs, "method")) is not None)


def _header_match(value: Any, path: str, errs: _Errors) -> HeaderMatch | None:
    d = _keys(value, path, errs, ("name", "exact", "regex", "present"), required=("name",))
    if d is None:
        return None
    if sum(d.get(key) is not None for key in ("exact", "regex", "present")) != 1:
        _err(errs, path, "needs exactly one of exact, regex, present")
    name = _opt(d, "name", partial(_token, what="header name"), path, errs)
    return HeaderMatch(name=name and name.lower(),
                       exact=_opt(d, "exact", partial(_str, empty=True), path, errs),
                       regex=_opt(d, "regex", _regex, path, errs),
                       present=_opt(d, "present", _bool, path, errs))


def _backends(d: dict, path: str, errs: _Errors, services: set[str]) -> tuple[WeightedBackend, ...]:
    """``service: x`` (one backend) or ``backends: [...]``: exactly one of them."""
    has_service, has_backends = d.get("service") is not None, d.get("backends") is not None
    if has_service and has_backends:
        _err(errs, path, '"service" and "backends" are mutually exclusive')
        return ()
    if has_service:
        key = _service_ref(d["service"], _at(path, "service"), errs, services)
        return (WeightedBackend(key),) if key else ()
    if not has_backends:
        _err(errs, path, 'needs "service" or "backends"')
        return ()
    p = _at(path, "backends")
    if d["backends"] == []:
        _err(errs, p, "must not be empty")
    return _list_of(partial(_backend, services=services))(d["backends"], p, errs)


def _backend(value: Any, path: str, errs: _Errors, services: set[str]) -> WeightedBackend | None:
    d = _keys(value, path, errs, ("service", "weight", "request_headers", "response_headers"), required=("service",))
    if d is None:
        return None
    key = _opt(d, "service", partial(_service_ref, services=services), path, errs)
    weight = _opt(d, "weight", _BACKEND_WEIGHT, path, errs, 1)
    request = _opt(d, "request_headers", _header_filter, path, errs)
    response = _opt(d, "response_headers", _header_filter, path, errs)
    filters = BackendFilters(request, response) if request or response else None
    return WeightedBackend(key, weight, filters) if key else None


def _service_ref(value: Any, path: str, errs: _Errors, services: set[str] | None) -> str | None:
    """"namespace/name" or "name" (in the default namespace), which ``services`` must define
    (None: any service, as a Kubernetes Service it names)."""
    text = _str(value, path, errs)
    if text is None:
        return None
    parts = text.split("/")
    if len(parts) == 1:
        parts.insert(0, DEFAULT_NAMESPACE)
    if len(parts) != 2 or not all(_LABEL.fullmatch(part) for part in parts):
        _err(errs, path, f'expected "namespace/name" or "name", got "{text}"')
        return None
    key = "/".join(parts)
    if services is not None and key not in services:
        _err(errs, path, f'unknown service "{key}" (not in services)')
        return None
    return key


def _rewrite(value: Any, path: str, errs: _Errors, match: RouteMatch | None) -> dict:
    """{prefix: /x} or {full_path: /x}, and/or {host: h} (the Gateway API's URLRewrite)."""
    d = _keys(value, path, errs, ("prefix", "full_path", "host"))
    if d is None:
        return {}
    out = {}
    if d.get("prefix") is not None and d.get("full_path") is not None:
        _err(errs, path, '"prefix" and "full_path" are mutually exclusive')
        return {}
    if d.get("prefix") is None and d.get("full_path") is None and d.get("host") is None:
        _err(errs, path, "needs prefix, full_path or host")
        return {}
    for key in ("prefix", "full_path"):
        if d.get(key) is None:
            continue
        p = _at(path, key)
        text = _str(d[key], p, errs)
        if text is None:
            continue
        if not text.startswith("/"):
            _err(errs, p, 'must start with "/"')
        elif key == "prefix" and match is not None and match.matched_prefix is None:
            _err(errs, p, "requires a path prefix match")    # nothing else says what to replace
        else:
            out[key] = text
    host = _opt(d, "host", _str, path, errs)
    if host is not None:
        if _HOSTNAME.fullmatch(host.lower()):
            out["host"] = host.lower()
        else:
            _err(errs, _at(path, "host"), f'invalid host "{host}"')
    return out


def _retries(value: Any, path: str, errs: _Errors) -> RetryPolicy:
    d = _keys(value, path, errs, ("attempts", "on_5xx", "on_timeout", "per_try_timeout",
                                  "statuses", "backoff", "idempotent"))
    if d is None:
        return RetryPolicy()
    kw = _kwargs(d, path, errs, {"attempts": _ATTEMPTS, "on_5xx": _bool, "on_timeout": _bool,
                                 "idempotent": _bool,
                                 "per_try_timeout": _duration,
                                 "statuses": _list_of(partial(_int, lo=400, hi=599))})
    if "backoff" in d:
        kw["backoff"] = _duration(d["backoff"], _at(path, "backoff"), errs, zero=True)
    return RetryPolicy(**{k: v for k, v in kw.items() if v is not None})
