"""Instance evaluation: observed instance vs desired config → outcome and action."""

import pytest

from updater.driver import Action, ActionKind, InstanceState, ObservedInstance
from updater.evaluation import Outcome, evaluate_instance

from builders import NEW, OLD

St = InstanceState
NOW = 10_000
MIN_WAIT = 1_000


def seen(state: St, config=NEW, healthy_since=None, failures=0, message="") -> ObservedInstance:
    return ObservedInstance(3, state, config, healthy_since, failures, message)


@pytest.mark.parametrize(
    ("target", "observed", "outcome", "action", "wait"),
    [
        (NEW, None, Outcome.WORKING, Action(ActionKind.ADD, 3, NEW), None),
        (NEW, seen(St.ABSENT, None), Outcome.WORKING, Action(ActionKind.ADD, 3, NEW), None),
        (NEW, seen(St.HEALTHY, OLD, 0), Outcome.WORKING, Action(ActionKind.REPLACE, 3, NEW), None),
        (NEW, seen(St.RUNNING, OLD), Outcome.WORKING, Action(ActionKind.REPLACE, 3, NEW), None),
        (NEW, seen(St.EXITED, OLD), Outcome.WORKING, Action(ActionKind.REPLACE, 3, NEW), None),
        (NEW, seen(St.KILLING, OLD), Outcome.WORKING, None, None),
        (NEW, seen(St.STARTING), Outcome.WORKING, None, None),
        (NEW, seen(St.RUNNING), Outcome.WORKING, None, None),
        (NEW, seen(St.HEALTHY, healthy_since=NOW - 200), Outcome.WORKING, None, NOW + 800),
        (NEW, seen(St.HEALTHY, healthy_since=NOW - MIN_WAIT), Outcome.SUCCEEDED, None, None),
        (NEW, seen(St.EXITED, failures=1), Outcome.WORKING, None, None),
        (NEW, seen(St.STARTING, failures=1), Outcome.WORKING, None, None),
        (NEW, seen(St.KILLING), Outcome.WORKING, None, None),
        (None, None, Outcome.SUCCEEDED, None, None),
        (None, seen(St.HEALTHY, OLD, 0), Outcome.WORKING, Action(ActionKind.KILL, 3), None),
        (None, seen(St.EXITED, OLD), Outcome.WORKING, Action(ActionKind.KILL, 3), None),
        (None, seen(St.KILLING, OLD), Outcome.WORKING, None, None),
    ],
)
def test_evaluation_table(target, observed, outcome, action, wait) -> None:
    result = evaluate_instance(3, target, observed, MIN_WAIT, 1, NOW)
    assert (result.outcome, result.action, result.wait_until_ms) == (outcome, action, wait)


def test_restarts_beyond_max_per_instance_failures_fail_the_instance() -> None:
    result = evaluate_instance(
        3, NEW, seen(St.EXITED, failures=2, message="exec failed"), 0, 1, NOW
    )
    assert result.outcome is Outcome.FAILED
    assert "exec failed" in result.message and "2 failures" in result.message
    # Even if it is running again: the count is what matters.
    assert (
        evaluate_instance(3, NEW, seen(St.HEALTHY, healthy_since=0, failures=2), 0, 1, NOW).outcome
        is Outcome.FAILED
    )
    assert (
        evaluate_instance(3, NEW, seen(St.HEALTHY, healthy_since=0, failures=1), 0, 1, NOW).outcome
        is Outcome.SUCCEEDED
    )


def test_min_wait_zero_succeeds_as_soon_as_healthy() -> None:
    result = evaluate_instance(3, NEW, seen(St.HEALTHY, healthy_since=NOW), 0, 0, NOW)
    assert result.outcome is Outcome.SUCCEEDED
