"""Conversions for the gates beyond Aurora (DESIGN rules 11-15): a heartbeat's details in, the
gate's state and the batch to verify out."""

from __future__ import annotations

from typing import Any

from api.checks import integer, need, text
from api.idl import pulsegate as t
from updater.gate import GateReason, GateState, MonitorState
from updater.settings import MAX_MONITOR_NAME, OnBlocked

ON_BLOCKED_ID = {OnBlocked.PAUSE: 1, OnBlocked.ABORT: 2, OnBlocked.ROLL_BACK: 3}
ON_BLOCKED = {v: k for k, v in ON_BLOCKED_ID.items()}


def heartbeat_details_in(v: Any, field: str = "details") -> tuple[str | None, int | None]:
    """A heartbeat's optional details: (monitor name, acknowledged batch), each None if left out."""
    if v is None:
        return None, None
    need(v, field, t.HeartbeatDetails)
    monitor = None if v.monitor is None else text(v.monitor, f"{field}.monitor", MAX_MONITOR_NAME)
    ack = None if v.ackBatch is None else integer(v.ackBatch, f"{field}.ackBatch", 1)
    return monitor, ack


def gate_out(g: GateState) -> Any:
    return t.GateState(
        open=g.open,
        reason=None if g.reason is None else g.reason.value,
        why=g.why,
        sinceMs=g.since_ms,
        leaseEndMs=g.lease_end_ms,
        quorum=g.quorum,
        freshMonitors=g.fresh_monitors,
        monitors=[
            t.MonitorPulse(
                name=m.name,
                ageMs=m.age_ms,
                leaseEndMs=m.lease_end_ms,
                fresh=m.fresh,
                ackedBatch=m.acked_batch,
            )
            for m in g.monitors
        ],
        batch=g.batch,
        batchInstances=list(g.batch_instances) if g.batch is not None else None,
        awaitingAck=g.awaiting_ack,
        onBlocked=None if g.on_blocked is None else ON_BLOCKED_ID[g.on_blocked],
        onBlockedAtMs=g.on_blocked_at_ms,
    )


def heartbeat_out(answer: int, status: int, gate: GateState | None) -> Any:
    """A heartbeat's answer with the batch to verify and the gate (rules 13, 15)."""
    if gate is None:
        return t.HeartbeatResult(status=answer, updateStatus=status)
    return t.HeartbeatResult(
        status=answer,
        updateStatus=status,
        batch=gate.batch,
        batchInstances=list(gate.batch_instances) if gate.batch is not None else None,
        gate=gate_out(gate),
    )


def gate_in(g: Any) -> GateState | None:
    """The client's view of a `GateState` from the wire (None when the server sent none)."""
    if g is None:
        return None
    return GateState(
        open=bool(g.open),
        reason=None if g.reason is None else GateReason(g.reason),
        why=g.why or "",
        since_ms=g.sinceMs or 0,
        lease_end_ms=g.leaseEndMs,
        quorum=g.quorum or 1,
        fresh_monitors=g.freshMonitors or 0,
        monitors=tuple(
            MonitorState(m.name, m.ageMs, m.leaseEndMs, bool(m.fresh), m.ackedBatch)
            for m in g.monitors or ()
        ),
        batch=g.batch,
        batch_instances=tuple(g.batchInstances or ()),
        awaiting_ack=g.awaitingAck,
        on_blocked=None if g.onBlocked is None else ON_BLOCKED.get(g.onBlocked),
        on_blocked_at_ms=g.onBlockedAtMs,
    )
