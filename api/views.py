"""What the client returns: domain objects rebuilt from the server's Thrift answers, plus a few
API-only views (details with progress and heartbeat age, instance status, scheduler info)."""

from __future__ import annotations

from typing import Any

import attrs

from api import convert_gate
from updater.driver import InstanceState
from updater.engine import Counts
from updater.events import Cause, InstanceAction, InstanceEvent, StatusEvent
from updater.gate import GateState
from updater.job import ConfigGroup, Job
from updater.keys import JobKey, UpdateKey
from updater.pulse import HeartbeatAnswer
from updater.ranges import Range
from updater.record import UpdateDefinition, UpdateRecord
from updater.settings import HeartbeatResume, OnBlocked, Settings, Strategy, StrategyKind
from updater.status import UpdateStatus
from updater.storage import UpdateSummary
from updater.task import HealthCheck, HealthCheckKind, TaskConfig

_STATES = {0: "ABSENT", 1: "STARTING", 2: "RUNNING", 3: "HEALTHY", 4: "EXITED", 5: "KILLING"}


@attrs.frozen
class SchedulerInfo:
    id: str
    version: str
    role: str
    leader_id: str | None
    leader_address: str | None
    serving: bool
    http_address: str | None = None
    leader_http_address: str | None = None
    instance_log_dir: str | None = None

    def update_url(self, key: UpdateKey) -> str | None:
        """The web UI's page of an update, on the leader's HTTP port (else this node's)."""
        http = self.leader_http_address or self.http_address
        if http is None:
            return None
        job = key.job
        return f"http://{http}/updates/{job.role}/{job.environment}/{job.name}/{key.id}"

    def instance_log(self, job: JobKey, instance_id: int) -> str | None:
        """Where the local driver writes an instance's output (on the scheduler's host)."""
        if self.instance_log_dir is None:
            return None
        return f"{self.instance_log_dir}/{job.role}/{job.environment}/{job.name}/{instance_id}.log"


@attrs.frozen
class HeartbeatResult:
    answer: HeartbeatAnswer
    status: UpdateStatus
    batch: int | None = None  # the batch to verify (rule 13), numbered from 1
    batch_instances: tuple[int, ...] = ()
    gate: GateState | None = None  # sent when the heartbeat named its details


@attrs.frozen
class UpdateDetails:
    record: UpdateRecord
    summary: UpdateSummary
    progress: Counts | None
    rolling_back: bool
    heartbeat_age_ms: int | None
    heartbeat_timeout_ms: int
    gate: GateState | None = None  # for an active coordinated update the leader runs

    @property
    def status(self) -> UpdateStatus:
        return self.record.status


@attrs.frozen
class InstanceStatus:
    instance_id: int
    state: InstanceState
    at_desired_config: bool
    healthy_since_ms: int | None
    failures: int
    message: str


@attrs.frozen
class DiffView:
    add: tuple[ConfigGroup, ...]
    remove: tuple[ConfigGroup, ...]
    update: tuple[ConfigGroup, ...]
    unchanged: tuple[ConfigGroup, ...]

    @property
    def is_noop(self) -> bool:
        return not (self.add or self.remove or self.update)


def job_key(v: Any) -> JobKey:
    return JobKey(v.role, v.environment, v.name)


def update_key(v: Any) -> UpdateKey:
    return UpdateKey(job_key(v.job), v.id)


def ranges(v: Any) -> tuple[Range, ...]:
    return tuple(Range(r.first, r.last) for r in v or ())


def task(v: Any) -> TaskConfig:
    check = None
    if v.healthCheck is not None:
        h = v.healthCheck
        check = HealthCheck(
            kind={1: HealthCheckKind.HTTP, 2: HealthCheckKind.TCP, 3: HealthCheckKind.COMMAND}[
                h.kind
            ],
            path=h.path,
            command=tuple(h.command or ()),
            interval_ms=h.intervalMs,
            timeout_ms=h.timeoutMs,
            initial_delay_ms=h.initialDelayMs,
            healthy_threshold=h.healthyThreshold,
            unhealthy_threshold=h.unhealthyThreshold,
        )
    return TaskConfig(
        command=tuple(v.command),
        shell=bool(v.shell),
        environment=tuple(sorted((v.environment or {}).items())),
        working_dir=v.workingDir,
        health_check=check,
        labels=tuple(sorted((v.labels or {}).items())),
        stop_grace_ms=v.stopGraceMs if v.stopGraceMs is not None else 5000,
    )


