"""An exhaustive bounded check of the engine: from a small coordinated job (3 instances; queue
and batch strategies; heartbeatResume AUTO and OPERATOR), every interleaving of heartbeat, clock
tick past the timeout, an in-flight instance becoming healthy or failing, pause, resume, abort,
rollback and failover, up to DEPTH events, explored breadth-first with a visited set of
canonical state keys. The DESIGN §3 invariants (and §2's transition table) are asserted on every
edge and in every reachable state.

What runs is production code: `UpdateRun` plans, the loop's `StepApplier` persists, commits,
re-checks and acts, `Commands.update` runs the operator commands, `Takeover.take_over` is the
failover (a fresh run rebuilt from the in-memory store, with empty pulse memory). Only the
instances are a model: actions set them STARTING, and the explorer decides when they become
healthy or fail. The heartbeat check trusts neither the engine nor the pulse memory: it
compares each action with the monitor's own log of heartbeats sent to that leader.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TypeVar

import pytest
from prometheus_client import CollectorRegistry

from scheduler.agenda import Agenda
from scheduler.applier import StepApplier
from scheduler.commands import Commands
from scheduler.drivers.sim import FakeClock
from scheduler.memory import RunTable
from scheduler.metrics import Metrics
from scheduler.takeover import ParkedInstances, Takeover
from updater.driver import Action, ActionKind, InstanceState, ObservedInstance
from updater.engine import UpdateRun
from updater.errors import PulsegateError
from updater.events import Cause, InstanceAction
from updater.job import Job
from updater.keys import JobKey, UpdateKey
from updater.memstore import MemoryStorage
from updater.progress import Progress
from updater.pulse import HeartbeatAnswer
from updater.record import UpdateRequest, plan_update
from updater.settings import HeartbeatResume, Settings, Strategy
from updater.status import ALLOWED, UpdateStatus

from builders import JOB, NEW, OLD

S = UpdateStatus
A = InstanceAction
St = InstanceState
TIMEOUT = 1000
DEPTH = 8
COUNT = 3
EVENTS = ("heartbeat", "tick", "pause", "resume", "abort", "rollback", "failover")
METRICS = Metrics(CollectorRegistry())
T = TypeVar("T")


class Discard(Agenda):
    """The loop's agenda, unread: the explorer itself decides what happens next."""

    def mark(self, key: UpdateKey) -> None:
        pass

    def unblock(self, key: UpdateKey, user: str) -> None:
        pass

    def reload(self, key: UpdateKey) -> None:
        raise AssertionError(f"a write to {key} had an unknown outcome")

    def resync(self, job: JobKey) -> None:
        pass

    def schedule(self, at_ms: int, key: UpdateKey | None) -> None:
        pass


DISCARD = Discard()


class ModelInstances:
    """The driver, as a model: what each instance runs and how it is doing. The explorer moves
    instances along (healthy, failed); actions only set what should run."""

    def __init__(self, instances: Mapping[int, ObservedInstance]) -> None:
        self.seen: dict[int, ObservedInstance] = dict(instances)
        self.acted: list[tuple[Action, ...]] = []

    def instances(self, job: JobKey) -> Mapping[int, ObservedInstance]:
        return self.seen

    def apply(self, job: JobKey, actions: Sequence[Action]) -> None:
        self.acted.append(tuple(actions))
        for action in actions:
            self._set(action.instance_id, None if action.kind is ActionKind.KILL else action.config)

    def _set(self, instance_id: int, config: object) -> None:
        if config is None:
            self.seen.pop(instance_id, None)
        else:
            seen = self.seen.get(instance_id)
            failures = seen.failures if seen is not None and seen.config == config else 0
            self.seen[instance_id] = ObservedInstance(
                instance_id,
                St.STARTING,
                config,  # type: ignore[arg-type]
                failures=failures,
            )

    def reconcile(self, job: JobKey, desired: Mapping[int, object], keep: object = ()) -> None:
        for instance_id in set(self.seen) | set(desired):
            if instance_id in keep:  # type: ignore[operator]
                continue
            seen = self.seen.get(instance_id)
            want = desired.get(instance_id)
            if (seen.config if seen is not None else None) != want:
                self.apply(
                    job,
                    [
                        Action(ActionKind.KILL, instance_id)
                        if want is None
                        else Action(ActionKind.ADD, instance_id, want)  # type: ignore[arg-type]
                    ],
                )

    def takeover(
        self,
        desired: Mapping[JobKey, Mapping[int, object]],
        parked: AbstractSet[tuple[JobKey, int]] = frozenset(),
    ) -> None:
        for job, instances in desired.items():
            self.reconcile(job, instances, {i for j, i in parked if j == job})

    def set_acting(self, acting: bool) -> None:
        pass

    def set_listener(self, listener: Callable[[JobKey, int], None] | None) -> None:
        pass

    def healthy(self, instance_id: int, now: int) -> None:
        seen = self.seen[instance_id]
        self.seen[instance_id] = ObservedInstance(
            instance_id, St.HEALTHY, seen.config, now, seen.failures
        )

    def fail(self, instance_id: int) -> None:
        seen = self.seen[instance_id]
        self.seen[instance_id] = ObservedInstance(
            instance_id, St.EXITED, seen.config, None, seen.failures + 1, "exited with status 1"
        )


