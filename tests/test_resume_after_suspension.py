"""A leader cut off from ZooKeeper mid-replacement, back in the same session after its heartbeat
went stale, does not finish the replacement on the stale heartbeat: the new version starts only
after a fresh one (DESIGN §3 rules 2 and 8). Found by bench/chaos.py: the driver had stopped the
old process during the outage and started the new one the moment the leader was back."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from scheduler.zkserver import EmbeddedZooKeeper
from updater.keys import JobKey
from updater.settings import Settings, Strategy
from updater.status import UpdateStatus
from updater.task import TaskConfig

from cluster import client_for, start_scheduler, wait_serving
from procs import kill_marked, marked_processes
from waiting import wait_until

pytestmark = pytest.mark.slow
JOB = JobKey("www", "test", "resume")
TIMEOUT_MS = 2000


def lingering(version: str, marker: str, log: Path) -> TaskConfig:
    """Takes 4 s to stop after SIGTERM, so the outage can begin between its stop and the start
    of its replacement."""
    script = (
        f"trap 'echo term $VERSION >> {log}; sleep 4; exit 0' TERM; "
        f"echo start $VERSION >> {log}; while :; do sleep 0.2; done"
    )
    return TaskConfig.make(
        script, environment={"VERSION": version, "PULSEGATE_MARKER": marker}, stop_grace_ms=10_000
    )


def versions(marker: str) -> set[str]:
    return {env.get("VERSION", "") for env in marked_processes(marker).values()}


def test_a_leader_back_from_a_suspension_waits_for_a_fresh_heartbeat(tmp_path: Path) -> None:
    marker, log = uuid.uuid4().hex, tmp_path / "instance.log"
    zk = EmbeddedZooKeeper(tmp_path / "zk", tick_ms=500)
    zk.start()
    scheduler = None
    try:
        scheduler = start_scheduler(
            zk.hosts, "/resume", tmp_path / "s", **{
                "driver.kind": "local", "zookeeper.session_timeout_s": 30.0,
            },
        )  # fmt: skip
        wait_serving(scheduler)
        client = client_for(scheduler, retry_for_s=60)
        client.create_job(JOB, lingering("1", marker, log), 1)
        wait_until(lambda: client.is_settled(JOB, 1), timeout=30)
        settings = Settings(
            strategy=Strategy.batch(1),
            min_wait_in_instance_running_ms=0,
            heartbeat_timeout_ms=TIMEOUT_MS,
        )
        key = client.start_update(JOB, lingering("2", marker, log), 1, settings=settings)
        client.heartbeat(key)  # the replacement starts: v1 gets SIGTERM and lingers
        wait_until(lambda: log.exists() and "term 1" in log.read_text(), timeout=30)
        zk.kill()  # the leader is cut off while v1 is still stopping
        wait_until(lambda: versions(marker) == set(), timeout=30, message="v1 did not stop")
        zk.start()  # the same session comes back; the heartbeat is long stale
        wait_until(
            lambda: client.details(key).status is UpdateStatus.ROLL_FORWARD_AWAITING_PULSE,
            timeout=60,
            message="the lapse was never recorded",
        )
        assert "start 2" not in log.read_text(), "v2 started on a stale heartbeat"
        assert versions(marker) == set()
        client.heartbeat(key)
        wait_until(lambda: versions(marker) == {"2"}, timeout=30, message="v2 never started")
        client.kill_job(JOB)
        wait_until(lambda: not marked_processes(marker), timeout=30)
        client.close()
    finally:
        if scheduler is not None:
            scheduler.stop()
        zk.stop()
        kill_marked(marker)
