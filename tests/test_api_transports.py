"""The API's transports and discovery: framed instead of buffered, TLS (also between a follower
and the leader), and clients finding the leader through ZooKeeper."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from api.client import PulsegateClient
from updater.errors import Unavailable
from updater.keys import JobKey
from updater.task import TaskConfig

from cluster import FAST_SIM, api_address, start_scheduler, wait_serving
from waiting import wait_until

DATA = Path(__file__).resolve().parent / "data"
CERT, KEY = str(DATA / "tls-cert.pem"), str(DATA / "tls-key.pem")
JOB = JobKey("www", "prod", "web")
V1 = TaskConfig.make(["v1"], labels=FAST_SIM)


def root() -> str:
    return f"/transport-{uuid.uuid4().hex[:8]}"


def test_framed_transport(zk_server, tmp_path) -> None:
    s = wait_serving(
        start_scheduler(zk_server.hosts, root(), tmp_path, **{"api.transport": "framed"})
    )
    try:
        with PulsegateClient(api_address(s), transport="framed", retry_for_s=5) as c:
            c.create_job(JOB, V1, 1)
            assert c.list_jobs() == [JOB]
        buffered = PulsegateClient(api_address(s), retry_for_s=0.5)
        with buffered, pytest.raises(Unavailable):
            buffered.list_jobs()
    finally:
        s.stop()


def test_tls_including_forwarding_from_a_follower(zk_server, tmp_path) -> None:
    tls = {"api.tls_cert": CERT, "api.tls_key": KEY}
    path = root()
    leader = wait_serving(start_scheduler(zk_server.hosts, path, tmp_path / "a", "a", **tls))
    follower = start_scheduler(zk_server.hosts, path, tmp_path / "b", "b", **tls)
    try:
        wait_until(lambda: follower.leadership and follower.leadership.leader_identity())
        with PulsegateClient(api_address(leader), tls_ca=CERT, retry_for_s=5) as c:
            c.create_job(JOB, V1, 1)
        via = PulsegateClient(
            api_address(follower), tls_ca=CERT, follow_leader=False, retry_for_s=5
        )
        with via:
            assert via.info().role == "follower"
            via.kill_job(JOB, "over TLS, through the follower")  # forwarded over TLS
            assert via.list_jobs() == []
        plain = PulsegateClient(api_address(leader), retry_for_s=0.5)
        with plain, pytest.raises(Unavailable):
            plain.list_jobs()
    finally:
        follower.stop()
        leader.stop()


def test_clients_find_the_leader_through_zookeeper(zk_server, tmp_path) -> None:
    path = root()
    leader = wait_serving(start_scheduler(zk_server.hosts, path, tmp_path / "a", "a"))
    follower = start_scheduler(zk_server.hosts, path, tmp_path / "b", "b")
    try:
        with PulsegateClient(zookeeper=zk_server.hosts, zk_root=path, retry_for_s=5) as c:
            c.ping()
            assert c.address == api_address(leader)
        leader.stop()
        wait_serving(follower)
        with PulsegateClient(zookeeper=zk_server.hosts, zk_root=path, retry_for_s=20) as c:
            c.ping()
            assert c.address == api_address(follower)
    finally:
        follower.stop()
        leader.stop()
