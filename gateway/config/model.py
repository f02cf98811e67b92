"""The configuration's model: frozen, typed objects, each field with its default.

The loader (``gateway.config.loader``) builds them from the YAML file, reporting every
problem with its key path; the Gateway API translation builds routes and listeners of the
same types.  Nothing here reads a file or acts: what a setting does lives where it acts.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any, Callable

from gateway.config import credentials
from gateway.config.validate import (_bool, _duration, _list_of, _number, _positive_size, _share, _size, _str,
                                     _str_list, absolute_path, between, cookie_name, cors_origins, cors_tokens,
                                     header_name,
                                     host_port, https_url, log_path, networks, object_name, one_of, otlp_endpoint,
                                     rate_limit_key, section, some_text, status_ranges, statuses_5xx)

__all__ = ["Address", "AccessLogConfig", "TracingConfig", "Timeouts", "Limits", "PathConfig", "TrustedProxies", "HttpConfig",
           "Certificate", "ClientValidation", "TlsListener", "UpstreamTls", "AdminOptions", "StaticEndpoint", "StaticService",
           "SourceConfig", "HealthCheckConfig", "SuccessRate", "OutlierConfig", "HashCookie", "LbConfig",
           "SlowStart", "CircuitBreakers", "Capacity", "ServiceConfig", "HeaderMatch", "QueryMatch", "RouteMatch",
           "WeightedBackend", "BackendFilters", "RetryPolicy", "HeaderFilter", "Redirect", "MirrorConfig",
           "CorsPolicy", "SessionPersistence", "RateLimitPolicy", "RedisConfig", "IpFilterPolicy", "BasicAuth", "ApiKeyAuth", "ClaimHeader",
           "JwtAuth", "ExtAuthz", "AuthPolicy", "RouteConfig",
           "GatewayListener", "TlsRouteConfig", "LeaderElection", "GatewayApiConfig", "MultiClusterConfig", "Config",
           "DEFAULT_NAMESPACE", "DEFAULT_SOURCE_WEIGHT", "PROTOCOLS", "LB_POLICIES", "RETRY_5XX",
           "DEFAULT_CONTROLLER_NAME", "MAX_RATE_WINDOW"]

DEFAULT_NAMESPACE = "default"
DEFAULT_SOURCE_WEIGHT = 100


def setting(default: Any = MISSING, parse: Callable = None, key: str | None = None) -> Any:
    """A file key of a section: its default (none: required) and its parser
    (gateway.config.validate, which holds the limits), declared once; ``key``: the file's
    name for it when not the field's.  The loader reads sections of these by their fields
    (``validate.section``), and checks what spans keys where the section is read."""
    return field(default=default, metadata={"parse": parse, **({"key": key} if key else {})})


def _duration_or_zero(value: Any, path: str, errs: list) -> float | None:
    return _duration(value, path, errs, zero=True)


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    path: str | None = setting("stdout", log_path)      # "stdout", "stderr", a file, or None (off)
    buffer_bytes: int = setting(64 * 1024, _size, key="buffer")     # flushed when this full ...
    flush_interval: float = setting(1.0, _duration)     # ... or this old (seconds)
    # Each line also sent as an OTLP log record (OTLP/HTTP protobuf, gateway.otlplogs)
    otlp_endpoint: str | None = setting(None, otlp_endpoint)    # e.g. "http://collector:4318/v1/logs"


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """OpenTelemetry traces, exported as OTLP HTTP/protobuf (gateway.tracing)."""
    endpoint: str = setting("http://127.0.0.1:4318/v1/traces", otlp_endpoint)   # required in the file
    sample_ratio: float = setting(0.01, _share)     # new traces; a parent's decision is followed
    service_name: str = setting("gateway", _str)    # the resource's service.name
    max_queue: int = setting(4096, between(1, 1_000_000))   # requests' spans held per worker; more dropped
    batch_size: int = setting(512, between(1, 100_000))     # requests' spans per export request
    flush_interval: float = setting(1.0, _duration)         # export at least this often
    timeout: float = setting(2.0, _duration)                # per export request


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds.  ``connect`` is short on purpose: a black-holed cluster must fail fast."""

    connect: float = setting(1.0, _duration)
    response_header: float = setting(15.0, _duration)   # upstream: request sent -> response head
    downstream_idle: float = setting(60.0, _duration)   # keep-alive connection with no request
    downstream_header: float = setting(10.0, _duration)  # first byte of a request -> its complete head
    upstream_idle: float = setting(60.0, _duration)     # pooled upstream connection unused
    body_idle: float = setting(30.0, _duration)         # request body: longest pause between two reads
    drain: float = setting(20.0, _duration)             # graceful shutdown deadline
    # An upstream connection whose peer stops acknowledging (a vanished zone, a blackhole) is
    # closed after about this long, even while a request waits on it: keepalive probes every
    # second once it is idle 1 s, and TCP_USER_TIMEOUT for unacknowledged data.  A slow but
    # live endpoint acknowledges (its kernel does), so slow answers are never cut by it.
    upstream_unresponsive: float = setting(3.0, _duration)
    # A TLS listener's connection (TLSRoutes, gateway.streams) with no bytes either way is closed.
    stream_idle: float = setting(3600.0, _duration)


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-request and per-worker bounds; each breach gets its status code and a log line."""

    max_request_head: int = setting(64 * 1024, _positive_size)   # request line + fields -> 431
    max_uri: int = setting(8 * 1024, _positive_size)             # request target -> 414
    max_headers: int = setting(100, between(1, 10_000))         # field lines -> 431
    max_body: int = setting(1024 ** 3, _size)                   # request body bytes -> 413 (0: no limit)
    max_response_head: int = setting(64 * 1024, _positive_size)  # from an upstream -> 502
    # Client connections per worker; more are closed at once.
    max_connections: int = setting(10_000, between(1, 1_000_000))
    # Then "Connection: close" (HTTP/2: GOAWAY).
    max_requests_per_connection: int = setting(10_000, between(1, 100_000_000))
    # HTTP/2 streams open at once per client connection.
    max_concurrent_streams: int = setting(100, between(1, 10_000))
    # Retries of sent requests within one cluster, in flight per worker, are at most this
    # share of the requests in flight, or this many if that is more (Envoy's retry budget).
    retry_budget_share: float = setting(0.2, _share)
    retry_budget_min: int = setting(3, between(0, 1_000_000))
    # Idle HTTP/1.1 connections a worker keeps per upstream endpoint for the next request; one
    # more is closed when its request ends. Below the requests in flight to one endpoint, the
    # gateway connects and closes all the time (Envoy's default connection limit: 1,024).
    max_idle_upstream_connections: int = setting(1024, between(0, 1_000_000))


@dataclass(frozen=True, slots=True)
class PathConfig:
    """How a request path is read before route matching (``_speedups/path.pyx`` says how)."""

    normalize: bool = setting(True, _bool)          # decode %XX of unreserved bytes, remove dot segments
    merge_slashes: bool = setting(True, _bool)      # "//" -> "/"
    # %2F, %5C, raw backslash: keep | reject | unescape_and_redirect
    escaped_slashes: str = setting("reject", one_of("keep", "reject", "unescape_and_redirect"))
    forward: str = setting("normalized", one_of("normalized", "original"))   # what is sent upstream


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """Whose X-Forwarded-For is believed; exactly one of ``cidrs`` and ``hops`` is set."""

    cidrs: tuple[str, ...] = ()         # peers in these networks are proxies; "10.0.0.0/8"
    hops: int = 0                       # or: this many proxies in front, whatever their address


CLEARTEXT = ("auto", "http1", "h2c")


@dataclass(frozen=True, slots=True)
class HttpConfig:
    path: PathConfig = field(default_factory=PathConfig)
    trusted_proxies: TrustedProxies | None = None   # None: the peer is the client
    # What the plain (non-TLS) listeners speak, as Envoy's codec_type: auto: HTTP/1.1, and
    # HTTP/2 from a client whose first line is HTTP/2's preface (prior knowledge); http1:
    # HTTP/1.1 only; h2c: HTTP/2 only, any other first bytes a connection error (GOAWAY).
    cleartext: str = "auto"


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
class ClientValidation:
    """Client certificates an HTTPS listener asks for (mutual TLS): verified against ``ca``,
    and a handshake without a valid one fails, unless ``insecure_fallback`` (the Gateway API's
    ``AllowInsecureFallback``: asked for, never required)."""

    ca: str                             # PEM text of the trusted CA certificates
    insecure_fallback: bool = False
    origin: str = ""                    # where the CAs came from, for logs ("ConfigMap infra/ca")


@dataclass(frozen=True, slots=True)
class TlsListener:
    """An HTTPS listener beside the plain one; SNI picks the certificate by its names."""

    listen: Address
    certificates: tuple[Certificate, ...]   # the first is the default
    min_version: str = "1.2"                # "1.2" or "1.3"
    client_validation: ClientValidation | None = None


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """TLS from the gateway to a service's endpoints; verification is on unless turned off."""

    ca: str | None = None               # CA bundle file; None: the system's
    sni: str | None = None              # server name sent and verified
    verify: bool = True
    # From a BackendTLSPolicy (not file keys): the CA bundle's PEM text ("": trust nothing, so
    # every handshake fails: a policy without a valid CA), and the subjectAltNames ("DNS:host",
    # "URI:uri") one of which the certificate must have, which then authenticate instead of sni.
    ca_pem: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    client_certificate: Certificate | None = None       # presented to the endpoints (a Gateway's)


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
    # Drained by the operator (`gateway source drain`): its endpoints get no new requests.
    # Not compared: draining keeps the source (its watch) as it is; the health manager acts.
    drained: bool = field(default=False, compare=False)
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

    # "http" (GET path, status in expected), "tcp" (connect) or "grpc" (grpc.health.v1
    # Health/Check says SERVING)
    type: str = setting("http", one_of("http", "tcp", "grpc"))
    path: str = setting("/", absolute_path)
    grpc_service: str = setting("", some_text)      # grpc: HealthCheckRequest.service ("": the whole server)
    host: str | None = setting(None, _str)          # Host header; default: the endpoint address
    expected_statuses: tuple[tuple[int, int], ...] = setting(((200, 399),), status_ranges)   # inclusive
    interval: float = setting(1.0, _duration)
    timeout: float = setting(0.5, _duration)        # shorter than the interval
    jitter: float = setting(0.1, _duration_or_zero)     # up to this much added to each interval
    healthy_threshold: int = setting(2, between(1, 100))    # consecutive passes to turn healthy
    unhealthy_threshold: int = setting(2, between(1, 100))  # consecutive failures to turn unhealthy
    initially_healthy: bool = setting(True, _bool)  # does a new endpoint serve before its first pass?


