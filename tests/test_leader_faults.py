"""The leader loop when a write fails or its outcome is unknown, and heartbeats after a takeover:
an in-process scheduler on the real ZooKeeper, with one storage call made to fail."""

from __future__ import annotations

import uuid

import pytest

from scheduler import commands
from scheduler.fencing import UnknownOutcome
from updater.errors import Unavailable
from updater.events import InstanceAction
from updater.job import Job
from updater.keys import JobKey
from updater.record import REQUEST_ID, UpdateRequest
from updater.settings import Settings, Strategy
from updater.status import UpdateStatus as S
from updater.task import TaskConfig

from cluster import FAST_SIM, client_for, start_scheduler, wait_serving
from waiting import stays_true, wait_until

JOB = JobKey("www", "prod", "faults")
V1 = TaskConfig.make(["server", "--version=1"], labels=FAST_SIM)
V2 = TaskConfig.make(["server", "--version=2"], labels=FAST_SIM)
SLOW = Settings(min_wait_in_instance_running_ms=600_000, strategy=Strategy.batch(1))


def fail_once(monkeypatch, target: object, name: str, error: Exception, land: bool) -> None:
    """Make `target.name` fail once: before doing anything, or after its effect landed."""
    real = getattr(target, name)

    def failing(*args, **kwargs):
        monkeypatch.setattr(target, name, real)
        if land:
            real(*args, **kwargs)
        raise error

    monkeypatch.setattr(target, name, failing)


@pytest.fixture
def leader(zk_server, tmp_path):
    s = start_scheduler(zk_server.hosts, f"/faults-{uuid.uuid4().hex[:8]}", tmp_path)
    try:
        yield wait_serving(s)
    finally:
        s.stop()


def test_a_command_whose_write_fails_is_not_reported_done(leader, monkeypatch) -> None:
    with client_for(leader) as client:
        client.create_job(JOB, V1, 2)
        key = client.start_update(JOB, V2, 2, settings=SLOW)
        loop = leader.loop
        fail_once(monkeypatch, loop.store, "write", Unavailable("ZooKeeper blip"), land=False)
        with pytest.raises(Unavailable, match="not recorded"):
            commands.update_command(loop, key, "pause", "al", "stop")
        assert client.details(key).status is S.ROLLING_FORWARD
        commands.update_command(loop, key, "pause", "al", "stop")  # the retry lands
        assert client.details(key).status is S.ROLL_FORWARD_PAUSED


def test_a_start_whose_outcome_is_unknown_runs_if_it_landed(leader, monkeypatch) -> None:
    with client_for(leader) as client:
        client.create_job(JOB, V1, 2)
        loop = leader.loop
        fail_once(monkeypatch, loop.store, "start_update", UnknownOutcome("lost"), land=True)
        request = UpdateRequest(JOB, V2, 2, Settings(min_wait_in_instance_running_ms=0))
        with pytest.raises(UnknownOutcome):
            commands.start_update(loop, request, "al", "")
        [summary] = client.summaries(job=JOB)
        done = client.wait(summary.key, interval_s=0.05, timeout_s=30)
        assert done.status is S.ROLLED_FORWARD


def test_after_a_takeover_a_heartbeat_lets_a_rolling_update_act_at_once(
    zk_server, tmp_path
) -> None:
    """Rule 8: no action until a heartbeat reaches the new leader, and then at once, not when
    the lease counted from the takeover ends (a minute here)."""
    root = f"/takeover-{uuid.uuid4().hex[:8]}"
    settings = Settings(  # 20 instances one at a time, 0.6 s each: far from done at the stop
        min_wait_in_instance_running_ms=500,
        strategy=Strategy.queue(1),
        heartbeat_timeout_ms=60_000,
    )
    first = wait_serving(start_scheduler(zk_server.hosts, root, tmp_path / "a"))
    with client_for(first) as client:
        client.create_job(JOB, V1, 20)
        key = client.start_update(JOB, V2, 20, settings=settings)
        client.heartbeat(key)
        wait_until(lambda: done(client, key) >= 1, timeout=30)
    first.stop()  # releases leadership at once; the update stays ROLLING_FORWARD
    second = wait_serving(start_scheduler(zk_server.hosts, root, tmp_path / "b"))
    try:
        with client_for(second) as client:
            assert client.details(key).status is S.ROLLING_FORWARD
            before = done(client, key)
            client.heartbeat(key)
            wait_until(
                lambda: done(client, key) > before,
                timeout=20,
                message="the update waited for the lease instead of the heartbeat",
            )
    finally:
        second.stop()


def done(client, key) -> int:
    return sum(
        1
        for e in client.details(key).record.instance_events
        if e.action is InstanceAction.INSTANCE_UPDATED
    )


def test_a_failed_leadership_announcement_is_retried(zk_server, tmp_path, monkeypatch) -> None:
    from kazoo.exceptions import ConnectionLoss

    from scheduler.election import Leadership

    fail_once(monkeypatch, Leadership, "publish_serving", ConnectionLoss(), land=False)
    s = wait_serving(start_scheduler(zk_server.hosts, f"/publish-{uuid.uuid4().hex[:8]}", tmp_path))
    try:
        path = s.leadership.paths.leader
        wait_until(lambda: s.client.exists(path), timeout=20, message="never published")
        assert b'"serving": true' in s.client.get(path)[0]
    finally:
        s.stop()