class World:
    """One reachable state: storage, the leader's memory, the instances, the clock, and the
    monitor's log (the last heartbeat the current leader acknowledged)."""

    def __init__(self, settings: Settings) -> None:
        self.clock = FakeClock(1_000_000)
        self.store = MemoryStorage()
        self.store.create_job(Job.uniform(JOB, OLD, COUNT))
        self.driver = ModelInstances(
            {i: ObservedInstance(i, St.HEALTHY, OLD, 0) for i in range(COUNT)}
        )
        self.memory = RunTable()
        self.parked = ParkedInstances(self.driver)  # in flight at a failover, until acted on
        record, _ = plan_update(
            UpdateRequest(JOB, NEW, COUNT, settings), self.store.get_job(JOB), "u", "op", "", 0
        )
        self.key = record.key
        self.definition = record.definition
        self.acked_beat: int | None = None  # by the current leader, from the monitor's log
        self.commands().start(record)

    def copy(self) -> World:
        """A copy of everything that changes, fast (a state is copied once per move): each
        object's containers are copied, the frozen values in them (configs, events,
        observations, pulse records) and locks are shared: one thread explores."""
        memo: dict[int, object] = {}
        for run in self.memory.runs.values():
            memo[id(run)] = _clone(run, memo)
        memo[id(self.memory.pulse)] = _clone(self.memory.pulse, memo)
        for update in self.store.updates.values():
            memo[id(update)] = _clone(update, memo)
        for instances in self.store.jobs.values():
            memo[id(instances)] = dict(instances)
        for part in (self.memory, self.store, self.driver, self.clock, self.parked):
            memo[id(part)] = _clone(part, memo)
        return _clone(self, memo)

    @property
    def run(self) -> UpdateRun | None:
        return self.memory.runs.get(self.key)

    def status(self) -> UpdateStatus:
        return self.store.updates[self.key].status_events[-1].status

    def applier(self) -> StepApplier:
        return StepApplier(
            self.store,
            self.driver,
            self.clock,
            METRICS,
            self.memory,
            DISCARD,
            self.parked,
            lambda: True,
        )

    def takeover(self) -> Takeover:
        return Takeover(
            self.store,
            self.driver,
            self.clock,
            METRICS,
            self.memory,
            DISCARD,
            self.parked,
            lambda acting: None,
        )

    def commands(self) -> Commands:
        return Commands(
            self.store,
            self.driver,
            self.clock,
            self.memory,
            DISCARD,
            self.applier(),
            self.takeover(),
        )

    def settle(self) -> None:
        """The leader's turn: plan and apply until nothing more happens now."""
        applier = self.applier()
        for _ in range(50):
            run = self.run
            if run is None:
                return
            step = run.plan(self.driver.instances(JOB), self.memory.pulse, self.clock.now())
            if not applier.apply(run, step) or not (step.has_writes or step.actions):
                return
        raise AssertionError("the engine did not settle")


def _clone(obj: T, memo: dict[int, object]) -> T:
    """`obj` with its own containers; what they hold is shared unless `memo` has a copy (the
    runs of a run table, the updates of a store)."""
    new = object.__new__(type(obj))
    fields = vars(new)
    fields.update(vars(obj))
    for name, value in fields.items():
        if id(value) in memo:
            fields[name] = memo[id(value)]
        elif isinstance(value, Progress):
            fields[name] = _clone(value, memo)
        elif isinstance(value, (dict, list, set)):
            copied = value.copy()
            if isinstance(copied, dict) and copied:
                first = next(iter(copied.values()))
                if isinstance(first, (UpdateRun, dict)) or id(first) in memo:
                    copied = type(value)((k, memo.get(id(v), v)) for k, v in value.items())
            fields[name] = copied
    return new


