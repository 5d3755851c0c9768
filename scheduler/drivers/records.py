"""Durable records of local instance processes, in ZooKeeper under `hosts/<host>/`, so that a
scheduler restarted (or taking over) on the same host adopts what runs instead of starting it
again. Writes are fenced like every leader write; every call has the store's timeout, since the
local driver's reconciler thread makes them."""

from __future__ import annotations

import threading
import time
from typing import Any

import attrs
import structlog
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from scheduler import codec
from scheduler.paths import parse_job_node
from scheduler.zkstore import ZooKeeperStorage
from updater.errors import PulsegateError, Unavailable
from updater.keys import JobKey

log = structlog.get_logger(__name__)


@attrs.frozen
class InstanceRecord:
    job: JobKey
    instance_id: int
    pid: int
    start_ticks: int
    boot_id: str
    config_digest: str
    port: int
    log: str
    started_ms: int


class InstanceRecords:
    def __init__(self, store: ZooKeeperStorage, host: str) -> None:
        self.store = store
        self.host = host
        self._host_ready = False

    @property
    def scope(self) -> str:
        """Names this cluster's records of this host (ZooKeeper servers, chroot, path), for the
        environment of the processes they record."""
        client = self.store.client
        hosts = ",".join(f"{h}:{p}" for h, p in client.hosts or ())
        return f"{hosts}{client.chroot or ''}{self.store.paths.host(self.host)}"

    def _path(self, job: JobKey, instance_id: int) -> str:
        return self.store.paths.instance_record(self.host, job, instance_id)

    def load(self) -> dict[tuple[JobKey, int], InstanceRecord]:
        """Every record of this host. Raises Unavailable if ZooKeeper cannot answer: a record
        missed would have its instance started twice. A corrupt record is logged and skipped."""
        parent = self.store.paths.host(self.host)
        out: dict[tuple[JobKey, int], InstanceRecord] = {}
        for name in self.store.children(parent):
            job_part, _, instance_part = name.rpartition(":")
            job = parse_job_node(job_part)
            if job is None or not instance_part.isdigit():
                continue
            try:
                data, _ = self.store.get(f"{parent}/{name}")
            except NoNodeError:  # deleted since the listing
                continue
            instance_id = int(instance_part)
            try:
                out[(job, instance_id)] = codec.decode(
                    lambda v, job=job, i=instance_id: _record(job, i, v), data, name
                )
            except codec.CorruptValue as e:
                log.error("instance_record_unreadable", record=name, why=e.message)
        return out

    def save(self, record: InstanceRecord) -> None:
        """Create or replace the record, fenced. Raises NotLeader / Unavailable."""
        if not self._host_ready:  # the parent, once; a delete never removes it
            parent = self.store.paths.host(self.host)
            try:
                self.store.client.ensure_path_async(parent).get(timeout=self.store.timeout_s)
            except (KazooException, KazooTimeoutError) as e:
                raise Unavailable(f"could not create {parent}: {type(e).__name__}") from None
            self._host_ready = True
        value: dict[str, Any] = attrs.asdict(record)
        value["job"] = codec.job_key_to_json(record.job)
        data = codec.dumps(value)
        path = self._path(record.job, record.instance_id)
        results = self.store.commit([("create", path, data, False)], f"record {path}")
        failure = self.store.failure(results)
        if failure is not None and isinstance(failure[1], NodeExistsError):
            results = self.store.commit([("set", path, data, -1)], f"record {path}")
            failure = self.store.failure(results)
        if failure is not None:
            raise PulsegateError(f"could not record {path}: {type(failure[1]).__name__}")

    def confirm_leading(self) -> None:
        """A round trip that checks the fence and writes nothing: proof that this scheduler
        still leads now, not only when its connection last said so. Raises NotLeader or
        Unavailable."""
        if self.store.fence is not None:
            self.store.commit([], "confirm leadership")

    def delete(self, job: JobKey, instance_id: int) -> None:
        path = self._path(job, instance_id)
        failure = self.store.failure(
            self.store.commit([("delete", path, b"", -1)], f"forget {path}")
        )
        if failure is not None and not isinstance(failure[1], NoNodeError):
            raise PulsegateError(f"could not delete {path}: {type(failure[1]).__name__}")


class RecordQueue:
    """Record writes (a record) and deletes (None) still to make, the latest per instance: the
    local driver queues them under its lock and `flush` makes them off it. `io` serialises
    record I/O, held by `flush` and by a takeover's read, so no write of an earlier term lands
    after that read. A failed write stays queued, with what follows, for a retry."""

    def __init__(self, records: InstanceRecords, retry_s: float = 1.0) -> None:
        self.records = records
        self.retry_s = retry_s
        self.io = threading.Lock()
        self._lock = threading.Lock()  # innermost: held for dict operations only
        self._pending: dict[tuple[JobKey, int], InstanceRecord | None] = {}
        self._next = 0.0

    def put(self, key: tuple[JobKey, int], record: InstanceRecord | None) -> None:
        with self._lock:
            self._pending.pop(key, None)  # only the latest matters, and it goes last
            self._pending[key] = record

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
            self._next = 0.0

    def flush(self, force: bool = False) -> None:
        """Make the queued writes (ZooKeeper I/O: never under the driver's lock); unless
        `force`, not before the retry time after a failure."""
        if not self._pending or (not force and time.monotonic() < self._next):
            return
        with self.io:
            with self._lock:
                pending, self._pending = self._pending, {}
            for (job, instance_id), record in list(pending.items()):
                try:
                    if record is None:
                        self.records.delete(job, instance_id)
                    else:
                        self.records.save(record)
                except PulsegateError as e:
                    log.warning(
                        "instance_not_recorded", job=str(job), instance=instance_id, why=e.message
                    )
                    with self._lock:  # anything queued since is newer and wins
                        for key, value in pending.items():
                            self._pending.setdefault(key, value)
                        self._next = time.monotonic() + self.retry_s
                    return
                del pending[(job, instance_id)]


def _record(job: JobKey, instance_id: int, v: dict[str, Any]) -> InstanceRecord:
    pid = int(v["pid"])
    if pid <= 1:  # never a process we started; signalling it would reach far too much
        raise ValueError(f"pid {pid}")
    return InstanceRecord(
        job,
        instance_id,
        pid,
        int(v["start_ticks"]),
        str(v["boot_id"]),
        str(v["config_digest"]),
        int(v["port"]),
        str(v["log"]),
        int(v["started_ms"]),
    )
