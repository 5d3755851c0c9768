"""Drive updates through the pure engine against the sim driver on a fake clock, with in-memory
storage: the same plan → persist → commit → apply cycle the leader loop runs, minus threads and
ZooKeeper. Used by the property tests and `bench/engine.py`."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from scheduler.drivers.sim import FakeClock, SimDriver
from updater.engine import Step, UpdateRun
from updater.pulse import HeartbeatAnswer, PulseMonitor
from updater.record import UpdateRecord
from updater.storage import Storage, UpdateWrite

# A monitor: given the time, does it heartbeat now? Called at each heartbeat tick.
Monitor = Callable[[int], bool]


@attrs.define
class Trace:
    """What happened, for invariant checks: every planned step with the time and whether the
    heartbeat was fresh when it was planned."""

    steps: list[tuple[int, bool, Step]] = attrs.Factory(list)
    answers: list[tuple[int, HeartbeatAnswer]] = attrs.Factory(list)


class Simulation:
    def __init__(
        self,
        storage: Storage,
        driver: SimDriver,
        clock: FakeClock,
        pulse: PulseMonitor | None = None,
        heartbeat_interval_ms: int = 0,
        monitor: Monitor | None = None,
        trace: Trace | None = None,
    ) -> None:
        self.storage = storage
        self.driver = driver
        self.clock = clock
        self.pulse = pulse or PulseMonitor()
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.monitor = monitor
        self.trace = trace
        self.runs: dict[object, UpdateRun] = {}
        self.steps = 0
        self.events = 0

    def start(self, record: UpdateRecord) -> UpdateRun:
        self.storage.start_update(record)
        self.events += len(record.status_events)
        run = UpdateRun(record)
        if run.is_coordinated:
            s = run.settings
            self.pulse.track(run.key, s.heartbeat_timeout_ms, self.clock.now(), s.heartbeat_quorum)
        self.runs[run.key] = run
        return run

    def persist(self, run: UpdateRun, step: Step) -> None:
        """Write a step, then commit it to memory and apply its actions (in that order)."""
        if step.has_writes or step.actions:
            self.storage.write(
                UpdateWrite.make(
                    run.key,
                    len(run.status_events),
                    step.transition,
                    step.instance_events,
                    step.desired_changes(),
                )
            )
            self.events += len(step.instance_events) + (step.transition is not None)
        run.commit(step)
        if step.actions:
            self.driver.apply(run.key.job, step.actions)
        if run.status.is_terminal:
            self.pulse.forget(run.key)

    def heartbeat(self, run: UpdateRun) -> HeartbeatAnswer:
        now = self.clock.now()
        answer, to_record = run.heartbeat(self.pulse, "monitor", now)
        while to_record:
            step = run.pulse_step(self.pulse, "monitor", now)
            if step is None:
                break
            self.persist(run, step)
        if self.trace is not None:
            self.trace.answers.append((now, answer))
        return answer

    def step(self, run: UpdateRun) -> Step:
        now = self.clock.now()
        fresh = self.pulse.is_fresh(run.key, now)
        step = run.plan(self.driver.instances(run.key.job), self.pulse, now)
        self.steps += 1
        if self.trace is not None:
            self.trace.steps.append((now, fresh, step))
        self.persist(run, step)
        return step

    def run_until_idle(self, run: UpdateRun, until_ms: int, max_steps: int = 10_000_000) -> None:
        """Step the update, moving the clock to the next thing that can happen (a driver timer,
        an engine wake-up, a heartbeat tick), until it is finished or paused, or the clock reaches
        `until_ms`."""
        next_beat = self.clock.now() if self.heartbeat_interval_ms else None
        for _ in range(max_steps):
            now = self.clock.now()
            if next_beat is not None and next_beat <= now:
                if (
                    run.is_coordinated
                    and run.status.is_active
                    and (self.monitor is None or self.monitor(now))
                ):
                    self.heartbeat(run)
                next_beat = now + self.heartbeat_interval_ms
            changes = self.driver.changes
            step = self.step(run)
            if run.status.is_terminal or run.status.is_paused:
                return  # only an operator can move it now
            if step.has_writes or step.actions or self.driver.changes != changes:
                continue  # something moved: look again at the same time
            candidates = [t for t in (self.driver.next_event_ms(), step.wake_at_ms, next_beat) if t]
            upcoming = min((t for t in candidates if t > now), default=None)
            if upcoming is None or upcoming > until_ms:
                return
            self.driver.advance_to(upcoming)
        raise RuntimeError("simulation did not settle")
