"""Instance evaluation: compare the config an instance should run with what the driver observes,
and say what to do. Returns decisions; never acts."""

from __future__ import annotations

import enum

import attrs

from updater.driver import Action, ActionKind, InstanceState, ObservedInstance
from updater.task import TaskConfig


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"  # at the target (and healthy for minWait, or absent as wanted)
    WORKING = "working"  # not there yet; `action` and/or `wait_until_ms` say what happens next
    FAILED = "failed"  # restarted more than maxPerInstanceFailures times at the target


@attrs.frozen
class Evaluation:
    outcome: Outcome
    action: Action | None = None
    wait_until_ms: int | None = None  # re-evaluate at this time even if nothing changes
    message: str = ""


_WAIT = Evaluation(Outcome.WORKING)
_DONE = Evaluation(Outcome.SUCCEEDED)


def evaluate_instance(
    instance_id: int,
    target: TaskConfig | None,
    observed: ObservedInstance | None,
    min_wait_ms: int,
    max_failures: int,
    now: int,
) -> Evaluation:
    """What to do about one instance whose desired config is `target` (None: not wanted).

    An instance counts as updated once it has been healthy at the target for `min_wait_ms`; it
    fails once it has failed more than `max_failures` times at the target."""
    state = observed.state if observed is not None else InstanceState.ABSENT
    if target is None:
        if state is InstanceState.ABSENT:
            return _DONE
        if state is InstanceState.KILLING:
            return _WAIT
        return Evaluation(Outcome.WORKING, Action(ActionKind.KILL, instance_id))
    if observed is None or state is InstanceState.ABSENT:
        return Evaluation(Outcome.WORKING, Action(ActionKind.ADD, instance_id, target))
    if observed.config != target:
        if state is InstanceState.KILLING:
            return _WAIT
        return Evaluation(Outcome.WORKING, Action(ActionKind.REPLACE, instance_id, target))
    if observed.failures > max_failures:
        reason = observed.message or "failed"
        return Evaluation(
            Outcome.FAILED,
            message=f"{reason} ({observed.failures} failures, more than the "
            f"{max_failures} tolerated)",
        )
    if state is InstanceState.HEALTHY:
        since = observed.healthy_since_ms if observed.healthy_since_ms is not None else now
        ready_at = since + min_wait_ms
        if now >= ready_at:
            return _DONE
        return Evaluation(Outcome.WORKING, wait_until_ms=ready_at)
    return _WAIT
