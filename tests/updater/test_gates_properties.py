"""Invariants of rules 12-14 over random monitors, quorums, ack habits, bounds and a failover
(hypothesis):

(a) no action is planned unless a quorum of monitors is fresh;
(b) with heartbeatAckBatches, no instance of batch b+1 starts before a quorum of fresh
    monitors acknowledged batch b, on the leader that starts it (acks do not survive failover);
(c) onBlocked acts only after the update awaited pulse for maxBlockedMs since the event that
    blocked it, is recorded by pulsegate, and a terminal status never changes.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gates import failover

from updater.engine import UpdateRun
from updater.errors import InvalidRequest
from updater.events import SYSTEM_USER, Cause
from updater.settings import OnBlocked, Settings, Strategy

from builders import World

NAMES = ("a", "b", "c")
TICK = 250
HORIZON = 120_000


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    quorum = draw(st.integers(1, 3))
    acks = draw(st.booleans())
    setting = Settings(
        strategy=draw(st.sampled_from([Strategy.batch(1), Strategy.batch(2), Strategy.batch(3)])),
        min_wait_in_instance_running_ms=draw(st.sampled_from([0, 300, 1000])),
        heartbeat_timeout_ms=draw(st.integers(1000, 3000)),
        heartbeat_quorum=quorum,
        heartbeat_monitors=NAMES if draw(st.booleans()) else (),
        heartbeat_ack_batches=acks,
        max_blocked_ms=draw(st.sampled_from([0, 5_000, 20_000])),
        on_blocked=draw(st.sampled_from(list(OnBlocked))),
    )
    # Each monitor beats in windows: (on from, off at) pairs in ticks.
    windows = {
        name: draw(st.lists(st.tuples(st.integers(0, 400), st.integers(1, 120)), max_size=4))
        for name in NAMES
    }
    ackers = draw(st.sets(st.sampled_from(NAMES)))
    return {
        "settings": setting,
        "count": draw(st.integers(2, 8)),
        "windows": windows,
        "ackers": ackers,
        "ack_delay": draw(st.integers(0, 8)),
        "failover_at": draw(st.one_of(st.none(), st.integers(1, 400))),
    }


def beating(windows: list[tuple[int, int]], tick: int) -> bool:
    return any(start <= tick < start + length for start, length in windows)


def check_step(world: World, run: UpdateRun, step, backward: bool, beats: dict) -> None:  # type: ignore[no-untyped-def]
    """`beats`: each monitor's last heartbeat on this leader, as the test saw it sent."""
    now = world.clock.now()
    if step.actions:
        timeout = run.settings.heartbeat_timeout_ms
        fresh = sum(1 for t in beats.values() if now - t < timeout)
        assert fresh >= run.settings.heartbeat_quorum, "(a) acted without a fresh quorum"
    if step.actions and run.settings.heartbeat_ack_batches and not backward:
        progress = run.forward
        for index in range(len(progress.order)):
            if progress.order[index] in {a.instance_id for a in step.actions}:
                batch = progress.schedule.batch_of(index)
                record = world.pulse.get(run.key)
                assert batch == 0 or (record is not None and record.is_acked(batch, now)), (
                    f"(b) batch {batch + 1} started before batch {batch} was acknowledged"
                )


def drive(world: World, run: UpdateRun, sc: dict) -> UpdateRun:
    waited_since: dict[int, int] = {}
    beats: dict[str, int] = {}
    for tick in range(HORIZON // TICK):
        if sc["failover_at"] == tick:
            run = failover(world, run)
            beats.clear()
        now = world.clock.now()
        due = run.ack_needed()
        if due is not None:
            waited_since.setdefault(due, tick)
        for name in NAMES:
            if not beating(sc["windows"][name], tick):
                continue
            ack = None
            if (
                name in sc["ackers"]
                and due is not None
                and tick - waited_since[due] >= sc["ack_delay"]
            ):
                ack = due
            try:
                _, to_record = run.heartbeat(world.pulse, name, now, name, ack)
            except InvalidRequest:
                continue
            beats[name] = now
            while to_record:
                step = run.pulse_step(world.pulse, name, now)
                if step is None:
                    break
                world.simulation.persist(run, step)
        for _ in range(100):
            backward = run.backward is not None
            before = run.status
            step = world.step(run)
            check_step(world, run, step, backward, beats)
            if before.is_terminal:
                assert run.status is before, "(c) a terminal status changed"
            if not (step.has_writes or step.actions):
                break
        if run.status.is_terminal or run.status.is_paused:
            break
        world.advance(TICK)
    return run


def check_bounds(world: World, run: UpdateRun) -> None:
    events = world.store.get_update(run.key).status_events
    for before, event in itertools.pairwise(events):
        if event.cause is Cause.BLOCKED:
            assert before.status.is_awaiting_pulse and event.user == SYSTEM_USER
            assert event.timestamp_ms - before.timestamp_ms >= run.settings.max_blocked_ms > 0


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_gate_invariants_hold(sc: dict) -> None:
    world = World(old_count=sc["count"])
    run = world.start(sc["count"], sc["settings"])
    run = drive(world, run, sc)
    check_bounds(world, run)
