"""`pulsegate scheduler run` as a newcomer starts it: from a directory of their own with the
default (relative) state dir and an embedded ZooKeeper; and a second scheduler on a port that is
taken is refused with a message that says which port and which setting to change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from api.server import ApiServer
from scheduler.ports import PortInUse
from scheduler.zkserver import find_free_port

from waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]


class Run:
    """One `pulsegate scheduler run` child, in `cwd`; its stderr (JSON logs, and any error for
    the operator) goes to a file."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.cwd = cwd
        self.log = cwd / "scheduler.log"
        environ = {**os.environ, "PYTHONPATH": str(ROOT), "PULSEGATE_LOG_FORMAT": "json"}
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "scheduler", "run", *args],
                cwd=cwd,
                env={**environ, **(env or {})},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def started(self) -> dict[str, Any] | None:
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"scheduler_started"' in line:
                return dict(json.loads(line))
        return None

    def ready(self) -> bool:
        started = self.started()
        if started is None:
            return False
        try:
            with urllib.request.urlopen(f"http://{started['http']}/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def refused(self) -> str:
        """Wait for the child to exit (a scheduler that starts anyway fails the test) and
        return what it said to the operator on stderr."""
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the second scheduler started instead of refusing") from None
        output = self.log.read_text(errors="replace")
        assert code != 0, output
        assert "Traceback" not in output, output
        # For the operator, a line of text (not only the JSON log line saying the same).
        said = [line for line in output.splitlines() if line.startswith("pulsegate: ")]
        assert said, output
        return "\n".join(said)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, int]]:
    """A scheduler started as the quickstart does: embedded ZooKeeper, default state dir `var`
    (relative), from a directory of its own. Its embedded ZooKeeper's port is fixed, so that a
    second scheduler can be pointed at the same one."""
    zk_port = find_free_port()
    run = Run(
        tmp_path_factory.mktemp("first"),
        "--zk", "embedded", "--api-port", "0", "--http-port", "0",
        env={"PULSEGATE_ZOOKEEPER_EMBEDDED_PORT": str(zk_port)},
    )  # fmt: skip
    try:
        wait_until(
            lambda: run.ready() or run.proc.poll() is not None,
            timeout=60,
            message="the first scheduler did not become ready",
        )
        assert run.proc.poll() is None, run.log.read_text()
        yield run, zk_port
    finally:
        run.stop()


def test_the_default_relative_state_dir_and_embedded_zookeeper_work(first) -> None:
    run, zk_port = first
    hosts_file = run.cwd / "var" / "zookeeper" / "hosts"
    assert hosts_file.read_text() == f"127.0.0.1:{zk_port}\n"
    client = KazooClient(hosts=hosts_file.read_text().strip())  # as a client would find it
    client.start(timeout=10)
    try:
        data = wait_until(
            lambda: client.exists("/pulsegate/leader") and client.get("/pulsegate/leader")[0],
            timeout=30,
            message="no leader in the embedded ZooKeeper",
        )
    finally:
        client.stop()
        client.close()
    assert json.loads(data)["api"] == run.started()["api"]


def test_a_second_scheduler_on_the_same_api_port_is_refused(first, tmp_path) -> None:
    run, zk_port = first
    api_port = run.started()["api"].rpartition(":")[2]
    second = Run(
        tmp_path,
        "--zk", f"127.0.0.1:{zk_port}", "--api-port", api_port, "--http-port", "0",
    )  # fmt: skip
    try:
        output = second.refused()
    finally:
        second.stop()
    assert f"the Thrift API port {api_port} on 127.0.0.1 is already in use" in output
    assert "--api-port, api.port or PULSEGATE_API_PORT" in output
    assert run.ready()  # the first one is untouched


def test_a_second_scheduler_on_the_same_http_port_is_refused(first, tmp_path) -> None:
    run, zk_port = first
    http_port = run.started()["http"].rpartition(":")[2]
    second = Run(
        tmp_path,
        "--zk", f"127.0.0.1:{zk_port}", "--api-port", "0", "--http-port", http_port,
    )  # fmt: skip
    try:
        output = second.refused()
    finally:
        second.stop()
    assert f"the HTTP port {http_port} on 127.0.0.1 is already in use" in output
    assert "--http-port, http.port or PULSEGATE_HTTP_PORT" in output


def test_a_second_embedded_scheduler_does_not_join_the_first_ones_zookeeper(
    first, tmp_path
) -> None:
    run, zk_port = first
    second = Run(
        tmp_path,
        "--zk", "embedded", "--api-port", "0", "--http-port", "0",
        env={"PULSEGATE_ZOOKEEPER_EMBEDDED_PORT": str(zk_port)},
    )  # fmt: skip
    try:
        output = second.refused()
    finally:
        second.stop()
    assert f"the embedded ZooKeeper's port {zk_port} on 127.0.0.1 is already in use" in output
    assert "zookeeper.embedded_port or PULSEGATE_ZOOKEEPER_EMBEDDED_PORT" in output
    assert run.ready()


def test_embedded_zookeeper_on_a_free_port(tmp_path) -> None:
    """`zookeeper.embedded_port = 0`: any free port, named in the state dir for clients."""
    run = Run(
        tmp_path,
        "--zk", "embedded", "--api-port", "0", "--http-port", "0", "--state-dir", "state",
        env={"PULSEGATE_ZOOKEEPER_EMBEDDED_PORT": "0"},
    )  # fmt: skip
    try:
        wait_until(lambda: run.ready() or run.proc.poll() is not None, timeout=60)
        assert run.proc.poll() is None, run.log.read_text()
        hosts = (tmp_path / "state" / "zookeeper" / "hosts").read_text().strip()
        assert run.started()["zookeeper"] == hosts
    finally:
        run.stop()


def test_the_api_server_binds_its_port_alone(scheduler) -> None:
    """thriftpy2 sets SO_REUSEPORT, which let a second server share a port in use."""
    taken = scheduler.api.port
    second = ApiServer(scheduler.api.handler, "127.0.0.1", taken)
    with pytest.raises(PortInUse) as raised:
        second.start()
    assert raised.value.key == "api.port"
    assert f"port {taken} on 127.0.0.1 is already in use" in raised.value.message
