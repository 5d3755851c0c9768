"""Plumbing shared by every CLI command: the global options, the client they configure, argument
parsing that fails as usage errors, and `run_command`, which turns expected errors into one line
on stderr and a documented exit code (never a traceback)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.client import PulsegateClient
from api.jobfile import JobFile, job_file_key, load_job_file
from scheduler.tomlfile import TomlError
from updater.errors import (
    AuthError,
    InvalidRequest,
    JobUpdating,
    NotFound,
    PulsegateError,
    Unavailable,
    UpdateConflict,
)
from updater.keys import JobKey, UpdateKey

DEFAULT_SCHEDULER = "127.0.0.1:7070"

# Exit codes (documented in `pulsegate --help`).
OK = 0
ERROR = 1  # an error, or an outcome other than success (e.g. an update that FAILED)
USAGE = 2
BAD_FILE = 3
ROLLED_BACK = 4
NOT_FOUND = 5
AUTH = 6
UNAVAILABLE = 7
EXIT_CODES = """exit codes: 0 ok; 1 error or other outcome; 2 usage; 3 bad job file;
4 rolled back; 5 not found; 6 auth; 7 scheduler unavailable after retries"""

Handler = Callable[[argparse.Namespace], int]


class UsageError(PulsegateError):
    """The command line itself is wrong (a malformed key, a JOB that contradicts the file)."""

    reason = "usage"


def add_global_options(parser: argparse.ArgumentParser, suppress: bool = True) -> None:
    """Options every command takes. With `suppress`, an option left out does not overwrite the
    same option given before the command name (`pulsegate --scheduler X update list`)."""
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--scheduler",
        metavar="HOST:PORT[,...]",
        default=default,
        help=f"schedulers to talk to (env PULSEGATE_SCHEDULER, default {DEFAULT_SCHEDULER})",
    )
    group.add_argument("--zk", metavar="HOSTS", default=default, help="find the leader in ZK")
    group.add_argument("--zk-root", default=default, help="root znode (default /pulsegate)")
    group.add_argument("--token", default=default, help="API token (env PULSEGATE_TOKEN)")
    group.add_argument(
        "--timeout", type=float, metavar="S", default=default, help="per-call timeout (10 s)"
    )
    group.add_argument(
        "--retry-for",
        type=float,
        metavar="S",
        default=default,
        help="keep retrying an unavailable scheduler this long (30 s)",
    )


def common_options() -> argparse.ArgumentParser:
    """A parent parser carrying the global options, for `add_parser(..., parents=[...])`."""
    parent = argparse.ArgumentParser(add_help=False)
    add_global_options(parent)
    return parent


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def add_message(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--message", default="", help="why (kept in the audit trail)")


def client_from(args: argparse.Namespace, **overrides: Any) -> PulsegateClient:
    """A client configured by the global options, then the environment, then the defaults."""
    zk = getattr(args, "zk", None)
    hosts = getattr(args, "scheduler", None) or os.environ.get("PULSEGATE_SCHEDULER")
    if not hosts and not zk:
        hosts = DEFAULT_SCHEDULER
    options: dict[str, Any] = {
        "zookeeper": zk,
        "zk_root": getattr(args, "zk_root", None) or "/pulsegate",
        "token": getattr(args, "token", None) or os.environ.get("PULSEGATE_TOKEN"),
        "timeout_s": getattr(args, "timeout", None) or 10.0,
    }
    retry_for = getattr(args, "retry_for", None)
    if retry_for is not None:
        options["retry_for_s"] = retry_for
    options.update(overrides)
    return PulsegateClient(hosts or None, **options)


def parse_job(text: str) -> JobKey:
    try:
        return JobKey.parse(text, "JOB")
    except InvalidRequest as e:
        raise UsageError(e.message) from None


def parse_key(text: str) -> UpdateKey:
    try:
        return UpdateKey.parse(text, "KEY")
    except InvalidRequest as e:
        raise UsageError(e.message) from None


def read_job_file(path: Path, job_arg: str | None) -> tuple[JobKey, JobFile]:
    """The job file (TomlError, exit 3, if bad) and the job it applies to (usage error if the
    JOB argument and the file disagree or neither names one)."""
    jobfile = load_job_file(path)
    try:
        return job_file_key(jobfile, job_arg), jobfile
    except InvalidRequest as e:
        raise UsageError(e.message) from None


def exit_code(error: PulsegateError) -> int:
    """The documented exit code for an expected error."""
    for kind, code in (
        (TomlError, BAD_FILE),
        (UsageError, USAGE),
        (NotFound, NOT_FOUND),
        (AuthError, AUTH),
        (Unavailable, UNAVAILABLE),
    ):
        if isinstance(error, kind):
            return code
    return ERROR


def describe(error: PulsegateError) -> str:
    if isinstance(error, UpdateConflict | JobUpdating):
        return f"{error.message} (active update: {error.active})"
    return error.message


def run_command(fn: Handler) -> Handler:
    """Wrap a command: expected errors become `pulsegate: <message>` on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except PulsegateError as e:
            print(f"pulsegate: {describe(e)}", file=sys.stderr)
            return exit_code(e)
        except BrokenPipeError:  # `pulsegate update list | head`
            return OK

    return wrapper


def add_command(
    commands: Any, name: str, fn: Handler, help: str, **kwargs: Any
) -> argparse.ArgumentParser:
    """A subcommand with the global options, dispatching to `fn` through `run_command`."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help,
        description=help,
        parents=[common_options()],
        epilog=EXIT_CODES,
        **kwargs,
    )
    parser.set_defaults(handler=run_command(fn))
    return parser
