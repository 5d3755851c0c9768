"""The audit trail of an update: status events and instance events. Both are persisted and are
what a new leader rebuilds an update's progress from."""

from __future__ import annotations

import enum

import attrs

from updater.status import UpdateStatus

SYSTEM_USER = "pulsegate"
MAX_MESSAGE_CHARS = 1024
# Heartbeat lapses an update records one by one; a flapping monitor's later lapses share one
# event (with a count), so the status events of an update stay bounded.
LAPSES_KEPT = 20


class Cause(enum.Enum):
    """Why a status event was recorded. Kept with the event so that rules which depend on how an
    update got where it is (auto-pause once per batch, operator-only resume after lost
    heartbeats) survive a failover."""

    START = "start"
    OPERATOR = "operator"
    HEARTBEAT = "heartbeat"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    AUTO_PAUSE = "auto_pause"
    ACK_WAIT = "ack_wait"  # rule 13: waiting for a batch to be acknowledged
    BLOCKED = "blocked"  # rule 14: onBlocked taken after maxBlockedMs awaiting pulse
    FAILURE = "failure"
    COMPLETE = "complete"
    ERROR = "error"


@attrs.frozen
class StatusEvent:
    status: UpdateStatus
    timestamp_ms: int
    user: str
    message: str = ""
    cause: Cause = Cause.OPERATOR
    count: int = 1  # a lapse event past LAPSES_KEPT stands for this many lapses
    # A write instruction, never stored: this event takes the update's last place and the
    # current last event moves down one, over the event before it (see `Bounded lapses` in
    # updater.engine). The number of status events does not change.
    coalesce: bool = attrs.field(default=False, eq=False)


class InstanceAction(enum.IntEnum):
    """Wire-stable ids, as in Aurora."""

    INSTANCE_UPDATED = 1
    INSTANCE_ROLLED_BACK = 2
    INSTANCE_UPDATING = 3
    INSTANCE_ROLLING_BACK = 4
    INSTANCE_UPDATE_FAILED = 5
    INSTANCE_ROLLBACK_FAILED = 6


START_ACTIONS = frozenset({InstanceAction.INSTANCE_UPDATING, InstanceAction.INSTANCE_ROLLING_BACK})
BACKWARD_ACTIONS = frozenset(
    {
        InstanceAction.INSTANCE_ROLLING_BACK,
        InstanceAction.INSTANCE_ROLLED_BACK,
        InstanceAction.INSTANCE_ROLLBACK_FAILED,
    }
)


def working_action(backward: bool) -> InstanceAction:
    return InstanceAction.INSTANCE_ROLLING_BACK if backward else InstanceAction.INSTANCE_UPDATING


def succeeded_action(backward: bool) -> InstanceAction:
    return InstanceAction.INSTANCE_ROLLED_BACK if backward else InstanceAction.INSTANCE_UPDATED


def failed_action(backward: bool) -> InstanceAction:
    return (
        InstanceAction.INSTANCE_ROLLBACK_FAILED
        if backward
        else InstanceAction.INSTANCE_UPDATE_FAILED
    )


@attrs.frozen
class InstanceEvent:
    instance_id: int
    timestamp_ms: int
    action: InstanceAction
    message: str = ""


def clip_message(message: str) -> str:
    """Messages we generate ourselves (exit reasons, check output) are cut to the audit limit."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 3] + "..."
