"""The storage contract, run against every store implementation."""

from __future__ import annotations

import pytest

from scheduler.paths import Paths
from scheduler.zkstore import ZooKeeperStorage
from updater.errors import (
    AlreadyExists,
    JobUpdating,
    NotFound,
    StaleWrite,
    TransitionError,
    UpdateConflict,
)
from updater.events import Cause, InstanceAction, InstanceEvent, StatusEvent
from updater.job import Job
from updater.keys import JobKey
from updater.memstore import MemoryStorage
from updater.record import UpdateRequest, plan_update
from updater.settings import Settings, Strategy
from updater.status import UpdateStatus
from updater.storage import UpdateQuery, UpdateSummary, UpdateWrite, select_prunable

from builders import JOB, NEW, OLD

S = UpdateStatus
DAY = 24 * 3600 * 1000


class NodeFence:
    """Fences writes on an ephemeral node of the store's own session, as a leader does."""

    def __init__(self, client) -> None:
        self.path = client.create("/fence-", ephemeral=True, sequence=True)

    def node(self) -> str:
        return self.path


@pytest.fixture(params=["memory", "zookeeper"])
def store(request):
    if request.param == "memory":
        return MemoryStorage()
    client = request.getfixturevalue("zk_client")
    store = ZooKeeperStorage(client, Paths("/pulsegate"), NodeFence(client), writer="test")
    store.ensure_layout()
    return store


def new_record(store, update_id="u1", job=JOB, count=3, now=1000, **settings):
    record, _ = plan_update(
        UpdateRequest(job, NEW, count, Settings(**settings), (("link", "http://x"),)),
        store.get_job(job),
        update_id,
        "alice",
        "ship it",
        now,
    )
    return record


def test_jobs(store) -> None:
    other = JobKey("db", "prod", "pg")
    store.create_job(Job.uniform(JOB, OLD, 3))
    store.create_job(Job.uniform(other, OLD, 1))
    with pytest.raises(AlreadyExists):
        store.create_job(Job.uniform(JOB, OLD, 1))
    assert store.get_job(JOB).instances() == dict.fromkeys(range(3), OLD)
    assert store.get_job(JobKey("x", "y", "z")) is None
    assert store.list_jobs() == sorted([JOB, other])
    assert store.list_jobs("db") == [other]
    store.delete_job(other)
    assert store.get_job(other) is None
    with pytest.raises(NotFound):
        store.delete_job(other)


def test_start_update_takes_the_lock_atomically(store) -> None:
    store.create_job(Job.uniform(JOB, OLD, 3))
    record = new_record(store)
    store.start_update(record)
    assert store.active_update(JOB) == record.key
    assert store.get_update(record.key) == record
    with pytest.raises(UpdateConflict) as raised:
        store.start_update(new_record(store, "u2"))
    assert raised.value.active == record.key and str(record.key) in str(raised.value)
    with pytest.raises(NotFound):
        store.get_update(new_record(store, "u2").key)
    with pytest.raises(JobUpdating):
        store.delete_job(JOB)


def test_update_of_a_missing_job_creates_it(store) -> None:
    record = new_record(store)
    store.start_update(record)
    assert store.get_job(JOB) is not None and store.get_job(JOB).instances() == {}


def test_writes_append_events_and_change_desired_state(store) -> None:
    store.create_job(Job.uniform(JOB, OLD, 3))
    record = new_record(store, strategy=Strategy.batch(2))
    store.start_update(record)
    events = [InstanceEvent(i, 2000, InstanceAction.INSTANCE_UPDATING) for i in (0, 1)]
    store.write(UpdateWrite.make(record.key, 1, None, events, {0: NEW, 1: NEW}))
    paused = StatusEvent(S.ROLL_FORWARD_PAUSED, 2500, "bob", "wait", Cause.OPERATOR)
    store.write(UpdateWrite.make(record.key, 1, paused, [], {2: None}))
    stored = store.get_update(record.key)
    assert stored.instance_events == tuple(events)
    assert stored.status_events == (*record.status_events, paused)
    assert stored.pause_event == paused
    assert store.get_job(JOB).instances() == {0: NEW, 1: NEW}
    with pytest.raises(StaleWrite):
        store.write(UpdateWrite.make(record.key, 1, None, events))
    assert store.get_update(record.key).instance_events == tuple(events)  # nothing written


def test_a_coalesced_status_event_rewrites_the_last_two_in_place(store) -> None:
    """A flapping monitor's lapse past the cap: the last event moves down one and the new one
    takes its place; the count of status events (the CAS token) does not change."""
    store.create_job(Job.uniform(JOB, OLD, 3))
    record = new_record(store, heartbeat_timeout_ms=1000)
    store.start_update(record)
    rolled = StatusEvent(S.ROLLING_FORWARD, 2000, "mon", "heartbeat received", Cause.HEARTBEAT)
    lapsed = StatusEvent(
        S.ROLL_FORWARD_AWAITING_PULSE, 3000, "pulsegate", "timed out", Cause.HEARTBEAT_TIMEOUT
    )
    resumed = StatusEvent(S.ROLLING_FORWARD, 3500, "mon", "heartbeat received", Cause.HEARTBEAT)
    for n, event in enumerate((rolled, lapsed, resumed), start=1):
        store.write(UpdateWrite.make(record.key, n, event))
    again = StatusEvent(
        S.ROLL_FORWARD_AWAITING_PULSE,
        4500,
        "pulsegate",
        "timed out; 2",
        Cause.HEARTBEAT_TIMEOUT,
        count=2,
        coalesce=True,
    )
    store.write(UpdateWrite.make(record.key, 4, again))
    stored = store.get_update(record.key)
    assert stored.status_events == (*record.status_events, rolled, resumed, again)
    assert stored.status_events[-1].count == 2 and stored.status is again.status
    [summary] = [s for s in store.summaries() if s.key == record.key]
    assert summary.status is S.ROLL_FORWARD_AWAITING_PULSE and summary.last_modified_ms == 4500
    back = StatusEvent(
        S.ROLLING_FORWARD, 5000, "mon", "heartbeat received", Cause.HEARTBEAT, coalesce=True
    )
    store.write(UpdateWrite.make(record.key, 4, back))  # still 4: nothing was appended
    assert store.get_update(record.key).status_events[-2:] == (again, back)
    with pytest.raises(StaleWrite):
        store.write(UpdateWrite.make(record.key, 5, lapsed))


