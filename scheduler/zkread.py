"""Reads from ZooKeeper, pipelined with kazoo's async API: loading 1,000 updates costs a few
round trips, not thousands. Any scheduler reads (followers serve reads themselves); only the
leader writes, through `scheduler.zkstore`.

kazoo exceptions are caught here and turned into domain errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, KazooException, NoNodeError, SessionExpiredError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import ZnodeStat

from scheduler import codec
from scheduler.paths import Paths, parse_job_node, parse_update_node
from updater.errors import NotFound, Unavailable
from updater.events import InstanceEvent
from updater.job import Job
from updater.keys import JobKey, UpdateKey
from updater.record import UpdateRecord
from updater.status import UpdateStatus
from updater.storage import UpdateSummary
from updater.task import TaskConfig

log = structlog.get_logger(__name__)
LOST = (ConnectionLoss, SessionExpiredError, KazooTimeoutError)


def _seq(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


class ZooKeeperReader:
    def __init__(self, client: KazooClient, paths: Paths, timeout_s: float = 10.0) -> None:
        self.client = client
        self.paths = paths
        self.timeout_s = timeout_s

    def _wait(self, result: Any, path: str) -> Any:
        try:
            return result.get(timeout=self.timeout_s)
        except NoNodeError:
            raise
        except LOST as e:
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

    def _read_job(self, key: JobKey) -> tuple[dict[int, TaskConfig], int] | None:
        try:
            data, stat = self.get(self.paths.job(key))
        except NoNodeError:
            return None
        groups = codec.decode(lambda v: codec.groups_from_json(v["groups"]), data, f"job {key}")
        return Job(key, groups).instances(), stat.version

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
            try:
                out.append(codec.decode(lambda v, k=k: _summary(k, v), data, f"state of {k}"))
            except codec.CorruptValue as e:  # one bad znode must not hide every other update
                log.error("update_unreadable", update=str(k), why=e.message)
        return out


def _summary(key: UpdateKey, v: Any) -> UpdateSummary:
    return UpdateSummary(
        key,
        v["user"],
        UpdateStatus(v["status"]),
        v["created_ms"],
        v["last_modified_ms"],
        tuple((a, b) for a, b in v.get("metadata", [])),
    )
