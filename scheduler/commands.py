"""What operators and the API can ask of the leader.

`Commands` does the work, on the leader loop's thread, with what its constructor gives it:
storage, the run table, the step applier (so a command changes an update exactly the way the
loop does: persist, commit, re-check, act) and the takeover (to start running a new update).
Its results are return values and errors; follow-up work goes on the agenda.

The module functions are how other threads ask: each submits one command to the loop
(`LeaderLoop.call`) and waits for its answer.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import structlog

from scheduler.agenda import Agenda
from scheduler.applier import StepApplier
from scheduler.clock import Clock
from scheduler.fencing import UnknownOutcome
from scheduler.memory import RunTable
from scheduler.takeover import Takeover
from updater.driver import Driver
from updater.engine import UpdateRun
from updater.errors import Unavailable
from updater.job import Job
from updater.keys import JobKey, UpdateKey
from updater.record import (
    DEFAULT_MAX_INSTANCES,
    REQUEST_ID,
    UpdateRecord,
    UpdateRequest,
    plan_update,
)
from updater.storage import Storage

if TYPE_CHECKING:
    from scheduler.leader import LeaderLoop

log = structlog.get_logger(__name__)
VERBS = frozenset({"pause", "resume", "abort", "rollback"})


class Commands:
    """Runs on the leader loop's thread only."""

    def __init__(
        self,
        store: Storage,
        driver: Driver,
        clock: Clock,
        memory: RunTable,
        agenda: Agenda,
        applier: StepApplier,
        takeover: Takeover,
        max_instances: int = DEFAULT_MAX_INSTANCES,
    ) -> None:
        self.store = store
        self.driver = driver
        self.clock = clock
        self.memory = memory
        self.agenda = agenda
        self.applier = applier
        self.takeover = takeover
        self.max_instances = max_instances

    def start_update(self, request: UpdateRequest, user: str, message: str) -> UpdateKey:
        """Validate against the job, store the update with its job's lock, and run it."""
        earlier = self._same_request(request)
        if earlier is not None:
            return earlier  # a retry of a start that went through: do not start it twice
        now = self.clock.now()
        record, _ = plan_update(
            request,
            self.store.get_job(request.job),
            uuid.uuid4().hex,
            user,
            message,
            now,
            self.max_instances,
        )
        self.start(record)
        return record.key

    def start(self, record: UpdateRecord) -> UpdateRun:
        """Store a planned update with its job's lock, and start running it here."""
        try:
            self.store.start_update(record)
        except UnknownOutcome:
            self.agenda.reload(record.key)  # it may have landed: then it must run
            raise
        run = self.takeover.add_run(UpdateRun(record), since=self.clock.now())
        log.info("update_started", update=str(record.key), user=record.definition.user)
        return run

    def _same_request(self, request: UpdateRequest) -> UpdateKey | None:
        """The update a client already started with this request id, if it tagged one."""
        tag = next(((k, v) for k, v in request.metadata if k == REQUEST_ID), None)
        if tag is None:
            return None
        summaries = self.store.summaries(request.job)
        return next((s.key for s in summaries if tag in s.metadata), None)

    def update(self, key: UpdateKey, verb: str, user: str, message: str) -> None:
        """pause, resume, abort or rollback. A finished update is loaded from storage, so that a
        no-op is a no-op and a forbidden move names the update's final status."""
        if verb not in VERBS:
            raise ValueError(f"unknown command {verb!r}")
        active = self.memory.runs.get(key)
        update = active if active is not None else UpdateRun(self.store.get_update(key))
        now = self.clock.now()
        if verb == "resume":
            step = update.resume(self.memory.pulse, user, message, now)
        else:
            step = getattr(update, verb)(user, message, now)
        if step is not None and active is not None:
            if not self.applier.apply(active, step):  # a command must not look done when not
                raise Unavailable(f"the {verb} of {key} was not recorded; retry")
        elif step is not None:  # active in storage but not in memory yet: reload, retry
            self.agenda.reload(key)
            raise Unavailable("update state changed; retry")

    def create_job(self, job: Job) -> None:
        try:
            self.store.create_job(job)
        except UnknownOutcome:
            self.agenda.resync(job.key)  # it may exist now: its instances must then run
            raise
        self.driver.reconcile(job.key, job.instances())
        log.info("job_created", job=str(job.key), instances=job.instance_count)

    def kill_job(self, key: JobKey, user: str, message: str) -> None:
        try:
            self.store.delete_job(key)
        except UnknownOutcome:
            self.agenda.resync(key)  # it may be gone now: its instances must then stop
            raise
        self.driver.reconcile(key, {})
        log.info("job_killed", job=str(key), user=user, message=message)


# -- from any thread: one command, run on the loop's thread ------------------------------------


def start_update(loop: LeaderLoop, request: UpdateRequest, user: str, message: str) -> UpdateKey:
    return loop.call(lambda: loop.commands.start_update(request, user, message))


def update_command(loop: LeaderLoop, key: UpdateKey, verb: str, user: str, message: str) -> None:
    if verb not in VERBS:
        raise ValueError(f"unknown command {verb!r}")
    loop.call(lambda: loop.commands.update(key, verb, user, message))


def create_job(loop: LeaderLoop, job: Job) -> None:
    loop.call(lambda: loop.commands.create_job(job))


def kill_job(loop: LeaderLoop, key: JobKey, user: str, message: str) -> None:
    loop.call(lambda: loop.commands.kill_job(key, user, message))
