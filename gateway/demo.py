"""``gateway demo``: watch a curl loop keep answering while cluster A goes away.

Starts two local clusters (an API server and httpbin pods on 127.0.0.x each),
the gateway associated with both, and ``while :; do curl http://<gateway>/test; done``.
Once a second it prints the requests per ``upstream_host`` and ``upstream_cluster``
(read from the gateway's access log) and the failures so far (from curl). A third
of the way in it breaks cluster A, two thirds in it repairs it, and at the end it
prints a summary. Exit status 3 if any request failed.

Before the loop, one step shows routes from Kubernetes: two Gateways applied to cluster A
with the official client, "demo" and "internal", each served on its own address from the
config's pool (port 80 on both), an HTTPRoute (``/demo`` to httpbin) attached to "demo" only,
how long until the gateway served the first request through it, and that "internal" answers
404 for ``/demo``: routes of one Gateway are never served by another.

Scenarios (what happens to cluster A):
  graceful  httpbin removed: Service and EndpointSlice deleted, pods stopped
  crash     the pods are killed (connections refused) while the API still lists them
  down      the pods and the API server are killed together
  hang      the pods freeze (SIGSTOP): connections accepted, no answer
"""
from __future__ import annotations

import argparse
import calendar
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .devcluster._process import free_port, wait_listening

SCENARIOS = ("graceful", "crash", "down", "hang")
FAULT_TEXT = {
    "graceful": "httpbin removed from cluster A (Service + EndpointSlice deleted, pods stopped)",
    "crash": "cluster A's pods killed (connections refused; the API still lists them)",
    "down": "cluster A's pods and API server killed",
    "hang": "cluster A's pods frozen with SIGSTOP (connections accepted, never answered)",
}
REPAIR_TEXT = {
    "graceful": "httpbin restored in cluster A",
    "crash": "cluster A's pods restarted",
    "down": "cluster A's API server and pods restarted",
    "hang": "cluster A's pods thawed with SIGCONT",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", choices=SCENARIOS, default="graceful")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds in all: a third before the fault, a third during, a third after")
    parser.add_argument("--pods", type=int, default=1, help="httpbin pods per cluster (1-4)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object last")
    parser.add_argument("--state-dir", help="keep clusters' files here (default: a temporary directory)")
    parser.add_argument("--quiet", action="store_true", help="no per-second lines")
    parser.add_argument("--config-from", metavar="PATH",
                        help="run the gateway with this config (a gateway.yaml, or a ConfigMap "
                             "with one, such as deploy/kubernetes/configmap.yaml): its first two "
                             "sources become clusters A and B, the rest is kept as written")


# -- the request loop ---------------------------------------------------------------


class RequestLoop:
    """``while :; do curl ...; done`` in bash (the gateway's own client if curl is missing)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[float, str]] = []     # (time, status or error)
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.client = "curl" if shutil.which("curl") else "python"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._proc.wait(5)
        self._thread.join(10)

    def _run(self) -> None:
        if self.client == "curl":
            self._run_curl()
        else:
            self._run_python()

    def _run_curl(self) -> None:
        # Bounded by this process's life: a demo killed outright must not leave the loop behind.
        script = (f'while kill -0 {os.getpid()} 2>/dev/null; do '
                  f'curl -s -o /dev/null -m 10 -w "%{{http_code}}\\n" {self.url}; done')
        self._proc = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE,
                                      start_new_session=True, text=True)
        for line in self._proc.stdout:
            if self._stop.is_set():
                break
            code = line.strip()
            self.results.append((time.time(), code if code != "000" else "connection error"))

    def _run_python(self) -> None:
        import urllib.error
        import urllib.request
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as resp:
                    resp.read()
                    status = str(resp.status)
            except urllib.error.HTTPError as err:
                status = str(err.code)
            except OSError as err:
                status = f"connection error: {err}"
            self.results.append((time.time(), status))

    def failures(self, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for t, s in self.results if since <= t < until and not s.startswith("2"))


# -- the access log ------------------------------------------------------------------


class AccessLogTail:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[dict] = []
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        new = [orjson.loads(line) for line in lines if line.strip()]
        self.entries.extend(new)
        return new

    def wait_for(self, predicate, timeout: float) -> dict | None:
        """The first new entry ``predicate`` accepts (the log is flushed every 100 ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((e for e in self.read_new() if predicate(e)), None)
            if found is not None:
                return found
            time.sleep(0.02)
        return None


def _epoch(entry: dict) -> float:
    t = entry["time"]           # 2026-11-25T09:05:10.341Z
    return calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + t[19:-1])


