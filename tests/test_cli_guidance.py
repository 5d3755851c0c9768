"""The CLI never leaves a newcomer guessing (issue 11): bad flags are usage errors that name the
flag and the form, an unreachable scheduler is announced retry by retry, update verbs take the
job's key, `update wait` says why an update stands still, errors name job-file keys and end with
the fix. In-process `api.cli.main` against a real scheduler (sim driver, or local where instance
logs matter), as in tests/test_cli.py."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_cli import KEY, NEVER_HEALTHY, Cli

from api.cli import main
from api.cli_common import EXIT_CODES
from api.client import planned_retries
from scheduler.config import load_config
from scheduler.logs import configure_logging
from scheduler.service import Scheduler
from scheduler.zkserver import EmbeddedZooKeeper
from updater.keys import JobKey, UpdateKey
from updater.status import UpdateStatus as S

from cluster import client_for, start_scheduler, wait_serving
from waiting import wait_until

SLOW = "min_wait_ms = 600000"  # stays active
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def logs_to_stderr(restore_logging: None) -> None:
    """The in-process scheduler logs; keep that out of the stdout the tests parse."""
    configure_logging("warning", "console", stream=sys.stderr)


@pytest.fixture
def cli(scheduler: Scheduler, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    return Cli(scheduler, capsys, tmp_path)


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize("address", ["127.0.0.1", ":17370", "host:70000", "h:1,nope"])
def test_a_malformed_scheduler_address_is_a_usage_error(
    address: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["update", "list", "--scheduler", address]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pulsegate: --scheduler ") and "expected HOST:PORT" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    monkeypatch.setenv("PULSEGATE_SCHEDULER", address)
    assert main(["job", "list"]) == 2
    assert capsys.readouterr().err.startswith("pulsegate: PULSEGATE_SCHEDULER ")


def test_an_unreachable_scheduler_is_announced_retry_by_retry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    planned = planned_retries(0.75)
    assert planned == 3  # 0.1 + 0.2 + 0.4
    code = main(["update", "list", "--scheduler", "127.0.0.1:1", "--retry-for", "0.75"])
    err = capsys.readouterr().err.splitlines()
    assert code == 7
    # Every retry is announced, numbered against the plan; on a loaded machine the attempts
    # themselves take time, so the deadline may come before the last planned retry.
    retries = err[:-1]
    assert retries, f"no retry was announced before giving up: {err}"
    assert len(retries) <= planned, f"more retries than planned ({planned}): {retries}"
    assert retries == [
        f"pulsegate: retrying 127.0.0.1:1 ({n}/{planned}): no scheduler reachable at "
        "127.0.0.1:1 (connection refused)"
        for n in range(1, len(retries) + 1)
    ]
    assert err[-1].startswith("pulsegate: no scheduler reachable at 127.0.0.1:1 (connection")
    assert "pulsegate scheduler run" in err[-1] and "TTransportException" not in err[-1]


def test_update_verbs_take_the_job_key_when_one_update_is_active(cli: Cli) -> None:
    key = cli.start("www/prod/a", cli.file(update=SLOW))
    code, out, _ = cli("update", "pause", "www/prod/a", "-m", "lunch")
    assert (code, out) == (0, f"{key}: pause requested; now ROLL_FORWARD_PAUSED\n")
    assert cli("update", "resume", "www/prod/a")[1].endswith("now ROLLING_FORWARD\n")
    assert cli.json("update", "info", "www/prod/a")["key"] == str(key)
    assert cli("update", "wait", "www/prod/a", "--timeout", "0.2", "--interval", "0.05")[0] == 9
    assert cli("update", "abort", "www/prod/a")[1].endswith("now ABORTED\n")

    code, out, err = cli("update", "pause", "www/prod/a")
    assert (code, out) == (5, "")
    assert "www/prod/a has no active update" in err and "pulsegate update list www/prod/a" in err
    assert cli.json("update", "info", "www/prod/a")["key"] == str(key)  # the newest, when none
    assert cli("update", "wait", "www/prod/nothing")[0] == 5
    code, _, err = cli("update", "pause", "www/prod")
    assert code == 2 and "role/env/name/id, or role/env/name" in err


def test_update_start_refuses_a_missing_job_unless_create(cli: Cli) -> None:
    path = cli.file()
    code, out, err = cli("update", "start", "www/prod/web", str(path))
    assert (code, out) == (5, "")
    assert f"pulsegate job create {path}" in err and "--create" in err
    assert cli.client.list_jobs() == []
    key = cli.start("www/prod/web", path)  # with --create
    assert cli.client.details(key).status in (S.ROLLING_FORWARD, S.ROLLED_FORWARD)


def test_update_start_json_and_the_update_page(cli: Cli) -> None:
    http = f"127.0.0.1:{cli.scheduler.http.port}"
    cli("job", "create", "www/prod/web", str(cli.file()))
    code, out, _ = cli("update", "start", "www/prod/web", str(cli.file(version="2")), "--json")
    assert code == 0
    started = json.loads(out)
    key = UpdateKey.parse(started["key"])
    assert started["url"] == f"http://{http}/updates/www/prod/web/{key.id}"
    assert started["job"] == "www/prod/web" and started["change"]["update"][0]["count"] == 3

    cli.wait_status(key, S.ROLLED_FORWARD)
    code, out, _ = cli("update", "start", "www/prod/web", str(cli.file(version="3")))
    assert code == 0 and f"page: http://{http}/updates/www/prod/web/" in out

    same = cli.file(version="3")
    cli.wait_status(UpdateKey.parse(KEY.findall(out)[0]), S.ROLLED_FORWARD)
    code, out, _ = cli("update", "start", "www/prod/web", str(same), "--json")
    assert code == 8 and json.loads(out)["key"] is None and json.loads(out)["change"]["is_noop"]
    assert "8 no change" in EXIT_CODES


def test_update_wait_says_why_an_update_is_blocked_or_paused(cli: Cli) -> None:
    key = cli.start("www/prod/web", cli.file(update=f"{SLOW}\nheartbeat_timeout_ms = 800"))
    wait = ("update", "wait", str(key), "--interval", "0.05", "--timeout", "0.2")
    code, out, err = cli(*wait, "--json")
    assert code == 9 and "still ROLL_FORWARD_AWAITING_PULSE after 0.2 s" in err
    first = lines(out)
    assert len(first) == 1 and first[0]["status"] == "ROLL_FORWARD_AWAITING_PULSE"
    assert first[0]["why"].startswith("waiting for the first heartbeat")
    assert first[0]["heartbeat"] == {"age_ms": None, "timeout_ms": 800}

    cli.client.heartbeat(key)
    cli.wait_status(key, S.ROLL_FORWARD_AWAITING_PULSE)  # the heartbeat lapsed
    code, out, _ = cli(*wait)
    assert code == 9 and "; blocked: no heartbeat for " in out and "(timeout 0.8s)" in out
    assert "blocked: no heartbeat for" in cli("update", "info", str(key))[1]

    cli.client.pause(key, "looking at the graphs")
    code, out, _ = cli(*wait, "--json")
    assert lines(out)[-1]["why"] == "paused by anonymous (auth off): looking at the graphs"


def test_wait_json_streams_one_object_per_change_until_the_end(cli: Cli) -> None:
    key = cli.start("www/prod/web", cli.file(instances=2))
    code, out, _ = cli("update", "wait", str(key), "--json", "--interval", "0.02")
    assert code == 0
    stream = lines(out)
    assert stream[-1]["status"] == "ROLLED_FORWARD" and stream[-1]["terminal"]
    assert all(not s["terminal"] for s in stream[:-1])
    assert len({json.dumps(s, sort_keys=True) for s in stream}) == len(stream)  # changes only
    assert {s["instances_in_update"] for s in stream} == {2}

    cli("job", "kill", "www/prod/web")
    argv = ("update", "start", "www/prod/web", str(cli.file(instances=1)), "--create", "--wait")
    code, out, _ = cli(*argv, "--json", "--interval", "0.02")
    stream = lines(out)  # the start, then the changes: every line one object
    assert code == 0 and stream[0]["url"].endswith(stream[0]["key"].split("/", 3)[3])
    assert stream[-1]["status"] == "ROLLED_FORWARD" and stream[-1]["key"] == stream[0]["key"]


def test_the_denominator_stays_put_through_a_rollback(cli: Cli) -> None:
    cli("job", "create", "www/prod/web", str(cli.file(instances=5)))
    bad = cli.file(version="bad", labels=NEVER_HEALTHY, instances=5)
    code, out, _ = cli("update", "start", "www/prod/web", str(bad), "--wait", "--interval", "0.02")
    assert code == 4
    progress = [line for line in out.splitlines() if " in flight, " in line]
    assert any("rolling back: " in line for line in progress)
    assert all("/5 " in line for line in progress), progress
    key = UpdateKey.parse(KEY.findall(out)[0])
    assert "rolling back: 5/5 on the old config" in cli("update", "info", str(key))[1]


def test_errors_name_job_file_keys_and_end_with_the_fix(cli: Cli) -> None:
    path = cli.file()
    cli("job", "create", "www/prod/web", str(path))
    code, _, err = cli("job", "create", "www/prod/web", str(path))
    assert code == 1 and "config.key" not in err
    assert err.rstrip().endswith("or remove it with `pulsegate job kill JOB`")

    huge = cli.file(instances=20000)
    for argv in (("job", "create", "www/prod/big"), ("update", "start", "www/prod/web")):
        code, _, err = cli(*argv, str(huge))
        assert code == 1 and "instanceCount" not in err, err
        assert err.startswith("pulsegate: job.instances: must be in 0..10000, got 20000; ")
        assert err.rstrip().endswith(
            f"fix job.instances in {huge} (docs/jobfile.md lists every key)"
        )


def test_port_in_a_jobs_environment_is_refused(cli: Cli) -> None:
    path = cli.tmp / "port.toml"
    path.write_text(
        '[job]\ninstances = 1\n[task]\ncommand = ["serve"]\nenvironment = { PORT = "80" }\n'
    )
    code, out, err = cli("job", "create", "www/prod/web", str(path))
    assert (code, out) == (3, "")
    assert f"{path}:5: task.environment.PORT: is set for each instance" in err
    assert "remove it" in err


def test_a_monitors_pause_is_recorded_as_the_monitors(cli: Cli) -> None:
    key = cli.start("www/prod/web", cli.file(update="heartbeat_timeout_ms = 5000"))
    failing = ["--interval", "0.05", "--check-cmd", "echo db down; exit 1", "--pause-on-failure"]
    code, out, _ = cli(
        "heartbeat", "www/prod/web", *failing, "--monitor", "db-check", "--max-beats", "3"
    )
    assert code == 0 and f"paused {key}" in out
    pause = cli.json("update", "info", str(key))["status_events"][-1]
    assert (pause["status"], pause["user"], pause["message"]) == (
        "ROLL_FORWARD_PAUSED",
        "monitor db-check",
        "db down",
    )
    assert "monitor db-check: db down" in cli("update", "info", str(key))[1]  # paused by
    cli.client.resume(key)
    cli("heartbeat", str(key), *failing, "--max-beats", "2")
    user = cli.json("update", "info", str(key))["status_events"][-1]["user"]
    assert user.startswith("monitor heartbeat@")  # the default name


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://127.0.0.1/health", "must start with http:// or https:// (got ftp://)"),
        ("127.0.0.1:8080/health", "must start with http:// or https://"),
        ("http:///health", "has no host"),
    ],
)
def test_the_monitor_refuses_a_url_it_cannot_check(cli: Cli, url: str, problem: str) -> None:
    key = cli.start("www/prod/web", cli.file(update="heartbeat_timeout_ms = 5000"))
    argv = ("heartbeat", str(key), "--interval", "0.05", "--check-http", url, "--max-beats", "3")
    code, out, err = cli(*argv)
    assert (code, out) == (2, "")
    assert err.startswith(f"pulsegate: --check-http {url!r} {problem}")


def test_job_list(cli: Cli) -> None:
    assert cli("job", "list")[1] == "no jobs; create one with `pulsegate job create FILE`\n"
    cli("job", "create", "www/prod/web", str(cli.file()))
    cli("job", "create", "api/prod/db", str(cli.file(instances=2)))
    key = cli.start("api/prod/db", cli.file(version="2", instances=2, update=SLOW))
    assert cli.json("job", "list") == [
        {
            "job": "api/prod/db",
            "instance_count": 2,
            "active_update": str(key),
            "active_status": "ROLLING_FORWARD",
        },
        {"job": "www/prod/web", "instance_count": 3, "active_update": None, "active_status": None},
    ]
    assert [r["job"] for r in cli.json("job", "list", "www")] == ["www/prod/web"]
    code, out, _ = cli("job", "list")
    assert code == 0 and str(key) in out and "www/prod/web" in out


def test_update_info_shows_the_instances(cli: Cli) -> None:
    key = cli.start("www/prod/web", cli.file(instances=2))
    cli.wait_status(key, S.ROLLED_FORWARD)
    wait_until(lambda: cli.client.is_settled(JobKey("www", "prod", "web"), 2))
    info = cli.json("update", "info", "www/prod/web")
    assert [(i["instance_id"], i["state"], i["at_desired_config"]) for i in info["instances"]] == [
        (0, "HEALTHY", True),
        (1, "HEALTHY", True),
    ]
    out = cli("update", "info", str(key))[1]
    assert "instances now" in out and "AT DESIRED" in out and "HEALTHY SINCE" in out


def test_the_scheduler_accepts_the_clis_own_environment() -> None:
    """A shell that exports PULSEGATE_SCHEDULER/TOKEN for the CLI also runs the scheduler."""
    env = {"PULSEGATE_SCHEDULER": "127.0.0.1:7070", "PULSEGATE_TOKEN": "s3cret"}
    assert load_config(None, env).driver == "local"  # the default driver, too


def test_log_format_auto_is_console_on_a_terminal_and_json_otherwise(
    restore_logging: None,
) -> None:
    import structlog

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, is_json in ((io.StringIO(), True), (Terminal(), False)):
        configure_logging("info", "auto", stream=stream)
        structlog.get_logger("t").info("thing_happened", job="www/prod/web")
        line = stream.getvalue().strip()
        assert "thing_happened" in line
        assert line.startswith("{") is is_json


# -- the local driver: a failed instance points at its log -------------------------------------


def test_a_failed_instance_points_at_its_log_file(
    zk_server: EmbeddedZooKeeper,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "state"
    local = start_scheduler(
        zk_server.hosts, f"/cli-local-{uuid.uuid4().hex[:8]}", state, **{"driver.kind": "local"}
    )
    try:
        cli = Cli(wait_serving(local), capsys, tmp_path)
        path = tmp_path / "crash.toml"
        path.write_text(
            '[job]\ninstances = 1\n[task]\ncommand = "echo boom; exit 3"\n'
            "[update]\nmin_wait_ms = 2000\nrollback_on_failure = false\n"
        )
        code, out, _ = cli("update", "start", "www/prod/crash", str(path), "--create", "--wait")
        log = state.resolve() / "logs" / "www" / "prod" / "crash" / "0.log"
        failed = [line for line in out.splitlines() if line.startswith("instance 0 failed: ")]
        assert code == 1 and len(failed) == 1 and "exited with status 3" in failed[0]
        assert failed[0].endswith(f"; its output: {log}")
        assert "boom" in log.read_text()
        assert cli.json("update", "info", "www/prod/crash")["failures"] == failed
        status = cli.json("job", "status", "www/prod/crash")
        assert [i["log"] for i in status["instances"]] == [str(log)]
    finally:
        client = client_for(local)
        for job in client.list_jobs():
            client.kill_job(job)
        wait_until(lambda: not local.driver.pids(JobKey("www", "prod", "crash")), timeout=30)
        client.close()
        local.stop()


def test_scheduler_run_flags_for_the_driver_and_the_log_format(
    zk_hosts: str, tmp_path: Path
) -> None:
    """`--driver sim` runs without the local-driver notice; `--log-format console` logs for
    people even into a file (auto would choose JSON there)."""
    log = tmp_path / "scheduler.log"
    argv = [
        sys.executable, "-m", "api.cli", "scheduler", "run", "--zk", zk_hosts,
        "--api-port", "0", "--http-port", "0", "--state-dir", str(tmp_path / "state"),
        "--driver", "sim", "--log-format", "console",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEGATE_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=out
        )
    try:
        started = wait_until(
            lambda: next((x for x in log.read_text().splitlines() if "scheduler_started" in x), ""),
            30,
            0.05,
        )
        assert not started.startswith("{") and "[info" in started
        assert "driver: local" not in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
