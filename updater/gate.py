"""The gates beyond Aurora (DESIGN rules 12-15), as pure functions of an update's progress,
settings and pulse: which batch a monitor should verify, which acknowledgement the next batch
waits for, what onBlocked does, and `gate_state`, the one verdict every reader shows (the API,
the CLI, metrics, the UI): a frozen `GateState` record."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs

from updater.errors import InvalidRequest
from updater.events import SYSTEM_USER, Cause, StatusEvent, clip_message
from updater.progress import Progress
from updater.pulse import Pulse
from updater.settings import OnBlocked, Settings
from updater.status import UpdateStatus, paused
from updater.strategy import Schedule

if TYPE_CHECKING:
    from updater.engine import UpdateRun

S = UpdateStatus


def current_batch(progress: Progress) -> tuple[int, list[int]] | None:
    """The batch a monitor should verify (rule 13): the one holding the last instance started
    in this direction, numbered from 1, with its instance ids. None for a queue strategy or
    before any instance started."""
    schedule = progress.schedule
    if not schedule.is_batched or progress.cursor == 0:
        return None
    batch = schedule.batch_of(progress.cursor - 1)
    start = schedule.bounds[batch - 1] if batch else 0
    return batch + 1, progress.order[start : schedule.bounds[batch]]


def ack_needed(progress: Progress, settings: Settings) -> int | None:
    """The batch whose acknowledgement the next batch waits for (rule 13), if it is due: acks
    gate the forward direction only, at a batch boundary with nothing in flight."""
    if (
        not settings.heartbeat_ack_batches
        or progress.backward
        or progress.in_flight
        or not 0 < progress.cursor < len(progress.order)
    ):
        return None
    return progress.schedule.batch_of(progress.cursor)  # the finished batch's number (1-based)


def ack_wait(schedule: Schedule, cursor: int, pulse: Pulse | None, now: int) -> StatusEvent | None:
    """Rule 13 before a batch starts at `cursor`: the wait to record if the batch before it
    is not acknowledged by a quorum of fresh monitors."""
    batch = schedule.batch_of(cursor)  # the number (from 1) of the batch just done
    if not schedule.is_batched or batch < 1 or (pulse is not None and pulse.is_acked(batch, now)):
        return None
    message = f"waiting for batch {batch} to be acknowledged"
    return StatusEvent(S.ROLL_FORWARD_AWAITING_PULSE, now, SYSTEM_USER, message, Cause.ACK_WAIT)


def checked_ack(run: UpdateRun, batch: int) -> int | None:
    """A heartbeat's acknowledgement to record: refused for an update that takes none or for a
    batch that has not started; ignored during a rollback (acks gate going forward only)."""
    if not run.settings.heartbeat_ack_batches:
        raise InvalidRequest(
            "details.ackBatch",
            f"update {run.key} takes no batch acknowledgements (heartbeatAckBatches is false)",
        )
    if run.backward is not None:
        return None
    current = current_batch(run.progress)
    if current is None or batch > current[0]:
        started = "no batch has started" if current is None else f"the current is {current[0]}"
        raise InvalidRequest("details.ackBatch", f"batch {batch} has not started; {started}")
    return batch


def lapse_message(settings: Settings, pulse: Pulse | None, at_ms: int) -> str:
    """Why heartbeats count as lost at `at_ms`; with a quorum, how many monitors were fresh."""
    timeout, quorum = settings.heartbeat_timeout_ms, settings.heartbeat_quorum
    if quorum == 1 or pulse is None:
        return f"heartbeats timed out (none for {timeout} ms)"
    fresh = pulse.fresh_names(at_ms)
    return clip_message(
        f"heartbeats timed out: quorum {len(fresh)} of {quorum} "
        f"(fresh: {', '.join(fresh) or 'none'}; timeout {timeout} ms)"
    )


def on_blocked_event(blocked: StatusEvent, settings: Settings, now: int) -> StatusEvent:
    """What the leader records once `blocked` (the persisted *_AWAITING_PULSE event) has
    lasted maxBlockedMs (rule 14). During a rollback ROLL_BACK pauses: it is going back."""
    backward = blocked.status.is_backward
    action = settings.on_blocked
    if action is OnBlocked.ABORT:
        target, verb = S.ABORTED, "aborted"
    elif action is OnBlocked.ROLL_BACK and not backward:
        target, verb = S.ROLLING_BACK, "rolling back"
    else:
        target, verb = paused(backward), "paused"
        if action is OnBlocked.ROLL_BACK:
            verb = "paused (already rolling back)"
    message = (
        f"blocked for {now - blocked.timestamp_ms} ms (maxBlockedMs={settings.max_blocked_ms}): "
        f"{blocked.message}; onBlocked={action.value}: {verb}"
    )
    return StatusEvent(target, now, SYSTEM_USER, clip_message(message), Cause.BLOCKED)


# -- the visible pulse (rule 15) ---------------------------------------------------------------


class GateReason(enum.Enum):
    """Why a coordinated update's gate is closed (wire strings)."""

    NO_HEARTBEAT = "no_heartbeat"  # none yet since the start or the takeover
    TIMED_OUT = "timed_out"
    QUORUM = "quorum"  # fewer than heartbeatQuorum monitors are fresh
    HELD_FOR_OPERATOR = "held_for_operator"  # heartbeatResume = OPERATOR after a lapse
    AWAITING_ACK = "awaiting_ack"  # waiting for a batch's acknowledgement
    PAUSED = "paused"


