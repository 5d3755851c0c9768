"""Run a real ZooKeeper (Debian's ``zookeeper`` package) as a child process.

Used by ``pulsegate scheduler run --zk embedded``, the demo and the test fixtures, so that every
ZooKeeper code path runs against the real server rather than a fake.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

from scheduler.ports import is_port_free

SERVER_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
_BOOTSTRAP_HINT = "run deploy/bootstrap.sh (it installs the Debian `zookeeper` package and a JRE)"
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.02


class ZooKeeperStartError(RuntimeError):
    """ZooKeeper could not be started; ``reason`` is a short label usable in metrics."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _reserve_ports(count: int, host: str) -> list[int]:
    """Pick ``count`` distinct free ports *below* the kernel's ephemeral range.

    A port from the ephemeral range can be taken as the source port of an outgoing connection
    (or a client can even connect to itself) while the server is down, which would break
    restarting on the same port. The sockets stay bound until all ports are chosen.
    """
    low = 10000
    high = min(_ephemeral_range()[0], 65536) - 1
    held: list[socket.socket] = []
    try:
        for _ in range(2000):
            if len(held) == count:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, random.randint(low, high)))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        else:
            raise ZooKeeperStartError(f"no free port on {host}", reason="no_free_port")
        return [s.getsockname()[1] for s in held]
    finally:
        for sock in held:
            sock.close()


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a currently free TCP port on ``host`` that is safe to reuse across restarts."""
    return _reserve_ports(1, host)[0]


def four_letter_word(host: str, port: int, cmd: str = "srvr", timeout: float = 1.0) -> str:
    """Send a ZooKeeper four-letter command and return the reply ("" if unreachable)."""
    chunks: list[bytes] = []
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(cmd.encode("ascii"))
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode("utf-8", "replace")


def _pdeathsig_preexec() -> Callable[[], None]:
    """Build a preexec_fn that asks the kernel to SIGTERM the child when its parent dies.

    libc is resolved here, in the parent: ``find_library`` may spawn ldconfig, which must not
    happen between fork and exec.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class EmbeddedZooKeeper:
    """One ZooKeeper server (standalone, or a member of a :class:`ZooKeeperEnsemble`).

    The data dir holds ``zoo.cfg``, ``myid``, the snapshots, ``zookeeper.log`` and ``hosts`` (the
    connection string it last served on, for clients to read); ``start()`` after ``stop()`` or
    ``kill()`` reuses it and the port, so data and sessions survive restarts. Without a ``port``,
    a new server takes the port in ``hosts`` again if that one is free, else any free port.

    ``start()`` refuses a port something else listens on (reason ``port_in_use``), and only
    reports serving once the server answering on the port says it uses this data dir, so a
    server started on another's port never passes for one that runs.

    ``die_with_parent=True`` sets PR_SET_PDEATHSIG so the JVM gets SIGTERM if we die without
    stopping it. Caveat: Linux fires it when the *thread* that forked exits, not the process, so
    call ``start()`` from a thread that lives as long as the server should.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        tick_ms: int = 2000,
        java: str | None = None,
        jar_dir: Path = Path("/usr/share/java"),
        die_with_parent: bool = False,
        server_id: int | None = None,
        peers: list[tuple[int, int, int, int]] | None = None,
    ) -> None:
        # Absolute: the JVM runs with the data dir as its working directory.
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port if port is not None else self._previous_port() or find_free_port(host)
        self.tick_ms = tick_ms
        self.java = java
        self.jar_dir = Path(jar_dir)
        self.die_with_parent = die_with_parent
        self.server_id = server_id
        self.peers = list(peers or [])
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> str:
        """Connection string for a kazoo client."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "zookeeper.log"

    @property
    def hosts_path(self) -> Path:
        return self.data_dir / "hosts"

    def _previous_port(self) -> int | None:
        try:
            host, _, port = self.hosts_path.read_text().strip().rpartition(":")
            previous = int(port)
        except (OSError, ValueError):
            return None
        return previous if host == self.host and is_port_free(self.host, previous) else None

    def served_data_dir(self) -> Path | None:
        """The data dir of the server answering on our port (None if none answers): ours, or
        another's that holds the port."""
        for line in self.four_letter_word("conf").splitlines():
            if line.startswith("dataDir="):  # <data dir>/version-2
                return Path(line.partition("=")[2].strip()).parent
        return None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def four_letter_word(self, cmd: str = "srvr") -> str:
        return four_letter_word(self.host, self.port, cmd)

    def mode(self) -> str:
        """Return the server's role from ``srvr``; "" when it is down or not serving.

        One of "standalone", "leader", "follower" (or "observer").
        """
        for line in self.four_letter_word().splitlines():
            if line.startswith("Mode:"):
                return line.partition(":")[2].strip()
        return ""

    def write_config(self) -> Path:
        """Write zoo.cfg (and myid for ensemble members); safe to repeat on every start."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"tickTime={self.tick_ms}",
            "initLimit=10",
            "syncLimit=5",
            f"dataDir={self.data_dir}",
            f"clientPort={self.port}",
            f"clientPortAddress={self.host}",
            "admin.enableServer=false",
            "4lw.commands.whitelist=*",
            "maxClientCnxns=0",
        ]
        for sid, _client, quorum, election in self.peers:
            lines.append(f"server.{sid}={self.host}:{quorum}:{election}")
        if self.peers:
            (self.data_dir / "myid").write_text(f"{self.server_id}\n")
        cfg = self.data_dir / "zoo.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    def _command(self, cfg: Path) -> list[str]:
        java = self.java or shutil.which("java")
        if not java or not Path(java).exists():
            raise ZooKeeperStartError(f"java not found; {_BOOTSTRAP_HINT}", reason="missing_java")
        jar = self.jar_dir / "zookeeper.jar"
        if not jar.exists():
            raise ZooKeeperStartError(f"{jar} not found; {_BOOTSTRAP_HINT}", reason="missing_jar")
        # The jar's manifest Class-Path pulls in its dependencies; slf4j-simple is only logging.
        classpath = [str(jar)]
        if (self.jar_dir / "slf4j-simple.jar").exists():
            classpath.append(str(self.jar_dir / "slf4j-simple.jar"))
        return [
            java,
            "-Xms32m",
            "-Xmx256m",
            "-Dzookeeper.admin.enableServer=false",
            "-cp",
            ":".join(classpath),
            SERVER_MAIN,
            str(cfg),
        ]

    def start(self, timeout: float = 30.0, wait: bool = True) -> None:
        """Launch the JVM and, if ``wait``, block until ``srvr`` reports a Mode.

        Ensemble members are started with ``wait=False``: none serves until a quorum is up.
        """
        if self.is_running():
            raise ZooKeeperStartError(f"already running (pid {self.pid})", reason="running")
        command = self._command(self.data_dir / "zoo.cfg")
        if not is_port_free(self.host, self.port):
            raise ZooKeeperStartError(
                f"port {self.port} on {self.host} is already in use (another ZooKeeper?)",
                reason="port_in_use",
            )
        self.write_config()
        preexec = _pdeathsig_preexec() if self.die_with_parent else None
        # The log is a file, never a pipe: a pipe nobody reads would block the JVM when full.
        with self.log_path.open("ab") as log:
            log.write(f"--- pulsegate: starting {' '.join(command)}\n".encode())
            log.flush()
            # A new session keeps Ctrl-C in a terminal from killing ZooKeeper before its owner
            # has shut down cleanly; the owner stops it (and die_with_parent covers crashes).
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=preexec,
            )
        if wait:
            self.wait_serving(timeout)

    def wait_serving(self, timeout: float = 30.0) -> None:
        """Block until the server answers with a Mode; raise with the log tail if it can't."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                self._fail(f"ZooKeeper exited with code {code}", reason="exited")
            if self.mode() and (served := self.served_data_dir()) is not None:
                if served != self.data_dir:
                    self._fail(f"the ZooKeeper of {served} holds the port", reason="port_in_use")
                self.hosts_path.write_text(self.hosts + "\n")
                return
            if time.monotonic() >= deadline:
                self._fail(f"ZooKeeper not serving after {timeout:.1f}s", reason="timeout")
            time.sleep(_POLL_S)

    def _fail(self, what: str, reason: str) -> NoReturn:
        if self.is_running():
            self.kill()
        raise ZooKeeperStartError(
            f"{what} on {self.hosts}; log {self.log_path} ends with:\n{self.log_tail()}",
            reason=reason,
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self) -> None:
        """Send SIGTERM without waiting (lets an ensemble stop its nodes in parallel)."""
        if self.is_running():
            assert self._proc is not None
            self._proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; returns once the process is reaped."""
        if self._proc is None:
            return
        self.terminate()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._proc.wait()

    def kill(self) -> None:
        """SIGKILL at once, like a crash (for fault tests); waits until reaped."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        self._proc.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ZooKeeperEnsemble:
    """``size`` ZooKeeper servers on loopback forming a quorum, for failover tests and demos."""

    def __init__(
        self,
        base_dir: Path,
        size: int = 3,
        host: str = "127.0.0.1",
        tick_ms: int = 2000,
        java: str | None = None,
        jar_dir: Path = Path("/usr/share/java"),
        die_with_parent: bool = False,
    ) -> None:
        ports = _reserve_ports(3 * size, host)
        peers = [(i + 1, ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]) for i in range(size)]
        self.nodes = [
            EmbeddedZooKeeper(
                Path(base_dir) / f"zk{sid}",
                port=client,
                host=host,
                tick_ms=tick_ms,
                server_id=sid,
                peers=peers,
                java=java,
                jar_dir=jar_dir,
                die_with_parent=die_with_parent,
            )
            for sid, client, _quorum, _election in peers
        ]

    @property
    def hosts(self) -> str:
        return ",".join(node.hosts for node in self.nodes)

    def node(self, i: int) -> EmbeddedZooKeeper:
        return self.nodes[i]

    def start(self, timeout: float = 30.0) -> None:
        """Start every node and wait until each is a leader or follower."""
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                node.start(wait=False)
            for node in self.nodes:
                node.wait_serving(max(0.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        for node in self.nodes:
            node.terminate()
        for node in self.nodes:
            node.stop(timeout)

    def leader_index(self) -> int | None:
        for i, node in enumerate(self.nodes):
            if node.mode() == "leader":
                return i
        return None

    def kill_node(self, i: int) -> None:
        self.nodes[i].kill()

    def start_node(self, i: int, timeout: float = 30.0) -> None:
        """Restart one node; it serves as soon as it has joined the remaining quorum."""
        self.nodes[i].start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
