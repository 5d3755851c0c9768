"""How the leader builds its memory from storage: a new term's rehydration (DESIGN §3 rule 8),
reloading one update after a write whose outcome is unknown, resyncing a job's instances, and
history pruning. A part of `LeaderLoop` (a mixin, split out for size); it runs on the loop's
thread and uses the loop's state."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import structlog

from scheduler.clock import Clock
from scheduler.election import Leadership
from scheduler.memory import RunTable
from scheduler.metrics import Metrics
from scheduler.zkstore import ZooKeeperStorage
from updater.driver import Driver
from updater.engine import UpdateRun
from updater.errors import NotFound, PulsegateError, Unavailable
from updater.keys import JobKey, UpdateKey
from updater.record import UpdateRecord
from updater.storage import select_prunable
from updater.task import TaskConfig

log = structlog.get_logger(__name__)
RETRY_MS = 1000


class Takeover:
    # Provided by LeaderLoop.
    store: ZooKeeperStorage
    leadership: Leadership
    driver: Driver
    clock: Clock
    metrics: Metrics
    memory: RunTable
    runs: dict[UpdateKey, UpdateRun]
    serving_epoch: int | None
    takeover_ms: int
    history_keep: int
    history_max_age_ms: int
    on_serving: Callable[[], None]
    _published_epoch: int | None
    _cv: threading.Condition
    _dirty: set[UpdateKey]
    _unblock: dict[UpdateKey, str]
    _timers: list[tuple[int, UpdateKey | None]]
    _reload: set[UpdateKey]
    _resync: set[JobKey]
    _held: dict[JobKey, Mapping[int, TaskConfig]]
    _mark: Callable[[UpdateKey], None]
    _schedule: Callable[[int, UpdateKey | None], None]
    _set_driver_acting: Callable[[bool], None]
    request_resync: Callable[[JobKey], None]

    def adopt(self, record: UpdateRecord, since: int) -> UpdateRun:
        return self._add_run(UpdateRun(record), since)

    def _add_run(self, run: UpdateRun, since: int) -> UpdateRun:
        self.memory.add(run, since)
        self._mark(run.key)
        self.metrics.updates_active.set(len(self.memory))
        return run

    def _release(self, job: JobKey) -> None:
        """Let the driver act on a job's instances held at the takeover: its update is acting
        (a heartbeat arrived), or it is over. Their desired state is still the takeover's: no
        desired change is persisted without an action, and this runs before the first one."""
        desired = self._held.pop(job, None)
        if desired is not None:
            self.driver.reconcile(job, desired)

    def _drop(self, why: str) -> None:
        """Forget every update and every heartbeat: storage is the truth after a lost session."""
        if self.runs or self.serving_epoch is not None:
            log.warning("leader_memory_dropped", why=why, updates=len(self.runs))
        self.memory.clear()
        with self._cv:
            self._dirty.clear()
            self._unblock.clear()
            self._timers.clear()
            self._reload.clear()
            self._resync.clear()  # the takeover reconciles every job anyway
        self._held.clear()
        self.store.forget_caches()
        self.serving_epoch = None
        self.metrics.updates_active.set(0)

    def _rehydrate(self) -> None:
        """Load every active update and continue per DESIGN §3 rule 8: coordinated updates get
        a full heartbeat timeout from now before they are recorded as awaiting pulse."""
        started = time.perf_counter()
        epoch = self.leadership.epoch
        self._drop("new term of leadership")
        takeover = self.takeover_ms = self.clock.now()
        try:
            loaded = self.store.load_active()
            for record in loaded.values():
                if isinstance(record, Unavailable):
                    raise record  # an update read half-way would sit out the whole term
            jobs = self.store.load_jobs()
        except PulsegateError as e:  # down, or a corrupt job: retry, never act on a guess
            log.warning("rehydrate_failed", why=e.message)
            self._schedule(self.clock.now() + RETRY_MS, None)
            return
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
        hold = {
            (run.key.job, i)
            for run in runs
            if run.is_coordinated and run.status.is_active
            for i in run.in_flight()
        }
        desired = {job.key: job.instances() for job in jobs}
        try:
            # Adopt what runs before acting, so nothing is corrected against a stale picture.
            self.driver.takeover(desired, hold)
        except PulsegateError as e:
            log.warning("rehydrate_failed", why=e.message)
            self._schedule(self.clock.now() + RETRY_MS, None)
            return
        self._held = {job: desired.get(job, {}) for job, _ in hold}
        self._set_driver_acting(True)
        for run in runs:
            self._add_run(run, since=takeover)
        self.serving_epoch = epoch
        elapsed = time.perf_counter() - started
        self.metrics.rehydrate_seconds.set(elapsed)
        log.info("leader_rehydrated", updates=len(self.runs), broken=len(broken), seconds=elapsed)
        for key, why in broken:
            log.error("update_unreadable", update=str(key), why=why)
            self.metrics.error("unreadable_update")
        self._publish()

    def _publish(self) -> None:
        """Tell clients and followers where the leader serves; retried every turn until it
        lands, or followers would answer "no leader" for the whole term."""
        try:
            self.on_serving()
        except Exception as e:  # fenced write refused, or the connection dropped under it
            log.warning("serving_not_published", why=str(e) or type(e).__name__)
            self._schedule(self.clock.now() + RETRY_MS, None)
            return
        self._published_epoch = self.serving_epoch

    def _reload_update(self, key: UpdateKey) -> None:
        """Rebuild one update from storage after a write whose outcome is unknown. Its
        heartbeats are kept: they are memory, not storage."""
        self.store.forget_caches()
        old = self.memory.remove(key)
        try:
            record = self.store.get_update(key)
        except NotFound:
            self.memory.pulse.forget(key)
            self._release(key.job)
            return
        except Unavailable:
            if old is not None:
                self.memory.add(old)
            with self._cv:
                self._reload.add(key)
            self._schedule(self.clock.now() + RETRY_MS, None)
            return
        except PulsegateError as e:  # corrupt in storage: it cannot go on; say so, loudly
            log.error("update_unreadable", update=str(key), why=e.message)
            self.metrics.error("unreadable_update")
            self.memory.pulse.forget(key)
            return
        if record.status.is_terminal:
            self._release(key.job)
            self.memory.finish(key, record.status)
            self.metrics.updates_active.set(len(self.memory))
            return
        self.memory.add(UpdateRun(record), since=self.clock.now())
        self._mark(key)

    def _prune(self) -> None:
        try:
            doomed = select_prunable(
                self.store.summaries(),
                self.clock.now(),
                self.history_keep,
                self.history_max_age_ms,
            )
            if doomed:
                self.store.delete_updates(doomed)
                log.info("history_pruned", updates=len(doomed))
        except PulsegateError as e:
            log.warning("history_prune_failed", why=e.message)

    def _resync_job(self, job: JobKey) -> None:
        try:
            found = self.store.get_job(job)
        except Unavailable:
            self.request_resync(job)
            self._schedule(self.clock.now() + RETRY_MS, None)
            return
        except PulsegateError as e:  # unreadable: leave its instances as they are
            log.error("job_unreadable", job=str(job), why=e.message)
            return
        self.driver.reconcile(job, {} if found is None else found.instances())
