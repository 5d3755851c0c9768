"""Storage on ZooKeeper (the `updater.storage.Storage` contract).

Every write is one multi-op that starts with a check of the leader's election znode (fencing),
and update writes are compare-and-set on the version of the update's `state` znode. kazoo does
not raise when a transaction fails: it returns one result per op, so `commit` inspects them.
Reads (pipelined) come from `scheduler.zkread`.

kazoo exceptions are caught here and turned into domain errors; nothing else in pulsegate sees
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
)

from scheduler import codec
from scheduler.fencing import Fence, NotLeader, UnknownOutcome
from scheduler.paths import Paths
from scheduler.zkread import LOST, ZooKeeperReader
from updater.errors import (
    AlreadyExists,
    JobUpdating,
    NotFound,
    StaleWrite,
    TransitionError,
    Unavailable,
    UpdateConflict,
    ValueTooLarge,
)
from updater.events import InstanceEvent, StatusEvent
from updater.job import Job, group_configs
from updater.keys import JobKey, UpdateKey
from updater.record import UpdateRecord
from updater.status import UpdateStatus
from updater.storage import UpdateWrite
from updater.task import TaskConfig

# ZooKeeper refuses requests over jute.maxbuffer (1 MiB by default), a multi-op as a whole.
MAX_REQUEST_BYTES = 1_000_000
EVENTS_PER_CHUNK = 5_000

Op = tuple[str, str, bytes, Any]  # (kind, path, data, extra)


class ZooKeeperStorage(ZooKeeperReader):
    def __init__(
        self,
        client: KazooClient,
        paths: Paths,
        fence: Fence | None = None,
        writer: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        """`fence` None means unfenced writes (tools and test set-up only)."""
        super().__init__(client, paths, timeout_s)
        self.fence = fence
        self.writer = writer
        self.transactions = 0  # committed multi-ops, for benchmarks
        self._states: dict[UpdateKey, tuple[dict[str, Any], int]] = {}
        self._jobs: dict[JobKey, tuple[dict[int, TaskConfig], int]] = {}

    # -- plumbing ----------------------------------------------------------------------------

    def ensure_layout(self) -> None:
        """Create the root containers (idempotent; needs no fence)."""
        try:
            for path in self.paths.containers():
                self.client.ensure_path(path)
        except KazooException as e:
            raise Unavailable(f"ZooKeeper: {type(e).__name__}") from None

    def forget_caches(self) -> None:
        """Drop cached versions, after a lost write or a change of leader."""
        self._states.clear()
        self._jobs.clear()

    def commit(self, ops: list[Op], what: str) -> list[Any]:
        """Run `ops` as one fenced multi-op; return per-op results (exceptions included).

        Raises NotLeader if the fence check failed, ValueTooLarge before sending anything too
        big, UnknownOutcome if the connection broke mid-flight."""
        fence_node = self.fence.node() if self.fence is not None else None
        size = sum(len(path) + len(data) + 16 for _, path, data, _ in ops)
        if size > MAX_REQUEST_BYTES:
            raise ValueTooLarge(
                f"{what}: {size} bytes is over ZooKeeper's {MAX_REQUEST_BYTES}-byte request limit"
            )
        t = self.client.transaction()
        if fence_node is not None:
            t.check(fence_node, 0)
        for kind, path, data, extra in ops:
            if kind == "create":
                t.create(path, data, sequence=bool(extra))
            elif kind == "set":
                t.set_data(path, data, version=extra)
            elif kind == "delete":
                t.delete(path, version=extra)
            elif kind == "check":
                t.check(path, extra)
        try:
            results: list[Any] = t.commit_async().get(timeout=self.timeout_s)
        except LOST as e:
            self.forget_caches()
            raise UnknownOutcome(f"{what}: {type(e).__name__} during the write") from None
        except KazooException as e:
            self.forget_caches()
            raise UnknownOutcome(f"{what}: {type(e).__name__}") from None
        if fence_node is not None:
            first, results = results[0], results[1:]
            if isinstance(first, Exception) and not isinstance(first, RolledBackError):
                raise NotLeader(f"{what}: refused, this scheduler is no longer the leader")
        if not any(isinstance(r, Exception) for r in results):
            self.transactions += 1
        return results

    @staticmethod
    def failure(results: list[Any]) -> tuple[int, Exception] | None:
        for i, r in enumerate(results):
            if isinstance(r, Exception) and not isinstance(r, RolledBackError):
                return i, r
        return None

    # -- jobs ----------------------------------------------------------------------------------

    def _job_value(self, instances: dict[int, TaskConfig]) -> bytes:
        return codec.dumps({"groups": codec.groups_to_json(group_configs(instances))})

    def create_job(self, job: Job) -> None:
        results = self.commit(
            [("create", self.paths.job(job.key), self._job_value(job.instances()), False)],
            f"create job {job.key}",
        )
        failure = self.failure(results)
        if failure is not None:
            if isinstance(failure[1], NodeExistsError):
                raise AlreadyExists(f"job {job.key} already exists")
            raise Unavailable(f"create job {job.key}: {type(failure[1]).__name__}")
        self._jobs.pop(job.key, None)

    def delete_job(self, key: JobKey) -> None:
        active = self.active_update(key)
        if active is not None:
            raise JobUpdating(f"job {key} has an active update {active}", active)
        results = self.commit([("delete", self.paths.job(key), b"", -1)], f"delete job {key}")
        failure = self.failure(results)
        if failure is not None:
            if isinstance(failure[1], NoNodeError):
                raise NotFound(f"job {key} does not exist")
            raise Unavailable(f"delete job {key}: {type(failure[1]).__name__}")
        self._jobs.pop(key, None)

    # -- updates: writes -----------------------------------------------------------------------

    def _state_value(self, state: dict[str, Any]) -> bytes:
        return codec.dumps({**state, "writer": self.writer})

    def start_update(self, record: UpdateRecord) -> None:
        key = record.key
        d = record.definition
        state = {
            "status": record.status.value,
            "status_count": len(record.status_events),
            "instance_event_count": 0,
            "user": d.user,
            "created_ms": d.created_ms,
            "last_modified_ms": record.last_modified_ms,
            "metadata": [list(p) for p in d.metadata],
        }
        ops: list[Op] = []
        if self._read_job(key.job) is None:
            ops.append(("create", self.paths.job(key.job), self._job_value({}), False))
        ops += [
            ("create", self.paths.lock(key.job), key.id.encode(), False),
            ("create", self.paths.update(key), codec.dumps(codec.definition_to_json(d)), False),
            ("create", self.paths.state(key), self._state_value(state), False),
            ("create", self.paths.status(key), b"", False),
            ("create", self.paths.events(key), b"", False),
        ]
        for event in record.status_events:
            ops.append(("create", self.paths.status_prefix(key), self._status_value(event), True))
        results = self.commit(ops, f"start update {key}")
        failure = self.failure(results)
        if failure is None:
            self._states[key] = (state, 0)
            return
        index, error = failure
        path = ops[index][1]
        if isinstance(error, NodeExistsError) and path == self.paths.lock(key.job):
            active = self.active_update(key.job)
            if active is None:  # finished in between: try once more
                return self.start_update(record)
            raise UpdateConflict(f"job {key.job} already has an active update {active}", active)
        if isinstance(error, NodeExistsError) and path == self.paths.job(key.job):
            return self.start_update(record)  # created concurrently: the job now exists
        if isinstance(error, NodeExistsError):
            raise AlreadyExists(f"update {key} already exists")
        raise Unavailable(f"start update {key}: {type(error).__name__}")

    def _status_value(self, event: StatusEvent) -> bytes:
        return codec.dumps({**codec.status_event_to_json(event), "writer": self.writer})

    def _chunk_values(self, events: Sequence[InstanceEvent]) -> list[bytes]:
        return [
            codec.dumps(
                {
                    "events": codec.instance_events_to_json(events[i : i + EVENTS_PER_CHUNK]),
                    "writer": self.writer,
                }
            )
            for i in range(0, len(events), EVENTS_PER_CHUNK)
        ]

    def _cached_state(self, key: UpdateKey) -> tuple[dict[str, Any], int]:
        cached = self._states.get(key)
        if cached is not None:
            return cached
        try:
            data, stat = self.get(self.paths.state(key))
        except NoNodeError:
            raise NotFound(f"update {key} does not exist") from None
        state = codec.decode(dict, data, f"state of {key}")
        state.pop("schema_version", None)
        state.pop("writer", None)
        self._states[key] = (state, stat.version)
        return state, stat.version

    def _cached_job(self, key: JobKey) -> tuple[dict[int, TaskConfig], int]:
        cached = self._jobs.get(key)
        if cached is None:
            found = self._read_job(key)
            if found is None:
                raise NotFound(f"job {key} does not exist")
            cached = self._jobs[key] = found
        return cached

    def write(self, write: UpdateWrite, _retry: bool = True) -> None:
        key = write.key
        if self.fence is not None:
            self.fence.node()  # a deposed leader stops here, before any read can block it
        state, version = self._cached_state(key)
        stale = write.stale_because(state["status_count"], state["instance_event_count"])
        if stale is not None:
            self._states.pop(key, None)
            raise StaleWrite(stale)
        if UpdateStatus(state["status"]).is_terminal:
            raise TransitionError(f"update {key} is already finished")
        event = write.status_event
        new_state = dict(state)
        new_state["instance_event_count"] += len(write.instance_events)
        stamps = [e.timestamp_ms for e in write.instance_events]
        if event is not None:
            new_state["status"] = event.status.value
            new_state["status_count"] += 0 if event.coalesce else 1
            stamps.append(event.timestamp_ms)
        new_state["last_modified_ms"] = max([state["last_modified_ms"], *stamps])
        ops: list[Op] = [("set", self.paths.state(key), self._state_value(new_state), version)]
        if event is not None and event.coalesce:
            ops += self._coalesce_ops(key, state["status_count"], event)
        elif event is not None:
            ops.append(("create", self.paths.status_prefix(key), self._status_value(event), True))
        for chunk in self._chunk_values(write.instance_events):
            ops.append(("create", self.paths.events_prefix(key), chunk, True))
        job_after: dict[int, TaskConfig] | None = None
        job_version = -1
        if write.desired:
            instances, job_version = self._cached_job(key.job)
            job_after = dict(instances)
            for instance_id, config in write.desired:
                if config is None:
                    job_after.pop(instance_id, None)
                else:
                    job_after[instance_id] = config
            if job_after != instances:
                ops.append(
                    ("set", self.paths.job(key.job), self._job_value(job_after), job_version)
                )
            else:
                job_after = None
        if event is not None and event.status.is_terminal:
            ops.append(("delete", self.paths.lock(key.job), b"", -1))
        results = self.commit(ops, f"write update {key}")
        failure = self.failure(results)
        if failure is None:
            self._states[key] = (new_state, version + 1)
            if job_after is not None:
                self._jobs[key.job] = (job_after, job_version + 1)
            return
        index, error = failure
        path = ops[index][1]
        if isinstance(error, BadVersionError) and path == self.paths.job(key.job) and _retry:
            self._jobs.pop(key.job, None)
            return self.write(write, _retry=False)
        self._states.pop(key, None)
        self._jobs.pop(key.job, None)
        if isinstance(error, BadVersionError):
            raise StaleWrite(f"update {key} changed since it was read")
        if isinstance(error, NoNodeError):
            raise NotFound(f"update {key} does not exist")
        raise Unavailable(f"write update {key}: {type(error).__name__}")

    def _coalesce_ops(self, key: UpdateKey, count: int, event: StatusEvent) -> list[Op]:
        """A bounded lapse: the last status event moves down one and `event` takes its place,
        both rewritten in place. Status znodes are never deleted from an active update, so
        event i is `s_<i>`; the state's version check makes the read and the writes one."""
        if count < 2:
            raise TransitionError(f"update {key}: nothing to coalesce a status event with")
        prefix = self.paths.status_prefix(key)
        last = f"{prefix}{count - 1:010d}"
        try:
            moved, _ = self.get(last)
        except NoNodeError:
            raise NotFound(f"update {key} has no status event {count - 1}") from None
        return [
            ("set", f"{prefix}{count - 2:010d}", moved, -1),
            ("set", last, self._status_value(event), -1),
        ]

    # -- updates: reads ------------------------------------------------------------------------

    def delete_updates(self, keys: Sequence[UpdateKey]) -> None:
        for key in keys:
            try:
                state, _ = self._cached_state(key)
            except NotFound:
                continue
            if not UpdateStatus(state["status"]).is_terminal:
                continue
            self._delete_tree(key)
            self._states.pop(key, None)

    def _delete_tree(self, key: UpdateKey) -> None:
        children = [
            f"{parent}/{name}"
            for parent in (self.paths.status(key), self.paths.events(key))
            for name in self.children(parent)
        ]
        tail = [self.paths.status(key), self.paths.events(key), self.paths.state(key)]
        paths = [*children, *tail, self.paths.update(key)]
        for i in range(0, len(paths), 500):
            ops: list[Op] = [("delete", p, b"", -1) for p in paths[i : i + 500]]
            failure = self.failure(self.commit(ops, f"prune update {key}"))
            if failure is not None and not isinstance(failure[1], (NoNodeError, NotEmptyError)):
                raise Unavailable(f"prune update {key}: {type(failure[1]).__name__}")
