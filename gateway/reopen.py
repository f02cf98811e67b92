"""``gateway logs --reopen``: make a running gateway reopen its access log file.

For logrotate's ``postrotate`` (or any rotation that moves the file away): the gateway
keeps writing to the moved file until told, then opens the path again; no line is lost
or written twice.  Two ways to tell it:

* ``--pid PID`` or ``--pid-file FILE`` (``gateway run --pid-file FILE`` writes one):
  send SIGUSR1 to the main process, which forwards the reopen to each worker.  Needs
  no admin API, and works from the same machine (or container) only.
* otherwise POST /logs/reopen on ``--admin`` (write token in GATEWAY_ADMIN_TOKEN).
"""
from __future__ import annotations

import os
import signal
import sys


def _pid(args) -> int | None:
    if args.pid is not None:
        return args.pid
    if args.pid_file is None:
        return None
    try:
        with open(args.pid_file, encoding="ascii") as f:
            text = f.read().strip()
    except OSError as exc:
        raise ValueError(f"--pid-file: cannot read {args.pid_file}: {exc.strerror or exc}") from None
    if not text.isdigit():
        raise ValueError(f"--pid-file: {args.pid_file} holds no process id: {text[:40]!r}")
    return int(text)


def main(args) -> int:
    try:
        pid = _pid(args)
    except ValueError as err:
        print(f"gateway logs --reopen: {err}", file=sys.stderr)
        return 1
    if pid is not None:
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            print(f"gateway logs --reopen: no process {pid}", file=sys.stderr)
            return 2
        except PermissionError:
            print(f"gateway logs --reopen: not allowed to signal process {pid}", file=sys.stderr)
            return 2
        print(f"sent SIGUSR1 to {pid}: the access log is reopened")
        return 0
    from gateway.admin.cli import AdminError, Unreachable, call
    try:
        answer = call(args.admin, "POST", "/logs/reopen")
    except AdminError as err:
        print(f"gateway logs --reopen: refused ({err.status}): {err}", file=sys.stderr)
        return 1
    except Unreachable as err:
        print(f"gateway logs --reopen: {err}", file=sys.stderr)
        return 2
    print(f"the access log is reopened: {answer.get('path')}")
    return 0
