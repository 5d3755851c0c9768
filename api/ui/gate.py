"""The update page's gate (rule 15), from the gate state the leader sends: each monitor's
heartbeat age against the timeout, why the gate is closed and since when, the lease countdown
and the onBlocked countdown. Times are against `now`, the scheduler's clock (the page is
rendered in the scheduler process)."""

from __future__ import annotations

import attrs

from api.ui.model import duration
from api.views import UpdateDetails
from updater.settings import OnBlocked

ACTION_WORDS = {
    OnBlocked.PAUSE: "pauses",
    OnBlocked.ABORT: "aborts",
    OnBlocked.ROLL_BACK: "rolls back",
}


@attrs.frozen
class MonitorRow:
    name: str
    age_ms: int  # capped at the timeout for the meter; `age` says the real one
    age: str
    fresh: bool
    lease: str  # "ends in 1.2 s" / "ended 3 s ago"
    acked: str  # "batch 2", or ""


@attrs.frozen
class GateView:
    open: bool
    kind: str  # "open" or "closed", for the style
    why: str
    since: str  # "closed for 12 s" / "open"
    quorum: str  # "1 fresh, 2 needed"
    timeout_ms: int
    monitors: tuple[MonitorRow, ...]
    lease: str
    on_blocked: str | None  # "pauses in 9 min 48 s", while a bound runs
    batch: str | None  # "batch 2: instances 2, 3"
    awaiting_ack: str | None


def _countdown(end_ms: int, now: int, verb: str = "ends") -> str:
    if end_ms > now:
        return f"{verb} in {duration(end_ms - now)}"
    return f"{'ended' if verb == 'ends' else verb + ': due'} {duration(now - end_ms)} ago"


def gate_view(d: UpdateDetails, now: int) -> GateView | None:
    """The gate of an active coordinated update the leader runs; None otherwise."""
    g = d.gate
    if g is None:
        return None
    timeout = d.heartbeat_timeout_ms
    monitors = tuple(
        MonitorRow(
            m.name,
            min(m.age_ms, timeout),
            duration(m.age_ms),
            m.fresh,
            _countdown(m.lease_end_ms, now),
            "" if m.acked_batch is None else f"batch {m.acked_batch}",
        )
        for m in g.monitors
    )
    on_blocked = None
    if g.on_blocked is not None and g.on_blocked_at_ms is not None:
        on_blocked = _countdown(g.on_blocked_at_ms, now, ACTION_WORDS[g.on_blocked])
    batch = None
    if g.batch is not None:
        batch = f"batch {g.batch}: instances {', '.join(map(str, g.batch_instances))}"
    return GateView(
        open=g.open,
        kind="open" if g.open else "closed",
        why=g.why,
        since="open" if g.open else f"closed for {duration(now - g.since_ms)}",
        quorum=f"{g.fresh_monitors} fresh, {g.quorum} needed",
        timeout_ms=timeout,
        monitors=monitors,
        lease="-" if g.lease_end_ms is None else _countdown(g.lease_end_ms, now),
        on_blocked=on_blocked,
        batch=batch,
        awaiting_ack=None if g.awaiting_ack is None else f"batch {g.awaiting_ack}",
    )
