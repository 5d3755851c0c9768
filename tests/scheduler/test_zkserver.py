"""The embedded ZooKeeper helper runs a real server that behaves like production ZooKeeper."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.protocol.states import KazooState

from scheduler.zkserver import EmbeddedZooKeeper, ZooKeeperEnsemble, ZooKeeperStartError

from waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
CONNECTION_RETRY = dict(max_tries=-1, delay=0.1, backoff=2, max_delay=1.0)


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 here may be slow to reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def started_client(hosts: str) -> KazooClient:
    client = KazooClient(hosts=hosts, connection_retry=CONNECTION_RETRY)
    client.start(timeout=10)
    return client


def close(*clients: KazooClient) -> None:
    for client in clients:
        client.stop()
        client.close()


def test_serves_a_roundtrip(zk_client: KazooClient) -> None:
    zk_client.create("/job/web", b"v1", makepath=True)
    data, stat = zk_client.get("/job/web")
    assert (data, stat.version) == (b"v1", 0)


def test_chroot_isolates_tests(zk_client: KazooClient, zk_hosts: str) -> None:
    assert zk_hosts.startswith("127.0.0.1:")
    assert "/pulsegate-test-" in zk_hosts
    assert zk_client.get_children("/") == []


def test_data_survives_stop_and_start(tmp_path: Path) -> None:
    server = EmbeddedZooKeeper(tmp_path)
    with server:
        port = server.port
        client = started_client(server.hosts)
        client.create("/kept", b"before-restart")
        close(client)
        server.stop()
        assert not server.is_running()
        server.start()
        assert server.port == port
        assert server.mode() == "standalone"
        client = started_client(server.hosts)
        try:
            assert client.get("/kept")[0] == b"before-restart"
        finally:
            close(client)


def test_session_survives_a_crash_and_restart(tmp_path: Path) -> None:
    server = EmbeddedZooKeeper(tmp_path)
    server.start()
    states: list[str] = []
    # A 60 s session outlives the JVM's restart even on a heavily loaded 2-core machine (it
    # once took longer than 10 s, and longer than 30 s at load 20), which is what this test is
    # about; the reconnect deadline matches it.
    client = KazooClient(hosts=server.hosts, timeout=60.0, connection_retry=CONNECTION_RETRY)
    client.add_listener(states.append)  # only appends: listeners must not block
    try:
        client.start(timeout=10)
        client.create("/alive", b"", ephemeral=True)
        session_id = client.client_id[0]

        server.kill()
        wait_until(lambda: KazooState.SUSPENDED in states, 10, message=f"no SUSPENDED: {states}")
        server.start()
        wait_until(
            lambda: states[-1] == KazooState.CONNECTED, 60, message=f"no reconnect: {states}"
        )

        assert states == [KazooState.CONNECTED, KazooState.SUSPENDED, KazooState.CONNECTED], states
        assert client.client_id[0] == session_id, "a new session: the old one expired"
        stat = client.exists("/alive")
        assert stat is not None
        assert stat.ephemeralOwner == session_id
    finally:
        close(client)
        server.stop()


def test_ensemble_replicates_and_fails_over(tmp_path: Path) -> None:
    ensemble = ZooKeeperEnsemble(tmp_path, size=3)
    ensemble.start()
    clients: list[KazooClient] = []
    try:
        assert sorted(node.mode() for node in ensemble.nodes) == ["follower", "follower", "leader"]
        first = started_client(ensemble.node(0).hosts)
        second = started_client(ensemble.node(1).hosts)
        every = started_client(ensemble.hosts)
        clients += [first, second, every]
        first.create("/replicated", b"from-node-0")
        second.sync("/replicated")  # a follower may lag: sync, as production readers must
        assert second.get("/replicated")[0] == b"from-node-0"

        old_leader = ensemble.leader_index()
        assert old_leader is not None
        ensemble.kill_node(old_leader)
        killed_at = time.monotonic()

        def can_write() -> bool:
            try:
                every.set_async("/replicated", b"after-failover").get(timeout=1.0)
            except (KazooException, every.handler.timeout_exception):
                return False
            return True

        wait_until(can_write, 15, message="no write accepted after the leader was killed")
        write_gap = time.monotonic() - killed_at
        new_leader = wait_until(
            lambda: ensemble.leader_index() not in (None, old_leader), 10, message="no new leader"
        )
        assert new_leader
        assert write_gap < 15

        ensemble.start_node(old_leader)
        assert ensemble.node(old_leader).mode() == "follower"
    finally:
        close(*clients)
        pids = [node.pid for node in ensemble.nodes]
        ensemble.stop()
    assert not any(pid is not None and is_alive(pid) for pid in pids)


def test_missing_jars_say_how_to_install(tmp_path: Path) -> None:
    server = EmbeddedZooKeeper(tmp_path, jar_dir=tmp_path / "no-such-dir")
    with pytest.raises(ZooKeeperStartError, match=r"deploy/bootstrap\.sh") as raised:
        server.start()
    assert raised.value.reason == "missing_jar"
    assert server.pid is None


def test_missing_java_says_how_to_install(tmp_path: Path) -> None:
    server = EmbeddedZooKeeper(tmp_path, java=str(tmp_path / "no-java"))
    with pytest.raises(ZooKeeperStartError, match=r"deploy/bootstrap\.sh") as raised:
        server.start()
    assert raised.value.reason == "missing_java"


def test_a_port_in_use_is_refused_before_the_jvm_starts(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = EmbeddedZooKeeper(tmp_path, port=port)
        with pytest.raises(ZooKeeperStartError, match=f"port {port} .* already in use") as raised:
            server.start(timeout=20)
    assert raised.value.reason == "port_in_use"
    assert server.pid is None


def test_a_bind_failure_of_the_jvm_fails_with_the_log_tail(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("scheduler.zkserver.is_port_free", lambda host, port: True)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        server = EmbeddedZooKeeper(tmp_path, port=squatter.getsockname()[1])
        with pytest.raises(ZooKeeperStartError, match="Address already in use") as raised:
            server.start(timeout=20)
    assert raised.value.reason == "exited"
    assert server.pid is not None
    assert not is_alive(server.pid)


def test_a_relative_data_dir_works(tmp_path: Path, monkeypatch) -> None:
    """The quickstart's relative state dir: the JVM runs in the data dir, so every path it is
    given must be absolute."""
    monkeypatch.chdir(tmp_path)
    server = EmbeddedZooKeeper(Path("var/quickstart/zookeeper"))
    with server:
        assert server.mode() == "standalone"
        assert server.data_dir == tmp_path / "var/quickstart/zookeeper"


def test_a_second_server_on_a_running_servers_port_is_refused(tmp_path: Path, monkeypatch) -> None:
    """It used to take the first server's answer for its own and "start", silently sharing it."""
    first = EmbeddedZooKeeper(tmp_path / "first")
    with first:
        second = EmbeddedZooKeeper(tmp_path / "second", port=first.port)
        with pytest.raises(ZooKeeperStartError, match="already in use") as raised:
            second.start(timeout=20)
        assert raised.value.reason == "port_in_use"
        # Past the check (a race with another server binding the port): the answer on the
        # port comes from the first server's data dir, so the second still does not pass.
        monkeypatch.setattr("scheduler.zkserver.is_port_free", lambda host, port: True)
        with pytest.raises(ZooKeeperStartError) as raised:
            second.start(timeout=20)
        assert raised.value.reason in ("port_in_use", "exited"), raised.value
        assert second.pid is not None and not is_alive(second.pid)
        assert first.mode() == "standalone"


