"""Propagation delay: from a Kubernetes API write to the first request routed by the new table.

One EndpointSlice lists two addresses of the same service; exactly one of them is ready at a
time. Each change is one write through the official ``kubernetes`` client (a JSON patch that
swaps the two ``ready`` conditions), so the pod that answers flips. Right after the write a
keep-alive client polls the gateway with requests whose answer names the pod that served them
(the devcluster backend says so in its JSON body); the delay is the time from the start of the
write to the first answer from the newly ready pod. It includes the API write itself, the
watch event, the registry rebuild and the snapshot swap in the data plane.

Every poll is bounded (``timeout`` seconds per change), every process started is stopped by pid.

Run as a script (starts a local cluster with two pods and a gateway; needs 127.0.0.2 and
127.0.0.4, which Linux routes to ``lo``)::

    python bench/propagation.py                # 50 changes
    python bench/propagation.py --changes 200 --json

or import ``measure()`` and point it at a slice and a gateway that you already run.
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from support import free_port, stop_process, wait_listening  # noqa: E402  (tests/support)

DEFAULT_CHANGES = 50
CHANGE_TIMEOUT = 5.0            # seconds one change may take to show before we give up
SETTLE_RUN = 20                 # consecutive answers from one pod that prove the other is out


@dataclass
class Result:
    delays: list[float]         # seconds, write start -> first answer from the new pod
    writes: list[float]         # seconds the API write itself took
    polls: int                  # requests sent while waiting

    @property
    def median(self) -> float:
        return statistics.median(self.delays)

    @property
    def max(self) -> float:
        return max(self.delays)

    def summary(self) -> dict:
        d = sorted(self.delays)
        return {"changes": len(d), "median_ms": round(self.median * 1000, 2),
                "p90_ms": round(d[int(0.9 * (len(d) - 1))] * 1000, 2),
                "max_ms": round(self.max * 1000, 2), "min_ms": round(d[0] * 1000, 2),
                "write_median_ms": round(statistics.median(self.writes) * 1000, 2),
                "requests": self.polls}


class Poller:
    """GET ``path`` on the gateway over one keep-alive connection; returns the serving pod's IP."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 5.0) -> None:
        self.host, self.port, self.path, self.timeout = host, port, path, timeout
        self.conn: http.client.HTTPConnection | None = None
        self.sent = 0

    def served_by(self) -> str | None:
        """The IP of the pod that answered, or None for a non-2xx answer or a broken connection."""
        self.sent += 1
        for attempt in range(2):            # a keep-alive connection the gateway closed: reconnect once
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("GET", self.path)
                resp = self.conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException):
                self.close()
                continue
            if resp.will_close:
                self.close()
            if not 200 <= resp.status < 300:
                return None
            return json.loads(body)["address"].rsplit(":", 1)[0]
        return None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _ready_patch(slice_obj, ready_ip: str) -> list[dict]:
    """A JSON patch making ``ready_ip`` the only ready (and serving) endpoint of the slice."""
    ops = []
    for i, ep in enumerate(slice_obj.endpoints or ()):
        ready = ready_ip in (ep.addresses or ())
        ops.append({"op": "add", "path": f"/endpoints/{i}/conditions",
                    "value": {"ready": ready, "serving": ready, "terminating": False}})
    return ops


def _patch(discovery, namespace: str, name: str, body: list[dict]) -> None:
    discovery.patch_namespaced_endpoint_slice(name, namespace, body,
                                              _content_type="application/json-patch+json")


