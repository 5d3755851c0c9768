"""The pulse monitor: the leader's volatile memory of heartbeats (DESIGN §3).

Heartbeats are never persisted. For every coordinated update the monitor knows when it started
watching (`since`: the update's start on this leader, or the leader's takeover) and the last
heartbeat. The lease ends `timeout` after the last heartbeat, or after `since` if none has
arrived; an update with no heartbeat is never fresh, but it is recorded as awaiting pulse only
once its lease has ended, so a new leader gives monitors one full timeout to find it.

Thread safety: `beat` and `note_lapse` are single dict operations, atomic under the GIL, so RPC
threads may call them while the leader loop reads; everything else belongs to the leader loop.
"""

from __future__ import annotations

import enum

import attrs

from updater.keys import UpdateKey


class HeartbeatAnswer(enum.IntEnum):
    """What a heartbeat call returns (wire-stable ids)."""

    OK = 1
    FINISHED = 2
    PAUSED = 3


class Gate(enum.Enum):
    FRESH = "fresh"  # act
    HOLD = "hold"  # no fresh heartbeat yet, lease not over: take no action, record nothing
    EXPIRED = "expired"  # lease over: take no action, record *_AWAITING_PULSE


@attrs.frozen
class GateCheck:
    gate: Gate
    until_ms: int  # end of the current lease


class PulseMonitor:
    def __init__(self) -> None:
        self._timeout: dict[UpdateKey, int] = {}
        self._since: dict[UpdateKey, int] = {}
        self._last: dict[UpdateKey, int] = {}
        # Leases that ended unrecorded before a late heartbeat renewed them: key -> lease end.
        self._lapsed: dict[UpdateKey, int] = {}

    def track(self, key: UpdateKey, timeout_ms: int, since_ms: int) -> None:
        """Start watching a coordinated update. Keeps an earlier heartbeat if there was one."""
        self._timeout[key] = timeout_ms
        self._since.setdefault(key, since_ms)

    def forget(self, key: UpdateKey) -> None:
        self._timeout.pop(key, None)
        self._since.pop(key, None)
        self._last.pop(key, None)
        self._lapsed.pop(key, None)

    def clear(self) -> None:
        """Drop all memory, as a leader does when it loses its session."""
        self._timeout.clear()
        self._since.clear()
        self._last.clear()
        self._lapsed.clear()

    def beat_tracked(self, key: UpdateKey, timeout_ms: int, now: int) -> None:
        """`beat`, tracking the update first if it is not yet (since `now`)."""
        last = self._last.get(key)
        if last is None:
            if key not in self._timeout:
                self.track(key, timeout_ms, now)
            self._last[key] = now
        elif now > last:
            self._last[key] = now

    def note_lapse(self, key: UpdateKey, at_ms: int) -> None:
        """Remember that the lease ended at `at_ms` before anyone recorded it: the heartbeat about
        to renew it must not erase the gap from the audit trail (DESIGN §3 rule 2)."""
        self._lapsed.setdefault(key, at_ms)

    def lapsed(self, key: UpdateKey) -> int | None:
        return self._lapsed.get(key)

    def clear_lapse(self, key: UpdateKey) -> None:
        self._lapsed.pop(key, None)

    def is_tracked(self, key: UpdateKey) -> bool:
        return key in self._timeout

    def beat(self, key: UpdateKey, now: int) -> None:
        last = self._last.get(key)
        if last is None or now > last:
            self._last[key] = now

    def last_beat(self, key: UpdateKey) -> int | None:
        return self._last.get(key)

    def age_ms(self, key: UpdateKey, now: int) -> int | None:
        last = self._last.get(key)
        return None if last is None else max(0, now - last)

    def is_fresh(self, key: UpdateKey, now: int) -> bool:
        last = self._last.get(key)
        timeout = self._timeout.get(key)
        return last is not None and timeout is not None and now - last < timeout

    def lease_end(self, key: UpdateKey) -> int | None:
        timeout = self._timeout.get(key)
        if timeout is None:
            return None
        last = self._last.get(key)
        return (last if last is not None else self._since[key]) + timeout

    def check(self, key: UpdateKey, now: int) -> GateCheck:
        """The gate before any instance action."""
        end = self.lease_end(key)
        if end is None:
            return GateCheck(Gate.EXPIRED, now)
        if self.is_fresh(key, now):
            return GateCheck(Gate.FRESH, end)
        if now >= end:
            return GateCheck(Gate.EXPIRED, end)
        return GateCheck(Gate.HOLD, end)

    def tracked(self) -> list[UpdateKey]:
        return list(self._timeout)
