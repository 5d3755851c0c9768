"""The local driver run directly, with real processes: what an instance leaves behind goes with
it (after a crash and after a stop), a takeover that cannot read its records changes nothing
instead of starting every instance twice, and the restart backoff starts over once an instance
has run for a stable period."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from scheduler.clock import SystemClock
from scheduler.drivers.local import LocalDriver
from scheduler.drivers.process import GroupScan, ProcessGroup, spawn, start_ticks
from scheduler.drivers.records import InstanceRecords
from scheduler.paths import Paths
from scheduler.zkstore import ZooKeeperStorage
from updater.driver import Action, ActionKind, InstanceState
from updater.errors import Unavailable
from updater.keys import JobKey
from updater.task import TaskConfig

from waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
JOB = JobKey("www", "test", "cleanup")
I = InstanceState  # noqa: E741


class Strays:
    """What a test started, to kill by pid at the very end if it still runs (when the driver
    failed to stop it). Shell commands append "<group> <pid>" lines to `file`."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.leaders: list[tuple[int, int | None]] = []

    def add(self, pid: int) -> None:
        self.leaders.append((pid, start_ticks(pid)))

    def kill(self) -> None:
        for pid, ticks in self.leaders:
            if ticks is not None and start_ticks(pid) == ticks:  # still that process
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)  # it leads its own group (spawn)
        for pgid, pid in _read(self.file):
            with contextlib.suppress(ProcessLookupError):
                if start_ticks(pid) is not None and os.getpgid(pid) == pgid:
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def strays(tmp_path: Path) -> Iterator[Strays]:
    found = Strays(tmp_path / "leftovers")
    yield found
    found.kill()


def _driver(tmp_path: Path, records: InstanceRecords | None, **kwargs: float) -> LocalDriver:
    kwargs = {"backoff_base_s": 0.05, "backoff_cap_s": 0.5, **kwargs}
    driver = LocalDriver(SystemClock(), tmp_path, tmp_path / "logs", records, **kwargs)
    driver.set_acting(True)
    return driver


@pytest.fixture
def make_driver(tmp_path: Path, strays: Strays) -> Iterator[Callable[..., LocalDriver]]:
    """Acting local drivers; at the end each stops its instances and waits for them (every
    driver is stopped even if one fails, before `strays` kills what is left)."""
    drivers: list[LocalDriver] = []

    def make(records: InstanceRecords | None = None, **kwargs: float) -> LocalDriver:
        drivers.append(_driver(tmp_path, records, **kwargs))
        return drivers[-1]

    yield make
    with contextlib.ExitStack() as stack:
        for driver in drivers:
            stack.callback(driver.stop)
        for driver in drivers:
            for pid in driver.pids(JOB).values():
                strays.add(pid)
            driver.reconcile(JOB, {})
        for driver in drivers:
            wait_until(lambda d=driver: not d.instances(JOB), timeout=30)


def _read(path: Path) -> list[tuple[int, int]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(a), int(b)) for a, b in (line.split() for line in lines if line.count(" ") == 1)]


def _state(driver: LocalDriver) -> InstanceState | None:
    found = driver.instances(JOB).get(0)
    return None if found is None else found.state


# -- defect: what the group leader leaves behind ------------------------------------------------


def test_an_instance_leads_its_own_session_and_group(tmp_path: Path) -> None:
    proc = spawn(TaskConfig.make(["sleep", "30"]), 1, tmp_path / "log", ROOT)
    try:
        assert os.getsid(proc.pid) == proc.pid and os.getpgid(proc.pid) == proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_what_a_crashed_instance_left_running_is_stopped_before_it_restarts(
    make_driver, strays: Strays
) -> None:
    driver = make_driver()
    crashing = TaskConfig.make(
        f'sleep 300 & echo "$$ $!" >> {strays.file}; sleep 0.3; exit 1', stop_grace_ms=300
    )
    driver.reconcile(JOB, {0: crashing})
    found = wait_until(lambda: len(_read(strays.file)) >= 2 and _read(strays.file), timeout=30)
    # The second incarnation started only once nothing of the first ran any more.
    assert start_ticks(found[0][1]) is None, "the first crash's 'sleep 300' still runs"
    assert driver.instances(JOB)[0].failures >= 1


def test_stopping_instances_kills_what_ignores_sigterm(make_driver, strays: Strays) -> None:
    driver = make_driver()
    stubborn = TaskConfig.make(
        f"(trap '' TERM; exec sleep 301) & echo \"$$ $!\" >> {strays.file}; sleep 302",
        stop_grace_ms=300,
    )
    driver.reconcile(JOB, {0: stubborn, 1: stubborn})  # two: they go away in the same ticks
    wait_until(lambda: len(_read(strays.file)) == 2, timeout=30)
    wait_until(lambda: [i.state for i in driver.instances(JOB).values()] == [I.HEALTHY] * 2)
    assert set(driver.pids(JOB).values()) == {pgid for pgid, _ in _read(strays.file)}
    driver.reconcile(JOB, {})
    wait_until(lambda: not driver.instances(JOB), timeout=30, message="the instances never went")
    for _, pid in _read(strays.file):
        assert start_ticks(pid) is None, "'sleep 301' outlived its instance"


def test_a_group_left_only_with_zombies_is_empty_once_killed(tmp_path: Path, monkeypatch) -> None:
    # A child of ours that exits and is not waited for stays a zombie in its group, as do
    # orphans under an init that never reaps.
    proc = spawn(TaskConfig.make(["true"]), 1, tmp_path / "log", ROOT)
    try:
        wait_until(lambda: start_ticks(proc.pid) is None, timeout=10)
        group = ProcessGroup(proc.pid)
        assert not group.is_empty(GroupScan.take)  # not yet SIGKILLed: a scan is not trusted
        group.kill()
        wait_until(lambda: group.is_empty(GroupScan.take), timeout=10)
        sent: list[int] = []
        monkeypatch.setattr(os, "killpg", lambda pgid, sig: sent.append(pgid))
        assert group.signal(signal.SIGKILL) is False and not sent  # never signalled again
    finally:
        proc.wait(timeout=10)


