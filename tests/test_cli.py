"""The `pulsegate` CLI end to end: `api.cli.main` in-process against a serving scheduler (sim
driver), output captured. Every read command's `--json` must parse; exit codes are the
documented ones; the heartbeat monitor drives, blocks and pauses coordinated updates."""

from __future__ import annotations

import hashlib
import http.server
import importlib.metadata
import io
import json
import re
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from api import watch
from api.cli import main
from api.cli_heartbeat import CheckResult, command_check, http_check, run_monitor
from api.views import HeartbeatResult
from scheduler.logs import configure_logging
from scheduler.service import Scheduler
from scheduler.zkserver import EmbeddedZooKeeper
from updater.errors import AuthError, InvalidRequest, NotFound, Unavailable
from updater.keys import JobKey, UpdateKey
from updater.pulse import HeartbeatAnswer
from updater.status import UpdateStatus as S

from cluster import FAST_SIM, api_address, client_for, start_scheduler, wait_serving
from waiting import wait_until

NEVER_HEALTHY = {**FAST_SIM, "sim.healthy_after_ms": "never", "sim.liveness_ms": "200"}
KEY = re.compile(r"^[\w.-]+/[\w.-]+/[\w.-]+/[0-9a-f]{32}$", re.M)


@pytest.fixture(autouse=True)
def logs_to_stderr(restore_logging: None) -> None:
    """The in-process scheduler logs; keep that out of the stdout the tests parse."""
    configure_logging("warning", "console", stream=sys.stderr)


class Cli:
    def __init__(self, scheduler: Scheduler, capsys: pytest.CaptureFixture[str], tmp: Path):
        self.scheduler = scheduler
        self.address = api_address(scheduler)
        self.capsys = capsys
        self.tmp = tmp
        self.client = client_for(scheduler)

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([*argv, "--scheduler", self.address])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)

    def file(
        self,
        version: str = "1",
        labels: dict[str, str] = FAST_SIM,
        instances: int = 3,
        update: str = "min_wait_ms = 100",
        job: str = "",
    ) -> Path:
        table = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in labels.items())
        fields = zip(("role", "environment", "name"), job.split("/") if job else (), strict=False)
        names = "".join(f'{k} = "{v}"\n' for k, v in fields)
        text = (
            f"[job]\n{names}instances = {instances}\n\n"
            f'[task]\ncommand = ["serve", "--version", "{version}"]\nlabels = {{ {table} }}\n\n'
            f"[update]\n{update}\n"
        )
        path = self.tmp / f"{uuid.uuid4().hex[:8]}.toml"
        path.write_text(text)
        return path

    def start(self, job: str, path: Path, *flags: str) -> UpdateKey:
        """Start an update, creating the job if need be (`--create`)."""
        code, out, err = self("update", "start", job, str(path), "--create", *flags)
        assert code == 0, err
        return UpdateKey.parse(KEY.findall(out)[-1])

    def status(self, key: UpdateKey) -> S:
        return self.client.details(key).status

    def wait_status(self, key: UpdateKey, *statuses: S) -> None:
        wait_until(lambda: self.status(key) in statuses, 15, 0.02, f"{key} not {statuses}")


