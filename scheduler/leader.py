"""The leader loop: the one thread that changes updates.

It applies what the engine plans, in this order: persist the step (a fenced ZooKeeper write),
commit it to memory, then act through the driver, and only while this scheduler is the acting
leader and, for coordinated updates, the heartbeat is still fresh at that moment. A step whose
write fails is dropped; a write whose outcome is unknown makes the loop reload that update from
ZooKeeper, so memory never runs ahead of storage and no event is written twice.

Work arrives as commands (RPCs), driver notifications, heartbeats that unblock an update, and
timers (instance min-wait expiry, heartbeat leases). Other threads never touch an `UpdateRun`;
they submit a command and wait for its result.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import structlog

from scheduler.clock import Clock
from scheduler.election import Leadership, Role
from scheduler.fencing import NotLeader, UnknownOutcome
from scheduler.memory import RunTable
from scheduler.metrics import Metrics
from scheduler.takeover import RETRY_MS, Takeover
from scheduler.zkstore import ZooKeeperStorage
from updater.driver import Driver
from updater.engine import Step, UpdateRun
from updater.errors import PulsegateError, StaleWrite, Unavailable
from updater.events import InstanceEvent, StatusEvent
from updater.keys import JobKey, UpdateKey
from updater.pulse import HeartbeatAnswer
from updater.record import DEFAULT_MAX_INSTANCES
from updater.status import UpdateStatus
from updater.storage import UpdateWrite
from updater.task import TaskConfig

log = structlog.get_logger(__name__)
T = TypeVar("T")


class LeaderLoop(Takeover):
    def __init__(
        self,
        store: ZooKeeperStorage,
        leadership: Leadership,
        driver: Driver,
        clock: Clock,
        metrics: Metrics,
        *,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        history_keep: int = 10,
        history_max_age_ms: int = 30 * 24 * 3600 * 1000,
        prune_interval_ms: int = 900_000,
        on_serving: Callable[[], None] = lambda: None,
        command_timeout_s: float = 30.0,
    ) -> None:
        self.store = store
        self.leadership = leadership
        self.driver = driver
        self.clock = clock
        self.metrics = metrics
        self.max_instances = max_instances
        self.history_keep = history_keep
        self.history_max_age_ms = history_max_age_ms
        self.prune_interval_ms = prune_interval_ms
        self.on_serving = on_serving
        self.command_timeout_s = command_timeout_s
        self.memory = RunTable()
        # Shared with the table (the same objects), named for the hot paths that read them.
        self.pulse = self.memory.pulse
        self.runs = self.memory.runs
        self.hot = self.memory.hot
        self.by_job = self.memory.by_job
        self.serving_epoch: int | None = None
        self._published_epoch: int | None = None
        self.takeover_ms = 0
        self._cv = threading.Condition()
        self._dirty: set[UpdateKey] = set()
        self._unblock: dict[UpdateKey, str] = {}
        self._timers: list[tuple[int, UpdateKey | None]] = []
        self._commands: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._reload: set[UpdateKey] = set()
        self._resync: set[JobKey] = set()
        self._held: dict[JobKey, Mapping[int, TaskConfig]] = {}  # jobs with held instances
        self._stopping = False
        self._next_prune = 0
        self._driver_acting = False
        self._acting_lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name="leader-loop", daemon=True)
        driver.set_listener(self._driver_changed)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout=10)
        self.driver.set_listener(None)

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    @property
    def is_serving(self) -> bool:
        return self.leadership.is_acting() and self.serving_epoch == self.leadership.epoch

    # -- called from other threads ---------------------------------------------------------------

    def _driver_changed(self, job: JobKey, instance_id: int) -> None:
        key = self.by_job.get(job)
        if key is not None:
            with self._cv:
                self._dirty.add(key)
                self._cv.notify_all()

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the loop thread and return its result (or raise its error)."""
        if not self.is_serving:
            raise NotLeader("this scheduler is not serving as leader")
        future: Future[T] = Future()
        with self._cv:
            self._commands.append((fn, future))
            self._cv.notify_all()
        try:
            return future.result(timeout=self.command_timeout_s)
        except FutureTimeout:
            future.cancel()  # not started yet: it never will be, so a retry is the only run
            raise Unavailable("the scheduler is busy or lost its connection; retry") from None

    def heartbeat(self, key: UpdateKey, user: str) -> tuple[HeartbeatAnswer, UpdateStatus]:
        """Answer a heartbeat on the caller's thread, from memory (DESIGN §3 rule 5)."""
        if not self.is_serving:
            raise NotLeader("this scheduler is not serving as leader")
        run = self.runs.get(key)
        if run is None:
            status = self.memory.finished.get(key) or self._final_status(key)
            return HeartbeatAnswer.FINISHED, status
        return self.beat(run, user)

    def beat(self, run: UpdateRun, user: str) -> tuple[HeartbeatAnswer, UpdateStatus]:
        """Record a heartbeat for a run in memory. Unblocking the update (a status change to
        persist) is handed to the loop without waiting."""
        first = self.pulse.last_beat(run.key) is None
        answer, to_record = run.heartbeat(self.pulse, user, self.clock.now())
        if run.key not in self.runs:  # it finished meanwhile: do not track it again
            self.pulse.forget(run.key)
        if to_record:
            with self._cv:
                self._unblock[run.key] = user
                self._cv.notify_all()
        elif first:  # a rolling update held since takeover may act now, not at its lease end
            self._mark(run.key)
        return answer, run.status_events[-1].status

    def _final_status(self, key: UpdateKey) -> UpdateStatus:
        """The status of an update that is not active here: NotFound if there is none."""
        record = self.store.get_update(key)
        if record.status.is_active:
            self.request_reload(key)  # e.g. a start whose write outcome was unknown
            raise Unavailable(f"update {key} is not loaded yet; retry")
        self.memory.remember_finished(key, record.status)
        return record.status

    def heartbeat_age_ms(self, key: UpdateKey) -> int | None:
        return self.pulse.age_ms(key, self.clock.now())

    # -- the loop ------------------------------------------------------------------------------

    def _main(self) -> None:
        while True:
            with self._cv:
                if self._stopping:
                    return
                timeout = self._timeout()
                if timeout > 0 and not (self._commands or self._dirty or self._unblock):
                    self._cv.wait(timeout)
                if self._stopping:
                    return
            try:
                self._turn()
            except Exception:  # one bad turn must not kill the leader loop
                log.exception("leader_loop_failed")
                self.metrics.error("loop")
                time.sleep(0.1)

    def _timeout(self) -> float:
        if not self._timers:
            return 1.0
        return min(1.0, max(0.0, (self._timers[0][0] - self.clock.now()) / 1000))

    def _turn(self) -> None:
        if not self.leadership.is_acting():
            # SUSPENDED keeps memory (the session may come back); a lost session does not.
            if self.leadership.role in (Role.FOLLOWER, Role.STOPPED) and (
                self.serving_epoch is not None or self.runs
            ):
                self._drop("leadership lost")
            elif self.leadership.role is Role.SUSPENDED:
                # Back in the same term, it rebuilds as at a takeover: a step the driver had
                # half done (stopped, not yet started) waits for a fresh heartbeat (rule 8).
                self.serving_epoch = None
            self._fail_commands(NotLeader("this scheduler is not the acting leader"))
            self.metrics.set_leader(False)
            self._set_driver_acting(False)  # keep observing, stop acting
            return
        if self.serving_epoch != self.leadership.epoch:
            self._rehydrate()
            return
        self.metrics.set_leader(True)
        if self._published_epoch != self.serving_epoch:
            self._publish()
        self._set_driver_acting(True)  # same term again after a suspension
        with self._cv:
            commands, self._commands = self._commands, []
            unblock, self._unblock = self._unblock, {}
            now = self.clock.now()
            while self._timers and self._timers[0][0] <= now:
                _, key = heapq.heappop(self._timers)
                if key is not None:
                    self._dirty.add(key)
            dirty, self._dirty = self._dirty, set()
            reload, self._reload = self._reload, set()
            resync, self._resync = self._resync, set()
        for key in reload:
            self._reload_update(key)
        for job in resync:
            self._resync_job(job)
        for fn, future in commands:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to the caller
                future.set_exception(e)
        for key, user in unblock.items():
            run = self.runs.get(key)
            while run is not None:
                step = run.pulse_step(self.pulse, user, self.clock.now())
                if step is None or not self.apply(run, step):
                    break
        for i, key in enumerate(dirty_keys := list(dirty)):
            if not self.leadership.is_acting():  # suspended mid-turn: keep the rest for later
                with self._cv:
                    self._dirty.update(dirty_keys[i:])
                break
            run = self.runs.get(key)
            if run is not None:
                self._advance(run)
        if self.clock.now() >= self._next_prune:
            self._next_prune = self.clock.now() + self.prune_interval_ms
            self._prune()

    def leadership_changed(self) -> None:
        """On the election thread, at once: a leader that stops acting stops its driver now,
        not at the loop's next turn (which may be stuck in a ZooKeeper call)."""
        if not self.leadership.is_acting():
            self._set_driver_acting(False)
        self.wake()

    def _set_driver_acting(self, acting: bool) -> None:
        with self._acting_lock:  # the election thread and the loop both switch it
            if acting and not self.leadership.is_acting():
                return
            if acting != self._driver_acting:
                self.driver.set_acting(acting)
                self._driver_acting = acting

    def _fail_commands(self, error: Exception) -> None:
        with self._cv:
            commands, self._commands = self._commands, []
        for _, future in commands:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)

    def request_resync(self, job: JobKey) -> None:
        """Tell the driver a job's desired instances from storage on the next turn (after a
        job write whose outcome is unknown)."""
        with self._cv:
            self._resync.add(job)
            self._cv.notify_all()

    def request_reload(self, key: UpdateKey) -> None:
        """Rebuild an update from storage on the next turn."""
        with self._cv:
            self._reload.add(key)

    def _mark(self, key: UpdateKey) -> None:
        """Plan this update again on the next turn (callable from any thread)."""
        with self._cv:
            self._dirty.add(key)
            self._cv.notify_all()

    def _schedule(self, at_ms: int, key: UpdateKey | None) -> None:
        with self._cv:
            heapq.heappush(self._timers, (at_ms, key))

    # -- applying steps --------------------------------------------------------------------------

    def _advance(self, run: UpdateRun) -> None:
        started = time.perf_counter()
        step = run.plan(self.driver.instances(run.key.job), self.pulse, self.clock.now())
        self.apply(run, step)
        self.metrics.step_seconds.observe(time.perf_counter() - started)

    def apply(self, run: UpdateRun, step: Step) -> bool:
        """Persist a step (fenced), commit it to memory, then act: the one way updates change.
        False when nothing was persisted (not the leader, storage down, outcome unknown)."""
        key = run.key
        if step.actions or step.has_writes:
            if (
                step.actions
                and run.is_coordinated
                and not self.pulse.is_fresh(key, self.clock.now())
            ):
                self._mark(key)  # the lease ended since planning: plan again
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
        if step.actions and self.leadership.is_acting() and self._pulse_ok(run):
            self._release(key.job)
            self.driver.apply(key.job, step.actions)
            for action in step.actions:
                self.metrics.driver_action(action.kind.value)
        if step.wake_at_ms is not None:
            self._schedule(step.wake_at_ms, key)
        if run.status.is_terminal:
            self._finish(run)
        elif step.has_writes:
            self._mark(key)
        return True

    def _pulse_ok(self, run: UpdateRun) -> bool:
        return not run.is_coordinated or self.pulse.is_fresh(run.key, self.clock.now())

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
            self.request_reload(run.key)
            self._schedule(self.clock.now() + RETRY_MS, None)
            return False
        except Unavailable as e:
            self.metrics.storage_write("error")
            log.warning("update_write_failed", update=str(run.key), why=e.message)
            self._schedule(self.clock.now() + RETRY_MS, run.key)
            return False
        except PulsegateError as e:  # too large, gone, finished: the update cannot go on
            self.metrics.storage_write("error")
            log.error("update_write_refused", update=str(run.key), why=e.message)
            self._error(run, f"storage refused a write: {e.message}")
            return False
        self.metrics.storage_write("ok", time.perf_counter() - started)
        return True

    def _error(self, run: UpdateRun, message: str) -> None:
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
        self._finish(run)

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

    def _finish(self, run: UpdateRun) -> None:
        self._release(run.key.job)
        self.memory.finish(run.key, run.status)
        self.metrics.updates_active.set(len(self.memory))
        log.info("update_finished", update=str(run.key), status=run.status.name)