# -- the run ------------------------------------------------------------------------------


@dataclass
class Timeline:
    start: float = 0.0
    fault: float = 0.0
    repair: float = 0.0
    end: float = 0.0
    events: list[tuple[float, str]] = field(default_factory=list)


def _write_config(state: Path, port: int, a, b) -> Path:
    config = f"""# written by `gateway demo`
listen: 127.0.0.1:{port}
admin: 127.0.0.1:{free_port()}
access_log: {{path: {state / 'access.log'}, flush_interval: 100ms}}
gateway_api:                            # HTTPRoutes in cluster A configure routes too
  sources: [cluster-a]
  addresses: [{DEMO_GATEWAYS[0]}-{DEMO_GATEWAYS[1]}]   # each Gateway gets one, port 80 on both
sources:
  - {{name: cluster-a, type: kubernetes, kubeconfig: {a.kubeconfig}, namespaces: [default]}}
  - {{name: cluster-b, type: kubernetes, kubeconfig: {b.kubeconfig}, namespaces: [default]}}
services:
  - name: httpbin
    port: http
    health_check: {{type: http, path: /healthz, interval: 500ms, timeout: 300ms, jitter: 50ms,
                    healthy_threshold: 2, unhealthy_threshold: 2}}
routes:
  - name: test
    match: {{path: {{prefix: /test}}}}
    service: default/httpbin
    retries: {{attempts: 3, on_timeout: true, per_try_timeout: 1s}}
"""
    path = state / "gateway.yaml"
    path.write_text(config)
    return path


def _adapt_config(state: Path, port: int, a, b, shipped: Path) -> tuple[Path, tuple[str, str]]:
    """``shipped``'s gateway.yaml, run here: its first two sources point at clusters A and B,
    it listens and logs on this machine (admin on loopback needs no token); workers, timeouts,
    services and routes stay as written.  Returns the path and the two sources' names."""
    import yaml
    doc = yaml.safe_load(shipped.read_text())
    if doc.get("kind") == "ConfigMap":
        doc = yaml.safe_load(doc["data"]["gateway.yaml"])
    sources = [s for s in doc.get("sources", ()) if s.get("type") == "kubernetes"][:2]
    if len(sources) != 2:
        raise ValueError(f"{shipped}: the demo needs two kubernetes sources")
    for source, cluster in zip(sources, (a, b)):
        source.pop("in_cluster", None)
        source.pop("context", None)
        source["kubeconfig"] = str(cluster.kubeconfig)
    doc["listen"] = f"127.0.0.1:{port}"
    doc["admin"] = f"127.0.0.1:{free_port()}"
    doc["access_log"] = {"path": str(state / "access.log"), "flush_interval": "100ms"}
    path = state / "gateway.yaml"
    path.write_text("# written by `gateway demo` from " + str(shipped) + "\n" + yaml.safe_dump(doc))
    return path, (sources[0]["name"], sources[1]["name"])


def break_cluster(scenario: str, cluster) -> None:
    """Do to ``cluster`` (a LocalCluster) what the scenario says (see the module docstring)."""
    if scenario == "graceful":
        cluster.remove_service()
    elif scenario == "crash":
        cluster.kill_backends(signal.SIGKILL)
    elif scenario == "down":
        cluster.kill_backends(signal.SIGKILL)
        cluster.stop_api()
    elif scenario == "hang":
        cluster.kill_backends(signal.SIGSTOP)
    else:
        raise ValueError(f"unknown scenario {scenario!r}")


def repair_cluster(scenario: str, cluster) -> None:
    """Undo ``break_cluster``."""
    if scenario == "graceful":
        cluster.restore_service()
    elif scenario == "crash":
        cluster.start_backends()
    elif scenario == "down":
        cluster.start_api()
        cluster.start_backends()
    elif scenario == "hang":
        cluster.kill_backends(signal.SIGCONT)
    else:
        raise ValueError(f"unknown scenario {scenario!r}")


RETURN_WAIT = 30.0      # seconds past the planned end the demo waits for cluster A to return


