"""Scheduler processes for failover tests: start `pulsegate scheduler run` as real child
processes, signal them by pid, and read what they did (ZooKeeper contents, sim action logs)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient

from scheduler import codec
from scheduler.paths import Paths
from updater.keys import UpdateKey

from waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]


class SchedulerProcess:
    def __init__(
        self,
        name: str,
        hosts: str,
        paths: Paths,
        workdir: Path,
        session_timeout_s: float = 4.0,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.name = name
        self.hosts = hosts
        self.paths = paths
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.session_timeout_s = session_timeout_s
        self.extra_env = env or {}
        self.extra_args = args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def action_log(self) -> Path:
        return self.dir / "actions.jsonl"

    @property
    def session_file(self) -> Path:
        return self.dir / "session.json"

    @property
    def log_path(self) -> Path:
        return self.dir / "scheduler.log"

    def start(self) -> SchedulerProcess:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PULSEGATE_DRIVER_SIM_ACTION_LOG": str(self.action_log),
            "PULSEGATE_DEBUG_SESSION_FILE": str(self.session_file),
            "PULSEGATE_LOG_FORMAT": "json",
            "PULSEGATE_DRIVER_KIND": "sim",  # `--driver local` in args wins
            **self.extra_env,
        }
        argv = [
            sys.executable, "-m", "api.cli", "scheduler", "run",
            "--id", self.name,
            "--zk", self.hosts,
            "--zk-root", self.paths.root,
            "--session-timeout", str(self.session_timeout_s),
            "--api-port", "0",
            "--http-port", "0",
            "--state-dir", str(self.dir),
            *self.extra_args,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)

    def actions(self) -> list[dict[str, Any]]:
        if not self.action_log.exists():
            return []
        return [json.loads(line) for line in self.action_log.read_text().splitlines() if line]

    def session(self) -> tuple[int, bytes]:
        value = json.loads(self.session_file.read_text())
        return value["session_id"], bytes.fromhex(value["password"])

    def log_events(self) -> Iterator[dict[str, Any]]:
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except ValueError:
                    continue

    def logged(self, event: str, **fields: Any) -> bool:
        return any(
            e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            for e in self.log_events()
        )


def leader(client: KazooClient, paths: Paths) -> dict[str, Any] | None:
    """The serving leader's identity, from ZooKeeper."""
    stat = client.exists(paths.leader)
    if stat is None:
        return None
    try:
        data, _ = client.get(paths.leader)
    except Exception:
        return None
    return dict(json.loads(data))


def wait_for_leader(client: KazooClient, paths: Paths, name: str, timeout: float = 30.0) -> dict:
    return wait_until(
        lambda: (found := leader(client, paths)) and found["id"] == name and found,
        timeout=timeout,
        message=f"{name} did not become the serving leader",
    )


def expire_session(hosts: str, session: tuple[int, bytes]) -> None:
    """Expire a session for real: a second client on it, closed."""
    thief = KazooClient(hosts=hosts, client_id=session)
    thief.start(timeout=10)
    thief.stop()
    thief.close()


def writes(client: KazooClient, paths: Paths, key: UpdateKey) -> list[tuple[int, str, str]]:
    """Every status and instance-event znode of an update: (ctime ms, writer, znode)."""
    out = []
    for parent in (paths.status(key), paths.events(key)):
        for name in client.get_children(parent):
            data, stat = client.get(f"{parent}/{name}")
            out.append((stat.ctime, codec.loads(data, name).get("writer", ""), f"{parent}/{name}"))
    return sorted(out)


def http_status(proc: SchedulerProcess, path: str = "/ready") -> tuple[int, dict[str, Any]] | None:
    """GET one of the process's HTTP endpoints (its port is in its start-up log line)."""
    import urllib.error
    import urllib.request

    started = last_start(proc)
    if started is None:
        return None
    try:
        with urllib.request.urlopen(f"http://{started['http']}{path}", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except OSError:
        return None


def api_address(proc: SchedulerProcess) -> str | None:
    """The process's Thrift API address, from its start-up log line."""
    started = last_start(proc)
    return None if started is None else str(started["api"])


def last_start(proc: SchedulerProcess) -> dict[str, Any] | None:
    """The latest start-up log line: a process restarted under the same name appends to its
    log, and only its latest start says where it listens now."""
    found = None
    for event in proc.log_events():
        if event.get("event") == "scheduler_started":
            found = event
    return found


def marked_processes(marker: str) -> dict[int, dict[str, str]]:
    """Every live (not zombie) process whose environment holds `PULSEGATE_MARKER=<marker>`,
    pid -> environment: the instances a test or benchmark started, found without asking any
    scheduler, so a duplicate or an orphan shows up whoever started it."""
    needle = f"PULSEGATE_MARKER={marker}".encode()
    found: dict[int, dict[str, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry.name}/environ").read_bytes()
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone, or not ours to read
            continue
        if needle in environ.split(b"\0") and state not in ("Z", "X"):
            pairs = (item.partition(b"=") for item in environ.split(b"\0") if item)
            found[int(entry.name)] = {k.decode(): v.decode(errors="replace") for k, _, v in pairs}
    return found


def kill_marked(marker: str) -> None:
    """SIGKILL what `marked_processes` finds (clean-up after a failed test: they are ours)."""
    for pid in marked_processes(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
