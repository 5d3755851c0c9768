"""In-memory storage for the pure core's tests and the engine benchmark. Same contract as the
ZooKeeper store; no persistence."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import attrs

from updater.errors import (
    AlreadyExists,
    JobUpdating,
    NotFound,
    StaleWrite,
    TransitionError,
    UpdateConflict,
)
from updater.events import InstanceEvent, StatusEvent
from updater.job import Job
from updater.keys import JobKey, UpdateKey
from updater.record import UpdateDefinition, UpdateRecord
from updater.storage import UpdateSummary, UpdateWrite
from updater.task import TaskConfig


class _Update:
    def __init__(self, record: UpdateRecord) -> None:
        self.definition: UpdateDefinition = record.definition
        self.status_events: list[StatusEvent] = list(record.status_events)
        self.instance_events: list[InstanceEvent] = list(record.instance_events)

    def record(self) -> UpdateRecord:
        return UpdateRecord(self.definition, tuple(self.status_events), tuple(self.instance_events))


class MemoryStorage:
    def __init__(self) -> None:
        self.jobs: dict[JobKey, dict[int, TaskConfig]] = {}
        self.updates: dict[UpdateKey, _Update] = {}
        self.locks: dict[JobKey, UpdateKey] = {}
        self.write_count = 0

    # jobs --------------------------------------------------------------------------------
    def create_job(self, job: Job) -> None:
        if job.key in self.jobs:
            raise AlreadyExists(f"job {job.key} already exists")
        self.jobs[job.key] = job.instances()
        self.write_count += 1

    def get_job(self, key: JobKey) -> Job | None:
        instances = self.jobs.get(key)
        return None if instances is None else Job.from_instances(key, instances)

    def list_jobs(self, role: str | None = None) -> list[JobKey]:
        return sorted(k for k in self.jobs if role is None or k.role == role)

    def delete_job(self, key: JobKey) -> None:
        if key not in self.jobs:
            raise NotFound(f"job {key} does not exist")
        active = self.locks.get(key)
        if active is not None:
            raise JobUpdating(f"job {key} has an active update {active}", active)
        del self.jobs[key]
        self.write_count += 1

    # updates -----------------------------------------------------------------------------
    def start_update(self, record: UpdateRecord) -> None:
        job = record.key.job
        active = self.locks.get(job)
        if active is not None:
            raise UpdateConflict(f"job {job} already has an active update {active}", active)
        if record.key in self.updates:
            raise AlreadyExists(f"update {record.key} already exists")
        self.jobs.setdefault(job, {})
        self.updates[record.key] = _Update(record)
        self.locks[job] = record.key
        self.write_count += 1

    def write(self, write: UpdateWrite) -> None:
        update = self._update(write.key)
        stale = write.stale_because(len(update.status_events), len(update.instance_events))
        if stale is not None:
            raise StaleWrite(stale)
        if update.status_events[-1].status.is_terminal:
            raise TransitionError(f"update {write.key} is already finished")
        instances = self.jobs.setdefault(write.key.job, {})
        for instance_id, config in write.desired:
            if config is None:
                instances.pop(instance_id, None)
            else:
                instances[instance_id] = config
        update.instance_events.extend(write.instance_events)
        if write.status_event is not None:
            event = write.status_event
            if event.coalesce:  # a bounded lapse: the last event moves down one
                stored = attrs.evolve(event, coalesce=False)
                update.status_events[-2:] = [update.status_events[-1], stored]
            else:
                update.status_events.append(event)
            if write.status_event.status.is_terminal:
                self.locks.pop(write.key.job, None)
        self.write_count += 1

    def get_update(self, key: UpdateKey) -> UpdateRecord:
        return self._update(key).record()

    def active_update(self, job: JobKey) -> UpdateKey | None:
        return self.locks.get(job)

    def active_updates(self) -> list[UpdateRecord]:
        return [self.updates[key].record() for key in self.locks.values()]

    def load_active(self) -> dict[UpdateKey, UpdateRecord | Exception]:
        return {key: self.updates[key].record() for key in self.locks.values()}

    def load_jobs(self) -> list[Job]:
        return [Job.from_instances(key, instances) for key, instances in self.jobs.items()]

    def forget_caches(self) -> None:
        """Nothing is cached: memory is the store."""

    def summaries(self, job: JobKey | None = None) -> list[UpdateSummary]:
        return [
            UpdateSummary.of(u.record())
            for k, u in self.updates.items()
            if job is None or k.job == job
        ]

    def delete_updates(self, keys: Sequence[UpdateKey]) -> None:
        for key in keys:
            update = self.updates.get(key)
            if update is not None and update.status_events[-1].status.is_terminal:
                del self.updates[key]
                self.write_count += 1

    def _update(self, key: UpdateKey) -> _Update:
        update = self.updates.get(key)
        if update is None:
            raise NotFound(f"update {key} does not exist")
        return update

    def snapshot(self) -> MemoryStorage:
        """A deep copy, for tests that compare before and after."""
        return copy.deepcopy(self)
