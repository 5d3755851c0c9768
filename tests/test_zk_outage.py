"""ZooKeeper outages: stopped for 20 s mid-update, not there yet when a scheduler starts, and a
3-node ensemble losing its leader. Schedulers keep running, report not-ready, and recover by
themselves; no event is lost."""

from __future__ import annotations

import uuid
from collections import Counter
from types import SimpleNamespace

import pytest
from kazoo.client import KazooClient

from scheduler.paths import Paths
from scheduler.zkserver import EmbeddedZooKeeper, ZooKeeperEnsemble, find_free_port
from scheduler.zkstore import ZooKeeperStorage
from updater.events import InstanceAction
from updater.job import Job
from updater.keys import JobKey
from updater.record import UpdateRequest, plan_update
from updater.settings import Settings, Strategy
from updater.status import UpdateStatus
from updater.task import TaskConfig

from procs import SchedulerProcess, http_status, wait_for_leader
from waiting import stays_true, wait_until

pytestmark = pytest.mark.slow
SIM = {"sim.start_ms": "150", "sim.healthy_after_ms": "150", "sim.kill_ms": "100"}
OLD = TaskConfig.make(["server", "--version=1"], labels=SIM)
NEW = TaskConfig.make(["server", "--version=2"], labels=SIM)
JOB = JobKey("www", "prod", "web")


def seed(hosts: str, paths: Paths, count: int = 10, min_wait_ms: int = 1000) -> object:
    admin = KazooClient(hosts=hosts)
    admin.start(timeout=15)
    try:
        store = ZooKeeperStorage(admin, paths)
        store.ensure_layout()
        store.create_job(Job.uniform(JOB, OLD, count))
        settings = Settings(strategy=Strategy.batch(2), min_wait_in_instance_running_ms=min_wait_ms)
        record, _ = plan_update(
            UpdateRequest(JOB, NEW, count, settings), store.get_job(JOB), "u1", "al", "", 0
        )
        store.start_update(record)
        return record.key
    finally:
        admin.stop()
        admin.close()


def reader(hosts: str, paths: Paths) -> SimpleNamespace:
    client = KazooClient(hosts=hosts, connection_retry={"max_tries": -1, "max_delay": 1.0})
    client.start(timeout=15)
    return SimpleNamespace(client=client, store=ZooKeeperStorage(client, paths))


def events_done(store: ZooKeeperStorage, key) -> int:
    return sum(
        1
        for e in store.get_update(key).instance_events
        if e.action is InstanceAction.INSTANCE_UPDATED
    )


def check_finished_once(store: ZooKeeperStorage, key, count: int) -> None:
    record = store.get_update(key)
    assert record.status is UpdateStatus.ROLLED_FORWARD
    counts = Counter((e.instance_id, e.action) for e in record.instance_events)
    assert max(counts.values()) == 1
    assert {i for i, a in counts if a is InstanceAction.INSTANCE_UPDATED} == set(range(count))


def test_zookeeper_stopped_for_20s_mid_update(tmp_path) -> None:
    server = EmbeddedZooKeeper(tmp_path / "zk")
    server.start()
    paths = Paths(f"/outage-{uuid.uuid4().hex[:8]}")
    key = seed(server.hosts, paths)
    procs = [SchedulerProcess(n, server.hosts, paths, tmp_path, 10.0) for n in ("a", "b")]
    view = reader(server.hosts, paths)
    try:
        procs[0].start()
        wait_for_leader(view.client, paths, "a")
        procs[1].start()
        wait_until(lambda: len(view.client.get_children(paths.election)) == 2, timeout=30)
        wait_until(lambda: events_done(view.store, key) >= 2, timeout=30)
        server.stop()
        wait_until(
            lambda: all((s := http_status(p)) and s[0] == 503 for p in procs),
            timeout=15,
            message="schedulers still report ready without ZooKeeper",
        )
        stays_true(20, lambda: all(p.proc.poll() is None for p in procs), "a scheduler died")
        server.start()
        wait_until(lambda: view.store.get_update(key).status.is_terminal, timeout=60)
        check_finished_once(view.store, key, 10)
        assert all(p.proc.poll() is None for p in procs)
        wait_until(lambda: all((s := http_status(p)) and s[0] == 200 for p in procs), timeout=15)
        # Each state change is logged once, not once per retry.
        for p in procs:
            states = [e["state"] for e in p.log_events() if e.get("event") == "zookeeper_state"]
            assert states.count("suspended") == 1, states
        assert all(p.terminate() == 0 for p in procs)
    finally:
        for p in procs:
            p.cleanup()
        view.client.stop()
        server.stop()


def test_scheduler_started_before_zookeeper_recovers_by_itself(tmp_path) -> None:
    port = find_free_port()
    hosts = f"127.0.0.1:{port}"
    paths = Paths(f"/late-{uuid.uuid4().hex[:8]}")
    proc = SchedulerProcess("early", hosts, paths, tmp_path).start()
    server = EmbeddedZooKeeper(tmp_path / "zk", port=port)
    try:
        wait_until(lambda: (s := http_status(proc)) and s[0] == 503, timeout=30)
        assert proc.proc.poll() is None
        server.start()
        view = reader(hosts, paths)
        try:
            wait_for_leader(view.client, paths, "early", timeout=30)
            wait_until(lambda: (s := http_status(proc)) and s[0] == 200, timeout=15)
        finally:
            view.client.stop()
        assert proc.terminate() == 0
    finally:
        proc.cleanup()
        server.stop()


def test_ensemble_losing_its_zookeeper_leader_does_not_stop_the_update(tmp_path) -> None:
    ensemble = ZooKeeperEnsemble(tmp_path / "ensemble", size=3)
    ensemble.start()
    paths = Paths(f"/ensemble-{uuid.uuid4().hex[:8]}")
    key = seed(ensemble.hosts, paths, min_wait_ms=500)
    proc = SchedulerProcess("a", ensemble.hosts, paths, tmp_path, session_timeout_s=10.0).start()
    view = reader(ensemble.hosts, paths)
    try:
        wait_for_leader(view.client, paths, "a")
        wait_until(lambda: events_done(view.store, key) >= 2, timeout=30)
        zk_leader = ensemble.leader_index()
        assert zk_leader is not None
        ensemble.kill_node(zk_leader)
        wait_until(
            lambda: (i := ensemble.leader_index()) is not None and i != zk_leader, timeout=30
        )
        wait_until(lambda: view.store.get_update(key).status.is_terminal, timeout=60)
        check_finished_once(view.store, key, 10)
        assert proc.proc.poll() is None
        assert wait_for_leader(view.client, paths, "a")["id"] == "a"  # kept its session
        assert proc.terminate() == 0
    finally:
        proc.cleanup()
        view.client.stop()
        ensemble.stop()