@pytest.fixture
def cli(scheduler: Scheduler, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    return Cli(scheduler, capsys, tmp_path)


def test_job_create_status_kill(cli: Cli) -> None:
    path = cli.file()
    code, out, _ = cli("job", "create", "www/prod/web", str(path))
    assert (code, out) == (0, "created www/prod/web with 3 instance(s)\n")
    job = JobKey("www", "prod", "web")
    wait_until(lambda: [i.state.name for i in cli.client.instances(job)] == ["HEALTHY"] * 3)

    code, out, _ = cli("job", "status", "www/prod/web")
    assert code == 0
    assert "serve --version 1" in out and len(re.findall(r" HEALTHY +yes ", out)) == 3
    data = cli.json("job", "status", "www/prod/web")
    assert data["job"] == "www/prod/web" and data["instance_count"] == 3
    assert data["groups"][0]["instances"] == "0-2"
    assert data["groups"][0]["config"]["command"] == ["serve", "--version", "1"]
    assert [(i["instance_id"], i["state"]) for i in data["instances"]] == [
        (0, "HEALTHY"),
        (1, "HEALTHY"),
        (2, "HEALTHY"),
    ]
    assert all(isinstance(i["healthy_since_ms"], int) for i in data["instances"])
    assert data["active_updates"] == []

    code, out, _ = cli("job", "create", "www/prod/web", str(path))
    assert code == 1

    assert cli("job", "kill", "www/prod/web", "-m", "done")[:2] == (0, "killed www/prod/web\n")
    code, _, err = cli("job", "status", "www/prod/web")
    assert code == 5 and err.startswith("pulsegate: ") and err.count("\n") == 1
    assert cli("job", "kill", "www/prod/web")[0] == 5


def test_update_diff_start_wait_info(cli: Cli) -> None:
    cli("job", "create", "www/prod/web", str(cli.file()))
    new = cli.file(
        version="2", instances=4, update='min_wait_ms = 100\n[update.metadata]\nci = "42"'
    )

    code, out, _ = cli("update", "diff", "www/prod/web", str(new))
    assert code == 0
    assert "add 3; update 0-2" in out and "command" in out and '"2"' in out
    diff = cli.json("update", "diff", "www/prod/web", str(new))
    assert diff["job"] == "www/prod/web" and not diff["is_noop"]
    assert [g["instances"] for g in diff["add"]] == ["3"]
    assert diff["update"][0]["config"]["command"] == ["serve", "--version", "1"]

    code, out, _ = cli("update", "start", "www/prod/web", str(new), "-m", "release 2")
    assert code == 0
    assert out.startswith("www/prod/web: add 3; update 0-2\n")
    key = UpdateKey.parse(KEY.findall(out)[0])

    code, out, _ = cli("update", "wait", str(key), "--interval", "0.05")
    assert code == 0
    assert out.splitlines()[-1].startswith(f"{key}: ROLLED_FORWARD")

    code, out, _ = cli("update", "info", str(key))
    assert code == 0
    for text in (str(key), "ROLLED_FORWARD", "release 2", "INSTANCE_UPDATED", "metadata ci"):
        assert text in out
    info = cli.json("update", "info", str(key))
    assert info["key"] == str(key) and info["status"] == "ROLLED_FORWARD"
    assert info["metadata"]["ci"] == "42"
    assert info["progress"] == {"total": 4, "done": 4, "in_flight": 0, "failed": 0}
    assert info["status_events"][0]["message"] == "release 2"
    assert info["status_events"][-1]["timestamp_at"].endswith("Z")
    assert {e["action"] for e in info["instance_events"]} >= {"INSTANCE_UPDATED"}
    assert info["settings"]["min_wait_ms"] == 100

    done = cli.json("update", "wait", str(key))
    assert done["status"] == "ROLLED_FORWARD"
    # By the job's key once the update is over (it may end before `update wait` asks): its
    # newest update, as `update info` does.
    code, out, _ = cli("update", "wait", "www/prod/web")
    assert code == 0 and out.splitlines()[-1].startswith(f"{key}: ROLLED_FORWARD")
    code, out, err = cli("update", "start", "www/prod/web", str(new))
    assert (code, err) == (8, "") and "no change" in out and "nothing started" in out


def test_scale_down(cli: Cli) -> None:
    cli("job", "create", "www/prod/web", str(cli.file()))
    smaller = cli.file(instances=2)
    assert (
        "change  remove 2; unchanged 0-1" in cli("update", "diff", "www/prod/web", str(smaller))[1]
    )
    key = cli.start("www/prod/web", smaller, "--wait", "--interval", "0.05")
    info = cli.json("update", "info", str(key))
    assert info["status"] == "ROLLED_FORWARD" and info["config"] is None
    assert info["initial"][0]["instances"] == "2" and info["desired_instances"] == ""
    status = cli.json("job", "status", "www/prod/web")
    assert status["instance_count"] == 2


def test_a_failed_release_rolls_back_and_wait_exits_4(cli: Cli) -> None:
    cli("job", "create", "www/prod/web", str(cli.file()))
    bad = cli.file(version="bad", labels=NEVER_HEALTHY)
    code, out, _ = cli("update", "start", "www/prod/web", str(bad), "--wait", "--interval", "0.05")
    assert code == 4
    key = UpdateKey.parse(KEY.findall(out)[0])
    assert "ROLLING_BACK" in out and out.count(f"{key}: ROLLED_BACK") == 1
    assert out.splitlines()[-1].startswith("instance 0 failed: health check never passed")
    assert cli("update", "wait", str(key))[0] == 4
    info = cli.json("update", "info", str(key))
    assert "INSTANCE_UPDATE_FAILED" in {e["action"] for e in info["instance_events"]}


def test_pause_resume_abort_rollback(cli: Cli) -> None:
    slow = "min_wait_ms = 600000"  # stays active
    key = cli.start("www/prod/a", cli.file(update=slow))
    code, out, _ = cli("update", "pause", str(key), "-m", "lunch [break]")
    assert (code, out) == (0, f"{key}: pause requested; now ROLL_FORWARD_PAUSED\n")
    code, out, _ = cli("update", "info", str(key))
    assert "paused by" in out and "lunch [break]" in out
    assert cli("update", "resume", str(key))[1].endswith("now ROLLING_FORWARD\n")
    assert cli("update", "rollback", str(key), "-m", "no")[0] == 0
    assert cli.status(key) in (S.ROLLING_BACK, S.ROLLED_BACK)

    other = cli.start("www/prod/b", cli.file(update=slow))
    assert cli("update", "abort", str(other))[1].endswith("now ABORTED\n")
    assert cli("update", "wait", str(other))[0] == 1
    code, _, err = cli("update", "resume", str(other))
    assert code == 1 and "ABORTED" in err


def test_update_list_by_status_group_and_job(cli: Cli) -> None:
    slow = "min_wait_ms = 600000"
    ok = cli.start("www/prod/ok", cli.file())
    bad = cli.start("www/prod/bad", cli.file(labels=NEVER_HEALTHY))
    active = cli.start("www/test/active", cli.file(update=slow))
    paused = cli.start("api/prod/paused", cli.file(update=slow))
    cli("update", "pause", str(paused))
    blocked = cli.start("api/prod/blocked", cli.file(update="heartbeat_timeout_ms = 60000"))
    aborted = cli.start("api/test/aborted", cli.file(update=slow))
    cli("update", "abort", str(aborted))
    cli.wait_status(ok, S.ROLLED_FORWARD)
    cli.wait_status(bad, S.ROLLED_BACK)

    def keys(*argv: str) -> set[str]:
        return {s["key"] for s in cli.json("update", "list", *argv)}

    everything = {str(k) for k in (ok, bad, active, paused, blocked, aborted)}
    assert keys() == keys("--status", "all") == everything
    assert keys("--status", "active") == {str(active), str(paused), str(blocked)}
    assert keys("--status", "blocked") == {str(blocked)}
    assert keys("--status", "paused") == {str(paused)}
    assert keys("--status", "failed") == {str(bad)}
    assert keys("--status", "succeeded") == {str(ok)}
    assert keys("--status", "inactive") == {str(ok), str(bad), str(aborted)}
    assert keys("--status", "aborted") == keys("--status", "ABORTED") == {str(aborted)}
    assert keys("www") == {str(ok), str(bad), str(active)}
    assert keys("www/prod") == {str(ok), str(bad)}
    assert keys("api/prod/paused", "--status", "paused") == {str(paused)}
    assert keys("api/prod/paused", "--status", "failed") == set()

    code, out, _ = cli("update", "list", "api", "--status", "active")
    assert code == 0 and str(paused) in out and str(blocked) in out and str(ok) not in out
    assert "ROLL_FORWARD_AWAITING_PULSE" in out
    assert cli("update", "list", "nobody")[1] == "no updates\n"
    code, _, err = cli("update", "list", "--status", "sideways")
    assert code == 2 and "unknown 'sideways'" in err
    assert cli("update", "list", "a/b/c/d")[0] == 2


def test_heartbeat_drives_a_coordinated_update(cli: Cli) -> None:
    key = cli.start(
        "www/prod/web", cli.file(update="min_wait_ms = 100\nheartbeat_timeout_ms = 2000")
    )
    assert cli.status(key) is S.ROLL_FORWARD_AWAITING_PULSE
    code, out, _ = cli("heartbeat", str(key), "--interval", "0.05", "--max-beats", "400")
    assert code == 0
    assert (
        "heartbeat: OK" in out
        and out.splitlines()[-1] == "heartbeat: FINISHED (update ROLLED_FORWARD)"
    )
    assert cli.status(key) is S.ROLLED_FORWARD


def test_wait_shows_the_heartbeat_age_while_a_monitor_runs(cli: Cli) -> None:
    key = cli.start(
        "www/prod/web", cli.file(update="min_wait_ms = 100\nheartbeat_timeout_ms = 5000")
    )
    stop, log = threading.Event(), io.StringIO()
    monitor = threading.Thread(
        target=run_monitor, args=(cli.client, key, 0.05, None, False, stop, log)
    )
    monitor.start()
    try:
        code, out, _ = cli("update", "wait", str(key), "--interval", "0.05")
    finally:
        stop.set()
        monitor.join(10)
    assert code == 0
    assert "; heartbeat last " in out and "timeout 5.0s" in out


def test_a_failing_check_blocks_the_update_and_can_pause_it(cli: Cli) -> None:
    key = cli.start("www/prod/web", cli.file(update="heartbeat_timeout_ms = 1000"))
    failing = "echo database down; exit 1"
    code, out, _ = cli(
        "heartbeat", str(key), "--interval", "0.05", "--check-cmd", failing, "--max-beats", "5"
    )
    assert code == 0
    assert out == "check failed, not heartbeating: database down\n"
    details = cli.client.details(key)
    assert details.status is S.ROLL_FORWARD_AWAITING_PULSE and details.heartbeat_age_ms is None

    argv = ["heartbeat", str(key), "--interval", "0.05", "--check-cmd", failing]
    code, out, _ = cli(*argv, "--max-beats", "3", "--pause-on-failure")
    assert code == 0 and f"paused {key}" in out
    assert cli.status(key) is S.ROLL_FORWARD_PAUSED
    assert "database down" in cli("update", "info", str(key))[1]
    info = cli.json("update", "info", str(key))
    assert info["status_events"][-1]["message"] == "database down"


def test_heartbeat_exit_codes(cli: Cli) -> None:
    missing = "www/prod/web/" + "0" * 32
    code, out, _ = cli("heartbeat", missing, "--interval", "0.05", "--max-beats", "2")
    assert code == 5 and out.startswith("pulsegate: ") and missing in out
    plain = cli.start("www/prod/plain", cli.file(update="min_wait_ms = 600000"))
    assert cli("heartbeat", str(plain), "--interval", "0.05", "--max-beats", "2")[0] == 1
    assert cli("heartbeat", "nonsense", "--interval", "1")[0] == 2


def test_command_check_captures_output_and_times_out() -> None:
    assert command_check("echo fine", 5)().ok
    result = command_check("echo out; echo err >&2; exit 3", 5)()
    assert (result.ok, result.output) == (False, "out\nerr")
    assert command_check("exit 2", 5)().output == "check exited with status 2"
    assert "timed out" in command_check("sleep 5", 0.1)().output


def test_errors_are_one_line_with_their_exit_code(cli: Cli) -> None:
    missing = "www/prod/web/" + "0" * 32
    for argv in (("update", "info", missing), ("update", "wait", missing)):
        code, out, err = cli(*argv)
        assert (code, out) == (5, "") and err.startswith("pulsegate: ") and err.count("\n") == 1
    assert cli("update", "info", "www/prod")[0] == 2
    assert cli("job", "status", "www")[0] == 2
    code, _, err = cli("update", "start", str(cli.file()))
    assert code == 2 and "no job given" in err
    with pytest.raises(SystemExit) as usage:
        main(["update", "frobnicate"])
    assert usage.value.code == 2
    cli.capsys.readouterr()
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0
    assert cli.capsys.readouterr().out == f"pulsegate {importlib.metadata.version('pulsegate')}\n"

    # global options before the command work too
    cli.capsys.readouterr()
    assert main(["--scheduler", cli.address, "update", "list", "--json"]) == 0
    assert json.loads(cli.capsys.readouterr().out) == []
    # nobody listens on port 1
    code = main(["update", "list", "--scheduler", "127.0.0.1:1", "--retry-for", "0.2"])
    assert code == 7 and "no scheduler reachable" in cli.capsys.readouterr().err

    key = cli.start("www/prod/web", cli.file(update="min_wait_ms = 600000"))
    code, _, err = cli("update", "start", "www/prod/web", str(cli.file(version="3")))
    assert code == 1 and f"(active update: {key})" in err


def test_auth_errors_exit_6(
    zk_server: EmbeddedZooKeeper,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digest = hashlib.sha256(b"s3cret").hexdigest()
    principal = {"name": "ops", "token_sha256": digest, "roles": ["operator:www"]}
    secured = start_scheduler(
        zk_server.hosts,
        f"/cli-auth-{uuid.uuid4().hex[:8]}",
        tmp_path / "state",
        **{"auth.enabled": True, "auth.principals": [principal]},
    )
    try:
        cli = Cli(wait_serving(secured), capsys, tmp_path)
        path = cli.file()
        code, _, err = cli("job", "create", "www/prod/web", str(path))
        fix = "pass --token TOKEN or set PULSEGATE_TOKEN"
        assert code == 6 and err == f"pulsegate: no token given; {fix}\n"
        assert cli("job", "create", "www/prod/web", str(path), "--token", "wrong")[0] == 6
        monkeypatch.setenv("PULSEGATE_TOKEN", "s3cret")
        assert cli("job", "create", "www/prod/web", str(path))[0] == 0
        assert cli("job", "create", "api/prod/web", str(path))[0] == 6
    finally:
        secured.stop()


def test_live_view_on_a_terminal(cli: Cli) -> None:
    key = cli.start("www/prod/web", cli.file(update="heartbeat_timeout_ms = 1000"))
    screen = Console(file=io.StringIO(), force_terminal=True, width=120)
    with watch.WaitDisplay(screen) as display:
        assert display.live is not None
        display.show(cli.client.details(key))
    text = screen.file.getvalue()  # type: ignore[attr-defined]
    assert str(key) in text and "0/3 done" in text and "none yet, timeout 1.0s" in text


def test_http_check_passes_on_2xx_only() -> None:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = int(self.path.strip("/"))
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"db: down" if code >= 300 else b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert http_check(f"{base}/204", 5)().ok
        failed = http_check(f"{base}/503", 5)()
        assert not failed.ok and failed.output == f"HTTP 503 from {base}/503: db: down"
    finally:
        server.shutdown()
        server.server_close()
    refused = http_check(f"{base}/200", 1)()
    assert not refused.ok and "failed" in refused.output


def test_the_job_can_come_from_the_file_and_the_leader_from_zookeeper(
    cli: Cli, scheduler: Scheduler
) -> None:
    path = cli.file(job="www/prod/named")
    assert cli("job", "create", str(path))[1] == "created www/prod/named with 3 instance(s)\n"
    key = cli.start("www/prod/named", cli.file(version="2", job="www/prod/named"))
    cli.capsys.readouterr()
    zk = ["--zk", scheduler.config.zk_hosts, "--zk-root", scheduler.config.zk_root]
    assert main(["update", "list", "www/prod/named", "--json", *zk]) == 0
    assert [s["key"] for s in json.loads(cli.capsys.readouterr().out)] == [str(key)]


# -- the monitor on a fake clock: its event's wait() advances time instead of sleeping --------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ClockEvent(threading.Event):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.now += max(0.0, timeout or 0.0)
        return self.is_set()


class FakeClient:
    """Answers heartbeats from a script (an answer or an error per call), on a fake clock."""

    def __init__(self, clock: FakeClock, *script: HeartbeatAnswer | Exception) -> None:
        self.clock = clock
        self.script = list(script)
        self.beats: list[float] = []
        self.pauses: list[str] = []

    def heartbeat(self, key: UpdateKey) -> HeartbeatResult:
        self.beats.append(self.clock.now)
        step = self.script.pop(0) if self.script else HeartbeatAnswer.OK
        if isinstance(step, Exception):
            raise step
        status = S.ROLLED_FORWARD if step is HeartbeatAnswer.FINISHED else S.ROLLING_FORWARD
        return HeartbeatResult(step, status)

    def pause(self, key: UpdateKey, message: str = "", monitor: str | None = None) -> None:
        self.pauses.append(message)


MONITORED = UpdateKey(JobKey("www", "prod", "web"), "u1")


def monitor(
    client: FakeClient, check: Any = None, beats: int = 50, pause: bool = False
) -> tuple[int, str]:
    out = io.StringIO()
    event = ClockEvent(client.clock)
    code = run_monitor(client, MONITORED, 0.1, check, pause, event, out, beats, client.clock)  # type: ignore[arg-type]
    return code, out.getvalue()


def timed_check(clock: FakeClock, seconds: float, *results: bool) -> Any:
    """A check that takes `seconds` of fake time and returns `results` (then passes)."""
    script = list(results)

    def check() -> CheckResult:
        clock.now += seconds
        ok = script.pop(0) if script else True
        return CheckResult(ok, "" if ok else "queue depth 9000")

    return check


def test_the_interval_stays_steady_however_long_the_check_takes() -> None:
    clock = FakeClock()
    client = FakeClient(clock)
    assert monitor(client, timed_check(clock, 0.03), beats=5) == (
        0,
        "heartbeat: OK (update ROLLING_FORWARD)\n",
    )
    assert client.beats == pytest.approx([0.03, 0.13, 0.23, 0.33, 0.43])
    clock = FakeClock()
    late = FakeClient(clock)
    monitor(late, timed_check(clock, 0.25), beats=3)  # slower than the interval: skip ticks
    assert late.beats == pytest.approx([0.25, 0.55, 0.85])


def test_the_monitor_pauses_once_per_failure_streak() -> None:
    clock = FakeClock()
    client = FakeClient(clock)
    check = timed_check(clock, 0, False, False, True, False, False)
    code, out = monitor(client, check, beats=5, pause=True)
    assert code == 0 and client.pauses == ["queue depth 9000"] * 2 and len(client.beats) == 1
    assert out.count(f"paused {MONITORED}") == 2 and "check passing again" in out


def test_the_monitor_keeps_going_through_paused_and_unavailable() -> None:
    clock = FakeClock()
    script = [HeartbeatAnswer.PAUSED, Unavailable("no leader"), Unavailable("no leader")]
    client = FakeClient(clock, *script, HeartbeatAnswer.OK, HeartbeatAnswer.FINISHED)
    code, out = monitor(client)
    assert code == 0 and len(client.beats) == 5
    assert out.splitlines() == [
        "heartbeat: PAUSED (update ROLLING_FORWARD)",
        "scheduler unavailable, retrying: no leader",
        "heartbeat: OK (update ROLLING_FORWARD)",
        "heartbeat: FINISHED (update ROLLED_FORWARD)",
    ]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFound("no such update"), 5),
        (AuthError("no token given"), 6),
        (InvalidRequest("key", "not coordinated"), 1),
    ],
)
def test_the_monitor_stops_on_errors_it_cannot_retry(error: Exception, code: int) -> None:
    clock = FakeClock()
    result, out = monitor(FakeClient(clock, HeartbeatAnswer.OK, error))
    assert result == code and out.splitlines()[-1].startswith("pulsegate: ")
