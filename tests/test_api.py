"""The Thrift API end to end through the Python client, against real schedulers on a real
ZooKeeper: every RPC, every heartbeat answer, input checks, auth for each role, forwarding."""

from __future__ import annotations

import importlib.metadata
import uuid

import pytest

from api.auth import AUTH_OFF_USER, hash_token
from api.client import PulsegateClient
from updater.errors import (
    AuthError,
    InvalidRequest,
    JobUpdating,
    NotFound,
    Unavailable,
    UpdateConflict,
)
from updater.events import InstanceAction
from updater.keys import JobKey, UpdateKey
from updater.pulse import HeartbeatAnswer
from updater.ranges import Range
from updater.settings import Settings, Strategy
from updater.status import UpdateStatus
from updater.task import TaskConfig

from cluster import FAST_SIM, api_address, client_for, start_scheduler, wait_serving
from waiting import wait_until

S = UpdateStatus
H = HeartbeatAnswer
WEB = JobKey("www", "prod", "web")
DB = JobKey("db", "prod", "pg")
V1 = TaskConfig.make(["server", "--version=1"], labels=FAST_SIM)
V2 = TaskConfig.make(["server", "--version=2"], labels=FAST_SIM)
QUICK = Settings(min_wait_in_instance_running_ms=100, strategy=Strategy.batch(2))


@pytest.fixture
def client(scheduler):
    with client_for(scheduler) as c:
        yield c


def status_of(client: PulsegateClient, key: UpdateKey) -> UpdateStatus:
    return client.details(key).status


def test_jobs_create_get_list_instances_kill(client: PulsegateClient) -> None:
    client.create_job(WEB, V1, 3)
    with pytest.raises(InvalidRequest, match="already exists"):
        client.create_job(WEB, V1, 3)
    assert client.get_job(WEB).instances() == dict.fromkeys(range(3), V1)
    assert client.list_jobs() == [WEB] and client.list_jobs("db") == []
    wait_until(lambda: all(i.state.name == "HEALTHY" for i in client.instances(WEB)))
    assert [i.at_desired_config for i in client.instances(WEB)] == [True] * 3
    client.kill_job(WEB, "done")
    with pytest.raises(NotFound):
        client.get_job(WEB)
    with pytest.raises(NotFound):
        client.kill_job(WEB)


def test_update_lifecycle_events_and_details(client: PulsegateClient) -> None:
    client.create_job(WEB, V1, 4)
    key = client.start_update(
        WEB, V2, 5, settings=QUICK, metadata=[("link", "http://ci/1")], message="ship v2"
    )
    with pytest.raises(UpdateConflict) as conflict:
        client.start_update(WEB, V1, 5)
    assert conflict.value.active == key
    with pytest.raises(JobUpdating):
        client.kill_job(WEB)
    done = client.wait(key, interval_s=0.05, timeout_s=30)
    assert done.status is S.ROLLED_FORWARD
    assert done.progress is not None and done.progress.done == 5
    assert ("link", "http://ci/1") in done.record.definition.metadata
    first = done.record.status_events[0]
    assert (first.user, first.message) == (AUTH_OFF_USER, "ship v2")
    updated = {
        e.instance_id
        for e in done.record.instance_events
        if e.action is InstanceAction.INSTANCE_UPDATED
    }
    assert updated == set(range(5))
    summaries = client.summaries(job=WEB)
    assert [s.key for s in summaries] == [key] and summaries[0].status is S.ROLLED_FORWARD
    assert client.summaries(statuses=[S.ROLLING_FORWARD]) == []
    assert client.get_job(WEB).instances() == dict.fromkeys(range(5), V2)


