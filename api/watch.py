"""Following an update: where it stands in words (why it is blocked or paused, progress over a
denominator that stays put through a rollback), the live view on a terminal, one line per
change otherwise, and one JSON object per change for `update wait --json`."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from api.gate_text import gate_json, monitor_lines
from api.render import heartbeat_text, iso, progress_text, reason, status_text, update_size
from api.views import UpdateDetails


def change_of(d: UpdateDetails) -> tuple[Any, ...]:
    """What makes a poll a change: status, counts and the audit trail, not the ages."""
    p = d.progress
    counts = None if p is None else (p.total, p.done, p.in_flight, p.failed, d.rolling_back)
    return d.status, counts, len(d.record.status_events), len(d.record.instance_events)


def wait_json(d: UpdateDetails, now_ms: int | None = None) -> dict[str, Any]:
    """One line of `update wait --json`."""
    p = d.progress
    last = d.record.status_events[-1]
    return {
        "key": str(d.record.key),
        "status": d.status.name,
        "terminal": d.status.is_terminal,
        "why": reason(d, now_ms),
        "instances_in_update": update_size(d),
        "progress": None
        if p is None
        else {"total": p.total, "done": p.done, "in_flight": p.in_flight, "failed": p.failed},
        "rolling_back": d.rolling_back,
        "heartbeat": {"age_ms": d.heartbeat_age_ms, "timeout_ms": d.heartbeat_timeout_ms},
        "gate": gate_json(d.gate, d.heartbeat_timeout_ms),
        "last_event": {
            "status": last.status.name,
            "timestamp_ms": last.timestamp_ms,
            "timestamp_at": iso(last.timestamp_ms),
            "user": last.user,
            "message": last.message,
            "cause": last.cause.value,
        },
    }


def progress_view(d: UpdateDetails) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    grid.add_row(Text(str(d.record.key), style="bold"), status_text(d.status.name))
    p, size = d.progress, max(update_size(d), 1)
    if p is None:
        completed = 0
    elif d.rolling_back:
        completed = size - p.total + p.done - p.failed
    else:
        completed = p.done
    grid.add_row(ProgressBar(total=size, completed=completed, width=40), progress_text(d))
    if d.heartbeat_timeout_ms:
        late = d.heartbeat_age_ms is None or d.heartbeat_age_ms >= d.heartbeat_timeout_ms
        grid.add_row("heartbeat", Text(heartbeat_text(d), style="red" if late else "green"))
    for name, state in monitor_lines(d.gate):
        grid.add_row(f"monitor {name}", Text(state, style="red" if "stale" in state else "green"))
    text = reason(d)
    if text is not None:
        grid.add_row("why", Text(text, style="yellow"))
    return grid


class WaitDisplay:
    """An update's progress: a live view on a terminal, else one line per change (a change of
    status, counts or events; the heartbeat age alone is not one). With `json_lines`, one JSON
    object per change on stdout instead."""

    def __init__(self, out: Console, json_lines: bool = False) -> None:
        self.out = out
        self.json_lines = json_lines
        live = out.is_terminal and not json_lines
        self.live = Live(console=out, refresh_per_second=4) if live else None
        self.last: tuple[Any, ...] | None = None

    def __enter__(self) -> WaitDisplay:
        if self.live is not None:
            self.live.start()
        return self

    def show(self, d: UpdateDetails) -> None:
        if self.live is not None:
            self.live.update(progress_view(d))
            return
        change = change_of(d)
        if change == self.last:
            return
        self.last = change
        if self.json_lines:
            sys.stdout.write(json.dumps(wait_json(d)) + "\n")
            sys.stdout.flush()
            return
        line = f"{d.record.key} {d.status.name} {progress_text(d)}"
        if d.heartbeat_timeout_ms:
            line += f"; heartbeat {heartbeat_text(d)}"
        text = reason(d)
        if text is not None:
            line += f"; {text}"
        self.out.print(Text(line), soft_wrap=True)
        for name, state in monitor_lines(d.gate):
            self.out.print(Text(f"  monitor {name}: {state}"), soft_wrap=True)

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()
