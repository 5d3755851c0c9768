"""Rule 15: `gate_state` says whether a coordinated update's gate is open and, if not, why,
since when, each monitor's age and lease, and when onBlocked fires."""

from test_gates import INTERVAL, TIMEOUT, beat, coordinated, tick

from updater.gate import GateReason, gate_state
from updater.pulse import ANONYMOUS
from updater.settings import HeartbeatResume, OnBlocked, Strategy

from builders import World, fast_settings

R = GateReason


def state(world: World, run):  # type: ignore[no-untyped-def]
    return gate_state(run, world.pulse.get(run.key), world.clock.now())


def test_no_heartbeat_yet_and_when_on_blocked_fires() -> None:
    world = World(old_count=2)
    run = world.start(2, coordinated(max_blocked_ms=60_000, on_blocked=OnBlocked.ABORT))
    started = run.status_events[-1].timestamp_ms
    world.advance(700)
    gate = state(world, run)
    assert (gate.open, gate.reason, gate.since_ms) == (False, R.NO_HEARTBEAT, started)
    assert (gate.on_blocked, gate.on_blocked_at_ms) == (OnBlocked.ABORT, started + 60_000)
    assert gate.monitors == () and gate.lease_end_ms == started + TIMEOUT


def test_open_then_quorum_k_of_n_with_each_monitors_age() -> None:
    world = World(old_count=4)
    run = world.start(4, coordinated(heartbeat_quorum=2, heartbeat_monitors=("a", "b")))
    tick(world, run, 2 * INTERVAL, monitors=("a", "b"))
    gate = state(world, run)
    assert gate.open and gate.reason is None and gate.fresh_monitors == 2
    assert gate.on_blocked is None and gate.on_blocked_at_ms is None
    tick(world, run, 3 * TIMEOUT, monitors=("a",))
    gate = state(world, run)
    assert (gate.open, gate.reason, gate.why) == (False, R.QUORUM, "quorum 1 of 2")
    ages = {m.name: (m.fresh, m.age_ms) for m in gate.monitors}
    assert ages["a"] == (True, INTERVAL) and ages["b"][0] is False
    assert ages["b"][1] > TIMEOUT
    assert gate.since_ms == run.status_events[-1].timestamp_ms


def test_timed_out_then_held_for_an_operator() -> None:
    world = World(old_count=4)
    run = world.start(4, coordinated(heartbeat_resume=HeartbeatResume.OPERATOR))
    tick(world, run, 1_000, monitors=(ANONYMOUS,))
    world.advance(TIMEOUT + 1)
    gate = state(world, run)  # lapsed, not recorded yet: since the lease's end
    assert gate.reason is R.TIMED_OUT and gate.since_ms == gate.lease_end_ms
    tick(world, run, INTERVAL)
    beat(world, run)
    gate = state(world, run)
    assert (gate.open, gate.reason) == (False, R.HELD_FOR_OPERATOR)


def test_awaiting_an_ack_names_the_batch_and_its_instances_and_paused_says_so() -> None:
    world = World(old_count=4)
    run = world.start(4, coordinated(strategy=Strategy.batch(2), heartbeat_ack_batches=True))
    tick(world, run, 10_000, monitors=("v",))
    gate = state(world, run)
    assert (gate.reason, gate.why, gate.awaiting_ack) == (
        R.AWAITING_ACK,
        "waiting for batch 1's ack",
        1,
    )
    assert (gate.batch, gate.batch_instances) == (1, (0, 1))
    beat(world, run, "v", ack=1)
    assert [m.acked_batch for m in state(world, run).monitors] == [1]
    world.simulation.persist(run, run.pause("op", "coffee", world.clock.now()))
    gate = state(world, run)
    assert (gate.open, gate.reason, gate.why) == (False, R.PAUSED, "paused: coffee")


def test_no_gate_for_an_uncoordinated_or_finished_update() -> None:
    world = World(old_count=1)
    run = world.start(1, fast_settings())
    assert state(world, run) is None
    world = World(old_count=1)
    run = world.start(1, coordinated())
    tick(world, run, 5_000, monitors=(ANONYMOUS,))
    assert run.status.is_terminal and state(world, run) is None