def test_diff(client: PulsegateClient) -> None:
    client.create_job(WEB, V1, 4)
    diff = client.diff(WEB, V2, 5, settings=Settings(update_only_these_instances=(Range(2, 4),)))
    assert [g.ranges for g in diff.add] == [(Range(4, 4),)]
    assert [(g.config, g.ranges) for g in diff.update] == [(V1, (Range(2, 3),))]
    assert [(g.config, g.ranges) for g in diff.unchanged] == [(V1, (Range(0, 1),))]  # unscoped
    assert diff.remove == () and not diff.is_noop
    assert client.diff(WEB, V1, 4).is_noop
    with pytest.raises(InvalidRequest) as bad:
        client.diff(WEB, V2, 4, settings=Settings(update_only_these_instances=(Range(7, 9),)))
    assert bad.value.field == "settings.updateOnlyTheseInstances"


def test_every_heartbeat_answer(client: PulsegateClient) -> None:
    client.create_job(WEB, V1, 3)
    key = client.start_update(WEB, V2, 3, settings=Settings(heartbeat_timeout_ms=60_000))
    assert status_of(client, key) is S.ROLL_FORWARD_AWAITING_PULSE
    beat = client.heartbeat(key)
    assert beat.answer is H.OK  # awaiting: OK, and it unblocks
    wait_until(lambda: status_of(client, key) is S.ROLLING_FORWARD)
    assert client.heartbeat(key).answer is H.OK
    age = client.details(key).heartbeat_age_ms
    assert age is not None and age >= 0
    client.pause(key, "looking at graphs")
    result = client.heartbeat(key)
    assert (result.answer, result.status) == (H.PAUSED, S.ROLL_FORWARD_PAUSED)
    client.resume(key)
    assert status_of(client, key) is S.ROLLING_FORWARD  # fresh heartbeat: straight on
    client.abort(key, "enough")
    result = client.heartbeat(key)
    assert (result.answer, result.status) == (H.FINISHED, S.ABORTED)
    with pytest.raises(NotFound):
        client.heartbeat(UpdateKey(WEB, "no-such-update"))
    plain = client.start_update(WEB, V1, 3, settings=QUICK)
    with pytest.raises(InvalidRequest, match="not coordinated"):
        client.heartbeat(plain)


