"""Job files: a good file becomes the domain objects; every bad input is refused naming its
dotted key and line, and a bad file never reaches the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.cli import main
from api.jobfile import JobFile, job_file_key, load_job_file
from scheduler.service import Scheduler
from scheduler.tomlfile import TomlError
from updater.errors import InvalidRequest
from updater.keys import JobKey
from updater.ranges import Range
from updater.settings import HeartbeatResume, Settings, Strategy
from updater.task import HealthCheck, HealthCheckKind, TaskConfig

from cluster import api_address, client_for

GOOD = """\
[job]
role = "www"
environment = "prod"
name = "hello"
instances = 5

[task]
command = ["python3", "examples/service.py"]
environment = { VERSION = "2", A = "1" }
working_dir = "."
labels = { team = "web" }
stop_grace_ms = 2000

[task.health_check]
kind = "http"
path = "/health"
interval_ms = 500

[update]
strategy = "batch"
size = 2
max_failed_instances = 1
min_wait_ms = 100
rollback_on_failure = false
instances = "0-2,4"
heartbeat_timeout_ms = 30000
heartbeat_resume = "operator"

[update.metadata]
link = "https://ci.example.com/build/42"
"""

MINIMAL = """\
[job]
instances = 2

[task]
command = "echo hi && sleep 100"
"""


def write(tmp_path: Path, text: str, name: str = "web.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> TomlError:
    with pytest.raises(TomlError) as info:
        load_job_file(write(tmp_path, text))
    return info.value


def test_good_file(tmp_path: Path) -> None:
    jobfile = load_job_file(write(tmp_path, GOOD))
    assert jobfile == JobFile(
        job=JobKey("www", "prod", "hello"),
        instances=5,
        task=TaskConfig(
            command=("python3", "examples/service.py"),
            environment=(("A", "1"), ("VERSION", "2")),
            working_dir=".",
            labels=(("team", "web"),),
            stop_grace_ms=2000,
            health_check=HealthCheck(HealthCheckKind.HTTP, path="/health", interval_ms=500),
        ),
        settings=Settings(
            strategy=Strategy.batch(2),
            max_failed_instances=1,
            min_wait_in_instance_running_ms=100,
            rollback_on_failure=False,
            update_only_these_instances=(Range(0, 2), Range(4, 4)),
            heartbeat_timeout_ms=30_000,
            heartbeat_resume=HeartbeatResume.OPERATOR,
        ),
        metadata=(("link", "https://ci.example.com/build/42"),),
    )


def test_minimal_file_takes_the_defaults_and_a_string_is_a_shell_command(tmp_path: Path) -> None:
    jobfile = load_job_file(write(tmp_path, MINIMAL))
    assert jobfile.job is None
    assert jobfile.task == TaskConfig(command=("echo hi && sleep 100",), shell=True)
    assert jobfile.settings == Settings()
    assert jobfile.metadata == ()


def test_an_array_is_an_argv(tmp_path: Path) -> None:
    jobfile = load_job_file(write(tmp_path, MINIMAL.replace('"echo hi && sleep 100"', '["a", ""]')))
    assert jobfile.task.command == ("a", "")
    assert not jobfile.task.shell


@pytest.mark.parametrize(
    ("update", "strategy"),
    [
        ("", Strategy.queue(1)),
        ('strategy = "queue"\nsize = 3', Strategy.queue(3)),
        ('strategy = "batch"', Strategy.batch(1)),
        ('strategy = "batch"\nsize = 4\nauto_pause_after_batch = true', Strategy.batch(4)),
        ('strategy = "variable_batch"\nsizes = [1, 2, 5]', Strategy.variable_batch([1, 2, 5])),
    ],
)
def test_strategies(tmp_path: Path, update: str, strategy: Strategy) -> None:
    jobfile = load_job_file(write(tmp_path, f"{MINIMAL}\n[update]\n{update}\n"))
    assert jobfile.settings.strategy == strategy


@pytest.mark.parametrize(
    ("text", "ranges"),
    [("0", (Range(0, 0),)), ("3-4, 0-1,2", (Range(0, 4),)), ("1,5-6", (Range(1, 1), Range(5, 6)))],
)
def test_canary_ranges(tmp_path: Path, text: str, ranges: tuple[Range, ...]) -> None:
    jobfile = load_job_file(write(tmp_path, f'{MINIMAL}\n[update]\ninstances = "{text}"\n'))
    assert jobfile.settings.update_only_these_instances == ranges


# Each case: a replacement in GOOD (old → new), the key named and its line.
BAD = [
    # unknown keys, with a suggestion
    (
        "[task.health_check]\n",
        "[task.health_check]\nintervl_ms = 1\n",
        "task.health_check.intervl_ms",
        15,
    ),
    ("[job]\n", "[job]\nnmae = 'x'\n", "job.nmae", 2),
    ("stop_grace_ms", "stop_grace", "task.stop_grace", 12),
    ("min_wait_ms", "min_wait", "update.min_wait", 23),
    ("[update]", "[updates]", "updates", 19),
    # wrong types
    ("instances = 5", 'instances = "5"', "job.instances", 5),
    ('command = ["python3", "examples/service.py"]', "command = 5", "task.command", 8),
    ('"examples/service.py"]', "1]", "task.command[1]", 8),
    ('VERSION = "2"', "VERSION = 2", "task.environment.VERSION", 9),
    ('team = "web"', "team = true", "task.labels.team", 11),
    ("rollback_on_failure = false", 'rollback_on_failure = "no"', "update.rollback_on_failure", 24),
    ('link = "https', 'link = 3\nx = "https', "update.metadata.link", 30),
    ('instances = "0-2,4"', "instances = [0, 1]", "update.instances", 25),
    # missing fields
    ("instances = 5\n", "", "job.instances", 1),
    ('command = ["python3", "examples/service.py"]\n', "", "task.command", 7),
    ('kind = "http"\n', "", "task.health_check.kind", 14),
    ('strategy = "batch"\nsize = 2', 'strategy = "variable_batch"', "update.sizes", 19),
    # the schema's and the domain's rules
    ("instances = 5", "instances = -1", "job.instances", 5),
    ("instances = 5", "instances = 100001", "job.instances", 5),
    ('name = "hello"', 'name = "no spaces"', "job.name", 4),
    ('name = "hello"\n', "", "job", 1),
    ('command = ["python3", "examples/service.py"]', "command = []", "task.command", 8),
    ('["python3",', '["",', "task.command[0]", 8),
    ('VERSION = "2"', '"A=B" = "2"', 'task.environment."A=B"', 9),
    ("stop_grace_ms = 2000", "stop_grace_ms = -1", "task.stop_grace_ms", 12),
    ('kind = "http"', 'kind = "grpc"', "task.health_check.kind", 15),
    ('path = "/health"', 'path = "health"', "task.health_check.path", 16),
    ("interval_ms = 500", "interval_ms = 5", "task.health_check.interval_ms", 17),
    ('kind = "http"', 'kind = "command"', "task.health_check.command", 14),
    ('strategy = "batch"', 'strategy = "rolling"', "update.strategy", 20),
    ("size = 2", "size = 0", "update.size", 21),
    ("size = 2", "sizes = [1, 2]", "update.sizes", 21),
    ('strategy = "batch"\nsize = 2', 'strategy = "variable_batch"\nsize = 2', "update.size", 21),
    (
        'strategy = "batch"\nsize = 2',
        'strategy = "variable_batch"\nsizes = [1, 0]',
        "update.sizes[1]",
        21,
    ),
    (
        'strategy = "batch"\nsize = 2',
        'strategy = "variable_batch"\nsizes = [1, "2"]',
        "update.sizes[1]",
        21,
    ),
    (
        'strategy = "batch"\nsize = 2',
        "auto_pause_after_batch = true",
        "update.auto_pause_after_batch",
        20,
    ),
    ("max_failed_instances = 1", "max_failed_instances = -1", "update.max_failed_instances", 22),
    ("min_wait_ms = 100", "min_wait_ms = -1", "update.min_wait_ms", 23),
    ('instances = "0-2,4"', 'instances = "0-x"', "update.instances", 25),
    ('instances = "0-2,4"', 'instances = "4-2"', "update.instances", 25),
    (
        "heartbeat_timeout_ms = 30000",
        "heartbeat_timeout_ms = -5",
        "update.heartbeat_timeout_ms",
        26,
    ),
    ('heartbeat_resume = "operator"', 'heartbeat_resume = "manual"', "update.heartbeat_resume", 27),
    ('link = "https', '"pulsegate.x" = "1"\nlink = "https', 'update.metadata."pulsegate.x"', 30),
]


@pytest.mark.parametrize(("old", "new", "key", "line"), BAD, ids=[c[2] for c in BAD])
def test_bad_input_names_the_key_and_line(
    tmp_path: Path, old: str, new: str, key: str, line: int
) -> None:
    assert old in GOOD
    error = refused(tmp_path, GOOD.replace(old, new, 1))
    assert (error.key, error.line) == (key, line), str(error)
    assert str(error).startswith(f"{tmp_path / 'web.toml'}:{line}: {key}: ")


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    error = refused(tmp_path, GOOD.replace("interval_ms", "intervl_ms"))
    assert str(error) == (
        f"{tmp_path / 'web.toml'}:17: task.health_check.intervl_ms: unknown key "
        "(did you mean task.health_check.interval_ms?)"
    )


def test_a_health_check_must_be_a_table(tmp_path: Path) -> None:
    error = refused(tmp_path, MINIMAL + 'health_check = "http"\n')
    assert (error.key, error.line, error.rule) == ("task.health_check", 6, "must be a table")


def test_wrong_type_says_what_it_got(tmp_path: Path) -> None:
    error = refused(tmp_path, GOOD.replace("instances = 5", 'instances = "5"'))
    assert error.rule == "must be an integer" and error.hint == "got '5'"


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    error = refused(tmp_path, GOOD.replace("size = 2", "size = = 2"))
    assert error.line == 21
    with pytest.raises(TomlError, match="cannot read file"):
        load_job_file(tmp_path / "missing.toml")


def test_job_file_key(tmp_path: Path) -> None:
    named = load_job_file(write(tmp_path, GOOD))
    anonymous = load_job_file(write(tmp_path, MINIMAL, "min.toml"))
    hello = JobKey("www", "prod", "hello")
    assert job_file_key(named, None) == hello
    assert job_file_key(named, "www/prod/hello") == hello
    assert job_file_key(anonymous, "a/b/c") == JobKey("a", "b", "c")
    with pytest.raises(InvalidRequest, match="does not match"):
        job_file_key(named, "www/prod/other")
    with pytest.raises(InvalidRequest, match="no job given"):
        job_file_key(anonymous, None)
    with pytest.raises(InvalidRequest, match="role/environment/name"):
        job_file_key(anonymous, "www/prod")


@pytest.mark.parametrize(
    "command",
    [
        ["job", "create", "www/prod/hello"],
        ["update", "start", "www/prod/hello"],
        ["update", "diff", "www/prod/hello"],
    ],
)
def test_a_bad_file_writes_nothing(
    tmp_path: Path, scheduler: Scheduler, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    path = write(tmp_path, GOOD.replace("interval_ms = 500", "interval_ms = 5"))
    code = main([*command, str(path), "--scheduler", api_address(scheduler)])
    err = capsys.readouterr().err
    assert code == 3
    rule = "must be an integer in 10..3600000"
    assert err == f"pulsegate: {path}:17: task.health_check.interval_ms: {rule}\n"
    client = client_for(scheduler)
    assert client.list_jobs() == [] and client.summaries() == []


def test_a_job_argument_that_contradicts_the_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD)
    # no scheduler listens on port 1: the command must fail before it tries to connect
    code = main(["job", "create", "www/prod/other", str(path), "--scheduler", "127.0.0.1:1"])
    assert code == 2
    assert "does not match the job file's [job] www/prod/hello" in capsys.readouterr().err
