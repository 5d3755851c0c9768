"""The one way an update changes: persist the step (a fenced write), commit it to memory, check
the gate again, then act through the driver (STYLE: one implementation of each effectful
sequence). The leader loop, the operator commands and the tests all go through `StepApplier`.

A step whose write fails is dropped; a write whose outcome is unknown asks for the update to be
reloaded from storage, so memory never runs ahead of storage and no event is written twice. The
gate is checked twice: before the write (the lease may have ended since planning: plan again)
and after the commit (still the acting leader, and the heartbeat still fresh at that moment).
Runs on the leader loop's thread only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from scheduler.agenda import RETRY_MS, Agenda
from scheduler.clock import Clock
from scheduler.fencing import NotLeader, UnknownOutcome
from scheduler.memory import RunTable
from scheduler.metrics import Metrics
from scheduler.takeover import ParkedInstances
from updater.driver import Driver
from updater.engine import Step, UpdateRun
from updater.errors import PulsegateError, StaleWrite, Unavailable
from updater.events import InstanceEvent, StatusEvent
from updater.storage import Storage, UpdateWrite

log = structlog.get_logger(__name__)


class StepApplier:
    def __init__(
        self,
        store: Storage,
        driver: Driver,
        clock: Clock,
        metrics: Metrics,
        memory: RunTable,
        agenda: Agenda,
        parked: ParkedInstances,
        is_acting: Callable[[], bool],
    ) -> None:
        self.store = store
        self.driver = driver
        self.clock = clock
        self.metrics = metrics
        self.memory = memory
        self.agenda = agenda
        self.parked = parked
        self.is_acting = is_acting

    def apply(self, run: UpdateRun, step: Step) -> bool:
        """Persist, commit, re-check, act. False when nothing was persisted (not the leader,
        storage down, outcome unknown, or the lease ended since the step was planned)."""
        key = run.key
        if step.actions or step.has_writes:
            if step.actions and not self.is_fresh(run):
                self.agenda.mark(key)  # the lease ended since planning: plan again
                return False
            write = UpdateWrite.make(
                key,
                len(run.status_events),
                step.transition,
                step.instance_events,
                step.desired_changes(),
                expected_instance_events=run.instance_event_count,
            )
            if not self._write(run, write):
                return False
        run.commit(step)
        self._count(run, step.transition, step.instance_events)
        # The last gate before acting: still the leader, and the heartbeat still fresh now.
        if step.actions and self.is_acting() and self.is_fresh(run):
            self.parked.release(key.job)
            self.driver.apply(key.job, step.actions)
            for action in step.actions:
                self.metrics.driver_action(action.kind.value)
        if step.wake_at_ms is not None:
            self.agenda.schedule(step.wake_at_ms, key)
        if run.status.is_terminal:
            self.finish(run)
        elif step.has_writes:
            self.agenda.mark(key)
        return True

    def is_fresh(self, run: UpdateRun) -> bool:
        """The heartbeat gate (DESIGN §3 rule 2); an uncoordinated update is always open."""
        return not run.is_coordinated or self.memory.pulse.is_fresh(run.key, self.clock.now())

    def error(self, run: UpdateRun, message: str) -> None:
        """End an update in ERROR (the scheduler cannot run it), if that can be recorded."""
        step = run.error(message, self.clock.now())
        if step is None:
            return
        try:
            self.store.write(UpdateWrite.make(run.key, len(run.status_events), step.transition))
        except PulsegateError as e:
            log.error("update_error_not_recorded", update=str(run.key), why=e.message)
            return
        run.commit(step)
        self._count(run, step.transition, ())
        self.finish(run)

    def finish(self, run: UpdateRun) -> None:
        """The update ended: let its parked instances go and forget it."""
        self.parked.release(run.key.job)
        self.memory.finish(run.key, run.status)
        self.metrics.updates_active.set(len(self.memory))
        log.info("update_finished", update=str(run.key), status=run.status.name)

    def _write(self, run: UpdateRun, write: UpdateWrite) -> bool:
        started = time.perf_counter()
        try:
            self.store.write(write)
        except NotLeader:
            self.metrics.storage_write("not_leader")
            return False
        except (UnknownOutcome, StaleWrite) as e:
            self.metrics.storage_write("stale")
            log.warning("update_reloading", update=str(run.key), why=e.message)
            self.agenda.reload(run.key)
            self.agenda.schedule(self.clock.now() + RETRY_MS, None)
            return False
        except Unavailable as e:
            self.metrics.storage_write("error")
            log.warning("update_write_failed", update=str(run.key), why=e.message)
            self.agenda.schedule(self.clock.now() + RETRY_MS, run.key)
            return False
        except PulsegateError as e:  # too large, gone, finished: the update cannot go on
            self.metrics.storage_write("error")
            log.error("update_write_refused", update=str(run.key), why=e.message)
            self.error(run, f"storage refused a write: {e.message}")
            return False
        self.metrics.storage_write("ok", time.perf_counter() - started)
        return True

    def _count(
        self, run: UpdateRun, transition: StatusEvent | None, events: tuple[InstanceEvent, ...]
    ) -> None:
        if transition is not None:
            self.metrics.update_transition(transition.status.name)
            log.info(
                "update_transitioned",
                update=str(run.key),
                job=str(run.key.job),
                status=transition.status.name,
                cause=transition.cause.value,
                user=transition.user,
                message=transition.message,
            )
        for event in events:
            self.metrics.instance_event(event.action.name)