@attrs.frozen
class MonitorState:
    name: str
    age_ms: int
    lease_end_ms: int
    fresh: bool
    acked_batch: int | None


@attrs.frozen
class GateState:
    """A coordinated active update's gate at one instant. `open`: it may act now."""

    open: bool
    reason: GateReason | None
    why: str  # for people: "quorum 1 of 2", "waiting for batch 3's ack", ...
    since_ms: int  # when the current status (or the unrecorded lapse) began
    lease_end_ms: int | None
    quorum: int
    fresh_monitors: int
    monitors: tuple[MonitorState, ...]
    batch: int | None  # the batch to verify, numbered from 1
    batch_instances: tuple[int, ...]
    awaiting_ack: int | None
    on_blocked: OnBlocked | None
    on_blocked_at_ms: int | None


def gate_state(run: UpdateRun, pulse: Pulse | None, now: int) -> GateState | None:
    """The gate of `run` at `now` given its pulse record (None: not watched by this leader);
    None for an update that is not coordinated or is over."""
    status = run.status
    settings = run.settings
    if not run.is_coordinated or status.is_terminal:
        return None
    last = run.status_events[-1]
    quorum = settings.heartbeat_quorum
    monitors: tuple[MonitorState, ...] = ()
    fresh_count, lease_end, fresh = 0, None, False
    if pulse is not None:
        monitors = tuple(
            MonitorState(
                m.name,
                max(0, now - m.last_ms),
                m.last_ms + pulse.timeout_ms,
                pulse.is_monitor_fresh(m, now),
                m.acked,
            )
            for m in pulse.monitors
        )
        fresh_count, lease_end, fresh = pulse.fresh_count(now), pulse.lease_end, pulse.is_fresh(now)
    batch = current_batch(run.progress)
    waiting = ack_needed(run.progress, settings)
    pending = waiting is not None and (pulse is None or not pulse.is_acked(waiting, now))
    since = last.timestamp_ms
    reason: GateReason | None = None
    if status.is_paused:
        reason, why = GateReason.PAUSED, f"paused: {last.message}"
    elif not fresh:
        if not monitors:
            reason, why = GateReason.NO_HEARTBEAT, "no heartbeat yet since the start or takeover"
        elif quorum > 1:
            reason, why = GateReason.QUORUM, f"quorum {fresh_count} of {quorum}"
        else:
            reason, why = (
                GateReason.TIMED_OUT,
                f"heartbeats timed out ({settings.heartbeat_timeout_ms} ms)",
            )
        if status.is_rolling and lease_end is not None and lease_end <= now:
            since = max(since, lease_end)  # lapsed, not recorded yet
    elif status.is_awaiting_pulse and pending:
        reason, why = GateReason.AWAITING_ACK, f"waiting for batch {waiting}'s ack"
    elif run.is_held_for_operator:
        reason, why = GateReason.HELD_FOR_OPERATOR, "held for an operator to resume"
    else:
        why = "fresh" if status.is_rolling else "fresh; resuming"
    deadline = run.on_blocked_at()
    return GateState(
        open=reason is None and status.is_rolling,
        reason=reason,
        why=why,
        since_ms=since,
        lease_end_ms=lease_end,
        quorum=quorum,
        fresh_monitors=fresh_count,
        monitors=monitors,
        batch=None if batch is None else batch[0],
        batch_instances=() if batch is None else tuple(batch[1]),
        awaiting_ack=waiting if pending else None,
        on_blocked=settings.on_blocked if deadline is not None else None,
        on_blocked_at_ms=deadline,
    )
