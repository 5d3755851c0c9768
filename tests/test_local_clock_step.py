"""Min-wait is a duration: the local driver's `healthy_since` moves with a wall-clock step of
the service clock (as leases and timers do), so a step forward cannot count an instance as
having run healthy for longer than it has. A real process; the wall clock is injected."""

from __future__ import annotations

import time
from pathlib import Path

from scheduler.clock import STEP_MS, SystemClock
from scheduler.drivers.local import LocalDriver
from updater.driver import InstanceState
from updater.keys import JobKey
from updater.task import HealthCheck, HealthCheckKind, TaskConfig

from waiting import wait_until

JOB = JobKey("www", "test", "stepped")
HOUR_MS = 3_600_000
HOUR_NS = HOUR_MS * 1_000_000


def test_a_wall_step_does_not_age_healthy_since(tmp_path: Path) -> None:
    stepped = [0]
    clock = SystemClock(wall_ns=lambda: time.time_ns() + stepped[0])
    quick = HealthCheck(HealthCheckKind.COMMAND, command=("true",), interval_ms=50)
    driver = LocalDriver(clock, tmp_path, tmp_path / "logs")
    driver.set_acting(True)
    try:
        driver.reconcile(JOB, {0: TaskConfig(("sleep", "300"), health_check=quick)})
        seen = wait_until(
            lambda: (i := driver.instances(JOB).get(0)) and i.state is InstanceState.HEALTHY and i,
            timeout=30,
        )
        healthy_for = clock.now() - seen.healthy_since_ms
        stepped[0] = HOUR_NS  # NTP (or an operator) moves the wall clock an hour forward
        wait_until(
            lambda: clock.now() >= time.time_ns() // 1_000_000 + HOUR_MS - STEP_MS,
            timeout=10,
            message="the clock never followed the step",
        )
        after = driver.instances(JOB)[0]
        aged = clock.now() - after.healthy_since_ms - healthy_for
        # Unshifted, the instance would look an hour older; real time between the reads is
        # far below the bound.
        assert aged < HOUR_MS // 2, f"healthy for an extra {aged} ms after a wall-clock step"
    finally:
        driver.reconcile(JOB, {})
        wait_until(lambda: not driver.instances(JOB), timeout=30)
        driver.stop()
