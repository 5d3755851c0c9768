"""A scheduler that leads again after another one led in between (issue 13, D1): it must take
what runs from the records, not from what it remembers of its own earlier term. Real scheduler
processes on a real ZooKeeper, local driver; the instances are counted from /proc by a marker in
their environment, so a duplicate or an orphan shows whoever started it.

    A leads and starts the job; SIGSTOP A past its session; B takes over and adopts; SIGCONT A
    (a follower now); an update, so B replaces instances with its own; kill -9 B; A leads again.
"""

from __future__ import annotations

import signal
import socket
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from api.client import PulsegateClient
from scheduler.drivers.records import InstanceRecords
from scheduler.paths import Paths
from scheduler.zkstore import ZooKeeperStorage
from updater.events import InstanceAction
from updater.keys import JobKey
from updater.settings import Settings, Strategy
from updater.status import UpdateStatus
from updater.task import HealthCheck, HealthCheckKind, TaskConfig

from procs import SchedulerProcess, http_status, kill_marked, marked_processes, wait_for_leader
from waiting import wait_until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
JOB = JobKey("www", "test", "d1")
COUNT = 3
# A slow start on a loaded machine is not a failure: checks begin after 3 s.
CHECK = HealthCheck(
    HealthCheckKind.HTTP, interval_ms=200, timeout_ms=1000, initial_delay_ms=3000,
    unhealthy_threshold=5,
)  # fmt: skip


def service(version: str, marker: str) -> TaskConfig:
    return TaskConfig.make(
        [sys.executable, str(ROOT / "examples" / "service.py")],
        environment={"VERSION": version, "PULSEGATE_MARKER": marker},
        health_check=CHECK,
        stop_grace_ms=2000,
    )


@pytest.fixture
def marker():
    found = uuid.uuid4().hex
    yield found
    kill_marked(found)  # whatever a failure left running: this test started it


@pytest.fixture
def admin(zk_server):
    client = KazooClient(hosts=zk_server.hosts)
    client.start(timeout=10)
    yield client
    client.stop()
    client.close()


def role(proc: SchedulerProcess) -> str | None:
    found = http_status(proc, "/ready")
    return None if found is None else found[1].get("role")


def test_a_scheduler_leading_again_adopts_the_other_leaders_processes(
    zk_server, admin, tmp_path, marker
) -> None:
    paths = Paths(f"/d1-{uuid.uuid4().hex[:8]}")
    records = InstanceRecords(ZooKeeperStorage(admin, paths), socket.gethostname())
    procs: list[SchedulerProcess] = []

    def start(name: str) -> SchedulerProcess:
        proc = SchedulerProcess(
            name, zk_server.hosts, paths, tmp_path, 4.0, args=["--driver", "local"]
        ).start()
        procs.append(proc)
        return proc

    try:
        a = start("a")
        wait_for_leader(admin, paths, "a")
        b = start("b")
        wait_until(lambda: role(b) == "follower", timeout=30, message="b is not a follower")
        client = PulsegateClient(zookeeper=zk_server.hosts, zk_root=paths.root, retry_for_s=60)
        client.create_job(JOB, service("1", marker), COUNT)
        wait_until(lambda: client.is_settled(JOB, COUNT), timeout=60)
        started_by_a = set(marked_processes(marker))
        assert len(started_by_a) == COUNT

        a.signal(signal.SIGSTOP)  # past its session: B takes over and adopts A's processes
        wait_for_leader(admin, paths, "b", timeout=60)
        wait_until(lambda: client.is_settled(JOB, COUNT), timeout=60)
        assert set(marked_processes(marker)) == started_by_a, "b did not adopt what a started"
        a.signal(signal.SIGCONT)
        wait_until(lambda: role(a) == "follower", timeout=30, message="a is not a follower")

        settings = Settings(strategy=Strategy.batch(1), min_wait_in_instance_running_ms=1000)
        key = client.start_update(JOB, service("2", marker), COUNT, settings=settings)
        wait_until(lambda: len(updated(client, key)) >= 1, timeout=90)  # B replaced one at least
        b.kill()
        wait_for_leader(admin, paths, "a", timeout=60)

        done = client.wait(key, interval_s=0.2, timeout_s=120)
        assert done.status is UpdateStatus.ROLLED_FORWARD, done.status
        wait_until(
            lambda: client.is_settled(JOB, COUNT),
            timeout=60,
            message=f"not settled: {client.instances(JOB)}; running {marked_processes(marker)}",
        )
        running = wait_until(
            lambda: len(found := marked_processes(marker)) <= COUNT and found,
            timeout=30,
            message=f"more than {COUNT} instances run: {sorted(marked_processes(marker))}",
        )
        ports = Counter(env["PORT"] for env in running.values())
        assert len(running) == COUNT and max(ports.values()) == 1, ports  # each exactly once
        assert {env["VERSION"] for env in running.values()} == {"2"}
        recorded = {r.pid for (job, _), r in records.load().items() if job == JOB}
        assert set(running) == recorded, "a process runs that no record (no leader) manages"
        starts = Counter(
            e.instance_id
            for e in client.details(key).record.instance_events
            if e.action is InstanceAction.INSTANCE_UPDATING
        )
        assert sorted(starts) == list(range(COUNT)) and set(starts.values()) == {1}, starts

        client.kill_job(JOB)
        wait_until(lambda: not marked_processes(marker), timeout=60)
        client.close()
    finally:
        for proc in procs:
            proc.cleanup()


def updated(client: PulsegateClient, key) -> list[int]:
    events = client.details(key).record.instance_events
    return [e.instance_id for e in events if e.action is InstanceAction.INSTANCE_UPDATED]