@dataclass(frozen=True, slots=True)
class SuccessRate:
    """Envoy's success-rate ejection: every ``interval``, among the endpoints with at least
    ``request_volume`` tries in it (and only if there are ``minimum_hosts`` of them), eject
    those whose success rate is below mean - ``stdev_factor`` x standard deviation."""

    interval: float = setting(10.0, _duration)
    minimum_hosts: int = setting(5, between(1, 10_000))
    request_volume: int = setting(100, between(1, 10_000_000))
    # Envoy's success_rate_stdev_factor 1900, / 1000
    stdev_factor: float = setting(1.9, between(0.0, 100.0, _number))


def _success_rate(value: Any, path: str, errs: list) -> SuccessRate | None:
    """``true`` (the defaults), off, or a section."""
    if value is True or value is False or value == "off":
        return SuccessRate() if value is True else None
    return section(SuccessRate, value, path, errs)


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    """Passive detection from the request path: eject after consecutive failures."""

    consecutive_failures: int = setting(3, between(1, 1000))    # connect failures, resets, timeouts, bad responses
    # Answers with a status in ``statuses`` in a row; 0: not counted.  On by default (Envoy's
    # 5): a zone answering 503 leaves by itself.  There is no ejection cap (Envoy's 10% would
    # keep a dead zone of two in); panic_threshold and the cluster-aware panic bound it.
    consecutive_5xx: int = setting(5, between(0, 1000))
    # What counts as a "5xx" for consecutive_5xx: the gateway-ish ones by default; a 500 is
    # most often the application's own error, so counting it is a choice (add 500).
    statuses: tuple[int, ...] = setting((502, 503, 504), statuses_5xx)
    base_ejection_time: float = setting(5.0, _duration)     # first ejection; the n-th lasts n times as long ...
    max_ejection_time: float = setting(60.0, _duration)     # ... up to this
    success_rate: SuccessRate | None = setting(None, lambda value, path, errs: _success_rate(value, path, errs))


