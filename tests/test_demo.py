"""``gateway demo`` in its short form, as CI runs it: exit status 0 and a JSON summary last.

The demo starts two local clusters, the gateway and a ``curl`` loop (or its Python stand-in),
breaks cluster A a third of the way in and repairs it two thirds in.  Here it must lose no
request, serve a reasonable number of them, and report a sane split: about half on each
cluster before the fault, everything on B during it (once A's last request is done), and
both clusters again after the repair. Before the loop, an HTTPRoute applied to cluster A must
be served through within a moment.
"""
from __future__ import annotations

import os
import signal
import subprocess

import orjson
import pytest

from support import PYTHON, REPO, descendants


def run_demo(scenario: str, state_dir, *extra: str, duration: float = 9) -> tuple[int, dict, str]:
    argv = [PYTHON, "-m", "gateway", "demo", "--duration", str(duration), "--json", "--quiet",
            "--scenario", scenario, "--state-dir", str(state_dir), *extra]
    proc = subprocess.Popen(argv, cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=80)       # the demo waits up to 30 s for A to return
    except subprocess.TimeoutExpired:
        # The demo and everything it started (the curl loop runs in a session of its own).
        for pid in [proc.pid, *descendants(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"demo did not finish within 80 s\n{out[-2000:]}\n{err[-2000:]}")
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, f"no output; stderr:\n{err[-3000:]}"
    try:
        summary = orjson.loads(lines[-1])
    except orjson.JSONDecodeError:
        pytest.fail(f"last stdout line is not JSON: {lines[-1]!r}\n{err[-2000:]}")
    log_path = state_dir / "gateway.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    return proc.returncode, summary, out + err + log[-3000:]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scenario", ["crash", "graceful"])
def test_demo_short_run_loses_no_request(tmp_path, scenario):
    code, s, output = run_demo(scenario, tmp_path / "demo")
    print(f"\nDEMO scenario={scenario} requests={s.get('requests')} failures={s.get('failures')} "
          f"fault_to_last_request_on_a_s={s.get('fault_to_last_request_on_a_s')} "
          f"max_latency_during_ms={s.get('max_latency_during_ms')} "
          f"repair_to_first_request_on_a_s={s.get('repair_to_first_request_on_a_s')}")
    assert s["scenario"] == scenario
    assert s["failures"] == 0, f"{s['failures']} failed requests: {s['statuses']}\n{output}"
    assert code == 0, output
    assert s["requests"] > 100, s
    assert set(s["statuses"]) == {"200"}, s["statuses"]

    phases = s["phases"]
    for name in ("before", "during", "after"):
        assert phases[name]["failures"] == 0, (name, phases[name])
    # Before the fault: both clusters, about half each (one curl at a time: strict alternation).
    before = phases["before"]
    assert before["requests"] > 30, before
    assert before["clusters"]["cluster-a"]["share"] == pytest.approx(0.5, abs=0.1), before
    assert before["clusters"]["cluster-b"]["share"] == pytest.approx(0.5, abs=0.1), before
    # During the fault: A is dropped within a moment; nothing it did not answer before is lost.
    assert s["fault_to_last_request_on_a_s"] < 2.0, s
    during = phases["during"]
    assert during["requests"] > 30, during
    assert during["clusters"]["cluster-b"]["share"] > 0.9, during
    assert s["served_by_a_after_fault"] <= s["requests_on_a_after_fault"]
    # After the repair: A serves again, and the split is back to about half each.
    assert s["repair_to_first_request_on_a_s"] is not None, "cluster A did not serve again"
    after = phases["after"]
    assert after["requests"] > 10, after
    assert after["clusters"]["cluster-a"]["share"] == pytest.approx(0.5, abs=0.15), after
    assert [e["what"] for e in s["events"]] and len(s["events"]) == 2, s["events"]
    # Before the loop: an HTTPRoute applied to cluster A, served through by the gateway.
    route = s["httproute"]
    assert (route["status"], route["served_by_route"]) == (200, "default.httpbin-demo.0.0"), route
    assert 0 < route["to_first_request_ms"] < 2000, route
    assert route["other_gateway_status"] == 404, route      # the other Gateway: not its route


CONFIGMAP = REPO / "deploy" / "kubernetes" / "configmap.yaml"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scenario", ["graceful", "crash", "down", "hang"])
def test_shipped_configmap_loses_no_request(tmp_path, scenario):
    """The deploy ConfigMap's gateway.yaml as shipped (workers: 2, its health check, outlier
    detection, timeouts and route retries), its two sources pointed at the local clusters:
    every scenario of the demo with 0 failed requests.  The hang runs longer: its fault must
    outlast the active check's ejection (2 s interval x 2 + 0.5 s timeout + jitter), so that
    the request it froze is re-dispatched, not thawed."""
    hang = scenario == "hang"
    code, s, output = run_demo(scenario, tmp_path / "demo", "--config-from", str(CONFIGMAP),
                               "--pods", "2", duration=18 if hang else 9)
    print(f"\nCONFIGMAP scenario={scenario} requests={s.get('requests')} failures={s.get('failures')} "
          f"retried={s.get('retried_requests')} max_latency_during_ms={s.get('max_latency_during_ms')}")
    assert s["clusters"] == ["local", "cluster-b"], s
    assert s["failures"] == 0, f"{s['failures']} failed requests: {s['statuses']}\n{output}"
    assert code == 0, output
    assert s["requests"] > 100 and set(s["statuses"]) == {"200"}, s
    during = s["phases"]["during"]
    assert during["clusters"]["cluster-b"]["share"] > 0.9, during
    assert s["repair_to_first_request_on_a_s"] is not None, "cluster A did not serve again"
    if hang:
        # Re-dispatched when the check ejected A's pods (not answered by A after the thaw),
        # within interval x unhealthy_threshold + timeout + jitter + 1 s.
        assert s["served_by_a_after_fault"] == 0, s
        assert 0 < s["max_latency_during_ms"] <= 5_700, s
