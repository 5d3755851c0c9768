"""How the leader builds its memory from storage: a new term's takeover (DESIGN §3 rule 8),
reloading one update after a write whose outcome is unknown, and resyncing a job's instances.

`Takeover` gets everything it uses through its constructor and reports through its return
values and the agenda (work for the loop's next turn). It runs on the leader loop's thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import structlog

from scheduler.agenda import RETRY_MS, Agenda
from scheduler.clock import Clock
from scheduler.memory import RunTable
from scheduler.metrics import Metrics
from updater.driver import Driver
from updater.engine import UpdateRun
from updater.errors import NotFound, PulsegateError, Unavailable
from updater.keys import JobKey, UpdateKey
from updater.storage import Storage
from updater.task import TaskConfig

log = structlog.get_logger(__name__)


class ParkedInstances:
    """Jobs whose in-flight instances the driver left exactly as they were at the takeover (a
    coordinated update's step the old leader stored may not have been taken: only a heartbeat
    may let it happen). Released by the update's next action, or its end."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self._jobs: dict[JobKey, Mapping[int, TaskConfig]] = {}

    def park(self, jobs: Mapping[JobKey, Mapping[int, TaskConfig]]) -> None:
        self._jobs = dict(jobs)

    def release(self, job: JobKey) -> None:
        """Let the driver act on a job's parked instances. Their desired state is still the
        takeover's: no desired change is persisted without an action, and this runs before the
        first one."""
        desired = self._jobs.pop(job, None)
        if desired is not None:
            self.driver.reconcile(job, desired)

    def clear(self) -> None:
        self._jobs.clear()

    def __contains__(self, job: object) -> bool:
        return job in self._jobs


class Takeover:
    def __init__(
        self,
        store: Storage,
        driver: Driver,
        clock: Clock,
        metrics: Metrics,
        memory: RunTable,
        agenda: Agenda,
        parked: ParkedInstances,
        set_driver_acting: Callable[[bool], None],
    ) -> None:
        self.store = store
        self.driver = driver
        self.clock = clock
        self.metrics = metrics
        self.memory = memory
        self.agenda = agenda
        self.parked = parked
        self.set_driver_acting = set_driver_acting

    def add_run(self, run: UpdateRun, since: int) -> UpdateRun:
        """Start running an update here: watched for heartbeats from `since`, planned next turn."""
        self.memory.add(run, since)
        self.agenda.mark(run.key)
        self.metrics.updates_active.set(len(self.memory))
        return run

    def drop(self, why: str, was_serving: bool) -> None:
        """Forget every update and every heartbeat: storage is the truth after a lost session."""
        if len(self.memory) or was_serving:
            log.warning("leader_memory_dropped", why=why, updates=len(self.memory))
        self.memory.clear()
        self.agenda.clear()  # the takeover reconciles every job anyway
        self.parked.clear()
        self.store.forget_caches()
        self.metrics.updates_active.set(0)

    def take_over(self, since: int) -> bool:
        """Load every active update and continue per DESIGN §3 rule 8: coordinated updates get
        a full heartbeat timeout from `since` before they are recorded as awaiting pulse. False
        (and a retry scheduled) if storage or the driver could not be read."""
        started = time.perf_counter()
        try:
            loaded = self.store.load_active()
            for record in loaded.values():
                if isinstance(record, Unavailable):
                    raise record  # an update read half-way would sit out the whole term
            jobs = self.store.load_jobs()
        except PulsegateError as e:  # down, or a corrupt job: retry, never act on a guess
            log.warning("rehydrate_failed", why=e.message)
            self.agenda.schedule(self.clock.now() + RETRY_MS, None)
            return False
        runs: list[UpdateRun] = []
        broken: list[tuple[UpdateKey, str]] = []
        for key, record in loaded.items():
            if isinstance(record, NotFound):
                continue
            if isinstance(record, Exception):
                broken.append((key, str(record)))
                continue
            try:
                runs.append(UpdateRun(record))
            except Exception as e:  # a definition the engine cannot run
                broken.append((key, f"{type(e).__name__}: {e}"))
        # A coordinated update's instances in flight wait for a heartbeat, like the update.
        parked = {
            (run.key.job, i)
            for run in runs
            if run.is_coordinated and run.status.is_active
            for i in run.in_flight()
        }
        desired = {job.key: job.instances() for job in jobs}
        try:
            # Adopt what runs before acting, so nothing is corrected against a stale picture.
            self.driver.takeover(desired, parked)
        except PulsegateError as e:
            log.warning("rehydrate_failed", why=e.message)
            self.agenda.schedule(self.clock.now() + RETRY_MS, None)
            return False
        self.parked.park({job: desired.get(job, {}) for job, _ in parked})
        self.set_driver_acting(True)
        for run in runs:
            self.add_run(run, since)
        elapsed = time.perf_counter() - started
        self.metrics.rehydrate_seconds.set(elapsed)
        log.info("leader_rehydrated", updates=len(runs), broken=len(broken), seconds=elapsed)
        for key, why in broken:
            log.error("update_unreadable", update=str(key), why=why)
            self.metrics.error("unreadable_update")
        return True

    def reload_update(self, key: UpdateKey) -> None:
        """Rebuild one update from storage after a write whose outcome is unknown. Its
        heartbeats are kept: they are memory, not storage."""
        self.store.forget_caches()
        old = self.memory.remove(key)
        try:
            record = self.store.get_update(key)
        except NotFound:
            self.memory.pulse.forget(key)
            self.parked.release(key.job)
            return
        except Unavailable:
            if old is not None:
                self.memory.add(old)
            self.agenda.reload(key)
            self.agenda.schedule(self.clock.now() + RETRY_MS, None)
            return
        except PulsegateError as e:  # corrupt in storage: it cannot go on; say so, loudly
            log.error("update_unreadable", update=str(key), why=e.message)
            self.metrics.error("unreadable_update")
            self.memory.pulse.forget(key)
            return
        if record.status.is_terminal:
            self.parked.release(key.job)
            self.memory.finish(key, record.status)
            self.metrics.updates_active.set(len(self.memory))
            return
        self.memory.add(UpdateRun(record), since=self.clock.now())
        self.agenda.mark(key)

    def resync_job(self, job: JobKey) -> None:
        """Tell the driver a job's desired instances from storage (after a job write whose
        outcome is unknown)."""
        try:
            found = self.store.get_job(job)
        except Unavailable:
            self.agenda.resync(job)
            self.agenda.schedule(self.clock.now() + RETRY_MS, None)
            return
        except PulsegateError as e:  # unreadable: leave its instances as they are
            log.error("job_unreadable", job=str(job), why=e.message)
            return
        self.driver.reconcile(job, {} if found is None else found.instances())