def test_operator_commands_and_bad_transitions(client: PulsegateClient) -> None:
    client.create_job(WEB, V1, 3)
    key = client.start_update(WEB, V2, 3, settings=Settings(heartbeat_timeout_ms=60_000))
    client.pause(key, "hold")
    client.pause(key, "again")  # same status: a no-op, not an error
    assert client.details(key).record.status_events[-1].message == "hold"
    client.rollback(key, "wrong build")
    # Nothing had been touched, so there is nothing to undo: rolled back at once.
    wait_until(lambda: status_of(client, key) is S.ROLLED_BACK)
    for command in (client.resume, client.abort, client.pause):
        with pytest.raises(InvalidRequest, match="final") as bad:
            command(key)
        assert bad.value.field == "key"
    with pytest.raises(NotFound):
        client.pause(UpdateKey(WEB, "missing"))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.update(instance_count=-1), "request.instanceCount"),
        (lambda r: r.update(instance_count=10_001), "request.instanceCount"),
        (lambda r: r.update(job=JobKey("", "prod", "web")), "request.job.role"),
        (lambda r: r.update(job=JobKey("www", "prod", "w" * 65)), "request.job.name"),
        (lambda r: r.update(config=TaskConfig(command=())), "request.taskConfig.command"),
        (lambda r: r.update(message="x" * 1025), "message"),
        (
            lambda r: r.update(settings=Settings(strategy=Strategy.batch(0))),
            "request.settings.strategy.sizes[0]",
        ),
        (
            lambda r: r.update(settings=Settings(max_failed_instances=-2)),
            "request.settings.maxFailedInstances",
        ),
        (
            lambda r: r.update(settings=Settings(heartbeat_timeout_ms=10**9)),
            "request.settings.heartbeatTimeoutMs",
        ),
        (lambda r: r.update(metadata=[("", "x")]), "request.metadata[0].key"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(client, change, field) -> None:
    request = {
        "job": WEB,
        "config": V2,
        "instance_count": 3,
        "settings": QUICK,
        "message": "",
        "metadata": [],
    }
    change(request)
    with pytest.raises(InvalidRequest) as bad:
        client.start_update(
            request["job"],
            request["config"],
            request["instance_count"],
            settings=request["settings"],
            metadata=request["metadata"],
            message=request["message"],
        )
    assert bad.value.field == field
    assert client.summaries() == [] and client.list_jobs() == []


def test_scheduler_info(client: PulsegateClient, scheduler) -> None:
    info = client.info()
    assert (
        info.serving and info.role == "leader" and info.leader_id == scheduler.config.scheduler_id
    )
    assert info.leader_address == api_address(scheduler)
    assert info.version == importlib.metadata.version("pulsegate")
    client.ping()


def test_a_serving_leader_names_itself_when_zookeeper_cannot_say(
    client: PulsegateClient, scheduler, monkeypatch
) -> None:
    """A ZooKeeper blip (or the look-up cached from a second ago) must not make the serving
    leader answer 'serving, but no leader'."""
    wait_until(lambda: client.info().serving)
    monkeypatch.setattr(scheduler.leadership, "leader_identity", lambda: None)
    scheduler.api.handler._leader_cache = (0.0, None)
    info = client.info()
    assert info.serving and info.leader_id == scheduler.config.scheduler_id
    assert info.leader_address == api_address(scheduler)


# -- auth -------------------------------------------------------------------------------------

TOKENS = {"root": "t-admin", "ops": "t-ops", "mon": "t-mon", "dba": "t-dba"}
PRINCIPALS = [
    {"name": "root", "token_sha256": hash_token("t-admin"), "roles": ["admin"]},
    {"name": "ops", "token_sha256": hash_token("t-ops"), "roles": ["operator:www"]},
    {"name": "mon", "token_sha256": hash_token("t-mon"), "roles": ["monitor:www"]},
    {"name": "dba", "token_sha256": hash_token("t-dba"), "roles": ["operator:db", "monitor:*"]},
]


@pytest.fixture
def secured(zk_server, tmp_path):
    s = start_scheduler(
        zk_server.hosts,
        f"/auth-{uuid.uuid4().hex[:8]}",
        tmp_path,
        **{"auth.enabled": True, "auth.principals": PRINCIPALS},
    )
    wait_serving(s)
    clients = {name: client_for(s, token=token, retry_for_s=2) for name, token in TOKENS.items()}
    clients["nobody"] = client_for(s, retry_for_s=2)
    clients["forged"] = client_for(s, token="t-wrong", retry_for_s=2)
    yield s, clients
    for c in clients.values():
        c.close()
    s.stop()


def test_auth_roles(secured) -> None:
    _, c = secured
    for who in ("nobody", "forged", "mon", "dba"):
        with pytest.raises(AuthError):
            c[who].create_job(WEB, V1, 2)
    c["ops"].create_job(WEB, V1, 2)
    c["dba"].create_job(DB, V1, 1)
    with pytest.raises(AuthError, match="ops may not start"):
        c["ops"].start_update(DB, V2, 1)
    key = c["ops"].start_update(WEB, V2, 2, settings=Settings(heartbeat_timeout_ms=60_000))
    assert c["nobody"].summaries(job=WEB)[0].user == "ops"  # reads are open by default
    # monitor: heartbeat and pause only, and only for its role
    assert c["mon"].heartbeat(key).answer is H.OK
    wait_until(lambda: c["root"].details(key).status is S.ROLLING_FORWARD)
    for command in (c["mon"].resume, c["mon"].abort, c["mon"].rollback):
        with pytest.raises(AuthError):
            command(key)
    c["mon"].pause(key, "p99 latency up")
    # operators of www may not heartbeat (DESIGN §7); a monitor of '*' may
    with pytest.raises(AuthError):
        c["ops"].heartbeat(key)
    assert c["dba"].heartbeat(key).answer is H.PAUSED
    with pytest.raises(AuthError):
        c["dba"].resume(key)
    c["ops"].resume(key, "checked")
    with pytest.raises(AuthError):
        c["mon"].kill_job(WEB)
    c["root"].abort(key, "admin override")
    users = [e.user for e in c["root"].details(key).record.status_events]
    assert users == ["ops", "mon", "mon", "ops", "root"]  # start, unblock, pause, resume, abort


def test_reads_can_require_auth(zk_server, tmp_path) -> None:
    s = start_scheduler(
        zk_server.hosts,
        f"/auth-{uuid.uuid4().hex[:8]}",
        tmp_path,
        **{"auth.enabled": True, "auth.principals": PRINCIPALS, "auth.reads_require_auth": True},
    )
    try:
        wait_serving(s)
        with client_for(s, retry_for_s=2) as anonymous, client_for(s, token="t-mon") as mon:
            with pytest.raises(AuthError):
                anonymous.list_jobs()
            assert mon.list_jobs() == []
    finally:
        s.stop()


# -- forwarding -------------------------------------------------------------------------------


def test_a_follower_forwards_to_the_leader(zk_server, tmp_path) -> None:
    root = f"/fwd-{uuid.uuid4().hex[:8]}"
    leader = wait_serving(start_scheduler(zk_server.hosts, root, tmp_path / "a", "a"))
    follower = start_scheduler(zk_server.hosts, root, tmp_path / "b", "b")
    try:
        wait_until(lambda: follower.leadership and follower.leadership.leader_identity())
        with client_for(follower, follow_leader=False) as c:
            assert c.info().role == "follower"
            c.create_job(WEB, V1, 3)
            key = c.start_update(WEB, V2, 3, settings=Settings(heartbeat_timeout_ms=60_000))
            assert c.heartbeat(key).answer is H.OK
            wait_until(lambda: c.details(key).status is S.ROLLING_FORWARD)
            assert c.details(key).heartbeat_age_ms is not None  # the leader's memory
            c.pause(key, "from the follower")
            assert len(c.instances(WEB)) == 3
            assert key in leader.loop.runs
            assert c.address == api_address(follower)
        leader.stop()
        with client_for(follower, follow_leader=False) as c:
            wait_serving(follower)
            assert c.details(key).status is S.ROLL_FORWARD_PAUSED  # follower took over
    finally:
        follower.stop()
        leader.stop()


def test_no_leader_means_unavailable(zk_server, tmp_path) -> None:
    s = start_scheduler(zk_server.hosts, f"/none-{uuid.uuid4().hex[:8]}", tmp_path)
    try:
        wait_serving(s)
        s.leadership.stop()  # give up leadership; nobody else is there
        with client_for(s, retry_for_s=0.5) as c, pytest.raises(Unavailable):
            c.create_job(WEB, V1, 1)
    finally:
        s.stop()


def test_history_is_pruned_by_the_leader(zk_server, tmp_path) -> None:
    s = start_scheduler(
        zk_server.hosts,
        f"/prune-{uuid.uuid4().hex[:8]}",
        tmp_path,
        **{"history.keep": 1, "history.prune_interval_s": 1.0},
    )
    try:
        wait_serving(s)
        with client_for(s) as c:
            c.create_job(WEB, V1, 1)
            keys = []
            for version in range(3):
                config = TaskConfig.make(["server", f"--version={version + 2}"], labels=FAST_SIM)
                keys.append(c.start_update(WEB, config, 1, settings=QUICK))
                c.abort(keys[-1], "next")
            active = c.start_update(WEB, V1, 1, settings=Settings(heartbeat_timeout_ms=60_000))
            wait_until(lambda: len(c.summaries(job=WEB)) == 2, timeout=30)
            kept = {x.key for x in c.summaries(job=WEB)}
            assert kept == {keys[-1], active}  # the newest finished one, and the active one
    finally:
        s.stop()