def in_flight(world: World) -> list[int]:
    run = world.run
    return [] if run is None else sorted(run.in_flight())


def moves(world: World) -> list[tuple[str, int]]:
    """Every move that can change something (a no-op would only find its own state again)."""
    if world.run is None:  # terminal: every command is refused or a no-op, checked per state
        return []
    status = world.status()
    lease = world.memory.pulse.lease_end(world.key)
    idle = {
        "resume": status.is_rolling,
        "pause": status.is_paused,
        "tick": not is_fresh(world) and (lease is None or lease <= world.clock.now()),
    }
    found = [(name, -1) for name in EVENTS if not idle.get(name)]
    for i in in_flight(world):
        seen = world.driver.seen.get(i)
        if seen is not None and seen.config == world.run.target(i, world.run.progress.backward):
            if seen.state is not St.HEALTHY:
                found.append(("healthy", i))
            if seen.state is not St.EXITED:
                found.append(("fail", i))
    return found


def is_fresh(world: World) -> bool:
    beat = world.acked_beat
    return beat is not None and world.clock.now() - beat < TIMEOUT


def step(world: World, move: tuple[str, int]) -> World:
    """Take one move on a copy of `world`, asserting the edge invariants."""
    w = world.copy()
    name, instance_id = move
    before = w.status()
    acted = len(w.driver.acted)
    policy = w.definition.settings.heartbeat_resume
    has_rolled = any(e.status.is_rolling for e in w.store.updates[w.key].status_events)
    if name == "heartbeat":
        run = w.run
        assert run is not None
        answer, _ = run.heartbeat(w.memory.pulse, "monitor", w.clock.now())
        w.acked_beat = w.clock.now()
        expected = HeartbeatAnswer.PAUSED if before.is_paused else HeartbeatAnswer.OK
        assert answer is expected, f"rule 5: {answer.name} for {before.name}"
        applier = w.applier()
        while (pulse := run.pulse_step(w.memory.pulse, "monitor", w.clock.now())) is not None:
            assert applier.apply(run, pulse)
        after = w.status()
        if before.is_awaiting_pulse:
            if policy is HeartbeatResume.OPERATOR and has_rolled:
                assert after.is_awaiting_pulse, "rule 3: OPERATOR resumed on a heartbeat"
            else:
                assert after.is_rolling, f"rule 3: {after.name} after a fresh heartbeat"
        if before.is_paused:
            assert after is before, "rule 5/7: a heartbeat ended a pause"
    elif name == "tick":
        w.clock.advance(TIMEOUT)
    elif name == "healthy":
        w.driver.healthy(instance_id, w.clock.now())
    elif name == "fail":
        w.driver.fail(instance_id)
    elif name == "failover":
        w.memory = RunTable()
        w.acked_beat = None
        assert w.takeover().take_over(since=w.clock.now())
        assert w.status() is before
    else:
        try:
            w.commands().update(w.key, name, "op", "because")
        except PulsegateError:
            assert w.status() is before
        after = w.status()
        if name == "pause" and after is not before:
            last = w.store.get_update(w.key).status_events[-1]
            assert after.is_paused and (last.user, last.message) == ("op", "because")
        if name == "resume" and before.is_paused:
            assert after.is_rolling if is_fresh(w) else after.is_awaiting_pulse, "rule 7"
    w.settle()
    after = w.status()
    if w.driver.acted[acted:]:  # rule 2 (and 1, 6, 8): no action without a fresh beat
        assert is_fresh(w), f"{name}: action at {w.clock.now()}, last beat {w.acked_beat}"
    if before.is_paused and name not in ("resume", "abort", "rollback"):
        assert after is before, f"rule 7: {name} lost a pause ({after.name})"
    if name == "tick" and not is_fresh(w):
        assert not after.is_rolling, f"rule 2: still {after.name} past the lease"
    return w


