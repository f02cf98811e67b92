"""The gateway's configuration: one YAML file parsed into frozen, typed objects.

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
        retries: {attempts: 2, on_5xx: false, on_timeout: false, per_try_timeout: 2s}
        # ... idempotent: true: sent requests of any method retried (gRPC: also on
        #     UNAVAILABLE and CANCELLED answered before any message)

Names (sources, services, namespaces, routes) are DNS labels.  Hosts and header names are
lower-cased, methods upper-cased.
"""
from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import Any, Callable, Iterable

import yaml

from gateway.units import parse_duration, parse_size

DEFAULT_NAMESPACE = "default"
DEFAULT_SOURCE_WEIGHT = 100


class ConfigError(Exception):
    """The config is invalid; ``errors`` holds one ``key.path: problem`` line each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    path: str | None = "stdout"        # "stdout", a file path, or None (off)
    buffer_bytes: int = 64 * 1024      # flushed when this full ...
    flush_interval: float = 1.0        # ... or this old (seconds)


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """OpenTelemetry traces, exported as OTLP HTTP/protobuf (gateway.tracing)."""
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    sample_ratio: float = 0.01          # new traces; a parent's decision is followed
    service_name: str = "gateway"       # the resource's service.name
    max_queue: int = 4096               # requests' spans held per worker; more are dropped
    batch_size: int = 512               # requests' spans per export request
    flush_interval: float = 1.0         # export at least this often
    timeout: float = 2.0                # per export request


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds.  ``connect`` is short on purpose: a black-holed cluster must fail fast."""

    connect: float = 1.0
    response_header: float = 15.0       # upstream: request sent -> response head
    downstream_idle: float = 60.0       # keep-alive connection with no request
    downstream_header: float = 10.0     # first byte of a request -> its complete head
    upstream_idle: float = 60.0         # pooled upstream connection unused
    body_idle: float = 30.0             # request body: longest pause between two reads
    drain: float = 20.0                 # graceful shutdown deadline


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-request and per-worker bounds; each breach gets its status code and a log line."""

    max_request_head: int = 64 * 1024   # request line + fields -> 431
    max_uri: int = 8 * 1024             # request target -> 414
    max_headers: int = 100              # field lines -> 431
    max_body: int = 1024 ** 3           # request body bytes -> 413 (0: no limit)
    max_response_head: int = 64 * 1024  # from an upstream -> 502
    max_connections: int = 10_000       # client connections per worker; more are closed at once
    max_requests_per_connection: int = 10_000   # then "Connection: close" (HTTP/2: GOAWAY)
    max_concurrent_streams: int = 100   # HTTP/2 streams open at once per client connection
    # Retries of sent requests within one cluster, in flight per worker, are at most this
    # share of the requests in flight, or this many if that is more (Envoy's retry budget).
    retry_budget_share: float = 0.2
    retry_budget_min: int = 3


@dataclass(frozen=True, slots=True)
class PathConfig:
    """How a request path is read before route matching (``_speedups/path.pyx`` says how)."""

    normalize: bool = True              # decode %XX of unreserved bytes, remove dot segments
    merge_slashes: bool = True          # "//" -> "/"
    escaped_slashes: str = "reject"     # %2F, %5C, raw backslash: keep | reject | unescape_and_redirect
    forward: str = "normalized"         # sent upstream: "normalized" | "original"


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """Whose X-Forwarded-For is believed; exactly one of ``cidrs`` and ``hops`` is set."""

    cidrs: tuple[str, ...] = ()         # peers in these networks are proxies; "10.0.0.0/8"
    hops: int = 0                       # or: this many proxies in front, whatever their address


@dataclass(frozen=True, slots=True)
class HttpConfig:
    path: PathConfig = field(default_factory=PathConfig)
    trusted_proxies: TrustedProxies | None = None   # None: the peer is the client


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate and its key: files (``tls.certificates``), or PEM text (``pem``: a Secret a
    Gateway listener's certificateRefs name, carried to workers in the config message)."""

    cert: str                           # PEM chain file, or the chain itself with pem
    key: str = field(repr=False)        # PEM key file, or the key itself with pem
    pem: bool = False
    names: tuple[str, ...] = ()         # SNI names it serves; (): the certificate's own DNS names
    origin: str = ""                    # where it came from, for logs ("Secret default/site")


@dataclass(frozen=True, slots=True)
class TlsListener:
    """An HTTPS listener beside the plain one; SNI picks the certificate by its names."""

    listen: Address
    certificates: tuple[Certificate, ...]   # the first is the default
    min_version: str = "1.2"                # "1.2" or "1.3"


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """TLS from the gateway to a service's endpoints; verification is on unless turned off."""

    ca: str | None = None               # CA bundle; None: the system's
    sni: str | None = None              # server name sent and verified
    verify: bool = True


@dataclass(frozen=True, slots=True)
class AdminOptions:
    """The admin API's other scopes, browser sessions and TLS (the write token is
    ``Config.admin_token``).  Tokens are read from files and never shown."""

    read_token: str | None = field(default=None, repr=False)      # GET/HEAD only
    metrics_token: str | None = field(default=None, repr=False)   # GET /metrics only
    session_ttl: float = 12 * 3600.0    # a dashboard login lasts this long (seconds)
    tls: Certificate | None = None      # serve the admin API over HTTPS (cookies then Secure)


