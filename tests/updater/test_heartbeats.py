"""Every heartbeat rule of DESIGN §3 that needs no network, and every answer."""

import pytest

from updater.engine import UpdateRun
from updater.errors import InvalidRequest, TransitionError
from updater.events import Cause
from updater.pulse import Gate, HeartbeatAnswer, PulseMonitor
from updater.settings import HeartbeatResume, Strategy
from updater.status import UpdateStatus

from builders import World, fast_settings

S = UpdateStatus
H = HeartbeatAnswer
TIMEOUT = 2_000


def coordinated(**overrides) -> object:
    return fast_settings(heartbeat_timeout_ms=TIMEOUT, **overrides)


def beat(world: World, run: UpdateRun) -> H:
    return world.simulation.heartbeat(run)


def do(world: World, run: UpdateRun, step) -> None:
    if step is not None:
        world.simulation.persist(run, step)


def test_rule1_starts_awaiting_pulse_and_acts_only_after_the_first_heartbeat() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated())
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE
    for _ in range(5):
        step = world.step(run)
        assert not step.actions and not step.has_writes
        world.advance(TIMEOUT)
    assert world.sim.action_log == []
    assert beat(world, run) is H.OK
    assert run.status is S.ROLLING_FORWARD
    event = run.status_events[-1]
    assert (event.cause, event.user) == (Cause.HEARTBEAT, "monitor")
    assert world.step(run).actions


def test_rule2_stale_heartbeat_blocks_every_action_and_is_recorded_at_the_lease_end() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated(strategy=Strategy.queue(1)))
    beat(world, run)
    last_beat = world.clock.now()
    world.run(run)  # no more heartbeats: instance 0 starts, then the lease runs out
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE
    event = run.status_events[-1]
    assert event.timestamp_ms == last_beat + TIMEOUT  # recorded by the timer, on time
    assert event.cause is Cause.HEARTBEAT_TIMEOUT and "timed out" in event.message
    assert all(t < last_beat + TIMEOUT for t, _, _ in world.sim.action_log)
    logged = len(world.sim.action_log)
    world.advance(60_000)
    world.run(run)
    assert len(world.sim.action_log) == logged


def test_gate_is_strict_at_the_timeout() -> None:
    pulse = PulseMonitor()
    world = World(old_count=1)
    run = world.start(1, coordinated())
    pulse.track(run.key, TIMEOUT, 0)
    pulse.beat(run.key, 100)
    assert pulse.check(run.key, 100 + TIMEOUT - 1).gate is Gate.FRESH
    assert pulse.check(run.key, 100 + TIMEOUT).gate is Gate.EXPIRED
    assert not pulse.is_fresh(run.key, 100 + TIMEOUT)


def test_rule3_auto_resume_on_a_fresh_heartbeat() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated())
    beat(world, run)
    world.run(run, for_ms=10 * TIMEOUT)
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE
    assert beat(world, run) is H.OK
    assert run.status is S.ROLLING_FORWARD


def test_rule3_operator_policy_holds_after_lost_heartbeats() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated(heartbeat_resume=HeartbeatResume.OPERATOR))
    assert beat(world, run) is H.OK  # the initial wait is not a loss: the first beat moves it
    assert run.status is S.ROLLING_FORWARD
    world.run(run, for_ms=10 * TIMEOUT)
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE and run.is_held_for_operator
    world.advance(TIMEOUT)
    with pytest.raises(TransitionError, match="not fresh"):
        run.resume(world.pulse, "bob", "", world.clock.now())
    assert beat(world, run) is H.OK
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE  # the monitor alone may not unblock it
    do(world, run, run.resume(world.pulse, "bob", "checked", world.clock.now()))
    assert run.status is S.ROLLING_FORWARD
    assert run.status_events[-1].user == "bob"


def test_rule3_pause_then_resume_while_silent_does_not_launder_the_operator_hold() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated(heartbeat_resume=HeartbeatResume.OPERATOR))
    beat(world, run)
    world.run(run, for_ms=10 * TIMEOUT)
    assert run.is_held_for_operator
    do(world, run, run.pause("bob", "look", world.clock.now()))
    do(world, run, run.resume(world.pulse, "bob", "", world.clock.now()))  # still silent
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE and run.is_held_for_operator
    assert beat(world, run) is H.OK
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE  # the toggling monitor alone: no
    # Silence during an operator's pause is a loss too, once the update has rolled.
    do(world, run, run.resume(world.pulse, "bob", "back", world.clock.now()))
    assert run.status is S.ROLLING_FORWARD
    do(world, run, run.pause("bob", "", world.clock.now()))
    world.advance(2 * TIMEOUT)
    do(world, run, run.resume(world.pulse, "bob", "", world.clock.now()))
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE and run.is_held_for_operator
    assert beat(world, run) is H.OK and run.status is S.ROLL_FORWARD_AWAITING_PULSE


