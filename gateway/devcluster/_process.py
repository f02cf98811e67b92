"""Child processes of the local cluster: start one, wait for its ready line, stop it by pid.

Every devcluster server (API server, backend pod) runs as ``python -m gateway.devcluster.<x>``
and prints exactly one line starting with ``READY`` on stdout once its socket listens. Tests
need real processes because they kill them with SIGKILL and freeze them with SIGSTOP.

Also the two port helpers of everything that starts a gateway on this machine (``gateway demo``,
the tests through ``tests/support``, the benchmarks): ``free_port`` and ``wait_listening``.
They are defined here, in the shipped package, because the demo uses them; the tests and the
benchmarks import them from here (the shipped package never imports ``tests/``).
"""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

READY_PREFIX = "READY "

# The checkout (or site-packages) that holds the ``gateway`` package: children must import the
# same code as their parent even when it is not installed.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1", *also: str) -> int:
    """A TCP port that was free a moment ago on ``host`` and on each of ``also`` (nothing
    listens on it now), never the same one twice in this process (so that ports taken before
    anything binds them cannot collide)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port in _handed_out:
            continue
        try:
            for other in also:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind((other, port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port on {(host, *also)}")


def wait_listening(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Until something accepts connections on ``host:port``; RuntimeError at once if ``proc``
    exits first, TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


class ChildFailed(RuntimeError):
    """A child exited or stayed silent before printing its ready line."""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(module: str, args: list[str], timeout: float = 15.0,
          prefix: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """Start ``python -m module *args`` and return it with its ready line (prefix stripped).
    ``prefix``: a command that execs it, such as ``ip netns exec NS`` (the pid stays the child's).

    The child gets ``--parent-pid`` so it exits by itself if we die without stopping it
    (a killed pytest must not leave servers holding ports).
    """
    argv = [*prefix, sys.executable, "-m", module, *args, "--parent-pid", str(os.getpid())]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=child_env(), bufsize=0)
    try:
        return proc, _read_ready_line(proc, timeout)
    except BaseException:
        stop(proc, timeout=2.0)
        raise


def _read_ready_line(proc: subprocess.Popen, timeout: float) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ChildFailed(f"{proc.args[proc.args.index('-m') + 1]} (pid {proc.pid}) not ready after {timeout}s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 4096)
            if not chunk:
                code = proc.wait(timeout=5)
                raise ChildFailed(f"{proc.args[proc.args.index('-m') + 1]} (pid {proc.pid}) exited with {code} before ready")
            data += chunk
    line = data.split(b"\n", 1)[0].decode()
    if not line.startswith(READY_PREFIX):
        raise ChildFailed(f"{proc.args[proc.args.index('-m') + 1]}: unexpected first line {line!r}")
    return line[len(READY_PREFIX):]


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; works on a SIGSTOPped child too."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)    # a stopped process only sees SIGTERM once resumed
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def watch_parent(loop, parent_pid: int | None, on_orphaned, interval: float = 1.0) -> None:
    """In a child: call ``on_orphaned()`` once ``parent_pid`` is no longer our parent (it died)."""
    if not parent_pid:
        return

    def check() -> None:
        if os.getppid() != parent_pid:
            on_orphaned()
        else:
            loop.call_later(interval, check)

    loop.call_later(interval, check)


def stop_requested(loop, parent_pid: int | None):
    """In a child: an asyncio.Event set on SIGTERM or SIGINT, or once ``parent_pid`` is gone."""
    import asyncio

    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    watch_parent(loop, parent_pid, done.set)
    return done


def announce(line: str) -> None:
    """Print the ready line the parent waits for."""
    sys.stdout.write(READY_PREFIX + line + "\n")
    sys.stdout.flush()
