"""What the web UI says about an update, without a browser: why it is where it is (waiting,
blocked, held, paused, rolling back, over), the heartbeat and lease, which buttons it offers,
the grid and the timeline."""

from __future__ import annotations

import attrs
import pytest

from api.ui import model
from api.ui.gate import gate_view
from api.ui.processes import Process
from api.views import InstanceStatus, UpdateDetails
from updater.driver import InstanceState
from updater.engine import Counts
from updater.events import Cause, InstanceAction, InstanceEvent, StatusEvent
from updater.gate import GateReason, GateState, MonitorState
from updater.job import Job
from updater.ranges import Range
from updater.record import UpdateRequest, plan_update
from updater.settings import HeartbeatResume, OnBlocked, Settings
from updater.status import UpdateStatus as S
from updater.storage import UpdateSummary

from builders import JOB, NEW, OLD

T0 = 1_000_000
TIMEOUT = 5000


def details(
    *events: tuple[S, Cause] | tuple[S, Cause, str, str],
    age: int | None = None,
    resume: HeartbeatResume = HeartbeatResume.AUTO,
    timeout: int = TIMEOUT,
    instance_events: tuple[InstanceEvent, ...] = (),
) -> UpdateDetails:
    """An update of 3 instances whose status events are `events`, one second apart."""
    settings = Settings(heartbeat_timeout_ms=timeout, heartbeat_resume=resume)
    record, _ = plan_update(
        UpdateRequest(JOB, NEW, 3, settings), Job.uniform(JOB, OLD, 3), "u1", "alice", "", T0
    )
    status_events = tuple(
        StatusEvent(e[0], T0 + 1000 * n, *(e[2:] or ("pulsegate", "")), cause=e[1])  # type: ignore[misc]
        for n, e in enumerate(events)
    )
    record = attrs.evolve(record, status_events=status_events, instance_events=instance_events)
    return UpdateDetails(record, UpdateSummary.of(record), Counts(3, 0, 0, 0), False, age, timeout)


START = (S.ROLL_FORWARD_AWAITING_PULSE, Cause.START)
ROLL = (S.ROLLING_FORWARD, Cause.HEARTBEAT)
LAPSE = (S.ROLL_FORWARD_AWAITING_PULSE, Cause.HEARTBEAT_TIMEOUT)


def test_waiting_for_the_first_heartbeat() -> None:
    d = details(START)
    assert model.why(d, T0 + 3000) == model.Why("waiting", "waiting for the first heartbeat")
    assert model.pulse(d).text == "no heartbeat seen by the leader yet"  # type: ignore[union-attr]
    assert model.allowed_actions(d) == {"pause", "abort", "rollback"}


def test_blocked_after_a_lapse_says_for_how_long() -> None:
    d = details(START, ROLL, LAPSE, age=7200)
    assert model.why(d, T0 + 9000) == model.Why("blocked", "blocked: no heartbeat for 7.2 s")
    pulse = model.pulse(d)
    assert pulse is not None and not pulse.fresh and pulse.lease == "ended 2.2 s ago"
    # without the leader's memory (a new leader): counted from the recorded lapse
    d = details(START, ROLL, LAPSE)
    assert model.why(d, T0 + 2000 + 40_000).text == "blocked: no heartbeat for 45 s"
    assert "resume" not in model.allowed_actions(d)  # resuming an AUTO update does nothing