def _loop_over(now: float, end: float, phase: str, a_back: float | None) -> bool:
    """The request loop ends at ``end``, but not before cluster A served again after the
    repair (at most RETURN_WAIT seconds later): the demo is there to show it return."""
    if now < end:
        return False
    return phase != "after" or a_back is not None or now >= end + RETURN_WAIT


DEMO_CONTROLLER = "gateway.example/multi-cluster"      # the gateway_api default controllerName
# The pool of the demo's Gateways: "demo" gets the first address, "internal" the second.
DEMO_GATEWAYS = ("127.0.9.1", "127.0.9.2")


def show_httproute(cluster, tail: "AccessLogTail", say) -> dict:
    """Apply the demo's Gateways and HTTPRoute to cluster A and say when the gateway first
    served it, and that the other Gateway does not."""
    url = f"http://{DEMO_GATEWAYS[0]}/demo/get"
    httproute = apply_httproute(cluster, url)
    served = tail.wait_for(lambda e: e.get("path") == "/demo/get" and e.get("status") == 200, 1.0) or {}
    httproute["served_by_route"] = served.get("route")
    httproute["other_gateway_status"] = _status_of(f"http://{DEMO_GATEWAYS[1]}/demo/get")
    # Its line is flushed up to 100 ms later: read it before the clear, or the first live line
    # counts it as an unrouted request of the loop's.
    tail.wait_for(lambda e: e.get("path") == "/demo/get" and e.get("status") != 200, 1.0)
    tail.entries.clear()            # the loop's split counts the curl loop's requests only
    say(f"HTTPRoute {httproute['route']} (/demo -> httpbin) applied to cluster A, attached to Gateway "
        f"default/demo ({DEMO_GATEWAYS[0]}:80): "
        + (f"first request served through it {httproute['to_first_request_ms']} ms later "
           f"(access log: route {served.get('route')}, {served.get('upstream_host')})"
           if httproute["status"] == 200 else f"not served (last status {httproute['status']})"))
    say(f"Gateway default/internal ({DEMO_GATEWAYS[1]}:80) answers {httproute['other_gateway_status']} "
        f"for /demo/get: its routes are its own")
    return httproute


