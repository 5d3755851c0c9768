"""`pulsegate update start|pause|resume|abort|rollback|info|list|wait|diff`: an update's life
from a job file to its end. `wait` exits 0 when the update rolled forward, 4 when it rolled back,
9 when `--timeout` passed first and 1 on any other end, so scripts can gate on it; `start` exits 8
when the file changes nothing. Verbs take an update's key, or the job's key when the job has an
active update (as Aurora's client does)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from api import render, watch
from api.cli_common import (
    ERROR,
    KEY_HELP,
    NOOP,
    OK,
    ROLLED_BACK,
    UsageError,
    add_command,
    add_json,
    add_message,
    client_from,
    read_job_file,
    resolve,
)
from api.client import PulsegateClient
from api.views import SchedulerInfo
from updater.errors import InvalidRequest, NotFound, PulsegateError
from updater.keys import JobKey, UpdateKey, check_name
from updater.status import ACTIVE, AWAITING_PULSE, PAUSED, TERMINAL, UpdateStatus
from updater.task import TaskConfig

S = UpdateStatus
STATUS_GROUPS: dict[str, frozenset[UpdateStatus]] = {
    "active": ACTIVE,
    "blocked": AWAITING_PULSE,
    "paused": PAUSED,
    "failed": frozenset({S.ERROR, S.FAILED, S.ROLLED_BACK}),
    "succeeded": frozenset({S.ROLLED_FORWARD}),
    "inactive": TERMINAL,
    "all": frozenset(),
}
WAIT_EXIT = {S.ROLLED_FORWARD: OK, S.ROLLED_BACK: ROLLED_BACK}


def register(groups: Any) -> None:
    parser = groups.add_parser("update", help="start, steer and watch updates")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    start = add_command(commands, "start", start_update, "start an update from a job file")
    _job_and_file(start)
    start.add_argument("--wait", action="store_true", help="then wait for the end (as `wait`)")
    start.add_argument(
        "--interval", type=float, default=0.5, metavar="S", help="refresh period with --wait"
    )
    start.add_argument(
        "--create",
        action="store_true",
        help="create the job if it does not exist (else refused: `pulsegate job create` first)",
    )
    add_message(start)
    add_json(start)

    for verb, doc in (
        ("pause", "pause an update (it stays paused until resumed)"),
        ("resume", "resume a paused or operator-blocked update"),
        ("abort", "stop an update where it is (no rollback)"),
        ("rollback", "roll an update back"),
    ):
        cmd = add_command(commands, verb, _steer, doc)
        cmd.add_argument("key", metavar="KEY", help=KEY_HELP)
        add_message(cmd)
        cmd.set_defaults(verb=verb)

    info = add_command(
        commands, "info", update_info, "an update's status, why it waits, instances, audit trail"
    )
    info.add_argument("key", metavar="KEY", help=KEY_HELP + " (else its newest update)")
    add_json(info)

    listing = add_command(commands, "list", list_updates, "updates, newest first")
    listing.add_argument("job", metavar="JOB", nargs="?", help="role, role/env or role/env/name")
    listing.add_argument(
        "--status",
        default="all",
        metavar="GROUP",
        help=f"{', '.join(STATUS_GROUPS)}, or a status name such as ROLLED_FORWARD",
    )
    add_json(listing)

    wait = add_command(commands, "wait", wait_update, "follow an update until it ends")
    wait.add_argument("key", metavar="KEY", help=KEY_HELP + " (else its newest update)")
    wait.add_argument(
        "--interval", type=float, default=0.5, metavar="S", help="refresh period (0.5 s)"
    )
    wait.add_argument(
        "--timeout", type=float, metavar="S", help="give up after S seconds (exit code 9)"
    )
    wait.add_argument("--json", action="store_true", help="one JSON object per line, per change")

    diff = add_command(commands, "diff", update_diff, "what an update from a job file would change")
    _job_and_file(diff)
    add_json(diff)


def _job_and_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", nargs="?", help="role/env/name (or the file's [job])")
    parser.add_argument("config", metavar="CONFIG.toml", type=Path, help="the job file")


def config_changes(old: TaskConfig, new: TaskConfig) -> list[tuple[str, str, str]]:
    """(dotted field, now, new) for every field of the task that differs."""

    def flat(value: Any, prefix: str = "") -> dict[str, str]:
        if not isinstance(value, dict):
            return {prefix: json.dumps(value)}
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else k))
        return out

    a, b = flat(render.task_json(old)), flat(render.task_json(new))
    return [(k, a.get(k, "-"), b.get(k, "-")) for k in sorted(a | b) if a.get(k) != b.get(k)]


def _info(client: PulsegateClient) -> SchedulerInfo | None:
    try:
        return client.info()
    except PulsegateError:
        return None


def _has_job(client: PulsegateClient, job: JobKey) -> bool:
    try:
        client.get_job(job)
    except NotFound:
        return False
    return True


def start_update(args: argparse.Namespace) -> int:
    job, jobfile = read_job_file(args.config, args.job)
    out = render.console()
    with client_from(args) as client:
        if not args.create and not _has_job(client, job):
            raise NotFound(
                f"job {job} does not exist: create it first with "
                f"`pulsegate job create {args.config}`, or pass --create to let this update "
                "create it"
            )
        diff = client.diff(job, jobfile.task, jobfile.instances, settings=jobfile.settings)
        change = render.diff_json(str(job), diff)
        if diff.is_noop:
            return _noop(job, jobfile.instances, change, args.json)
        try:
            key = client.start_update(
                job,
                jobfile.task,
                jobfile.instances,
                settings=jobfile.settings,
                metadata=jobfile.metadata,
                message=args.message,
            )
        except InvalidRequest as e:
            if e.field == "request" and "unchanged" in e.rule:  # changed meanwhile
                return _noop(job, jobfile.instances, change, args.json)
            raise
        info = _info(client)
        url = info.update_url(key) if info is not None else None
        if args.json:  # with --wait, the first line of a JSON-lines stream
            started = {"key": str(key), "job": str(job), "url": url, "change": change}
            render.print_json(started, lines=args.wait)
        else:
            out.print(f"{job}: {render.diff_summary(diff)}", soft_wrap=True, markup=False)
            out.print(str(key), soft_wrap=True, markup=False)
            if url is not None:
                out.print(f"page: {url}", soft_wrap=True, markup=False)
        if not args.wait:
            return OK
        return _wait(client, key, args.interval, args.json, None, info)


def _noop(job: JobKey, instances: int, change: dict[str, Any], json_out: bool) -> int:
    """Nothing to do is not an error: its own exit code (8), so scripts can tell."""
    if json_out:
        render.print_json({"key": None, "job": str(job), "url": None, "change": change})
    else:
        render.console().print(
            f"{job}: no change: it already runs this config on {instances} instance(s); "
            "nothing started",
            soft_wrap=True,
            markup=False,
        )
    return NOOP


def _steer(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        key = resolve(client, args.key)
        getattr(client, args.verb)(key, message=args.message)
        status = client.details(key).status
    render.console().print(f"{key}: {args.verb} requested; now {status.name}", markup=False)
    return OK


def update_info(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        key = resolve(client, args.key, newest_if_none=True)
        details = client.details(key)
        try:
            instances = client.instances(key.job)
        except NotFound:  # the job is gone (killed); the update's record stays
            instances = []
        info = _info(client)
    if args.json:
        data = render.details_json(details)
        data["why"] = render.reason(details)
        data["url"] = info.update_url(key) if info is not None else None
        data["instances"] = [render.instance_json(i) for i in instances]
        data["failures"] = render.failures(details, info)
        render.print_json(data)
    else:
        render.print_details(render.console(), details, instances, info)
    return OK


def status_filter(text: str) -> frozenset[UpdateStatus]:
    """A status group or a single status name (any case)."""
    if text.lower() in STATUS_GROUPS:
        return STATUS_GROUPS[text.lower()]
    try:
        return frozenset({UpdateStatus[text.upper()]})
    except KeyError:
        names = ", ".join(STATUS_GROUPS)
        raise UsageError(f"--status: unknown {text!r}; use {names} or a status name") from None


def job_filter(text: str | None) -> tuple[str, ...]:
    """role, role/env or role/env/name as its parts, each checked."""
    if text is None:
        return ()
    parts = tuple(text.split("/"))
    try:
        if len(parts) > 3:
            raise ValueError
        for part, field in zip(parts, ("role", "environment", "name"), strict=False):
            check_name(part, f"JOB {field}")
    except (ValueError, InvalidRequest):
        raise UsageError(f"JOB: must be role, role/env or role/env/name, got {text!r}") from None
    return parts


def list_updates(args: argparse.Namespace) -> int:
    statuses = status_filter(args.status)
    parts = job_filter(args.job)
    with client_from(args) as client:
        if len(parts) == 3:
            found = client.summaries(job=JobKey(*parts), statuses=statuses)
        else:
            found = client.summaries(role=parts[0] if parts else None, statuses=statuses)
    if len(parts) == 2:  # the query has no environment filter
        found = [s for s in found if s.key.job.environment == parts[1]]
    if args.json:
        render.print_json([render.summary_json(s) for s in found])
    else:
        render.print_summaries(render.console(), found)
    return OK


def _wait(
    client: PulsegateClient,
    key: UpdateKey,
    interval: float,
    json_lines: bool,
    timeout: float | None,
    info: SchedulerInfo | None,
) -> int:
    out = render.console()
    with watch.WaitDisplay(out, json_lines) as display:
        final = client.wait(key, display.show, interval_s=interval, timeout_s=timeout)
    if not json_lines:
        last = final.record.status_events[-1]
        out.print(f"{key}: {final.status.name} {last.message}".rstrip(), markup=False)
        for line in render.failures(final, info):
            out.print(line, soft_wrap=True, markup=False)
    return WAIT_EXIT.get(final.status, ERROR)


def wait_update(args: argparse.Namespace) -> int:
    if args.timeout is not None and args.timeout < 0:
        raise UsageError("--timeout must be >= 0 seconds")
    with client_from(args) as client:
        # A job key names its newest update once none is active: an update can end before the
        # `update wait` started for it gets to ask (a monitor drives it, the machine is busy).
        key = resolve(client, args.key, newest_if_none=True)
        return _wait(client, key, args.interval, args.json, args.timeout, _info(client))


def update_diff(args: argparse.Namespace) -> int:
    job, jobfile = read_job_file(args.config, args.job)
    with client_from(args) as client:
        diff = client.diff(job, jobfile.task, jobfile.instances, settings=jobfile.settings)
    if args.json:
        render.print_json(render.diff_json(str(job), diff))
    else:
        changes = [config_changes(g.config, jobfile.task) for g in diff.update]
        render.print_diff(render.console(), str(job), diff, changes)
    return OK
