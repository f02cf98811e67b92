"""The ``gateway`` command.

Exit codes: 0 success; 1 invalid config (every problem printed with its key
path); 2 cannot start (port in use, missing build); 3 the demo saw failed requests.
"""
from __future__ import annotations

import argparse
import os
import sys

from gateway import __version__


def _cmd_validate(args) -> int:
    from gateway.config import ConfigError, load_config
    try:
        config = load_config(args.config)
    except ConfigError as err:
        for line in err.errors:
            print(f"{args.config}: {line}", file=sys.stderr)
        print(f"{args.config}: {len(err.errors)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.config}: ok ({len(config.sources)} sources, {len(config.services)} services, "
          f"{len(config.routes)} routes)")
    return 0


def _cmd_run(args) -> int:
    import signal
    # Until the event loop takes SIGHUP over (after the config is read), a reload
    # request must not kill the process, which is the default action.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from gateway.config import ConfigError, load_config
    from gateway.logs import setup_logging
    try:
        config = load_config(args.config)
    except ConfigError as err:
        for line in err.errors:
            print(f"{args.config}: {line}", file=sys.stderr)
        print("gateway: not started: the config is invalid", file=sys.stderr)
        return 1
    setup_logging(args.log_level, json=not args.plain_logs)
    import uvloop

    from gateway.app import serve
    if args.pid_file:       # for `gateway logs --reopen --pid-file` (logrotate) and init scripts
        with open(args.pid_file, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
    try:
        return uvloop.run(serve(config, args.log_level))
    finally:
        if args.pid_file:
            try:
                os.unlink(args.pid_file)
            except OSError:
                pass


def _cmd_version(args) -> int:
    print(f"gateway {__version__}")
    return 0


def _cmd_demo(args) -> int:
    from gateway.demo import main as demo_main
    return demo_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Multi-cluster HTTP gateway for Kubernetes")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the gateway")
    p.add_argument("--config", "-c", required=True, help="YAML config file")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--plain-logs", action="store_true", help="human-readable logs instead of JSON")
    p.add_argument("--pid-file", help="write the main process id here (removed at exit)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("validate", help="check a config file and print every problem")
    p.add_argument("--config", "-c", required=True)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=_cmd_version)

    try:
        from gateway.demo import add_arguments as demo_arguments
    except ImportError:
        demo_arguments = None
    if demo_arguments is not None:
        p = sub.add_parser("demo", help="two local clusters, the gateway and a request loop")
        demo_arguments(p)
        p.set_defaults(func=_cmd_demo)

    from gateway.admin import cli as admin_cli
    admin_cli.add_commands(sub)     # status, sources, services, routes, explain, source/service/route

    from gateway import logcenter
    p = sub.add_parser("logs", help="filter and summarize the access log (counts, shares, latency)")
    logcenter.add_arguments(p)
    p.set_defaults(func=logcenter.main)

    try:
        from gateway.devcluster import cli as devcluster_cli
    except ImportError:
        devcluster_cli = None
    if devcluster_cli is not None:
        p = sub.add_parser("devcluster", help="a local Kubernetes API server with backends")
        devcluster_cli.add_arguments(p)
        p.set_defaults(func=devcluster_cli.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
