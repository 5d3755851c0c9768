"""Validation names the field and the rule; ranges, keys and configs from untrusted input."""

import pytest

from updater.errors import InvalidRequest
from updater.keys import JobKey, UpdateKey
from updater.ranges import Range, format_ranges, merge, parse_ranges, to_ids, to_ranges
from updater.settings import HeartbeatResume, Settings, Strategy, validate_settings
from updater.task import HealthCheck, HealthCheckKind, TaskConfig, validate_task


@pytest.mark.parametrize(
    ("settings", "field", "rule"),
    [
        (Settings(strategy=Strategy.queue(0)), "settings.strategy.sizes[0]", ">= 1"),
        (Settings(strategy=Strategy.batch(-3)), "settings.strategy.sizes[0]", ">= 1"),
        (Settings(strategy=Strategy.variable_batch([2, 0])), "settings.strategy.sizes[1]", ">= 1"),
        (Settings(strategy=Strategy.variable_batch([])), "settings.strategy.sizes", "at least"),
        (Settings(strategy=Strategy.batch(10**9)), "settings.strategy.sizes[0]", "<="),
        (
            Settings(strategy=Strategy.queue(2), auto_pause_after_batch=True),
            "settings.autoPauseAfterBatch",
            "batch",
        ),
        (Settings(max_per_instance_failures=-1), "settings.maxPerInstanceFailures", ">= 0"),
        (Settings(max_failed_instances=-1), "settings.maxFailedInstances", ">= 0"),
        (Settings(min_wait_in_instance_running_ms=-5), "settings.minWaitInInstanceRunningMs", ">="),
        (Settings(heartbeat_timeout_ms=-1), "settings.heartbeatTimeoutMs", ">= 0"),
        (Settings(heartbeat_timeout_ms=10**12), "settings.heartbeatTimeoutMs", "<="),
        (Settings(max_failed_instances=True), "settings.maxFailedInstances", "integer"),  # type: ignore[arg-type]
        (
            Settings(update_only_these_instances=(Range(5, 2),)),
            "settings.updateOnlyTheseInstances",
            "invalid range",
        ),
        (
            Settings(heartbeat_resume="SOMETIMES"),  # type: ignore[arg-type]
            "settings.heartbeatResume",
            "AUTO or OPERATOR",
        ),
    ],
)
def test_bad_settings_name_the_field_and_rule(settings: Settings, field: str, rule: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        validate_settings(settings)
    assert raised.value.field == field
    assert rule in raised.value.rule


def test_defaults_follow_the_design() -> None:
    s = validate_settings(Settings())
    assert s.strategy == Strategy.queue(1)
    assert (s.max_per_instance_failures, s.max_failed_instances) == (0, 0)
    assert s.min_wait_in_instance_running_ms == 30_000
    assert s.rollback_on_failure is True
    assert s.heartbeat_timeout_ms == 0 and not s.is_coordinated
    assert s.heartbeat_resume is HeartbeatResume.AUTO


def test_variable_batch_last_size_repeats() -> None:
    strategy = Strategy.variable_batch([2, 3, 5])
    assert [strategy.batch_size(i) for i in range(6)] == [2, 3, 5, 5, 5, 5]


def test_ranges_roundtrip() -> None:
    ids = [0, 1, 2, 5, 7, 8, 9]
    ranges = to_ranges(ids)
    assert ranges == (Range(0, 2), Range(5, 5), Range(7, 9))
    assert to_ids(ranges) == ids
    assert format_ranges(ranges) == "0-2,5,7-9"
    assert parse_ranges("0-2, 5,7-9") == ranges
    assert merge([Range(3, 4), Range(0, 2), Range(4, 6)]) == (Range(0, 6),)
    assert to_ranges([]) == ()


@pytest.mark.parametrize(
    ("text", "rule"), [("3-1", "inverted"), ("-1", "not an instance"), ("x", "not")]
)
def test_bad_ranges(text: str, rule: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_ranges(text, "scope")
    assert raised.value.field == "scope" and rule in raised.value.rule


@pytest.mark.parametrize(
    ("parts", "field"),
    [
        (("", "prod", "web"), "job.role"),
        (("www", "../x", "web"), "job.environment"),
        (("www", "prod", "a" * 65), "job.name"),
        (("www", "prod", "we b"), "job.name"),
        (("www", "prod", None), "job.name"),
    ],
)
def test_bad_job_keys(parts: tuple, field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        JobKey.checked(*parts)
    assert raised.value.field == field


def test_keys_parse_and_print() -> None:
    key = UpdateKey.parse("www/prod/web/abc-123")
    assert key.job == JobKey("www", "prod", "web") and key.id == "abc-123"
    assert str(key) == "www/prod/web/abc-123"
    with pytest.raises(InvalidRequest):
        UpdateKey.parse("www/prod/web")
    with pytest.raises(InvalidRequest):
        UpdateKey.checked(key.job, "bad id!")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (TaskConfig(command=()), "task.command"),
        (TaskConfig(command=("",)), "task.command[0]"),
        (TaskConfig(command=("a", "b"), shell=True), "task.command"),
        (TaskConfig(command=("a\x00",)), "task.command[0]"),
        (TaskConfig(command=("a",), environment=(("A=B", "x"),)), "task.environment.A=B"),
        (TaskConfig(command=("a",), stop_grace_ms=-1), "task.stop_grace_ms"),
        (
            TaskConfig(command=("a",), health_check=HealthCheck(HealthCheckKind.HTTP, path="x")),
            "task.health_check.path",
        ),
        (
            TaskConfig(command=("a",), health_check=HealthCheck(HealthCheckKind.COMMAND)),
            "task.health_check.command",
        ),
        (
            TaskConfig(
                command=("a",), health_check=HealthCheck(HealthCheckKind.TCP, interval_ms=0)
            ),
            "task.health_check.interval_ms",
        ),
    ],
)
def test_bad_task_configs(config: TaskConfig, field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        validate_task(config)
    assert raised.value.field == field


def test_configs_compare_by_value() -> None:
    a = TaskConfig.make(["srv"], environment={"B": "2", "A": "1"})
    b = TaskConfig.make(["srv"], environment={"A": "1", "B": "2"})
    assert a == b and hash(a) == hash(b)
    assert TaskConfig.make("echo hi").shell is True