@dataclass(frozen=True, slots=True)
class StaticEndpoint:
    host: str
    port: int | None                    # None: the service's port
    weight: int = 1


@dataclass(frozen=True, slots=True)
class StaticService:
    namespace: str
    name: str
    endpoints: tuple[StaticEndpoint, ...]


@dataclass(frozen=True, slots=True)
class SourceConfig:
    name: str
    type: str                           # "static" | "kubernetes"
    weight: int = DEFAULT_SOURCE_WEIGHT
    priority: int = 0                   # 0 = most preferred; higher levels take spill-over
    # static
    services: tuple[StaticService, ...] = ()
    # kubernetes
    kubeconfig: str | None = None       # path, "~" expanded
    context: str | None = None
    in_cluster: bool = False
    namespaces: tuple[str, ...] = ()    # empty: all namespaces


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """Active checks, run once per endpoint by the control plane."""

    type: str = "http"                  # "http" (GET path, status in expected), "tcp" (connect)
    #                                     or "grpc" (grpc.health.v1 Health/Check says SERVING)
    path: str = "/"
    grpc_service: str = ""              # grpc: HealthCheckRequest.service ("": the whole server)
    host: str | None = None             # Host header; default: the endpoint address
    expected_statuses: tuple[tuple[int, int], ...] = ((200, 399),)   # inclusive ranges
    interval: float = 1.0
    timeout: float = 0.5
    jitter: float = 0.1                 # up to this much added to each interval
    healthy_threshold: int = 2          # consecutive passes to turn healthy
    unhealthy_threshold: int = 2        # consecutive failures to turn unhealthy
    initially_healthy: bool = True      # does a new endpoint serve before its first pass?


@dataclass(frozen=True, slots=True)
class SuccessRate:
    """Envoy's success-rate ejection: every ``interval``, among the endpoints with at least
    ``request_volume`` tries in it (and only if there are ``minimum_hosts`` of them), eject
    those whose success rate is below mean - ``stdev_factor`` x standard deviation."""

    interval: float = 10.0
    minimum_hosts: int = 5
    request_volume: int = 100
    stdev_factor: float = 1.9           # Envoy's success_rate_stdev_factor 1900, / 1000


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    """Passive detection from the request path: eject after consecutive failures."""

    consecutive_failures: int = 3       # connect failures, resets, timeouts, bad responses
    consecutive_5xx: int = 0            # answers with a status in ``statuses``; 0: not counted
    # What counts as a "5xx" for consecutive_5xx: the gateway-ish ones by default; a 500 is
    # most often the application's own error, so counting it is a choice (add 500).
    statuses: tuple[int, ...] = (502, 503, 504)
    base_ejection_time: float = 5.0     # first ejection; the n-th lasts n times as long ...
    max_ejection_time: float = 60.0     # ... up to this
    success_rate: SuccessRate | None = None     # off unless set


@dataclass(frozen=True, slots=True)
class HashCookie:
    """ring_hash on a cookie: a client without it gets one, so its next requests stick."""

    name: str
    ttl: float | None = None            # Max-Age; None: a session cookie
    path: str = "/"


@dataclass(frozen=True, slots=True)
class LbConfig:
    """How a service picks among its endpoints (compiled, in _speedups/table.pyx)."""

    policy: str = "round_robin"         # | least_request | random | ring_hash | peak_ewma
    header: str | None = None           # ring_hash: key from this request header ...
    source_ip: bool = False             # ... or from the client address ...
    cookie: HashCookie | None = None    # ... or from a cookie (set by the gateway when missing)
    decay: float = 10.0                 # peak_ewma: seconds for a faster latency to count fully


PROTOCOLS = ("auto", "http1", "h2c", "h2")
LB_POLICIES = ("round_robin", "least_request", "random", "ring_hash", "peak_ewma")


def spoken_protocol(setting: str, endpoint_protocol: str) -> str:
    """services[].protocol applied to one endpoint: auto follows the endpoint's appProtocol."""
    return setting if setting != "auto" else endpoint_protocol or "http1"


@dataclass(frozen=True, slots=True)
class SlowStart:
    """Envoy's slow_start_config: an endpoint that becomes healthy ramps its weight up."""

    window: float                       # seconds from min_weight_percent to the full weight
    aggression: float = 1.0             # 1: linear; > 1: more traffic early (Envoy's exponent)
    min_weight_percent: float = 10.0    # of the weight, at once: it serves from the start

    def factor(self, elapsed: float) -> float | None:
        """The share of its weight an endpoint healthy for ``elapsed`` seconds gets; None once
        the window is over.  Envoy: max(min_weight, (elapsed / window) ** (1 / aggression))."""
        if elapsed >= self.window:
            return None
        time_share = max(elapsed, 0.0) / self.window
        return max(self.min_weight_percent / 100, time_share ** (1 / self.aggression))


