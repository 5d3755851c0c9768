"""Failover with real scheduler processes on a real ZooKeeper: kill -9 of the leader, a real
session expiry, and SIGSTOP past the session timeout. In each, a follower takes over, every
active update continues per the rules, and the old leader writes nothing and acts no more."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from types import SimpleNamespace

import pytest
from kazoo.client import KazooClient

from scheduler.paths import Paths
from scheduler.zkstore import ZooKeeperStorage
from updater.events import Cause, InstanceAction, StatusEvent
from updater.job import Job
from updater.keys import JobKey
from updater.record import UpdateRequest, plan_update
from updater.settings import Settings, Strategy
from updater.status import UpdateStatus
from updater.storage import UpdateWrite
from updater.task import TaskConfig

from procs import SchedulerProcess, expire_session, leader, wait_for_leader, writes
from waiting import wait_until

S = UpdateStatus
SESSION_S = 4.0
SIM = {"sim.start_ms": "150", "sim.healthy_after_ms": "150", "sim.kill_ms": "100"}
OLD = TaskConfig.make(["server", "--version=1"], labels=SIM)
NEW = TaskConfig.make(["server", "--version=2"], labels=SIM)
WEB, PAUSED, HELD = (JobKey("www", "prod", n) for n in ("web", "paused", "held"))

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(zk_server, tmp_path):
    paths = Paths(f"/failover-{uuid.uuid4().hex[:8]}")
    admin = KazooClient(hosts=zk_server.hosts)
    admin.start(timeout=10)
    store = ZooKeeperStorage(admin, paths)  # unfenced: test set-up only
    store.ensure_layout()
    procs: list[SchedulerProcess] = []

    def spawn(name: str) -> SchedulerProcess:
        proc = SchedulerProcess(name, zk_server.hosts, paths, tmp_path, SESSION_S).start()
        procs.append(proc)
        return proc

    yield SimpleNamespace(paths=paths, admin=admin, store=store, spawn=spawn, hosts=zk_server.hosts)
    for proc in procs:
        proc.cleanup()
    admin.stop()
    admin.close()


def seed(store: ZooKeeperStorage) -> SimpleNamespace:
    """A rolling update of 10 instances, a paused one, and a coordinated one whose monitor
    heartbeated the old leader (ROLLING_FORWARD) with a long timeout."""
    now = int(time.time() * 1000)
    keys = {}
    specs = [
        # 2 s per batch: the failover lands while 3+ batches (6+ s) are left even when a loaded
        # machine delays the test's own reaction to "2 updated".
        (WEB, Settings(strategy=Strategy.batch(2), min_wait_in_instance_running_ms=2000)),
        (PAUSED, Settings()),
        (HELD, Settings(heartbeat_timeout_ms=120_000)),
    ]
    for job, settings in specs:
        store.create_job(Job.uniform(job, OLD, 10 if job == WEB else 2))
        record, _ = plan_update(
            UpdateRequest(job, NEW, 10 if job == WEB else 2, settings),
            store.get_job(job),
            f"u-{job.name}",
            "alice",
            "",
            now,
        )
        store.start_update(record)
        keys[job.name] = record.key
    store.write(
        UpdateWrite.make(
            keys["paused"],
            1,
            StatusEvent(S.ROLL_FORWARD_PAUSED, now, "bob", "hold", Cause.OPERATOR),
        )
    )
    store.write(
        UpdateWrite.make(
            keys["held"], 1, StatusEvent(S.ROLLING_FORWARD, now, "mon", "", Cause.HEARTBEAT)
        )
    )
    return SimpleNamespace(**keys)


def updated(store: ZooKeeperStorage, key) -> int:
    events = store.get_update(key).instance_events
    return sum(1 for e in events if e.action is InstanceAction.INSTANCE_UPDATED)


def start_pair(cluster) -> tuple[SchedulerProcess, SchedulerProcess]:
    a = cluster.spawn("a")
    wait_for_leader(cluster.admin, cluster.paths, "a")
    b = cluster.spawn("b")
    wait_until(lambda: len(cluster.admin.get_children(cluster.paths.election)) == 2, timeout=30)
    return a, b


def check_outcome(cluster, keys, old: SchedulerProcess, new: SchedulerProcess, cut_ms: int) -> None:
    """The rules held across the failover, and nothing of `old` landed after `cut_ms`."""
    store = cluster.store
    wait_until(lambda: store.get_update(keys.web).status.is_terminal, timeout=90)
    record = store.get_update(keys.web)
    assert record.status is S.ROLLED_FORWARD
    counts = Counter((e.instance_id, e.action) for e in record.instance_events)
    assert max(counts.values()) == 1, "an instance event was written twice"
    assert {i for i, a in counts if a is InstanceAction.INSTANCE_UPDATED} == set(range(10))
    assert set(store.get_job(WEB).instances().values()) == {NEW}
    # Paused stays paused; the coordinated one takes no action without a heartbeat.
    assert store.get_update(keys.paused).status is S.ROLL_FORWARD_PAUSED
    held = store.get_update(keys.held)
    assert held.status is S.ROLLING_FORWARD and held.instance_events == ()
    for proc in (old, new):
        acted = [a for a in proc.actions() if a["source"] == "update"]
        assert not [a for a in acted if a["job"] in (str(PAUSED), str(HELD))]
    # The old leader wrote nothing after the cut, the new one everything after it.
    for ctime, writer, path in writes(cluster.admin, cluster.paths, keys.web):
        if writer == old.name:
            assert ctime <= cut_ms, f"{path} written by the deposed leader"
    assert any(w == new.name for _, w, _ in writes(cluster.admin, cluster.paths, keys.web))
    assert new.actions(), "the new leader never acted"


def test_kill_9_of_the_leader_mid_update(cluster) -> None:
    keys = seed(cluster.store)
    a, b = start_pair(cluster)
    wait_until(lambda: updated(cluster.store, keys.web) >= 2, timeout=30)
    cut = int(time.time() * 1000)
    a.kill()
    info = wait_for_leader(cluster.admin, cluster.paths, "b", timeout=SESSION_S + 20)
    assert info["since"] >= cut
    check_outcome(cluster, keys, a, b, cut)
    assert all(x["t"] <= cut for x in a.actions())
    assert b.terminate() == 0


def test_real_session_expiry_of_the_leader(cluster) -> None:
    keys = seed(cluster.store)
    a, b = start_pair(cluster)
    wait_until(lambda: updated(cluster.store, keys.web) >= 2, timeout=30)
    cut = int(time.time() * 1000)
    expire_session(cluster.hosts, a.session())
    info = wait_for_leader(cluster.admin, cluster.paths, "b", timeout=SESSION_S + 20)
    wait_until(lambda: a.logged("leader_memory_dropped"), timeout=30, message="a kept its memory")
    check_outcome(cluster, keys, a, b, cut)
    assert all(x["t"] <= info["since"] for x in a.actions())
    assert a.proc.poll() is None, "the deposed leader should keep running as a follower"
    assert leader(cluster.admin, cluster.paths)["id"] == "b"


def test_sigstop_past_the_session_timeout_then_sigcont(cluster) -> None:
    keys = seed(cluster.store)
    a, b = start_pair(cluster)
    wait_until(lambda: updated(cluster.store, keys.web) >= 2, timeout=30)
    a.signal(signal.SIGSTOP)
    cut = int(time.time() * 1000)
    frozen_actions = len(a.actions())
    wait_for_leader(cluster.admin, cluster.paths, "b", timeout=SESSION_S + 20)
    wait_until(lambda: b.actions(), timeout=30, message="b never acted")
    a.signal(signal.SIGCONT)
    wait_until(
        lambda: a.logged("leadership_changed", role="follower"),
        timeout=30,
        message="a did not notice it lost leadership",
    )
    check_outcome(cluster, keys, a, b, cut)
    assert len(a.actions()) == frozen_actions, "the old leader acted after SIGCONT"
    assert a.terminate() == 0 and b.terminate() == 0
