"""Leader election with a real ZooKeeper: takeover, real session expiry, suspension, fencing."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss
from kazoo.protocol.serialization import Create

from scheduler.election import Leadership, Role
from scheduler.fencing import NotLeader
from scheduler.paths import Paths, election_sequence
from scheduler.zkserver import EmbeddedZooKeeper
from scheduler.zkstore import ZooKeeperStorage
from updater.events import InstanceAction, InstanceEvent
from updater.job import Job
from updater.record import UpdateRequest, plan_update
from updater.storage import UpdateWrite

from builders import JOB, NEW, OLD
from conftest import CONNECTION_RETRY
from procs import expire_session
from waiting import wait_until


def client_for(hosts: str, timeout: float = 4.0) -> KazooClient:
    client = KazooClient(hosts=hosts, timeout=timeout, connection_retry=CONNECTION_RETRY)
    client.start(timeout=10)
    return client


@pytest.fixture
def paths() -> Paths:
    return Paths(f"/election-test-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def pair(zk_server: EmbeddedZooKeeper, paths: Paths) -> Iterator[list[Leadership]]:
    made = []
    for name in ("a", "b"):
        client = client_for(zk_server.hosts)
        leadership = Leadership(client, paths, {"id": name})
        leadership.start()
        made.append(leadership)
        if name == "a":
            wait_until(lambda: made[0].is_acting(), message="a did not become leader")
    yield made
    for leadership in made:
        leadership.stop()
        leadership.client.stop()
        leadership.client.close()


def test_first_leads_second_follows_and_takes_over_on_release(pair: list[Leadership]) -> None:
    a, b = pair
    wait_until(lambda: b._node is not None)
    assert a.role is Role.LEADER and a.epoch == 1
    assert b.role is Role.FOLLOWER and not b.is_acting()
    assert a.node().startswith(f"{a.paths.election}/")
    with pytest.raises(NotLeader):
        b.node()
    assert b.leader_identity()["id"] == "a"
    a.stop()
    wait_until(b.is_acting, message="b did not take over")
    assert b.epoch == 1 and b.leader_identity()["id"] == "b"


def test_real_session_expiry_deposes_the_leader_and_fences_its_writes(
    pair: list[Leadership], zk_server: EmbeddedZooKeeper
) -> None:
    a, b = pair
    store = ZooKeeperStorage(a.client, a.paths, fence=a, writer="a")
    store.ensure_layout()
    store.create_job(Job.uniform(JOB, OLD, 2))
    record, _ = plan_update(UpdateRequest(JOB, NEW, 2), store.get_job(JOB), "u1", "al", "", 1)
    store.start_update(record)
    # Expire a's session for real: a second client on the same session, closed.
    session_id, password = a.client.client_id
    thief = KazooClient(hosts=zk_server.hosts, client_id=(session_id, password))
    thief.start(timeout=10)
    thief.stop()
    thief.close()
    wait_until(b.is_acting, timeout=15, message="b did not take over after a's session expired")
    wait_until(lambda: a.role is not Role.LEADER, timeout=15)
    with pytest.raises(NotLeader):
        store.write(
            UpdateWrite.make(
                record.key, 1, None, [InstanceEvent(0, 5, InstanceAction.INSTANCE_UPDATING)]
            )
        )
    reader = ZooKeeperStorage(b.client, b.paths)
    assert reader.get_update(record.key).instance_events == ()
    wait_until(lambda: a.role is Role.FOLLOWER and a._node is not None, timeout=15)
    assert not a.is_acting()


def test_suspension_stops_acting_at_once_and_the_same_session_resumes(
    tmp_path: Path, paths: Paths
) -> None:
    server = EmbeddedZooKeeper(tmp_path / "zk")
    server.start()
    client = client_for(server.hosts, timeout=10.0)
    leadership = Leadership(client, paths, {"id": "solo"})
    changes: list[Role] = []
    leadership.on_change = lambda: changes.append(leadership.role)
    leadership.start()
    try:
        wait_until(leadership.is_acting)
        node, session = leadership.node(), client.client_id
        server.kill()
        wait_until(lambda: not leadership.is_acting(), timeout=10, message="still acting")
        with pytest.raises(NotLeader):
            leadership.node()
        server.start()
        wait_until(leadership.is_acting, timeout=15, message="did not resume leadership")
        assert leadership.node() == node and client.client_id == session
        assert leadership.epoch == 1  # the same term: memory may be kept
        assert changes == [Role.LEADER, Role.SUSPENDED, Role.LEADER]
    finally:
        leadership.stop()
        client.stop()
        client.close()
        server.stop()


def test_session_file_for_tests(zk_server: EmbeddedZooKeeper, paths: Paths, tmp_path: Path) -> None:
    client = client_for(zk_server.hosts)
    leadership = Leadership(client, paths, {"id": "x"}, session_file=str(tmp_path / "s.json"))
    leadership.start()
    try:
        wait_until(lambda: (tmp_path / "s.json").exists())
        import json

        saved = json.loads((tmp_path / "s.json").read_text())
        assert saved["session_id"] == client.client_id[0]
        assert bytes.fromhex(saved["password"]) == client.client_id[1]
    finally:
        leadership.stop()
        client.stop()
        client.close()


@pytest.fixture
def unstarted(zk_server: EmbeddedZooKeeper, paths: Paths) -> Iterator[Leadership]:
    """A leadership whose election thread never runs: the test drives `_step` itself, so the
    interleavings below are deterministic."""
    leadership = Leadership(client_for(zk_server.hosts), paths, {"id": "driven"})
    leadership._connected = leadership.client.connected
    yield leadership
    leadership.stop()
    leadership.client.stop()
    leadership.client.close()


def test_a_follower_keeps_one_watcher_on_its_predecessor(
    pair: list[Leadership], unstarted: Leadership
) -> None:
    a, b = pair
    wait_until(lambda: b._node is not None, message="b has no election node")
    follower = unstarted
    for _ in range(200):  # 200 seconds of a follower's life
        follower._step()
    assert follower.role is Role.FOLLOWER
    children = sorted(follower.client.get_children(follower.paths.election), key=election_sequence)
    mine = children.index(follower._node.rsplit("/", 1)[1])
    predecessor = f"{follower.paths.election}/{children[mine - 1]}"
    assert len(follower.client._data_watchers[predecessor]) == 1
    assert sum(len(w) for w in follower.client._data_watchers.values()) == 1
    # The one watcher still does its job: it wakes the follower when the predecessor goes.
    follower._wake.clear()
    b.stop()  # b is the predecessor
    wait_until(follower._wake.is_set, message="the predecessor's deletion did not wake us")
    a.stop()
    wait_until(lambda: (follower._step(), follower.role is Role.LEADER)[1])


def test_stop_during_a_step_is_final(unstarted: Leadership) -> None:
    leadership = unstarted
    changes: list[Role] = []
    leadership.on_change = lambda: changes.append(leadership.role)
    client, real = leadership.client, leadership.client.get_children
    midway = threading.Event()

    def stop_lands_here(path: str) -> list[str]:
        # In the election thread, between reading the election and taking the role: hold the
        # step until stop() has marked us STOPPED (stop then waits for this step to end).
        children = real(path)
        midway.set()
        wait_until(lambda: leadership.role is Role.STOPPED, message="stop() did not begin")
        return children

    client.get_children = stop_lands_here  # type: ignore[method-assign]
    leadership.start()
    wait_until(midway.is_set, message="the first step did not run")
    leadership.stop()
    assert leadership.role is Role.STOPPED and leadership.epoch == 0 and changes == []
    client.get_children = real  # type: ignore[method-assign]
    leadership._step()  # a step after stop does nothing either: no new node, no role
    assert leadership.role is Role.STOPPED and leadership._node is None
    assert client.get_children(leadership.paths.election) == []
    assert not leadership.is_acting()


def test_not_acting_on_a_new_session_before_the_election_thread_notices(
    unstarted: Leadership, zk_server: EmbeddedZooKeeper
) -> None:
    leadership = unstarted
    leadership._step()
    assert leadership.is_acting() and leadership.epoch == 1
    old = leadership.client.client_id
    expire_session(zk_server.hosts, old)
    wait_until(
        lambda: leadership._connected and leadership.client.client_id not in (None, old),
        timeout=15,
        message="no new session",
    )
    # The listener saw LOST then CONNECTED; no step ran, so the role still says LEADER.
    assert leadership.role is Role.LEADER and leadership._lost
    assert not leadership.is_acting()
    with pytest.raises(NotLeader):
        leadership.node()
    leadership._lost = False  # even with the flag gone, the session is not the one we won with
    assert not leadership.is_acting()
    leadership._lost = True
    leadership._step()  # demoted, contends again with a new node, and leads a new term
    assert leadership.is_acting() and leadership.epoch == 2


# -- a create the server applied, whose reply never came back ----------------------------------


def lose_election_create_replies(
    client: KazooClient, count: int = 1, drop: bool = False
) -> list[str]:
    """The client's next `count` creates of an election node reach the server and are applied,
    but the caller gets ConnectionLoss, as when the connection breaks after the server applied
    the request. Injected where kazoo hands requests to its connection (`_call`), so every
    layer above it, `create` and `create_async` alike, sees what a real network loss gives;
    `drop` also breaks the TCP connection then (SUSPENDED, then the same session again).
    Returns the paths the server created."""
    real = client._call
    applied: list[str] = []

    def call(request: object, async_object: object) -> object:
        if isinstance(request, Create) and "/election/" in request.path and count > len(applied):
            reply = client.handler.async_result()

            def lost(result: object) -> None:
                applied.append(result.get())  # type: ignore[attr-defined]
                if drop:
                    with contextlib.suppress(OSError, AttributeError):
                        client._connection._socket.shutdown(socket.SHUT_RDWR)
                async_object.set_exception(ConnectionLoss("reply lost"))  # type: ignore[attr-defined]

            reply.rawlink(lost)
            return real(request, reply)
        return real(request, async_object)

    client._call = call  # type: ignore[method-assign]
    return applied


@pytest.fixture
def driven_pair(zk_server: EmbeddedZooKeeper, paths: Paths) -> Iterator[list[Leadership]]:
    """Two leaderships whose steps the test runs itself, in the order it chooses."""
    made = []
    for name in ("a", "b"):
        leadership = Leadership(client_for(zk_server.hosts), paths, {"id": name})
        leadership._connected = leadership.client.connected
        made.append(leadership)
    yield made
    for leadership in made:
        leadership.stop()
        leadership.client.stop()
        leadership.client.close()


def test_a_lost_create_reply_leaves_no_second_node_and_someone_leads(
    driven_pair: list[Leadership],
) -> None:
    a, b = driven_pair
    applied = lose_election_create_replies(a.client)
    with pytest.raises(ConnectionLoss):
        a._step()  # the server made a's node; a never heard of it
    assert len(applied) == 1
    b._step()  # b contends behind a's node: a follower
    assert b.role is Role.FOLLOWER
    a._step()  # a tries again
    b._step()
    children = a.client.get_children(a.paths.election)
    assert len(children) == 2, f"one node per contender, got {sorted(children)}"
    assert a.is_acting() and a.node() == applied[0]
    assert not b.is_acting()
    a.stop()  # and the order still works: b takes over when a's node goes
    b._step()
    assert b.is_acting()


def test_with_election_threads_a_leader_is_elected_after_a_lost_create_reply(
    zk_server: EmbeddedZooKeeper, paths: Paths
) -> None:
    a = Leadership(client_for(zk_server.hosts), paths, {"id": "a"})
    b = Leadership(client_for(zk_server.hosts), paths, {"id": "b"})
    session = a.client.client_id
    states: list[str] = []
    a.client.add_listener(states.append)
    applied = lose_election_create_replies(a.client, drop=True)
    try:
        a.start()
        wait_until(lambda: applied, message="a's first create did not reach the server")
        b.start()
        wait_until(
            lambda: a.is_acting() or b.is_acting(),
            timeout=15,
            message="nobody leads",
        )
        wait_until(lambda: b._node is not None, message="b has no election node")
        assert len(a.client.get_children(paths.election)) == 2
        assert a.is_acting() and a.node() == applied[0]
        assert "SUSPENDED" in states  # the connection broke...
        assert a.client.client_id == session  # ...and the session did not
    finally:
        for leadership in (a, b):
            leadership.stop()
            leadership.client.stop()
            leadership.client.close()