@dataclass(frozen=True, slots=True)
class CircuitBreakers:
    """Per-service limits (0: none); a request over one gets 503 and X-Gateway-Overloaded."""

    max_connections: int = 0            # upstream connections opened for it and still open
    max_pending: int = 0                # requests waiting for a new upstream connection
    max_requests: int = 0               # requests in flight
    max_retries: int = 0                # requests retrying at the same time


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    namespace: str
    name: str
    port: int | str                     # Service port number or port name
    sources: tuple[str, ...] = ()       # empty: every source
    health_check: HealthCheckConfig | None = None
    outlier_detection: OutlierConfig | None = field(default_factory=OutlierConfig)
    panic_threshold: float = 0.5        # healthy share below which panic routing starts
    tls: UpstreamTls | None = None      # connect to endpoints with TLS
    # Priority level of each source for this service, resolved at parse time from
    # sources[].priority and the service's prefer/priorities (sorted (source, level)
    # pairs; a source not listed is level 0).  Empty: every source at level 0.
    priorities: tuple[tuple[str, int], ...] = ()
    # Envoy's overprovisioning factor: a level with healthy share h takes min(1, h * factor)
    # of the load, so it keeps all of it until 1 / factor (71% at 1.4) of it is healthy.
    overprovisioning_factor: float = 1.4
    circuit_breakers: CircuitBreakers = field(default_factory=CircuitBreakers)
    lb: LbConfig = field(default_factory=LbConfig)
    slow_start: SlowStart | None = None
    # How endpoints are spoken to: http1, h2c (HTTP/2 without TLS), h2 (over TLS, ALPN h2),
    # or auto: from the Kubernetes Service port's appProtocol (else http1).
    protocol: str = "auto"
    http2_connections: int = 2          # HTTP/2 connections per endpoint per worker

    def protocol_of(self, endpoint_protocol: str) -> str:
        """How one endpoint is spoken to: the setting, or with auto what its port's
        appProtocol says (EndpointSpec.protocol; none: http1)."""
        return spoken_protocol(self.protocol, endpoint_protocol)

    @property
    def endpoint_tls(self) -> UpstreamTls | None:
        """TLS to its endpoints: its ``tls``; protocol h2 is TLS even without one (defaults:
        the system's CAs, verified)."""
        if self.tls is None and self.protocol == "h2":
            return UpstreamTls()
        return self.tls

    def priority_of(self, source: str) -> int:
        for name, level in self.priorities:
            if name == source:
                return level
        return 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str                           # lower-cased
    exact: str | None = None
    regex: str | None = None
    present: bool | None = None         # True: must be present, False: must be absent


@dataclass(frozen=True, slots=True)
class QueryMatch:
    name: str                           # case-sensitive, as the Gateway API says
    exact: str | None = None
    regex: str | None = None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    path_prefix: str | None = None
    path_exact: str | None = None
    path_regex: str | None = None
    # The Gateway API's PathPrefix: whole segments, "/foo" matches "/foo" and "/foo/bar", not
    # "/foobar" (Envoy's path_separated_prefix); kept without a trailing "/".
    path_segment_prefix: str | None = None
    hosts: tuple[str, ...] = ()         # exact "a.example.com" or wildcard "*.example.com"; lower-cased
    methods: tuple[str, ...] = ()       # upper-cased
    headers: tuple[HeaderMatch, ...] = ()
    queries: tuple[QueryMatch, ...] = ()

    @property
    def matched_prefix(self) -> str | None:
        """The prefix a prefix rewrite or redirect replaces."""
        return self.path_segment_prefix if self.path_segment_prefix is not None else self.path_prefix


@dataclass(frozen=True, slots=True)
class WeightedBackend:
    service: str                        # "namespace/name"
    weight: int = 1


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 2                   # total tries, the first one included
    on_5xx: bool = False                # retry idempotent requests answered 502/503/504
    on_timeout: bool = False            # retry idempotent requests whose try timed out
    per_try_timeout: float | None = None
    statuses: tuple[int, ...] = ()      # more answers to retry idempotent requests on (400-599)
    backoff: float = 0.0                # wait before a retry after an answer or a timeout:
    #                                     backoff, then doubling, at most 10x (0: at once)
    idempotent: bool = False            # the route's requests may be sent twice whatever their
    #                                     method (gRPC calls are POSTs): retried as GETs are,
    #                                     and on trailers-only gRPC UNAVAILABLE or CANCELLED

    @property
    def retry_statuses(self) -> frozenset[int]:
        """Every status an idempotent request is retried on."""
        return frozenset(self.statuses) | (RETRY_5XX if self.on_5xx else frozenset())


RETRY_5XX = frozenset((502, 503, 504))


@dataclass(frozen=True, slots=True)
class HeaderFilter:
    """The Gateway API's Request/ResponseHeaderModifier: set replaces, add appends, remove drops."""
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()            # lower-cased


