"""The local driver with real processes: health checks of each kind, restarts after SIGKILL,
commands that cannot start, updates that roll back, stop with SIGTERM then SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import sys
import uuid
from pathlib import Path

import pytest

from scheduler.drivers.health import Streak, Verdict, run_check
from scheduler.drivers.instance import backoff_delay
from scheduler.drivers.process import cap_log, free_port, spawn, start_ticks
from updater.driver import InstanceState
from updater.events import InstanceAction
from updater.keys import JobKey
from updater.settings import Settings
from updater.status import UpdateStatus
from updater.task import HealthCheck, HealthCheckKind, TaskConfig

from cluster import client_for, start_scheduler, wait_serving
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
SERVICE = str(ROOT / "examples" / "service.py")
JOB = JobKey("www", "test", "svc")
# Patient with a slow start and a slow check (a loaded 2-core machine can take seconds to start
# Python): 30 s of failed checks in a row before a restart. A healthy instance still counts from
# its first pass, so this costs nothing when all is well. Only UNHEALTHY is about failing checks.
HTTP = HealthCheck(HealthCheckKind.HTTP, interval_ms=100, timeout_ms=5000, unhealthy_threshold=300)
TCP = HealthCheck(HealthCheckKind.TCP, interval_ms=100, timeout_ms=5000, unhealthy_threshold=300)
# For the instance that must fail its checks: 3 s of them, which a slow start may still eat into
# (its first failures are refused connections, not 503s); the test waits for a 503 verdict.
UNHEALTHY = HealthCheck(
    HealthCheckKind.HTTP, interval_ms=100, timeout_ms=5000, unhealthy_threshold=30
)
QUICK = Settings(min_wait_in_instance_running_ms=200)
S = UpdateStatus
I = InstanceState  # noqa: E741


def service(version: str = "1", check: HealthCheck = HTTP, **env: str) -> TaskConfig:
    return TaskConfig.make(
        [sys.executable, SERVICE],
        environment={"VERSION": version, **env},
        health_check=check,
        stop_grace_ms=2000,
    )


@pytest.fixture
def local(zk_server, tmp_path):
    s = start_scheduler(
        zk_server.hosts,
        f"/local-{uuid.uuid4().hex[:8]}",
        tmp_path,
        **{"driver.kind": "local"},
    )
    wait_serving(s)
    client = client_for(s)
    yield s, client
    client.close()
    for job in client.list_jobs():  # stop what the test started
        client.kill_job(job)
    wait_until(lambda: not s.driver.pids(JOB), timeout=30)
    s.stop()


def states(client, job: JobKey = JOB) -> list[InstanceState]:
    return [i.state for i in client.instances(job)]


# -- health checks, directly ------------------------------------------------------------------


@pytest.mark.parametrize(("healthy", "expected"), [("yes", True), ("no", False)])
def test_http_check(tmp_path: Path, healthy: str, expected: bool) -> None:
    port = free_port()
    proc = spawn(service(HEALTHY=healthy), port, tmp_path / "log", ROOT)
    try:
        # Until it listens the check is refused (or, on a loaded machine, times out): wait for
        # the service's answer.
        result = wait_until(
            lambda: (r := run_check(HTTP, port, ROOT)) and r[1].startswith("HTTP") and r,
            timeout=60,
        )
        assert result == (
            (True, "HTTP 200 from /health") if expected else (False, "HTTP 503 from /health")
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_tcp_check() -> None:
    check = HealthCheck(HealthCheckKind.TCP, timeout_ms=500)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert run_check(check, port, ROOT) == (True, "")
    passed, reason = run_check(check, port, ROOT)
    assert not passed and "ConnectionRefused" in reason


def test_command_check() -> None:
    ok = HealthCheck(  # a loaded machine may take a while to start a shell
        HealthCheckKind.COMMAND, command=("sh", "-c", "test $PORT = 4242"), timeout_ms=30_000
    )
    assert run_check(ok, 4242, ROOT) == (True, "")
    passed, reason = run_check(ok, 4243, ROOT)
    assert not passed and "exit status 1" in reason
    slow = HealthCheck(HealthCheckKind.COMMAND, command=("sleep", "5"), timeout_ms=100)
    assert run_check(slow, 1, ROOT) == (False, "check command timed out after 0.1 s")


def test_thresholds() -> None:
    streak = Streak(HealthCheck(HealthCheckKind.TCP, healthy_threshold=2, unhealthy_threshold=2))
    assert streak.record(True, "") is Verdict.NONE
    assert streak.record(True, "") is Verdict.HEALTHY
    assert streak.record(False, "x") is Verdict.NONE  # one miss is not enough
    assert streak.record(True, "") is Verdict.NONE
    assert streak.record(False, "x") is Verdict.NONE
    assert streak.record(False, "y") is Verdict.UNHEALTHY


def test_restart_backoff_doubles_up_to_its_cap_for_any_streak() -> None:
    waits = [backoff_delay(n, 0.5, 30.0) for n in range(1, 9)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    # An instance that fails for hours: 2 ** 1024 used to overflow, and it stayed EXITED.
    for streak in (1024, 1025, 10_000, 10**12):
        assert backoff_delay(streak, 0.5, 30.0) == 30.0


def test_pid_reuse_is_detected(tmp_path: Path) -> None:
    proc = spawn(TaskConfig.make(["sleep", "30"]), 1, tmp_path / "log", ROOT)
    ticks = start_ticks(proc.pid)
    assert ticks is not None
    proc.kill()
    proc.wait()
    assert start_ticks(proc.pid) is None  # gone (and a reused pid would differ in ticks)


# -- the driver, through a scheduler ------------------------------------------------------------


def test_instances_start_healthy_and_stop(local) -> None:
    s, client = local
    client.create_job(JOB, service(), 3)
    wait_until(lambda: states(client) == [I.HEALTHY] * 3, timeout=30)
    pids = s.driver.pids(JOB)
    assert len(set(pids.values())) == 3
    for instance in client.instances(JOB):
        assert instance.at_desired_config and instance.failures == 0
    client.kill_job(JOB)
    wait_until(lambda: not s.driver.pids(JOB), timeout=30)
    for pid in pids.values():
        wait_until(lambda pid=pid: start_ticks(pid) is None, timeout=10)


def test_an_instance_killed_with_sigkill_is_restarted(local) -> None:
    s, client = local
    client.create_job(JOB, service(), 2)
    wait_until(lambda: states(client) == [I.HEALTHY] * 2, timeout=30)
    victim = s.driver.pids(JOB)[1]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: client.instances(JOB)[1].failures == 1, timeout=30)
    assert client.instances(JOB)[1].message == "killed by SIGKILL"
    wait_until(lambda: states(client) == [I.HEALTHY] * 2, timeout=30)
    assert s.driver.pids(JOB)[1] != victim


def test_an_unhealthy_instance_is_restarted_and_counted(local) -> None:
    _s, client = local
    client.create_job(JOB, service(check=UNHEALTHY, HEALTHY="no"), 1)
    # Restarted and counted for its 503s (an incarnation too slow to start before its checks ran
    # out is restarted for refused connections instead, and the next one is waited for).
    failed = wait_until(
        lambda: (i := client.instances(JOB)[0]).failures >= 1 and "HTTP 503" in i.message and i,
        timeout=120,
    )
    assert failed.message == "health check failed 30 times in a row: HTTP 503 from /health"


@pytest.mark.parametrize(("rollback", "final"), [(True, S.ROLLED_BACK), (False, S.FAILED)])
def test_a_command_that_does_not_exist_fails_the_update(local, rollback, final) -> None:
    _s, client = local
    client.create_job(JOB, service(), 2)
    wait_until(lambda: states(client) == [I.HEALTHY] * 2, timeout=30)
    broken = TaskConfig.make(["/no/such/program", "--flag"], health_check=HTTP)
    key = client.start_update(
        JOB, broken, 2, settings=Settings(rollback_on_failure=rollback, **_quick())
    )
    done = client.wait(key, interval_s=0.1, timeout_s=120)
    assert done.status is final
    failed = [
        e for e in done.record.instance_events if e.action is InstanceAction.INSTANCE_UPDATE_FAILED
    ]
    assert failed and "cannot start '/no/such/program'" in failed[0].message
    assert "No such file or directory" in failed[0].message
    if rollback:
        wait_until(lambda: states(client) == [I.HEALTHY] * 2, timeout=30)
        assert client.get_job(JOB).instances() == dict.fromkeys(range(2), service())


def test_a_good_update_replaces_every_instance(local) -> None:
    s, client = local
    client.create_job(JOB, service("1"), 3)
    wait_until(lambda: states(client) == [I.HEALTHY] * 3, timeout=30)
    before = s.driver.pids(JOB)
    key = client.start_update(JOB, service("2"), 4, settings=QUICK)
    assert client.wait(key, interval_s=0.1, timeout_s=120).status is S.ROLLED_FORWARD
    wait_until(lambda: states(client) == [I.HEALTHY] * 4, timeout=30)
    after = s.driver.pids(JOB)
    assert not set(before.values()) & set(after.values())
    assert all(i.at_desired_config for i in client.instances(JOB))


def test_stop_escalates_to_sigkill_after_the_grace(local, tmp_path) -> None:
    s, client = local
    stubborn = TaskConfig.make(
        ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"], stop_grace_ms=300
    )
    client.create_job(JOB, stubborn, 1)
    wait_until(lambda: states(client) == [I.HEALTHY], timeout=30)
    pid = s.driver.pids(JOB)[0]
    client.kill_job(JOB)
    wait_until(lambda: start_ticks(pid) is None, timeout=10, message="SIGKILL never came")


def _quick() -> dict[str, int]:
    return {"min_wait_in_instance_running_ms": 200}


def test_a_killed_jobs_instances_show_until_they_are_gone(local, tmp_path) -> None:
    _, client = local
    gate = tmp_path / "gate"
    # On SIGTERM each instance waits for the gate: it stops only once the test has looked.
    slow = TaskConfig.make(
        [
            "sh",
            "-c",
            f"trap 'while [ ! -e {gate} ]; do sleep 0.05; done; exit 0' TERM; "
            "while true; do sleep 0.1; done",
        ],
        stop_grace_ms=60_000,
    )
    client.create_job(JOB, slow, 2)
    wait_until(lambda: states(client) == [I.HEALTHY] * 2, timeout=30)
    client.kill_job(JOB)
    try:
        stopping = client.instances(JOB)  # the job is gone, its instances are still stopping
        assert len(stopping) == 2 and all(not i.at_desired_config for i in stopping)
        assert {i.state for i in stopping} <= {I.KILLING, I.HEALTHY}
    finally:
        gate.touch()
    wait_until(lambda: not client.has_instances(JOB), timeout=30)


def test_shell_commands_port_substitution_and_working_directory(local) -> None:
    s, client = local
    configs = {
        # a shell command; the service finds its port in $PORT, and runs from working_dir
        "shell": TaskConfig.make(
            f"exec {sys.executable} service.py", working_dir="examples", health_check=TCP
        ),
        # {port} in the arguments
        "argv": TaskConfig.make(
            [sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"],
            health_check=TCP,
        ),
    }
    for name, config in configs.items():
        job = JobKey("www", "test", name)
        client.create_job(job, config, 1)
        wait_until(lambda job=job: states(client, job) == [I.HEALTHY], timeout=30)
        assert client.instances(job)[0].failures == 0
        client.kill_job(job)
        wait_until(lambda job=job: not s.driver.pids(job), timeout=30)


def test_instance_logs_are_capped(tmp_path) -> None:
    log = tmp_path / "0.log"
    log.write_bytes(b"x" * 2000)
    assert cap_log(log, 1000) is True
    assert log.stat().st_size == 0
    assert (tmp_path / "0.log.1").stat().st_size == 2000
    assert cap_log(log, 1000) is False
