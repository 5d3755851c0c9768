"""Bounded status events through the production leader on the real ZooKeeper: a flapping
monitor's lapses past the cap are rewritten in place, and a new leader rehydrates them and goes
on coalescing (DESIGN §2, bounded status events)."""

from __future__ import annotations

import uuid

from updater import engine
from updater.events import Cause
from updater.keys import JobKey
from updater.settings import Settings, Strategy
from updater.status import UpdateStatus as S
from updater.task import TaskConfig

from cluster import FAST_SIM, client_for, start_scheduler, wait_serving
from waiting import wait_until

JOB = JobKey("www", "prod", "flappy")
V1 = TaskConfig.make(["server", "--version=1"], labels=FAST_SIM)
V2 = TaskConfig.make(["server", "--version=2"], labels=FAST_SIM)
KEPT = 3  # the cap, lowered so the test flaps a few times only
SETTINGS = Settings(
    min_wait_in_instance_running_ms=600_000,  # stays active for the whole test
    strategy=Strategy.queue(1),
    heartbeat_timeout_ms=600,  # long enough to see ROLLING_FORWARD between lapses
)


def flap(client, key, times: int) -> None:
    """Stay silent until the leader records the lapse, then heartbeat until it resumes."""
    for _ in range(times):
        wait_until(lambda: client.details(key).status is S.ROLL_FORWARD_AWAITING_PULSE)
        client.heartbeat(key)
        wait_until(lambda: client.details(key).status is S.ROLLING_FORWARD)


def lapses(scheduler, key) -> int:
    """From ZooKeeper (the wire's status event has no count; its message says it)."""
    events = scheduler.store.get_update(key).status_events
    return sum(e.count for e in events if e.cause is Cause.HEARTBEAT_TIMEOUT)


def test_lapses_past_the_cap_are_rewritten_in_place_across_a_failover(
    zk_server, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(engine, "LAPSES_KEPT", KEPT)
    root = f"/flappy-{uuid.uuid4().hex[:8]}"
    first = wait_serving(start_scheduler(zk_server.hosts, root, tmp_path / "a"))
    with client_for(first) as client:
        client.create_job(JOB, V1, 2)
        key = client.start_update(JOB, V2, 2, settings=SETTINGS)
        client.heartbeat(key)
        wait_until(lambda: client.details(key).status is S.ROLLING_FORWARD)
        flap(client, key, KEPT)
        length = len(client.details(key).record.status_events)
        flap(client, key, 3)
        assert len(client.details(key).record.status_events) == length
        assert lapses(first, key) == KEPT + 3
    first.stop()
    second = wait_serving(start_scheduler(zk_server.hosts, root, tmp_path / "b"))
    try:
        with client_for(second) as client:
            client.heartbeat(key)
            wait_until(lambda: client.details(key).status is S.ROLLING_FORWARD)
            flap(client, key, 2)
            events = second.store.get_update(key).status_events
            assert len(events) == length == len(client.details(key).record.status_events)
            assert lapses(second, key) == KEPT + 5
            assert events[-2].cause is Cause.HEARTBEAT_TIMEOUT and events[-2].count == 6
            assert events[-1].cause is Cause.HEARTBEAT
            assert "the last 6 coalesced" in client.details(key).record.status_events[-2].message
    finally:
        second.stop()