@dataclass(frozen=True, slots=True)
class Redirect:
    """The Gateway API's RequestRedirect; None fields keep the request's value."""
    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    full_path: str | None = None
    prefix: str | None = None               # replaces the matched prefix
    status: int = 302


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    """A RequestMirror: ``service`` gets a copy of ``fraction`` of the route's requests."""
    service: str                            # "namespace/name"
    fraction: float = 1.0                   # 0..1 (the Gateway API's percent or fraction)


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    match: RouteMatch
    backends: tuple[WeightedBackend, ...]   # "service: x" is one backend of weight 1; () with redirect
    rewrite_prefix: str | None = None
    timeout: float | None = None            # whole request, seconds; None: no total limit
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    rewrite_full_path: str | None = None
    rewrite_host: str | None = None
    request_headers: HeaderFilter | None = None
    response_headers: HeaderFilter | None = None
    redirect: Redirect | None = None
    mirrors: tuple[MirrorConfig, ...] = ()  # services that get a copy of (a share of) the requests
    # The gateway's own answer instead of a backend: what the Gateway API asks for a rule
    # whose backendRefs are all invalid (500). Not a file key.
    direct_status: int | None = None
    # The weight of a rule's invalid backendRefs beside valid ones: that share gets 500.
    invalid_weight: int = 0
    # The Gateway listener whose connections it serves (GatewayListener.id); "": the file's
    # listeners (listen, tls.listen).  Not a file key.
    listener: str = ""

    @property
    def has_filters(self) -> bool:
        return bool(self.request_headers or self.response_headers or self.redirect or self.mirrors
                    or self.rewrite_host or self.rewrite_full_path is not None
                    or self.direct_status is not None)


DEFAULT_CONTROLLER_NAME = "gateway.example/multi-cluster"