def test_held_for_an_operator() -> None:
    d = details(START, ROLL, LAPSE, age=300, resume=HeartbeatResume.OPERATOR)
    why = model.why(d, T0 + 3000)
    assert why.kind == "held" and "operator resumes it" in why.text
    assert "resume" in model.allowed_actions(d)
    stale = details(START, ROLL, LAPSE, age=9000, resume=HeartbeatResume.OPERATOR)
    assert model.why(stale, T0).text.startswith("blocked: no heartbeat for 9.0 s; then an operator")


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ((START, (S.ROLL_FORWARD_PAUSED, Cause.OPERATOR, "bob", "<bad canary>")),
         ("paused", "paused by bob: <bad canary>")),
        ((START, (S.ROLL_FORWARD_PAUSED, Cause.OPERATOR, "bob", "")),
         ("paused", "paused by bob: no reason given")),
        ((START, (S.ROLL_FORWARD_PAUSED, Cause.AUTO_PAUSE)),
         ("paused", "paused after a batch (auto-pause): resume to start the next")),
        ((START, ROLL, (S.ROLLING_BACK, Cause.FAILURE, "pulsegate", "instance 1 failed")),
         ("ok", "rolling back (failure): pulsegate: instance 1 failed")),
        ((START, ROLL, (S.ROLLING_BACK, Cause.OPERATOR, "dan", "bad canary"),
          (S.ROLL_BACK_PAUSED, Cause.OPERATOR, "dan", "wait"),
          (S.ROLLING_BACK, Cause.OPERATOR, "erin", "resumed")),
         ("ok", "rolling back (operator): dan: bad canary")),
        ((START, ROLL, (S.ABORTED, Cause.OPERATOR, "carol", "wrong build")),
         ("done", "aborted by carol: wrong build")),
        ((START, ROLL, (S.FAILED, Cause.FAILURE, "pulsegate", "2 instances failed")),
         ("failed", "failed: 2 instances failed")),
        ((START, ROLL, (S.ROLLED_FORWARD, Cause.COMPLETE, "pulsegate", "")),
         ("done", "rolled forward")),
    ],
)  # fmt: skip
def test_why(events: tuple, expected: tuple[str, str]) -> None:
    assert model.why(details(*events, timeout=0), T0 + 10_000) == model.Why(*expected)


def test_rolling_forward_shows_the_heartbeat_and_lease() -> None:
    d = details(START, ROLL, age=1200)
    assert model.why(d, T0).text == "rolling forward; last heartbeat 1.2 s ago"
    pulse = model.pulse(d)
    assert pulse is not None and pulse.fresh and pulse.lease == "ends in 3.8 s"
    assert model.allowed_actions(d) == {"pause", "abort", "rollback"}
    assert model.pulse(details(START, ROLL, timeout=0)) is None  # not coordinated
    after_takeover = model.why(details(START, ROLL), T0).text
    assert after_takeover == "rolling forward; no heartbeat since the leader took over: holding"
    assert model.why(details(START, ROLL, timeout=0), T0).text == "rolling forward"
    assert model.allowed_actions(details(START, (S.ROLLED_BACK, Cause.COMPLETE))) == set()


def test_grid_and_timeline() -> None:
    events = (
        InstanceEvent(0, T0 + 1500, InstanceAction.INSTANCE_UPDATING),
        InstanceEvent(0, T0 + 2500, InstanceAction.INSTANCE_UPDATED),
        InstanceEvent(1, T0 + 2500, InstanceAction.INSTANCE_UPDATING),
    )
    d = details(START, ROLL, age=100, instance_events=events)
    seen = [
        InstanceStatus(0, InstanceState.HEALTHY, True, T0 + 2000, 0, ""),
        InstanceStatus(1, InstanceState.STARTING, True, None, 1, "exited with status 3"),
        InstanceStatus(3, InstanceState.HEALTHY, False, T0, 0, ""),  # outside the update
    ]
    raw = type("Raw", (), {"host": "h1", "pid": 4242})()  # an API that reports processes
    records = {1: Process("h2", 99, 8001, "/var/log/1.log"), 3: Process("h2", 98, 8003, "x")}
    answers = [(i, raw if i.instance_id == 0 else None) for i in seen]
    cells = model.grid(d, answers, T0 + 3000, records)
    assert [(c.instance_id, c.state, c.step, c.in_scope) for c in cells] == [
        (0, "healthy", "updated", True),
        (1, "starting", "updating", True),
        (2, "unknown", "", True),  # no instance state known
        (3, "healthy", "", False),
    ]
    assert [(c.host, c.pid) for c in cells] == [("h1", 4242), ("h2", 99), (None, None), ("h2", 98)]
    assert cells[1].detail == (
        "STARTING; 1 failure(s); exited with status 3; port 8001, log /var/log/1.log"
    )
    exited = InstanceStatus(1, InstanceState.EXITED, True, None, 1, "")
    assert model.host_pid(exited, None, records[1]) == ("h2", None)  # its pid is gone
    timeline = model.timeline(d)
    assert [e.what for e in timeline] == [
        "instance 0: INSTANCE_UPDATED",
        "instance 1: INSTANCE_UPDATING",
        "instance 0: INSTANCE_UPDATING",
        "ROLLING_FORWARD",
        "ROLL_FORWARD_AWAITING_PULSE",
    ]
    assert model.grid(d, None, T0)[0].state == "unknown"  # instances unavailable


