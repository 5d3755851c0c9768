"""Time for the service. Pure code takes `now` in ms; runtime classes take a Clock."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> int:
        """Milliseconds since the epoch."""
        ...


class SystemClock:
    """Wall time read once, then advanced by the monotonic clock: event timestamps are real
    times, yet a step of the wall clock (NTP) can never make a heartbeat look fresh or stale."""

    def __init__(self) -> None:
        self._wall = int(time.time() * 1000)
        self._mono = time.monotonic_ns()

    def now(self) -> int:
        return self._wall + (time.monotonic_ns() - self._mono) // 1_000_000
