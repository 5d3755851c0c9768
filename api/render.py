"""What the CLI prints: rich tables and views for people, and the same data as JSON with stable
snake_case keys for scripts (`--json`). Timestamps appear as `*_ms` integers and `*_at` ISO
strings. All printing lives here; the command modules decide what to show."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from api.gate_text import blocked_text, bound_text, gate_json, monitor_lines
from api.views import DiffView, InstanceStatus, SchedulerInfo, UpdateDetails
from updater.driver import InstanceState
from updater.events import Cause, InstanceAction
from updater.gate import GateReason
from updater.job import ConfigGroup, Job
from updater.ranges import Range, format_ranges, merge
from updater.record import REQUEST_ID
from updater.settings import HeartbeatResume, Settings
from updater.storage import UpdateSummary
from updater.task import TaskConfig

_SETTING_NAMES = {"instances": "only instances"}
_HIDDEN = frozenset({REQUEST_ID})  # the client's retry tag: noise for people
_FAILED = frozenset(
    {InstanceAction.INSTANCE_UPDATE_FAILED, InstanceAction.INSTANCE_ROLLBACK_FAILED}
)
# What getInstances tells today (no host or pid yet): AT_DESIRED is whether the instance runs the
# config the job wants for it, i.e. the update's new config while rolling forward.
_INSTANCE_COLUMNS = (
    "ID=instance_id STATE=state AT_DESIRED=at_desired_config HEALTHY_SINCE=healthy_since_at "
    "FAILURES=failures MESSAGE=message"
)
_STATUS_STYLE = {"ROLLED_FORWARD": "green", "ROLLED_BACK": "yellow", "ABORTED": "yellow"}


def console() -> Console:
    """A console on the current stdout; wide when not a terminal, so keys never wrap."""
    out = Console(highlight=False)
    return out if out.is_terminal else Console(highlight=False, width=200)


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stamp(name: str, ms: int | None) -> dict[str, Any]:
    return {f"{name}_ms": ms, f"{name}_at": iso(ms)}


def print_json(data: Any, lines: bool = False) -> None:
    """Indented for a reader, or on one line (`lines`) as part of a JSON-lines stream."""
    sys.stdout.write(json.dumps(data, indent=None if lines else 2) + "\n")


# -- JSON ---------------------------------------------------------------------------------------


def task_json(config: TaskConfig) -> dict[str, Any]:
    check = config.health_check
    return {
        "command": list(config.command),
        "shell": config.shell,
        "environment": dict(config.environment),
        "working_dir": config.working_dir,
        "labels": dict(config.labels),
        "stop_grace_ms": config.stop_grace_ms,
        "health_check": None
        if check is None
        else attrs.asdict(check, value_serializer=lambda _i, _f, v: getattr(v, "value", v)),
    }


def settings_json(s: Settings) -> dict[str, Any]:
    return {
        "strategy": s.strategy.kind.name.lower(),  # as in job files: queue, variable_batch
        "sizes": list(s.strategy.sizes),
        "auto_pause_after_batch": s.auto_pause_after_batch,
        "max_per_instance_failures": s.max_per_instance_failures,
        "max_failed_instances": s.max_failed_instances,
        "min_wait_ms": s.min_wait_in_instance_running_ms,
        "rollback_on_failure": s.rollback_on_failure,
        "instances": format_ranges(s.update_only_these_instances),
        "heartbeat_timeout_ms": s.heartbeat_timeout_ms,
        "heartbeat_resume": s.heartbeat_resume.value.lower(),
    }


def groups_json(groups: Iterable[ConfigGroup]) -> list[dict[str, Any]]:
    return [
        {"instances": format_ranges(g.ranges), "count": g.count, "config": task_json(g.config)}
        for g in groups
    ]


def summary_json(s: UpdateSummary) -> dict[str, Any]:
    return {
        "key": str(s.key),
        "job": str(s.key.job),
        "id": s.key.id,
        "user": s.user,
        "status": s.status.name,
        **_stamp("created", s.created_ms),
        **_stamp("last_modified", s.last_modified_ms),
        "metadata": dict(s.metadata),
    }


def details_json(d: UpdateDetails) -> dict[str, Any]:
    r, p = d.record, d.progress
    return {
        **summary_json(d.summary),
        "settings": settings_json(r.definition.settings),
        "instance_count": r.definition.instance_count,
        # the new config; null when the update only removes instances (the server sends none)
        "config": task_json(r.definition.config) if r.definition.desired else None,
        "initial": groups_json(r.definition.initial),
        "desired_instances": format_ranges(r.definition.desired),
        "progress": None if p is None else attrs.asdict(p),  # total, done, in_flight, failed
        "rolling_back": d.rolling_back,
        "heartbeat": {"age_ms": d.heartbeat_age_ms, "timeout_ms": d.heartbeat_timeout_ms},
        "gate": gate_json(d.gate, d.heartbeat_timeout_ms),
        "status_events": [
            {
                "status": e.status.name,
                **_stamp("timestamp", e.timestamp_ms),
                "user": e.user,
                "message": e.message,
                "cause": e.cause.value,
            }
            for e in r.status_events
        ],
        "instance_events": [
            {
                "instance_id": e.instance_id,
                **_stamp("timestamp", e.timestamp_ms),
                "action": e.action.name,
                "message": e.message,
            }
            for e in r.instance_events
        ],
    }


def instance_json(i: InstanceStatus) -> dict[str, Any]:
    return {
        "instance_id": i.instance_id,
        "state": i.state.name,
        "at_desired_config": i.at_desired_config,
        **_stamp("healthy_since", i.healthy_since_ms),
        "failures": i.failures,
        "message": i.message,
    }


def job_status_json(
    job: Job,
    instances: Sequence[InstanceStatus],
    active: Sequence[UpdateSummary],
    info: SchedulerInfo | None = None,
) -> dict[str, Any]:
    def with_log(i: InstanceStatus) -> dict[str, Any]:
        log = info.instance_log(job.key, i.instance_id) if info is not None else None
        return {**instance_json(i), "log": log}

    return {
        "job": str(job.key),
        "instance_count": job.instance_count,
        "groups": groups_json(job.groups),
        "instances": [with_log(i) for i in instances],
        "active_updates": [summary_json(s) for s in active],
    }


def job_row_json(job: Job, active: UpdateSummary | None) -> dict[str, Any]:
    return {
        "job": str(job.key),
        "instance_count": job.instance_count,
        "active_update": None if active is None else str(active.key),
        "active_status": None if active is None else active.status.name,
    }


def diff_json(job: str, diff: DiffView) -> dict[str, Any]:
    return {
        "job": job,
        "is_noop": diff.is_noop,
        **{
            name: groups_json(getattr(diff, name))
            for name in ("add", "update", "remove", "unchanged")
        },
    }


# -- people -------------------------------------------------------------------------------------


def status_text(name: str) -> Text:
    return Text(name, style=_STATUS_STYLE.get(name, "red" if name in ("ERROR", "FAILED") else ""))


def _seconds(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f}s"


def _cell(value: object) -> RenderableType:
    """Text, never markup: messages and commands may contain `[brackets]`."""
    if isinstance(value, Text):
        return value
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, list):
        return Text(", ".join(map(str, value)))
    return Text("-" if value is None else str(value))


def _table(out: Console, columns: str, records: Iterable[dict[str, Any]], title: str = "") -> None:
    """A table of JSON records (the very data `--json` prints). `columns` is a spec like
    `"ID=instance_id HEALTHY_SINCE=healthy_since_at"`: header (`_` shows as a space) = key."""
    spec = [c.split("=") for c in columns.split()]
    table = Table(*(h.replace("_", " ") for h, _ in spec), title=title or None, box=None)
    table.title_justify = "left"
    for r in records:
        table.add_row(*(status_text(r[k]) if k == "status" else _cell(r[k]) for _, k in spec))
    out.print(table)


def _fields(out: Console, rows: Iterable[tuple[str, object]]) -> None:
    grid = Table.grid(padding=(0, 2))
    for name, value in rows:
        grid.add_row(Text(name, style="bold"), _cell(value))
    out.print(grid)


def describe_task(config: TaskConfig) -> str:
    command = config.command[0] if config.shell else " ".join(config.command)
    return " ".join([command, *(f"[{k}={v}]" for k, v in config.environment)])


def _kind(config: TaskConfig) -> str | None:
    return config.health_check.kind.value if config.health_check else None


def print_summaries(out: Console, summaries: Sequence[UpdateSummary]) -> None:
    columns = "UPDATE=key STATUS=status USER=user CREATED=created_at LAST_MODIFIED=last_modified_at"
    if not summaries:
        out.print("no updates")
        return
    _table(out, columns, (summary_json(s) for s in summaries))


def failures(d: UpdateDetails, info: SchedulerInfo | None) -> list[str]:
    """One line per failed instance, pointing at its log when the scheduler runs instances
    locally, so the next step after "it failed" is obvious."""
    lines = []
    for e in d.record.instance_events:
        if e.action not in _FAILED:
            continue
        log = info.instance_log(d.record.key.job, e.instance_id) if info is not None else None
        where = f"; its output: {log}" if log else ""
        lines.append(f"instance {e.instance_id} failed: {e.message or e.action.name}{where}")
    return lines


def print_details(
    out: Console,
    d: UpdateDetails,
    instances: Sequence[InstanceStatus] = (),
    info: SchedulerInfo | None = None,
) -> None:
    """An update's fields, why it stands still, its instances now (`instances`, if the job
    still exists), its audit trail, and where a failed instance's log is."""
    data, r = details_json(d), d.record
    rows: list[tuple[str, object]] = [
        ("update", data["key"]),
        ("status", status_text(data["status"])),
        ("user", data["user"]),
        ("created", data["created_at"]),
        ("last modified", data["last_modified_at"]),
        ("instances", f"{data['instance_count']} (changing {data['desired_instances'] or '-'})"),
        ("command", describe_task(r.definition.config) if r.definition.desired else "-"),
        ("progress", progress_text(d)),
    ]
    if r.definition.is_coordinated:
        rows.append(("heartbeat", heartbeat_text(d)))
        rows.extend((f"monitor {name}", state) for name, state in monitor_lines(d.gate))
    if (pause := r.pause_event) is not None:
        rows.append(("paused by", f"{pause.user}: {pause.message or '(no message)'}"))
    if (text := reason(d)) is not None and not text.startswith("paused by"):
        rows.append(("why", text))
    settings = {**data["settings"], "instances": data["settings"]["instances"] or "all"}
    rows.extend((_SETTING_NAMES.get(k, k.replace("_", " ")), v) for k, v in settings.items())
    rows.extend((f"metadata {k}", v) for k, v in data["metadata"].items() if k not in _HIDDEN)
    _fields(out, rows)
    columns = "TIME=timestamp_at STATUS=status USER=user CAUSE=cause MESSAGE=message"
    _table(out, columns, data["status_events"], "status events")
    if r.instance_events:
        columns = "TIME=timestamp_at INSTANCE=instance_id ACTION=action MESSAGE=message"
        _table(out, columns, data["instance_events"], "instance events")
    if instances:
        _table(out, _INSTANCE_COLUMNS, (instance_json(i) for i in instances), "instances now")
    for line in failures(d, info):
        out.print(Text(line), soft_wrap=True)


