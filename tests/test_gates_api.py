"""Rule 11 through the API, in-process schedulers on a real ZooKeeper: a heartbeat without a
name is the authenticated principal's, or `anonymous` with auth off; a follower forwards a
heartbeat's details to the leader."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from thriftpy2.rpc import make_client

from api import convert
from api.auth import hash_token
from api.idl import Service
from api.idl import pulsegate as t
from updater.errors import InvalidRequest
from updater.keys import JobKey, UpdateKey
from updater.settings import Settings
from updater.status import UpdateStatus
from updater.task import TaskConfig

from cluster import FAST_SIM, api_address, client_for, start_scheduler, wait_serving
from waiting import wait_until

S = UpdateStatus
WEB = JobKey("www", "prod", "web")
V1 = TaskConfig.make(["server", "--version=1"], labels=FAST_SIM)
V2 = TaskConfig.make(["server", "--version=2"], labels=FAST_SIM)
PRINCIPALS = [
    {"name": "ops", "token_sha256": hash_token("t-ops"), "roles": ["operator:www"]},
    {"name": "mon", "token_sha256": hash_token("t-mon"), "roles": ["monitor:www"]},
    {"name": "dba", "token_sha256": hash_token("t-dba"), "roles": ["monitor:*"]},
]


def raw(scheduler: Any) -> Any:
    host, _, port = api_address(scheduler).rpartition(":")
    return make_client(Service, host, int(port), timeout=10_000)


def gate_monitors(scheduler: Any, key: UpdateKey) -> dict[str, bool]:
    client = raw(scheduler)
    try:
        gate = client.getJobUpdateDetails(convert.update_key_out(key), None).gate
    finally:
        client.close()
    return {} if gate is None else {m.name: m.fresh for m in gate.monitors}


def test_an_unnamed_heartbeat_is_the_principals(zk_server, tmp_path) -> None:
    s = start_scheduler(
        zk_server.hosts,
        f"/gates-auth-{uuid.uuid4().hex[:8]}",
        tmp_path,
        **{"auth.enabled": True, "auth.principals": PRINCIPALS},
    )
    try:
        wait_serving(s)
        settings = Settings(
            heartbeat_timeout_ms=60_000, heartbeat_quorum=2, heartbeat_monitors=("mon", "canary")
        )
        with client_for(s, token="t-ops") as ops:
            ops.create_job(WEB, V1, 2)
            key = ops.start_update(WEB, V2, 2, settings=settings)
        with client_for(s, token="t-mon") as mon, client_for(s, token="t-dba") as dba:
            mon.heartbeat(key)  # the old two-argument call: monitor "mon"
            assert gate_monitors(s, key) == {"mon": True}
            with pytest.raises(InvalidRequest, match="expected one of: mon, canary"):
                dba.heartbeat(key)  # "dba" is not a listed monitor
        client = raw(s)
        try:
            creds = t.Credentials(token="t-dba")
            named = t.HeartbeatDetails(monitor="canary")
            answer = client.heartbeatJobUpdate(convert.update_key_out(key), creds, named)
            assert answer.gate.quorum == 2
        finally:
            client.close()
        assert gate_monitors(s, key) == {"mon": True, "canary": True}
        with client_for(s, token="t-ops") as ops:
            wait_until(lambda: ops.details(key).status is S.ROLLING_FORWARD)
            events = ops.details(key).record.status_events
            assert ops.details(key).record.definition.settings == settings  # the client's view
        assert events[-1].user == "dba"  # who sent the beat that completed the quorum
    finally:
        s.stop()


def test_auth_off_is_anonymous_and_a_follower_forwards_details(zk_server, tmp_path) -> None:
    root = f"/gates-fwd-{uuid.uuid4().hex[:8]}"
    leader = wait_serving(start_scheduler(zk_server.hosts, root, tmp_path / "a", "a"))
    follower = start_scheduler(zk_server.hosts, root, tmp_path / "b", "b")
    try:
        wait_until(lambda: follower.leadership and follower.leadership.leader_identity())
        with client_for(leader) as c:
            c.create_job(WEB, V1, 2)
            key = c.start_update(WEB, V2, 2, settings=Settings(heartbeat_timeout_ms=60_000))
            c.heartbeat(key)
        assert gate_monitors(leader, key) == {"anonymous": True}
        client = raw(follower)
        try:
            details = t.HeartbeatDetails(monitor="canary")
            answer = client.heartbeatJobUpdate(convert.update_key_out(key), None, details)
        finally:
            client.close()
        assert answer.status == t.HeartbeatStatus.OK and answer.gate is not None
        assert set(gate_monitors(leader, key)) == {"anonymous", "canary"}
        assert set(gate_monitors(follower, key)) == {"anonymous", "canary"}  # forwarded read
    finally:
        follower.stop()
        leader.stop()
