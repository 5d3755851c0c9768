"""What operators and the API can ask of the leader. Each command runs on the leader loop's
thread (through `LeaderLoop.call`), so it never races the engine, and changes updates only the
way the loop does: persist, commit, then act."""

from __future__ import annotations

import uuid

import structlog

from scheduler.fencing import UnknownOutcome
from scheduler.leader import LeaderLoop
from updater.engine import UpdateRun
from updater.errors import Unavailable
from updater.job import Job
from updater.keys import JobKey, UpdateKey
from updater.record import REQUEST_ID, UpdateRequest, plan_update

log = structlog.get_logger(__name__)
VERBS = frozenset({"pause", "resume", "abort", "rollback"})


def start_update(loop: LeaderLoop, request: UpdateRequest, user: str, message: str) -> UpdateKey:
    """Validate against the job, store the update with its job's lock, and start running it."""

    def run() -> UpdateKey:
        earlier = _same_request(loop, request)
        if earlier is not None:
            return earlier  # a retry of a start that went through: do not start it twice
        now = loop.clock.now()
        record, _ = plan_update(
            request,
            loop.store.get_job(request.job),
            uuid.uuid4().hex,
            user,
            message,
            now,
            loop.max_instances,
        )
        try:
            loop.store.start_update(record)
        except UnknownOutcome:
            loop.request_reload(record.key)  # it may have landed: then it must run
            raise
        loop.adopt(record, since=now)
        log.info("update_started", update=str(record.key), user=user)
        return record.key

    return loop.call(run)


def _same_request(loop: LeaderLoop, request: UpdateRequest) -> UpdateKey | None:
    """The update a client already started with this request id, if it tagged one."""
    tag = next(((k, v) for k, v in request.metadata if k == REQUEST_ID), None)
    if tag is None:
        return None
    return next((s.key for s in loop.store.summaries(request.job) if tag in s.metadata), None)


def update_command(loop: LeaderLoop, key: UpdateKey, verb: str, user: str, message: str) -> None:
    """pause, resume, abort or rollback. A finished update is loaded from storage, so that a
    no-op is a no-op and a forbidden move names the update's final status."""
    if verb not in VERBS:
        raise ValueError(f"unknown command {verb!r}")

    def run() -> None:
        active = loop.runs.get(key)
        update = active if active is not None else UpdateRun(loop.store.get_update(key))
        now = loop.clock.now()
        if verb == "resume":
            step = update.resume(loop.pulse, user, message, now)
        else:
            step = getattr(update, verb)(user, message, now)
        if step is not None and active is not None:
            if not loop.apply(active, step):  # a command must not look done when it is not
                raise Unavailable(f"the {verb} of {key} was not recorded; retry")
        elif step is not None:  # active in storage but not in memory yet: reload, retry
            loop.request_reload(key)
            raise Unavailable("update state changed; retry")

    loop.call(run)


def create_job(loop: LeaderLoop, job: Job) -> None:
    def run() -> None:
        try:
            loop.store.create_job(job)
        except UnknownOutcome:
            loop.request_resync(job.key)  # it may exist now: its instances must then run
            raise
        loop.driver.reconcile(job.key, job.instances())
        log.info("job_created", job=str(job.key), instances=job.instance_count)

    loop.call(run)


def kill_job(loop: LeaderLoop, key: JobKey, user: str, message: str) -> None:
    def run() -> None:
        try:
            loop.store.delete_job(key)
        except UnknownOutcome:
            loop.request_resync(key)  # it may be gone now: its instances must then stop
            raise
        loop.driver.reconcile(key, {})
        log.info("job_killed", job=str(key), user=user, message=message)

    loop.call(run)
