"""Job files: a job's instances, task and update settings in TOML. Every broken rule, whether
the schema's or the domain's, is reported with its dotted key and line before anything is sent
to a scheduler, so a bad file never writes anything."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from scheduler.codec import health_check_from_json
from scheduler.tomlfile import Field, TomlError, check_table, dotted, load_toml, locate
from updater.errors import InvalidRequest
from updater.keys import JobKey
from updater.ranges import parse_ranges
from updater.settings import HeartbeatResume, OnBlocked, Settings, Strategy, validate_settings
from updater.task import HealthCheck, TaskConfig, validate_task

MAX_INSTANCES = 100_000
MAX_METADATA = 63  # the server allows 64; the client adds its request id
RESERVED_PREFIX = "pulsegate."

_HC = attrs.fields(HealthCheck)
_SET = attrs.fields(Settings)
_DEFAULT = Settings()

JOB = {
    "role": Field(str, None, doc="job role; with environment and name, names the job"),
    "environment": Field(str, None, doc="job environment"),
    "name": Field(str, None, doc="job name"),
    "instances": Field(int, min=0, max=MAX_INSTANCES, doc="how many instances"),
}
HEALTH_CHECK = {
    "kind": Field(str, choices=("http", "tcp", "command"), doc="how health is checked"),
    "path": Field(str, _HC.path.default, doc="http: the path to GET"),
    "command": Field(list, [], items=str, doc="command: argv that must exit 0"),
    "interval_ms": Field(int, _HC.interval_ms.default),
    "timeout_ms": Field(int, _HC.timeout_ms.default),
    "initial_delay_ms": Field(int, _HC.initial_delay_ms.default),
    "healthy_threshold": Field(int, _HC.healthy_threshold.default),
    "unhealthy_threshold": Field(int, _HC.unhealthy_threshold.default),
}
TASK = {
    "command": Field(object, doc="an argv array, or a string run by /bin/sh -c"),
    "environment": Field(dict, {}, doc="environment variables (strings)"),
    "working_dir": Field(str, None),
    "labels": Field(dict, {}, doc="labels (strings), e.g. sim.* behaviour"),
    "stop_grace_ms": Field(int, attrs.fields(TaskConfig).stop_grace_ms.default),
    "health_check": Field(dict, None, doc="a table; see HEALTH_CHECK"),
}
UPDATE = {
    "strategy": Field(str, "queue", choices=("queue", "batch", "variable_batch")),
    "size": Field(int, None, doc="queue/batch size (default 1)"),
    "sizes": Field(list, None, items=int, doc="variable_batch sizes"),
    "auto_pause_after_batch": Field(bool, _DEFAULT.auto_pause_after_batch),
    "max_per_instance_failures": Field(int, _DEFAULT.max_per_instance_failures),
    "max_failed_instances": Field(int, _DEFAULT.max_failed_instances),
    "min_wait_ms": Field(int, _DEFAULT.min_wait_in_instance_running_ms),
    "rollback_on_failure": Field(bool, _DEFAULT.rollback_on_failure),
    "instances": Field(str, "", doc="canary: only these instance ids, e.g. 0-4,7"),
    "heartbeat_timeout_ms": Field(int, _DEFAULT.heartbeat_timeout_ms),
    "heartbeat_resume": Field(str, "auto", choices=("auto", "operator")),
    "heartbeat_quorum": Field(int, _DEFAULT.heartbeat_quorum, doc="distinct fresh monitors"),
    "heartbeat_monitors": Field(list, [], items=str, doc="monitor names that count; [] = any"),
    "heartbeat_ack_batches": Field(bool, _DEFAULT.heartbeat_ack_batches),
    "max_blocked_ms": Field(int, _DEFAULT.max_blocked_ms, doc="act after blocked this long"),
    "on_blocked": Field(str, "pause", choices=("pause", "abort", "roll_back")),
    "metadata": Field(dict, {}, doc="strings stored with the update, e.g. a link"),
}
SCHEMA = {"job": JOB, "task": TASK, "update": UPDATE}

# The one map from the API's (and the domain checks') field names to job-file keys, so that an
# error names what the user wrote. Task fields map by case alone (workingDir → working_dir).
_FILE_KEYS = {
    "settings.strategy": "update.strategy",
    "settings.strategy.kind": "update.strategy",
    "settings.autoPauseAfterBatch": "update.auto_pause_after_batch",
    "settings.maxPerInstanceFailures": "update.max_per_instance_failures",
    "settings.maxFailedInstances": "update.max_failed_instances",
    "settings.minWaitInInstanceRunningMs": "update.min_wait_ms",
    "settings.rollbackOnFailure": "update.rollback_on_failure",
    "settings.heartbeatTimeoutMs": "update.heartbeat_timeout_ms",
    "settings.heartbeatResume": "update.heartbeat_resume",
    "settings.updateOnlyTheseInstances": "update.instances",
    "instanceCount": "job.instances",
    "config.key": "job",  # createJob's "already exists"
    "metadata": "update.metadata",
    "settings.heartbeatQuorum": "update.heartbeat_quorum",
    "settings.heartbeatMonitors": "update.heartbeat_monitors",
    "settings.heartbeatAckBatches": "update.heartbeat_ack_batches",
    "settings.maxBlockedMs": "update.max_blocked_ms",
    "settings.onBlocked": "update.on_blocked",
}
_WIRE_PREFIXES = ("request.", "config.")
PORT_VARIABLE = "PORT"


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def file_key(field: str, strategy: str = "") -> str | None:
    """The job-file key an API or domain field stands for (`request.settings.heartbeatTimeoutMs`
    → `update.heartbeat_timeout_ms`), or None if the field is not from a job file."""
    if field in _FILE_KEYS:
        return _FILE_KEYS[field]
    for prefix in _WIRE_PREFIXES:
        field = field.removeprefix(prefix)
    for table in ("taskConfig.environment", "taskConfig.labels", "task.environment", "task.labels"):
        if field.startswith(table + "."):
            return dotted("task." + table.split(".")[1], field[len(table) + 1 :])
    sizes = "settings.strategy.sizes"
    if field.startswith(sizes):
        return (
            "update.size"
            if strategy not in ("", "variable_batch")
            else "update.sizes" + field[len(sizes) :]
        )
    head = re.split(r"[.\[]", field, maxsplit=1)[0]
    if field in _FILE_KEYS:
        return _FILE_KEYS[field]
    if head == "metadata":
        return _FILE_KEYS[head]
    if head == "job":
        return field
    if head in ("taskConfig", "task"):
        rest = field[len(head) :]
        return "task" + re.sub(r"[A-Za-z]+", lambda m: _snake(m.group(0)), rest)
    if head == "settings":
        return "update" + _snake(field[len(head) :])
    return None


@attrs.frozen
class JobFile:
    job: JobKey | None
    instances: int
    task: TaskConfig
    settings: Settings
    metadata: tuple[tuple[str, str], ...] = ()


class _Source:
    """The file being read, so that errors can name its key and line."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text

    def line(self, key: str) -> int | None:
        """The key's line, else its closest enclosing table's (a missing key has no line)."""
        while key:
            found = locate(self.text, key)
            if found is not None:
                return found
            key = key[: max(key.rfind("."), key.rfind("["), 0)]
        return None

    def error(self, key: str, rule: str, hint: str = "") -> TomlError:
        return TomlError(self.path, key, self.line(key), rule, hint)


