"""Rules 11-14 in the pure core, on a fake clock: named monitors and quorum, per-batch
acknowledgement (volatile: a failover needs a new ack), bounded blocking counted from storage."""

import pytest

from updater.engine import UpdateRun
from updater.errors import InvalidRequest
from updater.events import SYSTEM_USER, Cause
from updater.pulse import ANONYMOUS, HeartbeatAnswer, PulseMonitor
from updater.settings import OnBlocked, Strategy
from updater.status import UpdateStatus

from builders import World, fast_settings

S = UpdateStatus
TIMEOUT = 2_000
INTERVAL = 500


def coordinated(**overrides) -> object:
    return fast_settings(heartbeat_timeout_ms=TIMEOUT, **overrides)


def beat(
    world: World, run: UpdateRun, monitor: str = ANONYMOUS, ack: int | None = None
) -> HeartbeatAnswer:
    """A heartbeat as the leader handles one: record it, then let the loop record what it means."""
    now = world.clock.now()
    answer, to_record = run.heartbeat(world.pulse, "monitor", now, monitor, ack)
    while to_record:
        step = run.pulse_step(world.pulse, "monitor", now)
        if step is None:
            break
        world.simulation.persist(run, step)
    return answer


def settle(world: World, run: UpdateRun) -> None:
    for _ in range(100):
        step = world.step(run)
        if not (step.has_writes or step.actions):
            return
    raise AssertionError("the update did not settle")


def tick(world: World, run: UpdateRun, ms: int, monitors=(), ack: int | None = None) -> None:
    """Let `ms` pass in heartbeat intervals; at each, every monitor named beats (acking `ack`),
    then the update is planned until it settles."""
    end = world.clock.now() + ms
    while world.clock.now() < end:
        for monitor in monitors:
            beat(world, run, monitor, ack)
        settle(world, run)
        world.advance(INTERVAL)


def failover(world: World, run: UpdateRun) -> UpdateRun:
    """A new leader: the production loop's takeover rebuilds the update from storage, with an
    empty pulse memory (rule 8)."""
    world.simulation.fail_over()
    return world.simulation.run_of(run.key)


# -- rules 11 and 12: named monitors, quorum ---------------------------------------------------


def test_quorum_of_two_blocks_when_one_goes_quiet_and_continues_when_it_returns() -> None:
    world = World(old_count=4)
    run = world.start(4, coordinated(heartbeat_quorum=2, heartbeat_monitors=("a", "b")))
    tick(world, run, 3 * TIMEOUT, monitors=("a",))
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE and world.sim.action_log == []
    tick(world, run, 2 * INTERVAL, monitors=("a", "b"))
    assert run.status is S.ROLLING_FORWARD and world.sim.action_log
    tick(world, run, 3 * TIMEOUT, monitors=("a",))  # b goes quiet
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE
    lapse = run.status_events[-1]
    assert lapse.cause is Cause.HEARTBEAT_TIMEOUT and "quorum 1 of 2 (fresh: a" in lapse.message
    acted = len(world.sim.action_log)
    tick(world, run, 10 * TIMEOUT, monitors=("a",))
    assert len(world.sim.action_log) == acted  # nothing moves on one monitor of two
    tick(world, run, 60_000, monitors=("a", "b"))
    assert run.status is S.ROLLED_FORWARD


def test_the_same_monitor_twice_is_one_of_the_quorum() -> None:
    world = World(old_count=2)
    run = world.start(2, coordinated(heartbeat_quorum=2))
    tick(world, run, 3 * TIMEOUT, monitors=("a", "a"))
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE and world.sim.action_log == []
    tick(world, run, INTERVAL, monitors=("a", "c"))  # any two names count without a list
    assert run.status is S.ROLLING_FORWARD


def test_a_monitor_not_listed_is_refused_naming_the_expected_ones() -> None:
    world = World(old_count=2)
    run = world.start(2, coordinated(heartbeat_monitors=("canary", "slo")))
    with pytest.raises(InvalidRequest) as caught:
        beat(world, run, "intruder")
    assert caught.value.field == "details.monitor"
    assert "expected one of: canary, slo" in caught.value.rule
    assert not world.pulse.is_fresh(run.key, world.clock.now())
    assert beat(world, run, "slo") is HeartbeatAnswer.OK and run.status is S.ROLLING_FORWARD


