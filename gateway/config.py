"""The gateway's configuration: one YAML file parsed into frozen, typed objects.

Every problem found is reported with its key path (``routes[0].match.path.prefix:
must start with "/"``), all of them at once; nothing half-valid is returned.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
class Timeouts:
    """Seconds.  ``connect`` is short on purpose: a black-holed cluster must fail fast."""

    connect: float = 1.0
    response_header: float = 15.0       # upstream: request sent -> response head
    downstream_idle: float = 60.0       # keep-alive connection with no request
    downstream_header: float = 10.0     # first byte of a request -> its complete head
    upstream_idle: float = 60.0         # pooled upstream connection unused
    drain: float = 20.0                 # graceful shutdown deadline


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
    # static
    services: tuple[StaticService, ...] = ()
    # kubernetes
    kubeconfig: str | None = None       # path, "~" expanded
    context: str | None = None
    in_cluster: bool = False
    namespaces: tuple[str, ...] = ()    # empty: all namespaces


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    namespace: str
    name: str
    port: int | str                     # Service port number or port name
    sources: tuple[str, ...] = ()       # empty: every source

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
class RouteMatch:
    path_prefix: str | None = None
    path_exact: str | None = None
    path_regex: str | None = None
    hosts: tuple[str, ...] = ()         # exact "a.example.com" or wildcard "*.example.com"; lower-cased
    methods: tuple[str, ...] = ()       # upper-cased
    headers: tuple[HeaderMatch, ...] = ()


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


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    match: RouteMatch
    backends: tuple[WeightedBackend, ...]   # "service: x" is one backend of weight 1
    rewrite_prefix: str | None = None
    timeout: float | None = None            # whole request, seconds; None: no total limit
    retries: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True, slots=True)
class Config:
    listen: Address = Address("0.0.0.0", 8080)
    admin: Address | None = Address("127.0.0.1", 9901)
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    timeouts: Timeouts = field(default_factory=Timeouts)
    sources: tuple[SourceConfig, ...] = ()
    services: tuple[ServiceConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    path: str | None = None                 # the file it was read from


def load_config(path: str) -> Config:
    """Read and validate a YAML config file; raise ConfigError naming every problem."""
    raise NotImplementedError


def parse_config(data: object, path: str | None = None) -> Config:
    """Validate an already-parsed YAML document."""
    raise NotImplementedError
