"""Issue 10's gates end to end: real scheduler processes on a real ZooKeeper, monitors as
Thrift clients sending HeartbeatDetails. Two named monitors with quorum 2 (one goes quiet: the
update blocks with "quorum 1 of 2", nothing moves, it comes back, the update continues); a
per-batch acknowledgement run; bounded blocks that pause and that roll back, with the leader
killed in the middle of the block."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from kazoo.client import KazooClient
from thriftpy2.rpc import make_client

from api import convert
from api.idl import Service
from api.idl import pulsegate as t
from scheduler.paths import Paths
from scheduler.zkstore import ZooKeeperStorage
from updater.events import SYSTEM_USER, Cause, InstanceAction
from updater.keys import JobKey, UpdateKey
from updater.record import UpdateRequest
from updater.settings import OnBlocked, Settings, Strategy
from updater.status import UpdateStatus
from updater.task import TaskConfig

from procs import SchedulerProcess, api_address, leader, wait_for_leader
from waiting import stays_true, wait_until

S = UpdateStatus
SIM = {"sim.start_ms": "50", "sim.healthy_after_ms": "50", "sim.kill_ms": "20"}
V1 = TaskConfig.make(["server", "--version=1"], labels=SIM)
V2 = TaskConfig.make(["server", "--version=2"], labels=SIM)
BEAT_S = 0.1
TIMEOUT_MS = 1_500

pytestmark = pytest.mark.slow


def connect(address: str) -> Any:
    host, _, port = address.rpartition(":")
    return make_client(Service, host, int(port), timeout=10_000)


class Monitor:
    """A monitor on its own connection: heartbeats every BEAT_S while `beating` is set, naming
    itself; with `acking` set it acknowledges the batch the answer says is awaiting its ack."""

    def __init__(self, cluster: SimpleNamespace, key: UpdateKey, name: str) -> None:
        self.cluster, self.key, self.name = cluster, key, name
        self.beating, self.acking, self.stopped = threading.Event(), threading.Event(), False
        self.answers: list[Any] = []
        self.acked: list[tuple[int, list[int]]] = []
        self._ack: int | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client = None
        wire_key = convert.update_key_out(self.key)
        while not self.stopped:
            if not self.beating.wait(BEAT_S):
                continue
            try:
                client = client or connect(self.cluster.address())
                details = t.HeartbeatDetails(monitor=self.name, ackBatch=self._ack)
                answer = client.heartbeatJobUpdate(wire_key, None, details)
            except Exception:  # the leader is gone or moving: find it again
                client = None
                self.beating.wait(BEAT_S)
                continue
            self.answers.append(answer)
            gate = answer.gate
            if self.acking.is_set() and gate is not None and gate.awaitingAck:
                if self._ack != gate.awaitingAck:
                    self.acked.append((gate.awaitingAck, list(answer.batchInstances or [])))
                self._ack = gate.awaitingAck
            threading.Event().wait(BEAT_S)  # the monitor's interval, not a wait for an outcome

    def close(self) -> None:
        self.stopped = True
        self.beating.set()
        self._thread.join(timeout=10)


@pytest.fixture
def cluster(zk_server, tmp_path) -> Iterator[SimpleNamespace]:
    paths = Paths(f"/gates-{uuid.uuid4().hex[:8]}")
    admin = KazooClient(hosts=zk_server.hosts)
    admin.start(timeout=10)
    store = ZooKeeperStorage(admin, paths)  # reads, and unfenced test set-up only
    store.ensure_layout()
    procs: list[SchedulerProcess] = []
    monitors: list[Monitor] = []
    ns = SimpleNamespace(paths=paths, admin=admin, store=store)

    def spawn(name: str) -> SchedulerProcess:
        proc = SchedulerProcess(name, zk_server.hosts, paths, tmp_path, 4.0).start()
        procs.append(proc)
        return proc

    def address() -> str:
        found = leader(admin, paths)
        assert found is not None and found.get("serving"), "no serving leader"
        return str(found["api"])

    def monitor(key: UpdateKey, name: str) -> Monitor:
        m = Monitor(ns, key, name)
        monitors.append(m)
        return m

    ns.spawn, ns.address, ns.monitor = spawn, address, monitor
    yield ns
    for m in monitors:
        m.close()
    for proc in procs:
        proc.cleanup()
    admin.stop()
    admin.close()


def serving(cluster: SimpleNamespace, name: str) -> SchedulerProcess:
    proc = cluster.spawn(name)
    wait_for_leader(cluster.admin, cluster.paths, name)
    wait_until(lambda: (leader(cluster.admin, cluster.paths) or {}).get("serving"), timeout=30)
    wait_until(lambda: api_address(proc), timeout=30)
    return proc


def start(cluster: SimpleNamespace, job: JobKey, count: int, settings: Settings) -> UpdateKey:
    client = connect(cluster.address())
    client.createJob(
        t.JobConfiguration(key=convert.job_key_out(job), taskConfig=convert.task_out(V1),
                           instanceCount=count),
        None,
    )  # fmt: skip
    wait_until(
        lambda: len(client.getInstances(convert.job_key_out(job), None)) == count
        and all(i.state == t.InstanceState.HEALTHY for i in client.getInstances(
            convert.job_key_out(job), None)),
        timeout=30,
        message=f"{job}'s instances never became healthy",
    )  # fmt: skip
    wire = convert.request_out(UpdateRequest(job, V2, count, settings))
    key = convert.update_key_in(client.startJobUpdate(wire, "gated", None))
    client.close()
    return key


def record(cluster: SimpleNamespace, key: UpdateKey):  # type: ignore[no-untyped-def]
    return cluster.store.get_update(key)


def details(cluster: SimpleNamespace, key: UpdateKey) -> Any:
    client = connect(cluster.address())
    try:
        return client.getJobUpdateDetails(convert.update_key_out(key), None)
    finally:
        client.close()


def wait_status(cluster: SimpleNamespace, key: UpdateKey, status: S, timeout: float = 60) -> Any:
    return wait_until(
        lambda: (r := record(cluster, key)).status is status and r,
        timeout=timeout,
        message=f"{key} never reached {status.name}: {record(cluster, key).status.name}",
    )


def started(cluster: SimpleNamespace, key: UpdateKey) -> list[int]:
    return [
        e.instance_id
        for e in record(cluster, key).instance_events
        if e.action is InstanceAction.INSTANCE_UPDATING
    ]


def test_quorum_of_two_named_monitors(cluster) -> None:
    proc = serving(cluster, "a")
    job = JobKey("www", "prod", "quorum")
    client = connect(cluster.address())
    refused = Settings(heartbeat_timeout_ms=TIMEOUT_MS, heartbeat_quorum=3,
                       heartbeat_monitors=("canary", "slo"))  # fmt: skip
    with pytest.raises(t.InvalidRequest) as caught:
        client.startJobUpdate(convert.request_out(UpdateRequest(job, V2, 4, refused)), "", None)
    assert caught.value.field == "request.settings.heartbeatQuorum"
    assert "at most the 2 name(s) in heartbeatMonitors" in caught.value.message
    assert cluster.store.summaries(job) == []  # nothing written on a refusal
    settings = Settings(
        min_wait_in_instance_running_ms=300,
        heartbeat_timeout_ms=TIMEOUT_MS,
        heartbeat_quorum=2,
        heartbeat_monitors=("canary", "slo"),
    )
    key = start(cluster, job, 6, settings)
    with pytest.raises(t.InvalidRequest) as caught:
        client.heartbeatJobUpdate(
            convert.update_key_out(key), None, t.HeartbeatDetails(monitor="intruder")
        )
    assert caught.value.field == "details.monitor"
    assert "expected one of: canary, slo" in caught.value.message
    canary, slo = cluster.monitor(key, "canary"), cluster.monitor(key, "slo")
    canary.beating.set()
    stays_true(1.0, lambda: record(cluster, key).status is S.ROLL_FORWARD_AWAITING_PULSE,
         "one monitor of a quorum of two moved the update")  # fmt: skip
    assert started(cluster, key) == []
    assert details(cluster, key).gate.why == "quorum 1 of 2"
    slo.beating.set()
    wait_status(cluster, key, S.ROLLING_FORWARD)
    wait_until(lambda: started(cluster, key), message="the quorum did not let it act")
    slo.beating.clear()  # slo goes quiet
    blocked = wait_status(cluster, key, S.ROLL_FORWARD_AWAITING_PULSE)
    assert "quorum 1 of 2" in blocked.status_events[-1].message
    gate = details(cluster, key).gate
    assert (gate.open, gate.reason, gate.why, gate.freshMonitors) == (
        False,
        "quorum",
        "quorum 1 of 2",
        1,
    )
    fresh = {m.name: m.fresh for m in gate.monitors}
    assert fresh == {"canary": True, "slo": False}
    events, actions = len(blocked.instance_events), len(proc.actions())  # the driver's log
    assert actions > 0
    stays_true(2.0, lambda: len(record(cluster, key).instance_events) == events
         and len(proc.actions()) == actions,
         "the update moved on one monitor of two")  # fmt: skip
    slo.beating.set()  # it comes back
    done = wait_status(cluster, key, S.ROLLED_FORWARD)
    assert sorted(set(started(cluster, key))) == list(range(6))
    assert any(e.cause is Cause.HEARTBEAT for e in done.status_events[-3:])


def test_per_batch_acknowledgement(cluster) -> None:
    serving(cluster, "a")
    job = JobKey("www", "prod", "acked")
    settings = Settings(
        strategy=Strategy.batch(2),
        min_wait_in_instance_running_ms=200,
        heartbeat_timeout_ms=TIMEOUT_MS,
        heartbeat_ack_batches=True,
    )
    key = start(cluster, job, 6, settings)
    verifier = cluster.monitor(key, "verifier")
    verifier.beating.set()
    waiting = wait_status(cluster, key, S.ROLL_FORWARD_AWAITING_PULSE)
    wait_until(
        lambda: (
            record(cluster, key).status_events[-1].message
            == "waiting for batch 1 to be acknowledged"
        ),
        timeout=30,
        message="batch 1 never waited for its acknowledgement",
    )
    stays_true(
        1.0, lambda: sorted(started(cluster, key)) == [0, 1], "batch 2 started without an ack"
    )
    last = verifier.answers[-1]
    assert (last.batch, last.batchInstances, last.gate.awaitingAck) == (1, [0, 1], 1)
    assert last.gate.reason == "awaiting_ack"
    del waiting
    verifier.acking.set()
    done = wait_status(cluster, key, S.ROLLED_FORWARD)
    assert verifier.acked == [(1, [0, 1]), (2, [2, 3])]
    messages = [e.message for e in done.status_events]
    assert "batch 1 acknowledged" in messages and "batch 2 acknowledged" in messages
    assert "waiting for batch 2 to be acknowledged" in messages


BOUND_MS = 12_000


def test_bounded_blocks_pause_and_roll_back_across_a_failover(cluster) -> None:
    a = serving(cluster, "a")
    b = cluster.spawn("b")
    wait_until(lambda: len(cluster.admin.get_children(cluster.paths.election)) == 2, timeout=30)
    common = {"min_wait_in_instance_running_ms": 300, "heartbeat_timeout_ms": TIMEOUT_MS,
              "max_blocked_ms": BOUND_MS}  # fmt: skip
    paused_key = start(cluster, JobKey("www", "prod", "quiet"), 2, Settings(**common))
    back_key = start(
        cluster,
        JobKey("www", "prod", "lost"),
        6,
        Settings(**common, on_blocked=OnBlocked.ROLL_BACK),
    )
    monitor = cluster.monitor(back_key, "slo")
    monitor.beating.set()
    wait_until(lambda: started(cluster, back_key), timeout=30, message="it never acted")
    monitor.beating.clear()  # the monitor is lost: the update blocks
    blocked = wait_status(cluster, back_key, S.ROLL_FORWARD_AWAITING_PULSE)
    blocked_ms = blocked.status_events[-1].timestamp_ms
    quiet_ms = record(cluster, paused_key).status_events[-1].timestamp_ms  # the initial wait
    gate = details(cluster, back_key).gate
    assert (gate.onBlocked, gate.onBlockedAtMs) == (t.OnBlocked.ROLL_BACK, blocked_ms + BOUND_MS)
    wait_until(lambda: time.time() * 1000 >= blocked_ms + 2_000, timeout=10)
    a.kill()  # the leader dies in the middle of both blocks
    killed_ms = int(time.time() * 1000)
    wait_for_leader(cluster.admin, cluster.paths, "b", timeout=30)

    paused = wait_status(cluster, paused_key, S.ROLL_FORWARD_PAUSED, timeout=60)
    event = paused.status_events[-1]
    assert (event.user, event.cause) == (SYSTEM_USER, Cause.BLOCKED)
    assert "onBlocked=PAUSE: paused" in event.message and "blocked for " in event.message
    assert event.timestamp_ms >= quiet_ms + BOUND_MS  # not cut short by the failover
    assert event.timestamp_ms < killed_ms + BOUND_MS  # nor counted again from the takeover

    backing = wait_status(cluster, back_key, S.ROLL_BACK_AWAITING_PULSE, timeout=60)
    bound_event = next(e for e in backing.status_events if e.cause is Cause.BLOCKED)
    assert bound_event.status is S.ROLLING_BACK and bound_event.user == SYSTEM_USER
    assert "onBlocked=ROLL_BACK: rolling back" in bound_event.message
    assert blocked_ms + BOUND_MS <= bound_event.timestamp_ms < killed_ms + BOUND_MS
    rolled = [
        e for e in backing.instance_events if e.action is InstanceAction.INSTANCE_ROLLING_BACK
    ]
    assert rolled == []  # the rollback is gated: no heartbeat, no action
    monitor.beating.set()  # the monitor is back: the rollback proceeds
    wait_status(cluster, back_key, S.ROLLED_BACK, timeout=60)
    assert set(cluster.store.get_job(JobKey("www", "prod", "lost")).instances().values()) == {V1}
    del b
