"""What edge policy costs: the gateway's CPU per request with no policy, a per-replica rate
limit (keyed by client, never reached), a global one (in Redis: one round trip per request,
its latency shows in p50/p99), a cached JWT (RS256, the same token every request) and an API
key, side by side in one run (issue #27's budget: a rate limit <= +3%, a cached JWT <= +5%).
Redis (Debian's redis-server) runs on the load CPU, beside wrk and the backends.

Same layout and measurement as bench/tracing.py (bench/run.py's machinery): nginx backends
and wrk on CPU 1, each gateway (``workers: 1``, access log to a file) pinned to CPU 0; CPU
microseconds per request = utime+stime of the gateway's processes over the requests wrk
completed.  The gateways run at once and are measured in turn, round robin, the order
rotated each repetition.  A run with any non-2xx answer is an error (a policy that refused
the load would look cheap).

    python bench/edge_policy.py --quick         # 3 s runs, 1 repetition: does it work
    python bench/edge_policy.py                 # 10 s runs, 5 repetitions (~4 min)
    python bench/edge_policy.py --policies none,jwt --repeat 9     # a pair, more repetitions

Besides each policy's median, "paired" is the median over repetitions of its CPU per request
against the no-policy gateway's in the same repetition: a noisy minute hits both sides.
"same req" is the same, against a no-policy gateway sent the same requests ("token": the
JWT's Authorization field), when one runs: the policy's cost apart from its credential's.

Everything started here is stopped by pid in a ``finally``; every wrk run is bounded.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # noqa: E402  (bench/run.py: processes, wrk, CPU accounting)

API_KEY = "bench-key-0123456789abcdef"


def variants(tmp: Path, redis_port: int) -> dict[str, tuple[str, tuple[str, ...], str]]:
    """name -> (the route's policy lines, the headers wrk sends, top-level lines)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (tmp / "jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "k1", "alg": "RS256"}]}))
    (tmp / "keys").write_text(f"bench:{API_KEY}\n")
    token = jwt.encode({"sub": "bench", "aud": "bench", "exp": time.time() + 3600}, key, algorithm="RS256",
                       headers={"kid": "k1"})
    bearer = (f"Authorization: Bearer {token}",)
    return {
        "none": ("", (), ""),
        # No policy, but the JWT's requests: what carrying a 600-byte token costs (parsed,
        # forwarded) apart from checking it; the jwt row's "same req" column is against this.
        "token": ("", bearer, ""),
        "rate-limit": ("    rate_limit: {requests: 1000000000, per: 1s, key: client}\n", (), ""),
        "global": ("    rate_limit: {requests: 1000000000, per: 1s, key: client, scope: global}\n", (),
                   f"redis: {{address: 127.0.0.1:{redis_port}}}\n"),
        # required: false only so that the readiness probe (no credentials) passes; wrk's
        # requests carry them, and present credentials are verified the same either way.
        "jwt": (f"    auth: {{required: false, jwt: {{jwks_file: {tmp}/jwks.json, audiences: [bench],"
                f" claims_to_headers: [{{claim: sub, header: x-user}}]}}}}\n", bearer, ""),
        "api-key": (f"    auth: {{required: false, api_key: {{keys_file: {tmp}/keys}}}}\n", (f"X-Api-Key: {API_KEY}",),
                    ""),
    }


def wait_listening(proc: base.Proc, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise base.BenchError(f"{proc.name} exited:\n{proc.log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise base.BenchError(f"{proc.name} not listening on {port} within {timeout:g}s")


def main(argv=None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--policies", help="comma-separated, from none, token, rate-limit, global, jwt, api-key "
                                        "(none is always run: the baseline)")
    chosen, rest = own.parse_known_args(argv)
    args = base.variant_args(__doc__.split("\n\n")[0], rest)
    cases = [base.CASES[c] for c in args.cases.split(",")]
    base.check_tools()
    if not args.no_build:
        base.build_extensions(base.REPO)
    bench = base.Bench(argparse.Namespace(keep_tmp=args.keep_tmp))
    runs: list[dict] = []
    try:
        bench.start_backend()
        redis_port = base.free_port("127.0.0.1")
        redis = bench.spawn("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(bench.tmp)], base.LOAD_CPU)
        wait_listening(redis, redis_port)
        policies = variants(bench.tmp, redis_port)
        if chosen.policies:
            keep = {"none", *chosen.policies.split(",")}
            policies = {name: v for name, v in policies.items() if name in keep}
        targets: dict[str, base.Target] = {}
        for name, (lines, _, top) in policies.items():
            label = f"gw-policy-{name}"
            port = base.free_port("127.0.0.1")
            conf = base.gateway_conf(bench.tmp, label, port, bench.backend_port, access_log=True, workers=1,
                                     extra=top)
            conf = conf.replace("    service: default/backend\n", "    service: default/backend\n" + lines)
            path = bench.tmp / f"{label}.yaml"
            path.write_text(conf)
            proc = bench.spawn(label, [base.PYTHON, "-m", "gateway", "run", "--config", str(path),
                                       "--log-level", "warning"], base.PROXY_CPU, cwd=base.REPO)
            base.wait_ready(proc, "127.0.0.1", port, timeout=30)
            targets[name] = base.Target(label, "127.0.0.1", port, proc)
        names = list(policies)
        for name in names:                  # warm up (imports, pools, the first verifications)
            bench.run_wrk(targets[name], base.CASES["c50-small"], 2, policies[name][1])
        for rep in range(args.repeat):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for case in cases:
                for name in order:
                    r = bench.run_wrk(targets[name], case, args.duration, policies[name][1])
                    if r["non2xx"] or any(r["socket_errors"].values()):
                        raise base.BenchError(f"{name}: {r['non2xx']} non-2xx answers, {r['socket_errors']}")
                    r.update(variant=name, case=case.name, repetition=rep)
                    runs.append(r)
                    print(f"rep {rep + 1}/{args.repeat} {case.name:<14} {name:<10} {r['rps']:>9.0f} req/s  "
                          f"{r['cpu_us_per_req']:6.1f} CPU us/req  p99 {r['p99_us'] / 1000:6.2f} ms  "
                          f"(CPU 0 busy with others: {r['cpu0_other_util'] * 100:.0f}%)", flush=True)
    finally:
        bench.cleanup()

    summary = {}
    for case in cases:
        base_cpu = statistics.median(r["cpu_us_per_req"] for r in runs if r["variant"] == "none" and r["case"] == case.name)
        for name in names:
            sel = [r for r in runs if r["variant"] == name and r["case"] == case.name]
            cpu = statistics.median(r["cpu_us_per_req"] for r in sel)
            paired = [r["cpu_us_per_req"] / b["cpu_us_per_req"] - 1 for r in sel for b in runs
                      if b["variant"] == "none" and b["case"] == case.name and b["repetition"] == r["repetition"]]
            twin = next((t for t in names if t != name and not policies[t][0] and policies[name][0]
                         and policies[t][1] == policies[name][1]), None)
            same = [r["cpu_us_per_req"] / b["cpu_us_per_req"] - 1 for r in sel for b in runs
                    if b["variant"] == twin and b["case"] == case.name and b["repetition"] == r["repetition"]]
            summary[f"{case.name}/{name}"] = {"cpu_us_per_req": cpu, "vs_none_pct": (cpu / base_cpu - 1) * 100,
                                              "paired_pct": statistics.median(paired) * 100,
                                              "same_request_pct": statistics.median(same) * 100 if same else None,
                                              "rps": statistics.median(r["rps"] for r in sel),
                                              "p50_us": statistics.median(r["p50_us"] for r in sel),
                                              "p99_us": statistics.median(r["p99_us"] for r in sel)}
    print()
    print(f"{'case':<14} {'policy':<10} {'req/s':>9} {'CPU us/req':>11} {'vs none':>8} {'paired':>8} "
          f"{'same req':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for key, s in summary.items():
        case, name = key.split("/")
        same = f"{s['same_request_pct']:>+7.1f}%" if s["same_request_pct"] is not None else f"{'':>8}"
        print(f"{case:<14} {name:<10} {s['rps']:>9.0f} {s['cpu_us_per_req']:>11.1f} {s['vs_none_pct']:>+7.1f}% "
              f"{s['paired_pct']:>+7.1f}% {same} {s['p50_us'] / 1000:>7.2f} {s['p99_us'] / 1000:>7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
