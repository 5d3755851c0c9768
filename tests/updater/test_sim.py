"""The sim driver: timings, scripted crashes, flapping, never-healthy, scale."""

from scheduler.drivers.sim import FakeClock, SimBehaviour, SimDriver, behaviour_from_labels
from updater.driver import Action, ActionKind, InstanceState
from updater.task import TaskConfig

from builders import JOB, NEW, OLD

St = InstanceState


def state(sim: SimDriver, i: int = 0) -> St:
    seen = sim.instances(JOB).get(i)
    return seen.state if seen else St.ABSENT


def test_add_start_healthy_then_replace_and_kill() -> None:
    clock = FakeClock(0)
    sim = SimDriver(clock, {NEW: SimBehaviour(start_ms=100, healthy_after_ms=50, kill_ms=30)})
    sim.apply(JOB, [Action(ActionKind.ADD, 0, NEW)])
    assert state(sim) is St.STARTING
    sim.advance_to(100)
    assert state(sim) is St.RUNNING
    sim.advance_to(150)
    assert state(sim) is St.HEALTHY and sim.instances(JOB)[0].healthy_since_ms == 150
    sim.apply(JOB, [Action(ActionKind.ADD, 0, NEW)])  # idempotent
    assert state(sim) is St.HEALTHY
    sim.apply(JOB, [Action(ActionKind.KILL, 0)])
    assert state(sim) is St.KILLING
    sim.advance_to(180)
    assert state(sim) is St.ABSENT and 0 not in sim.instances(JOB)


def test_replace_kills_then_starts_the_new_config() -> None:
    clock = FakeClock(0)
    sim = SimDriver(clock, {OLD: SimBehaviour(kill_ms=40), NEW: SimBehaviour(start_ms=10)})
    sim.seed(JOB, {0: OLD}, 0)
    sim.apply(JOB, [Action(ActionKind.REPLACE, 0, NEW)])
    assert state(sim) is St.KILLING and sim.instances(JOB)[0].config == OLD
    sim.advance_to(40)
    assert state(sim) is St.STARTING and sim.instances(JOB)[0].config == NEW


def test_scripted_crashes_are_counted_and_restarted() -> None:
    clock = FakeClock(0)
    b = SimBehaviour(
        start_ms=10,
        healthy_after_ms=None,
        crash_after_ms=5,
        crashes=2,
        restart_delay_ms=20,
        exit_message="boom",
    )
    sim = SimDriver(clock, {NEW: b})
    sim.apply(JOB, [Action(ActionKind.ADD, 0, NEW)])
    sim.advance_to(15)
    seen = sim.instances(JOB)[0]
    assert (seen.state, seen.failures, seen.message) == (St.EXITED, 1, "boom")
    sim.advance_to(1_000)
    seen = sim.instances(JOB)[0]
    assert (seen.state, seen.failures) == (St.RUNNING, 2)  # crashed twice, then stays up


def test_test_can_crash_an_instance() -> None:
    clock = FakeClock(0)
    sim = SimDriver(clock)
    sim.seed(JOB, {0: OLD}, 0)
    sim.crash(JOB, 0, "SIGKILL")
    assert state(sim) is St.EXITED and sim.instances(JOB)[0].message == "SIGKILL"


def test_flapping_health() -> None:
    clock = FakeClock(0)
    sim = SimDriver(clock, {NEW: SimBehaviour(start_ms=10, healthy_after_ms=10, flap_ms=100)})
    sim.apply(JOB, [Action(ActionKind.ADD, 0, NEW)])
    seen = []
    for t in (20, 119, 121, 221, 321):
        sim.advance_to(t)
        seen.append(state(sim))
    assert seen == [St.HEALTHY, St.HEALTHY, St.RUNNING, St.HEALTHY, St.RUNNING]


def test_never_healthy_with_and_without_liveness() -> None:
    clock = FakeClock(0)
    stuck = TaskConfig.make(["stuck"])
    sim = SimDriver(
        clock,
        {
            NEW: SimBehaviour(start_ms=10, healthy_after_ms=None),
            stuck: SimBehaviour(start_ms=10, healthy_after_ms=None, liveness_ms=50),
        },
    )
    sim.apply(JOB, [Action(ActionKind.ADD, 0, NEW), Action(ActionKind.ADD, 1, stuck)])
    sim.advance_to(65)
    assert state(sim, 0) is St.RUNNING
    assert state(sim, 1) is St.EXITED and "never passed" in sim.instances(JOB)[1].message


def test_behaviour_from_labels() -> None:
    config = TaskConfig.make(["x"], labels={"sim.healthy_after_ms": "never", "sim.start_ms": "7"})
    b = behaviour_from_labels(config)
    assert b.healthy_after_ms is None and b.start_ms == 7


def test_listener_hears_every_change() -> None:
    clock = FakeClock(0)
    sim = SimDriver(clock)
    heard = []
    sim.set_listener(lambda job, i: heard.append(i))
    sim.apply(JOB, [Action(ActionKind.ADD, 3, NEW)])
    sim.advance_to(5_000)
    assert heard == [3, 3, 3]  # starting, running, healthy


def test_ten_thousand_instances() -> None:
    clock = FakeClock(0)
    sim = SimDriver(clock)
    sim.apply(JOB, [Action(ActionKind.ADD, i, NEW) for i in range(10_000)])
    sim.advance_to(10_000)
    assert sum(1 for o in sim.instances(JOB).values() if o.state is St.HEALTHY) == 10_000


def test_takeover_leaves_held_instances_as_they_are() -> None:
    clock = FakeClock(0)
    sim = SimDriver(clock, {OLD: SimBehaviour(kill_ms=10), NEW: SimBehaviour(start_ms=10)})
    sim.seed(JOB, {0: OLD, 1: OLD}, 0)
    sim.takeover({JOB: {0: NEW, 1: NEW, 2: NEW}}, parked={(JOB, 0), (JOB, 2)})
    touched = {action.instance_id for _, _, action in sim.action_log}
    assert touched == {1}  # held 0 keeps running OLD, held 2 is not started
    assert sim.instances(JOB)[0].config == OLD and 2 not in sim.instances(JOB)