@dataclass(frozen=True, slots=True)
class GatewayListener:
    """A Gateway listener the data plane serves (from the Gateway API; not a file key).

    The listeners of one (address, port) share a socket; a request's Host picks the
    listener whose routes it is matched against (on HTTPS the SNI must pick the same one)."""

    id: str                                 # "namespace/gateway/listener"
    address: str
    port: int
    tls: bool                               # HTTPS: terminated with ``certificates``
    hostname: str | None = None
    certificates: tuple[Certificate, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaderElection:
    """Which replica writes status: the holder of a coordination.k8s.io Lease in the first
    ``gateway_api.sources`` cluster (client-go's semantics, gateway.gatewayapi.leader)."""
    namespace: str | None = None        # None: $POD_NAMESPACE, else "default"
    name: str | None = None             # None: from the controller name ("...-status-writer")
    lease_duration: float = 15.0        # client-go's defaults
    renew_deadline: float = 10.0
    retry_period: float = 2.0


@dataclass(frozen=True, slots=True)
class GatewayApiConfig:
    """Routes from Kubernetes: the Gateway API objects of ``sources`` configure this gateway."""
    controller_name: str = DEFAULT_CONTROLLER_NAME   # GatewayClass.spec.controllerName we implement
    sources: tuple[str, ...] = ()       # kubernetes sources read for Gateway API objects; (): all
    write_status: bool = True           # write HTTPRoute/Gateway/GatewayClass status back
    # "namespace/name" of the Gateway console route changes attach to: with it, the admin API
    # writes routes as HTTPRoutes (every replica sees them); without it, to the file.
    console_gateway: str | None = None
    # Namespaces whose TLS Secrets HTTPS listeners may name; (): all (then RBAC needs a ClusterRole)
    secret_namespaces: tuple[str, ...] = ()
    # The addresses Gateways are served on, in order; each Gateway gets one (see
    # gateway.gatewayapi.translate).  (): the file's listen host is the only one.
    addresses: tuple[str, ...] = ()
    # None ("leader_election: off"): this replica writes status whenever it differs.
    leader_election: LeaderElection | None = field(default_factory=LeaderElection)


@dataclass(frozen=True, slots=True)
class MultiClusterConfig:
    """KEP-1645 Multi-Cluster Services: which clusters' endpoints join a merged service."""
    merge: str = "all"          # "all": every same-name Service; "exported": only with a ServiceExport


@dataclass(frozen=True, slots=True)
class Config:
    listen: Address = Address("0.0.0.0", 8080)
    tls: TlsListener | None = None
    workers: int = 1                        # data-plane processes; "auto": one per CPU
    admin: Address | None = Address("127.0.0.1", 9901)
    admin_token: str | None = field(default=None, repr=False)   # read from admin.token_file
    admin_options: AdminOptions = field(default_factory=AdminOptions)
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    tracing: TracingConfig | None = None    # None: off
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    http: HttpConfig = field(default_factory=HttpConfig)
    sources: tuple[SourceConfig, ...] = ()
    services: tuple[ServiceConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    # "declared": first match in file order wins; "precedence": the Gateway API's order
    # (gateway.routing.precedence_order), whatever the file order.
    route_order: str = "declared"
    gateway_api: GatewayApiConfig | None = None
    multicluster: MultiClusterConfig = field(default_factory=MultiClusterConfig)
    listeners: tuple[GatewayListener, ...] = ()     # the Gateways' (not a file key)
    path: str | None = None                 # the file it was read from
    # The validated YAML document, so that worker processes get exactly this config
    # rather than whatever the file holds when they (re)start.
    document: dict | None = field(default=None, repr=False, compare=False)


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
                                   "tracing": _tracing,
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
                  routes=tuple(r for _, r in routes), path=path)


def _yaml_error(path: str, e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(e, "problem", None) or " ".join(str(e).split())
    context = getattr(e, "context", None)
    return f"{path}: invalid YAML{where}: {problem}" + (f" ({context})" if context else "")


# --- Reporting and typed helpers -------------------------------------------------------------
#
# Each helper takes (value, path, errs), appends "path: problem" for a bad value and returns
# the parsed value, or None when it was bad: parsing goes on so that every error is reported,
# and the Config is never built if there was one.

_Errors = list[str]
_Parser = Callable[[Any, str, _Errors], Any]

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def is_dns_label(text: str) -> bool:
    """An RFC 1123 label: a route's name, a namespace."""
    return bool(_LABEL.fullmatch(text))


# An object name that is a DNS subdomain (RFC 1123), as a Lease's
_DNS_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_HOSTNAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_ROUTE_HOST = re.compile(r"(\*\.)?" + _HOSTNAME.pattern)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")     # RFC 9110 section 5.6.2


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _err(errs: _Errors, path: str, problem: str) -> None:
    errs.append(f"{path}: {problem}" if path else problem)


def _show(value: Any) -> str:
    """A value as it was written in YAML, for "got ..." in messages."""
    if isinstance(value, str):
        return f'"{value}"'
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _is_off(value: Any) -> bool:
    # YAML 1.1 (PyYAML) reads a bare `off` as false.
    return value is None or value is False or value == "off"


def _keys(value: Any, path: str, errs: _Errors, allowed: Iterable[str],
          required: Iterable[str] = ()) -> dict | None:
    """A mapping with only ``allowed`` keys, ``required`` ones set; unknown keys get a hint."""
    if not isinstance(value, dict):
        _err(errs, path, f"must be a mapping, got {_show(value)}")
        return None
    allowed = list(allowed)
    for key in value:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            _err(errs, path, f'unknown key "{key}"{hint}')
    for key in required:
        if value.get(key) is None:
            _err(errs, _at(path, key), "required")
    return value


def _opt(d: dict, key: str, parse: _Parser, path: str, errs: _Errors, default: Any = None) -> Any:
    """``d[key]`` parsed; absent or null gives ``default`` (required keys are checked by _keys)."""
    value = d.get(key)
    return default if value is None else parse(value, _at(path, key), errs)


def _kwargs(d: dict, path: str, errs: _Errors, parsers: dict[str, _Parser]) -> dict[str, Any]:
    """The keys of ``d`` that are set, parsed; the dataclass supplies defaults for the rest."""
    return {key: parse(d[key], _at(path, key), errs)
            for key, parse in parsers.items() if d.get(key) is not None}


def _str(value: Any, path: str, errs: _Errors, empty: bool = False) -> str | None:
    if not isinstance(value, str):
        _err(errs, path, f"must be a string, got {_show(value)}")
        return None
    if not value and not empty:
        _err(errs, path, "must not be empty")
        return None
    return value


def _int(value: Any, path: str, errs: _Errors, lo: int, hi: int) -> int | None:
    # bool is an int in Python, but `weight: true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        _err(errs, path, f"must be an integer from {lo} to {hi}")
        return None
    return value


def _bool(value: Any, path: str, errs: _Errors) -> bool | None:
    if not isinstance(value, bool):
        _err(errs, path, f"must be true or false, got {_show(value)}")
        return None
    return value


def _duration(value: Any, path: str, errs: _Errors, zero: bool = False) -> float | None:
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        _err(errs, path, str(e))
        return None
    if seconds < 0 or (seconds == 0 and not zero):
        _err(errs, path, "must not be negative" if zero else "must be greater than 0")
        return None
    return seconds


def _size(value: Any, path: str, errs: _Errors) -> int | None:
    try:
        return parse_size(value)
    except ValueError as e:
        _err(errs, path, str(e))
        return None


def _list(value: Any, path: str, errs: _Errors) -> list[tuple[str, Any]]:
    """The items of a list, each with its path; [] (and an error) for anything else."""
    if not isinstance(value, list):
        _err(errs, path, f"must be a list, got {_show(value)}")
        return []
    return [(f"{path}[{i}]", item) for i, item in enumerate(value)]


def _parse_each(value: Any, path: str, errs: _Errors, parse: _Parser) -> list[tuple[str, Any]]:
    """(path, parsed) for each good item of a list; null is an empty list."""
    items = [] if value is None else _list(value, path, errs)
    return [(p, x) for p, item in items if (x := parse(item, p, errs)) is not None]


def _list_of(parse: _Parser) -> _Parser:
    """A parser of lists whose items ``parse`` parses (bad items are reported and left out)."""
    def parse_list(value: Any, path: str, errs: _Errors) -> tuple:
        return tuple(x for _, x in _parse_each(value, path, errs, parse))
    return parse_list


def _str_list(value: Any, path: str, errs: _Errors) -> list[tuple[str, str]]:
    """A string or a list of strings, each with its path."""
    items = [(path, value)] if isinstance(value, str) else _list(value, path, errs)
    return [(p, s) for p, item in items if (s := _str(item, p, errs)) is not None]


def _unique(keys: Iterable[tuple[str, Any]], what: str, errs: _Errors) -> None:
    seen = set()
    for path, key in keys:
        if key in seen:
            _err(errs, path, f'duplicate {what} "{key}"')
        seen.add(key)


def _name(value: Any, path: str, errs: _Errors) -> str | None:
    """A Kubernetes-style DNS label, so names fit in metrics, logs and URLs unquoted."""
    name = _str(value, path, errs)
    if name is not None and not _LABEL.fullmatch(name):
        _err(errs, path, f'must be a DNS label (lowercase letters, digits and "-", '
                         f'at most 63), got "{name}"')
        return None
    return name


def _token(value: Any, path: str, errs: _Errors, what: str) -> str | None:
    text = _str(value, path, errs)
    if text is not None and not _TOKEN.fullmatch(text):
        _err(errs, path, f'invalid {what} "{text}" (must be an HTTP token)')
        return None
    return text


def _regex(value: Any, path: str, errs: _Errors) -> str | None:
    text = _str(value, path, errs)
    if text is None:
        return None
    try:
        re.compile(text)
    except re.error as e:
        _err(errs, path, f"invalid regex: {e}")
        return None
    return text


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
             "tracing")
_KUBERNETES_KEYS = ("kubeconfig", "context", "in_cluster", "namespaces")
_SOURCE_KEYS = ("name", "type", "weight", "priority", "services", *_KUBERNETES_KEYS)
_ROUTE_KEYS = ("name", "match", "service", "backends", "rewrite", "timeout", "retries",
               "request_headers", "response_headers", "redirect", "mirrors")

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
    d = _keys(value, path, errs, ("path", "buffer", "flush_interval"))
    if d is None:
        return AccessLogConfig()
    kw = _kwargs(d, path, errs, {"buffer": _size, "flush_interval": _duration})
    if "buffer" in kw:
        kw["buffer_bytes"] = kw.pop("buffer")
    if "path" in d:
        p = d["path"]
        kw["path"] = None if _is_off(p) else _str(p, _at(path, "path"), errs)
    return AccessLogConfig(**kw)


_TRACING_PARSERS: dict[str, _Parser] = {
    "endpoint": lambda value, path, errs: _otlp_endpoint(value, path, errs),
    "sample_ratio": lambda value, path, errs: _share(value, path, errs),
    "service_name": _str,
    "max_queue": partial(_int, lo=1, hi=1_000_000),
    "batch_size": partial(_int, lo=1, hi=100_000),
    "flush_interval": lambda value, path, errs: _duration(value, path, errs),   # defined below
    "timeout": lambda value, path, errs: _duration(value, path, errs),
}


def _tracing(value: Any, path: str, errs: _Errors) -> TracingConfig | None:
    if _is_off(value):                      # `tracing: off`
        return None
    d = _keys(value, path, errs, _TRACING_PARSERS, required=("endpoint",))
    if d is None:
        return None
    return TracingConfig(**_kwargs(d, path, errs, _TRACING_PARSERS))


def _otlp_endpoint(value: Any, path: str, errs: _Errors) -> str | None:
    text = _str(value, path, errs)
    if text is None:
        return None
    from urllib.parse import urlsplit
    url = urlsplit(text)
    if url.scheme not in ("http", "https") or not url.hostname:
        _err(errs, path, f'must be an http:// or https:// URL (OTLP/HTTP, e.g. '
                         f'"http://collector:4318/v1/traces"), got {_show(value)}')
        return None
    return text


def _timeouts(value: Any, path: str, errs: _Errors) -> Timeouts:
    names = [f.name for f in fields(Timeouts)]
    d = _keys(value, path, errs, names)
    return Timeouts(**_kwargs(d, path, errs, dict.fromkeys(names, _duration))) if d else Timeouts()


_LIMIT_PARSERS: dict[str, _Parser] = {
    "max_request_head": _size, "max_uri": _size, "max_body": _size, "max_response_head": _size,
    "max_headers": partial(_int, lo=1, hi=10_000),
    "max_connections": partial(_int, lo=1, hi=1_000_000),
    "max_requests_per_connection": partial(_int, lo=1, hi=100_000_000),
    "max_concurrent_streams": partial(_int, lo=1, hi=10_000),
    "retry_budget_share": lambda value, path, errs: _share(value, path, errs),   # defined below
    "retry_budget_min": partial(_int, lo=0, hi=1_000_000),
}


def _limits(value: Any, path: str, errs: _Errors) -> Limits:
    d = _keys(value, path, errs, _LIMIT_PARSERS)
    if d is None:
        return Limits()
    kw = {k: v for k, v in _kwargs(d, path, errs, _LIMIT_PARSERS).items() if v is not None}
    for key in ("max_request_head", "max_uri", "max_response_head"):
        if kw.get(key) == 0:
            _err(errs, _at(path, key), "must be greater than 0")
            kw.pop(key)
    return Limits(**kw)


def _http(value: Any, path: str, errs: _Errors) -> HttpConfig:
    d = _keys(value, path, errs, ("path", "trusted_proxies"))
    if d is None:
        return HttpConfig()
    return HttpConfig(**_kwargs(d, path, errs, {"path": _path_config,
                                                "trusted_proxies": _trusted_proxies}))


def _choice(value: Any, path: str, errs: _Errors, choices: tuple[str, ...]) -> str | None:
    if value not in choices:
        _err(errs, path, f"must be one of {', '.join(choices)}, got {_show(value)}")
        return None
    return value


_PATH_PARSERS: dict[str, _Parser] = {
    "normalize": _bool, "merge_slashes": _bool,
    "escaped_slashes": partial(_choice, choices=("keep", "reject", "unescape_and_redirect")),
    "forward": partial(_choice, choices=("normalized", "original")),
}


def _path_config(value: Any, path: str, errs: _Errors) -> PathConfig:
    d = _keys(value, path, errs, _PATH_PARSERS)
    if d is None:
        return PathConfig()
    return PathConfig(**{k: v for k, v in _kwargs(d, path, errs, _PATH_PARSERS).items() if v is not None})


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
    items = _str_list(d["cidrs"], p, errs)
    cidrs = []
    for item_path, text in items:
        try:
            cidrs.append(str(ipaddress.ip_network(text.strip(), strict=True)))
        except ValueError as e:
            loose = _loose_network(text)
            hint = f" (did you mean {loose}?)" if loose else ""
            _err(errs, item_path, f'invalid network "{text}": {e}{hint}')
    return TrustedProxies(cidrs=tuple(cidrs)) if cidrs and len(cidrs) == len(items) else None


def _loose_network(text: str) -> str | None:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        return None


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
    return replace(source, priority=priority or 0)


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
                                  "outlier_detection", "panic_threshold", "tls", "prefer",
                                  "priorities", "overprovisioning_factor", "circuit_breakers", "lb",
                                  "slow_start", "protocol", "http2_connections"),
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
    return ServiceConfig(namespace, name, port, tuple(names), health, outlier, panic, tls,
                         priorities, factor, breakers, lb, slow_start, protocol, connections)


