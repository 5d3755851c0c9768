"""A planned step: what the leader persists, then commits to memory, then does. The planner
(`updater.engine`) returns steps and changes nothing; the service applies them."""

from __future__ import annotations

import attrs

from updater.driver import Action, ActionKind, InstanceState, ObservedInstance
from updater.events import InstanceEvent, StatusEvent
from updater.progress import Stage
from updater.task import TaskConfig


@attrs.frozen
class Step:
    """What to persist and do. `stages` and `cursor` are the progress changes `commit` applies."""

    transition: StatusEvent | None = None
    instance_events: tuple[InstanceEvent, ...] = ()
    actions: tuple[Action, ...] = ()
    wake_at_ms: int | None = None
    stages: tuple[tuple[int, Stage], ...] = ()
    cursor: int | None = None

    @property
    def has_writes(self) -> bool:
        return self.transition is not None or bool(self.instance_events)

    def desired_changes(self) -> dict[int, TaskConfig | None]:
        """The desired-state changes the actions make: a config, or None to remove."""
        return {
            a.instance_id: (None if a.kind is ActionKind.KILL else a.config) for a in self.actions
        }


EMPTY_STEP = Step()


@attrs.frozen
class Counts:
    total: int
    done: int
    in_flight: int
    failed: int


def start_action(
    instance_id: int, target: TaskConfig | None, seen: ObservedInstance | None
) -> Action:
    """The action that brings an instance to `target` (None: remove it)."""
    if target is None:
        return Action(ActionKind.KILL, instance_id)
    if seen is None or seen.state is InstanceState.ABSENT:
        return Action(ActionKind.ADD, instance_id, target)
    return Action(ActionKind.REPLACE, instance_id, target)