def test_one_corrupt_update_does_not_hide_the_others(leader) -> None:
    other = JobKey("www", "prod", "other")
    quick = Settings(min_wait_in_instance_running_ms=0)
    with client_for(leader) as client:
        keys = []
        for job in (JOB, other):
            client.create_job(job, V1, 1)
            keys.append(client.start_update(job, V2, 1, settings=quick))
            client.wait(keys[-1], interval_s=0.05, timeout_s=30)
        leader.client.set(leader.store.paths.state(keys[0]), b"{not json")
        assert [s.key for s in client.summaries()] == [keys[1]]


def test_a_leader_that_stops_acting_stops_its_driver_at_once(leader, monkeypatch) -> None:
    """Not at the loop's next turn: that may be stuck in a ZooKeeper call for seconds."""
    sim = leader.driver._sim
    assert sim.acting
    monkeypatch.setattr(leader.leadership, "is_acting", lambda: False)
    leader.leadership.on_change()  # what the election thread calls on SUSPENDED
    assert not sim.acting
    monkeypatch.undo()
    wait_until(lambda: sim.acting, timeout=10, message="the driver did not act again")


def test_a_retried_start_finds_its_first_attempt_even_once_it_finished(leader) -> None:
    with client_for(leader) as client:
        client.create_job(JOB, V1, 1)
        request = UpdateRequest(
            JOB, V2, 1, Settings(min_wait_in_instance_running_ms=0), ((REQUEST_ID, "r-1"),)
        )
        key = commands.start_update(leader.loop, request, "al", "")
        client.wait(key, interval_s=0.05, timeout_s=30)
        assert commands.start_update(leader.loop, request, "al", "") == key
        assert len(client.summaries(job=JOB)) == 1


@pytest.mark.parametrize("verb", ["create_job", "kill_job"])
def test_a_job_call_applied_before_its_answer_was_lost_is_not_an_error(
    leader, monkeypatch, verb
) -> None:
    with client_for(leader) as client:
        if verb == "kill_job":
            client.create_job(JOB, V1, 1)
        fail_once(monkeypatch, commands, verb, Unavailable("answer lost"), land=True)
        if verb == "create_job":
            client.create_job(JOB, V1, 2)  # the retry finds it exists, exactly as asked
            assert client.get_job(JOB).instance_count == 2
        else:
            client.kill_job(JOB)  # the retry finds it gone
            assert JOB not in client.list_jobs("www")


def test_a_job_created_with_an_unknown_outcome_gets_its_instances(leader, monkeypatch) -> None:
    loop = leader.loop
    fail_once(monkeypatch, loop.store, "create_job", UnknownOutcome("lost"), land=True)
    with pytest.raises(UnknownOutcome):
        commands.create_job(loop, Job.uniform(JOB, V1, 2))
    wait_until(lambda: len(loop.driver.instances(JOB)) == 2, timeout=20)
    fail_once(monkeypatch, loop.store, "delete_job", UnknownOutcome("lost"), land=True)
    with pytest.raises(UnknownOutcome):
        commands.kill_job(loop, JOB, "al", "")
    wait_until(lambda: not loop.driver.instances(JOB), timeout=20)


def test_a_heartbeat_racing_the_end_of_its_update_leaves_nothing_tracked(leader) -> None:
    from updater.engine import UpdateRun

    settings = Settings(min_wait_in_instance_running_ms=0, heartbeat_timeout_ms=60_000)
    with client_for(leader) as client:
        client.create_job(JOB, V1, 1)
        key = client.start_update(JOB, V2, 1, settings=settings)
        seen = UpdateRun(leader.store.get_update(key))  # what an RPC thread held a moment ago
        client.heartbeat(key)
        client.wait(key, interval_s=0.05, timeout_s=30)
        wait_until(lambda: key not in leader.loop.runs, timeout=10)
        leader.loop.beat(seen, "late")
        assert not leader.loop.pulse.is_tracked(key)


def test_a_step_the_old_leader_stored_but_never_took_waits_for_a_heartbeat(
    zk_server, tmp_path, monkeypatch
) -> None:
    """The old leader persisted instance 0's new config and lost leadership before acting. The
    new leader's takeover must not take that step for it: only a heartbeat may (rule 8)."""
    root = f"/held-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        min_wait_in_instance_running_ms=50, strategy=Strategy.queue(1), heartbeat_timeout_ms=60_000
    )
    first = wait_serving(start_scheduler(zk_server.hosts, root, tmp_path / "a"))
    with client_for(first) as client:
        client.create_job(JOB, V1, 3)
        wait_until(lambda: len(first.driver.instances(JOB)) == 3, timeout=20)
        monkeypatch.setattr(first.driver, "apply", lambda job, actions: None)  # never acts
        key = client.start_update(JOB, V2, 3, settings=settings)
        client.heartbeat(key)
        wait_until(lambda: client.get_job(JOB).instances()[0] == V2, timeout=20)
    first.stop()
    second = wait_serving(start_scheduler(zk_server.hosts, root, tmp_path / "b"))
    try:

        def instance_0() -> object:
            seen = second.driver.instances(JOB).get(0)
            return None if seen is None else seen.config

        stays_true(1.5, lambda: instance_0() != V2, "the takeover took the stored step")
        with client_for(second) as client:
            client.heartbeat(key)
            wait_until(lambda: instance_0() == V2, timeout=20)
            client.heartbeat(key)
            assert client.wait(key, interval_s=0.05, timeout_s=30).status is S.ROLLED_FORWARD
    finally:
        second.stop()
