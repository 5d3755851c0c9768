"""The leader's heartbeat memory under concurrent threads, with the production lock: RPC threads
beat and read while the leader loop tracks, forgets and clears (DESIGN §3 rules 2 and 4)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from scheduler import memory
from scheduler.memory import RunTable
from updater.keys import UpdateKey
from updater.status import UpdateStatus

from builders import JOB

KEY = UpdateKey(JOB, "hammered")
ROUNDS = 20_000


@pytest.fixture(autouse=True)
def switch_often() -> Iterator[None]:
    """Let the interpreter switch threads every microsecond, so a window between two reads
    that a switch can fall into is hit within a bounded number of rounds."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def hammer(loop_side: Callable[[int], None], rpc_side: Callable[[], None]) -> list[BaseException]:
    """Run `loop_side(i)` for ROUNDS rounds on one thread while another, started with it, calls
    `rpc_side` until the first is done; the errors either raised."""
    errors: list[BaseException] = []
    start, done = threading.Barrier(2), threading.Event()

    def loop() -> None:
        start.wait()
        try:
            for i in range(ROUNDS):
                loop_side(i)
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    def rpc() -> None:
        start.wait()
        try:
            while not done.is_set():
                rpc_side()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=loop), threading.Thread(target=rpc)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a hammering thread hung"
    return errors


def test_reading_the_lease_while_the_loop_forgets_and_clears_never_raises() -> None:
    pulse = RunTable().pulse

    def loop_side(i: int) -> None:
        pulse.track(KEY, 1_000, i)
        pulse.beat(KEY, i)
        if i % 2:
            pulse.forget(KEY)
        else:
            pulse.clear()

    def rpc_side() -> None:
        end = pulse.lease_end(KEY)
        assert end is None or end >= 1_000
        pulse.check(KEY, 500)
        pulse.is_fresh(KEY, 500)

    assert hammer(loop_side, rpc_side) == []


def test_finished_statuses_remembered_from_rpc_threads_while_the_loop_clears(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The contract (RPC threads remember too, under the table's lock). On CPython 3.11 the
    unlocked version did not fail here either: its window holds no thread switch point."""
    monkeypatch.setattr(memory, "FINISHED_KEPT", 2)  # every remember also evicts
    table = RunTable()
    keys = [UpdateKey(JOB, f"done-{i}") for i in range(8)]

    def loop_side(i: int) -> None:
        table.remember_finished(keys[i % 8], UpdateStatus.ROLLED_FORWARD)
        table.clear()

    def rpc_side() -> None:
        for key in keys:
            table.remember_finished(key, UpdateStatus.ABORTED)

    assert hammer(loop_side, rpc_side) == []
    assert len(table._finished) <= 2