def wait_only(poller: Poller, ip: str, timeout: float = 10.0, run: int = SETTLE_RUN) -> None:
    """Poll until ``run`` answers in a row come from ``ip`` (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < run:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway did not settle on {ip} within {timeout}s")
        streak = streak + 1 if poller.served_by() == ip else 0


def measure(discovery, namespace: str, slice_name: str, host: str, port: int, path: str,
            changes: int = DEFAULT_CHANGES, timeout: float = CHANGE_TIMEOUT,
            progress=None) -> Result:
    """Flip which of the slice's two endpoints is ready ``changes`` times; time each flip.

    ``discovery`` is a ``kubernetes.client.DiscoveryV1Api`` for the cluster that holds the
    slice ``namespace/slice_name``; the gateway at ``host:port`` routes ``path`` to its service
    (and to nothing else). The slice is left with its first address ready.
    """
    slice_obj = discovery.read_namespaced_endpoint_slice(slice_name, namespace)
    ips = [ep.addresses[0] for ep in slice_obj.endpoints or ()]
    if len(ips) != 2:
        raise ValueError(f"slice {namespace}/{slice_name} must list exactly two addresses, has {ips}")
    patches = {ip: _ready_patch(slice_obj, ip) for ip in ips}
    poller = Poller(host, port, path)
    delays: list[float] = []
    writes: list[float] = []
    try:
        _patch(discovery, namespace, slice_name, patches[ips[0]])
        wait_only(poller, ips[0])
        for i in range(changes):
            new = ips[(i + 1) % 2]
            t0 = time.monotonic()
            _patch(discovery, namespace, slice_name, patches[new])
            writes.append(time.monotonic() - t0)
            deadline = t0 + timeout
            while True:
                if poller.served_by() == new:
                    delays.append(time.monotonic() - t0)
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"change {i}: no answer from {new} within {timeout}s")
            if progress is not None:
                progress(i, delays[-1])
        if changes % 2:                 # leave the first address ready, as we found the slice
            _patch(discovery, namespace, slice_name, patches[ips[0]])
            wait_only(poller, ips[0])
    finally:
        poller.close()
    return Result(delays, writes, poller.sent)


# -- the standalone run ----------------------------------------------------------------------


def run(changes: int, state: Path, ips: tuple[str, str], quiet: bool = False) -> Result:
    from gateway.devcluster.cluster import LocalCluster

    cluster = LocalCluster("a", state / "cluster-a", list(ips), port=0)
    gateway = None
    try:
        cluster.start()
        port = free_port()
        config = state / "gateway.yaml"
        config.write_text(
            f"listen: 127.0.0.1:{port}\nadmin: off\naccess_log: {{path: off}}\n"
            f"sources:\n  - {{name: cluster-a, type: kubernetes, kubeconfig: {cluster.kubeconfig}, "
            f"context: {cluster.context}, namespaces: [default]}}\n"
            "services:\n  - {name: httpbin, port: http}\n"
            "routes:\n  - {name: prop, match: {path: {prefix: /prop}}, service: httpbin}\n")
        with open(state / "gateway.log", "wb") as err:
            gateway = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(config)],
                                       cwd=str(REPO), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=err)
        wait_listening("127.0.0.1", port, 20.0, gateway)
        say = (lambda *a: None) if quiet else print
        say(f"cluster A: pods {', '.join(ips)}; gateway 127.0.0.1:{port}; {changes} changes")
        return measure(cluster.discovery_v1(), cluster.layout.namespace, cluster.layout.slice_name,
                       "127.0.0.1", port, "/prop", changes,
                       progress=lambda i, d: say(f"change {i + 1:3d}: {d * 1000:7.1f} ms"))
    finally:
        if gateway is not None:
            stop_process(gateway, timeout=15)
        cluster.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=DEFAULT_CHANGES)
    parser.add_argument("--ips", default="127.0.0.2,127.0.0.4", help="the two pod addresses")
    parser.add_argument("--state-dir", help="keep the cluster's and gateway's files here")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    ips = tuple(args.ips.split(","))
    if len(ips) != 2:
        parser.error("--ips takes two addresses")
    if args.state_dir:
        state = Path(args.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        result = run(args.changes, state, ips, args.quiet)
    else:
        with tempfile.TemporaryDirectory(prefix="gateway-propagation-") as tmp:
            result = run(args.changes, Path(tmp), ips, args.quiet)
    s = result.summary()
    if args.json:
        print(json.dumps(s))
    else:
        print(f"propagation over {s['changes']} changes: median {s['median_ms']} ms, "
              f"p90 {s['p90_ms']} ms, max {s['max_ms']} ms (min {s['min_ms']} ms; "
              f"API write median {s['write_median_ms']} ms; {s['requests']} requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
