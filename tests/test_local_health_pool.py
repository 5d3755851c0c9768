"""Health checks share one pool of threads: a job whose checks hang must not hold back another
job's verdicts. Real processes; the hung checks wait on a gate file the test opens at the end,
so every process started here ends by itself."""

from __future__ import annotations

from pathlib import Path

from scheduler.clock import SystemClock
from scheduler.drivers.local import LocalDriver
from updater.driver import InstanceState
from updater.keys import JobKey
from updater.task import HealthCheck, HealthCheckKind, TaskConfig

from waiting import wait_until

HUNG = JobKey("www", "test", "hung")
FINE = JobKey("www", "test", "fine")


def test_a_job_with_hanging_checks_leaves_room_for_the_others(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    hanging = HealthCheck(
        HealthCheckKind.COMMAND,
        command=("sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done"),
        interval_ms=50,
        timeout_ms=120_000,
    )
    quick = HealthCheck(HealthCheckKind.COMMAND, command=("true",), interval_ms=50)
    sleeper = ("sleep", "300")
    driver = LocalDriver(SystemClock(), tmp_path, tmp_path / "logs", health_workers=4)
    driver.set_acting(True)
    try:
        driver.reconcile(HUNG, dict.fromkeys(range(4), TaskConfig(sleeper, health_check=hanging)))
        wait_until(lambda: len(driver.pids(HUNG)) == 4, timeout=30)
        driver.reconcile(FINE, {0: TaskConfig(sleeper, health_check=quick)})
        wait_until(
            lambda: [i.state for i in driver.instances(FINE).values()] == [InstanceState.HEALTHY],
            timeout=30,
            message="the other job's check never ran: the hung job holds every worker",
        )
    finally:
        gate.touch()  # the hung checks finish
        driver.reconcile(HUNG, {})
        driver.reconcile(FINE, {})
        wait_until(lambda: not driver.instances(HUNG) and not driver.instances(FINE), timeout=30)
        driver.stop()