def groups(v: Any) -> tuple[ConfigGroup, ...]:
    return tuple(ConfigGroup(task(g.config), ranges(g.instances)) for g in v or ())


def settings(v: Any) -> Settings:
    kinds = {1: StrategyKind.QUEUE, 2: StrategyKind.BATCH, 3: StrategyKind.VARIABLE_BATCH}
    return Settings(
        strategy=Strategy(kinds[v.strategy.kind], tuple(v.strategy.sizes)),
        auto_pause_after_batch=v.autoPauseAfterBatch,
        max_per_instance_failures=v.maxPerInstanceFailures,
        max_failed_instances=v.maxFailedInstances,
        min_wait_in_instance_running_ms=v.minWaitInInstanceRunningMs,
        rollback_on_failure=v.rollbackOnFailure,
        update_only_these_instances=ranges(v.updateOnlyTheseInstances),
        heartbeat_timeout_ms=v.heartbeatTimeoutMs,
        heartbeat_resume={1: HeartbeatResume.AUTO, 2: HeartbeatResume.OPERATOR}[v.heartbeatResume],
        heartbeat_quorum=v.heartbeatQuorum or 1,
        heartbeat_monitors=tuple(v.heartbeatMonitors or ()),
        heartbeat_ack_batches=bool(v.heartbeatAckBatches),
        max_blocked_ms=v.maxBlockedMs or 0,
        on_blocked=OnBlocked[{2: "ABORT", 3: "ROLL_BACK"}.get(v.onBlocked or 1, "PAUSE")],
    )


def metadata(v: Any) -> tuple[tuple[str, str], ...]:
    return tuple((m.key, m.value) for m in v or ())


def summary(v: Any) -> UpdateSummary:
    return UpdateSummary(
        update_key(v.key),
        v.user,
        UpdateStatus(v.status),
        v.createdTimestampMs,
        v.lastModifiedTimestampMs,
        metadata(v.metadata),
    )


def details(v: Any) -> UpdateDetails:
    s = summary(v.summary)
    i = v.instructions
    desired = i.desiredState
    definition = UpdateDefinition(
        key=s.key,
        user=s.user,
        created_ms=s.created_ms,
        settings=settings(i.settings),
        config=task(desired.config),
        instance_count=i.instanceCount,
        initial=groups(i.initialState),
        desired=ranges(desired.instances),
        metadata=s.metadata,
    )
    record = UpdateRecord(
        definition,
        tuple(
            StatusEvent(
                UpdateStatus(e.status),
                e.timestampMs,
                e.user,
                e.message,
                Cause(e.cause) if e.cause else Cause.OPERATOR,
            )
            for e in v.updateEvents
        ),
        tuple(
            InstanceEvent(e.instanceId, e.timestampMs, InstanceAction(e.action), e.message)
            for e in v.instanceEvents
        ),
    )
    p = v.progress
    counts = None if p is None else Counts(p.total, p.done, p.inFlight, p.failed)
    return UpdateDetails(
        record,
        s,
        counts,
        bool(p.rollingBack) if p is not None else False,
        v.heartbeatAgeMs,
        v.heartbeatTimeoutMs or 0,
        convert_gate.gate_in(getattr(v, "gate", None)),
    )


def job(v: Any) -> Job:
    return Job(job_key(v.key), groups(v.groups))


def instance(v: Any) -> InstanceStatus:
    return InstanceStatus(
        v.instanceId,
        InstanceState[_STATES[v.state]],
        bool(v.atDesiredConfig),
        v.healthySinceMs,
        v.failures,
        v.message,
    )


def diff(v: Any) -> DiffView:
    return DiffView(groups(v.add), groups(v.remove), groups(v.update), groups(v.unchanged))


def info(v: Any) -> SchedulerInfo:
    return SchedulerInfo(
        v.id,
        v.version,
        v.role,
        v.leaderId,
        v.leaderAddress,
        bool(v.serving),
        v.httpAddress,
        v.leaderHttpAddress,
        v.instanceLogDir,
    )


def heartbeat(v: Any) -> HeartbeatResult:
    return HeartbeatResult(
        HeartbeatAnswer(v.status),
        UpdateStatus(v.updateStatus),
        v.batch,
        tuple(v.batchInstances or ()),
        convert_gate.gate_in(v.gate),
    )
