"""The pulse: the leader's volatile memory of heartbeats (DESIGN §3), and the policy that turns
it into a verdict.

Heartbeats are never persisted. Everything known about one coordinated update's heartbeats is
one immutable `Pulse` record (when watching began, the last beat, a lapse not yet recorded, the
timeout), replaced whole on every change; the lease and lapse rules are methods of the record,
so the engine and the leader loop read a verdict and never combine fields themselves.

`PulseMonitor` holds the records behind one lock, as Aurora's PulseHandler does: RPC threads
beat while the leader loop tracks, forgets, clears and reads, and no reader can see half a
change (a record read is a whole record, or none). `updater` has no threads, so the service
passes the lock in; without one the monitor serves a single thread (the pure tests).

Named monitors (DESIGN rules 11-13): a record keeps the last beat of each monitor, and the
last batch it acknowledged; with `quorum = K` the gate is fresh only while K distinct monitors
are, and the lease ends when the K-th freshest monitor's does.

Leases are durations: when the service's wall clock steps, the monitor shifts every record by
the step (the service passes the clock's offset in, as it does the lock), so a step never makes
a heartbeat look fresh or stale, and lapse times stay on the clock that stamps the events.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from types import TracebackType
from typing import NamedTuple, Protocol

import attrs

from updater.keys import UpdateKey

ANONYMOUS = "anonymous"  # the monitor of a heartbeat that names none, with auth off (rule 11)
MONITORS_KEPT = 64  # per update; past it, the stalest monitor is forgotten (bounded memory)


class HeartbeatAnswer(enum.IntEnum):
    """What a heartbeat call returns (wire-stable ids)."""

    OK = 1
    FINISHED = 2
    PAUSED = 3


class Gate(enum.Enum):
    FRESH = "fresh"  # act
    WAIT = "wait"  # no fresh heartbeat yet, lease not over: take no action, record nothing
    EXPIRED = "expired"  # lease over: take no action, record *_AWAITING_PULSE


@attrs.frozen
class GateCheck:
    gate: Gate
    until_ms: int  # end of the current lease
    # A lease that ended while the update was rolling and that a late heartbeat renewed before
    # anyone recorded it: record *_AWAITING_PULSE at this time first (rule 2's audit trail).
    lapsed_ms: int | None = None


class MonitorBeat(NamedTuple):
    """One monitor's last heartbeat, and the highest batch it acknowledged (rule 13). A named
    tuple, not an attrs class: one is built on every heartbeat, the product's hot path."""

    name: str
    last_ms: int
    acked: int | None = None