def _strings(src: _Source, table: Mapping[str, Any], name: str) -> tuple[tuple[str, str], ...]:
    for key, value in table.items():
        if not isinstance(value, str):
            raise src.error(dotted(name, key), "must be a string", f"got {value!r}"[:70])
    return tuple(sorted(table.items()))


def _command(src: _Source, value: object) -> tuple[tuple[str, ...], bool]:
    if isinstance(value, str):
        return (value,), True
    if not isinstance(value, list):
        raise src.error("task.command", "must be an array of strings (argv) or a string (shell)")
    for i, arg in enumerate(value):
        if not isinstance(arg, str):
            raise src.error(dotted("task.command", i), "must be a string", f"got {arg!r}"[:70])
    return tuple(value), False


def _health_check(src: _Source, table: dict[str, Any] | None) -> HealthCheck | None:
    if table is None:
        return None
    hc = check_table(table, HEALTH_CHECK, src.path, src.text, "task.health_check")
    return health_check_from_json(hc)  # the file's keys are the stored form's


def _strategy(src: _Source, update: dict[str, Any]) -> Strategy:
    kind, size, sizes = update["strategy"], update["size"], update["sizes"]
    if kind == "variable_batch":
        if size is not None:
            raise src.error("update.size", "not used by variable_batch", "use sizes = [...]")
        if sizes is None:
            raise src.error("update.sizes", "missing required key for variable_batch")
        return Strategy.variable_batch(sizes)
    if sizes is not None:
        raise src.error("update.sizes", f"only for variable_batch, not {kind}", "use size = N")
    size = 1 if size is None else size
    return Strategy.queue(size) if kind == "queue" else Strategy.batch(size)