@dataclass(frozen=True, slots=True)
class HashCookie:
    """ring_hash on a cookie: a client without it gets one, so its next requests stick."""

    name: str
    ttl: float | None = None            # Max-Age; None: a session cookie
    path: str = "/"


@dataclass(frozen=True, slots=True)
class LbConfig:
    """How a service picks among its endpoints (compiled, in _speedups/table.pyx)."""

    # Default least_request, by measurement (bench/lb_slow_zone.py, README "Load balancing"):
    # a zone 300 ms slower keeps ~0.2% of the traffic and gets its share back at once when
    # fast again; round_robin keeps 50% on it.  Istio's default too.
    policy: str = "least_request"       # | round_robin | random | ring_hash | peak_ewma
    header: str | None = None           # ring_hash: key from this request header ...
    source_ip: bool = False             # ... or from the client address ...
    cookie: HashCookie | None = None    # ... or from a cookie (set by the gateway when missing)
    # peak_ewma: the estimate's time constant (s).  1 s, not Finagle's 10 s: with the estimate
    # decaying toward 0 without news, a zone that was 300 ms slow is back in 2 s at 1 s, in
    # ~35 s at 10 s, and gets ~0.02% of requests while slow either way (bench/lb_slow_zone.py).
    decay: float = 1.0