def _status_of(url: str) -> int | None:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def apply_httproute(cluster, url: str, timeout: float = 5.0) -> dict:
    """Apply a GatewayClass, the Gateways "demo" and "internal" and an HTTPRoute ``/demo`` ->
    httpbin on "demo" to ``cluster`` (a LocalCluster), as ``kubectl apply`` would; poll ``url``
    until it is served through the route."""
    from kubernetes import client
    group, custom = "gateway.networking.k8s.io", client.CustomObjectsApi(cluster.api_client)
    custom.create_cluster_custom_object(group, "v1", "gatewayclasses", {
        "metadata": {"name": "demo"}, "spec": {"controllerName": DEMO_CONTROLLER}})
    for name in ("demo", "internal"):
        custom.create_namespaced_custom_object(group, "v1", "default", "gateways", {
            "metadata": {"name": name}, "spec": {"gatewayClassName": "demo", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"}]}})
    applied = time.monotonic()
    custom.create_namespaced_custom_object(group, "v1", "default", "httproutes", {
        "metadata": {"name": "httpbin-demo"}, "spec": {"parentRefs": [{"name": "demo"}], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/demo"}}],
            "backendRefs": [{"name": "httpbin", "port": cluster.port}]}]}})
    status = None
    while time.monotonic() - applied < timeout:
        status = _status_of(url)                # 404 (or refused) until the route arrives
        if status == 200:
            break
        time.sleep(0.005)
    return {"route": "default/httpbin-demo", "status": status,
            "to_first_request_ms": round((time.monotonic() - applied) * 1000, 1) if status == 200 else None}


def _live_line(t: float, phase: str, new: list[dict], loop: RequestLoop) -> str:
    by_host = collections.Counter((e.get("upstream_host"), e.get("upstream_cluster")) for e in new)
    hosts = "  ".join(f"{h} ({c}) {n:4d}" for (h, c), n in sorted(by_host.items(), key=lambda x: str(x[0])))
    return (f"t={t:5.1f}s  {phase:<7} {len(new):4d} req/s  failures so far {loop.failures():3d}   "
            f"{hosts or '-'}")


def run_demo(scenario: str, duration: float, pods: int, state: Path, quiet: bool,
             config_from: Path | None = None) -> dict:
    from gateway.devcluster.cluster import LocalCluster

    pods = max(1, min(pods, 4))
    a_ips = [f"127.0.0.{2 + 2 * i}" for i in range(pods)]      # .2 .4 .6 .8
    b_ips = [f"127.0.0.{3 + 2 * i}" for i in range(pods)]      # .3 .5 .7 .9
    say = print if not quiet else (lambda *a, **k: None)
    say(f"starting cluster A (pods {', '.join(a_ips)}) and cluster B (pods {', '.join(b_ips)}) ...")
    a = LocalCluster("a", state / "cluster-a", a_ips, port=0)
    b = LocalCluster("b", state / "cluster-b", b_ips, port=0)
    gateway = loop = httproute = None
    timeline = Timeline()
    try:
        a.start()
        b.start()
        port = free_port()
        names = ("cluster-a", "cluster-b")
        if config_from is None:
            config = _write_config(state, port, a, b)
        else:
            config, names = _adapt_config(state, port, a, b, config_from)
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=open(state / "gateway.log", "wb"))
        wait_listening("127.0.0.1", port, 20.0, gateway)
        url = f"http://127.0.0.1:{port}/test"
        say(f"gateway on {url}; config {config}; logs in {state}")
        admin = next(line.split()[1].strip("'\"") for line in config.read_text().splitlines()
                     if line.startswith("admin:"))
        say(f"dashboard: http://{admin}/   (CLI: gateway services --admin http://{admin})")
        tail = AccessLogTail(state / "access.log")
        if config_from is None:         # a shipped config may not read Gateway API routes
            httproute = show_httproute(a, tail, say)
        say(f"request loop: while :; do curl -s {url}; done\n")
        loop = RequestLoop(url)
        timeline.start = time.time()
        timeline.fault = timeline.start + duration / 3
        timeline.repair = timeline.start + 2 * duration / 3
        timeline.end = timeline.start + duration
        loop.start()
        phase = "before"
        next_tick = timeline.start + 1.0
        a_back = None                   # when cluster A first served again after the repair
        while not _loop_over(time.time(), timeline.end, phase, a_back):
            now = time.time()
            if phase == "before" and now >= timeline.fault:
                timeline.fault = time.time()
                break_cluster(scenario, a)
                timeline.events.append((timeline.fault, FAULT_TEXT[scenario]))
                say(f"\n>>> {FAULT_TEXT[scenario]}\n")
                phase = "fault"
            elif phase == "fault" and now >= timeline.repair:
                timeline.repair = time.time()
                repair_cluster(scenario, a)
                timeline.events.append((timeline.repair, REPAIR_TEXT[scenario]))
                say(f"\n>>> {REPAIR_TEXT[scenario]}\n")
                phase = "after"
            if now >= next_tick:
                new = tail.read_new()
                if phase == "after" and a_back is None and any(e.get("upstream_cluster") == names[0] for e in new):
                    # The split after the repair is measured from A's return (a busy machine
                    # may take longer to pass A's checks again): give it its full third.
                    a_back = now
                    timeline.end = max(timeline.end, a_back + duration / 3)
                say(_live_line(now - timeline.start, phase, new, loop))
                next_tick += 1.0
            time.sleep(0.05)
        loop.stop()
        timeline.end = time.time()
    finally:
        if loop is not None:
            loop.stop()
        if gateway is not None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(15)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait()
        a.close()
        b.close()
    time.sleep(0.05)
    tail.read_new()
    summary = summarize(scenario, timeline, tail.entries, loop, names)
    return {**summary, "httproute": httproute} if httproute is not None else summary


def _split(entries: list[dict]) -> dict:
    clusters = collections.Counter(e.get("upstream_cluster") or "-" for e in entries)
    hosts = collections.Counter(e.get("upstream_host") or "-" for e in entries)
    n = len(entries) or 1
    return {"requests": len(entries),
            "clusters": {c: {"requests": k, "share": round(k / n, 4)} for c, k in sorted(clusters.items())},
            "hosts": {h: {"requests": k, "share": round(k / n, 4)} for h, k in sorted(hosts.items())}}


