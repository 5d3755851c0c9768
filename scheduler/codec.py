"""JSON encoding of the stored values. Every value carries `schema_version`; readers refuse a
newer major version rather than misread it. Field names are stable: they are the on-disk format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from updater.errors import PulsegateError
from updater.events import Cause, InstanceAction, InstanceEvent, StatusEvent
from updater.job import ConfigGroup
from updater.keys import JobKey, UpdateKey
from updater.ranges import Range
from updater.record import UpdateDefinition
from updater.settings import HeartbeatResume, OnBlocked, Settings, Strategy, StrategyKind
from updater.status import UpdateStatus
from updater.task import HealthCheck, HealthCheckKind, TaskConfig

SCHEMA_VERSION = 1


class CorruptValue(PulsegateError):
    """A stored value could not be decoded."""

    reason = "corrupt_value"


def dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(
        {"schema_version": SCHEMA_VERSION, **value}, separators=(",", ":"), sort_keys=True
    ).encode()


def loads(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptValue(f"{what}: not JSON ({e})") from None
    if not isinstance(value, dict):
        raise CorruptValue(f"{what}: not a JSON object")
    version = value.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise CorruptValue(f"{what}: unsupported schema_version {version!r}")
    return value


# -- task configs -------------------------------------------------------------------------------


def health_check_to_json(check: HealthCheck) -> dict[str, Any]:
    return {
        "kind": check.kind.value,
        "path": check.path,
        "command": list(check.command),
        "interval_ms": check.interval_ms,
        "timeout_ms": check.timeout_ms,
        "initial_delay_ms": check.initial_delay_ms,
        "healthy_threshold": check.healthy_threshold,
        "unhealthy_threshold": check.unhealthy_threshold,
    }


def health_check_from_json(v: dict[str, Any]) -> HealthCheck:
    return HealthCheck(
        kind=HealthCheckKind(v["kind"]),
        path=v["path"],
        command=tuple(v["command"]),
        interval_ms=v["interval_ms"],
        timeout_ms=v["timeout_ms"],
        initial_delay_ms=v["initial_delay_ms"],
        healthy_threshold=v["healthy_threshold"],
        unhealthy_threshold=v["unhealthy_threshold"],
    )


def task_to_json(config: TaskConfig) -> dict[str, Any]:
    return {
        "command": list(config.command),
        "shell": config.shell,
        "environment": [list(p) for p in config.environment],
        "working_dir": config.working_dir,
        "health_check": (
            None if config.health_check is None else health_check_to_json(config.health_check)
        ),
        "labels": [list(p) for p in config.labels],
        "stop_grace_ms": config.stop_grace_ms,
    }


def task_from_json(v: dict[str, Any]) -> TaskConfig:
    check = v.get("health_check")
    return TaskConfig(
        command=tuple(v["command"]),
        shell=v["shell"],
        environment=tuple((a, b) for a, b in v["environment"]),
        working_dir=v["working_dir"],
        health_check=None if check is None else health_check_from_json(check),
        labels=tuple((a, b) for a, b in v["labels"]),
        stop_grace_ms=v["stop_grace_ms"],
    )


def config_digest(config: TaskConfig) -> str:
    """A short stable fingerprint of a config, to tell whether a running process matches."""
    canonical = json.dumps(task_to_json(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def ranges_to_json(ranges: Iterable[Range]) -> list[list[int]]:
    return [[r.first, r.last] for r in ranges]


def ranges_from_json(v: list[list[int]]) -> tuple[Range, ...]:
    return tuple(Range(a, b) for a, b in v)


def groups_to_json(groups: Iterable[ConfigGroup]) -> list[dict[str, Any]]:
    return [{"config": task_to_json(g.config), "ranges": ranges_to_json(g.ranges)} for g in groups]


def groups_from_json(v: list[dict[str, Any]]) -> tuple[ConfigGroup, ...]:
    return tuple(ConfigGroup(task_from_json(g["config"]), ranges_from_json(g["ranges"])) for g in v)


# -- updates ------------------------------------------------------------------------------------


_DEFAULT_SETTINGS = Settings()


def settings_to_json(s: Settings) -> dict[str, Any]:
    return {
        "strategy": {"kind": s.strategy.kind.value, "sizes": list(s.strategy.sizes)},
        "auto_pause_after_batch": s.auto_pause_after_batch,
        "max_per_instance_failures": s.max_per_instance_failures,
        "max_failed_instances": s.max_failed_instances,
        "min_wait_in_instance_running_ms": s.min_wait_in_instance_running_ms,
        "rollback_on_failure": s.rollback_on_failure,
        "update_only_these_instances": ranges_to_json(s.update_only_these_instances),
        "heartbeat_timeout_ms": s.heartbeat_timeout_ms,
        "heartbeat_resume": s.heartbeat_resume.value,
        "heartbeat_quorum": s.heartbeat_quorum,
        "heartbeat_monitors": list(s.heartbeat_monitors),
        "heartbeat_ack_batches": s.heartbeat_ack_batches,
        "max_blocked_ms": s.max_blocked_ms,
        "on_blocked": s.on_blocked.value,
    }


def settings_from_json(v: dict[str, Any]) -> Settings:
    """Updates stored before the gates of rules 11-14 have none of their keys: the defaults."""
    d = _DEFAULT_SETTINGS
    return Settings(
        strategy=Strategy(StrategyKind(v["strategy"]["kind"]), tuple(v["strategy"]["sizes"])),
        auto_pause_after_batch=v["auto_pause_after_batch"],
        max_per_instance_failures=v["max_per_instance_failures"],
        max_failed_instances=v["max_failed_instances"],
        min_wait_in_instance_running_ms=v["min_wait_in_instance_running_ms"],
        rollback_on_failure=v["rollback_on_failure"],
        update_only_these_instances=ranges_from_json(v["update_only_these_instances"]),
        heartbeat_timeout_ms=v["heartbeat_timeout_ms"],
        heartbeat_resume=HeartbeatResume(v["heartbeat_resume"]),
        heartbeat_quorum=v.get("heartbeat_quorum", d.heartbeat_quorum),
        heartbeat_monitors=tuple(v.get("heartbeat_monitors", d.heartbeat_monitors)),
        heartbeat_ack_batches=v.get("heartbeat_ack_batches", d.heartbeat_ack_batches),
        max_blocked_ms=v.get("max_blocked_ms", d.max_blocked_ms),
        on_blocked=OnBlocked(v.get("on_blocked", d.on_blocked.value)),
    )


def job_key_to_json(key: JobKey) -> list[str]:
    return [key.role, key.environment, key.name]


def job_key_from_json(v: list[str]) -> JobKey:
    return JobKey(*v)


def definition_to_json(d: UpdateDefinition) -> dict[str, Any]:
    return {
        "job": job_key_to_json(d.key.job),
        "id": d.key.id,
        "user": d.user,
        "created_ms": d.created_ms,
        "settings": settings_to_json(d.settings),
        "config": task_to_json(d.config),
        "instance_count": d.instance_count,
        "initial": groups_to_json(d.initial),
        "desired": ranges_to_json(d.desired),
        "metadata": [list(p) for p in d.metadata],
    }


def definition_from_json(v: dict[str, Any]) -> UpdateDefinition:
    return UpdateDefinition(
        key=UpdateKey(job_key_from_json(v["job"]), v["id"]),
        user=v["user"],
        created_ms=v["created_ms"],
        settings=settings_from_json(v["settings"]),
        config=task_from_json(v["config"]),
        instance_count=v["instance_count"],
        initial=groups_from_json(v["initial"]),
        desired=ranges_from_json(v["desired"]),
        metadata=tuple((a, b) for a, b in v["metadata"]),
    )


def status_event_to_json(e: StatusEvent) -> dict[str, Any]:
    value = {
        "status": e.status.value,
        "timestamp_ms": e.timestamp_ms,
        "user": e.user,
        "message": e.message,
        "cause": e.cause.value,
    }
    if e.count != 1:  # coalesced lapses; absent in every other event (and in older records)
        value["count"] = e.count
    return value


def status_event_from_json(v: dict[str, Any]) -> StatusEvent:
    return StatusEvent(
        UpdateStatus(v["status"]),
        v["timestamp_ms"],
        v["user"],
        v["message"],
        Cause(v["cause"]),
        int(v.get("count", 1)),
    )


def instance_events_to_json(events: Iterable[InstanceEvent]) -> list[list[Any]]:
    """Compact rows: a chunk of 10,000 events stays well under a znode's limit."""
    return [[e.instance_id, e.timestamp_ms, e.action.value, e.message] for e in events]


def instance_events_from_json(rows: list[list[Any]]) -> list[InstanceEvent]:
    return [InstanceEvent(i, t, InstanceAction(a), m) for i, t, a, m in rows]


def decode(fn: Any, data: bytes, what: str) -> Any:
    """Decode with `fn`, turning any shape error into CorruptValue naming the value."""
    value = loads(data, what)
    try:
        return fn(value)
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptValue(f"{what}: {type(e).__name__}: {e}") from None
