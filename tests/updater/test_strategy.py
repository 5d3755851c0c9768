"""Strategies: queue, batch, variable batch (last size repeats), autopause, mirrored rollback."""

import itertools

from updater.engine import UpdateRun
from updater.events import InstanceAction
from updater.settings import Strategy
from updater.status import UpdateStatus
from updater.strategy import Schedule, forward_bounds, mirrored_bounds

from builders import NEW, World, fast_settings

A = InstanceAction
S = UpdateStatus


def test_bounds() -> None:
    assert forward_bounds(Strategy.batch(2), 5) == (2, 4, 5)
    assert forward_bounds(Strategy.variable_batch([2, 3, 5]), 20) == (2, 5, 10, 15, 20)
    assert forward_bounds(Strategy.batch(3), 0) == ()
    # Forward batches 2,3,5(2 touched) roll back as 2,3,2 (mirrored).
    assert mirrored_bounds((2, 5, 10, 15, 20), 7) == (2, 5, 7)
    assert mirrored_bounds((2, 5, 10), 0) == ()


def test_next_starts() -> None:
    queue = Schedule.forward(Strategy.queue(3), 10)
    assert queue.next_starts(0, 0, 10) == range(0, 3)
    assert queue.next_starts(3, 2, 10) == range(3, 4)
    assert queue.next_starts(9, 0, 10) == range(9, 10)
    assert queue.next_starts(10, 0, 10) == range(0)
    batch = Schedule.forward(Strategy.variable_batch([1, 2]), 6)
    assert batch.next_starts(0, 0, 6) == range(0, 1)
    assert batch.next_starts(1, 1, 6) == range(0)  # one in flight: wait
    assert batch.next_starts(1, 0, 6) == range(1, 3)
    assert batch.next_starts(5, 0, 6) == range(5, 6)


def start_waves(world: World, run: UpdateRun) -> list[list[int]]:
    """Instances grouped by the time their INSTANCE_UPDATING was written."""
    events = [e for e in world.instance_events(run) if e.action is A.INSTANCE_UPDATING]
    return [
        [e.instance_id for e in g] for _, g in itertools.groupby(events, lambda e: e.timestamp_ms)
    ]


def max_in_flight(world: World, run: UpdateRun) -> int:
    in_flight, peak = set(), 0
    for e in world.instance_events(run):
        if e.action is A.INSTANCE_UPDATING:
            in_flight.add(e.instance_id)
        else:
            in_flight.discard(e.instance_id)
        peak = max(peak, len(in_flight))
    return peak


def test_queue_keeps_n_in_flight_and_refills() -> None:
    world = World(old_count=5)
    run = world.run(world.start(5, fast_settings(strategy=Strategy.queue(2))))
    assert run.status is S.ROLLED_FORWARD
    assert max_in_flight(world, run) == 2
    assert start_waves(world, run)[0] == [0, 1]


def test_batch_starts_the_next_batch_when_none_are_in_flight() -> None:
    world = World(old_count=5)
    run = world.run(world.start(5, fast_settings(strategy=Strategy.batch(2))))
    assert run.status is S.ROLLED_FORWARD
    assert start_waves(world, run) == [[0, 1], [2, 3], [4]]


def test_variable_batch_repeats_the_last_size() -> None:
    world = World(old_count=10)
    run = world.run(world.start(10, fast_settings(strategy=Strategy.variable_batch([1, 2, 3]))))
    assert run.status is S.ROLLED_FORWARD
    assert start_waves(world, run) == [[0], [1, 2], [3, 4, 5], [6, 7, 8], [9]]


def resume_until_done(world: World, run: UpdateRun) -> int:
    pauses = 0
    world.run(run)
    while run.status is S.ROLL_FORWARD_PAUSED:
        pauses += 1
        assert pauses <= 10, "auto-paused again and again"
        world.simulation.persist(run, run.resume(world.pulse, "bob", "", world.clock.now()))
        world.run(run)
    return pauses


def test_autopause_before_every_batch_after_the_first_never_at_the_end() -> None:
    world = World(old_count=5)
    run = world.start(5, fast_settings(strategy=Strategy.batch(2), auto_pause_after_batch=True))
    world.run(run)
    assert run.status is S.ROLL_FORWARD_PAUSED
    assert start_waves(world, run) == [[0, 1]]
    assert run.status_events[-1].message == "auto-paused before batch 2 of 3"
    assert resume_until_done(world, run) == 2  # before batches 2 and 3
    assert run.status is S.ROLLED_FORWARD
    assert start_waves(world, run) == [[0, 1], [2, 3], [4]]


def test_autopause_variable_batch_pauses_once_per_batch() -> None:
    """Aurora issue 89: [5, 5] over 10 instances paused 4 times instead of once."""
    world = World(old_count=10)
    run = world.start(
        10, fast_settings(strategy=Strategy.variable_batch([5, 5]), auto_pause_after_batch=True)
    )
    assert resume_until_done(world, run) == 1
    assert run.status is S.ROLLED_FORWARD


def test_autopause_is_not_repeated_after_a_failover() -> None:
    world = World(old_count=4)
    run = world.start(4, fast_settings(strategy=Strategy.batch(2), auto_pause_after_batch=True))
    world.run(run)
    assert run.status is S.ROLL_FORWARD_PAUSED
    world.simulation.persist(run, run.resume(world.pulse, "bob", "", world.clock.now()))
    reborn = UpdateRun(world.store.get_update(run.key))  # a new leader
    world.run(reborn)
    assert reborn.status is S.ROLLED_FORWARD
    assert world.statuses(reborn).count(S.ROLL_FORWARD_PAUSED) == 1


def test_rollback_mirrors_variable_batches() -> None:
    world = World(old_count=10)
    run = world.start(10, fast_settings(strategy=Strategy.variable_batch([2, 3])))
    # Stop after the second batch has started, then roll back by hand.
    while len([e for e in world.instance_events(run) if e.action is A.INSTANCE_UPDATING]) < 5:
        world.step(run)
        world.advance(50)
    world.simulation.persist(run, run.rollback("bob", "", world.clock.now()))
    world.run(run)
    assert run.status is S.ROLLED_BACK
    back = [e for e in world.instance_events(run) if e.action is A.INSTANCE_ROLLING_BACK]
    waves = [
        [e.instance_id for e in g] for _, g in itertools.groupby(back, lambda e: e.timestamp_ms)
    ]
    assert waves == [[4, 3, 2], [1, 0]]
    assert set(world.desired().values()) == {world.old}
    assert NEW not in world.desired().values()