def _slow_start(value: Any, path: str, errs: _Errors) -> SlowStart | None:
    d = _keys(value, path, errs, ("window", "aggression", "min_weight_percent"), required=("window",))
    if d is None:
        return None
    kw = _kwargs(d, path, errs, {"window": _duration,
                                 "aggression": partial(_number, lo=0.1, hi=100.0),
                                 "min_weight_percent": partial(_number, lo=0.0, hi=100.0)})
    if any(v is None for v in kw.values()) or "window" not in kw:
        return None
    return SlowStart(**kw)


def _number(value: Any, path: str, errs: _Errors, lo: float, hi: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        _err(errs, path, f"must be a number from {lo:g} to {hi:g}, got {_show(value)}")
        return None
    return float(value)


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
                                 "path": _absolute_path})
    if kw.get("name") is None:
        return None
    return HashCookie(**{k: v for k, v in kw.items() if v is not None})


def _token_name(value: Any, path: str, errs: _Errors) -> str | None:
    return _token(value, path, errs, "header name")


_LIMIT = partial(_int, lo=1, hi=1_000_000)


def _circuit_breakers(value: Any, path: str, errs: _Errors) -> CircuitBreakers:
    d = _keys(value, path, errs, [f.name for f in fields(CircuitBreakers)])
    if d is None:
        return CircuitBreakers()
    return CircuitBreakers(**_kwargs(d, path, errs, {f.name: _LIMIT for f in fields(CircuitBreakers)}))


