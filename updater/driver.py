"""The driver contract: what the engine needs to know about running instances, and the actions
it asks for. Drivers (sim, local processes, host agents) implement `Driver`; the engine only
ever reads `ObservedInstance`s and returns `Action`s.

Fields are required unless marked optional."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Protocol

import attrs

from updater.keys import JobKey
from updater.task import TaskConfig


class InstanceState(enum.Enum):
    ABSENT = "absent"  # nothing runs for this id
    STARTING = "starting"  # launched, not yet running (or still in its initial delay)
    RUNNING = "running"  # running, not (yet, or any more) healthy
    HEALTHY = "healthy"  # running and passing its health check since `healthy_since_ms`
    EXITED = "exited"  # exited; the reconciler will restart it (with backoff)
    KILLING = "killing"  # being stopped (SIGTERM sent, grace period running)


@attrs.frozen
class ObservedInstance:
    """One instance as the driver sees it.

    - `instance_id`, `state`: required.
    - `config`: required unless ABSENT; the config the instance runs (or last ran).
    - `healthy_since_ms`: required when HEALTHY; when it last became healthy.
    - `failures`: required; how many times the instance exited or was restarted for failing its
      health check while at `config`. Reset when the config changes. This is what
      `maxPerInstanceFailures` counts.
    - `message`: optional; why it last exited or failed, for instance events ("exec failed:
      no such file", "exited with status 3", "health check failed 3 times").
    """

    instance_id: int
    state: InstanceState
    config: TaskConfig | None = None
    healthy_since_ms: int | None = None
    failures: int = 0
    message: str = ""


class ActionKind(enum.Enum):
    ADD = "add"  # start an instance of `config` where none runs
    REPLACE = "replace"  # stop what runs and start `config`
    KILL = "kill"  # stop the instance; it is no longer wanted


@attrs.frozen
class Action:
    """A change of one instance's desired state. Drivers must treat actions as idempotent: the
    same action may be planned again after a failover."""

    kind: ActionKind
    instance_id: int
    config: TaskConfig | None = None


class Driver(Protocol):
    """What every driver provides."""

    def instances(self, job: JobKey) -> Mapping[int, ObservedInstance]:
        """Required. The observed instances of `job`; ids not in the mapping are ABSENT. Must be
        cheap: the engine looks up only the ids it is working on."""
        ...

    def apply(self, job: JobKey, actions: Sequence[Action]) -> None:
        """Required. Make the desired state of these instances what the actions say. Must not
        block on instances starting or stopping; progress is reported through `instances`."""
        ...

    def reconcile(self, job: JobKey, desired: Mapping[int, TaskConfig]) -> None:
        """Required. Make `job`'s instances match `desired` (id → config) outside any update:
        adopt what already runs as desired, start what is missing, stop what is not wanted.
        Called by a new leader for every job, and when a job is created or killed."""
        ...

    def takeover(
        self,
        desired: Mapping[JobKey, Mapping[int, TaskConfig]],
        parked: AbstractSet[tuple[JobKey, int]] = frozenset(),
    ) -> None:
        """Required. A new leader's first call, with every job's desired state: reconcile them
        all, adopting what runs, and stop instances of jobs that no longer exist. Called
        before `set_acting(True)`. May raise Unavailable (what runs could not be read), and
        then must have changed nothing: the leader calls it again.

        Instances `parked` (in flight in a coordinated update, DESIGN §3 rule 8) are adopted
        but left exactly as they are, not started, stopped or replaced, until `apply` names
        them or `reconcile` is called for their job: their desired config may be a step the
        old leader persisted but never took, and only a heartbeat may let it happen."""
        ...

    def set_acting(self, acting: bool) -> None:
        """Required. Whether this scheduler leads. A driver starts, stops and restarts
        instances only while acting; it keeps observing (and running instances keep running)
        either way."""
        ...

    def set_listener(self, listener: Callable[[JobKey, int], None] | None) -> None:
        """Required. Call `listener(job, instance_id)` whenever an instance's observed state
        changes, so the engine re-evaluates at once instead of polling. May be called from any
        thread; the listener must not block."""
        ...
