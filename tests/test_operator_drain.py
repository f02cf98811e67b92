"""Operator drain (issue #26, point 4): `gateway source drain zone-a --over 2s` moves new
requests away from zone A gradually, with no failed request; the config file says
`drained: true` on the source, so a restarted gateway starts with A drained; `undrain` brings
A back, ramping.  Real CLI, real admin API, two zones, ``workers: 2``, keep-alive clients.
"""
from __future__ import annotations

import subprocess
import sys
import time

import yaml

from failoverload import Load, failures
from support import REPO, GatewayProcess, start_backend, start_with_admin, static_source


def _cli(admin, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway", *args, "--admin", f"http://127.0.0.1:{admin.port}"],
                         cwd=str(REPO), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _state(admin, cluster: str) -> str:
    return admin.get("/services/default/web")["cluster_states"][cluster]["state"]


def test_drain_and_undrain_a_source_gradually_with_no_failed_request(tmp_path):
    a = start_backend("127.0.0.26", "zone-a", "a-0")
    b = start_backend("127.0.0.27", "zone-b", "b-0")
    config = {
        "workers": 2,
        "sources": [static_source("zone-a", {"web": [a.address]}), static_source("zone-b", {"web": [b.address]})],
        "services": [{"name": "web", "port": 8000}],
        "routes": [{"name": "web", "match": {"path": {"prefix": "/"}}, "service": "web"}],
    }
    gw, admin = start_with_admin(config, tmp_path, "drain")
    gw2 = None
    load = Load(gw.host, gw.port, threads=4, deadline=60)
    try:
        load.start()
        load.wait_count(200)
        assert "draining" in _cli(admin, "source", "drain", "zone-a", "--over", "2s")
        t_drain = time.monotonic()      # the drain began a little earlier: the CLI answered
        assert _state(admin, "zone-a") == "draining"
        admin.wait("/services/default/web",
                   lambda s: s["cluster_states"]["zone-a"]["state"] == "drained", timeout=15)
        t_drained = time.monotonic()
        assert t_drained - t_drain >= 1.0                      # gradual, not at once
        saved = yaml.safe_load(gw.config_path.read_text())
        assert next(s for s in saved["sources"] if s["name"] == "zone-a")["drained"] is True
        while time.monotonic() < t_drained + 1.5:              # traffic while A is drained
            time.sleep(0.05)
        t_undrain = time.monotonic()
        _cli(admin, "source", "undrain", "zone-a", "--over", "1s")
        admin.wait("/services/default/web",
                   lambda s: s["cluster_states"]["zone-a"]["state"] == "healthy", timeout=15)
        t_back = time.monotonic()
        deadline = time.monotonic() + 20
        while not any(s.cluster == "zone-a" and s.sent > t_back for s in list(load.samples)):
            assert time.monotonic() < deadline, "zone A never served again"
            time.sleep(0.05)
        samples = load.stop()
        saved = yaml.safe_load(gw.config_path.read_text())
        assert "drained" not in next(s for s in saved["sources"] if s["name"] == "zone-a")

        assert not failures(samples), failures(samples)[:5]
        during = [s for s in samples if t_drain + 0.5 <= s.sent < t_drain + 1.5]
        after = [s for s in samples if t_drained + 0.5 <= s.sent and s.done < t_undrain]
        share = sum(s.cluster == "zone-a" for s in during) / max(1, len(during))
        print(f"\ndrain: A's share mid-drain {share:.1%} of {len(during)}, after it "
              f"{sum(s.cluster == 'zone-a' for s in after)} of {len(after)}")
        assert 0 < share < 0.45                                 # on its way down (50% before)
        assert after and not any(s.cluster == "zone-a" for s in after)

        # Persisted: a gateway started from the file with drained: true starts with A drained.
        _cli(admin, "source", "drain", "zone-a", "--over", "0s")
        cfg2 = yaml.safe_load(gw.config_path.read_text())
        gw.stop()
        gw2, admin2 = start_with_admin(cfg2, tmp_path / "again", "drain2")
        admin2.wait("/services/default/web",
                    lambda s: s["cluster_states"].get("zone-a", {}).get("state") == "drained", timeout=15)
        with gw2.client() as c:
            for _ in range(20):
                r = c.request("GET", "/x")
                assert r.status == 200 and r.json()["cluster"] == "zone-b"
    finally:
        load.stop()
        gw.stop()
        if gw2 is not None:
            gw2.stop()
        a.stop()
        b.stop()
