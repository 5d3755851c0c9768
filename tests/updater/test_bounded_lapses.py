"""A flapping monitor cannot grow an update's status events without bound: past LAPSES_KEPT
lapses, each lapse and the heartbeat that ends it share one pair of events, rewritten in place,
and the lapse event counts them. The stored record rebuilds the same run."""

from updater.engine import UpdateRun
from updater.events import LAPSES_KEPT, Cause
from updater.settings import Strategy
from updater.status import UpdateStatus

from builders import World, fast_settings

S = UpdateStatus
TIMEOUT = 2_000
FLAPS = 3 * LAPSES_KEPT


def flap(world: World, run: UpdateRun, times: int) -> None:
    """Silence past the timeout (a lapse is recorded), then one heartbeat (it resumes)."""
    for _ in range(times):
        world.run(run, for_ms=2 * TIMEOUT)
        assert run.status is S.ROLL_FORWARD_AWAITING_PULSE
        world.simulation.heartbeat(run)
        assert run.status is S.ROLLING_FORWARD


def test_lapses_past_the_cap_share_one_pair_of_events_with_a_count() -> None:
    world = World(old_count=3)
    settings = fast_settings(
        heartbeat_timeout_ms=TIMEOUT,
        strategy=Strategy.queue(1),
        min_wait_in_instance_running_ms=10 * FLAPS * TIMEOUT,  # stays active throughout
    )
    run = world.start(3, settings)
    world.simulation.heartbeat(run)
    flap(world, run, LAPSES_KEPT)
    kept = len(run.status_events)
    flap(world, run, FLAPS - LAPSES_KEPT)
    assert len(run.status_events) == kept, "a flapping monitor grew the audit trail"
    lapses = [e for e in run.status_events if e.cause is Cause.HEARTBEAT_TIMEOUT]
    assert sum(e.count for e in lapses) == FLAPS == run.lapses
    *single, shared = lapses
    assert all(e.count == 1 for e in single) and len(single) == LAPSES_KEPT - 1
    assert shared.count == FLAPS - LAPSES_KEPT + 1
    assert f"lapse {FLAPS} of this update" in shared.message and "timed out" in shared.message
    before, last = run.status_events[-2:]
    assert (before, last.cause) == (shared, Cause.HEARTBEAT)
    assert before.timestamp_ms <= last.timestamp_ms  # the trail stays in time order
    stored = world.store.get_update(run.key)
    assert stored.status_events == tuple(run.status_events)
    reborn = UpdateRun(stored)
    assert (reborn.status, reborn.lapses) == (run.status, run.lapses)
    # A lapse after the pair still coalesces, and the trail stays the same length.
    world.run(run, for_ms=2 * TIMEOUT)
    assert run.status is S.ROLL_FORWARD_AWAITING_PULSE and len(run.status_events) == kept
    assert run.status_events[-1].count == shared.count + 1
    assert world.store.get_update(run.key).status_events[-1].status is run.status


def test_an_operator_event_between_lapses_is_kept_and_the_pair_starts_again() -> None:
    world = World(old_count=3)
    settings = fast_settings(
        heartbeat_timeout_ms=TIMEOUT,
        strategy=Strategy.queue(1),
        min_wait_in_instance_running_ms=10 * FLAPS * TIMEOUT,
    )
    run = world.start(3, settings)
    world.simulation.heartbeat(run)
    flap(world, run, LAPSES_KEPT + 2)
    world.simulation.persist(run, run.pause("bob", "looking", world.clock.now()))
    world.simulation.persist(run, run.resume(world.pulse, "bob", "", world.clock.now()))
    assert [e.user for e in run.status_events[-2:]] == ["bob", "bob"]
    length = len(run.status_events)
    flap(world, run, 5)
    assert len(run.status_events) == length + 2  # one new pair after the operator's events
    assert run.status_events[length - 1].message == "resumed"
    assert sum(e.count for e in run.status_events if e.cause is Cause.HEARTBEAT_TIMEOUT) == (
        LAPSES_KEPT + 7
    )
