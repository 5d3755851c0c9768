"""Time for the service. Pure code takes `now` in ms; runtime classes take a Clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

# A wall clock that disagrees with the monotonic reckoning by more than this has been stepped
# (NTP, an operator, a VM resumed); less is slew and read jitter, absorbed by running at the
# monotonic rate between steps.
STEP_MS = 1_000
# How often `now` compares with the wall clock: a step shows within this long.
WALL_CHECK_MS = 50


class Clock(Protocol):
    def now(self) -> int:
        """Milliseconds since the epoch."""
        ...


class SystemClock:
    """Wall time for timestamps, advanced by the monotonic clock between readings and
    re-anchored when the wall clock steps, so event timestamps stay true for the life of the
    process. A step changes `offset_ms`; holders of leases (the pulse monitor) shift what they
    hold by the same amount, so a step can never make a heartbeat look fresh or stale.

    Sources are injectable (ns, like `time.time_ns` and `time.monotonic_ns`) for tests."""

    def __init__(
        self,
        wall_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns
        self._lock = threading.Lock()
        mono = self._monotonic_ns() // 1_000_000
        self._offset = self._wall_ns() // 1_000_000 - mono
        self._checked_at = mono

    def now(self) -> int:
        mono = self._monotonic_ns() // 1_000_000
        if mono - self._checked_at < WALL_CHECK_MS:  # the common case: one clock read
            return mono + self._offset
        with self._lock:  # one thread compares and re-anchors; the others read the result
            wall = self._wall_ns() // 1_000_000
            if abs(wall - (mono + self._offset)) > STEP_MS:
                log.warning("wall_clock_stepped", by_ms=wall - mono - self._offset)
                self._offset = wall - mono
            self._checked_at = mono
            return mono + self._offset

    def monotonic_ms(self) -> int:
        """Milliseconds on a scale that never steps (durations, not timestamps)."""
        return self._monotonic_ns() // 1_000_000

    def offset_ms(self) -> int:
        """`now() - monotonic_ms()`: changes only when the wall clock steps."""
        return self._offset


class StepWatch:
    """How far the clock's wall offset moved since the last look: what a holder of timestamps
    that measure durations (timers, healthy-since) shifts them by. Callers hold their own lock."""

    def __init__(self, source: Callable[[], int] | None) -> None:
        """`source`: `offset_source(clock)`; None for a clock that never steps."""
        self._source = source
        self._offset = source() if source is not None else 0

    def delta(self) -> int:
        if self._source is None:
            return 0
        offset = self._source()
        delta, self._offset = offset - self._offset, offset
        return delta


def offset_source(clock: Clock) -> Callable[[], int] | None:
    """How a lease holder learns of wall-clock steps: the clock's offset, or None for a clock
    that never steps (the fake clocks of tests and the simulation)."""
    return clock.offset_ms if isinstance(clock, SystemClock) else None