def test_the_hosts_file_names_the_port_and_a_restart_takes_it_again(tmp_path: Path) -> None:
    first = EmbeddedZooKeeper(tmp_path)
    with first:
        assert (tmp_path / "hosts").read_text() == f"{first.hosts}\n"
    again = EmbeddedZooKeeper(tmp_path)  # no port given: the data dir's last one, being free
    assert again.port == first.port


def test_no_jvm_left_after_stop_or_kill(tmp_path: Path) -> None:
    server = EmbeddedZooKeeper(tmp_path)
    with server:
        pid = server.pid
        assert pid is not None and is_alive(pid)
    assert not server.is_running()
    assert not is_alive(pid)

    server.start()
    pid = server.pid
    assert pid is not None
    server.kill()
    assert not is_alive(pid)


def test_die_with_parent_stops_the_jvm_when_its_owner_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "zk.pid"
    owner_code = (
        "import sys, threading\n"
        "from pathlib import Path\n"
        "from scheduler.zkserver import EmbeddedZooKeeper\n"
        f"zk = EmbeddedZooKeeper(Path({str(tmp_path / 'zk')!r}), die_with_parent=True)\n"
        "zk.start()\n"
        f"Path({str(pid_file)!r}).write_text(str(zk.pid))\n"
        "threading.Event().wait()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    owner = subprocess.Popen([sys.executable, "-c", owner_code], env=env)
    jvm_pid = None
    try:
        text = wait_until(
            lambda: pid_file.exists() and pid_file.read_text(), 30, message="owner never started"
        )
        jvm_pid = int(text)
        assert is_alive(jvm_pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        wait_until(lambda: not is_alive(jvm_pid), 10, message="the JVM outlived its owner")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if jvm_pid is not None and is_alive(jvm_pid):
            os.kill(jvm_pid, signal.SIGKILL)
