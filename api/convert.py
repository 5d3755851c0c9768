"""Conversions between Thrift structs and the domain's attrs models. Input conversions check
everything a client can get wrong (missing fields, wrong types, unknown enum ids, empty or
oversized strings, absurd numbers, inverted ranges) and raise InvalidRequest naming the field;
output conversions trust the domain."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from api import convert_gate
from api.checks import MAX_STRING, enum_id, integer, listed, need, text
from api.idl import pulsegate as t
from updater.diff import JobDiff
from updater.driver import InstanceState, ObservedInstance
from updater.engine import Counts
from updater.errors import InvalidRequest
from updater.events import InstanceEvent, StatusEvent
from updater.gate import GateState
from updater.job import ConfigGroup, Job
from updater.keys import JobKey, UpdateKey
from updater.ranges import Range, checked_range, merge
from updater.record import UpdateRecord, UpdateRequest
from updater.settings import (
    MAX_MONITOR_NAME,
    MAX_MONITORS,
    HeartbeatResume,
    Settings,
    Strategy,
    StrategyKind,
)
from updater.status import UpdateStatus
from updater.storage import UpdateQuery, UpdateSummary
from updater.task import HealthCheck, HealthCheckKind, TaskConfig

_STRATEGY = {1: StrategyKind.QUEUE, 2: StrategyKind.BATCH, 3: StrategyKind.VARIABLE_BATCH}
_STRATEGY_ID = {v: k for k, v in _STRATEGY.items()}
_RESUME = {1: HeartbeatResume.AUTO, 2: HeartbeatResume.OPERATOR}
_RESUME_ID = {v: k for k, v in _RESUME.items()}
_ON_BLOCKED = {v: k for k, v in convert_gate.ON_BLOCKED_ID.items()}
_ON_BLOCKED_ID = convert_gate.ON_BLOCKED_ID
_CHECK = {1: HealthCheckKind.HTTP, 2: HealthCheckKind.TCP, 3: HealthCheckKind.COMMAND}
_CHECK_ID = {v: k for k, v in _CHECK.items()}
_STATE_ID = {
    InstanceState.ABSENT: 0,
    InstanceState.STARTING: 1,
    InstanceState.RUNNING: 2,
    InstanceState.HEALTHY: 3,
    InstanceState.EXITED: 4,
    InstanceState.KILLING: 5,
}


# -- keys ---------------------------------------------------------------------------------------


def job_key_in(v: Any, field: str = "job") -> JobKey:
    need(v, field, t.JobKey)
    parts = (
        text(v.role, f"{field}.role", 64),
        text(v.environment, f"{field}.environment", 64),
        text(v.name, f"{field}.name", 64),
    )
    try:
        return JobKey.checked(*parts)
    except InvalidRequest as e:  # named "job.<part>" by the domain
        raise InvalidRequest(f"{field}.{e.field.partition('.')[2]}", e.rule) from None


def job_key_out(key: JobKey) -> Any:
    return t.JobKey(role=key.role, environment=key.environment, name=key.name)


def update_key_in(v: Any, field: str = "key") -> UpdateKey:
    need(v, field, t.JobUpdateKey)
    job = job_key_in(v.job, f"{field}.job")
    try:
        return UpdateKey.checked(job, text(v.id, f"{field}.id", 64))
    except InvalidRequest as e:
        raise InvalidRequest(f"{field}.id", e.rule) from None


def update_key_out(key: UpdateKey) -> Any:
    return t.JobUpdateKey(job=job_key_out(key.job), id=key.id)


def ranges_in(v: Any, field: str) -> tuple[Range, ...]:
    out = []
    for i, r in enumerate(listed(v, field)):
        need(r, f"{field}[{i}]", t.Range)
        out.append(
            checked_range(
                integer(r.first, f"{field}[{i}].first", 0),
                integer(r.last, f"{field}[{i}].last", 0),
                f"{field}[{i}]",
            )
        )
    return merge(out)


def ranges_out(ranges: Iterable[Range]) -> list[Any]:
    return [t.Range(first=r.first, last=r.last) for r in ranges]


# -- task configs -------------------------------------------------------------------------------


def _pairs(v: Any, field: str) -> tuple[tuple[str, str], ...]:
    if v is None:
        return ()
    need(v, field, dict)
    if len(v) > 256:
        raise InvalidRequest(field, "must have at most 256 entries")
    pairs = []
    for key, value in v.items():
        name = text(key, field, 256)
        pairs.append((name, text(value, f"{field}.{name}", MAX_STRING, empty=True)))
    return tuple(sorted(pairs))


def health_check_in(v: Any, field: str) -> HealthCheck | None:
    if v is None:
        return None
    need(v, field, t.HealthCheck)
    defaults = HealthCheck(HealthCheckKind.TCP)

    def opt(value: Any, name: str, default: int, low: int = 0) -> int:
        return default if value is None else integer(value, f"{field}.{name}", low)

    command = (
        ()
        if v.command is None
        else tuple(
            text(a, f"{field}.command[{i}]", empty=i > 0)
            for i, a in enumerate(listed(v.command, f"{field}.command", 256))
        )
    )
    return HealthCheck(
        kind=enum_id(v.kind, _CHECK, f"{field}.kind"),
        path=defaults.path if v.path is None else text(v.path, f"{field}.path", 1024),
        command=command,
        interval_ms=opt(v.intervalMs, "intervalMs", defaults.interval_ms),
        timeout_ms=opt(v.timeoutMs, "timeoutMs", defaults.timeout_ms),
        initial_delay_ms=opt(v.initialDelayMs, "initialDelayMs", defaults.initial_delay_ms),
        healthy_threshold=opt(v.healthyThreshold, "healthyThreshold", defaults.healthy_threshold),
        unhealthy_threshold=opt(
            v.unhealthyThreshold, "unhealthyThreshold", defaults.unhealthy_threshold
        ),
    )


def task_in(v: Any, field: str = "taskConfig") -> TaskConfig:
    need(v, field, t.TaskConfig)
    command = tuple(
        text(a, f"{field}.command[{i}]", empty=i > 0)
        for i, a in enumerate(listed(v.command, f"{field}.command", 256))
    )
    working_dir = None if v.workingDir is None else text(v.workingDir, f"{field}.workingDir")
    return TaskConfig(
        command=command,
        shell=bool(need(v.shell, f"{field}.shell", bool)) if v.shell is not None else False,
        environment=_pairs(v.environment, f"{field}.environment"),
        working_dir=working_dir,
        health_check=health_check_in(v.healthCheck, f"{field}.healthCheck"),
        labels=_pairs(v.labels, f"{field}.labels"),
        stop_grace_ms=5000
        if v.stopGraceMs is None
        else integer(v.stopGraceMs, f"{field}.stopGraceMs"),
    )


def health_check_out(check: HealthCheck | None) -> Any:
    if check is None:
        return None
    return t.HealthCheck(
        kind=_CHECK_ID[check.kind],
        path=check.path,
        command=list(check.command),
        intervalMs=check.interval_ms,
        timeoutMs=check.timeout_ms,
        initialDelayMs=check.initial_delay_ms,
        healthyThreshold=check.healthy_threshold,
        unhealthyThreshold=check.unhealthy_threshold,
    )


def task_out(config: TaskConfig) -> Any:
    return t.TaskConfig(
        command=list(config.command),
        shell=config.shell,
        environment=dict(config.environment),
        workingDir=config.working_dir,
        healthCheck=health_check_out(config.health_check),
        labels=dict(config.labels),
        stopGraceMs=config.stop_grace_ms,
    )


def groups_out(groups: Iterable[ConfigGroup]) -> list[Any]:
    return [
        t.ConfigGroup(config=task_out(g.config), instances=ranges_out(g.ranges)) for g in groups
    ]


# -- settings and requests ------------------------------------------------------------------


def settings_in(v: Any, field: str = "settings") -> Settings:
    if v is None:
        return Settings()
    need(v, field, t.JobUpdateSettings)
    d = Settings()
    strategy = d.strategy
    if v.strategy is not None:
        need(v.strategy, f"{field}.strategy", t.UpdateStrategy)
        sizes = tuple(
            integer(s, f"{field}.strategy.sizes[{i}]", 1)
            for i, s in enumerate(listed(v.strategy.sizes, f"{field}.strategy.sizes", 1000))
        )
        strategy = Strategy(enum_id(v.strategy.kind, _STRATEGY, f"{field}.strategy.kind"), sizes)

    def opt_int(value: Any, name: str, default: int) -> int:
        return default if value is None else integer(value, f"{field}.{name}")

    def opt_bool(value: Any, name: str, default: bool) -> bool:
        return default if value is None else bool(need(value, f"{field}.{name}", bool))

    scope = d.update_only_these_instances
    if v.updateOnlyTheseInstances is not None:
        scope = ranges_in(v.updateOnlyTheseInstances, f"{field}.updateOnlyTheseInstances")
    resume = d.heartbeat_resume
    if v.heartbeatResume is not None:
        resume = enum_id(v.heartbeatResume, _RESUME, f"{field}.heartbeatResume")
    monitors = d.heartbeat_monitors
    if v.heartbeatMonitors is not None:
        names = listed(v.heartbeatMonitors, f"{field}.heartbeatMonitors", MAX_MONITORS)
        monitors = tuple(
            text(n, f"{field}.heartbeatMonitors[{i}]", MAX_MONITOR_NAME)
            for i, n in enumerate(names)
        )
    on_blocked = d.on_blocked
    if v.onBlocked is not None:
        on_blocked = enum_id(v.onBlocked, _ON_BLOCKED, f"{field}.onBlocked")
    return Settings(
        strategy=strategy,
        auto_pause_after_batch=opt_bool(
            v.autoPauseAfterBatch, "autoPauseAfterBatch", d.auto_pause_after_batch
        ),
        max_per_instance_failures=opt_int(
            v.maxPerInstanceFailures, "maxPerInstanceFailures", d.max_per_instance_failures
        ),
        max_failed_instances=opt_int(
            v.maxFailedInstances, "maxFailedInstances", d.max_failed_instances
        ),
        min_wait_in_instance_running_ms=opt_int(
            v.minWaitInInstanceRunningMs,
            "minWaitInInstanceRunningMs",
            d.min_wait_in_instance_running_ms,
        ),
        rollback_on_failure=opt_bool(
            v.rollbackOnFailure, "rollbackOnFailure", d.rollback_on_failure
        ),
        update_only_these_instances=scope,
        heartbeat_timeout_ms=opt_int(
            v.heartbeatTimeoutMs, "heartbeatTimeoutMs", d.heartbeat_timeout_ms
        ),
        heartbeat_resume=resume,
        heartbeat_quorum=opt_int(v.heartbeatQuorum, "heartbeatQuorum", d.heartbeat_quorum),
        heartbeat_monitors=monitors,
        heartbeat_ack_batches=opt_bool(
            v.heartbeatAckBatches, "heartbeatAckBatches", d.heartbeat_ack_batches
        ),
        max_blocked_ms=opt_int(v.maxBlockedMs, "maxBlockedMs", d.max_blocked_ms),
        on_blocked=on_blocked,
    )


def settings_out(s: Settings) -> Any:
    return t.JobUpdateSettings(
        strategy=t.UpdateStrategy(kind=_STRATEGY_ID[s.strategy.kind], sizes=list(s.strategy.sizes)),
        autoPauseAfterBatch=s.auto_pause_after_batch,
        maxPerInstanceFailures=s.max_per_instance_failures,
        maxFailedInstances=s.max_failed_instances,
        minWaitInInstanceRunningMs=s.min_wait_in_instance_running_ms,
        rollbackOnFailure=s.rollback_on_failure,
        updateOnlyTheseInstances=ranges_out(s.update_only_these_instances),
        heartbeatTimeoutMs=s.heartbeat_timeout_ms,
        heartbeatResume=_RESUME_ID[s.heartbeat_resume],
        heartbeatQuorum=s.heartbeat_quorum,
        heartbeatMonitors=list(s.heartbeat_monitors),
        heartbeatAckBatches=s.heartbeat_ack_batches,
        maxBlockedMs=s.max_blocked_ms,
        onBlocked=_ON_BLOCKED_ID[s.on_blocked],
    )


def metadata_in(v: Any, field: str = "request.metadata") -> tuple[tuple[str, str], ...]:
    if v is None:
        return ()
    out = []
    for i, m in enumerate(listed(v, field, 64)):
        need(m, f"{field}[{i}]", t.Metadata)
        out.append(
            (
                text(m.key, f"{field}[{i}].key", 256),
                text(m.value, f"{field}[{i}].value", 1024, empty=True),
            )
        )
    return tuple(out)


def metadata_out(pairs: Iterable[tuple[str, str]]) -> list[Any]:
    return [t.Metadata(key=k, value=v) for k, v in pairs]


def request_in(v: Any, field: str = "request") -> UpdateRequest:
    need(v, field, t.JobUpdateRequest)
    return UpdateRequest(
        job=job_key_in(v.job, f"{field}.job"),
        config=task_in(v.taskConfig, f"{field}.taskConfig"),
        instance_count=integer(v.instanceCount, f"{field}.instanceCount"),
        settings=settings_in(v.settings, f"{field}.settings"),
        metadata=metadata_in(v.metadata, f"{field}.metadata"),
    )


def request_out(r: UpdateRequest) -> Any:
    return t.JobUpdateRequest(
        job=job_key_out(r.job),
        taskConfig=task_out(r.config),
        instanceCount=r.instance_count,
        settings=settings_out(r.settings),
        metadata=metadata_out(r.metadata),
    )


def job_config_in(v: Any, field: str = "config") -> Job:
    need(v, field, t.JobConfiguration)
    key = job_key_in(v.key, f"{field}.key")
    config = task_in(v.taskConfig, f"{field}.taskConfig")
    return Job.uniform(key, config, integer(v.instanceCount, f"{field}.instanceCount"))


def job_out(job: Job) -> Any:
    uniform = job.groups[0].config if len(job.groups) == 1 else None
    return t.JobConfiguration(
        key=job_key_out(job.key),
        taskConfig=None if uniform is None else task_out(uniform),
        instanceCount=job.instance_count,
        groups=groups_out(job.groups),
    )


# -- updates out ------------------------------------------------------------------------------


def status_event_out(e: StatusEvent) -> Any:
    return t.JobUpdateEvent(
        status=e.status.value,
        timestampMs=e.timestamp_ms,
        user=e.user,
        message=e.message,
        cause=e.cause.value,
    )


def instance_event_out(e: InstanceEvent) -> Any:
    return t.JobInstanceUpdateEvent(
        instanceId=e.instance_id,
        timestampMs=e.timestamp_ms,
        action=e.action.value,
        message=e.message,
    )


def summary_out(s: UpdateSummary) -> Any:
    return t.JobUpdateSummary(
        key=update_key_out(s.key),
        user=s.user,
        status=s.status.value,
        createdTimestampMs=s.created_ms,
        lastModifiedTimestampMs=s.last_modified_ms,
        metadata=metadata_out(s.metadata),
    )


def details_out(
    record: UpdateRecord,
    heartbeat_age_ms: int | None,
    counts: Counts | None,
    backward: bool,
    gate: GateState | None = None,
) -> Any:
    d = record.definition
    desired = t.ConfigGroup(config=task_out(d.config), instances=ranges_out(d.desired))
    progress = None
    if counts is not None:
        progress = t.UpdateProgress(
            total=counts.total,
            done=counts.done,
            inFlight=counts.in_flight,
            failed=counts.failed,
            rollingBack=backward,
        )
    return t.JobUpdateDetails(
        summary=summary_out(UpdateSummary.of(record)),
        instructions=t.JobUpdateInstructions(
            initialState=groups_out(d.initial),
            desiredState=desired,
            settings=settings_out(d.settings),
            instanceCount=d.instance_count,
        ),
        updateEvents=[status_event_out(e) for e in record.status_events],
        instanceEvents=[instance_event_out(e) for e in record.instance_events],
        heartbeatAgeMs=heartbeat_age_ms,
        progress=progress,
        heartbeatTimeoutMs=d.settings.heartbeat_timeout_ms,
        gate=None if gate is None else convert_gate.gate_out(gate),
    )


def query_in(v: Any, field: str = "query") -> UpdateQuery:
    if v is None:
        return UpdateQuery()
    need(v, field, t.JobUpdateQuery)
    statuses: frozenset[UpdateStatus] = frozenset()
    if v.updateStatuses is not None:
        table = {s.value: s for s in UpdateStatus}
        statuses = frozenset(
            enum_id(s, table, f"{field}.updateStatuses")
            for s in listed(v.updateStatuses, f"{field}.updateStatuses", 32)
        )
    return UpdateQuery(
        role=None if v.role is None else text(v.role, f"{field}.role", 64),
        job=None if v.jobKey is None else job_key_in(v.jobKey, f"{field}.jobKey"),
        key=None if v.key is None else update_key_in(v.key, f"{field}.key"),
        user=None if v.user is None else text(v.user, f"{field}.user", 256),
        statuses=statuses,
        offset=0 if v.offset is None else integer(v.offset, f"{field}.offset"),
        limit=0 if v.limit is None else integer(v.limit, f"{field}.limit", 0, 100_000),
    )


def diff_out(diff: JobDiff, config: TaskConfig, current: Mapping[int, TaskConfig]) -> Any:
    def old_groups(ranges: tuple[Range, ...]) -> list[Any]:
        from updater.job import group_configs
        from updater.ranges import to_ids

        return groups_out(group_configs({i: current[i] for i in to_ids(ranges)}))

    def new_group(ranges: tuple[Range, ...]) -> list[Any]:
        return (
            [t.ConfigGroup(config=task_out(config), instances=ranges_out(ranges))] if ranges else []
        )

    return t.JobUpdateDiff(
        add=new_group(diff.added),
        remove=old_groups(diff.removed),
        update=old_groups(diff.changed),
        unchanged=old_groups(diff.unchanged),
    )


def instance_out(seen: ObservedInstance, desired: TaskConfig | None) -> Any:
    return t.InstanceStatus(
        instanceId=seen.instance_id,
        state=_STATE_ID[seen.state],
        atDesiredConfig=desired is not None and seen.config == desired,
        healthySinceMs=seen.healthy_since_ms,
        failures=seen.failures,
        message=seen.message,
    )
