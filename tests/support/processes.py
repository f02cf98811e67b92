"""Processes, read from /proc and stopped by pid.

* ``stop_process(proc)``: SIGTERM, SIGKILL after a timeout, always reaped.
* ``children(pid)``, ``descendants(pid)``, ``process_tree(pid)``: a supervisor's workers, a
  benchmarked proxy's whole tree (from the parent pids in /proc/<pid>/stat).
* ``pid_alive(pid)``, ``process_state(pid)``: gone or a zombie; stopped (T) by SIGSTOP.
* ``cpu_ticks(pids)``: utime+stime of each process (the benchmarks' CPU per request or change).
* ``fd_targets(pid)``: what its open file descriptors point at (files, ``socket:[inode]``).
"""
from __future__ import annotations

import os
import signal
import subprocess

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process by its pid, SIGKILL it after ``timeout``; always reaped."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: [0] is the state (field 3 of
    proc(5)), [1] the parent's pid, [11] and [12] utime and stime."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def children_map() -> dict[int, list[int]]:
    """Parent pid -> pids of its living children, for every process now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat_fields(int(entry))[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    return children


def children(pid: int) -> list[int]:
    """Pids of the living children of ``pid``."""
    return children_map().get(pid, [])


def descendants(pid: int) -> list[int]:
    """Pids of the living descendants of ``pid``."""
    tree = children_map()
    out, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (nginx master + workers, a supervisor + workers, ...)."""
    return [pid, *descendants(pid)]


def process_state(pid: int) -> str:
    """The one-letter state of a process (R, S, T for stopped, Z...)."""
    return _stat_fields(pid)[0]


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return process_state(pid) != "Z"
    except FileNotFoundError:
        return False


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime+stime (clock ticks of ``CLK_TCK`` per second, all threads) of each live pid."""
    out = {}
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        out[pid] = int(fields[11]) + int(fields[12])      # fields 14 and 15 of proc(5)
    return out


def fd_targets(pid: int) -> list[str]:
    """Where the open file descriptors of ``pid`` point (paths, ``socket:[inode]``, ...);
    empty when the process is gone."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except FileNotFoundError:
        return []
    out = []
    for fd in fds:
        try:
            out.append(os.readlink(f"{fd_dir}/{fd}"))
        except OSError:
            continue
    return out
