"""Where instances run (host, pid, port, log), for the UI's grid and job page: the local
driver's instance records in ZooKeeper, which every scheduler can read, followers included.

The Thrift API does not report processes yet; when it does (optional `host`/`pid` fields on
InstanceStatus), those win (`model.host_pid`). The records are read at most once per `ttl_ms`
for all jobs, so a page refreshing every second costs a few ZooKeeper reads, not one per
instance per view. Threads: any HTTP thread; one lock guards the cache, never held while
reading ZooKeeper."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import attrs
import structlog

from scheduler.clock import Clock
from scheduler.drivers.records import InstanceRecords
from updater.errors import PulsegateError
from updater.keys import JobKey

if TYPE_CHECKING:
    from scheduler.service import Scheduler

log = structlog.get_logger(__name__)


@attrs.frozen
class Process:
    host: str
    pid: int
    port: int
    log: str


class Processes:
    def __init__(self, scheduler: Scheduler, clock: Clock, ttl_ms: int = 2000) -> None:
        self.scheduler = scheduler
        self.clock = clock
        self.ttl_ms = ttl_ms
        self._lock = threading.Lock()
        self._read_at: int | None = None
        self._known: dict[tuple[JobKey, int], Process] = {}

    def of(self, job: JobKey) -> dict[int, Process]:
        """The recorded process of each instance of `job`; empty if none or unreadable."""
        now = self.clock.now()
        with self._lock:
            fresh = self._read_at is not None and now - self._read_at < self.ttl_ms
            known = self._known
        if not fresh:
            known = self._read()
            with self._lock:
                self._known, self._read_at = known, now
        return {i: p for (j, i), p in known.items() if j == job}

    def _read(self) -> dict[tuple[JobKey, int], Process]:
        store = self.scheduler.store
        if store is None:
            return {}
        out: dict[tuple[JobKey, int], Process] = {}
        try:
            for host in store.children(store.paths.hosts):
                for (job, i), r in InstanceRecords(store, host).load().items():
                    out[(job, i)] = Process(host, r.pid, r.port, r.log)
        except PulsegateError as e:  # Unavailable: show the grid without processes
            log.debug("ui_processes_unreadable", error=e.message)
        return out
