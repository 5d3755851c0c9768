"""`pulsegate`: the command line. Each group of commands lives in its own module; this one only
builds the parser and dispatches."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from api import cli_heartbeat, cli_job, cli_scheduler, cli_update, demo
from api.cli_common import EXIT_CODES, add_global_options
from scheduler.version import VERSION


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulsegate",
        description="Heartbeat-gated rolling updates.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"pulsegate {VERSION}")
    add_global_options(parser)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    cli_scheduler.register(groups)
    cli_job.register(groups)
    cli_update.register(groups)
    cli_heartbeat.register(groups)
    demo.register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