def _settings(src: _Source, update: dict[str, Any]) -> Settings:
    return Settings(
        strategy=_strategy(src, update),
        auto_pause_after_batch=update["auto_pause_after_batch"],
        max_per_instance_failures=update["max_per_instance_failures"],
        max_failed_instances=update["max_failed_instances"],
        min_wait_in_instance_running_ms=update["min_wait_ms"],
        rollback_on_failure=update["rollback_on_failure"],
        update_only_these_instances=parse_ranges(update["instances"], "update.instances"),
        heartbeat_timeout_ms=update["heartbeat_timeout_ms"],
        heartbeat_resume=HeartbeatResume(update["heartbeat_resume"].upper()),
        heartbeat_quorum=update["heartbeat_quorum"],
        heartbeat_monitors=tuple(update["heartbeat_monitors"]),
        heartbeat_ack_batches=update["heartbeat_ack_batches"],
        max_blocked_ms=update["max_blocked_ms"],
        on_blocked=OnBlocked(update["on_blocked"].upper()),
    )


def _metadata(src: _Source, table: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    pairs = _strings(src, table, "update.metadata")
    if len(pairs) > MAX_METADATA:
        raise src.error("update.metadata", f"must have at most {MAX_METADATA} entries")
    for key, value in pairs:
        name = dotted("update.metadata", key)
        if not key or len(key) > 256:
            raise src.error(name, "keys must be 1-256 characters")
        if key.startswith(RESERVED_PREFIX):
            raise src.error(name, f"keys starting with {RESERVED_PREFIX!r} are reserved")
        if len(value) > 1024:
            raise src.error(name, "must be at most 1024 characters")
    return pairs


def _toml_key(field: str, strategy: str) -> str:
    """The TOML key a domain validation error's field stands for."""
    return file_key(field, strategy) or field


def _job_key(src: _Source, job: dict[str, Any]) -> JobKey | None:
    parts = [job["role"], job["environment"], job["name"]]
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise src.error("job", "role, environment and name go together: give all three or none")
    return JobKey.checked(*parts)


def load_job_file(path: Path) -> JobFile:
    """Read and check a job file. Raises TomlError naming the file, key, line and rule."""
    data, text = load_toml(path)
    src = _Source(str(path), text)
    checked = check_table(data, SCHEMA, src.path, text)
    task, update = checked["task"], checked["update"]
    try:
        job = _job_key(src, checked["job"])
        command, shell = _command(src, task["command"])
        config = TaskConfig(
            command=command,
            shell=shell,
            environment=_strings(src, task["environment"], "task.environment"),
            working_dir=task["working_dir"],
            health_check=_health_check(src, task["health_check"]),
            labels=_strings(src, task["labels"], "task.labels"),
            stop_grace_ms=task["stop_grace_ms"],
        )
        validate_task(config, "task")
        if any(name == PORT_VARIABLE for name, _ in config.environment):
            raise src.error(
                dotted("task.environment", PORT_VARIABLE),
                "is set for each instance by the local driver (a free port); it cannot be set here",
                "remove it; the service reads $PORT, or put {port} in task.command",
            )
        settings = _settings(src, update)
        validate_settings(settings, "settings")
    except InvalidRequest as e:
        raise src.error(_toml_key(e.field, update["strategy"]), e.rule) from None
    metadata = _metadata(src, update["metadata"])
    return JobFile(job, checked["job"]["instances"], config, settings, metadata)


def job_file_key(jobfile: JobFile, job_arg: str | None) -> JobKey:
    """The job a command acts on: the JOB argument, the file's [job], or both if they agree.
    Raises InvalidRequest (field "JOB") when neither names a job or they differ."""
    if job_arg is None:
        if jobfile.job is None:
            raise InvalidRequest(
                "JOB", "no job given: pass role/env/name or set [job] role, environment and name"
            )
        return jobfile.job
    key = JobKey.parse(job_arg, "JOB")
    if jobfile.job is not None and jobfile.job != key:
        raise InvalidRequest("JOB", f"{key} does not match the job file's [job] {jobfile.job}")
    return key
