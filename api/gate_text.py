"""The gate's state (rule 15) in words for the CLI: "blocked: quorum 1 of 2 for 12s, pause in
9m48s", one line per monitor with its age, and the same as JSON. Times are read against the
scheduler's clock where the answer allows it (a monitor's lease end minus the timeout plus its
age is the server's now), so a skewed client clock does not bend the countdowns."""

from __future__ import annotations

import time
from typing import Any

from updater.gate import GateReason, GateState
from updater.settings import OnBlocked

ACTION_WORDS = {
    OnBlocked.PAUSE: "pause",
    OnBlocked.ABORT: "abort",
    OnBlocked.ROLL_BACK: "roll back",
}


def duration(ms: int) -> str:
    """`850ms`, `12s`, `9m48s`, `2h05m`: short, and exact enough for a countdown."""
    ms = max(0, ms)
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def server_now(gate: GateState, timeout_ms: int | None, fallback_ms: int | None = None) -> int:
    """The scheduler's now when it answered, from a monitor's lease and the timeout; else
    `fallback_ms` (or this machine's clock)."""
    if timeout_ms and gate.monitors:
        first = gate.monitors[0]
        return first.lease_end_ms - timeout_ms + first.age_ms
    return int(time.time() * 1000) if fallback_ms is None else fallback_ms


def blocked_text(
    gate: GateState | None, timeout_ms: int | None, now_ms: int | None = None
) -> str | None:
    """Why a coordinated update's gate holds it, for how long, and what the bound does when;
    None while it is open, not coordinated, or paused (the pause says why itself)."""
    if gate is None or gate.reason is None or gate.reason is GateReason.PAUSED:
        return None
    now = server_now(gate, timeout_ms, now_ms)
    return f"blocked: {gate.why} for {duration(now - gate.since_ms)}" + bound_text(
        gate, timeout_ms, now
    )


def bound_text(gate: GateState | None, timeout_ms: int | None, now_ms: int | None = None) -> str:
    """`, pause in 9m48s` while a bound (maxBlockedMs) runs, else ``."""
    if gate is None or gate.on_blocked is None or gate.on_blocked_at_ms is None:
        return ""
    now = server_now(gate, timeout_ms, now_ms)
    return f", {ACTION_WORDS[gate.on_blocked]} in {duration(gate.on_blocked_at_ms - now)}"


def monitor_lines(gate: GateState | None) -> list[tuple[str, str]]:
    """(monitor name, "age 1.2s, fresh") for each monitor the gate knows, freshest first."""
    if gate is None:
        return []
    rows = []
    for m in gate.monitors:
        acked = "" if m.acked_batch is None else f", acked batch {m.acked_batch}"
        state = "fresh" if m.fresh else "stale"
        rows.append((m.name, f"age {duration(m.age_ms)}, {state}{acked}"))
    return rows


def gate_json(gate: GateState | None, timeout_ms: int | None) -> dict[str, Any] | None:
    """The gate with stable snake_case keys, plus the blocked line people see."""
    if gate is None:
        return None
    return {
        "open": gate.open,
        "reason": None if gate.reason is None else gate.reason.value,
        "why": gate.why,
        "blocked": blocked_text(gate, timeout_ms),
        "since_ms": gate.since_ms,
        "lease_end_ms": gate.lease_end_ms,
        "quorum": gate.quorum,
        "fresh_monitors": gate.fresh_monitors,
        "monitors": [
            {
                "name": m.name,
                "age_ms": m.age_ms,
                "lease_end_ms": m.lease_end_ms,
                "fresh": m.fresh,
                "acked_batch": m.acked_batch,
            }
            for m in gate.monitors
        ],
        "batch": gate.batch,
        "batch_instances": list(gate.batch_instances),
        "awaiting_ack": gate.awaiting_ack,
        "on_blocked": None if gate.on_blocked is None else gate.on_blocked.value,
        "on_blocked_at_ms": gate.on_blocked_at_ms,
    }