def summarize(scenario: str, tl: Timeline, entries: list[dict], loop: RequestLoop,
              names: tuple[str, str] = ("cluster-a", "cluster-b")) -> dict:
    a_name = names[0]
    timed = [(_epoch(e), e) for e in entries]
    a_hosts = {e["upstream_host"] for e in entries if e.get("upstream_cluster") == a_name}

    def touched_a(e: dict) -> bool:   # served by A, or tried on A before a retry
        return e.get("upstream_cluster") == a_name or bool(a_hosts.intersection(e.get("tried_hosts", ())))

    on_a_after_fault = [t for t, e in timed if tl.fault <= t < tl.repair and touched_a(e)]
    first_a_after_repair = min((t for t, e in timed if t >= tl.repair and e.get("upstream_cluster") == a_name),
                               default=None)
    last_a = max(on_a_after_fault, default=None)
    settled = first_a_after_repair if first_a_after_repair is not None else tl.end
    phases = {
        "before": _split([e for t, e in timed if tl.start <= t < tl.fault]),
        "during": _split([e for t, e in timed if tl.fault <= t < tl.repair]),
        "after": _split([e for t, e in timed if settled <= t <= tl.end]),
    }
    for name, (lo, hi) in {"before": (tl.start, tl.fault), "during": (tl.fault, tl.repair),
                           "after": (settled, tl.end)}.items():
        phases[name]["failures"] = loop.failures(lo, hi)
    statuses = collections.Counter(s for _, s in loop.results)
    durations = sorted(e["duration_ms"] for t, e in timed if tl.fault <= t < tl.repair)
    return {
        "scenario": scenario,
        "clusters": list(names),
        "client": loop.client,
        "requests": len(loop.results),
        "failures": loop.failures(),
        "statuses": dict(statuses),
        "fault_to_last_request_on_a_s": round(last_a - tl.fault, 3) if last_a is not None else 0.0,
        "requests_on_a_after_fault": len(on_a_after_fault),
        "served_by_a_after_fault": sum(1 for t, e in timed if tl.fault <= t < tl.repair
                                       and e.get("upstream_cluster") == a_name),
        "repair_to_first_request_on_a_s": (round(first_a_after_repair - tl.repair, 3)
                                           if first_a_after_repair is not None else None),
        "max_latency_during_ms": durations[-1] if durations else None,
        "retried_requests": sum(1 for e in entries if e.get("attempts", 1) > 1),
        "access_log_lines": len(entries),
        "phases": phases,
        "events": [{"t": round(t - tl.start, 3), "what": what} for t, what in tl.events],
    }


def print_summary(s: dict) -> None:
    print(f"\nsummary: scenario {s['scenario']}, {s['requests']} requests by {s['client']}, "
          f"{s['failures']} failed")
    a, b = s["clusters"]
    print(f"{'phase':<8} {'requests':>8} {'failures':>8} {a:>10} {b:>10}")
    for name in ("before", "during", "after"):
        p = s["phases"][name]
        share = {c: v["share"] for c, v in p["clusters"].items()}
        print(f"{name:<8} {p['requests']:>8} {p['failures']:>8} {share.get(a, 0):>10.1%} "
              f"{share.get(b, 0):>10.1%}")
    print(f"last request sent to cluster A {s['fault_to_last_request_on_a_s']}s after the fault "
          f"({s['requests_on_a_after_fault']} tried on A after it, {s['served_by_a_after_fault']} answered by A)")
    rec = s["repair_to_first_request_on_a_s"]
    print(f"first request on cluster A {rec}s after the repair" if rec is not None
          else "cluster A did not serve again before the end")
    print(f"requests retried on another endpoint: {s['retried_requests']}; "
          f"slowest request during the fault: {s['max_latency_during_ms']} ms")
    print("'after' counts from the first request on cluster A after the repair.")


def main(args: argparse.Namespace) -> int:
    state = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    state.mkdir(parents=True, exist_ok=True)
    summary = run_demo(args.scenario, args.duration, args.pods, state, args.quiet,
                       Path(args.config_from) if args.config_from else None)
    print_summary(summary)
    broken = summary["requests"] and not summary["access_log_lines"]
    if broken:
        print("the gateway wrote no access log lines: the split above cannot be trusted",
              file=sys.stderr)
    if args.json:
        print(orjson.dumps(summary).decode())
    return 3 if summary["failures"] or broken else 0