PROTOCOLS = ("auto", "http1", "h2c", "h2")
LB_POLICIES = ("round_robin", "least_request", "random", "ring_hash", "peak_ewma")


@dataclass(frozen=True, slots=True)
class SlowStart:
    """Envoy's slow_start_config: an endpoint that becomes healthy ramps its weight up."""

    window: float = setting(parse=_duration)    # from min_weight_percent to the full weight
    aggression: float = setting(1.0, between(0.1, 100.0, _number))  # 1: linear; > 1: more traffic early
    min_weight_percent: float = setting(10.0, between(0.0, 100.0, _number))  # of the weight, at once


@dataclass(frozen=True, slots=True)
class CircuitBreakers:
    """Per-service limits (0: none); a request over one gets 503 and X-Gateway-Overloaded."""

    max_connections: int = setting(0, between(1, 1_000_000))    # upstream connections opened for it, open
    max_pending: int = setting(0, between(1, 1_000_000))        # requests waiting for a new connection
    max_requests: int = setting(0, between(1, 1_000_000))       # requests in flight
    max_retries: int = setting(0, between(1, 1_000_000))        # requests retrying at the same time


@dataclass(frozen=True, slots=True)
class Capacity:
    """Capacity spill-over (0: off): an endpoint with this many requests in flight, or sent this
    many requests per second (both per worker, as the circuit breakers), is full; when every
    endpoint of a priority level is full, the excess goes to the next level (cluster) with room,
    and comes back as soon as there is room.  Off by default: a limit needs knowing the
    endpoints' capacity."""

    max_in_flight_per_endpoint: int = setting(0, between(1, 1_000_000))
    max_rate_per_endpoint: float = setting(0.0, between(0.1, 1_000_000, _number))   # requests/s


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
    capacity: Capacity = field(default_factory=Capacity)
    # Not a file key: a Gateway API backendRef to another port than a Service's first is a
    # service of its own, keyed "namespace/name:port" (its endpoints, TLS and pool are that port's).
    port_in_key: bool = False

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
        return f"{self.namespace}/{self.name}:{self.port}" if self.port_in_key else f"{self.namespace}/{self.name}"


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
    filters: "BackendFilters | None" = None     # for the requests the weights give this backend


