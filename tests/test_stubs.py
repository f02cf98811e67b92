"""Every compiled module has a ``.pyi`` beside it, and what a stub declares exists in the
module (a stub left behind by a rename or a split fails here, not in a user's editor)."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SPEEDUPS = Path(__file__).resolve().parent.parent / "_speedups"
MODULES = sorted(p.stem for p in SPEEDUPS.glob("*.pyx"))


def declared(stub: Path) -> dict[str, list[str]]:
    """Top-level names of a stub, each with the members its class declares."""
    out: dict[str, list[str]] = {}
    for node in ast.parse(stub.read_text()).body:
        if isinstance(node, ast.ClassDef):
            if any(isinstance(b, ast.Name) and b.id == "Protocol" for b in node.bases):
                continue                    # a typing helper of the stub only
            out[node.name] = [n.name for n in node.body if isinstance(n, ast.FunctionDef)
                              and not n.name.startswith("__")]
        elif isinstance(node, ast.FunctionDef):
            out[node.name] = []
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = []
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("_speedups"):
            out.update({a.asname: [] for a in node.names if a.asname})   # re-exports: "X as X"
    return out


def test_every_compiled_module_has_a_stub_and_the_package_is_typed():
    assert MODULES, "no .pyx found"
    assert [m for m in MODULES if not (SPEEDUPS / f"{m}.pyi").exists()] == []
    assert (SPEEDUPS / "py.typed").exists()


@pytest.mark.parametrize("name", MODULES)
def test_stub_names_exist_in_the_module(name):
    module = importlib.import_module(f"_speedups.{name}")
    for top, members in declared(SPEEDUPS / f"{name}.pyi").items():
        assert hasattr(module, top), f"{name}.pyi declares {top}, the module has none"
        obj = getattr(module, top)
        missing = [m for m in members if not hasattr(obj, m)]
        assert not missing, f"{name}.pyi: {top} has no {missing}"