def test_quorum_lease_ends_with_the_quorums_oldest_beat() -> None:
    pulse = PulseMonitor()
    world = World(old_count=1)
    run = world.start(1, coordinated(heartbeat_quorum=2))
    pulse.track(run.key, TIMEOUT, 0, quorum=2)
    pulse.beat(run.key, 100, monitor="a")
    assert pulse.lease_end(run.key) == TIMEOUT and not pulse.is_fresh(run.key, 150)
    pulse.beat(run.key, 300, monitor="b")
    pulse.beat(run.key, 900, monitor="a")
    assert pulse.lease_end(run.key) == 300 + TIMEOUT
    assert pulse.is_fresh(run.key, 300 + TIMEOUT - 1)
    assert not pulse.is_fresh(run.key, 300 + TIMEOUT)


# -- rule 13: per-batch acknowledgement ------------------------------------------------------


def acked_settings(**overrides) -> object:
    return coordinated(strategy=Strategy.batch(2), heartbeat_ack_batches=True, **overrides)


def test_each_batch_waits_for_its_acknowledgement() -> None:
    world = World(old_count=6)
    run = world.start(6, acked_settings())
    tick(world, run, 10_000, monitors=("v",))
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE
    wait = run.status_events[-1]
    assert (wait.cause, wait.message) == (Cause.ACK_WAIT, "waiting for batch 1 to be acknowledged")
    assert run.current_batch() == (1, [0, 1])
    assert sorted(world.touched(run, world_updating())) == [0, 1]
    with pytest.raises(InvalidRequest) as caught:
        beat(world, run, "v", ack=2)
    assert caught.value.field == "details.ackBatch" and "has not started" in caught.value.rule
    tick(world, run, 60_000, monitors=("v",))  # heartbeats alone never move it on
    assert sorted(world.touched(run, world_updating())) == [0, 1]
    beat(world, run, "v", ack=1)
    assert run.status is S.ROLLING_FORWARD
    assert run.status_events[-1].message == "batch 1 acknowledged"
    tick(world, run, 10_000, monitors=("v",))
    assert run.current_batch() == (2, [2, 3])
    assert run.status_events[-1].message == "waiting for batch 2 to be acknowledged"
    tick(world, run, 10_000, monitors=("v",), ack=2)
    assert run.status is S.ROLLED_FORWARD  # the last batch needs no ack to finish


def world_updating():
    from updater.events import InstanceAction

    return InstanceAction.INSTANCE_UPDATING


def test_an_ack_needs_a_quorum_of_fresh_monitors() -> None:
    world = World(old_count=4)
    run = world.start(4, acked_settings(heartbeat_quorum=2))
    tick(world, run, 10_000, monitors=("a", "b"))
    assert run.status_events[-1].cause is Cause.ACK_WAIT
    tick(world, run, 3 * INTERVAL, monitors=("a", "b"), ack=None)
    beat(world, run, "a", ack=1)
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE
    beat(world, run, "b", ack=1)
    assert run.status is S.ROLLING_FORWARD


def test_acks_are_volatile_a_new_leader_waits_for_a_new_ack() -> None:
    world = World(old_count=4)
    run = world.start(4, acked_settings())
    tick(world, run, 10_000, monitors=("v",))
    beat(world, run, "v", ack=1)
    assert run.status is S.ROLLING_FORWARD
    run = failover(world, run)  # before batch 2 started: the ack is lost with the memory
    tick(world, run, 10_000, monitors=("v",))
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE
    assert run.status_events[-1].message == "waiting for batch 1 to be acknowledged"
    tick(world, run, 20_000, monitors=("v",), ack=1)
    assert run.status is S.ROLLED_FORWARD


def test_an_ack_is_refused_by_an_update_that_takes_none() -> None:
    world = World(old_count=2)
    run = world.start(2, coordinated(strategy=Strategy.batch(1)))
    with pytest.raises(InvalidRequest, match="heartbeatAckBatches is false"):
        beat(world, run, ack=1)


# -- rule 14: bounded blocking ---------------------------------------------------------------

BOUND = 10_000


def test_a_block_past_the_bound_pauses_recorded_by_pulsegate() -> None:
    world = World(old_count=2)
    run = world.start(2, coordinated(max_blocked_ms=BOUND))
    started = run.status_events[-1].timestamp_ms
    assert run.on_blocked_at() == started + BOUND
    step = world.step(run)
    assert step.wake_at_ms == started + BOUND and not step.has_writes
    tick(world, run, BOUND - INTERVAL)
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE
    tick(world, run, 2 * INTERVAL)
    assert run.status is S.ROLL_FORWARD_PAUSED
    event = run.status_events[-1]
    assert (event.user, event.cause, event.timestamp_ms) == (
        SYSTEM_USER,
        Cause.BLOCKED,
        started + BOUND,
    )
    assert f"blocked for {BOUND} ms" in event.message and "onBlocked=PAUSE" in event.message
    assert world.sim.action_log == []


