"""A harness around the production `LeaderLoop` for tests and `bench/engine.py`: the sim driver,
a fake clock, any `Storage` (the in-memory one usually), a leadership that always leads, and one
thread (the caller's) driving the loop's turns. Nothing here applies a step: every step goes
through the loop's `StepApplier`, exactly as in production.

A failover is a new `LeaderLoop` on the same storage and driver: its memory, heartbeats
included, starts empty and is rebuilt by the loop's own takeover.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet

import attrs
from prometheus_client import CollectorRegistry

from scheduler.drivers.sim import FakeClock, SimDriver
from scheduler.election import Role
from scheduler.leader import LeaderLoop
from scheduler.metrics import Metrics
from updater.driver import Action, ObservedInstance
from updater.engine import Step, UpdateRun
from updater.keys import JobKey, UpdateKey
from updater.pulse import HeartbeatAnswer, PulseMonitor
from updater.record import UpdateRecord
from updater.storage import Storage
from updater.task import TaskConfig

# A monitor: given the time, does it heartbeat now? Called at each heartbeat tick.
Monitor = Callable[[int], bool]
MONITOR = "monitor"


class SteadyLeadership:
    """A leadership that leads, one term per loop: the harness has one scheduler at a time."""

    role = Role.LEADER
    epoch = 1

    def is_acting(self) -> bool:
        return True


@attrs.define
class Trace:
    """What happened, for invariant checks that trust neither the engine nor the pulse memory:
    every action the loop took through the driver, and every heartbeat the monitor sent, with
    the time and the leader (`term`: 0, then one more per failover) that got it."""

    actions: list[tuple[int, int, JobKey, tuple[Action, ...]]] = attrs.Factory(list)
    beats: list[tuple[int, int, UpdateKey]] = attrs.Factory(list)
    answers: list[tuple[int, HeartbeatAnswer]] = attrs.Factory(list)
    term: int = 0


class RecordingDriver:
    """The sim driver, with every `apply` the loop makes written to the trace."""

    def __init__(self, sim: SimDriver, trace: Trace) -> None:
        self.sim = sim
        self.trace = trace

    def instances(self, job: JobKey) -> Mapping[int, ObservedInstance]:
        return self.sim.instances(job)

    def apply(self, job: JobKey, actions: Sequence[Action]) -> None:
        self.trace.actions.append((self.sim.clock.now(), self.trace.term, job, tuple(actions)))
        self.sim.apply(job, actions)

    def reconcile(self, job: JobKey, desired: Mapping[int, TaskConfig]) -> None:
        self.sim.reconcile(job, desired)

    def takeover(
        self,
        desired: Mapping[JobKey, Mapping[int, TaskConfig]],
        parked: AbstractSet[tuple[JobKey, int]] = frozenset(),
    ) -> None:
        self.sim.takeover(desired, parked)

    def set_acting(self, acting: bool) -> None:
        self.sim.set_acting(acting)

    def set_listener(self, listener: Callable[[JobKey, int], None] | None) -> None:
        self.sim.set_listener(listener)


def run_now(fn: Callable[[], None]) -> None:
    """Pruning on the caller's thread: the harness has one thread."""
    fn()


class Simulation:
    def __init__(
        self,
        storage: Storage,
        driver: SimDriver,
        clock: FakeClock,
        heartbeat_interval_ms: int = 0,
        monitor: Monitor | None = None,
        trace: Trace | None = None,
    ) -> None:
        self.storage = storage
        self.driver = driver
        self.clock = clock
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.monitor = monitor
        self.trace = trace if trace is not None else Trace()
        self._recording = RecordingDriver(driver, self.trace)
        self.started: list[UpdateKey] = []
        self.steps = 0
        self.loop = self._new_loop()

    def _new_loop(self) -> LeaderLoop:
        loop = LeaderLoop(
            self.storage,
            SteadyLeadership(),
            self._recording,
            self.clock,
            Metrics(CollectorRegistry()),
            prune_runner=run_now,
        )
        loop.turn()  # the takeover: memory from storage, heartbeats empty
        return loop

    @property
    def pulse(self) -> PulseMonitor:
        return self.loop.pulse

    @property
    def events(self) -> int:
        """Status and instance events written for the updates started here."""
        records = [self.storage.get_update(key) for key in self.started]
        return sum(len(r.status_events) + len(r.instance_events) for r in records)

    def start(self, record: UpdateRecord) -> UpdateRun:
        """The loop's own start (`Commands.start`), for a record planned by the caller."""
        self.started.append(record.key)
        return self.loop.commands.start(record)

    def fail_over(self) -> None:
        """A new leader: a new loop rebuilt from storage, with empty heartbeat memory."""
        self.trace.term += 1
        self.loop = self._new_loop()

    def run_of(self, key: UpdateKey) -> UpdateRun:
        return self.loop.runs[key]

    def _ensure(self, run: UpdateRun) -> None:
        """A test that rebuilt a run from storage itself hands it to the loop, as the loop's
        reload would (heartbeats kept)."""
        if self.loop.runs.get(run.key) is not run and run.status.is_active:
            self.loop.memory.remove(run.key)
            self.loop.memory.add(run, since=self.clock.now())

    def persist(self, run: UpdateRun, step: Step) -> bool:
        """Apply a command's step through the loop's one apply path."""
        self._ensure(run)
        return self.loop.applier.apply(run, step)

    def heartbeat(self, run: UpdateRun) -> HeartbeatAnswer:
        """The monitor's heartbeat, as the RPC path takes it (`LeaderLoop.beat`), then what the
        loop's next turn records for it."""
        self._ensure(run)
        now = self.clock.now()
        self.trace.beats.append((now, self.trace.term, run.key))
        answer, _ = self.loop.beat(run, MONITOR)
        self.loop.unblock(self.loop.agenda.take_unblock())
        self.trace.answers.append((now, answer))
        return answer

    def step(self, run: UpdateRun) -> Step:
        """Plan and apply one step of this run now (the loop's `advance`)."""
        self._ensure(run)
        self.steps += 1
        return self.loop.advance(run)

    def run_until_idle(self, run: UpdateRun, until_ms: int, max_turns: int = 10_000_000) -> None:
        """Turn the loop, moving the clock to the next thing that can happen (a driver timer,
        a loop timer, a heartbeat tick), until the run is finished or paused, or the clock
        reaches `until_ms`."""
        self._ensure(run)
        self.loop.agenda.mark(run.key)
        next_beat = self.clock.now() if self.heartbeat_interval_ms else None
        for _ in range(max_turns):
            now = self.clock.now()
            if next_beat is not None and next_beat <= now:
                live = self.loop.runs.get(run.key, run)
                if (
                    live.is_coordinated
                    and live.status.is_active
                    and (self.monitor is None or self.monitor(now))
                ):
                    self.heartbeat(live)
                next_beat = now + self.heartbeat_interval_ms
            self.steps += 1
            self.loop.turn()
            current = self.loop.runs.get(run.key)
            if current is None or current.status.is_terminal or current.status.is_paused:
                return  # only an operator can move it now
            timer = self.loop.agenda.next_timer_ms()
            if self.loop.agenda.has_work() or (timer is not None and timer <= now):
                continue  # something moved: look again at the same time
            candidates = [self.driver.next_event_ms(), timer, next_beat]
            upcoming = min((t for t in candidates if t is not None and t > now), default=None)
            if upcoming is None or upcoming > until_ms:
                return
            self.driver.advance_to(upcoming)
        raise RuntimeError("simulation did not settle")
