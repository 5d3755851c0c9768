"""What an instance runs: the task config and its health check. Frozen and hashable, so configs
compare by value and can key config groups."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from updater.errors import InvalidRequest

MAX_ARGS = 256
MAX_ARG_CHARS = 4096
MAX_ENV = 256


class HealthCheckKind(enum.Enum):
    HTTP = "http"
    TCP = "tcp"
    COMMAND = "command"


@attrs.frozen(cache_hash=True)
class HealthCheck:
    """How a driver decides an instance is healthy. `HTTP` expects a 2xx on `path` at the
    instance's port, `TCP` a connect, `COMMAND` an exit status of 0."""

    kind: HealthCheckKind
    path: str = "/health"
    command: tuple[str, ...] = ()
    interval_ms: int = 1000
    timeout_ms: int = 1000
    initial_delay_ms: int = 0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 3


@attrs.frozen(cache_hash=True)
class TaskConfig:
    """A task as every instance of one config group runs it. `command` is an argv, or with
    `shell` a single string for `/bin/sh -c`. `{port}` in arguments and `PORT` in the environment
    receive the instance's allocated port."""

    command: tuple[str, ...]
    shell: bool = False
    environment: tuple[tuple[str, str], ...] = ()
    working_dir: str | None = None
    health_check: HealthCheck | None = None
    labels: tuple[tuple[str, str], ...] = ()
    stop_grace_ms: int = 5000

    @classmethod
    def make(
        cls,
        command: tuple[str, ...] | list[str] | str,
        *,
        shell: bool | None = None,
        environment: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        **kwargs: object,
    ) -> TaskConfig:
        """A config from friendlier arguments: a string command means a shell command, and
        mappings become sorted pairs."""
        if isinstance(command, str):
            argv: tuple[str, ...] = (command,)
            shell = True if shell is None else shell
        else:
            argv = tuple(command)
        return cls(
            command=argv,
            shell=bool(shell),
            environment=tuple(sorted((environment or {}).items())),
            labels=tuple(sorted((labels or {}).items())),
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def env(self) -> dict[str, str]:
        return dict(self.environment)

    def label(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.labels:
            if key == name:
                return value
        return default


def _check_str(value: object, field: str, limit: int = MAX_ARG_CHARS, empty: bool = False) -> None:
    if not isinstance(value, str):
        raise InvalidRequest(field, "must be a string")
    if not value and not empty:
        raise InvalidRequest(field, "must not be empty")
    if len(value) > limit:
        raise InvalidRequest(field, f"must be at most {limit} characters")
    if "\x00" in value:
        raise InvalidRequest(field, "must not contain NUL characters")


def _check_ms(value: object, field: str, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRequest(field, f"must be an integer in {low}..{high}")


def validate_task(config: TaskConfig, field: str = "task") -> TaskConfig:
    """Check a config from untrusted input; the error names the field and the rule."""
    if not config.command:
        raise InvalidRequest(f"{field}.command", "must not be empty")
    if len(config.command) > MAX_ARGS:
        raise InvalidRequest(f"{field}.command", f"must have at most {MAX_ARGS} arguments")
    if config.shell and len(config.command) != 1:
        raise InvalidRequest(f"{field}.command", "a shell command must be a single string")
    for i, arg in enumerate(config.command):
        _check_str(arg, f"{field}.command[{i}]", empty=i > 0)
    if len(config.environment) > MAX_ENV:
        raise InvalidRequest(f"{field}.environment", f"must have at most {MAX_ENV} variables")
    for name, value in config.environment:
        _check_str(name, f"{field}.environment", 256)
        if "=" in name:
            raise InvalidRequest(f"{field}.environment.{name}", "name must not contain '='")
        _check_str(value, f"{field}.environment.{name}", empty=True)
    for name, value in config.labels:
        _check_str(name, f"{field}.labels", 256)
        _check_str(value, f"{field}.labels.{name}", empty=True)
    if config.working_dir is not None:
        _check_str(config.working_dir, f"{field}.working_dir")
    _check_ms(config.stop_grace_ms, f"{field}.stop_grace_ms", 0, 3_600_000)
    check = config.health_check
    if check is not None:
        hc = f"{field}.health_check"
        if check.kind is HealthCheckKind.HTTP:
            _check_str(check.path, f"{hc}.path", 1024)
            if not check.path.startswith("/"):
                raise InvalidRequest(f"{hc}.path", "must start with '/'")
        if check.kind is HealthCheckKind.COMMAND:
            if not check.command:
                raise InvalidRequest(f"{hc}.command", "must not be empty for a command check")
            for i, arg in enumerate(check.command):
                _check_str(arg, f"{hc}.command[{i}]", empty=i > 0)
        _check_ms(check.interval_ms, f"{hc}.interval_ms", 10, 3_600_000)
        _check_ms(check.timeout_ms, f"{hc}.timeout_ms", 10, 3_600_000)
        _check_ms(check.initial_delay_ms, f"{hc}.initial_delay_ms", 0, 3_600_000)
        _check_ms(check.healthy_threshold, f"{hc}.healthy_threshold", 1, 1000)
        _check_ms(check.unhealthy_threshold, f"{hc}.unhealthy_threshold", 1, 1000)
    return config