def test_rule3_a_pause_in_the_initial_wait_is_not_a_loss() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated(heartbeat_resume=HeartbeatResume.OPERATOR))
    do(world, run, run.pause("bob", "", world.clock.now()))
    do(world, run, run.resume(world.pulse, "bob", "", world.clock.now()))
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE and not run.is_held_for_operator
    assert beat(world, run) is H.OK and run.status is S.ROLLING_FORWARD


def test_rule2_a_late_heartbeat_does_not_hide_a_lease_that_ended_unrecorded() -> None:
    # The leader loop was late (or its write failed): the lease ended, nobody recorded it, and
    # a heartbeat arrives. The gap goes into the audit trail at the lease end, before anything.
    world = World(old_count=3)
    run = world.start(3, coordinated())
    beat(world, run)
    world.step(run)
    ended = world.clock.now() + TIMEOUT
    world.advance(TIMEOUT + 500)
    assert run.status is S.ROLLING_FORWARD  # nobody looked in time
    answer, to_record = run.heartbeat(world.pulse, "m", world.clock.now())
    assert (answer, to_record) == (H.OK, True)
    step = run.plan(world.sim.instances(run.key.job), world.pulse, world.clock.now())
    assert not step.actions  # the plan records the lapse first, although the beat is fresh
    assert step.transition.status is S.ROLL_FORWARD_AWAITING_PULSE
    assert (step.transition.timestamp_ms, step.transition.cause) == (ended, Cause.HEARTBEAT_TIMEOUT)
    do(world, run, step)
    do(world, run, run.pulse_step(world.pulse, "m", world.clock.now()))  # AUTO: back at once
    assert [e.status for e in run.status_events[-2:]] == [
        S.ROLL_FORWARD_AWAITING_PULSE,
        S.ROLLING_FORWARD,
    ]
    assert run.pulse_step(world.pulse, "m", world.clock.now()) is None
    assert world.step(run).actions or run.counts().in_flight


def test_rule2_a_heartbeat_handled_late_counts_from_when_it_arrived() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated())
    arrived = world.clock.now()
    assert run.heartbeat(world.pulse, "m", arrived) == (H.OK, True)
    # The loop gets to it only after the lease it started has ended: no unblock.
    assert run.pulse_step(world.pulse, "m", arrived + TIMEOUT) is None
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE
    assert run.pulse_step(world.pulse, "m", arrived + TIMEOUT - 1) is not None


def test_rule4_heartbeats_are_never_written() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated())
    beat(world, run)
    writes = world.store.write_count
    for _ in range(10):
        assert beat(world, run) is H.OK
    assert world.store.write_count == writes


def test_rule5_answers() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated())
    assert beat(world, run) is H.OK  # awaiting → OK (and unblocks)
    assert beat(world, run) is H.OK  # rolling → OK
    do(world, run, run.pause("bob", "looking", world.clock.now()))
    assert beat(world, run) is H.PAUSED
    do(world, run, run.abort("bob", "", world.clock.now()))
    assert beat(world, run) is H.FINISHED
    plain = World(old_count=3)
    other = plain.start(3, fast_settings())
    with pytest.raises(InvalidRequest) as raised:
        plain.simulation.heartbeat(other)
    assert raised.value.field == "key" and "not coordinated" in raised.value.rule


def test_rule5_heartbeat_while_paused_lets_resume_proceed_at_once() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated())
    beat(world, run)
    do(world, run, run.pause("bob", "", world.clock.now()))
    world.advance(TIMEOUT * 3)
    beat(world, run)
    do(world, run, run.resume(world.pulse, "bob", "", world.clock.now()))
    assert run.status is S.ROLLING_FORWARD


def test_rule6_heartbeats_are_needed_during_rollback() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated(min_wait_in_instance_running_ms=5 * TIMEOUT))
    beat(world, run)
    world.step(run)
    do(world, run, run.rollback("bob", "bad", world.clock.now()))
    assert run.status is S.ROLLING_BACK
    world.run(run, for_ms=10 * TIMEOUT)
    assert run.status is S.ROLL_BACK_AWAITING_PULSE
    logged = len(world.sim.action_log)
    world.advance(TIMEOUT)
    world.run(run, for_ms=10 * TIMEOUT)
    assert len(world.sim.action_log) == logged
    assert beat(world, run) is H.OK
    assert run.status is S.ROLLING_BACK


