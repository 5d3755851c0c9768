"""Invariants over random jobs, settings, crash scripts, heartbeat schedules and operator
commands (hypothesis):

(a) no action is planned while the heartbeat is stale for a coordinated update;
(b) instances in flight never exceed what the strategy allows;
(c) a terminal status never changes;
(d) at ROLLED_FORWARD every in-scope instance runs the new config, at ROLLED_BACK the old one;
(e) rollback touches instances in exact reverse order;
(f) each instance event is written at most once per action.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from scheduler.drivers.sim import SimBehaviour
from updater.engine import EMPTY_STEP, UpdateRun
from updater.errors import NoopUpdate, PulsegateError
from updater.events import InstanceAction
from updater.pulse import HeartbeatAnswer
from updater.ranges import to_ranges
from updater.settings import HeartbeatResume, Settings, Strategy
from updater.status import UpdateStatus

from builders import JOB, NEW, OLD, World

A = InstanceAction
S = UpdateStatus
HORIZON_MS = 300_000


@st.composite
def behaviours(draw: st.DrawFn) -> SimBehaviour:
    """Mostly well-behaved instances; some crash, flap, or never become healthy (and are then
    restarted by a liveness check, so that updates end)."""
    if draw(st.integers(0, 3)) == 0:
        return SimBehaviour(start_ms=100, healthy_after_ms=200, kill_ms=50, restart_delay_ms=100)
    never_healthy = draw(st.integers(0, 5)) == 0
    return SimBehaviour(
        start_ms=draw(st.integers(10, 500)),
        healthy_after_ms=None if never_healthy else draw(st.integers(10, 800)),
        kill_ms=draw(st.integers(10, 300)),
        crash_after_ms=draw(st.one_of(st.none(), st.integers(10, 900))),
        crashes=draw(st.sampled_from([0, 1, 2, -1])),
        restart_delay_ms=draw(st.integers(10, 500)),
        flap_ms=draw(st.one_of(st.none(), st.integers(2000, 5000))),
        liveness_ms=draw(st.integers(200, 2000)) if never_healthy else None,
    )


strategies = st.one_of(
    st.integers(1, 4).map(Strategy.queue),
    st.integers(1, 4).map(Strategy.batch),
    st.lists(st.integers(1, 4), min_size=1, max_size=4).map(Strategy.variable_batch),
)


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    old_count = draw(st.integers(0, 12))
    new_count = draw(st.integers(1, 12) if old_count == 0 else st.integers(0, 12))
    config = draw(st.sampled_from([NEW, OLD]))
    ids = sorted(set(range(old_count)) | set(range(new_count)))
    scope = ()
    if ids and draw(st.booleans()):
        scope = to_ranges(draw(st.lists(st.sampled_from(ids), min_size=1, unique=True)))
    strategy = draw(strategies)
    coordinated = draw(st.booleans())
    setting = Settings(
        strategy=strategy,
        auto_pause_after_batch=strategy.is_batched and draw(st.booleans()),
        max_per_instance_failures=draw(st.integers(0, 2)),
        max_failed_instances=draw(st.integers(0, 3)),
        min_wait_in_instance_running_ms=draw(st.sampled_from([0, 100, 500, 2000])),
        rollback_on_failure=draw(st.booleans()),
        update_only_these_instances=scope,
        heartbeat_timeout_ms=draw(st.integers(1000, 5000)) if coordinated else 0,
        heartbeat_resume=draw(st.sampled_from(list(HeartbeatResume))),
    )
    silences = draw(st.lists(st.tuples(st.integers(0, 15_000), st.integers(0, 15_000)), max_size=3))
    commands = draw(
        st.lists(
            st.tuples(
                st.integers(0, 30_000), st.sampled_from(["pause", "resume", "rollback", "abort"])
            ),
            max_size=4,
        )
    )
    return {
        "old_count": old_count,
        "new_count": new_count,
        "config": config,
        "settings": setting,
        "new_behaviour": draw(behaviours()),
        "old_behaviour": draw(behaviours()),
        "interval": draw(st.integers(100, 1500)),
        "silences": silences,
        "commands": sorted(commands),
    }


def run_scenario(sc: dict) -> tuple[World, UpdateRun]:
    start = 1_000_000

    def monitor(now: int) -> bool:
        return not any(start + a <= now < start + a + n for a, n in sc["silences"])

    world = World(
        old_count=sc["old_count"],
        behaviours={NEW: sc["new_behaviour"], OLD: sc["old_behaviour"]},
        heartbeat_interval_ms=sc["interval"],
        monitor=monitor,
    )
    try:
        run = world.start(sc["new_count"], sc["settings"], config=sc["config"])
    except NoopUpdate:
        assume(False)
    commands = list(sc["commands"])
    resumes = 0
    while not run.status.is_terminal and world.clock.now() < start + HORIZON_MS:
        due = start + commands[0][0] if commands else start + HORIZON_MS
        world.simulation.run_until_idle(run, max(due, world.clock.now()))
        if run.status.is_terminal:
            break
        if world.clock.now() < due:
            world.sim.advance_to(due)
        if commands:
            _, name = commands.pop(0)
        elif run.status.is_paused and resumes < 20:
            name, resumes = "resume", resumes + 1
        else:
            world.simulation.run_until_idle(run, start + HORIZON_MS)
            break
        now = world.clock.now()
        try:
            if name == "resume":
                step = run.resume(world.pulse, "op", "", now)
            else:
                step = getattr(run, name)("op", "", now)
        except PulsegateError:
            continue
        if step is not None:
            world.simulation.persist(run, step)
    return world, run


def check_invariants(world: World, run: UpdateRun) -> None:
    record = world.store.get_update(run.key)
    definition = record.definition

    # (a) zero actions with a stale heartbeat
    if definition.is_coordinated:
        for now, fresh, step in world.trace.steps:
            assert fresh or not step.actions, f"actions planned at {now} with a stale heartbeat"

    # (b) in flight within the strategy's allowance, per direction
    for backward in (False, True):
        progress = run.backward if backward else run.forward
        if progress is None:
            continue
        schedule = progress.schedule
        index = {iid: i for i, iid in enumerate(progress.order)}
        start_action = A.INSTANCE_ROLLING_BACK if backward else A.INSTANCE_UPDATING
        ends = (
            {A.INSTANCE_ROLLED_BACK, A.INSTANCE_ROLLBACK_FAILED}
            if backward
            else {A.INSTANCE_UPDATED, A.INSTANCE_UPDATE_FAILED}
        )
        working: set[int] = set()
        for written in record.instance_events:
            if written.action is start_action:
                working.add(written.instance_id)
            elif written.action in ends:
                working.discard(written.instance_id)
            else:
                continue
            if schedule.is_batched:
                batches = {schedule.batch_of(index[i]) for i in working}
                assert len(batches) <= 1, f"instances of batches {batches} in flight at once"
            else:
                assert len(working) <= schedule.queue_size

    # (c) a terminal status never changes
    statuses = [e.status for e in record.status_events]
    terminal_at = next((i for i, s in enumerate(statuses) if s.is_terminal), None)
    if terminal_at is not None:
        assert terminal_at == len(statuses) - 1
        now = world.clock.now()
        assert run.plan(world.sim.instances(JOB), world.pulse, now) is EMPTY_STEP
        for command in (run.pause, run.rollback):
            try:
                command("op", "", now)
            except PulsegateError:
                pass
            else:
                raise AssertionError(f"{command.__name__} accepted on a {run.status.name} update")
        if definition.is_coordinated:
            assert run.heartbeat(world.pulse, "m", now)[0] is HeartbeatAnswer.FINISHED
        assert world.store.active_update(JOB) is None

    # (d) final configs
    world.sim.advance_to(world.clock.now() + 60_000)
    desired = world.desired()
    observed = world.sim.instances(JOB)
    initial = definition.initial_configs()
    targets = definition.desired_ids()
    in_scope = set(initial) | targets
    if run.status is S.ROLLED_FORWARD:
        for iid in in_scope:
            want = definition.config if iid in targets else None
            assert desired.get(iid) == want
            assert (observed[iid].config if iid in observed else None) == want
    if run.status is S.ROLLED_BACK:
        for iid in in_scope:
            want = initial.get(iid)
            assert desired.get(iid) == want
            assert (observed[iid].config if iid in observed else None) == want

    # (e) rollback in exact reverse order of what was touched
    forward = [e.instance_id for e in record.instance_events if e.action is A.INSTANCE_UPDATING]
    back = [e.instance_id for e in record.instance_events if e.action is A.INSTANCE_ROLLING_BACK]
    assert back == list(reversed(forward))[: len(back)]
    if run.status is S.ROLLED_BACK:
        assert back == list(reversed(forward))

    # (f) each instance event at most once per action
    counts = Counter((e.instance_id, e.action) for e in record.instance_events)
    assert max(counts.values(), default=1) == 1


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(scenarios())
def test_invariants_hold(sc: dict) -> None:
    world, run = run_scenario(sc)
    event(run.status.name)
    check_invariants(world, run)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(1, 40))
def test_invariants_hold_across_a_failover(sc: dict, cut: int) -> None:
    """Rebuild the run from storage part way through, with an empty pulse monitor: the rest of
    the update keeps every invariant, and no event is written twice."""
    world, run = run_scenario({**sc, "commands": []} if cut % 2 else sc)
    if run.status.is_terminal:
        reborn = UpdateRun(world.store.get_update(run.key))
        assert reborn.status is run.status
        assert reborn.counts() == run.counts()
        check_invariants(world, run)
        return
    # not finished within the horizon (held or paused): fail over and finish it
    from updater.pulse import PulseMonitor

    world.simulation.pulse = PulseMonitor()
    reborn = UpdateRun(world.store.get_update(run.key))
    if reborn.is_coordinated:  # a takeover watches every coordinated update from its start
        timeout = reborn.settings.heartbeat_timeout_ms
        world.simulation.pulse.track(reborn.key, timeout, world.clock.now())
    world.simulation.monitor = None
    if reborn.status.is_paused:
        step = reborn.resume(world.simulation.pulse, "op", "", world.clock.now())
        if step is not None:
            world.simulation.persist(reborn, step)
    world.simulation.run_until_idle(reborn, world.clock.now() + HORIZON_MS)
    check_invariants(world, reborn)
