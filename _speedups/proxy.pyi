"""The request path's face to Python (compiled): ``ProxyContext`` and the snapshot objects
the data plane builds.  See the module docstring of proxy.pyx for the layout behind it."""
from _speedups.accesslog import json_string as json_string
from _speedups.context import Context, Port
from _speedups.downstream import Http1Connection
from _speedups.service import Route as Route, Service as Service
from _speedups.stats import (LATENCY_BOUNDS as LATENCY_BOUNDS, STAT_NAMES as STAT_NAMES,
                             TrafficStats as TrafficStats)
from _speedups.upstream import Upstream as Upstream
from typing import Callable, final

@final
class ProxyContext(Context):
    def protocol_factory(self) -> Http1Connection: ...
    def tls_protocol_factory(self) -> Http1Connection:
        """For the TLS listener: X-Forwarded-Proto is https."""
    def port_factory(self, port: Port, tls: bool) -> Callable[[], Http1Connection]:
        """A Gateway listener socket's protocol factory: its connections route with ``port``."""
