"""`pulsegate scheduler run` as a process: clean SIGTERM, config errors, rule 8 after takeover."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from kazoo.client import KazooClient

from scheduler.paths import Paths
from scheduler.zkstore import ZooKeeperStorage
from updater.events import Cause, StatusEvent
from updater.job import Job
from updater.keys import JobKey
from updater.record import UpdateRequest, plan_update
from updater.settings import Settings
from updater.status import UpdateStatus
from updater.storage import UpdateWrite
from updater.task import TaskConfig

from procs import ROOT, SchedulerProcess, wait_for_leader
from waiting import wait_until

pytestmark = pytest.mark.slow
SIM = {"sim.start_ms": "100", "sim.healthy_after_ms": "100"}
OLD = TaskConfig.make(["server", "--version=1"], labels=SIM)
NEW = TaskConfig.make(["server", "--version=2"], labels=SIM)


@pytest.fixture
def admin(zk_server):
    client = KazooClient(hosts=zk_server.hosts)
    client.start(timeout=10)
    yield client
    client.stop()
    client.close()


def test_sigterm_releases_leadership_at_once_and_kills_no_instance(zk_server, admin, tmp_path):
    paths = Paths(f"/term-{uuid.uuid4().hex[:8]}")
    store = ZooKeeperStorage(admin, paths)
    store.ensure_layout()
    store.create_job(Job.uniform(JobKey("www", "prod", "web"), OLD, 3))
    # A long session timeout: a quick takeover proves the release, not an expiry.
    a = SchedulerProcess("a", zk_server.hosts, paths, tmp_path, session_timeout_s=60).start()
    b = SchedulerProcess("b", zk_server.hosts, paths, tmp_path, session_timeout_s=60)
    try:
        wait_for_leader(admin, paths, "a")
        b.start()
        wait_until(lambda: len(admin.get_children(paths.election)) == 2, timeout=30)
        wait_until(lambda: a.actions(), timeout=15)
        stopped = time.monotonic()
        assert a.terminate() == 0
        wait_for_leader(admin, paths, "b", timeout=30)
        assert time.monotonic() - stopped < 30  # well inside the 60 s session timeout
        assert a.logged("leadership_released")
        assert not [x for x in a.actions() if x["kind"] == "kill"]
    finally:
        a.cleanup()
        b.cleanup()


def test_bad_config_is_refused_naming_the_key_and_line(tmp_path) -> None:
    config = tmp_path / "pulsegate.toml"
    config.write_text('[zookeeper]\nhosts = "embedded"\nsession_timeout_s = "ten"\n')
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "scheduler", "run", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "pulsegate.toml:3: zookeeper.session_timeout_s" in result.stderr


def test_rule8_awaiting_pulse_is_recorded_only_a_full_timeout_after_takeover(
    zk_server, admin, tmp_path
) -> None:
    paths = Paths(f"/rule8-{uuid.uuid4().hex[:8]}")
    store = ZooKeeperStorage(admin, paths)
    store.ensure_layout()
    job = JobKey("www", "prod", "web")
    store.create_job(Job.uniform(job, OLD, 3))
    record, _ = plan_update(
        UpdateRequest(job, NEW, 3, Settings(heartbeat_timeout_ms=3000)),
        store.get_job(job),
        "u1",
        "al",
        "",
        0,
    )
    store.start_update(record)
    heartbeat = StatusEvent(UpdateStatus.ROLLING_FORWARD, 1, "mon", "", Cause.HEARTBEAT)
    store.write(UpdateWrite.make(record.key, 1, heartbeat))
    proc = SchedulerProcess("a", zk_server.hosts, paths, tmp_path).start()
    try:
        since = wait_for_leader(admin, paths, "a")["since"]
        wait_until(
            lambda: store.get_update(record.key).status is UpdateStatus.ROLL_FORWARD_AWAITING_PULSE,
            timeout=30,
        )
        event = store.get_update(record.key).status_events[-1]
        assert event.cause is Cause.HEARTBEAT_TIMEOUT
        assert event.timestamp_ms >= since + 3000
        assert store.get_update(record.key).instance_events == ()
        assert not [x for x in proc.actions() if x["source"] == "update"]
    finally:
        proc.cleanup()