@dataclass(frozen=True, slots=True)
class BackendFilters:
    """An HTTPRoute backendRef's filters (a file route's backends[].request_headers and
    response_headers), applied after the route's to the requests its backend gets."""
    request_headers: "HeaderFilter | None" = None
    response_headers: "HeaderFilter | None" = None
    rewrite_full_path: str | None = None
    rewrite_prefix: str | None = None       # replaces the route's matched prefix
    rewrite_host: str | None = None
    redirect: "Redirect | None" = None      # answered by the gateway instead


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 2                   # total tries, the first one included
    # Idempotent requests answered 502/503/504 are retried (another cluster first, within the
    # retry budget) by default: a zone answering 503 to 30% then costs ~0 failed requests.
    on_5xx: bool = True
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
class CorsPolicy:
    """Cross-origin requests a route allows (the Gateway API's HTTPRoute CORS filter, a file
    route's ``cors``): the gateway answers their preflights itself and adds the
    Access-Control-Allow-* fields to the answers for an allowed Origin."""

    # "https://www.example.com", "https://*.example.com" (any number of labels), or "*"
    allow_origins: tuple[str, ...] = setting((), cors_origins)
    allow_methods: tuple[str, ...] = setting((), cors_tokens)       # "*": any
    allow_headers: tuple[str, ...] = setting((), cors_tokens)       # "*": any
    expose_headers: tuple[str, ...] = setting((), cors_tokens)
    allow_credentials: bool = setting(False, _bool)
    max_age: int = setting(5, between(0, 86_400))   # seconds a browser may keep a preflight's answer


@dataclass(frozen=True, slots=True)
class SessionPersistence:
    """A client's requests stay on the endpoint its first one went to (GEP-1619: an HTTPRoute or
    GRPCRoute rule's ``sessionPersistence``, a file route's ``session_persistence``): the answer
    carries a token naming the endpoint, in a cookie or a header, and a request bringing it back
    goes there while that endpoint serves (else it is balanced as any, and gets a new token)."""

    name: str = setting("gateway-session", cookie_name)     # the cookie's, or the header's
    type: str = setting("cookie", one_of("cookie", "header"))
    absolute_timeout: float | None = setting(None, _duration)   # a session this old starts again
    idle_timeout: float | None = setting(None, _duration)       # ... or one unused this long
    # The cookie lasts absolute_timeout (Max-Age) rather than the browser session.
    permanent: bool = setting(False, _bool)


