"""The leader loop: the one thread that changes updates.

Each turn takes the agenda's work (commands from RPCs, updates a driver notification or a timer
marked, heartbeats that unblock an update) and hands it to its collaborators: the `Takeover`
builds memory from storage, `Commands` runs operator commands, and the `StepApplier` applies
every step the engine plans (persist, commit, re-check the gate, act), only while this
scheduler is the acting leader. History pruning runs off this thread.

It depends on the `Storage` protocol, a `Clock` and a leadership view only, so tests run this
very loop on a fake clock with the in-memory store and the sim driver (`turn` runs one turn on
the caller's thread; `start` runs turns on the loop's own thread). Other threads never touch an
`UpdateRun`; they submit a command and wait for its result.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Protocol, TypeVar

import structlog

from scheduler.agenda import RETRY_MS, Agenda
from scheduler.applier import StepApplier
from scheduler.clock import Clock, offset_source
from scheduler.commands import Commands
from scheduler.election import Role
from scheduler.fencing import NotLeader
from scheduler.memory import RunTable
from scheduler.metrics import Metrics
from scheduler.pruning import HistoryPruner, Runner, run_on_thread
from scheduler.takeover import ParkedInstances, Takeover
from updater.driver import Driver
from updater.engine import Step, UpdateRun
from updater.errors import Unavailable
from updater.keys import JobKey, UpdateKey
from updater.pulse import ANONYMOUS, HeartbeatAnswer
from updater.record import DEFAULT_MAX_INSTANCES
from updater.status import UpdateStatus
from updater.storage import Storage

log = structlog.get_logger(__name__)
T = TypeVar("T")


class LeadershipView(Protocol):
    """What the loop reads of the election (`scheduler.election.Leadership`)."""

    role: Role
    epoch: int

    def is_acting(self) -> bool: ...


class LeaderLoop:
    def __init__(
        self,
        store: Storage,
        leadership: LeadershipView,
        driver: Driver,
        clock: Clock,
        metrics: Metrics,
        *,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        history_keep: int = 10,
        history_max_age_ms: int = 30 * 24 * 3600 * 1000,
        prune_interval_ms: int = 900_000,
        prune_runner: Runner = run_on_thread,
        on_serving: Callable[[], None] = lambda: None,
        command_timeout_s: float = 30.0,
    ) -> None:
        self.store = store
        self.leadership = leadership
        self.driver = driver
        self.clock = clock
        self.metrics = metrics
        self.on_serving = on_serving
        self.command_timeout_s = command_timeout_s
        self.memory = RunTable(offset_source(clock))
        # Shared with the table (the same objects), named for the hot paths that read them.
        self.pulse = self.memory.pulse
        self.runs = self.memory.runs
        self.hot = self.memory.hot
        self.by_job = self.memory.by_job
        self.agenda = Agenda(offset_source(clock))
        self.parked = ParkedInstances(driver)
        self.applier = StepApplier(
            store, driver, clock, metrics, self.memory, self.agenda, self.parked, self._is_acting
        )
        self.takeover = Takeover(
            store,
            driver,
            clock,
            metrics,
            self.memory,
            self.agenda,
            self.parked,
            self._set_driver_acting,
        )
        self.commands = Commands(
            store,
            driver,
            clock,
            self.memory,
            self.agenda,
            self.applier,
            self.takeover,
            max_instances,
        )
        self.pruner = HistoryPruner(
            store, clock, history_keep, history_max_age_ms, prune_interval_ms, prune_runner
        )
        self.serving_epoch: int | None = None
        self._published_epoch: int | None = None
        self.takeover_ms = 0
        self._driver_acting = False
        self._acting_lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name="leader-loop", daemon=True)
        driver.set_listener(self._driver_changed)
        metrics.gates.source = self  # the gate gauges, read from this memory at each scrape

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.agenda.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.driver.set_listener(None)

    def wake(self) -> None:
        self.agenda.wake()

    @property
    def is_serving(self) -> bool:
        return self.leadership.is_acting() and self.serving_epoch == self.leadership.epoch

    def _is_acting(self) -> bool:
        return self.leadership.is_acting()

    # -- called from other threads ---------------------------------------------------------------

    def _driver_changed(self, job: JobKey, instance_id: int) -> None:
        key = self.by_job.get(job)
        if key is not None:
            self.agenda.mark(key)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the loop thread and return its result (or raise its error)."""
        if not self.is_serving:
            raise NotLeader("this scheduler is not serving as leader")
        future: Future[T] = Future()
        self.agenda.submit(fn, future)
        try:
            return future.result(timeout=self.command_timeout_s)
        except FutureTimeout:
            future.cancel()  # not started yet: it never will be, so a retry is the only run
            raise Unavailable("the scheduler is busy or lost its connection; retry") from None

    def heartbeat(
        self, key: UpdateKey, user: str, monitor: str = ANONYMOUS, ack: int | None = None
    ) -> tuple[HeartbeatAnswer, UpdateStatus]:
        """Answer a heartbeat on the caller's thread, from memory (DESIGN §3 rule 5)."""
        if not self.is_serving:
            raise NotLeader("this scheduler is not serving as leader")
        run = self.runs.get(key)
        if run is None:
            status = self.memory.finished_status(key) or self._final_status(key)
            return HeartbeatAnswer.FINISHED, status
        return self.beat(run, user, monitor, ack)

    def beat(
        self, run: UpdateRun, user: str, monitor: str = ANONYMOUS, ack: int | None = None
    ) -> tuple[HeartbeatAnswer, UpdateStatus]:
        """Record `monitor`'s heartbeat (acking batch `ack`) for a run in memory. Unblocking
        the update (a status change to persist) is handed to the loop without waiting."""
        first = self.pulse.last_beat(run.key) is None
        try:
            answer, to_record = run.heartbeat(self.pulse, user, self.clock.now(), monitor, ack)
        except Unavailable:  # no longer tracked: if it also left the table, it finished
            if run.key in self.runs:
                raise
            return self.heartbeat(run.key, user, monitor, ack)
        if to_record:
            self.agenda.unblock(run.key, user)
        elif first:  # a rolling update parked since takeover may act now, not at its lease end
            self.agenda.mark(run.key)
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

    def request_resync(self, job: JobKey) -> None:
        """Tell the driver a job's desired instances from storage on the next turn."""
        self.agenda.resync(job)

    def request_reload(self, key: UpdateKey) -> None:
        """Rebuild an update from storage on the next turn."""
        self.agenda.reload(key)

    def leadership_changed(self) -> None:
        """On the election thread, at once: a leader that stops acting stops its driver now,
        not at the loop's next turn (which may be stuck in a ZooKeeper call)."""
        if not self.leadership.is_acting():
            self._set_driver_acting(False)
        self.wake()

    # -- the loop ------------------------------------------------------------------------------

    def _main(self) -> None:
        while not self.agenda.is_stopping:
            self.agenda.wait(self.clock.now())
            if self.agenda.is_stopping:
                return
            try:
                self.turn()
            except Exception:  # one bad turn must not kill the leader loop
                log.exception("leader_loop_failed")
                self.metrics.error("loop")
                time.sleep(0.1)

    def turn(self) -> None:
        """One turn: whatever is on the agenda and due by now. On the loop's thread (or, in
        tests, the one thread driving the loop)."""
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
            self._take_over()
            return
        self.metrics.set_leader(True)
        if self._published_epoch != self.serving_epoch:
            self._publish()
        self._set_driver_acting(True)  # same term again after a suspension
        work = self.agenda.take(self.clock.now())
        for key in work.reload:
            self.takeover.reload_update(key)
        for job in work.resync:
            self.takeover.resync_job(job)
        for fn, future in work.commands:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to the caller
                future.set_exception(e)
        self.unblock(work.unblock)
        dirty = list(work.dirty)
        for i, key in enumerate(dirty):
            if not self.leadership.is_acting():  # suspended mid-turn: keep the rest for later
                self.agenda.mark_all(dirty[i:])
                break
            self._guarded(key, self.advance)
        self.pruner.maybe_start()

    def _guarded(self, key: UpdateKey, work: Callable[[UpdateRun], object]) -> None:
        """Run one update's work; if it raises, log it and try that update again later, and
        go on with the rest of the turn: one broken update must not stop the others."""
        run = self.runs.get(key)
        if run is None:
            return
        try:
            work(run)
        except Exception:
            log.exception("update_step_failed", update=str(key))
            self.metrics.error("step")
            self.agenda.schedule(self.clock.now() + RETRY_MS, key)

    def unblock(self, beats: Mapping[UpdateKey, str]) -> None:
        """Record what heartbeats mean for these updates' statuses (`UpdateRun.pulse_step`)."""
        for key, user in beats.items():
            self._guarded(key, functools.partial(self._record_pulse, user=user))

    def _record_pulse(self, run: UpdateRun, user: str) -> None:
        while True:
            step = run.pulse_step(self.pulse, user, self.clock.now())
            if step is None or not self.applier.apply(run, step) or run.key not in self.runs:
                return

    def advance(self, run: UpdateRun) -> Step:
        """Plan an update's next step and apply it; the step, for tests that drive one run."""
        started = time.perf_counter()
        step = run.plan(self.driver.instances(run.key.job), self.pulse, self.clock.now())
        self.applier.apply(run, step)
        self.metrics.step_seconds.observe(time.perf_counter() - started)
        return step

    def _take_over(self) -> None:
        epoch = self.leadership.epoch
        self._drop("new term of leadership")
        self.takeover_ms = self.clock.now()
        if self.takeover.take_over(since=self.takeover_ms):
            self.serving_epoch = epoch
            self._publish()

    def _drop(self, why: str) -> None:
        self.takeover.drop(why, was_serving=self.serving_epoch is not None)
        self.serving_epoch = None

    def _publish(self) -> None:
        """Tell clients and followers where the leader serves; retried every turn until it
        lands, or followers would answer "no leader" for the whole term."""
        try:
            self.on_serving()
        except Exception as e:  # fenced write refused, or the connection dropped under it
            log.warning("serving_not_published", why=str(e) or type(e).__name__)
            self.agenda.schedule(self.clock.now() + RETRY_MS, None)
            return
        self._published_epoch = self.serving_epoch

    def _set_driver_acting(self, acting: bool) -> None:
        with self._acting_lock:  # the election thread and the loop both switch it
            if acting and not self.leadership.is_acting():
                return
            if acting != self._driver_acting:
                self.driver.set_acting(acting)
                self._driver_acting = acting

    def _fail_commands(self, error: Exception) -> None:
        for _, future in self.agenda.take_commands():
            if future.set_running_or_notify_cancel():
                future.set_exception(error)
