"""Where one direction of an update stands: which instances have started, which are in flight,
which succeeded or failed. Rebuilt from the persisted instance events after a failover, so
nothing is redone and no event is written twice."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from updater.events import BACKWARD_ACTIONS, START_ACTIONS, InstanceAction, InstanceEvent
from updater.strategy import Schedule


class Stage(enum.Enum):
    IDLE = "idle"
    WORKING = "working"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


_STAGE_OF = {
    InstanceAction.INSTANCE_UPDATING: Stage.WORKING,
    InstanceAction.INSTANCE_ROLLING_BACK: Stage.WORKING,
    InstanceAction.INSTANCE_UPDATED: Stage.SUCCEEDED,
    InstanceAction.INSTANCE_ROLLED_BACK: Stage.SUCCEEDED,
    InstanceAction.INSTANCE_UPDATE_FAILED: Stage.FAILED,
    InstanceAction.INSTANCE_ROLLBACK_FAILED: Stage.FAILED,
}


class Progress:
    """`order[:cursor]` have started (strategies start instances strictly in order);
    `working` maps in-flight ids to the time they next need a look (or None)."""

    def __init__(self, order: list[int], schedule: Schedule, backward: bool) -> None:
        self.order = order
        self.schedule = schedule
        self.backward = backward
        self.cursor = 0
        self.working: dict[int, int | None] = {}
        self.failed: list[int] = []
        self.succeeded = 0

    @property
    def in_flight(self) -> int:
        return len(self.working)

    @property
    def is_done(self) -> bool:
        return self.cursor >= len(self.order) and not self.working

    def stage(self, instance_id: int) -> Stage:
        if instance_id in self.working:
            return Stage.WORKING
        if instance_id in self.failed:
            return Stage.FAILED
        try:
            index = self.order.index(instance_id)
        except ValueError:
            return Stage.IDLE
        return Stage.SUCCEEDED if index < self.cursor else Stage.IDLE

    def set_stage(self, instance_id: int, stage: Stage, wait_until_ms: int | None = None) -> None:
        if stage is Stage.WORKING:
            self.working[instance_id] = wait_until_ms
        elif stage is Stage.SUCCEEDED:
            self.working.pop(instance_id, None)
            self.succeeded += 1
        elif stage is Stage.FAILED:
            self.working.pop(instance_id, None)
            self.failed.append(instance_id)

    def replay(self, events: Iterable[InstanceEvent]) -> None:
        """Apply this direction's persisted instance events, in the order they were written."""
        position = {instance_id: i for i, instance_id in enumerate(self.order)}
        for event in events:
            if (event.action in BACKWARD_ACTIONS) != self.backward:
                continue
            index = position.get(event.instance_id)
            if index is None:
                continue
            stage = _STAGE_OF[event.action]
            if event.action in START_ACTIONS:
                self.cursor = max(self.cursor, index + 1)
                if event.instance_id not in self.working:
                    self.working[event.instance_id] = None
            elif event.instance_id in self.working:
                self.set_stage(event.instance_id, stage)