@attrs.frozen
class Pulse:
    """One update's heartbeat state: per monitor, the last beat and acknowledged batch, with the
    quorum rule in `is_fresh` and `lease_end`."""

    timeout_ms: int
    since_ms: int  # watching since: the update's start on this leader, or the takeover
    last_ms: int | None = None  # the last heartbeat, of any monitor
    lapsed_ms: int | None = None  # see GateCheck.lapsed_ms
    quorum: int = 1
    monitors: tuple[MonitorBeat, ...] = ()  # freshest first

    @property
    def lease_end(self) -> int:
        """`timeout` after the quorum's oldest beat (the K-th freshest monitor's), or after
        `since` if fewer than K monitors have beaten: an update with no heartbeat is never
        fresh, but a new leader gives monitors one full timeout to find it before recording it
        as awaiting pulse."""
        if self.quorum == 1:
            return (self.since_ms if self.last_ms is None else self.last_ms) + self.timeout_ms
        if len(self.monitors) < self.quorum:
            return self.since_ms + self.timeout_ms
        return self.monitors[self.quorum - 1].last_ms + self.timeout_ms

    def is_fresh(self, now: int) -> bool:
        if self.quorum == 1:
            return self.last_ms is not None and now - self.last_ms < self.timeout_ms
        return self.fresh_count(now) >= self.quorum

    def is_monitor_fresh(self, beat: MonitorBeat, now: int) -> bool:
        return now - beat.last_ms < self.timeout_ms

    def fresh_count(self, now: int) -> int:
        """Distinct monitors whose heartbeat is fresh at `now` (rule 12). A beat later than
        `now` counts: a lapse recorded after a late beat is judged at the lease's end, when a
        monitor that has beaten since was beating."""
        return sum(1 for m in self.monitors if now - m.last_ms < self.timeout_ms)

    def fresh_names(self, now: int) -> list[str]:
        return [m.name for m in self.monitors if now - m.last_ms < self.timeout_ms]

    def is_acked(self, batch: int, now: int) -> bool:
        """Rule 13: a quorum of monitors, each fresh now, acknowledged `batch` (or a later one)."""
        count = sum(
            1
            for m in self.monitors
            if m.acked is not None and m.acked >= batch and self.is_monitor_fresh(m, now)
        )
        return count >= self.quorum

    def unrecorded_lapse(self, rolling_since: int | None) -> int | None:
        """The lapse to record, if one happened during the rolling period that began at
        `rolling_since` (None: the update is not rolling, so there is nothing to record)."""
        lapsed = self.lapsed_ms
        if rolling_since is None or lapsed is None or lapsed <= rolling_since:
            return None
        return lapsed

    def check(self, now: int, rolling_since: int | None = None) -> GateCheck:
        """The verdict before any instance action."""
        end = self.lease_end
        lapsed = self.unrecorded_lapse(rolling_since)
        if self.is_fresh(now):
            return GateCheck(Gate.FRESH, end, lapsed)
        return GateCheck(Gate.EXPIRED if now >= end else Gate.WAIT, end, lapsed)

    def beaten(
        self,
        now: int,
        rolling_since: int | None,
        monitor: str = ANONYMOUS,
        ack: int | None = None,
    ) -> Pulse:
        """This record after `monitor`'s heartbeat at `now`, acknowledging batch `ack` if
        given. A beat that arrives after the lease ended,
        while the update was rolling, keeps the lease's end as a lapse to record: renewing
        the lease must not erase the gap from the audit trail. The earliest unrecorded lapse
        of a rolling period wins; one from an earlier period is stale and replaced."""
        # The hot path of every heartbeat: plain reads, few calls (quorum 1 needs no sort).
        last, lapsed = self.last_ms, self.lapsed_ms
        if self.quorum == 1:
            end = (self.since_ms if last is None else last) + self.timeout_ms
        else:
            end = self.lease_end
        if (
            rolling_since is not None
            and rolling_since < end <= now
            and (lapsed is None or lapsed <= rolling_since)
        ):
            lapsed = end
        if last is None or now > last:
            last = now
        monitors = self.monitors
        if ack is None and len(monitors) == 1 and monitors[0].name == monitor:  # the usual case
            monitors = (MonitorBeat(monitor, last, monitors[0].acked),)
        else:
            monitors = self._with_beat(monitor, now, ack)
        return Pulse(self.timeout_ms, self.since_ms, last, lapsed, self.quorum, monitors)

    def _with_beat(self, name: str, now: int, ack: int | None) -> tuple[MonitorBeat, ...]:
        """The monitors after `name`'s beat: freshest first, at most MONITORS_KEPT."""
        others = []
        beat = MonitorBeat(name, now, ack)
        for m in self.monitors:
            if m.name == name:
                acked = m.acked if ack is None or (m.acked or 0) > ack else ack
                beat = MonitorBeat(name, max(now, m.last_ms), acked)
            else:
                others.append(m)
        merged = sorted([beat, *others], key=lambda m: m.last_ms, reverse=True)
        return tuple(merged[:MONITORS_KEPT])

    def shifted(self, delta_ms: int) -> Pulse:
        """The same record on a clock that stepped by `delta_ms`: every age unchanged."""
        last, lapsed = self.last_ms, self.lapsed_ms
        return Pulse(
            self.timeout_ms,
            self.since_ms + delta_ms,
            None if last is None else last + delta_ms,
            None if lapsed is None else lapsed + delta_ms,
            self.quorum,
            tuple(m._replace(last_ms=m.last_ms + delta_ms) for m in self.monitors),
        )


class Lock(Protocol):
    """What the monitor needs of a lock (a `threading.Lock` in the service)."""

    def __enter__(self) -> object: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> object: ...


