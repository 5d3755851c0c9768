"""Storage on ZooKeeper (the `updater.storage.Storage` contract).

Every write is one multi-op that starts with a check of the leader's election znode (fencing),
and update writes are compare-and-set on the version of the update's `state` znode. kazoo does
not raise when a transaction fails: it returns one result per op, so `commit` inspects them.
Reads are pipelined with the async API: loading 1,000 updates costs a few round trips, not
thousands.

kazoo exceptions are caught here and turned into domain errors; nothing else in pulsegate sees
them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import ZnodeStat

from scheduler import codec
from scheduler.fencing import Fence, NotLeader, UnknownOutcome
from scheduler.paths import Paths, parse_job_node, parse_update_node
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
from updater.storage import UpdateSummary, UpdateWrite
from updater.task import TaskConfig

# ZooKeeper refuses requests over jute.maxbuffer (1 MiB by default), a multi-op as a whole.
MAX_REQUEST_BYTES = 1_000_000
EVENTS_PER_CHUNK = 5_000
_LOST = (ConnectionLoss, SessionExpiredError, KazooTimeoutError)

Op = tuple[str, str, bytes, Any]  # (kind, path, data, extra)


def _seq(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


class ZooKeeperStorage:
    def __init__(
        self,
        client: KazooClient,
        paths: Paths,
        fence: Fence | None = None,
        writer: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        """`fence` None means unfenced writes (tools and test set-up only)."""
        self.client = client
        self.paths = paths
        self.fence = fence
        self.writer = writer
        self.timeout_s = timeout_s
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

    def _wait(self, result: Any, path: str) -> Any:
        try:
            return result.get(timeout=self.timeout_s)
        except NoNodeError:
            raise
        except _LOST as e:
            raise Unavailable(f"ZooKeeper unreachable reading {path}: {type(e).__name__}") from None
        except KazooException as e:
            raise Unavailable(f"ZooKeeper error reading {path}: {type(e).__name__}") from None

    def get(self, path: str) -> tuple[bytes, ZnodeStat]:
        data, stat = self._wait(self.client.get_async(path), path)
        return data, stat

    def children(self, path: str) -> list[str]:
        try:
            children: list[str] = self._wait(self.client.get_children_async(path), path)
        except NoNodeError:
            return []
        return children

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
        except _LOST as e:
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

    def _read_job(self, key: JobKey) -> tuple[dict[int, TaskConfig], int] | None:
        try:
            data, stat = self.get(self.paths.job(key))
        except NoNodeError:
            return None
        groups = codec.decode(lambda v: codec.groups_from_json(v["groups"]), data, f"job {key}")
        return Job(key, groups).instances(), stat.version

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

    def get_job(self, key: JobKey) -> Job | None:
        found = self._read_job(key)
        return None if found is None else Job.from_instances(key, found[0])

    def load_jobs(self) -> list[Job]:
        """Every job, with pipelined reads (a new leader reconciles them all)."""
        keys = self.list_jobs()
        results = [(k, self.client.get_async(self.paths.job(k))) for k in keys]
        jobs = []
        for key, result in results:
            try:
                data, _ = self._wait(result, str(key))
            except NoNodeError:
                continue
            groups = codec.decode(lambda v: codec.groups_from_json(v["groups"]), data, f"job {key}")
            jobs.append(Job(key, groups))
        return jobs

    def list_jobs(self, role: str | None = None) -> list[JobKey]:
        keys = (parse_job_node(n) for n in self.children(self.paths.jobs))
        return sorted(k for k in keys if k is not None and (role is None or k.role == role))

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
        state, version = self._cached_state(key)
        if state["status_count"] != write.expected_status_events:
            self._states.pop(key, None)
            raise StaleWrite(
                f"update {key} has {state['status_count']} status events, "
                f"the writer expected {write.expected_status_events}"
            )
        if UpdateStatus(state["status"]).is_terminal:
            raise TransitionError(f"update {key} is already finished")
        event = write.status_event
        new_state = dict(state)
        new_state["instance_event_count"] += len(write.instance_events)
        stamps = [e.timestamp_ms for e in write.instance_events]
        if event is not None:
            new_state["status"] = event.status.value
            new_state["status_count"] += 1
            stamps.append(event.timestamp_ms)
        new_state["last_modified_ms"] = max([state["last_modified_ms"], *stamps])
        ops: list[Op] = [("set", self.paths.state(key), self._state_value(new_state), version)]
        if event is not None:
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

    # -- updates: reads ------------------------------------------------------------------------

    def get_update(self, key: UpdateKey) -> UpdateRecord:
        loaded = self._load([key])[key]
        if isinstance(loaded, Exception):
            raise loaded
        return loaded

    def _load(self, keys: Iterable[UpdateKey]) -> dict[UpdateKey, UpdateRecord | Exception]:
        """Load many updates with pipelined reads: one round of requests for the definitions
        and child lists, one for the children."""
        keys = list(keys)
        c = self.client
        first = {
            k: (
                c.get_async(self.paths.update(k)),
                c.get_children_async(self.paths.status(k)),
                c.get_children_async(self.paths.events(k)),
            )
            for k in keys
        }
        second: dict[UpdateKey, Any] = {}
        out: dict[UpdateKey, UpdateRecord | Exception] = {}
        for k, (definition, status, events) in first.items():
            try:
                data, _ = self._wait(definition, self.paths.update(k))
                status_names = sorted(self._wait(status, self.paths.status(k)), key=_seq)
                event_names = sorted(self._wait(events, self.paths.events(k)), key=_seq)
            except NoNodeError:
                out[k] = NotFound(f"update {k} does not exist")
                continue
            second[k] = (
                data,
                [c.get_async(f"{self.paths.status(k)}/{n}") for n in status_names],
                [c.get_async(f"{self.paths.events(k)}/{n}") for n in event_names],
            )
        for k, (data, status_results, event_results) in second.items():
            try:
                definition_value = codec.decode(codec.definition_from_json, data, f"update {k}")
                status_events = tuple(
                    codec.decode(
                        codec.status_event_from_json,
                        self._wait(r, str(k))[0],
                        f"status event of {k}",
                    )
                    for r in status_results
                )
                instance_events: list[InstanceEvent] = []
                for r in event_results:
                    instance_events += codec.decode(
                        lambda v: codec.instance_events_from_json(v["events"]),
                        self._wait(r, str(k))[0],
                        f"instance events of {k}",
                    )
                if not status_events:
                    raise codec.CorruptValue(f"update {k} has no status events")
                out[k] = UpdateRecord(definition_value, status_events, tuple(instance_events))
            except NoNodeError:
                out[k] = NotFound(f"update {k} was deleted while being read")
            except (codec.CorruptValue, Unavailable) as e:
                out[k] = e
        return out

    def active_update(self, job: JobKey) -> UpdateKey | None:
        try:
            data, _ = self.get(self.paths.lock(job))
        except NoNodeError:
            return None
        return UpdateKey(job, data.decode())

    def active_keys(self) -> list[UpdateKey]:
        names = self.children(self.paths.locks)
        results = [(n, self.client.get_async(f"{self.paths.locks}/{n}")) for n in names]
        keys = []
        for name, result in results:
            job = parse_job_node(name)
            try:
                data, _ = self._wait(result, name)
            except NoNodeError:
                continue
            if job is not None:
                keys.append(UpdateKey(job, data.decode()))
        return keys

    def active_updates(self) -> list[UpdateRecord]:
        loaded = self._load(self.active_keys())
        records = []
        for result in loaded.values():
            if isinstance(result, NotFound):
                continue
            if isinstance(result, Exception):
                raise result
            records.append(result)
        return records

    def load_active(self) -> dict[UpdateKey, UpdateRecord | Exception]:
        """Every active update, with a per-update error instead of a record where one cannot be
        read (so one corrupt update does not stop a leader from taking over)."""
        return self._load(self.active_keys())

    def summaries(self, job: JobKey | None = None) -> list[UpdateSummary]:
        keys = [parse_update_node(n) for n in self.children(self.paths.updates)]
        wanted = [k for k in keys if k is not None and (job is None or k.job == job)]
        results = [(k, self.client.get_async(self.paths.state(k))) for k in wanted]
        out = []
        for k, result in results:
            try:
                data, _ = self._wait(result, str(k))
            except NoNodeError:
                continue
            v = codec.loads(data, f"state of {k}")
            out.append(
                UpdateSummary(
                    k,
                    v["user"],
                    UpdateStatus(v["status"]),
                    v["created_ms"],
                    v["last_modified_ms"],
                    tuple((a, b) for a, b in v.get("metadata", [])),
                )
            )
        return out

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
