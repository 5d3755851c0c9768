"""The heartbeat path of a serving in-process scheduler (real ZooKeeper, real Thrift API): its
failures answer Thrift exceptions on a connection that stays open, and a heartbeat that lands
while the leader reloads the update from storage is kept (DESIGN §3 rules 4 and 5)."""

from __future__ import annotations

import threading
import uuid

import pytest
from thriftpy2.rpc import make_client
from thriftpy2.thrift import TApplicationException

from api.convert import update_key_out
from api.idl import Service
from api.idl import pulsegate as t
from updater.keys import JobKey
from updater.settings import Settings, Strategy
from updater.task import TaskConfig

from cluster import FAST_SIM, client_for, start_scheduler, wait_serving
from waiting import wait_until

JOB = JobKey("www", "prod", "beats")
V1 = TaskConfig.make(["server", "--version=1"], labels=FAST_SIM)
V2 = TaskConfig.make(["server", "--version=2"], labels=FAST_SIM)
COORDINATED = Settings(
    min_wait_in_instance_running_ms=600_000,  # stays active for the whole test
    strategy=Strategy.batch(1),
    heartbeat_timeout_ms=60_000,
)


@pytest.fixture
def leader(zk_server, tmp_path):
    s = start_scheduler(zk_server.hosts, f"/beats-{uuid.uuid4().hex[:8]}", tmp_path)
    try:
        yield wait_serving(s)
    finally:
        s.stop()


@pytest.fixture
def update(leader):
    with client_for(leader) as client:
        client.create_job(JOB, V1, 2)
        key = client.start_update(JOB, V2, 2, settings=COORDINATED)
        client.heartbeat(key)
    wait_until(lambda: key in leader.loop.runs and leader.loop.pulse.last_beat(key) is not None)
    return key


def test_a_failing_fast_path_heartbeat_answers_an_exception_and_keeps_the_connection(
    leader, update, monkeypatch
) -> None:
    raw = make_client(Service, "127.0.0.1", leader.api.port, timeout=10_000)
    try:
        wire_key = update_key_out(update)
        assert raw.heartbeatJobUpdate(wire_key, None).status == t.HeartbeatStatus.OK
        loop = leader.loop

        def broken(run, user):  # what the race between a lease read and a forget raised
            raise KeyError(run.key)

        monkeypatch.setattr(loop, "beat", broken)
        with pytest.raises(TApplicationException) as raised:
            raw.heartbeatJobUpdate(wire_key, None)
        assert raised.value.type == TApplicationException.INTERNAL_ERROR
        monkeypatch.undo()
        # The same connection answers the next call: nothing was dropped, nothing counted as
        # garbage on the wire.
        assert raw.heartbeatJobUpdate(wire_key, None).status == t.HeartbeatStatus.OK
        assert leader.api.bad_input == 0
    finally:
        raw.close()


def test_a_heartbeat_during_a_reload_keeps_the_update_s_heartbeats(
    leader, update, monkeypatch
) -> None:
    """`_reload_update` takes the run out of the table, reads storage, puts a new run in. A
    heartbeat whose RPC thread found the run before it was taken out lands in that window; it
    used to forget the update's heartbeats ("the run vanished"), so the reloaded update had
    none and waited a whole timeout for the next."""
    loop = leader.loop
    run = loop.runs[update]  # what the fast path holds once it has looked the run up
    inside, release = threading.Event(), threading.Event()
    real = loop.store.get_update

    def held(key):
        if key == update and not inside.is_set():
            inside.set()
            release.wait(timeout=10)  # the loop thread, held inside the window
        return real(key)

    monkeypatch.setattr(loop.store, "get_update", held)
    loop.request_reload(update)
    loop.wake()
    wait_until(inside.is_set, message="the reload did not start")
    try:
        assert update not in loop.runs  # the window
        loop.beat(run, "monitor")
    finally:
        release.set()
    wait_until(lambda: update in loop.runs and loop.runs[update] is not run)
    assert loop.pulse.last_beat(update) is not None, "the reload lost the update's heartbeats"
    assert loop.heartbeat_age_ms(update) is not None
