"""The transition table of DESIGN §2, every pair."""

import itertools

import pytest

from updater.errors import TransitionError
from updater.status import ACTIVE, TERMINAL, UpdateStatus, check_transition

S = UpdateStatus

ALLOWED = {
    (S.ROLLING_FORWARD, S.ROLLING_BACK),
    (S.ROLLING_FORWARD, S.ROLL_FORWARD_PAUSED),
    (S.ROLLING_FORWARD, S.ROLL_FORWARD_AWAITING_PULSE),
    (S.ROLLING_FORWARD, S.ROLLED_FORWARD),
    (S.ROLLING_FORWARD, S.ABORTED),
    (S.ROLLING_FORWARD, S.FAILED),
    (S.ROLLING_FORWARD, S.ERROR),
    (S.ROLLING_BACK, S.ROLL_BACK_PAUSED),
    (S.ROLLING_BACK, S.ROLL_BACK_AWAITING_PULSE),
    (S.ROLLING_BACK, S.ROLLED_BACK),
    (S.ROLLING_BACK, S.ABORTED),
    (S.ROLLING_BACK, S.FAILED),
    (S.ROLLING_BACK, S.ERROR),
    (S.ROLL_FORWARD_PAUSED, S.ROLLING_FORWARD),
    (S.ROLL_FORWARD_PAUSED, S.ROLLING_BACK),
    (S.ROLL_FORWARD_PAUSED, S.ROLL_FORWARD_AWAITING_PULSE),
    (S.ROLL_FORWARD_PAUSED, S.ABORTED),
    (S.ROLL_FORWARD_PAUSED, S.ERROR),
    (S.ROLL_BACK_PAUSED, S.ROLLING_BACK),
    (S.ROLL_BACK_PAUSED, S.ROLL_BACK_AWAITING_PULSE),
    (S.ROLL_BACK_PAUSED, S.ABORTED),
    (S.ROLL_BACK_PAUSED, S.ERROR),
    (S.ROLL_FORWARD_AWAITING_PULSE, S.ROLLING_FORWARD),
    (S.ROLL_FORWARD_AWAITING_PULSE, S.ROLLING_BACK),
    (S.ROLL_FORWARD_AWAITING_PULSE, S.ROLL_FORWARD_PAUSED),
    (S.ROLL_FORWARD_AWAITING_PULSE, S.ABORTED),
    (S.ROLL_FORWARD_AWAITING_PULSE, S.ERROR),
    (S.ROLL_BACK_AWAITING_PULSE, S.ROLLING_BACK),
    (S.ROLL_BACK_AWAITING_PULSE, S.ROLL_BACK_PAUSED),
    (S.ROLL_BACK_AWAITING_PULSE, S.ABORTED),
    (S.ROLL_BACK_AWAITING_PULSE, S.ERROR),
}
PAIRS = list(itertools.product(S, S))


def test_ids_are_aurora_wire_ids() -> None:
    assert [s.value for s in S] == list(range(11))
    assert S.ROLL_FORWARD_AWAITING_PULSE == 9 and S.FAILED == 8


def test_active_and_terminal_partition_the_statuses() -> None:
    assert set(S) == ACTIVE | TERMINAL and not ACTIVE & TERMINAL
    assert {s for s in S if s.is_terminal} == {4, 5, 6, 7, 8}


@pytest.mark.parametrize(("current", "target"), [p for p in PAIRS if p in ALLOWED])
def test_allowed_transition_is_recorded(current: S, target: S) -> None:
    assert check_transition(current, target) is True


@pytest.mark.parametrize("status", list(S))
def test_same_status_is_a_noop(status: S) -> None:
    assert check_transition(status, status) is False


@pytest.mark.parametrize(
    ("current", "target"), [p for p in PAIRS if p not in ALLOWED and p[0] != p[1]]
)
def test_disallowed_transition_is_an_error(current: S, target: S) -> None:
    with pytest.raises(TransitionError) as raised:
        check_transition(current, target)
    assert current.name in str(raised.value) and target.name in str(raised.value)


def test_table_covers_exactly_the_design() -> None:
    allowed = {(a, b) for a, b in PAIRS if a != b and check_transition_ok(a, b)}
    assert allowed == ALLOWED


def check_transition_ok(a: S, b: S) -> bool:
    try:
        return check_transition(a, b)
    except TransitionError:
        return False
