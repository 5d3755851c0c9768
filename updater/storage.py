"""The storage contract: what the service must persist, and the atomicity it must give. The
in-memory store (`updater.memstore`) and the ZooKeeper store both pass the same contract tests.

Atomicity: `start_update` creates the update and takes the job's active-update lock together;
`write` appends status and instance events, changes instance desired configs and, on a terminal
status, releases the lock, all or nothing. Writes are compare-and-set on the number of status
events the writer has seen, so two writers can never both extend an update.

A status event marked `coalesce` (a flapping monitor's lapse past the cap) is not appended: it
takes the last place and the last event moves down one, over the event before it, so the
number of status events stays the same."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import attrs

from updater.events import InstanceEvent, StatusEvent
from updater.job import Job
from updater.keys import JobKey, UpdateKey
from updater.record import UpdateRecord
from updater.status import UpdateStatus
from updater.task import TaskConfig

DEFAULT_HISTORY_KEEP = 10
DEFAULT_HISTORY_MAX_AGE_MS = 30 * 24 * 3600 * 1000


@attrs.frozen
class UpdateWrite:
    """One atomic write to an update. `desired` maps instance ids to their new desired config,
    or None to remove the instance from the job."""

    key: UpdateKey
    expected_status_events: int
    status_event: StatusEvent | None = None
    instance_events: tuple[InstanceEvent, ...] = ()
    desired: tuple[tuple[int, TaskConfig | None], ...] = ()
    # Also compared when set: a write of instance events alone must not land twice.
    expected_instance_events: int | None = None

    @classmethod
    def make(
        cls,
        key: UpdateKey,
        expected_status_events: int,
        status_event: StatusEvent | None = None,
        instance_events: Sequence[InstanceEvent] = (),
        desired: Mapping[int, TaskConfig | None] | None = None,
        expected_instance_events: int | None = None,
    ) -> UpdateWrite:
        return cls(
            key,
            expected_status_events,
            status_event,
            tuple(instance_events),
            tuple(sorted((desired or {}).items())),
            expected_instance_events,
        )

    def stale_because(self, status_events: int, instance_events: int) -> str | None:
        """Why this write does not fit an update with these counts (None: it fits)."""
        if status_events != self.expected_status_events:
            return (
                f"update {self.key} has {status_events} status events, "
                f"the writer expected {self.expected_status_events}"
            )
        expected = self.expected_instance_events
        if expected is not None and instance_events != expected:
            return (
                f"update {self.key} has {instance_events} instance events, "
                f"the writer expected {expected}"
            )
        return None

    @property
    def is_empty(self) -> bool:
        return self.status_event is None and not self.instance_events and not self.desired


@attrs.frozen
class UpdateSummary:
    key: UpdateKey
    user: str
    status: UpdateStatus
    created_ms: int
    last_modified_ms: int
    metadata: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, record: UpdateRecord) -> UpdateSummary:
        return cls(
            record.key,
            record.definition.user,
            record.status,
            record.created_ms,
            record.last_modified_ms,
            record.definition.metadata,
        )


@attrs.frozen
class UpdateQuery:
    """Filters are ANDed; `statuses` are ORed. Results are newest first; `limit` 0 means all."""

    role: str | None = None
    job: JobKey | None = None
    key: UpdateKey | None = None
    user: str | None = None
    statuses: frozenset[UpdateStatus] = frozenset()
    offset: int = 0
    limit: int = 0

    def matches(self, summary: UpdateSummary) -> bool:
        key = summary.key
        return (
            (self.role is None or key.job.role == self.role)
            and (self.job is None or key.job == self.job)
            and (self.key is None or key == self.key)
            and (self.user is None or summary.user == self.user)
            and (not self.statuses or summary.status in self.statuses)
        )

    def apply(self, summaries: Iterable[UpdateSummary]) -> list[UpdateSummary]:
        found = [s for s in summaries if self.matches(s)]
        found.sort(key=lambda s: (s.last_modified_ms, s.created_ms, s.key.id), reverse=True)
        found = found[self.offset :]
        return found[: self.limit] if self.limit else found


def select_prunable(
    summaries: Iterable[UpdateSummary],
    now: int,
    keep: int = DEFAULT_HISTORY_KEEP,
    max_age_ms: int = DEFAULT_HISTORY_MAX_AGE_MS,
) -> list[UpdateKey]:
    """Terminal updates to delete: those created more than `max_age_ms` ago, and those beyond
    the newest `keep` terminal updates of their job. Active updates are never pruned."""
    by_job: dict[JobKey, list[UpdateSummary]] = {}
    for summary in summaries:
        if summary.status.is_terminal:
            by_job.setdefault(summary.key.job, []).append(summary)
    doomed: list[UpdateKey] = []
    for updates in by_job.values():
        updates.sort(key=lambda s: (s.created_ms, s.key.id), reverse=True)
        for rank, summary in enumerate(updates):
            if rank >= keep or now - summary.created_ms > max_age_ms:
                doomed.append(summary.key)
    return doomed


class Storage(Protocol):
    """What the service persists. Every method may raise `Unavailable` when storage cannot be
    reached; a store owned by a deposed leader raises `Unavailable` on writes."""

    # jobs --------------------------------------------------------------------------------
    def create_job(self, job: Job) -> None:
        """Raises AlreadyExists if the job exists."""
        ...

    def get_job(self, key: JobKey) -> Job | None: ...

    def list_jobs(self, role: str | None = None) -> list[JobKey]: ...

    def delete_job(self, key: JobKey) -> None:
        """Remove a job and its desired state. Raises NotFound, or JobUpdating if an update is
        active on the job."""
        ...

    # updates -----------------------------------------------------------------------------
    def start_update(self, record: UpdateRecord) -> None:
        """Store a new update and take its job's active-update lock, atomically. Creates the job
        (with no instances) if it does not exist. Raises UpdateConflict naming the active
        update if the job has one."""
        ...

    def write(self, write: UpdateWrite) -> None:
        """Apply one atomic write. Raises NotFound, StaleWrite if the update has a different
        number of status events than `expected_status_events`, TransitionError if the update
        is already terminal."""
        ...

    def get_update(self, key: UpdateKey) -> UpdateRecord:
        """Raises NotFound."""
        ...

    def active_update(self, job: JobKey) -> UpdateKey | None: ...

    def active_updates(self) -> list[UpdateRecord]: ...

    def load_active(self) -> Mapping[UpdateKey, UpdateRecord | Exception]:
        """Every active update, with a per-update error in place of a record that cannot be
        read, so one corrupt update does not stop a new leader from taking over the others."""
        ...

    def load_jobs(self) -> list[Job]:
        """Every job with its desired instances (a new leader's picture of what should run)."""
        ...

    def forget_caches(self) -> None:
        """Drop whatever the store remembers of what it read, after a lost write or a change of
        leader (a store without caches does nothing)."""
        ...

    def summaries(self, job: JobKey | None = None) -> list[UpdateSummary]: ...

    def delete_updates(self, keys: Sequence[UpdateKey]) -> None:
        """Delete terminal updates (history pruning). Active updates are skipped."""
        ...