class PulseMonitor:
    """Every coordinated update's `Pulse`, behind one lock. Every change is made under it; a
    beat computes its record outside and swaps it in only if the record it started from is
    still there (a forget or a clear in between wins). Reads take a whole record without it:
    one dict lookup of an immutable value.

    Threads: `beat` and the readers run on RPC threads and the leader loop; `track`, `forget`
    and `clear` on the leader loop. A beat never starts tracking: an update that finished or
    was dropped meanwhile is not brought back, and an update being reloaded (removed from the
    run table, not from here) keeps its heartbeats."""

    def __init__(
        self, lock: Lock | None = None, clock_offset: Callable[[], int] | None = None
    ) -> None:
        """`clock_offset`: the service clock's wall offset, which changes when the wall clock
        steps (None: a clock that never steps)."""
        self._lock: Lock = lock if lock is not None else contextlib.nullcontext()
        self._pulses: dict[UpdateKey, Pulse] = {}
        self._clock_offset = clock_offset
        self._offset = clock_offset() if clock_offset is not None else 0

    def _follow_steps(self) -> None:
        """Shift every record by a wall-clock step since the last call (under the lock)."""
        if self._clock_offset is None:
            return
        offset = self._clock_offset()
        if offset != self._offset:
            delta, self._offset = offset - self._offset, offset
            self._pulses = {key: p.shifted(delta) for key, p in self._pulses.items()}

    # -- the leader loop -------------------------------------------------------------------

    def track(self, key: UpdateKey, timeout_ms: int, since_ms: int, quorum: int = 1) -> None:
        """Start watching a coordinated update. Keeps an earlier heartbeat if there was one."""
        with self._lock:
            self._follow_steps()
            found = self._pulses.get(key)
            if found is None:
                self._pulses[key] = Pulse(timeout_ms, since_ms, quorum=quorum)
            elif (found.timeout_ms, found.quorum) != (timeout_ms, quorum):
                self._pulses[key] = attrs.evolve(found, timeout_ms=timeout_ms, quorum=quorum)

    def forget(self, key: UpdateKey) -> None:
        with self._lock:
            self._pulses.pop(key, None)

    def clear(self) -> None:
        """Drop all memory, as a leader does when it loses its session."""
        with self._lock:
            self._pulses.clear()

    # -- any thread ------------------------------------------------------------------------

    def beat(
        self,
        key: UpdateKey,
        now: int,
        rolling_since: int | None = None,
        monitor: str = ANONYMOUS,
        ack: int | None = None,
    ) -> Pulse | None:
        """Record `monitor`'s heartbeat (acknowledging batch `ack`, if given); the record after
        it, or None if the update is not tracked. `rolling_since`: when the update's current
        rolling status began (None if it is not rolling), for the lapse rule (`Pulse.beaten`)."""
        self._check_offset()
        while True:  # the record is computed outside the lock and swapped in if unchanged
            found = self._pulses.get(key)
            if found is None:
                return None
            beaten = found.beaten(now, rolling_since, monitor, ack)
            with self._lock:
                if self._pulses.get(key) is found:
                    self._pulses[key] = beaten
                    return beaten

    def get(self, key: UpdateKey) -> Pulse | None:
        self._check_offset()
        return self._pulses.get(key)

    def _check_offset(self) -> None:
        source = self._clock_offset
        if source is not None and source() != self._offset:
            with self._lock:
                self._follow_steps()

    def is_tracked(self, key: UpdateKey) -> bool:
        return self.get(key) is not None

    def check(self, key: UpdateKey, now: int, rolling_since: int | None = None) -> GateCheck:
        """The gate before any instance action; an untracked update is expired."""
        found = self.get(key)
        return GateCheck(Gate.EXPIRED, now) if found is None else found.check(now, rolling_since)

    def is_fresh(self, key: UpdateKey, now: int) -> bool:
        found = self.get(key)
        return found is not None and found.is_fresh(now)

    def lease_end(self, key: UpdateKey) -> int | None:
        found = self.get(key)
        return None if found is None else found.lease_end

    def last_beat(self, key: UpdateKey) -> int | None:
        found = self.get(key)
        return None if found is None else found.last_ms

    def age_ms(self, key: UpdateKey, now: int) -> int | None:
        last = self.last_beat(key)
        return None if last is None else max(0, now - last)

    def tracked(self) -> list[UpdateKey]:
        with self._lock:
            return list(self._pulses)