def test_instance_events_alone_are_not_written_twice(store) -> None:
    """A writer that missed its own landed write (outcome unknown) must not repeat it."""
    store.create_job(Job.uniform(JOB, OLD, 3))
    record = new_record(store)
    store.start_update(record)
    done = [InstanceEvent(0, 2000, InstanceAction.INSTANCE_UPDATED)]
    store.write(UpdateWrite.make(record.key, 1, None, done, expected_instance_events=0))
    with pytest.raises(StaleWrite, match="1 instance events"):
        store.write(UpdateWrite.make(record.key, 1, None, done, expected_instance_events=0))
    assert store.get_update(record.key).instance_events == tuple(done)


def test_terminal_write_releases_the_lock_and_is_final(store) -> None:
    record = new_record(store)
    store.start_update(record)
    done = StatusEvent(S.ROLLED_FORWARD, 3000, "pulsegate", "done", Cause.COMPLETE)
    store.write(UpdateWrite.make(record.key, 1, done))
    assert store.active_update(JOB) is None
    assert store.active_updates() == []
    with pytest.raises(TransitionError):
        store.write(
            UpdateWrite.make(
                record.key, 2, None, [InstanceEvent(0, 1, InstanceAction.INSTANCE_UPDATED)]
            )
        )
    second = new_record(store, "u2")
    store.start_update(second)
    assert [r.key for r in store.active_updates()] == [second.key]


def test_unknown_update(store) -> None:
    key = new_record(store).key
    with pytest.raises(NotFound):
        store.write(UpdateWrite.make(key, 1))
    with pytest.raises(NotFound):
        store.get_update(key)


def test_summaries_queries_and_pruning(store) -> None:
    jobs = [JobKey("www", "prod", f"web{i}") for i in range(2)]
    keys = []
    for n in range(4):
        for job in jobs:
            record = new_record(store, f"u{n}", job=job, now=1000 + n)
            store.start_update(record)
            keys.append(record.key)
            if n < 3:
                end = StatusEvent(S.ABORTED, 2000 + n, "bob", "", Cause.OPERATOR)
                store.write(UpdateWrite.make(record.key, 1, end))
    summaries = store.summaries()
    assert len(summaries) == 8
    s = next(x for x in summaries if x.key == keys[0])
    assert (s.user, s.status, s.created_ms, s.metadata) == (
        "alice",
        S.ABORTED,
        1000,
        (("link", "http://x"),),
    )
    assert len(store.summaries(jobs[0])) == 4
    active = UpdateQuery(statuses=frozenset({S.ROLLING_FORWARD})).apply(summaries)
    assert {x.key.id for x in active} == {"u3"}
    newest = UpdateQuery(job=jobs[1], limit=2).apply(summaries)
    assert [x.key.id for x in newest] == ["u2", "u1"]  # by last modification
    doomed = select_prunable(summaries, now=3000, keep=1)
    assert sorted(k.id for k in doomed) == ["u0", "u0", "u1", "u1"]
    assert select_prunable(summaries, now=1000 + 31 * DAY, keep=10) and all(
        k.id != "u3" for k in select_prunable(summaries, now=1000 + 31 * DAY, keep=10)
    )
    store.delete_updates([*doomed, keys[-1]])  # the active one is skipped
    assert {x.key.id for x in store.summaries(jobs[1])} == {"u2", "u3"}


def test_summary_of_a_record() -> None:
    store = MemoryStorage()
    record = new_record(store)
    assert UpdateSummary.of(record).last_modified_ms == 1000


def test_what_a_new_leader_loads(store) -> None:
    """`load_active` and `load_jobs`: the takeover's picture, the same from every store."""
    other = JobKey("db", "prod", "pg")
    store.create_job(Job.uniform(JOB, OLD, 3))
    store.create_job(Job.uniform(other, OLD, 1))
    active = new_record(store)
    store.start_update(active)
    done = new_record(store, "u2", job=other, count=1)
    store.start_update(done)
    finished = StatusEvent(S.ABORTED, 3000, "bob", "", Cause.OPERATOR)
    store.write(UpdateWrite.make(done.key, 1, finished))
    assert store.load_active() == {active.key: active}
    jobs = {job.key: job.instances() for job in store.load_jobs()}
    assert jobs == {JOB: dict.fromkeys(range(3), OLD), other: {0: OLD}}
    store.forget_caches()  # a store reads the same after forgetting what it cached
    assert store.load_active() == {active.key: active}