def test_settings_use_job_file_names() -> None:
    s = Settings(update_only_these_instances=(Range(0, 1),), heartbeat_timeout_ms=0)
    rows = dict(model.settings_rows(s))
    assert rows["instances"] == "0-1"
    assert rows["heartbeat_timeout_ms"] == "off (not coordinated)"
    assert rows["min_wait_ms"] == "30 s"


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0 ms"), (999, "999 ms"), (4200, "4.2 s"), (42_000, "42 s"), (185_000, "3 min 5 s"),
     (7_800_000, "2 h 10 min"), (-5, "0 ms")],
)  # fmt: skip
def test_duration(ms: int, text: str) -> None:
    assert model.duration(ms) == text


def gated(d: UpdateDetails, **fields: object) -> UpdateDetails:
    """`d` with a gate state as the leader sends it (closed on a quorum unless told)."""
    values: dict[str, object] = {
        "open": False,
        "reason": GateReason.QUORUM,
        "why": "quorum 1 of 2",
        "since_ms": T0 + 1000,
        "lease_end_ms": T0 + 6000,
        "quorum": 2,
        "fresh_monitors": 1,
        "monitors": (
            MonitorState("canary", 1000, T0 + 6000, True, None),
            MonitorState("slo", 9000, T0 - 2000, False, 1),
        ),
        "batch": 2,
        "batch_instances": (2, 3),
        "awaiting_ack": None,
        "on_blocked": OnBlocked.PAUSE,
        "on_blocked_at_ms": T0 + 601_000,
    }
    values.update(fields)
    return attrs.evolve(d, gate=GateState(**values))  # type: ignore[arg-type]


def test_the_gate_shows_each_monitor_against_the_timeout_and_both_countdowns() -> None:
    view = gate_view(gated(details(START, ROLL, LAPSE)), T0 + 3000)
    assert view is not None
    assert (view.open, view.kind, view.why, view.since) == (
        False,
        "closed",
        "quorum 1 of 2",
        "closed for 2.0 s",
    )
    assert view.quorum == "1 fresh, 2 needed"
    assert view.lease == "ends in 3.0 s"
    assert view.on_blocked == "pauses in 9 min 58 s"
    assert view.batch == "batch 2: instances 2, 3"
    canary, slo = view.monitors
    assert (canary.name, canary.age, canary.fresh, canary.lease) == (
        "canary",
        "1.0 s",
        True,
        "ends in 3.0 s",
    )
    assert (slo.age_ms, slo.age, slo.fresh, slo.lease, slo.acked) == (
        TIMEOUT,  # the meter stops at the timeout; the words say how far past it is
        "9.0 s",
        False,
        "ended 5.0 s ago",
        "batch 1",
    )


def test_the_gate_when_open_overdue_or_absent() -> None:
    d = details(START, ROLL)
    opened = gate_view(gated(d, open=True, reason=None, why="fresh", on_blocked=None,
                             on_blocked_at_ms=None), T0 + 2000)  # fmt: skip
    assert opened is not None and (opened.since, opened.on_blocked) == ("open", None)
    late = gate_view(gated(d, on_blocked=OnBlocked.ROLL_BACK, on_blocked_at_ms=T0), T0 + 2000)
    assert late is not None and late.on_blocked == "rolls back: due 2.0 s ago"
    acking = gate_view(gated(d, reason=GateReason.AWAITING_ACK, awaiting_ack=1), T0 + 2000)
    assert acking is not None and acking.awaiting_ack == "batch 1"
    assert gate_view(d, T0) is None  # no gate sent: not coordinated, over, or another leader's