def test_a_failover_neither_resets_nor_extends_the_bound() -> None:
    world = World(old_count=6)
    run = world.start(6, coordinated(max_blocked_ms=BOUND))
    tick(world, run, 1_500, monitors=(ANONYMOUS,))
    tick(world, run, TIMEOUT + INTERVAL)  # the monitor went quiet: blocked
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE
    blocked_at = run.status_events[-1].timestamp_ms
    tick(world, run, BOUND // 2)
    run = failover(world, run)
    assert run.on_blocked_at() == blocked_at + BOUND
    tick(world, run, blocked_at + BOUND - world.clock.now() - 1)
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE
    tick(world, run, INTERVAL)
    assert run.status is S.ROLL_FORWARD_PAUSED
    assert run.status_events[-1].timestamp_ms - blocked_at < BOUND + INTERVAL


def test_a_rollback_started_by_the_bound_is_gated_by_heartbeats() -> None:
    world = World(old_count=4)
    run = world.start(4, coordinated(max_blocked_ms=BOUND, on_blocked=OnBlocked.ROLL_BACK))
    tick(world, run, 1_500, monitors=(ANONYMOUS,))
    assert world.sim.action_log
    tick(world, run, BOUND + TIMEOUT + INTERVAL)  # silence: blocked, then the bound
    statuses = world.statuses(run)
    assert statuses[-2:] == [S.ROLLING_BACK, S.ROLL_BACK_AWAITING_PULSE]
    assert "onBlocked=ROLL_BACK: rolling back" in run.status_events[-2].message
    acted = len(world.sim.action_log)
    tick(world, run, BOUND - 2 * INTERVAL)
    assert len(world.sim.action_log) == acted  # no heartbeat: the rollback takes no action
    tick(world, run, 60_000, monitors=(ANONYMOUS,))
    assert run.status is S.ROLLED_BACK


def test_a_blocked_rollback_pauses_and_abort_aborts() -> None:
    world = World(old_count=4)
    run = world.start(4, coordinated(max_blocked_ms=BOUND, on_blocked=OnBlocked.ROLL_BACK))
    tick(world, run, 1_500, monitors=(ANONYMOUS,))
    tick(world, run, 3 * BOUND)
    assert world.statuses(run)[-3:] == [
        S.ROLLING_BACK,
        S.ROLL_BACK_AWAITING_PULSE,
        S.ROLL_BACK_PAUSED,
    ]
    assert "already rolling back" in run.status_events[-1].message
    world = World(old_count=2)
    run = world.start(2, coordinated(max_blocked_ms=BOUND, on_blocked=OnBlocked.ABORT))
    tick(world, run, 2 * BOUND)
    assert run.status is S.ABORTED and run.status_events[-1].cause is Cause.BLOCKED


def test_waiting_for_an_ack_is_bounded_too() -> None:
    world = World(old_count=4)
    run = world.start(4, acked_settings(max_blocked_ms=BOUND))
    tick(world, run, 10_000, monitors=("v",))
    assert run.status_events[-1].cause is Cause.ACK_WAIT
    tick(world, run, BOUND + INTERVAL, monitors=("v",))
    assert run.status is S.ROLL_FORWARD_PAUSED
    assert "waiting for batch 1 to be acknowledged" in run.status_events[-1].message


def test_a_lapse_recorded_after_a_late_beat_counts_the_monitors_fresh_when_it_happened() -> None:
    world = World(old_count=4)
    run = world.start(4, coordinated(heartbeat_quorum=2))
    tick(world, run, INTERVAL, monitors=("a", "b"))
    assert run.status is S.ROLLING_FORWARD
    world.advance(TIMEOUT // 2)
    beat(world, run, "a")
    world.advance(TIMEOUT // 2 + 100)  # b's lease ended 100 ms ago, unrecorded
    beat(world, run, "a")  # a late beat of a: the lapse is recorded at the lease's end
    settle(world, run)
    lapse = run.status_events[-1]
    assert lapse.cause is Cause.HEARTBEAT_TIMEOUT
    assert "quorum 1 of 2 (fresh: a;" in lapse.message


def test_an_operators_resume_does_not_stand_in_for_an_ack() -> None:
    world = World(old_count=4)
    run = world.start(4, acked_settings())
    tick(world, run, 10_000, monitors=("v",))
    assert run.status_events[-1].cause is Cause.ACK_WAIT
    assert run.resume(world.pulse, "op", "go", world.clock.now()) is None
    world.simulation.persist(run, run.pause("op", "look", world.clock.now()))
    world.simulation.persist(run, run.resume(world.pulse, "op", "go", world.clock.now()))
    tick(world, run, 5_000, monitors=("v",))  # resumed, then waits for the ack again
    assert run.status_events[-1].message == "waiting for batch 1 to be acknowledged"
    assert sorted(world.touched(run, world_updating())) == [0, 1]