def check_state(world: World) -> None:
    """§2 and §3 invariants that hold in every reachable state."""
    record = world.store.get_update(world.key)
    statuses = [e.status for e in record.status_events]
    assert statuses[0] is S.ROLL_FORWARD_AWAITING_PULSE  # rule 1
    for a, b in itertools.pairwise(statuses):
        assert b in ALLOWED[a], f"{a.name} -> {b.name} is not allowed"
    terminal = [i for i, s in enumerate(statuses) if s.is_terminal]
    assert terminal in ([], [len(statuses) - 1]), "a terminal status changed"
    run = world.run
    if terminal:
        assert run is None and world.store.active_update(JOB) is None
    else:  # memory matches storage: what a new leader would rebuild
        assert run is not None and run.status is statuses[-1]
        reborn = UpdateRun(record)
        assert reborn.counts() == run.counts() and reborn.in_flight() == run.in_flight()
    forward = [e.instance_id for e in record.instance_events if e.action is A.INSTANCE_UPDATING]
    back = [e.instance_id for e in record.instance_events if e.action is A.INSTANCE_ROLLING_BACK]
    assert back == list(reversed(forward))[: len(back)], "rollback not in reverse order"
    if statuses[-1] is S.ROLLED_BACK:
        assert back == list(reversed(forward))
    counts = Counter((e.instance_id, e.action) for e in record.instance_events)
    assert max(counts.values(), default=1) == 1, "an instance event written twice"
    settings = record.definition.settings
    limit = settings.strategy.sizes[0]
    for starts, ends in (
        (A.INSTANCE_UPDATING, (A.INSTANCE_UPDATED, A.INSTANCE_UPDATE_FAILED)),
        (A.INSTANCE_ROLLING_BACK, (A.INSTANCE_ROLLED_BACK, A.INSTANCE_ROLLBACK_FAILED)),
    ):  # per direction: a rollback takes over the forward instances still in flight
        working: set[int] = set()
        for e in record.instance_events:
            if e.action is starts:
                working.add(e.instance_id)
            elif e.action in ends:
                working.discard(e.instance_id)
            assert len(working) <= limit, f"{len(working)} in flight, more than {limit}"
    for before, after in itertools.pairwise(record.status_events):
        if before.status.is_paused:
            assert after.cause is Cause.OPERATOR, "a pause ended without an operator"
    if terminal:  # terminal is final: every command is refused or a no-op
        after = world.copy()
        for verb in ("pause", "resume", "abort", "rollback"):
            with contextlib.suppress(PulsegateError):
                after.commands().update(world.key, verb, "op", "")
            assert after.status() is statuses[-1], f"{verb} changed a finished update"


def canonical(world: World) -> tuple[object, ...]:
    """What decides the future (times relative to now): two states with one key behave alike."""
    record = world.store.get_update(world.key)
    run = world.run
    progress: object = None
    if run is not None:
        parts = [run.forward, *([run.backward] if run.backward is not None else [])]
        progress = tuple(
            (p.cursor, tuple(sorted(p.working)), tuple(p.failed), p.succeeded) for p in parts
        )
    pulse = world.memory.pulse
    now = world.clock.now()
    lease = pulse.lease_end(world.key)
    seen = tuple(
        (i, o.state.value, o.config == NEW, o.failures)
        for i, o in sorted(world.driver.seen.items())
    )
    statuses = [e.status for e in record.status_events]
    return (
        statuses[-1],
        any(s.is_rolling for s in statuses),  # past the initial wait (rule 3)
        progress,
        seen,
        is_fresh(world),
        world.acked_beat is None,
        pulse.last_beat(world.key) is None,
        None if lease is None else lease > now,
    )


def explore(settings: Settings, depth: int) -> int:
    root = World(settings)
    check_state(root)
    visited = {canonical(root)}
    frontier: deque[tuple[World, int]] = deque([(root, 0)])
    while frontier:
        world, level = frontier.popleft()
        if level == depth:
            continue
        for move in moves(world):
            child = step(world, move)
            key = canonical(child)
            if key in visited:
                continue
            visited.add(key)
            check_state(child)
            frontier.append((child, level + 1))
    return len(visited)


CASES = [
    (strategy, resume)
    for strategy in (Strategy.queue(2), Strategy.batch(2))
    for resume in (HeartbeatResume.AUTO, HeartbeatResume.OPERATOR)
]


@pytest.mark.parametrize(
    ("strategy", "resume"), CASES, ids=[f"{s.kind.value}-{r.name}" for s, r in CASES]
)
def test_every_interleaving_keeps_the_heartbeat_rules(
    strategy: Strategy, resume: HeartbeatResume
) -> None:
    settings = Settings(
        strategy=strategy,
        min_wait_in_instance_running_ms=0,
        heartbeat_timeout_ms=TIMEOUT,
        heartbeat_resume=resume,
    )
    started = time.perf_counter()
    states = explore(settings, DEPTH)
    seconds = time.perf_counter() - started
    case = f"{strategy.kind.value} {resume.name}"
    print(f"exhaustive: {case}: {states} states to depth {DEPTH}, {seconds:.1f} s")
    assert states > 100  # the exploration reached past the first few moves
