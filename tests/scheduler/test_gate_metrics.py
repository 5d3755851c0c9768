"""The per-update gate gauges on a real scheduler's /metrics (real ZooKeeper, sim driver, the
Thrift API): the series appear with a coordinated update, change with its heartbeats, and are
gone from the next scrape once it ends."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from api.client import PulsegateClient
from scheduler.service import Scheduler
from updater.keys import JobKey, UpdateKey
from updater.settings import Settings
from updater.status import UpdateStatus as S
from updater.task import TaskConfig

from cluster import FAST_SIM, client_for
from waiting import wait_until

JOB = JobKey("www", "prod", "gauged")
V1 = TaskConfig.make(["serve", "--version", "1"], labels=FAST_SIM)
V2 = TaskConfig.make(["serve", "--version", "2"], labels=FAST_SIM)
GATE_SERIES = (
    "pulsegate_update_heartbeat_age_seconds",
    "pulsegate_update_gate_open",
    "pulsegate_update_blocked_seconds",
)
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scrape(s: Scheduler) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert s.http is not None
    with OPENER.open(f"http://127.0.0.1:{s.http.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def series(s: Scheduler, key: UpdateKey) -> dict[str, float]:
    labels = (("job", str(key.job)), ("update", key.id))
    return {name: value for (name, lbl), value in scrape(s).items() if lbl == labels}


def by_status(s: Scheduler, status: S) -> float:
    return scrape(s)[("pulsegate_updates_by_status", (("status", status.name),))]


def test_gate_series_follow_an_update_from_start_to_end(scheduler: Scheduler) -> None:
    client: PulsegateClient = client_for(scheduler)
    try:
        client.create_job(JOB, V1, 2)
        wait_until(lambda: client.is_settled(JOB, 2), 15, 0.02, "job did not settle")
        assert not any(name in GATE_SERIES for name, _ in scrape(scheduler))  # none yet
        assert by_status(scheduler, S.ROLL_FORWARD_AWAITING_PULSE) == 0
        settings = Settings(min_wait_in_instance_running_ms=100, heartbeat_timeout_ms=60_000)
        key = client.start_update(JOB, V2, 2, settings=settings)

        waiting = series(scheduler, key)  # no heartbeat yet: closed, no age
        assert waiting["pulsegate_update_gate_open"] == 0
        assert waiting["pulsegate_update_blocked_seconds"] >= 0
        assert "pulsegate_update_heartbeat_age_seconds" not in waiting
        assert by_status(scheduler, S.ROLL_FORWARD_AWAITING_PULSE) == 1

        client.heartbeat(key)
        labels = (("job", str(key.job)), ("update", key.id))
        opened = wait_until(
            lambda: (
                (found := scrape(scheduler)).get(("pulsegate_update_gate_open", labels)) == 1
                and found
            ),
            15,
            0.02,
            "the gate never opened on /metrics",
        )  # one scrape for all that follows: the update moves on meanwhile
        assert opened[("pulsegate_update_blocked_seconds", labels)] == 0
        assert opened[("pulsegate_update_heartbeat_age_seconds", labels)] >= 0
        rolling = ("pulsegate_updates_by_status", (("status", "ROLLING_FORWARD"),))
        assert opened[rolling] == 1

        client.abort(key, "done looking")
        wait_until(lambda: client.details(key).status is S.ABORTED, 15, 0.02)
        wait_until(lambda: series(scheduler, key) == {}, 15, 0.02, "the series outlived it")
        assert by_status(scheduler, S.ROLLING_FORWARD) == 0
        assert not any(name in GATE_SERIES for name, _ in scrape(scheduler))
    finally:
        client.close()


def test_a_paused_update_is_closed_and_counted_as_paused(scheduler: Scheduler) -> None:
    client: PulsegateClient = client_for(scheduler)
    try:
        client.create_job(JOB, V1, 2)
        wait_until(lambda: client.is_settled(JOB, 2), 15, 0.02, "job did not settle")
        settings = Settings(min_wait_in_instance_running_ms=100, heartbeat_timeout_ms=60_000)
        key = client.start_update(JOB, V2, 2, settings=settings)
        client.heartbeat(key)
        client.pause(key, "look first")
        paused = series(scheduler, key)
        assert paused["pulsegate_update_gate_open"] == 0
        assert by_status(scheduler, S.ROLL_FORWARD_PAUSED) == 1
        client.abort(key)
    finally:
        client.close()
