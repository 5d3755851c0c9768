"""A real scheduler caps its open API connections, overall and per peer address: one more is
closed at accept (before anything is read), counted by reason, and its place comes back when a
connection closes. Peers are told apart by their source address (all of 127.0.0.0/8 is
loopback). The self-probe is stopped so that its short-lived connection never takes a place."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from thriftpy2.protocol import TBinaryProtocol
from thriftpy2.thrift import TClient
from thriftpy2.transport import TBufferedTransport, TSocket, TTransportException

from api.client import PulsegateClient
from api.idl import Service
from scheduler.http import BACKLOG

from cluster import api_address, start_scheduler, wait_serving
from waiting import wait_until


class Peer:
    """A Thrift connection from `source` (an address of 127.0.0.0/8)."""

    def __init__(self, port: int, source: str) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        self.transport = TBufferedTransport(TSocket(sock=sock))
        self.client: Any = TClient(Service, TBinaryProtocol(self.transport))

    def answers(self) -> bool:
        try:
            self.client.ping()
        except (TTransportException, OSError):
            return False
        return True

    def close(self) -> None:
        self.transport.close()


@pytest.fixture
def capped(zk_server, tmp_path_factory, request) -> Iterator[Any]:
    flags = request.param
    s = start_scheduler(
        zk_server.hosts,
        f"/caps-{uuid.uuid4().hex[:8]}",
        tmp_path_factory.mktemp("scheduler"),
        **flags,
    )
    peers: list[Peer] = []
    try:
        wait_serving(s)
        s.probe.stop()
        s.connect = lambda source: peers.append(Peer(s.api.port, source)) or peers[-1]
        yield s
    finally:
        for p in peers:
            p.close()
        s.stop()


def sample(s: Any, name: str, **labels: str) -> float:
    return s.registry.get_sample_value(f"pulsegate_{name}", labels or None) or 0.0


@pytest.mark.parametrize(
    "capped", [{"api.max_connections": 50, "api.max_connections_per_peer": 3}], indirect=True
)
def test_one_peer_over_its_cap_is_closed_and_others_are_served(capped) -> None:
    first = [capped.connect("127.0.0.2") for _ in range(3)]
    assert all(p.answers() for p in first)
    with capture_logs() as logs:
        assert not capped.connect("127.0.0.2").answers()
    assert sample(capped, "api_connections_refused_total", reason="max_connections_per_peer") == 1
    assert sample(capped, "api_connections_refused_total", reason="max_connections") == 0
    refused = [e for e in logs if e["event"] == "api_connection_refused"]
    assert refused and refused[0]["reason"] == "max_connections_per_peer"
    assert refused[0]["peer"] == "127.0.0.2"
    assert capped.connect("127.0.0.3").answers()  # another peer is not affected
    assert sample(capped, "api_connections_open") == 4
    first[0].close()  # a place comes back when a connection ends
    wait_until(lambda: sample(capped, "api_connections_open") == 3, timeout=10)
    assert capped.connect("127.0.0.2").answers()
    assert all(p.answers() for p in first[1:])


@pytest.mark.parametrize(
    "capped", [{"api.max_connections": 4, "api.max_connections_per_peer": 100}], indirect=True
)
def test_the_overall_cap_holds_across_peers(capped) -> None:
    held = [capped.connect(f"127.0.0.{i}") for i in range(2, 6)]
    assert all(p.answers() for p in held)
    assert not capped.connect("127.0.0.9").answers()
    assert sample(capped, "api_connections_refused_total", reason="max_connections") == 1
    assert sample(capped, "api_connections_open") == 4
    held.pop().close()
    wait_until(lambda: sample(capped, "api_connections_open") == 3, timeout=10)
    assert capped.connect("127.0.0.9").answers()


def test_the_defaults_are_2000_and_200(scheduler) -> None:
    assert (scheduler.api.gate.max_open, scheduler.api.gate.max_per_peer) == (2000, 200)


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_the_http_listener_queues_128_connections(scheduler) -> None:
    port = scheduler.http.port
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    # a listening socket's Send-Q column is its backlog
    assert out[0] == "LISTEN" and int(out[2]) == BACKLOG >= 128, out


def test_a_silent_tls_peer_does_not_hold_up_other_clients(zk_server, tmp_path) -> None:
    """The TLS handshake runs in the connection's thread, not the accept loop: a peer that
    connects and sends nothing (or stalls mid-handshake) delays nobody else."""
    data = Path(__file__).resolve().parent / "data"
    cert, key = str(data / "tls-cert.pem"), str(data / "tls-key.pem")
    s = start_scheduler(
        zk_server.hosts,
        f"/tls-{uuid.uuid4().hex[:8]}",
        tmp_path,
        **{"api.tls_cert": cert, "api.tls_key": key},
    )
    silent = []
    try:
        wait_serving(s)
        silent = [socket.create_connection(("127.0.0.1", s.api.port)) for _ in range(3)]
        silent[1].sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        with PulsegateClient(api_address(s), tls_ca=cert, retry_for_s=0) as c:
            assert c.ping() is None
    finally:
        for sock in silent:
            sock.close()
        s.stop()
