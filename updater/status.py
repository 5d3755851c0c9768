"""Update statuses (DESIGN §2) and the transition table.

State transitions: the table `ALLOWED` lists, for each status, where it may go. Asking for the
current status is a no-op; every other move not in the table is an error. Terminal statuses go
nowhere.
"""

from __future__ import annotations

import enum

from updater.errors import TransitionError


class UpdateStatus(enum.IntEnum):
    """Wire-stable ids, as in Aurora."""

    ROLLING_FORWARD = 0
    ROLLING_BACK = 1
    ROLL_FORWARD_PAUSED = 2
    ROLL_BACK_PAUSED = 3
    ROLLED_FORWARD = 4
    ROLLED_BACK = 5
    ABORTED = 6
    ERROR = 7
    FAILED = 8
    ROLL_FORWARD_AWAITING_PULSE = 9
    ROLL_BACK_AWAITING_PULSE = 10

    @property
    def is_active(self) -> bool:
        return self in ACTIVE

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def is_rolling(self) -> bool:
        return self in ROLLING

    @property
    def is_paused(self) -> bool:
        return self in PAUSED

    @property
    def is_awaiting_pulse(self) -> bool:
        return self in AWAITING_PULSE

    @property
    def is_backward(self) -> bool:
        """True for statuses of the rollback direction."""
        return self in BACKWARD


S = UpdateStatus

ROLLING = frozenset({S.ROLLING_FORWARD, S.ROLLING_BACK})
PAUSED = frozenset({S.ROLL_FORWARD_PAUSED, S.ROLL_BACK_PAUSED})
AWAITING_PULSE = frozenset({S.ROLL_FORWARD_AWAITING_PULSE, S.ROLL_BACK_AWAITING_PULSE})
ACTIVE = ROLLING | PAUSED | AWAITING_PULSE
TERMINAL = frozenset({S.ROLLED_FORWARD, S.ROLLED_BACK, S.ABORTED, S.ERROR, S.FAILED})
BACKWARD = frozenset({S.ROLLING_BACK, S.ROLL_BACK_PAUSED, S.ROLL_BACK_AWAITING_PULSE})

ALLOWED: dict[UpdateStatus, frozenset[UpdateStatus]] = {
    S.ROLLING_FORWARD: frozenset(
        {
            S.ROLLING_BACK,
            S.ROLL_FORWARD_PAUSED,
            S.ROLL_FORWARD_AWAITING_PULSE,
            S.ROLLED_FORWARD,
            S.ABORTED,
            S.FAILED,
            S.ERROR,
        }
    ),
    S.ROLLING_BACK: frozenset(
        {
            S.ROLL_BACK_PAUSED,
            S.ROLL_BACK_AWAITING_PULSE,
            S.ROLLED_BACK,
            S.ABORTED,
            S.FAILED,
            S.ERROR,
        }
    ),
    S.ROLL_FORWARD_PAUSED: frozenset(
        {S.ROLLING_FORWARD, S.ROLLING_BACK, S.ROLL_FORWARD_AWAITING_PULSE, S.ABORTED, S.ERROR}
    ),
    S.ROLL_BACK_PAUSED: frozenset({S.ROLLING_BACK, S.ROLL_BACK_AWAITING_PULSE, S.ABORTED, S.ERROR}),
    S.ROLL_FORWARD_AWAITING_PULSE: frozenset(
        {S.ROLLING_FORWARD, S.ROLLING_BACK, S.ROLL_FORWARD_PAUSED, S.ABORTED, S.ERROR}
    ),
    S.ROLL_BACK_AWAITING_PULSE: frozenset({S.ROLLING_BACK, S.ROLL_BACK_PAUSED, S.ABORTED, S.ERROR}),
    S.ROLLED_FORWARD: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.ABORTED: frozenset(),
    S.ERROR: frozenset(),
    S.FAILED: frozenset(),
}


def is_allowed(current: UpdateStatus, target: UpdateStatus) -> bool:
    return target in ALLOWED[current]


def check_transition(current: UpdateStatus, target: UpdateStatus) -> bool:
    """True if the move must be recorded, False if it is a no-op (same status).

    Raises TransitionError for any move the table does not allow."""
    if current is target:
        return False
    if target not in ALLOWED[current]:
        if current.is_terminal:
            raise TransitionError(
                f"update is {current.name}, which is final; it cannot become {target.name}"
            )
        raise TransitionError(f"cannot move an update from {current.name} to {target.name}")
    return True


def rolling(backward: bool) -> UpdateStatus:
    return S.ROLLING_BACK if backward else S.ROLLING_FORWARD


def paused(backward: bool) -> UpdateStatus:
    return S.ROLL_BACK_PAUSED if backward else S.ROLL_FORWARD_PAUSED


def awaiting_pulse(backward: bool) -> UpdateStatus:
    return S.ROLL_BACK_AWAITING_PULSE if backward else S.ROLL_FORWARD_AWAITING_PULSE
