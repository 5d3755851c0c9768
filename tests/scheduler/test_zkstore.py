"""ZooKeeper store specifics beyond the shared contract: fencing at the server, size limits,
corrupt values, chunked events, pruning."""

from __future__ import annotations

import json

import pytest

from scheduler import codec
from scheduler.fencing import NotLeader
from scheduler.paths import Paths
from scheduler.zkstore import EVENTS_PER_CHUNK, ZooKeeperStorage
from updater.errors import NotFound, ValueTooLarge
from updater.events import Cause, InstanceAction, InstanceEvent, StatusEvent
from updater.job import Job
from updater.record import UpdateRequest, plan_update
from updater.status import UpdateStatus
from updater.storage import UpdateWrite
from updater.task import TaskConfig

from builders import JOB, NEW, OLD


class Fence:
    def __init__(self, path: str) -> None:
        self.path = path

    def node(self) -> str:
        return self.path


@pytest.fixture
def setup(zk_client):
    fence = Fence(zk_client.create("/fence-", ephemeral=True, sequence=True))
    store = ZooKeeperStorage(zk_client, Paths("/pg"), fence, writer="me")
    store.ensure_layout()
    store.create_job(Job.uniform(JOB, OLD, 3))
    record, _ = plan_update(UpdateRequest(JOB, NEW, 3), store.get_job(JOB), "u1", "al", "", 1)
    store.start_update(record)
    return store, fence, record, zk_client


def test_a_write_whose_fence_node_is_gone_is_refused_by_zookeeper(setup) -> None:
    store, fence, record, client = setup
    client.delete(fence.path)  # as when the leader's session expired
    event = InstanceEvent(0, 5, InstanceAction.INSTANCE_UPDATING)
    with pytest.raises(NotLeader):
        store.write(UpdateWrite.make(record.key, 1, None, [event], {0: NEW}))
    store.forget_caches()
    assert store.get_update(record.key).instance_events == ()
    assert store.get_job(JOB).instances()[0] == OLD
    with pytest.raises(NotLeader):
        store.create_job(Job.uniform(JOB.__class__("a", "b", "c"), OLD, 1))


def test_values_too_large_are_refused_before_anything_is_written(setup) -> None:
    store, _, record, _ = setup
    huge = TaskConfig.make(["x"], environment={f"V{i}": "y" * 4000 for i in range(256)})
    with pytest.raises(ValueTooLarge, match="request limit"):
        store.write(UpdateWrite.make(record.key, 1, None, [], dict.fromkeys(range(3), huge)))
    assert store.get_job(JOB).instances() == dict.fromkeys(range(3), OLD)
    assert len(store.get_update(record.key).status_events) == 1


def test_many_events_are_split_into_chunks_and_read_back_in_order(setup) -> None:
    store, _, record, client = setup
    n = EVENTS_PER_CHUNK * 2 + 7
    events = [InstanceEvent(i % 3, i, InstanceAction.INSTANCE_UPDATING, "m") for i in range(n)]
    store.write(UpdateWrite.make(record.key, 1, None, events))
    assert len(client.get_children(store.paths.events(record.key))) == 3
    assert store.get_update(record.key).instance_events == tuple(events)


def test_every_value_is_versioned_and_stamped_with_its_writer(setup) -> None:
    store, _, record, client = setup
    done = StatusEvent(UpdateStatus.ROLLED_FORWARD, 9, "pulsegate", "", Cause.COMPLETE)
    store.write(UpdateWrite.make(record.key, 1, done))
    for path in (store.paths.update(record.key), store.paths.state(record.key)):
        assert json.loads(client.get(path)[0])["schema_version"] == codec.SCHEMA_VERSION
    children = client.get_children(store.paths.status(record.key))
    writers = {
        json.loads(client.get(f"{store.paths.status(record.key)}/{c}")[0])["writer"]
        for c in children
    }
    assert writers == {"me"}


def test_corrupt_and_future_values_are_reported_not_misread(setup) -> None:
    store, _, record, client = setup
    client.set(store.paths.update(record.key), b'{"schema_version": 99}')
    loaded = store.load_active()[record.key]
    assert isinstance(loaded, codec.CorruptValue) and "schema_version 99" in str(loaded)
    client.set(store.paths.update(record.key), b"not json")
    with pytest.raises(codec.CorruptValue, match="not JSON"):
        store.get_update(record.key)


def test_pruning_deletes_the_whole_subtree(setup) -> None:
    store, _, record, client = setup
    store.write(
        UpdateWrite.make(
            record.key, 1, None, [InstanceEvent(0, 2, InstanceAction.INSTANCE_UPDATING)]
        )
    )
    done = StatusEvent(UpdateStatus.ABORTED, 9, "bob", "", Cause.OPERATOR)
    store.write(UpdateWrite.make(record.key, 1, done))
    store.delete_updates([record.key])
    assert client.exists(store.paths.update(record.key)) is None
    with pytest.raises(NotFound):
        store.get_update(record.key)
    assert store.summaries() == []
