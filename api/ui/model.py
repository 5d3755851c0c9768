"""What the web UI shows, computed from the API's answers: why an update is where it is, its
instance grid, its timeline, its settings. Pure functions of the answers and `now` (ms), so
the wording is tested without a browser; templates only lay these out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from api.views import InstanceStatus, UpdateDetails
from updater.driver import InstanceState
from updater.events import Cause, InstanceAction, StatusEvent
from updater.ranges import format_ranges, merge
from updater.record import REQUEST_ID
from updater.settings import HeartbeatResume, Settings
from updater.status import UpdateStatus
from updater.storage import UpdateSummary

if TYPE_CHECKING:
    from api.ui.processes import Process

S = UpdateStatus

# What an instance event says about the instance, in a word for its grid cell.
_ACTION_WORDS = {
    InstanceAction.INSTANCE_UPDATING: "updating",
    InstanceAction.INSTANCE_UPDATED: "updated",
    InstanceAction.INSTANCE_UPDATE_FAILED: "failed",
    InstanceAction.INSTANCE_ROLLING_BACK: "rolling back",
    InstanceAction.INSTANCE_ROLLED_BACK: "rolled back",
    InstanceAction.INSTANCE_ROLLBACK_FAILED: "rollback failed",
}


def duration(ms: int) -> str:
    """A span for people: `850 ms`, `4.2 s`, `42 s`, `3 min 5 s`, `2 h 10 min`."""
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms} ms"
    if ms < 10_000:
        return f"{ms / 1000:.1f} s"
    seconds = ms // 1000
    if seconds < 120:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 120:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def clock_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def ago(ms: int | None, now: int) -> str:
    return "-" if ms is None else f"{duration(now - ms)} ago"


@attrs.frozen
class Why:
    """The update's state in one sentence; `kind` picks its colour (ok, waiting, blocked,
    held, paused, done, failed)."""

    kind: str
    text: str


def _words(status: UpdateStatus) -> str:
    return status.name.lower().replace("_", " ")


def _by(event: StatusEvent) -> str:
    reason = event.message or "no reason given"
    return f"{event.user}: {reason}"


def _has_rolled(d: UpdateDetails) -> bool:
    """Whether the update ever moved (for a coordinated one: a heartbeat ever let it)."""
    return any(e.status.is_rolling for e in d.record.status_events)


def is_held(d: UpdateDetails) -> bool:
    """Blocked after a lapse with `heartbeat_resume = operator`: only an operator's resume
    moves it on (the engine's `is_held_for_operator`)."""
    return (
        d.status.is_awaiting_pulse
        and d.record.definition.settings.heartbeat_resume is HeartbeatResume.OPERATOR
        and _has_rolled(d)
    )


def _silence_ms(d: UpdateDetails, now: int) -> int:
    """How long no heartbeat has arrived: the leader's age when it knows one; else counted from
    the recorded lapse, which happened one timeout after the last heartbeat."""
    if d.heartbeat_age_ms is not None:
        return d.heartbeat_age_ms
    lapses = [e for e in d.record.status_events if e.cause is Cause.HEARTBEAT_TIMEOUT]
    since = lapses[-1].timestamp_ms if lapses else d.record.status_events[-1].timestamp_ms
    return now - since + d.heartbeat_timeout_ms


def why(d: UpdateDetails, now: int) -> Why:
    """Why the update is in its status, from its status events and the heartbeat age."""
    status = d.status
    last = d.record.status_events[-1]
    if status.is_paused:
        if last.cause is Cause.AUTO_PAUSE:
            return Why("paused", "paused after a batch (auto-pause): resume to start the next")
        return Why("paused", f"paused by {_by(last)}")
    if status.is_awaiting_pulse:
        age = d.heartbeat_age_ms
        if not _has_rolled(d) and age is None:
            return Why("waiting", "waiting for the first heartbeat")
        fresh = age is not None and age < d.heartbeat_timeout_ms
        if is_held(d):
            if fresh:
                return Why(
                    "held",
                    "held: heartbeats are back, but after a lapse this update moves on only "
                    "when an operator resumes it (heartbeat_resume = operator)",
                )
            return Why(
                "blocked",
                f"blocked: no heartbeat for {duration(_silence_ms(d, now))}; then an operator "
                "must resume it (heartbeat_resume = operator)",
            )
        if fresh:
            return Why("waiting", "heartbeat received: moving on")
        return Why("blocked", f"blocked: no heartbeat for {duration(_silence_ms(d, now))}")
    if status.is_rolling:
        if status is S.ROLLING_BACK:
            # what turned it around, not a later resume
            started = next((e for e in d.record.status_events if e.status.is_backward), last)
            text = f"rolling back ({started.cause.value.replace('_', ' ')}): {_by(started)}"
        else:
            text = "rolling forward"
        if d.heartbeat_timeout_ms and d.heartbeat_age_ms is not None:
            text += f"; last heartbeat {duration(d.heartbeat_age_ms)} ago"
        elif d.heartbeat_timeout_ms:  # a new leader: nothing moves until a heartbeat reaches it
            text += "; no heartbeat since the leader took over: holding"
        return Why("ok", text)
    kind = "failed" if status in (S.FAILED, S.ERROR) else "done"
    if last.cause is Cause.OPERATOR:
        return Why(kind, f"{_words(status)} by {_by(last)}")
    return Why(kind, f"{_words(status)}: {last.message}" if last.message else _words(status))


# -- heartbeat --------------------------------------------------------------------------------


@attrs.frozen
class Pulse:
    timeout_ms: int
    age_ms: int | None
    fresh: bool
    text: str
    lease: str  # the lease countdown, or why there is none


def pulse(d: UpdateDetails) -> Pulse | None:
    """The heartbeat against its timeout; None for an update that is not coordinated."""
    timeout = d.heartbeat_timeout_ms
    if not timeout:
        return None
    age = d.heartbeat_age_ms
    if not d.status.is_active:
        return Pulse(timeout, age, False, "update over: heartbeats no longer needed", "-")
    if age is None:
        return Pulse(timeout, None, False, "no heartbeat seen by the leader yet", "-")
    fresh = age < timeout
    lease = (
        f"ends in {duration(timeout - age)}" if fresh else f"ended {duration(age - timeout)} ago"
    )
    return Pulse(timeout, age, fresh, f"last heartbeat {duration(age)} ago", lease)


# -- actions ----------------------------------------------------------------------------------

ACTIONS = ("pause", "resume", "abort", "rollback")


def allowed_actions(d: UpdateDetails) -> frozenset[str]:
    """The buttons worth offering; the server still decides (its refusal is shown)."""
    status = d.status
    if not status.is_active:
        return frozenset()
    allowed = {"abort"}
    if status.is_rolling or status.is_awaiting_pulse:
        allowed.add("pause")
    if status.is_paused or is_held(d):
        allowed.add("resume")
    if not status.is_backward:
        allowed.add("rollback")
    return frozenset(allowed)


# -- instances --------------------------------------------------------------------------------


@attrs.frozen
class Cell:
    instance_id: int
    state: str  # lower-case InstanceState name, or "unknown"
    step: str  # what the update last did to it ("updated", ...), or ""
    in_scope: bool
    at_desired: bool | None
    host: str | None
    pid: int | None
    detail: str  # hover text: failures, message, since


_LIVE = frozenset(
    {InstanceState.STARTING, InstanceState.RUNNING, InstanceState.HEALTHY, InstanceState.KILLING}
)


def host_pid(
    i: InstanceStatus, raw: Any, process: Process | None = None
) -> tuple[str | None, int | None]:
    """Host and pid: from the API's answer where it reports them, else from the process record;
    a pid only while the instance lives (an exited one's record names a dead process)."""
    host = getattr(raw, "host", None) or (process.host if process else None)
    pid = getattr(raw, "pid", None) or (process.pid if process else None)
    live = i.state in _LIVE
    return (host or None, pid if live and isinstance(pid, int) and pid > 0 else None)


def instance_detail(i: InstanceStatus, now: int, process: Process | None = None) -> str:
    parts = [i.state.name]
    if i.healthy_since_ms is not None:
        parts.append(f"healthy since {ago(i.healthy_since_ms, now)}")
    if i.failures:
        parts.append(f"{i.failures} failure(s)")
    if i.message:
        parts.append(i.message)
    if process is not None:
        parts.append(f"port {process.port}, log {process.log}")
    return "; ".join(parts)


def grid(
    d: UpdateDetails,
    instances: Sequence[tuple[InstanceStatus, Any]] | None,
    now: int,
    processes: Mapping[int, Process] | None = None,
) -> list[Cell]:
    """One cell per instance of the job and of the update's scope, by id."""
    definition = d.record.definition
    scope: set[int] = set(definition.initial_configs()) | {
        i for r in definition.desired for i in range(r.first, r.last + 1)
    }
    steps: dict[int, str] = {}
    for e in d.record.instance_events:
        steps[e.instance_id] = _ACTION_WORDS.get(e.action, e.action.name.lower())
    seen = {i.instance_id: (i, raw) for i, raw in instances or ()}
    cells = []
    for instance_id in sorted(scope | set(seen)):
        if instance_id in seen:
            i, raw = seen[instance_id]
            process = (processes or {}).get(instance_id)
            host, pid = host_pid(i, raw, process)
            cells.append(
                Cell(
                    instance_id,
                    i.state.name.lower(),
                    steps.get(instance_id, ""),
                    instance_id in scope,
                    i.at_desired_config,
                    host,
                    pid,
                    instance_detail(i, now, process),
                )
            )
        else:
            cells.append(
                Cell(instance_id, "unknown", steps.get(instance_id, ""), True, None, None, None, "")
            )
    return cells


# -- timeline and settings --------------------------------------------------------------------


@attrs.frozen
class Entry:
    at_ms: int
    kind: str  # "status" or "instance"
    what: str
    who: str
    cause: str
    message: str


def timeline(d: UpdateDetails, limit: int = 300) -> list[Entry]:
    """Status and instance events, newest first."""
    entries = [
        Entry(e.timestamp_ms, "status", e.status.name, e.user, e.cause.value, e.message)
        for e in d.record.status_events
    ]
    entries += [
        Entry(
            e.timestamp_ms,
            "instance",
            f"instance {e.instance_id}: {e.action.name}",
            "",
            "",
            e.message,
        )
        for e in d.record.instance_events
    ]
    entries.sort(key=lambda e: (e.at_ms, e.kind == "status"), reverse=True)
    return entries[:limit]


def settings_rows(s: Settings) -> list[tuple[str, str]]:
    """Settings under their job-file names (`[update]` keys)."""
    sizes = ", ".join(map(str, s.strategy.sizes))
    return [
        ("strategy", f"{s.strategy.kind.name.lower()} ({sizes})"),
        ("auto_pause_after_batch", _yes(s.auto_pause_after_batch)),
        ("max_per_instance_failures", str(s.max_per_instance_failures)),
        ("max_failed_instances", str(s.max_failed_instances)),
        ("min_wait_ms", duration(s.min_wait_in_instance_running_ms)),
        ("rollback_on_failure", _yes(s.rollback_on_failure)),
        ("instances", format_ranges(merge(s.update_only_these_instances)) or "all"),
        (
            "heartbeat_timeout_ms",
            duration(s.heartbeat_timeout_ms) if s.heartbeat_timeout_ms else "off (not coordinated)",
        ),
        ("heartbeat_resume", s.heartbeat_resume.name.lower()),
    ]


def metadata_rows(d: UpdateDetails) -> list[tuple[str, str]]:
    """What the starter attached (rule 10), without the client's retry tag."""
    return [(k, v) for k, v in d.record.definition.metadata if k != REQUEST_ID]


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def ordered(summaries: Iterable[UpdateSummary]) -> list[UpdateSummary]:
    """Active updates first, then the most recently changed."""
    return sorted(summaries, key=lambda s: (not s.status.is_active, -s.last_modified_ms))