def _service_priorities(d: dict, path: str, errs: _Errors,
                        sources: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """Each source's priority level for this service.

    ``prefer: [a, b]`` puts a at level 0, b at 1 and every other source after them (in
    its sources[].priority order), so each gateway replica can prefer its own zone's
    cluster; ``priorities: {a: 0, b: 1}`` sets levels by name, the rest keep theirs.
    """
    levels = dict(sources)
    if "prefer" in d and "priorities" in d:
        _err(errs, _at(path, "prefer"), "use prefer or priorities, not both")
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
    d = _keys(value, path, errs, ("listen", "certificates", "min_version"), required=("listen",))
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
    if listen is None or len(certs) != len(d.get("certificates") or ()):
        return None
    return TlsListener(listen, tuple(certs), version)


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


_HEALTH_KEYS = ("type", "path", "host", "expected_statuses", "interval", "timeout", "jitter",
                "healthy_threshold", "unhealthy_threshold", "initially_healthy", "grpc_service")
HEALTH_CHECK_TYPES = ("http", "tcp", "grpc")
_THRESHOLD = partial(_int, lo=1, hi=100)


def _health_check(value: Any, path: str, errs: _Errors) -> HealthCheckConfig | None:
    d = _keys(value, path, errs, _HEALTH_KEYS)
    if d is None:
        return None
    kw = _kwargs(d, path, errs, {
        "path": _absolute_path, "host": _str, "expected_statuses": _status_ranges,
        "interval": _duration, "timeout": _duration, "healthy_threshold": _THRESHOLD,
        "unhealthy_threshold": _THRESHOLD, "initially_healthy": _bool,
        "grpc_service": partial(_str, empty=True)})
    if "jitter" in d:
        kw["jitter"] = _duration(d["jitter"], _at(path, "jitter"), errs, zero=True)
    if "type" in d:
        if d["type"] in HEALTH_CHECK_TYPES:
            kw["type"] = d["type"]
        else:
            _err(errs, _at(path, "type"), f'must be "http", "tcp" or "grpc", got {_show(d["type"])}')
    check = HealthCheckConfig(**{k: v for k, v in kw.items() if v is not None})
    if check.timeout >= check.interval:
        _err(errs, _at(path, "timeout"), "must be shorter than the interval")
    return check


def _outlier(value: Any, path: str, errs: _Errors) -> OutlierConfig | None:
    d = _keys(value, path, errs, ("consecutive_failures", "consecutive_5xx",
                                  "base_ejection_time", "max_ejection_time", "statuses", "success_rate"))
    if d is None:
        return None
    kw = _kwargs(d, path, errs, {
        "consecutive_failures": partial(_int, lo=1, hi=1000), "consecutive_5xx": partial(_int, lo=0, hi=1000),
        "base_ejection_time": _duration, "max_ejection_time": _duration,
        "statuses": _list_of(partial(_int, lo=500, hi=599))})
    if not _is_off(d.get("success_rate")):
        kw["success_rate"] = _success_rate(d["success_rate"], _at(path, "success_rate"), errs)
    if kw.get("statuses") == ():
        _err(errs, _at(path, "statuses"), "must list at least one status from 500 to 599")
        kw.pop("statuses")
    return OutlierConfig(**{k: v for k, v in kw.items() if v is not None})


def _success_rate(value: Any, path: str, errs: _Errors) -> SuccessRate | None:
    d = _keys({} if value is True else value, path, errs, [f.name for f in fields(SuccessRate)])
    if d is None:
        return None
    kw = _kwargs(d, path, errs, {"interval": _duration, "minimum_hosts": partial(_int, lo=1, hi=10_000),
                                 "request_volume": partial(_int, lo=1, hi=10_000_000),
                                 "stdev_factor": partial(_number, lo=0.0, hi=100.0)})
    return SuccessRate(**{k: v for k, v in kw.items() if v is not None})


def _absolute_path(value: Any, path: str, errs: _Errors) -> str | None:
    text = _str(value, path, errs)
    if text is not None and not text.startswith("/"):
        _err(errs, path, 'must start with "/"')
        return None
    return text


def _status_ranges(value: Any, path: str, errs: _Errors) -> tuple[tuple[int, int], ...] | None:
    """[200, "200-299", ...] as inclusive (low, high) ranges."""
    ranges = []
    for p, item in _list(value, path, errs):
        low = high = None
        if isinstance(item, int) and not isinstance(item, bool):
            low = high = item
        elif isinstance(item, str) and re.fullmatch(r"\d{3}-\d{3}", item):
            low, high = (int(x) for x in item.split("-"))
        if low is None or not 100 <= low <= high <= 599:
            _err(errs, p, f'must be a status code or a range like "200-299", got {_show(item)}')
        else:
            ranges.append((low, high))
    return tuple(ranges) or None


def _share(value: Any, path: str, errs: _Errors) -> float | None:
    """A fraction: 0.5 or "50%"."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            value = float(value[:-1]) / 100
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        _err(errs, path, f'must be a share from 0 to 1 or "0%" to "100%", got {_show(value)}')
        return None
    return float(value)



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


def _route(value: Any, path: str, errs: _Errors, services: set[str]) -> RouteConfig | None:
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
                       mirrors=_opt(d, "mirrors", partial(_mirrors, services=services), path, errs, ()))


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
    d = _keys(value or {}, path, errs, ("namespace", "name", "lease_duration", "renew_deadline", "retry_period"))
    if d is None:
        return LeaderElection()
    for key in ("namespace", "name"):
        text = d.get(key)
        if text is not None and not (isinstance(text, str) and _DNS_NAME.fullmatch(text)):
            _err(errs, _at(path, key), f"must be a Kubernetes object name, got {_show(text)}")
    election = LeaderElection(**_kwargs(d, path, errs, {
        "namespace": _str, "name": _str, "lease_duration": _duration, "renew_deadline": _duration,
        "retry_period": _duration}))
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
    d = _keys(value, path, errs, ("service", "weight"), required=("service",))
    if d is None:
        return None
    key = _opt(d, "service", partial(_service_ref, services=services), path, errs)
    weight = _opt(d, "weight", _BACKEND_WEIGHT, path, errs, 1)
    return WeightedBackend(key, weight) if key else None


def _service_ref(value: Any, path: str, errs: _Errors, services: set[str]) -> str | None:
    """"namespace/name" or "name" (in the default namespace), which ``services`` must define."""
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
    if key not in services:
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
