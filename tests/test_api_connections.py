"""The server holds hundreds of open connections (monitors keep theirs) and the engine keeps
working meanwhile."""

from __future__ import annotations

import resource
import uuid

from thriftpy2.rpc import make_client

from api import convert
from api.idl import Service
from updater.keys import JobKey
from updater.pulse import HeartbeatAnswer
from updater.settings import Settings, Strategy
from updater.status import UpdateStatus
from updater.task import TaskConfig

from cluster import FAST_SIM, api_address, client_for, start_scheduler, wait_serving

CONNECTIONS = 500
JOB = JobKey("www", "prod", "many")


def test_500_open_connections_and_the_engine_keeps_going(zk_server, tmp_path) -> None:
    # all 500 come from 127.0.0.1: above the default per-peer cap (tests/test_connection_limits.py)
    scheduler = start_scheduler(
        zk_server.hosts,
        f"/conns-{uuid.uuid4().hex[:8]}",
        tmp_path,
        **{"api.max_connections_per_peer": CONNECTIONS + 10},
    )
    try:
        wait_serving(scheduler)
        run_500_connections(scheduler)
    finally:
        scheduler.stop()


def run_500_connections(scheduler) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= 4 * CONNECTIONS, "the test needs file descriptors for both ends"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4 * CONNECTIONS), hard))
    host, port = api_address(scheduler).rsplit(":", 1)
    with client_for(scheduler) as c:
        c.create_job(JOB, TaskConfig.make(["v1"], labels=FAST_SIM), 4)
        coordinated = Settings(
            heartbeat_timeout_ms=60_000,
            strategy=Strategy.batch(2),
            min_wait_in_instance_running_ms=100,
        )
        key = c.start_update(JOB, TaskConfig.make(["v2"], labels=FAST_SIM), 4, settings=coordinated)
        wire_key = convert.update_key_out(key)
        monitors = [
            make_client(Service, host, int(port), timeout=20_000) for _ in range(CONNECTIONS)
        ]
        try:
            # Every connection is served while all stay open. The first heartbeat sets the
            # update going and it may end before the last one (a loaded machine serves 500
            # slowly): OK while it runs, FINISHED once it has ended, never back.
            answers = [m.heartbeatJobUpdate(wire_key, None).status for m in monitors]
            ok = answers.count(HeartbeatAnswer.OK)
            assert ok >= 1
            assert answers == [HeartbeatAnswer.OK] * ok + [HeartbeatAnswer.FINISHED] * (
                CONNECTIONS - ok
            )
            done = c.wait(key, interval_s=0.1, timeout_s=120)  # the engine was not blocked
            assert done.status is UpdateStatus.ROLLED_FORWARD
            for m in monitors:  # and they are all still there
                assert m.heartbeatJobUpdate(wire_key, None).status == HeartbeatAnswer.FINISHED
        finally:
            for m in monitors:
                m.close()
