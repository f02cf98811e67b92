"""docs/conformance.md: what the replayed Gateway API conformance tests say of this gateway, in
the shape of the upstream conformance reports (per profile, GATEWAY-HTTP, GATEWAY-GRPC and
GATEWAY-TLS: its core and extended results, the extended features supported), and the result of
each upstream test of each profile.

    python tests/conformance/report.py            # runs tests/conformance, writes the report
    python tests/conformance/report.py --junit F  # from a run already made (pytest --junitxml F)

A replayed test counts for its upstream ShortName (``test_<ShortName>``); an upstream test not
replayed here is "skipped", as the upstream suite skips what an implementation does not claim,
and so is a replayed test that needs a feature the replay does not claim (``features.UNCLAIMED``).
An extended feature of a profile is supported when it is claimed, at least one replayed test
needing it passed and none failed, in any profile: as upstream reports list the claimed features
in every profile whose feature set has them (the GRPC profile's Gateway features are tested
with HTTPRoutes, in the HTTP profile).
``tests/test_conformance_report.py`` checks that the committed report is the one the replayed
tests give when they pass (CI runs them all: a failure fails CI before the report could lie).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from features import UNCLAIMED

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REPORT = REPO / "docs" / "conformance.md"
PROFILES = ("GATEWAY-HTTP", "GATEWAY-GRPC", "GATEWAY-TLS")


def upstream() -> dict:
    return json.loads((HERE / "upstream.json").read_text())


def replayed() -> list[str]:
    """The ShortNames this directory replays (its test_<ShortName> functions)."""
    names = []
    for path in sorted(HERE.glob("test_conformance_*.py")):
        names += re.findall(r"^def test_(\w+)\(", path.read_text(), re.M)
    return sorted(names)


def outcomes_from_junit(path: Path) -> dict[str, str]:
    """ShortName -> "passed" or "failed" (a parametrized test passes when all its cases do)."""
    out: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        short = re.sub(r"\[.*\]$", "", case.get("name", "")).removeprefix("test_")
        failed = any(child.tag in ("failure", "error") for child in case)
        skipped = any(child.tag == "skipped" for child in case)
        result = "failed" if failed else "skipped" if skipped else "passed"
        if out.get(short) != "failed":
            out[short] = result if out.get(short) in (None, "passed") else out[short]
    return out


def _tests_of(up: dict, profile_name: str) -> tuple[set[str], dict[str, list[str]], dict[str, list[str]]]:
    profile = up["profiles"][profile_name]
    core, extended = set(profile["core"]), set(profile["extended"])
    core_tests, extended_tests = {}, {}
    for name, test in up["tests"].items():
        features = set(test["features"])
        if not features or not features <= core | extended:
            continue                        # another profile's test (TLSRoute, mesh, ...)
        if features <= core:
            core_tests[name] = sorted(features)
        else:
            extended_tests[name] = sorted(features - core)
    return extended, core_tests, extended_tests


def _stats(names, outcomes: dict[str, str]) -> dict[str, int]:
    results = [outcomes.get(n, "skipped") for n in names]
    return {"Failed": results.count("failed"), "Passed": results.count("passed"),
            "Skipped": results.count("skipped")}


def _result(stats: dict[str, int]) -> str:
    return "failure" if stats["Failed"] else "partial" if stats["Skipped"] else "success"


def _verified(up: dict, feature: str, outcomes: dict[str, str]) -> bool:
    """Some replayed test needing ``feature`` passed and none failed (tests skipped for another,
    unclaimed feature aside)."""
    results = [outcomes.get(name, "skipped") for name, test in up["tests"].items()
               if feature in test["features"] and not set(test["features"]) & UNCLAIMED]
    return "passed" in results and "failed" not in results


def _profile(up: dict, name: str, outcomes: dict[str, str]) -> tuple[list[str], list[str]]:
    """One profile: its ConformanceReport entry (YAML lines) and its results (Markdown lines)."""
    extended, core_tests, extended_tests = _tests_of(up, name)
    core_stats, ext_stats = _stats(core_tests, outcomes), _stats(extended_tests, outcomes)
    supported = sorted(f for f in extended - UNCLAIMED if _verified(up, f, outcomes))
    unsupported = sorted(extended - set(supported))
    skipped = sorted(t for t in core_tests if t not in outcomes)
    entry = [
        f"- name: {name}",
        "  core:",
        f"    result: {_result(core_stats)}",
        "    statistics:",
        *[f"      {k}: {v}" for k, v in core_stats.items()],
        *(["    skippedTests:"] + [f"    - {t}" for t in skipped] if skipped else []),
        "  extended:",
        f"    result: {_result(ext_stats)}",
        "    statistics:",
        *[f"      {k}: {v}" for k, v in ext_stats.items()],
        "    supportedFeatures:",
        *[f"    - {f}" for f in supported],
        "    unsupportedFeatures:",
        *[f"    - {f}" for f in unsupported],
    ]
    table = [
        f"## {name}",
        "",
        f"Core: {core_stats['Passed']} of {len(core_tests)} tests pass. Extended: {len(supported)} of "
        f"{len(extended)} features supported, {ext_stats['Passed']} of {len(extended_tests)} tests pass.",
        "",
        "| test | extended features | result |",
        "|---|---|---|",
    ]
    for test in sorted({**core_tests, **extended_tests}):
        feats = ", ".join(extended_tests.get(test, [])) or "(core)"
        table.append(f"| {test} | {feats} | {outcomes.get(test, 'not replayed')} |")
    return entry, table


def render(outcomes: dict[str, str]) -> str:
    up = upstream()
    # A replayed test that needs a feature not claimed is skipped whatever the run says.
    outcomes = {name: "skipped" if set(up["tests"].get(name, {}).get("features", ())) & UNCLAIMED else result
                for name, result in outcomes.items()}
    entries, tables = [], []
    for name in PROFILES:
        entry, table = _profile(up, name, outcomes)
        entries += entry
        tables += ["", *table]
    lines = [
        "# Gateway API conformance",
        "",
        "Generated by `python tests/conformance/report.py` from a run of the replayed tests",
        "(`tests/conformance/`); do not edit. The upstream suite: "
        f"`{up['repository']}` `conformance/` at commit `{up['commit']}`.",
        "",
        "```yaml",
        "apiVersion: gateway.networking.k8s.io/v1",
        "kind: ConformanceReport",
        "implementation:",
        "  project: gateway",
        "mode: default",
        "profiles:",
        *entries,
        "```",
        *tables,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junit", type=Path, help="a pytest --junitxml file of tests/conformance")
    args = parser.parse_args(argv)
    junit = args.junit
    if junit is None:
        junit = Path(tempfile.mkdtemp()) / "conformance.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE),
                        f"--junitxml={junit}"], cwd=str(REPO))
    REPORT.write_text(render(outcomes_from_junit(junit)))
    print(f"wrote {REPORT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
