"""An update as it is stored: its definition (what to change, with which settings) and its audit
trail. Everything a new leader needs to continue the update is here; progress is derived."""

from __future__ import annotations

import attrs

from updater.diff import JobDiff, diff_job
from updater.errors import InvalidRequest, NoopUpdate
from updater.events import Cause, InstanceEvent, StatusEvent
from updater.job import ConfigGroup, Job
from updater.keys import JobKey, UpdateKey
from updater.ranges import Range, merge
from updater.settings import Settings, validate_settings
from updater.status import UpdateStatus
from updater.task import TaskConfig, validate_task

DEFAULT_MAX_INSTANCES = 10_000
MAX_METADATA = 64
# Metadata key a client tags a start with, so that a retried start finds its first attempt.
REQUEST_ID = "pulsegate.request_id"


@attrs.frozen
class UpdateRequest:
    job: JobKey
    config: TaskConfig
    instance_count: int
    settings: Settings = Settings()
    metadata: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class UpdateDefinition:
    """`initial` holds the current configs of the ids this update changes or removes; `desired`
    the ids that get `config` (added and changed). Unchanged ids are not part of the plan."""

    key: UpdateKey
    user: str
    created_ms: int
    settings: Settings
    config: TaskConfig
    instance_count: int
    initial: tuple[ConfigGroup, ...]
    desired: tuple[Range, ...]
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def is_coordinated(self) -> bool:
        return self.settings.is_coordinated

    def initial_configs(self) -> dict[int, TaskConfig]:
        out: dict[int, TaskConfig] = {}
        for group in self.initial:
            for r in group.ranges:
                for instance_id in range(r.first, r.last + 1):
                    out[instance_id] = group.config
        return out

    def desired_ids(self) -> set[int]:
        ids: set[int] = set()
        for r in self.desired:
            ids.update(range(r.first, r.last + 1))
        return ids

    def forward_order(self) -> list[int]:
        """Added ids first, then changed, then removed, each ascending (DESIGN §4)."""
        initial = self.initial_configs()
        desired = self.desired_ids()
        added = sorted(i for i in desired if i not in initial)
        changed = sorted(i for i in desired if i in initial)
        removed = sorted(i for i in initial if i not in desired)
        return added + changed + removed


@attrs.frozen
class UpdateRecord:
    definition: UpdateDefinition
    status_events: tuple[StatusEvent, ...]
    instance_events: tuple[InstanceEvent, ...] = ()

    @property
    def key(self) -> UpdateKey:
        return self.definition.key

    @property
    def status(self) -> UpdateStatus:
        return self.status_events[-1].status

    @property
    def created_ms(self) -> int:
        return self.definition.created_ms

    @property
    def last_modified_ms(self) -> int:
        last = self.status_events[-1].timestamp_ms
        if self.instance_events:
            last = max(last, self.instance_events[-1].timestamp_ms)
        return last

    @property
    def pause_event(self) -> StatusEvent | None:
        """Who paused the update and why, while it is paused."""
        event = self.status_events[-1]
        return event if event.status.is_paused else None


def validate_request(request: UpdateRequest, max_instances: int = DEFAULT_MAX_INSTANCES) -> None:
    validate_task(request.config)
    count = request.instance_count
    if not isinstance(count, int) or isinstance(count, bool):
        raise InvalidRequest("instanceCount", "must be an integer")
    if count < 0 or count > max_instances:
        raise InvalidRequest("instanceCount", f"must be in 0..{max_instances}, got {count}")
    validate_settings(request.settings)
    if len(request.metadata) > MAX_METADATA:
        raise InvalidRequest("metadata", f"must have at most {MAX_METADATA} entries")
    for key, value in request.metadata:
        if not key or len(key) > 256 or len(value) > 1024:
            raise InvalidRequest(
                "metadata", "keys must be 1-256 characters and values at most 1024"
            )


def plan_update(
    request: UpdateRequest,
    job: Job | None,
    update_id: str,
    user: str,
    message: str,
    now: int,
    max_instances: int = DEFAULT_MAX_INSTANCES,
) -> tuple[UpdateRecord, JobDiff]:
    """Validate a request against the job and build the record to store. A coordinated update
    starts awaiting its first heartbeat (DESIGN §3 rule 1).

    Raises InvalidRequest for bad input and NoopUpdate if nothing would change."""
    validate_request(request, max_instances)
    current = job.instances() if job is not None else {}
    diff = diff_job(
        current,
        request.config,
        request.instance_count,
        merge(request.settings.update_only_these_instances),
    )
    if diff.is_noop:
        raise NoopUpdate(f"job {request.job} is unchanged by the proposed update")
    definition = UpdateDefinition(
        key=UpdateKey.checked(request.job, update_id),
        user=user,
        created_ms=now,
        settings=request.settings,
        config=request.config,
        instance_count=request.instance_count,
        initial=diff.old,
        desired=merge(diff.added + diff.changed),
        metadata=request.metadata,
    )
    if request.settings.is_coordinated:
        first = StatusEvent(
            UpdateStatus.ROLL_FORWARD_AWAITING_PULSE,
            now,
            user,
            message or "waiting for the first heartbeat",
            Cause.START,
        )
    else:
        first = StatusEvent(UpdateStatus.ROLLING_FORWARD, now, user, message, Cause.START)
    return UpdateRecord(definition, (first,)), diff
