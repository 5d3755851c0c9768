"""The API without the rebuilt thriftpy2 (any `pip install` gets the stock wheel, whose compiled
decoder is unguarded): the server falls back to the pure-Python protocol and transport, and
every call must still answer. Forced here by the server's flag, not by uninstalling anything.

And readiness: a scheduler whose own API cannot answer it is not ready."""

from __future__ import annotations

import socket
import struct
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import thriftpy2.protocol.binary as pure
from thriftpy2.thrift import TMessageType, TType

import api.server
from api.client import PulsegateClient
from api.server import attach
from api.wire import transport_factory
from scheduler.config import load_config
from scheduler.logs import configure_logging
from scheduler.service import Scheduler
from updater.keys import JobKey
from updater.task import TaskConfig

from cluster import FAST_SIM, api_address, wait_serving
from waiting import wait_until

DATA = Path(__file__).resolve().parent / "data"
CERT, KEY = str(DATA / "tls-cert.pem"), str(DATA / "tls-key.pem")
JOB = JobKey("www", "prod", "fallback")
V1 = TaskConfig.make(["v1", "a string"], environment={"GREETING": "hello"}, labels=FAST_SIM)


def scheduler_on(
    hosts: str, state_dir: Path, force_pure: bool, probe_interval_s: float = 5.0, **flags: Any
) -> Scheduler:
    values: dict[str, object] = {
        "scheduler.id": f"fallback-{uuid.uuid4().hex[:6]}",
        "scheduler.state_dir": str(state_dir),
        "zookeeper.hosts": hosts,
        "zookeeper.root": f"/fallback-{uuid.uuid4().hex[:8]}",
        "zookeeper.session_timeout_s": 4.0,
        "api.port": 0,
        "http.port": 0,
        "log.format": "console",
        "log.level": "warning",
        **flags,
    }
    config = load_config(None, {}, values)
    configure_logging(config.log_level, config.log_format, stream=sys.stderr)
    scheduler = Scheduler(config, api_probe_interval_s=probe_interval_s)
    attach(scheduler, force_pure_protocol=force_pure)
    scheduler.start()
    return scheduler


@pytest.mark.parametrize(
    ("transport", "tls"), [("buffered", False), ("framed", False), ("buffered", True)]
)
def test_the_pure_fallback_answers_every_call(zk_server, tmp_path, transport, tls) -> None:
    flags: dict[str, object] = {"api.transport": transport}
    if tls:
        flags |= {"api.tls_cert": CERT, "api.tls_key": KEY}
    s = wait_serving(scheduler_on(zk_server.hosts, tmp_path, force_pure=True, **flags))
    try:
        assert isinstance(s.api._server.iprot_factory, pure.TBinaryProtocolFactory)
        client = PulsegateClient(
            api_address(s), transport=transport, tls_ca=CERT if tls else None, retry_for_s=5
        )
        with client:
            info = client.info()  # strings in the reply: what the mixed pair could not write
            assert (info.role, info.serving) == ("leader", True)
            client.create_job(JOB, V1, 2)
            assert client.list_jobs() == [JOB]
            assert client.get_job(JOB).groups[0].config == V1
        assert s.api.bad_input == 0
        wait_until(lambda: s.status()["ready"], message=f"not ready: {s.status()}")
    finally:
        s.stop()


def test_the_pure_fallback_still_refuses_a_container_of_an_unknown_type(
    zk_server, tmp_path
) -> None:
    """The 30 hostile bytes the fallback exists for: a list of 2e9 elements of type VOID."""
    s = wait_serving(scheduler_on(zk_server.hosts, tmp_path, force_pure=True))
    try:
        name = b"listJobs"
        payload = (
            struct.pack("!iI", -2147418112 | TMessageType.CALL, len(name))  # version 1, CALL
            + name
            + struct.pack("!i", 7)  # seqid
            + struct.pack("!bh", TType.LIST, 1)
            + struct.pack("!bi", 1, 2_000_000_000)
            + b"\x00"
        )
        with socket.create_connection(("127.0.0.1", s.api.port), timeout=5) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # the server closes the connection (a timeout fails)
                pass
        wait_until(lambda: s.api.bad_input == 1, message="the hostile list was not refused")
        with PulsegateClient(api_address(s), retry_for_s=5) as client:
            assert client.info().serving
    finally:
        s.stop()


def test_not_ready_while_the_api_cannot_answer_its_own_probe(zk_server, tmp_path) -> None:
    s = wait_serving(
        scheduler_on(zk_server.hosts, tmp_path, force_pure=False, probe_interval_s=0.1)
    )
    try:
        wait_until(lambda: s.status()["ready"], message=f"not ready: {s.status()}")
        assert s.status()["api"] == "ok"
        s.api.stop()  # the port no longer answers; ZooKeeper and leadership are fine
        wait_until(lambda: not s.status()["ready"], message="still ready with its API gone")
        status = s.status()
        assert status["serving"] is True and status["zookeeper"] == "connected"
        assert status["api"].startswith("failing: "), status
    finally:
        s.stop()


def test_not_ready_when_replies_cannot_be_written(zk_server, tmp_path, monkeypatch) -> None:
    """The stock-wheel failure as it was: the pure protocol over the compiled transport fails
    every reply with a string, and the node must not call itself ready meanwhile."""

    def mixed_pair(transport: str, force_pure: bool = False) -> tuple[Any, Any]:
        return pure.TBinaryProtocolFactory(), transport_factory(transport)

    monkeypatch.setattr(api.server, "server_codec", mixed_pair)
    s = wait_serving(scheduler_on(zk_server.hosts, tmp_path, force_pure=True, probe_interval_s=0.1))
    try:
        wait_until(lambda: s.status()["api"].startswith("failing: "), message=str(s.status()))
        assert s.status()["ready"] is False
        assert s.api.bad_input >= 1  # the reply's TypeError, counted as bad input
    finally:
        s.stop()
