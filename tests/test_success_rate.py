"""Success-rate outlier ejection (Envoy's success_rate_* settings), off by default.

End to end: six endpoints, five healthy backends and one answering 500 to 40% of its
requests; three services over them with ``success_rate`` every second.  With the defaults
(5 hosts, factor 1.9) the flaky endpoint is ejected; with more hosts required than there
are, or more requests than an interval carries, nobody is.  The decision uses the
counters the workers report (workers: 2).
"""
from __future__ import annotations

import itertools
import time

import pytest

from gateway.config import ConfigError, SuccessRate, parse_config
from gateway.health.success_rate import outliers, success_rates
from support import TinyServer, read_request_head, start_backend, start_with_admin

pytestmark = pytest.mark.timeout(90)

RULE = SuccessRate(interval=1.0, minimum_hosts=5, request_volume=50)


def test_five_healthy_and_one_at_60_percent():
    samples = {f"ok-{i}": (100, 0) for i in range(5)} | {"flaky": (100, 40)}
    ejected, threshold = outliers(samples, RULE)
    assert ejected == ["flaky"]
    assert threshold == pytest.approx(0.650, abs=0.001)     # 93.3% - 1.9 x 14.9%


def test_too_few_hosts_or_requests_eject_nobody():
    samples = {f"ok-{i}": (100, 0) for i in range(3)} | {"flaky": (100, 40)}
    assert outliers(samples, RULE) == ([], None)                         # 4 hosts, 5 needed
    assert outliers({**samples, "quiet": (49, 0)}, RULE) == ([], None)   # 49 tries: not counted
    assert outliers({**samples, "quiet": (50, 0)}, RULE)[0] == ["flaky"]
    # Everyone equally bad is no outlier: the deviation is 0.
    assert outliers({k: (100, 40) for k in "abcdef"}, RULE)[0] == []
    assert success_rates({"x": (60, 90)}, RULE) == {"x": 0.0}             # failed capped at tries


def test_config():
    base = {"sources": [{"name": "a", "type": "static", "services": []}]}

    def outlier(value):
        return parse_config({**base, "services": [{"name": "s", "port": 80,
                                                   "outlier_detection": value}]}).services[0].outlier_detection

    assert outlier({}).success_rate is None
    assert outlier({"success_rate": {}}).success_rate == SuccessRate()
    assert outlier({"success_rate": {"interval": "2s", "minimum_hosts": 3, "request_volume": 10,
                                     "stdev_factor": 1}}).success_rate == SuccessRate(2.0, 3, 10, 1.0)
    for value, error in [({"success_rate": {"minimum_hosts": 0}},
                          "services[0].outlier_detection.success_rate.minimum_hosts:"),
                         ({"success_rate": {"stdev_factor": -1}},
                          "services[0].outlier_detection.success_rate.stdev_factor:"),
                         ({"success_rate": {"intervl": "1s"}}, 'unknown key "intervl"')]:
        with pytest.raises(ConfigError) as e:
            outlier(value)
        assert error in str(e.value), str(e.value)


# -- end to end ---------------------------------------------------------------------------------


def _flaky_handler():
    """500 to two requests of every five (40%), 200 to the others, keep-alive."""
    served = itertools.count()

    def handle(conn) -> None:
        while read_request_head(conn):
            if next(served) % 5 < 2:
                conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return handle


SERVICES = {"judged": {}, "few-hosts": {"minimum_hosts": 7}, "few-requests": {"request_volume": 100_000}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    backends = [start_backend(f"127.0.0.{2 + i}", "a", f"a-{i}") for i in range(5)]
    flaky = TinyServer("127.0.0.8", _flaky_handler())
    endpoints = [b.address for b in backends] + [flaky.address]
    config = {
        "workers": 2,
        # a few keep-alive connections carry every request, over 10,000 each when it runs fast
        "limits": {"max_requests_per_connection": 1_000_000},
        "sources": [{"name": "a", "type": "static",
                     "services": [{"name": n, "endpoints": endpoints} for n in SERVICES]}],
        "services": [{"name": n, "port": 8000, "outlier_detection": {
            "base_ejection_time": "30s",
            "success_rate": {"interval": "1s", "request_volume": 50, **extra}}}
            for n, extra in SERVICES.items()],
        "routes": [{"name": n, "match": {"path": {"prefix": f"/{n}/"}}, "service": n,
                    "rewrite": {"prefix": "/"}} for n in SERVICES],
    }
    try:
        g, g.admin = start_with_admin(config, tmp_path_factory.mktemp("success_rate"), "success_rate")
    except BaseException:
        flaky.stop()
        for b in backends:
            b.stop()
        raise
    try:
        yield g, flaky.address
    finally:
        g.stop()
        flaky.stop()
        for b in backends:
            b.stop()


def _flaky_row(g, service: str, flaky: str) -> dict:
    return next(e for e in g.admin.get(f"/services/default/{service}")["endpoints"]
                if e["address"] == flaky)


def test_the_endpoint_at_40_percent_errors_is_ejected_where_there_are_enough_hosts(gw):
    g, flaky = gw
    statuses = {n: [] for n in SERVICES}
    ejected_after = None
    started = time.monotonic()
    clients = [g.client() for _ in range(4)]        # over both workers
    try:
        for i in itertools.count():
            if time.monotonic() - started > 8:
                break
            for name in SERVICES:
                statuses[name].append(clients[i % 4].request("GET", f"/{name}/x").status)
            if i % 200 == 0 and ejected_after is None and not _flaky_row(g, "judged", flaky)["serving"]:
                ejected_after = time.monotonic() - started
                until = time.monotonic() + 2.5      # two more intervals for the others
            if ejected_after is not None and time.monotonic() > until:
                break
    finally:
        for c in clients:
            c.close()
    row = _flaky_row(g, "judged", flaky)
    print(f"\nsuccess rate: {len(statuses['judged'])} requests per service; flaky endpoint ejected "
          f"{ejected_after and round(ejected_after, 2)} s in; 500s: "
          + ", ".join(f"{n} {s.count(500)}" for n, s in statuses.items()))
    assert ejected_after is not None, row
    assert row["causes"] == ["ejected"] and row["last_error"] == "success_rate", row
    others = [e for e in g.admin.get("/services/default/judged")["endpoints"] if e["address"] != flaky]
    assert len(others) == 5 and all(e["serving"] for e in others), others
    # 6 endpoints where 7 are needed, or never 100,000 requests in a second: nobody is ejected.
    for name in ("few-hosts", "few-requests"):
        eps = g.admin.get(f"/services/default/{name}")["endpoints"]
        assert all(e["serving"] for e in eps), (name, eps)
    # Before its ejection the flaky endpoint failed about 40% of its share (1/6) of requests.
    assert 0.4 * len(statuses["few-hosts"]) / 6 == pytest.approx(statuses["few-hosts"].count(500), rel=0.2)
