"""The planner end to end on the sim driver: thresholds, rollback order, scoped, add/remove-only,
abort, error, rehydration."""

import pytest

from scheduler.drivers.sim import SimBehaviour
from updater.engine import UpdateRun
from updater.errors import TransitionError
from updater.events import Cause, InstanceAction
from updater.ranges import Range
from updater.settings import Strategy
from updater.status import UpdateStatus

from builders import JOB, NEW, OLD, World, fast_settings

A = InstanceAction
S = UpdateStatus
CRASHING = SimBehaviour(
    start_ms=100,
    healthy_after_ms=None,
    crash_after_ms=100,
    crashes=-1,
    restart_delay_ms=100,
    kill_ms=50,
)
NEVER_HEALTHY = SimBehaviour(
    start_ms=100, healthy_after_ms=None, liveness_ms=500, restart_delay_ms=100, kill_ms=50
)


def test_simple_update_events_in_order() -> None:
    world = World(old_count=3)
    run = world.run(world.start(3))
    assert run.status is S.ROLLED_FORWARD
    assert world.actions(run) == [
        (0, A.INSTANCE_UPDATING),
        (0, A.INSTANCE_UPDATED),
        (1, A.INSTANCE_UPDATING),
        (1, A.INSTANCE_UPDATED),
        (2, A.INSTANCE_UPDATING),
        (2, A.INSTANCE_UPDATED),
    ]
    assert world.desired() == dict.fromkeys(range(3), NEW)
    assert world.store.active_update(JOB) is None
    final = run.status_events[-1]
    assert final.cause is Cause.COMPLETE and final.message == "3 of 3 instance(s) updated"


def test_instance_waits_min_wait_healthy_before_counting_as_updated() -> None:
    world = World(old_count=1)
    run = world.run(world.start(1, fast_settings(min_wait_in_instance_running_ms=5_000)))
    events = world.instance_events(run)
    # replace: kill 50 ms + start 100 + healthy 100, then 5 s of minWait
    assert events[1].timestamp_ms - events[0].timestamp_ms == 50 + 100 + 100 + 5_000


def test_per_instance_failures_are_tolerated_up_to_the_limit() -> None:
    once = SimBehaviour(
        start_ms=100,
        healthy_after_ms=300,
        crash_after_ms=100,
        crashes=1,
        restart_delay_ms=100,
        kill_ms=50,
    )
    world = World(old_count=2, behaviours={NEW: once})
    run = world.run(world.start(2, fast_settings(max_per_instance_failures=1)))
    assert run.status is S.ROLLED_FORWARD
    world = World(old_count=2, behaviours={NEW: once})
    run = world.run(world.start(2, fast_settings(max_per_instance_failures=0)))
    assert run.status is S.ROLLED_BACK


def test_failed_instances_within_tolerance_still_roll_forward() -> None:
    world = World(old_count=3, behaviours={NEW: CRASHING})
    run = world.run(world.start(3, fast_settings(max_failed_instances=3)))
    assert run.status is S.ROLLED_FORWARD
    assert world.touched(run, A.INSTANCE_UPDATE_FAILED) == [0, 1, 2]
    assert "3 failed (tolerated)" in run.status_events[-1].message


def test_crossing_max_failed_instances_rolls_back_in_exact_reverse_order() -> None:
    world = World(old_count=4, behaviours={NEW: CRASHING})
    run = world.run(world.start(6, fast_settings(max_failed_instances=2)))
    assert run.status is S.ROLLED_BACK
    # forward order: added 4, 5 then changed 0..3; the third failure (instance 0) trips it
    assert world.touched(run, A.INSTANCE_UPDATING) == [4, 5, 0]
    assert world.touched(run, A.INSTANCE_ROLLING_BACK) == [0, 5, 4]
    assert world.touched(run, A.INSTANCE_ROLLED_BACK) == [0, 5, 4]
    failure = world.store.get_update(run.key).status_events[1]
    assert failure.status is S.ROLLING_BACK and failure.cause is Cause.FAILURE
    assert "instance 0 failed" in failure.message and "maxFailedInstances=2" in failure.message
    assert world.desired() == dict.fromkeys(range(4), OLD)  # added instances removed again


def test_failure_without_rollback_fails_the_update() -> None:
    world = World(old_count=3, behaviours={NEW: CRASHING})
    run = world.run(world.start(3, fast_settings(rollback_on_failure=False)))
    assert run.status is S.FAILED
    assert world.touched(run, A.INSTANCE_UPDATE_FAILED) == [0]
    assert world.desired()[0] == NEW and world.desired()[1] == OLD  # left as it is


def test_failure_during_rollback_fails_the_update() -> None:
    world = World(old_count=3, behaviours={NEW: CRASHING, OLD: CRASHING})
    world.sim.seed(JOB, dict.fromkeys(range(3), OLD), 0)
    run = world.run(world.start(3, fast_settings()))
    assert run.status is S.FAILED
    assert world.statuses(run) == [S.ROLLING_FORWARD, S.ROLLING_BACK, S.FAILED]
    assert world.touched(run, A.INSTANCE_ROLLBACK_FAILED) == [0]


def test_never_healthy_config_fails_through_liveness_restarts() -> None:
    world = World(old_count=2, behaviours={NEW: NEVER_HEALTHY})
    run = world.run(world.start(2))
    assert run.status is S.ROLLED_BACK
    failed = [e for e in world.instance_events(run) if e.action is A.INSTANCE_UPDATE_FAILED]
    assert "health check never passed" in failed[0].message


