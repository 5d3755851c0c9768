"""The leader loop's agenda: the work waiting for its next turn, and the one lock guarding it.

Any thread adds work (an RPC submits a command, a driver notices an instance change, a
heartbeat unblocks an update); only the loop's thread takes it, a whole turn's worth at once.
Timers are kept one per update, the earliest: planning an update again recomputes its next
wake-up, so a later one would only be a spurious turn, and a heap that grew by one entry per
step would grow without bound on a busy update.

Timers are due times on the service clock, which follows wall-clock steps. When the clock's
offset changes, every timer moves by the same step (as the pulse's leases do), so a lapse timer
still fires when its lease ends: a step back would otherwise record the lapse late by the step.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import attrs

from scheduler.clock import StepWatch
from updater.keys import JobKey, UpdateKey

Command = tuple[Callable[[], Any], "Future[Any]"]
RETRY_MS = 1000  # how soon storage is tried again after it failed


@attrs.define
class Work:
    """One turn's worth of work, taken from the agenda in one go."""

    commands: list[Command] = attrs.Factory(list)
    unblock: dict[UpdateKey, str] = attrs.Factory(dict)
    dirty: set[UpdateKey] = attrs.Factory(set)
    reload: set[UpdateKey] = attrs.Factory(set)
    resync: set[JobKey] = attrs.Factory(set)


class Agenda:
    """Thread-safe: every method takes the one condition's lock, and none blocks inside it
    except `wait`."""

    def __init__(self, clock_offset: Callable[[], int] | None = None) -> None:
        """`clock_offset`: the service clock's wall offset (None: a clock that never steps)."""
        self._steps = StepWatch(clock_offset)
        self._cv = threading.Condition()
        self._work = Work()
        self._timers: list[tuple[int, int, UpdateKey | None]] = []
        self._wake_at: dict[UpdateKey | None, int] = {}  # each key's earliest pending timer
        self._seq = 0
        self._stopping = False

    # -- adding work (any thread) ----------------------------------------------------------------

    def submit(self, fn: Callable[[], Any], future: Future[Any]) -> None:
        with self._cv:
            self._work.commands.append((fn, future))
            self._cv.notify_all()

    def mark(self, key: UpdateKey) -> None:
        """Plan this update again on the next turn."""
        with self._cv:
            self._work.dirty.add(key)
            self._cv.notify_all()

    def mark_all(self, keys: list[UpdateKey]) -> None:
        with self._cv:
            self._work.dirty.update(keys)

    def unblock(self, key: UpdateKey, user: str) -> None:
        """A heartbeat has something to record for this update."""
        with self._cv:
            self._work.unblock[key] = user
            self._cv.notify_all()

    def reload(self, key: UpdateKey) -> None:
        """Rebuild this update from storage on the next turn."""
        with self._cv:
            self._work.reload.add(key)

    def resync(self, job: JobKey) -> None:
        """Tell the driver this job's desired instances from storage on the next turn."""
        with self._cv:
            self._work.resync.add(job)
            self._cv.notify_all()

    def schedule(self, at_ms: int, key: UpdateKey | None) -> None:
        """A turn at `at_ms`, planning `key` (None: a turn only, e.g. to retry storage)."""
        with self._cv:
            pending = self._wake_at.get(key)
            if pending is not None and pending <= at_ms:
                return  # an earlier turn plans it again, and recomputes its next wake-up
            self._wake_at[key] = at_ms
            self._seq += 1
            heapq.heappush(self._timers, (at_ms, self._seq, key))

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()

    # -- taking work (the loop's thread) -----------------------------------------------------------

    @property
    def is_stopping(self) -> bool:
        return self._stopping

    def wait(self, now: int, longest_s: float = 1.0) -> None:
        """Until work arrives, the next timer is due, `longest_s` passes, or a stop."""
        with self._cv:
            self._follow_step()
            work = self._work
            if self._stopping or work.commands or work.dirty or work.unblock:
                return
            timeout = longest_s
            if self._timers:
                timeout = min(longest_s, max(0.0, (self._timers[0][0] - now) / 1000))
            if timeout > 0:
                self._cv.wait(timeout)

    def take(self, now: int) -> Work:
        """Everything due by `now`: timers that are due mark their updates dirty."""
        with self._cv:
            self._follow_step()
            while self._timers and self._timers[0][0] <= now:
                at, _, key = heapq.heappop(self._timers)
                if self._wake_at.get(key) == at:
                    del self._wake_at[key]
                if key is not None:
                    self._work.dirty.add(key)
            work, self._work = self._work, Work()
            return work

    def _follow_step(self) -> None:
        """Move every timer by the clock's step since the last look (lock held). A uniform
        shift keeps the heap's order."""
        delta = self._steps.delta()
        if not delta:
            return
        self._timers = [(at + delta, seq, key) for at, seq, key in self._timers]
        self._wake_at = {key: at + delta for key, at in self._wake_at.items()}

    def take_unblock(self) -> dict[UpdateKey, str]:
        with self._cv:
            unblock, self._work.unblock = self._work.unblock, {}
            return unblock

    def take_commands(self) -> list[Command]:
        with self._cv:
            commands, self._work.commands = self._work.commands, []
            return commands

    def next_timer_ms(self) -> int | None:
        with self._cv:
            return self._timers[0][0] if self._timers else None

    def pending_timers(self) -> int:
        with self._cv:
            return len(self._timers)

    def has_work(self) -> bool:
        with self._cv:
            w = self._work
            return bool(w.commands or w.dirty or w.unblock or w.reload or w.resync)

    def clear(self) -> None:
        """Drop all work but the commands (they are answered, not dropped)."""
        with self._cv:
            commands = self._work.commands
            self._work = Work(commands=commands)
            self._timers.clear()
            self._wake_at.clear()