def print_jobs(out: Console, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        out.print("no jobs; create one with `pulsegate job create FILE`", markup=False)
        return
    columns = "JOB=job INSTANCES=instance_count ACTIVE_UPDATE=active_update STATUS=active_status"
    _table(out, columns, rows)


def print_job_status(
    out: Console,
    job: Job,
    instances: Sequence[InstanceStatus],
    active: Sequence[UpdateSummary],
    info: SchedulerInfo | None = None,
) -> None:
    """The job's configs and instances; a failing instance points at its log (local driver)."""
    rows: list[tuple[str, object]] = [("job", str(job.key)), ("instances", job.instance_count)]
    rows.extend(("active update", f"{s.key} {s.status.name}") for s in active)
    _fields(out, rows)
    groups = [
        {"ids": format_ranges(g.ranges), "run": describe_task(g.config), "check": _kind(g.config)}
        for g in job.groups
    ]
    _table(out, "INSTANCES=ids COMMAND=run HEALTH_CHECK=check", groups, "desired configs")
    _table(out, _INSTANCE_COLUMNS, (instance_json(i) for i in instances), "instances")
    for i in instances:
        log = info.instance_log(job.key, i.instance_id) if info is not None else None
        if log and (i.failures or i.state is InstanceState.EXITED):
            why = i.message or i.state.name.lower()
            out.print(Text(f"instance {i.instance_id}: {why}; its output: {log}"), soft_wrap=True)


def diff_summary(diff: DiffView) -> str:
    """`add 5-6; update 0-4; unchanged 7`."""
    if diff.is_noop:
        return "no change"
    named = [("add", diff.add), ("update", diff.update), ("remove", diff.remove)]
    named.append(("unchanged", diff.unchanged))
    return "; ".join(
        f"{n} {format_ranges(merge(r for g in gs for r in g.ranges))}" for n, gs in named if gs
    )


def print_diff(
    out: Console, job: str, diff: DiffView, changes: Sequence[Sequence[tuple[str, str, str]]]
) -> None:
    """`changes[i]` lists (field, now, new) for `diff.update[i]`."""
    _fields(out, [("job", job), ("change", diff_summary(diff))])
    for sign, verb, groups in (("+", "add", diff.add), ("-", "remove", diff.remove)):
        for g in groups:
            out.print(Text(f"{sign} {verb} {format_ranges(g.ranges)}: {describe_task(g.config)}"))
    for g, fields in zip(diff.update, changes, strict=True):
        records = [{"field": f, "now": a, "new": b} for f, a, b in fields]
        _table(out, "FIELD=field NOW=now NEW=new", records, f"~ update {format_ranges(g.ranges)}")


# -- where an update stands --------------------------------------------------------------------


def _ids(ranges: tuple[Range, ...]) -> set[int]:
    return {i for r in ranges for i in range(r.first, r.last + 1)}


def update_size(d: UpdateDetails) -> int:
    """The instances the update changes (added, replaced or removed): the one denominator, in
    both directions. The server's progress counts only the current direction's instances, so a
    rollback of 2 of 5 would otherwise show as 0/2."""
    definition = d.record.definition
    touched = _ids(definition.desired)
    for group in definition.initial:
        touched |= _ids(group.ranges)
    forward = d.progress.total if d.progress is not None and not d.rolling_back else 0
    return max(len(touched), forward)


def progress_text(d: UpdateDetails) -> str:
    """`3/5 done, 1 in flight, 0 failed`; in a rollback, instances back on their old config
    (untouched ones included) over the same 5."""
    p = d.progress
    if p is None:
        return "-"
    size = update_size(d)
    if not d.rolling_back:
        return f"{p.done}/{size} done, {p.in_flight} in flight, {p.failed} failed"
    restored = size - p.total + p.done - p.failed
    return (
        f"rolling back: {restored}/{size} on the old config, "
        f"{p.in_flight} in flight, {p.failed} failed"
    )


def heartbeat_text(d: UpdateDetails) -> str:
    age = "none yet" if d.heartbeat_age_ms is None else f"last {_seconds(d.heartbeat_age_ms)} ago"
    return f"{age}, timeout {_seconds(d.heartbeat_timeout_ms)}"


def why(d: UpdateDetails, now_ms: int | None = None) -> str | None:
    """Why the update is not moving, in words, or None while it moves (or has ended)."""
    status = d.status
    events = d.record.status_events
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if status.is_paused:
        pause = d.record.pause_event
        if pause is not None:
            return f"paused by {pause.user}: {pause.message or '(no message)'}"
    if not status.is_awaiting_pulse:
        return None
    last = events[-1]
    timeout = d.heartbeat_timeout_ms
    age = d.heartbeat_age_ms
    settings = d.record.definition.settings
    if (
        age is not None
        and age < timeout
        and settings.heartbeat_resume is HeartbeatResume.OPERATOR
        and last.cause is Cause.HEARTBEAT_TIMEOUT
    ):
        return (
            "blocked: heartbeats are back, but heartbeat_resume = operator: "
            "`pulsegate update resume` lets it go on"
        )
    if age is not None:
        return f"blocked: no heartbeat for {_seconds(age)} (timeout {_seconds(timeout)})"
    if not any(e.cause is Cause.HEARTBEAT for e in events):
        waited = max(0, now - last.timestamp_ms)
        return f"waiting for the first heartbeat (for {_seconds(waited)})"
    # beats were seen before, none since (e.g. a new leader): at least the timeout before `last`
    silent = max(0, now - last.timestamp_ms) + (
        timeout if last.cause is Cause.HEARTBEAT_TIMEOUT else 0
    )
    return f"blocked: no heartbeat for {_seconds(silent)} (timeout {_seconds(timeout)})"


# Gate reasons the heartbeat-age words above already say well; the others take the gate's words.
_SAID_BY_WHY = frozenset(
    {GateReason.NO_HEARTBEAT, GateReason.TIMED_OUT, GateReason.HELD_FOR_OPERATOR}
)


def reason(d: UpdateDetails, now_ms: int | None = None) -> str | None:
    """Why it stands still, as `why` says, or in the gate's words for a quorum or an ack it
    waits for ("blocked: quorum 1 of 2 for 12s"); either with what its bound does when
    (", pause in 9m48s")."""
    gate, timeout = d.gate, d.heartbeat_timeout_ms
    if gate is not None and gate.reason is not None and gate.reason not in _SAID_BY_WHY:
        return blocked_text(gate, timeout, now_ms) or why(d, now_ms)
    text = why(d, now_ms)
    return None if text is None else text + bound_text(gate, timeout, now_ms)