# -- defect: a ZooKeeper blip during takeover ---------------------------------------------------


class BlippingStorage(ZooKeeperStorage):
    """Storage whose reads fail as in a connection loss, while `down` is set."""

    down = ""  # the name of the read that fails

    def get(self, path: str):  # type: ignore[no-untyped-def]
        if self.down == "get":
            raise Unavailable(f"ZooKeeper unreachable reading {path}: ConnectionLoss")
        return super().get(path)

    def children(self, path: str) -> list[str]:
        if self.down == "children":
            raise Unavailable(f"ZooKeeper unreachable reading {path}: ConnectionLoss")
        return super().children(path)


@pytest.mark.parametrize("failing_read", ["children", "get"])
def test_a_takeover_that_cannot_read_the_records_changes_nothing(
    zk_client, make_driver, strays: Strays, tmp_path: Path, failing_read: str
) -> None:
    paths = Paths("/takeover")
    sleeper = TaskConfig.make(["sleep", "300"], stop_grace_ms=300)
    first = _driver(tmp_path, InstanceRecords(ZooKeeperStorage(zk_client, paths), "host"))
    first.reconcile(JOB, {0: sleeper})
    pid = wait_until(lambda: first.pids(JOB).get(0), timeout=30)
    strays.add(pid)
    first.stop()  # the old leader goes; its instance keeps running
    store = BlippingStorage(zk_client, paths)
    second = make_driver(InstanceRecords(store, "host"))
    store.down = failing_read
    with pytest.raises(Unavailable):
        second.takeover({JOB: {0: sleeper}})
    assert not second.instances(JOB) and second.pids(JOB) == {}
    store.down = ""
    second.takeover({JOB: {0: sleeper}})  # what the leader's retry does
    wait_until(lambda: _state(second) is I.HEALTHY, timeout=30)
    assert second.pids(JOB) == {0: pid}, "the running instance was not adopted"
    assert second.records is not None and second.records.load()[(JOB, 0)].pid == pid


def test_a_corrupt_record_is_skipped_and_the_rest_load(zk_client, make_driver) -> None:
    store = ZooKeeperStorage(zk_client, Paths("/corrupt"))
    records = InstanceRecords(store, "host")
    driver = make_driver(records)
    driver.reconcile(JOB, {0: TaskConfig.make(["sleep", "300"], stop_grace_ms=300)})
    pid = wait_until(lambda: driver.pids(JOB).get(0), timeout=30)
    wait_until(lambda: (JOB, 0) in records.load(), timeout=10)
    zk_client.create(store.paths.instance_record("host", JOB, 1), b"{not json")
    zk_client.create(store.paths.instance_record("host", JOB, 2), b'{"schema_version": 1}')
    loaded = records.load()
    assert list(loaded) == [(JOB, 0)] and loaded[(JOB, 0)].pid == pid


# -- defect: the restart backoff never starting over without a health check ----------------------


@contextlib.contextmanager
def _info_logs() -> Iterator[list[dict]]:
    """Capture log events down to info (the test run logs only warnings)."""
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(wrapper_class=wrapper)


def test_the_backoff_starts_over_after_a_stable_run_without_a_health_check(
    make_driver, tmp_path: Path
) -> None:
    count = tmp_path / "count"
    # Exits at once three times, then runs for 3 s (six times the stable period, so that a
    # reconciler slowed by a loaded machine still sees it stable), then exits.
    flaky = TaskConfig.make(
        f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}; "
        f'[ "$n" -ge 3 ] && sleep 3; exit 1',
        stop_grace_ms=300,
    )
    with _info_logs() as logs:
        driver = make_driver(backoff_base_s=0.05, backoff_cap_s=10, stable_after_s=0.5)
        driver.reconcile(JOB, {0: flaky})
        waits = wait_until(
            lambda: (
                len(w := [e["restart_in_s"] for e in logs if e["event"] == "instance_exited"]) >= 4
                and w
            ),
            timeout=30,
        )
    assert waits[:4] == [0.05, 0.1, 0.2, 0.05]


def test_a_takeover_leaves_held_instances_running_as_they_are(
    zk_client, make_driver, strays: Strays, tmp_path: Path
) -> None:
    """An instance in flight in a coordinated update waits for the update's next action (a
    heartbeat), not for the takeover, even when the desired config differs (rule 8)."""
    paths = Paths("/held")
    old = TaskConfig.make(["sleep", "300"], stop_grace_ms=300)
    new = TaskConfig.make(["sleep", "301"], stop_grace_ms=300)
    first = _driver(tmp_path, InstanceRecords(ZooKeeperStorage(zk_client, paths), "host"))
    first.reconcile(JOB, {0: old})
    pid = wait_until(lambda: first.pids(JOB).get(0), timeout=30)
    strays.add(pid)
    first.stop()
    second = make_driver(InstanceRecords(ZooKeeperStorage(zk_client, paths), "host"))
    second.takeover({JOB: {0: new}}, parked={(JOB, 0)})
    wait_until(lambda: _state(second) is I.HEALTHY, timeout=30)  # adopted, acting, held
    assert second.pids(JOB) == {0: pid}
    second.apply(JOB, [Action(ActionKind.REPLACE, 0, new)])  # the update acts: released
    wait_until(lambda: second.pids(JOB).get(0) not in (None, pid), timeout=30)
    strays.add(second.pids(JOB)[0])
