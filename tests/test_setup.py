"""scripts/setup.sh on a copy of this checkout whose hot path no longer compiles: the script
must fail, and must not write the build stamp (which says "this tree's build is current").

The copy holds the .so files of the last good build and a virtualenv that sees this
checkout's installed dependencies (a .pth line), as a machine that ran setup.sh before
would: the old script ended its pip lines in `|| true`, so there the import check passed
on the stale .so files and the stamp was written.  The broken module stops pip while it
reads the project's metadata (setup.py cythonizes there), so no C compile runs: ~8 s.
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from support import REPO

pytestmark = pytest.mark.timeout(300)


def tracked_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    for so in (REPO / "_speedups").glob("*.so"):      # the last good build, now stale
        shutil.copy2(so, dest / "_speedups" / so.name)


def outside_env() -> dict:
    """This environment without the test run's virtualenv on PATH (setup.sh uses python3)."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


def test_a_broken_build_fails_setup_and_leaves_the_stamp(tmp_path):
    if shutil.which("python3") is None or not list((REPO / "_speedups").glob("*.so")):
        pytest.skip("needs python3 on PATH and a built checkout")
    copy = tmp_path / "checkout"
    tracked_copy(copy)
    subprocess.run(["python3", "-m", "venv", str(copy / ".venv")], check=True, timeout=120)
    venv_python = copy / ".venv" / "bin" / "python"
    purelib = subprocess.run([str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # This checkout's dependencies (not its editable gateway: a plain path line runs no
    # .pth hooks of that directory), as a previous successful setup.sh would have left them.
    ours = sysconfig.get_paths()["purelib"] if sys.prefix != sys.base_prefix else site.getsitepackages()[0]
    Path(purelib, "deps-of-the-checkout.pth").write_text(ours + "\n")
    stamp = copy / ".venv" / ".gateway-build"
    stamp.write_text("a previous build\n")

    pyx = copy / "_speedups" / "router.pyx"
    pyx.write_text(pyx.read_text() + "\ncdef int broken(:\n")
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=copy, capture_output=True, text=True,
                            timeout=280, env=outside_env())
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "setup: failed" in output and "router.pyx" in output, output
    assert stamp.read_text() == "a previous build\n", "the stamp was rewritten for a build that failed"
