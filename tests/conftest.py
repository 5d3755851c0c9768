"""Shared fixtures: one real ZooKeeper per test run and a fresh chroot per test."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator

import pytest
import structlog
from kazoo.client import KazooClient

from scheduler.zkserver import EmbeddedZooKeeper

# Reconnect at least once a second, so a client gets its session back after a ZooKeeper restart
# (kazoo's default backoff grows to an hour and lets the session expire).
CONNECTION_RETRY = dict(max_tries=-1, delay=0.1, backoff=2, max_delay=1.0)
# Deadlines for getting started: a JVM, or a first session, can take many seconds on a loaded
# 2-core machine. Only a failure waits this long.
ZK_START_S = 120.0
CONNECT_S = 30.0


@pytest.fixture(scope="session", autouse=True)
def quiet_logs() -> None:
    """Schedulers run in-process in many tests; their info logs (from background threads too)
    stay out of the test output. Tests about logging configure and restore it themselves."""
    from scheduler.logs import configure_logging

    configure_logging("warning", "console", stream=sys.stderr)


@pytest.fixture(scope="session")
def zk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedZooKeeper]:
    """A real ZooKeeper for the whole run; a start failure errors every test that needs it."""
    server = EmbeddedZooKeeper(tmp_path_factory.mktemp("zookeeper"))
    server.start(timeout=ZK_START_S)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def zk_hosts(zk_server: EmbeddedZooKeeper) -> str:
    """A connection string with a chroot of its own, so tests never see each other's znodes."""
    chroot = f"/pulsegate-test-{uuid.uuid4().hex}"
    admin = KazooClient(hosts=zk_server.hosts)
    admin.start(timeout=CONNECT_S)
    try:
        admin.ensure_path(chroot)
    finally:
        admin.stop()
        admin.close()
    return zk_server.hosts + chroot


@pytest.fixture
def zk_client(zk_hosts: str) -> Iterator[KazooClient]:
    client = KazooClient(hosts=zk_hosts, connection_retry=CONNECTION_RETRY)
    client.start(timeout=CONNECT_S)
    try:
        yield client
    finally:
        client.stop()
        client.close()


@pytest.fixture
def scheduler(zk_server: EmbeddedZooKeeper, tmp_path_factory: pytest.TempPathFactory):
    """A serving in-process scheduler (sim driver, auth off) with its Thrift API."""
    from cluster import start_scheduler, wait_serving

    root = f"/api-{uuid.uuid4().hex[:8]}"
    s = start_scheduler(zk_server.hosts, root, tmp_path_factory.mktemp("scheduler"))
    try:
        yield wait_serving(s, timeout=60)
    finally:
        s.stop()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put logging back as it was after a test that configures it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
