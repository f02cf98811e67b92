"""What the upstream conformance suite declares, read once from a gateway-api checkout into
``upstream.json`` (committed beside it): each test's ShortName and features, each feature's
name, and the core and extended features of the profiles GATEWAY-HTTP, GATEWAY-GRPC and
GATEWAY-TLS.  ``report.py`` builds docs/conformance.md from it and a run of the replayed tests.

    python tests/conformance/extract_upstream.py /path/to/gateway-api [commit]

The Go sources are read with patterns, not compiled: the declarations are regular
(``ShortName: "X"``, ``features.SupportX``, ``XFeature = Feature{Name: SupportX, ...}``).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# conformance/utils/suite/profiles.go: each profile's core features and extended feature sets
PROFILE_SETS = {"GATEWAY-HTTP": {"core": ("SupportGateway", "SupportReferenceGrant", "SupportHTTPRoute"),
                                 "extended": ("GatewayExtendedFeatures", "HTTPRouteExtendedFeatures",
                                              "BackendTLSPolicyCoreFeatures", "BackendTLSPolicyExtendedFeatures")},
                "GATEWAY-GRPC": {"core": ("SupportGateway", "SupportReferenceGrant", "SupportGRPCRoute"),
                                 "extended": ("GatewayExtendedFeatures", "BackendTLSPolicyCoreFeatures",
                                              "BackendTLSPolicyExtendedFeatures")},
                "GATEWAY-TLS": {"core": ("SupportGateway", "SupportReferenceGrant", "SupportTLSRoute"),
                                "extended": ("GatewayExtendedFeatures", "TLSRouteExtendedFeatures",
                                             "BackendTLSPolicyCoreFeatures", "BackendTLSPolicyExtendedFeatures")}}


def _show(repo: Path, commit: str, path: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def _ls(repo: Path, commit: str, folder: str) -> list[str]:
    out = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", commit, folder + "/"],
                         check=True, capture_output=True, text=True).stdout
    return out.split()


def extract(repo: Path, commit: str) -> dict:
    names: dict[str, str] = {}           # SupportX -> "X"
    feature_of: dict[str, str] = {}      # the Feature var (XFeature, or X) -> SupportX
    sets: dict[str, list[str]] = {}      # set name -> [Feature var]
    for path in _ls(repo, commit, "pkg/features"):
        if not path.endswith(".go"):
            continue
        text = _show(repo, commit, path)
        names.update(re.findall(r"(Support\w+)\s+(?:FeatureName\s*)?=\s*\"([^\"]+)\"", text))
        feature_of.update(re.findall(r"(\w+)\s*=\s*Feature\{\s*Name:\s*(Support\w+)", text))
        for name, body in re.findall(r"var (\w+Features) = sets\.New\(([^)]*)\)", text, re.S):
            sets[name] = re.findall(r"\b(\w+)\s*,", body + ",")
    profiles = {}
    for profile, parts in PROFILE_SETS.items():
        core = sorted(names[s] for s in parts["core"])
        extended = sorted({names[feature_of[f]] for s in parts["extended"] for f in sets[s]})
        profiles[profile] = {"core": core, "extended": extended}
    tests = {}
    for path in _ls(repo, commit, "conformance/tests"):
        if not path.endswith(".go") or path.endswith("_test.go"):
            continue
        text = _show(repo, commit, path)
        for block in re.split(r"\nvar \w+ = (?:confsuite|suite)\.ConformanceTest\{", text)[1:]:
            short = re.search(r"ShortName:\s*\"(\w+)\"", block)
            feats = re.search(r"Features:\s*\[\]features\.FeatureName\{(.*?)\}", block, re.S)
            if short:
                found = re.findall(r"features\.(Support\w+)", feats.group(1)) if feats else []
                tests[short.group(1)] = {"file": path.rsplit("/", 1)[1],
                                         "features": sorted(names[f] for f in found)}
    return {"repository": "kubernetes-sigs/gateway-api", "commit": commit, "profiles": profiles,
            "tests": dict(sorted(tests.items()))}


def main(argv: list[str]) -> int:
    repo = Path(argv[0])
    commit = argv[1] if len(argv) > 1 else "HEAD"
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", commit], check=True,
                            capture_output=True, text=True).stdout.strip()
    (HERE / "upstream.json").write_text(json.dumps(extract(repo, commit), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