def test_rule7_pause_is_explicit_and_resume_follows_heartbeat_freshness() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated())
    do(world, run, run.pause("bob", "wait for the DBA", world.clock.now()))
    assert run.status is S.ROLL_FORWARD_PAUSED
    assert world.store.get_update(run.key).pause_event.message == "wait for the DBA"
    assert run.pause("bob", "again", world.clock.now()) is None  # same status: no-op
    beat(world, run)
    assert run.status is S.ROLL_FORWARD_PAUSED  # heartbeats never end a pause
    world.advance(TIMEOUT)
    do(world, run, run.resume(world.pulse, "bob", "", world.clock.now()))
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE  # stale: blocked, not rolling
    assert run.resume(world.pulse, "bob", "", world.clock.now()) is None
    beat(world, run)
    assert run.status is S.ROLLING_FORWARD
    assert run.resume(world.pulse, "bob", "", world.clock.now()) is None


def test_pause_from_awaiting_and_resume_of_uncoordinated() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated())
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE
    do(world, run, run.pause("bob", "", world.clock.now()))
    assert run.status is S.ROLL_FORWARD_PAUSED
    assert beat(world, run) is H.PAUSED
    do(world, run, run.resume(world.pulse, "bob", "", world.clock.now()))
    assert run.status is S.ROLLING_FORWARD  # the beat while paused was recorded
    other = World(old_count=3)
    plain = other.start(3, fast_settings())
    do(other, plain, plain.pause("bob", "", other.clock.now()))
    do(other, plain, plain.resume(other.pulse, "bob", "", other.clock.now()))
    assert plain.status is S.ROLLING_FORWARD


def test_paused_during_rollback_answers_paused_and_resumes_backward() -> None:
    world = World(old_count=3)
    run = world.start(3, coordinated(strategy=Strategy.queue(1)))
    beat(world, run)
    world.step(run)
    do(world, run, run.rollback("bob", "", world.clock.now()))
    do(world, run, run.pause("bob", "", world.clock.now()))
    assert run.status is S.ROLL_BACK_PAUSED
    assert beat(world, run) is H.PAUSED
    do(world, run, run.resume(world.pulse, "bob", "", world.clock.now()))
    assert run.status is S.ROLLING_BACK


def rehydrate(world: World, run: UpdateRun, takeover: int) -> UpdateRun:
    """A new leader at `takeover` (now): the production loop's takeover, rebuilding the run
    from storage with an empty pulse monitor."""
    assert world.clock.now() == takeover
    world.simulation.fail_over()
    return world.simulation.run_of(run.key)


def test_rule8_after_failover_no_action_until_a_heartbeat_and_awaiting_only_after_a_timeout() -> (
    None
):
    world = World(old_count=4)
    run = world.start(4, coordinated(strategy=Strategy.queue(1)))
    beat(world, run)
    world.step(run)
    takeover = world.clock.now() + 5
    world.advance(5)
    reborn = rehydrate(world, run, takeover)
    assert reborn.status is S.ROLLING_FORWARD
    logged = len(world.sim.action_log)
    world.advance(TIMEOUT - 10)
    step = world.step(reborn)
    assert not step.actions and not step.has_writes  # held, nothing recorded yet
    assert step.wake_at_ms == takeover + TIMEOUT
    world.sim.advance_to(takeover + TIMEOUT)
    world.step(reborn)
    assert reborn.status is S.ROLL_FORWARD_AWAITING_PULSE
    assert reborn.status_events[-1].timestamp_ms == takeover + TIMEOUT
    assert len(world.sim.action_log) == logged
    beat(world, reborn)
    assert reborn.status is S.ROLLING_FORWARD
    world.simulation.heartbeat_interval_ms = TIMEOUT // 4
    world.run(reborn)
    assert reborn.status is S.ROLLED_FORWARD


def test_rule8_heartbeat_reaching_the_new_leader_in_time_continues_without_awaiting() -> None:
    world = World(old_count=2)
    run = world.start(2, coordinated(min_wait_in_instance_running_ms=0))
    beat(world, run)
    world.step(run)
    reborn = rehydrate(world, run, world.clock.now())
    world.advance(TIMEOUT // 2)
    beat(world, reborn)
    world.simulation.heartbeat_interval_ms = TIMEOUT // 4
    world.run(reborn)
    assert reborn.status is S.ROLLED_FORWARD
    assert S.ROLL_FORWARD_AWAITING_PULSE not in world.statuses(reborn)[1:]


def test_rule8_paused_stays_paused_and_uncoordinated_continues() -> None:
    world = World(old_count=2)
    paused = world.start(2, coordinated(), update_id="p")
    do(world, paused, paused.pause("bob", "", world.clock.now()))
    reborn = rehydrate(world, paused, world.clock.now())
    world.advance(10 * TIMEOUT)
    assert not world.step(reborn).has_writes
    assert reborn.status is S.ROLL_FORWARD_PAUSED

    other = World(old_count=2)
    run = other.start(2, fast_settings())
    other.step(run)
    reborn = UpdateRun(other.store.get_update(run.key))
    other.run(reborn)
    assert reborn.status is S.ROLLED_FORWARD