def test_scoped_canary_touches_only_its_instances_and_skips_unchanged_ones() -> None:
    world = World(old_count=5)
    world.sim.seed(JOB, {}, 0)
    settings = fast_settings(update_only_these_instances=(Range(1, 2),))
    run = world.run(world.start(5, settings))
    assert run.status is S.ROLLED_FORWARD
    assert world.touched(run, A.INSTANCE_UPDATING) == [1, 2]
    assert world.desired() == {0: OLD, 1: NEW, 2: NEW, 3: OLD, 4: OLD}
    # A second canary over 1-3: 1 and 2 are at the target already and get no event.
    run2 = world.run(
        world.start(5, fast_settings(update_only_these_instances=(Range(1, 3),)), update_id="u2")
    )
    assert run2.status is S.ROLLED_FORWARD
    assert {i for i, _ in world.actions(run2)} == {3}


def test_add_only_update() -> None:
    world = World(old_count=2)
    run = world.run(world.start(4, config=OLD))
    assert run.status is S.ROLLED_FORWARD
    assert world.touched(run, A.INSTANCE_UPDATING) == [2, 3]
    assert world.desired() == dict.fromkeys(range(4), OLD)


def test_remove_only_update() -> None:
    world = World(old_count=4)
    run = world.run(world.start(2, config=OLD))
    assert run.status is S.ROLLED_FORWARD
    assert world.touched(run, A.INSTANCE_UPDATED) == [2, 3]
    assert world.desired() == dict.fromkeys(range(2), OLD)
    assert set(world.sim.instances(JOB)) == {0, 1}


def test_update_of_a_new_job_adds_every_instance() -> None:
    world = World(old_count=0)
    run = world.run(world.start(3, fast_settings(strategy=Strategy.batch(3))))
    assert run.status is S.ROLLED_FORWARD
    assert world.desired() == dict.fromkeys(range(3), NEW)
    world.run(run2 := world.start(0, update_id="u2"))
    assert run2.status is S.ROLLED_FORWARD and world.desired() == {}


def test_abort_leaves_the_job_as_it_is_and_is_final() -> None:
    world = World(old_count=4)
    run = world.start(4, fast_settings(strategy=Strategy.batch(2)))
    world.step(run)
    world.simulation.persist(run, run.abort("bob", "enough", world.clock.now()))
    assert run.status is S.ABORTED
    world.run(run)
    assert world.desired() == {0: NEW, 1: NEW, 2: OLD, 3: OLD}
    assert run.abort("bob", "again", world.clock.now()) is None  # same status: a no-op
    for command in (run.pause, run.rollback):
        with pytest.raises(TransitionError, match="final"):
            command("bob", "", world.clock.now())
    with pytest.raises(TransitionError):
        run.resume(world.pulse, "bob", "", world.clock.now())
    assert world.store.active_update(JOB) is None


def test_manual_rollback_works_without_rollback_on_failure() -> None:
    world = World(old_count=3)
    run = world.start(3, fast_settings(rollback_on_failure=False))
    world.step(run)
    world.simulation.persist(run, run.rollback("bob", "wrong build", world.clock.now()))
    assert run.rollback("bob", "again", world.clock.now()) is None  # already rolling back
    world.run(run)
    assert run.status is S.ROLLED_BACK
    assert world.desired() == dict.fromkeys(range(3), OLD)


def test_rollback_before_anything_was_touched_finishes_at_once() -> None:
    world = World(old_count=3)
    run = world.start(3, fast_settings(heartbeat_timeout_ms=1000))
    world.simulation.persist(run, run.rollback("bob", "", world.clock.now()))
    world.step(run)
    assert run.status is S.ROLLED_BACK


def test_error_is_final() -> None:
    world = World(old_count=1)
    run = world.start(1)
    world.simulation.persist(run, run.error("corrupt definition", world.clock.now()))
    assert run.status is S.ERROR
    assert run.error("again", world.clock.now()) is None


def test_rehydration_continues_without_repeating_events() -> None:
    world = World(old_count=6)
    run = world.start(6, fast_settings(strategy=Strategy.queue(2)))
    for _ in range(8):  # part way through
        world.step(run)
        world.advance(200)
    before = world.actions(run)
    assert 0 < len(before) < 12
    reborn = UpdateRun(world.store.get_update(run.key))
    assert reborn.progress.cursor == run.progress.cursor
    assert set(reborn.progress.working) == set(run.progress.working)
    world.run(reborn)
    assert reborn.status is S.ROLLED_FORWARD
    actions = world.actions(reborn)
    assert actions[: len(before)] == before
    assert len(actions) == len(set(actions)) == 12


def test_rehydration_during_rollback() -> None:
    world = World(old_count=4, behaviours={NEW: CRASHING})
    run = world.start(
        4, fast_settings(strategy=Strategy.batch(2), min_wait_in_instance_running_ms=3000)
    )
    while run.status is not S.ROLLING_BACK:
        world.step(run)
        world.advance(100)
    world.step(run)
    reborn = UpdateRun(world.store.get_update(run.key))
    assert reborn.backward is not None and reborn.backward.order == [1, 0]
    world.run(reborn)
    assert reborn.status is S.ROLLED_BACK
    assert world.touched(reborn, A.INSTANCE_ROLLING_BACK) == [1, 0]


def test_storage_refuses_a_second_active_update_and_stale_writes() -> None:
    from updater.errors import StaleWrite, UpdateConflict
    from updater.storage import UpdateWrite

    world = World(old_count=2)
    run = world.start(2)
    with pytest.raises(UpdateConflict) as raised:
        world.start(2, update_id="u2")
    assert raised.value.active == run.key
    with pytest.raises(StaleWrite):
        world.store.write(UpdateWrite.make(run.key, 5))
