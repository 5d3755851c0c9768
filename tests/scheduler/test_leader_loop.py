"""The production leader loop on a fake clock, with the in-memory store and the sim driver: its
timers, a failing update's turn, and pruning off the loop's thread."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from scheduler import commands
from scheduler.agenda import RETRY_MS, Agenda
from scheduler.drivers.sim import FakeClock, SimDriver
from scheduler.leader import LeaderLoop
from scheduler.metrics import Metrics
from scheduler.simulation import Simulation, SteadyLeadership
from updater.events import InstanceAction
from updater.job import Job
from updater.keys import JobKey, UpdateKey
from updater.memstore import MemoryStorage
from updater.record import UpdateRequest, plan_update
from updater.settings import Strategy
from updater.storage import UpdateSummary

from builders import JOB, NEW, OLD, START_MS, World, fast_settings
from waiting import wait_until


def test_planning_an_update_again_adds_no_timer() -> None:
    """Each step of a coordinated update wakes at its lease end: one timer, not one a step."""
    world = World(old_count=3)
    run = world.start(3, fast_settings(heartbeat_timeout_ms=5_000, strategy=Strategy.queue(1)))
    world.simulation.heartbeat(run)
    for _ in range(20):
        assert world.step(run).wake_at_ms == START_MS + 5_000
    assert world.simulation.loop.agenda.pending_timers() == 1


def test_an_earlier_wake_up_replaces_a_later_one() -> None:
    agenda = Agenda()
    key = UpdateKey(JOB, "u")
    agenda.schedule(2_000, key)
    agenda.schedule(2_000, key)
    agenda.schedule(3_000, key)  # planned again at 2_000 anyway
    agenda.schedule(1_000, key)
    assert agenda.pending_timers() == 2 and agenda.next_timer_ms() == 1_000
    assert agenda.take(1_000).dirty == {key}
    agenda.schedule(3_000, key)  # after the 1_000 one fired: due again
    assert agenda.take(3_000).dirty == {key}


def test_one_update_whose_step_raises_does_not_stop_the_others_in_that_turn(
    monkeypatch,
) -> None:
    clock = FakeClock(START_MS)
    store = MemoryStorage()
    sim = SimDriver(clock)
    jobs = [JobKey("www", "prod", name) for name in ("a", "b")]
    simulation = Simulation(store, sim, clock)
    keys = {}
    for job in jobs:
        store.create_job(Job.uniform(job, OLD, 2))
        sim.seed(job, {0: OLD, 1: OLD}, 0)
        record, _ = plan_update(
            UpdateRequest(job, NEW, 2, fast_settings()), store.get_job(job), job.name, "al", "", 0
        )
        keys[job] = simulation.start(record).key
    real = sim.instances
    broken: list[JobKey] = []

    def instances(job: JobKey):
        if not broken:  # whichever update the turn plans first
            broken.append(job)
            raise RuntimeError("a bug in one update's step")
        return real(job)

    monkeypatch.setattr(sim, "instances", instances)
    simulation.loop.turn()
    [bad] = broken
    [good] = [job for job in jobs if job != bad]

    def started(job: JobKey) -> int:
        events = store.get_update(keys[job]).instance_events
        return sum(1 for e in events if e.action is InstanceAction.INSTANCE_UPDATING)

    assert started(good) == 1 and started(bad) == 0  # the other one moved in that very turn
    assert simulation.loop.agenda.next_timer_ms() == START_MS + RETRY_MS  # and it is retried
    monkeypatch.undo()
    sim.advance_to(START_MS + RETRY_MS)
    simulation.loop.turn()
    assert started(bad) == 1


class StuckHistory(MemoryStorage):
    """Reading every update's summary (what pruning does) hangs until released."""

    def __init__(self) -> None:
        super().__init__()
        self.pruning = threading.Event()
        self.release = threading.Event()

    def summaries(self, job: JobKey | None = None) -> list[UpdateSummary]:
        if job is None:
            self.pruning.set()
            self.release.wait(60)
        return super().summaries(job)


def test_a_slow_pruning_does_not_hold_up_the_loop() -> None:
    store = StuckHistory()
    clock = FakeClock(START_MS)
    loop = LeaderLoop(
        store,
        SteadyLeadership(),
        SimDriver(clock),
        clock,
        Metrics(CollectorRegistry()),
        command_timeout_s=20,
    )
    loop.start()
    try:
        wait_until(lambda: loop.is_serving and store.pruning.is_set(), timeout=20)
        commands.create_job(loop, Job.uniform(JOB, OLD, 2))  # answered while pruning hangs
        assert store.get_job(JOB) is not None
        assert loop.pruner.is_running
    finally:
        store.release.set()
        loop.stop()


def test_a_step_planned_fresh_is_not_taken_once_the_lease_has_ended() -> None:
    """The apply path checks the gate again: a step planned while the heartbeat was fresh
    and applied after the lease ended is neither written nor taken, and is planned again."""
    world = World(old_count=3)
    run = world.start(3, fast_settings(heartbeat_timeout_ms=5_000))
    loop = world.simulation.loop
    world.simulation.heartbeat(run)
    step = run.plan(world.sim.instances(JOB), loop.pulse, world.clock.now())
    assert step.actions
    world.advance(5_000)  # the loop was slow: the lease ended before the step was applied
    events = len(world.store.get_update(run.key).instance_events)
    assert not loop.applier.apply(run, step)
    assert len(world.store.get_update(run.key).instance_events) == events
    assert world.sim.action_log == [] and run.counts().in_flight == 0
    loop.turn()  # planned again: now it records the timeout instead
    assert world.statuses(run)[-1].is_awaiting_pulse and world.sim.action_log == []
