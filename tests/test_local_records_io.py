"""The local driver and ZooKeeper trouble around its records: no ZooKeeper call under its lock
(issue 9, Why 5), so a hanging record write blocks nobody and lands once ZooKeeper answers; and an
instance whose record never landed is found in the process table by the next leader."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import structlog

from scheduler.clock import SystemClock
from scheduler.drivers.local import LocalDriver
from scheduler.drivers.records import InstanceRecord, InstanceRecords
from scheduler.fencing import NotLeader
from scheduler.paths import Paths
from scheduler.zkstore import ZooKeeperStorage
from updater.driver import InstanceState
from updater.errors import Unavailable
from updater.keys import JobKey
from updater.task import TaskConfig

from procs import kill_marked, marked_processes
from waiting import wait_until

JOB = JobKey("www", "test", "recordio")


class HangingRecords(InstanceRecords):
    """Records whose writes wait until `release` is set, like a ZooKeeper call that hangs."""

    def __init__(self, store: ZooKeeperStorage, host: str) -> None:
        super().__init__(store, host)
        self.release = threading.Event()
        self.waiting = threading.Event()

    def save(self, record: InstanceRecord) -> None:
        self.waiting.set()
        self.release.wait()
        super().save(record)


def test_a_hanging_record_write_does_not_block_the_driver(zk_client, tmp_path: Path) -> None:
    marker = f"recordio-{tmp_path.name}"
    records = HangingRecords(ZooKeeperStorage(zk_client, Paths("/recordio")), "host")
    config = TaskConfig.make(
        ["sleep", "300"], environment={"PULSEGATE_MARKER": marker}, stop_grace_ms=300
    )
    driver = LocalDriver(SystemClock(), tmp_path, tmp_path / "logs", records)
    try:
        driver.set_acting(True)
        driver.reconcile(JOB, {0: config})
        wait_until(records.waiting.is_set, timeout=30, message="no record write was made")
        answered = threading.Event()

        def read() -> None:
            driver.instances(JOB)
            driver.reconcile(JOB, {0: config})
            answered.set()

        threading.Thread(target=read, daemon=True).start()
        wait_until(answered.is_set, timeout=10, message="the driver's lock is held across I/O")
        assert driver.instances(JOB)[0].state is InstanceState.HEALTHY
        records.release.set()
        pid = driver.pids(JOB)[0]
        wait_until(lambda: (JOB, 0) in records.load(), timeout=10)
        assert records.load()[(JOB, 0)].pid == pid
    finally:
        records.release.set()
        driver.stop()
        kill_marked(marker)


class FailingRecords(InstanceRecords):
    """Records whose writes never land, like a leader whose ZooKeeper went away."""

    def save(self, record: InstanceRecord) -> None:
        raise Unavailable("ZooKeeper unreachable: ConnectionLoss")


def test_an_instance_whose_record_never_landed_is_adopted_not_started_again(
    zk_client, tmp_path: Path
) -> None:
    """The process table, by the identity in each instance's environment, finds what the
    records missed: the next leader adopts it (and records it) instead of starting a copy."""
    marker = f"unrecorded-{tmp_path.name}"
    store = ZooKeeperStorage(zk_client, Paths("/unrecorded"))
    config = TaskConfig.make(
        ["sleep", "300"], environment={"PULSEGATE_MARKER": marker}, stop_grace_ms=300
    )
    first = LocalDriver(SystemClock(), tmp_path, tmp_path / "logs", FailingRecords(store, "host"))
    second = LocalDriver(SystemClock(), tmp_path, tmp_path / "logs", InstanceRecords(store, "host"))
    try:
        first.set_acting(True)
        first.reconcile(JOB, {0: config})
        pid = wait_until(lambda: first.pids(JOB).get(0), timeout=30)
        first.stop()  # its leader goes; the instance runs on, unrecorded
        assert second.records is not None and second.records.load() == {}
        second.takeover({JOB: {0: config}})
        second.set_acting(True)
        wait_until(lambda: (JOB, 0) in second.records.load(), timeout=10)
        assert second.records.load()[(JOB, 0)].pid == pid
        assert second.pids(JOB) == {0: pid} and list(marked_processes(marker)) == [pid]
    finally:
        first.stop()
        second.stop()
        kill_marked(marker)


class Deposed:
    """A fence that says this scheduler no longer leads (its session ended unnoticed)."""

    def node(self) -> str:
        raise NotLeader("this scheduler is not the acting leader")


def test_a_leader_whose_session_ended_unnoticed_starts_nothing(zk_client, tmp_path: Path) -> None:
    """The driver still believes it acts (nobody told it yet), but each start first asks
    ZooKeeper through the fence: a deposed leader must not start a copy of what the new leader
    runs."""
    marker = f"deposed-{tmp_path.name}"
    store = ZooKeeperStorage(zk_client, Paths("/deposed"), fence=Deposed())
    config = TaskConfig.make(
        ["sleep", "300"], environment={"PULSEGATE_MARKER": marker}, stop_grace_ms=300
    )
    driver = LocalDriver(SystemClock(), tmp_path, tmp_path / "logs", InstanceRecords(store, "h"))
    try:
        with _warning_logs() as logs:
            driver.set_acting(True)
            driver.reconcile(JOB, {0: config})
            wait_until(
                lambda: any(e["event"] == "instances_not_started" for e in logs),
                timeout=30,
                message="the start was not refused",
            )
        assert driver.pids(JOB) == {} and marked_processes(marker) == {}
    finally:
        driver.stop()
        kill_marked(marker)


@contextlib.contextmanager
def _warning_logs() -> Iterator[list[dict]]:
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(wrapper_class=wrapper)
