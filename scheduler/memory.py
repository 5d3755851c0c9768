"""The leader's memory: the active updates it runs, the heartbeats it has seen, and the final
status of updates that finished recently. All of it is volatile: a new leader rebuilds it from
storage (heartbeats excepted, by design), and a leader that loses its session drops it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from updater.engine import UpdateRun
from updater.keys import JobKey, UpdateKey
from updater.pulse import PulseMonitor
from updater.status import UpdateStatus

RawKey = tuple[str, str, str, str]
FINISHED_KEPT = 10_000


def raw_key(key: UpdateKey) -> RawKey:
    """An update key as the plain strings it arrives as on the wire."""
    return (key.job.role, key.job.environment, key.job.name, key.id)


class RunTable:
    """Runs by key, by job (driver notifications name jobs) and, for coordinated updates, by raw
    key (the heartbeat fast path looks runs up without building an UpdateKey).

    Threads: the run maps change only on the leader loop's thread and are read from RPC threads
    (single dict lookups). The pulse monitor and the finished statuses are written from both
    (heartbeats; an RPC that read a final status from storage), each behind its own lock."""

    def __init__(self, clock_offset: Callable[[], int] | None = None) -> None:
        """`clock_offset`: see `scheduler.clock.offset_source`."""
        self.pulse = PulseMonitor(threading.Lock(), clock_offset)
        self.runs: dict[UpdateKey, UpdateRun] = {}
        self.hot: dict[RawKey, UpdateRun] = {}
        self.by_job: dict[JobKey, UpdateKey] = {}
        self._finished: OrderedDict[UpdateKey, UpdateStatus] = OrderedDict()
        self._finished_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.runs)

    def add(self, run: UpdateRun, since: int | None = None) -> None:
        """Hold a run. A coordinated one is watched for heartbeats from `since` (if it is not
        watched already)."""
        if run.is_coordinated and since is not None and not self.pulse.is_tracked(run.key):
            # Tracked before it can be found: a heartbeat never starts tracking.
            s = run.settings
            self.pulse.track(run.key, s.heartbeat_timeout_ms, since, s.heartbeat_quorum)
        self.runs[run.key] = run
        self.by_job[run.key.job] = run.key
        if run.is_coordinated:
            self.hot[raw_key(run.key)] = run

    def remove(self, key: UpdateKey) -> UpdateRun | None:
        """Let go of a run, keeping its heartbeats (it is about to be reloaded)."""
        run = self.runs.pop(key, None)
        self.hot.pop(raw_key(key), None)
        if self.by_job.get(key.job) == key:
            del self.by_job[key.job]
        return run

    def finish(self, key: UpdateKey, status: UpdateStatus) -> None:
        """The update ended: forget it and its heartbeats, remember how it ended."""
        self.remove(key)
        self.pulse.forget(key)
        self.remember_finished(key, status)

    def remember_finished(self, key: UpdateKey, status: UpdateStatus) -> None:
        """Any thread: the loop when an update ends, an RPC that read a final status."""
        with self._finished_lock:
            self._finished[key] = status
            while len(self._finished) > FINISHED_KEPT:
                self._finished.popitem(last=False)

    def finished_status(self, key: UpdateKey) -> UpdateStatus | None:
        """How a recently finished update ended, if it is remembered (any thread)."""
        with self._finished_lock:
            return self._finished.get(key)

    def clear(self) -> None:
        self.runs.clear()
        self.hot.clear()
        self.by_job.clear()
        with self._finished_lock:
            self._finished.clear()
        self.pulse.clear()