MAX_RATE_WINDOW = 86_400.0     # seconds a bucket takes to fill (_speedups/policy.pyx relies on it)


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    """A route's rate limit (``routes[].rate_limit``): a token bucket of ``burst`` requests
    refilled at ``requests`` per ``per``, one per value of ``key``, shared by the replica's
    workers (README: "Edge policy").  Over it: 429 with Retry-After."""
    requests: int = setting(parse=between(1, 1_000_000_000))
    per: float = setting(1.0, _duration)
    burst: int = setting(0, between(0, 1_000_000_000))     # 0: ``requests``
    # "none": one bucket for the route; "client": per client address (after trusted_proxies);
    # "path"; "header:<name>" (a missing header is one more key)
    key: str = setting("none", rate_limit_key)
    # "replica": this replica's workers share the buckets; "global": every replica shares
    # them, in Redis (the top-level ``redis`` section)
    scope: str = setting("replica", one_of("replica", "global"))

    @property
    def bucket(self) -> int:
        return self.burst or self.requests


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Where global rate limits keep their buckets (gateway.policy.redis_store): one Redis that
    every replica reaches; each worker keeps one pipelined connection to it."""
    address: tuple[str, int] = setting(parse=host_port)   # "host:port" in the file
    timeout: float = setting(0.1, _duration)        # an answer later than this: failure_mode decides
    # "open": a request goes through when Redis cannot answer; "closed": 503
    failure_mode: str = setting("open", one_of("open", "closed"))
    key_prefix: str = setting("gateway:rl:", _str)


@dataclass(frozen=True, slots=True)
class IpFilterPolicy:
    """Client networks a route allows and denies (``routes[].ip_filter``), by the client
    address after trusted_proxies: in ``deny``, or outside a non-empty ``allow``: 403."""
    allow: tuple[str, ...] = setting((), networks)
    deny: tuple[str, ...] = setting((), networks)


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """HTTP Basic (RFC 7617) against an htpasswd file (bcrypt or {SHA} hashes)."""
    users: tuple[tuple[str, str], ...] = setting(parse=credentials.htpasswd, key="htpasswd")
    realm: str = setting("gateway", _str)
    forward_username: str | None = setting(None, header_name)      # set to the user; None: not sent


@dataclass(frozen=True, slots=True)
class ApiKeyAuth:
    """API keys ("client:key" lines of a file) in a header or a query parameter."""
    keys: tuple[tuple[str, str], ...] = setting(parse=credentials.api_keys, key="keys_file")
    header: str | None = setting("x-api-key", header_name)
    query: str | None = setting(None, _str)                 # also looked for in this query parameter
    forward_client: str | None = setting(None, header_name)  # set to the key's client name


@dataclass(frozen=True, slots=True)
class ClaimHeader:
    claim: str = setting(parse=_str)
    header: str = setting(parse=header_name)


@dataclass(frozen=True, slots=True)
class JwtAuth:
    """Bearer JWTs (RS256/384/512, PS256.., ES256/384, EdDSA) verified with a JWKS from a file
    or a URL (fetched off the request path every ``jwks_refresh``; the last good keys stay)."""
    jwks: str | None = setting(None, credentials.jwks, key="jwks_file")     # the JWKS JSON text
    jwks_url: str | None = setting(None, https_url)
    jwks_ca_file: str | None = setting(None, credentials.ca_file)      # a private CA for jwks_url
    jwks_refresh: float = setting(300.0, _duration)
    issuer: str | None = setting(None, _str)
    audiences: tuple[str, ...] = setting((), lambda v, p, e: tuple(s for _, s in _str_list(v, p, e)))
    clock_skew: float = setting(30.0, _duration_or_zero)
    claims_to_headers: tuple[ClaimHeader, ...] = setting((), _list_of(lambda v, p, e: section(ClaimHeader, v, p, e)))


@dataclass(frozen=True, slots=True)
class ExtAuthz:
    """External authorization over HTTP (gateway.policy.ext_authz): each request is first asked of
    ``url``; a 2xx answer lets it through, any other is the client's answer."""
    url: str = setting(parse=https_url)     # the request's path and query are appended to its path
    ca_file: str | None = setting(None, credentials.ca_file)     # a private CA for an https url
    headers: tuple[str, ...] = setting(("authorization", "cookie"), _list_of(header_name))   # sent along
    forward_headers: tuple[str, ...] = setting((), _list_of(header_name))   # from a 2xx answer, upstream
    timeout: float = setting(0.2, _duration)
    # "closed": 403 when the service does not answer in time; "open": the request goes on
    failure_mode: str = setting("closed", one_of("open", "closed"))


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """Who may call a route (``routes[].auth``): one of basic, api_key, jwt, ext_authz.
    ``required`` false lets a request without credentials through (wrong credentials still
    get 401; ext_authz decides for itself)."""
    required: bool = setting(True, _bool)
    basic: BasicAuth | None = setting(None, lambda v, p, e: section(BasicAuth, v, p, e))
    api_key: ApiKeyAuth | None = setting(None, lambda v, p, e: section(ApiKeyAuth, v, p, e))
    jwt: JwtAuth | None = setting(None, lambda v, p, e: section(JwtAuth, v, p, e))
    ext_authz: ExtAuthz | None = setting(None, lambda v, p, e: section(ExtAuthz, v, p, e))


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
    cors: CorsPolicy | None = None
    session: SessionPersistence | None = None     # a file route's ``session_persistence``
    ip_filter: IpFilterPolicy | None = None
    rate_limit: RateLimitPolicy | None = None
    auth: AuthPolicy | None = None
    # The Kubernetes policies its ip_filter, rate_limit and auth come from ("SecurityPolicy
    # namespace/name", ...), for the console.  Not a file key.
    policy_sources: tuple[str, ...] = ()
    # The gateway's own answer instead of a backend: what the Gateway API asks for a rule
    # whose backendRefs are all invalid (500). Not a file key.
    direct_status: int | None = None
    direct_reason: str | None = None        # why, in the access log (not a file key)
    # The weight of a rule's invalid backendRefs beside valid ones: that share gets 500.
    invalid_weight: int = 0
    # The Gateway listener whose connections it serves (GatewayListener.id); "": the file's
    # listeners (listen, tls.listen).  Not a file key.
    listener: str = ""
    # Its place among routes of equal precedence, as its source orders them: (0, index) in
    # the file, (1, creation time, "namespace/name", rule, listener, match) from an HTTPRoute.
    # Every worker sorts by it, so a route added alone lands where a full rebuild puts it.
    # Not a file key.
    rank: tuple = ()

    @property
    def has_filters(self) -> bool:
        return bool(self.request_headers or self.response_headers or self.redirect or self.mirrors
                    or self.cors or self.has_policy or self.rewrite_host or self.rewrite_full_path is not None
                    or self.direct_status is not None)

    @property
    def has_policy(self) -> bool:
        """Edge policy: checked before the request goes anywhere (_speedups/policy.pyx)."""
        return self.ip_filter is not None or self.rate_limit is not None or self.auth is not None


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
    client_validation: ClientValidation | None = None   # the Gateway's spec.tls.frontend for this port
    # Protocol TLS (TLSRoutes, not HTTP): "Passthrough" (the ClientHello's SNI picks the route,
    # bytes go to the backend undecrypted) or "Terminate" (``certificates``, then plain bytes).
    tls_mode: str | None = None

    @property
    def streams(self) -> bool:
        """Its connections are byte streams routed by SNI (gateway.streams), not HTTP."""
        return self.tls_mode is not None


