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

from api.client import PulsegateClient, Unreachable, WaitTimeout, address_problem
from api.jobfile import JobFile, file_key, job_file_key, load_job_file
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
from updater.status import ACTIVE

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
NOOP = 8  # `update start`: the job already runs this config, so nothing was started
WAIT_TIMEOUT = 9  # `update wait --timeout S`: the update was still active after S seconds
EXIT_CODES = """exit codes: 0 ok; 1 error or other outcome; 2 usage; 3 bad job file;
4 rolled back; 5 not found; 6 auth; 7 scheduler unavailable after retries;
8 no change (update start: nothing to do); 9 still active after update wait --timeout"""
START_HINT = "start one with `pulsegate scheduler run` (docs/quickstart.md)"

Handler = Callable[[argparse.Namespace], int]
KEY_HELP = "role/env/name/id, or role/env/name for the job's active update"


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
        "--call-timeout",
        type=float,
        metavar="S",
        default=default,
        help="per-call timeout (10 s)",
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


def check_schedulers(text: str, source: str) -> str:
    """`text` if every comma-separated part is HOST:PORT, else a usage error naming `source`
    (the flag or the environment variable) and the expected form."""
    for part in text.split(","):
        problem = address_problem(part.strip())
        if problem is not None:
            raise UsageError(
                f"{source} {part.strip()!r} {problem}: expected HOST:PORT[,HOST:PORT...], "
                f"e.g. {DEFAULT_SCHEDULER}"
            )
    return text


def print_retry(where: str, attempt: int, planned: int, why: str) -> None:
    print(f"pulsegate: retrying {where} ({attempt}/{planned}): {why}", file=sys.stderr, flush=True)


def client_from(args: argparse.Namespace, **overrides: Any) -> PulsegateClient:
    """A client configured by the global options, then the environment, then the defaults.
    Every retry is announced on stderr, so waiting for a scheduler is never silent."""
    zk = getattr(args, "zk", None)
    hosts = getattr(args, "scheduler", None)
    if hosts:
        check_schedulers(hosts, "--scheduler")
    elif os.environ.get("PULSEGATE_SCHEDULER"):
        hosts = check_schedulers(os.environ["PULSEGATE_SCHEDULER"], "PULSEGATE_SCHEDULER")
    if not hosts and not zk:
        hosts = DEFAULT_SCHEDULER
    options: dict[str, Any] = {
        "zookeeper": zk,
        "zk_root": getattr(args, "zk_root", None) or "/pulsegate",
        "token": getattr(args, "token", None) or os.environ.get("PULSEGATE_TOKEN"),
        "timeout_s": getattr(args, "call_timeout", None) or 10.0,
        "on_retry": print_retry,
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


def resolve(client: PulsegateClient, text: str, newest_if_none: bool = False) -> UpdateKey:
    """An update's key from KEY: the key itself, or a job key naming the job's one active
    update (with `newest_if_none`, else its newest update)."""
    parts = text.split("/")
    if len(parts) != 3:
        if len(parts) != 4:
            raise UsageError(f"KEY: must be {KEY_HELP}, got {text!r}")
        return parse_key(text)
    job = parse_job(text)
    active = client.summaries(job=job, statuses=ACTIVE)
    if len(active) == 1:
        return active[0].key
    if len(active) > 1:  # the server allows one; an older store might not
        keys = ", ".join(str(s.key) for s in active)
        raise UsageError(f"{job} has {len(active)} active updates ({keys}); give one's key")
    if newest_if_none:
        found = client.summaries(job=job, limit=1)
        if found:
            return found[0].key
        raise NotFound(f"{job} has no updates; start one with `pulsegate update start FILE`")
    raise NotFound(
        f"{job} has no active update; give an update's key (role/env/name/id): "
        f"`pulsegate update list {job}` lists them"
    )


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
        (WaitTimeout, WAIT_TIMEOUT),
    ):
        if isinstance(error, kind):
            return code
    return ERROR


def describe(error: PulsegateError, job_file: Path | None = None) -> str:
    """The error in the user's words (job-file keys, not API fields), ending with the fix."""
    if isinstance(error, UpdateConflict | JobUpdating):
        return (
            f"{error.message} (active update: {error.active}); wait for it "
            f"(`pulsegate update wait {error.active}`) or abort it (`pulsegate update abort ...`)"
        )
    if isinstance(error, Unreachable):
        return (
            f"{error.message}; is a scheduler running there? {START_HINT}, "
            "or point --scheduler (or PULSEGATE_SCHEDULER) at one"
        )
    if isinstance(error, AuthError) and error.message.startswith("no token"):
        return f"{error.message}; pass --token TOKEN or set PULSEGATE_TOKEN"
    if isinstance(error, WaitTimeout):
        return f"{error.message}; wait longer (--timeout S) or look: `pulsegate update info KEY`"
    if isinstance(error, NotFound) and "`" not in error.message:
        listing = "job list" if error.message.startswith("job ") else "update list"
        return f"{error.message}; `pulsegate {listing}` shows what there is"
    if isinstance(error, InvalidRequest):
        if error.field == "key":  # a move the update's status forbids
            return f"{error.rule}; `pulsegate update info KEY` shows where it stands"
        if error.field == "config.key":  # createJob: the job exists
            return (
                f"{error.rule}; change it with `pulsegate update start FILE`, "
                "or remove it with `pulsegate job kill JOB`"
            )
        key = file_key(error.field)
        if key is not None:
            where = f" in {job_file}" if job_file is not None else " in the job file"
            return f"{key}: {error.rule}; fix {key}{where} (docs/jobfile.md lists every key)"
    return error.message


def run_command(fn: Handler) -> Handler:
    """Wrap a command: expected errors become `pulsegate: <message>` on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except PulsegateError as e:
            job_file = getattr(args, "config", None)
            print(f"pulsegate: {describe(e, job_file)}", file=sys.stderr)
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
