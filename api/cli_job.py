"""`pulsegate job create|list|status|kill`: a job's desired state and what its instances are doing.
Changing a running job's config is an update (`pulsegate update start`), never a re-create."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from api import render
from api.cli_common import (
    OK,
    add_command,
    add_json,
    add_message,
    client_from,
    parse_job,
    read_job_file,
)
from updater.errors import NotFound, PulsegateError
from updater.status import ACTIVE


def register(groups: Any) -> None:
    parser = groups.add_parser("job", help="create, inspect and kill jobs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    create = add_command(commands, "create", create_job, "create a job from a job file")
    create.add_argument("job", metavar="JOB", nargs="?", help="role/env/name (or the file's [job])")
    create.add_argument("config", metavar="CONFIG.toml", type=Path, help="the job file")

    listing = add_command(commands, "list", list_jobs, "jobs, with instances and active update")
    listing.add_argument("role", metavar="ROLE", nargs="?", help="only this role's jobs")
    add_json(listing)

    status = add_command(commands, "status", job_status, "desired configs and instance states")
    status.add_argument("job", metavar="JOB", help="role/env/name")
    add_json(status)

    kill = add_command(commands, "kill", kill_job, "stop every instance and delete the job")
    kill.add_argument("job", metavar="JOB", help="role/env/name")
    add_message(kill)


def create_job(args: argparse.Namespace) -> int:
    """Uses the file's [job].instances and [task]; its [update] table applies to updates only."""
    job, jobfile = read_job_file(args.config, args.job)
    with client_from(args) as client:
        client.create_job(job, jobfile.task, jobfile.instances)
    render.console().print(f"created {job} with {jobfile.instances} instance(s)", markup=False)
    return OK


def list_jobs(args: argparse.Namespace) -> int:
    """Each job with its instance count and its active update, if any (one read per job)."""
    with client_from(args) as client:
        rows = []
        for key in sorted(client.list_jobs(args.role or ""), key=str):
            try:
                job = client.get_job(key)
            except NotFound:  # killed between the listing and now
                continue
            active = client.summaries(job=key, statuses=ACTIVE)
            rows.append(render.job_row_json(job, active[0] if active else None))
    if args.json:
        render.print_json(rows)
    else:
        render.print_jobs(render.console(), rows)
    return OK


def job_status(args: argparse.Namespace) -> int:
    job_key = parse_job(args.job)
    with client_from(args) as client:
        job = client.get_job(job_key)
        instances = client.instances(job_key)
        active = client.summaries(job=job_key, statuses=ACTIVE)
        try:
            info = client.info()
        except PulsegateError:
            info = None
    if args.json:
        render.print_json(render.job_status_json(job, instances, active, info))
    else:
        render.print_job_status(render.console(), job, instances, active, info)
    return OK


def kill_job(args: argparse.Namespace) -> int:
    job_key = parse_job(args.job)
    with client_from(args) as client:
        client.kill_job(job_key, message=args.message)
    render.console().print(f"killed {job_key}", markup=False)
    return OK