@dataclass(frozen=True, slots=True)
class TlsRouteConfig:
    """A TLSRoute on one Gateway listener (from the Gateway API; not a file key): connections
    whose SNI it serves go to its backends, by weight."""

    name: str                               # "namespace/name"
    listener: str                           # GatewayListener.id
    hostnames: tuple[str, ...] = ()         # exact or "*.domain"; (): any the listener takes
    backends: tuple[WeightedBackend, ...] = ()
    invalid_weight: int = 0                 # the share of invalid backendRefs: refused
    rank: tuple = ()                        # oldest route first among equal hostnames


@dataclass(frozen=True, slots=True)
class LeaderElection:
    """Which replica writes status: the holder of a coordination.k8s.io Lease in the first
    ``gateway_api.sources`` cluster (client-go's semantics, gateway.gatewayapi.leader)."""
    namespace: str | None = setting(None, object_name)  # None: $POD_NAMESPACE, else "default"
    name: str | None = setting(None, object_name)       # None: from the controller name ("...-status-writer")
    # client-go's defaults and checks (where the section is read): retry_period x 1.2 <
    # renew_deadline < lease_duration, in whole seconds
    lease_duration: float = setting(15.0, _duration)
    renew_deadline: float = setting(10.0, _duration)
    retry_period: float = setting(2.0, _duration)


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
    redis: RedisConfig | None = None        # the global rate limits' store; None: none
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
    tls_routes: tuple[TlsRouteConfig, ...] = ()     # the TLSRoutes' (not a file key)
    path: str | None = None                 # the file it was read from
    # The validated YAML document, so that worker processes get exactly this config
    # rather than whatever the file holds when they (re)start.
    document: dict | None = field(default=None, repr=False, compare=False)
