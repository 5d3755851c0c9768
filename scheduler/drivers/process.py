"""Instance processes: start, stop, and tell whether a pid is still the process we started.

Every instance runs in a session of its own (so a Ctrl-C or SIGTERM meant for the scheduler
never reaches it, and it outlives a scheduler restart), with stdout and stderr appended to a
log file. A process is identified by pid *and* its start time in clock ticks since boot (field
22 of /proc/<pid>/stat) *and* the boot id, so a reused pid is never mistaken for our instance.
Whatever the instance starts stays in its process group, which is stopped as a whole.
Every instance carries its identity in its environment (`SCOPE_VAR` and the variables `spawn` is
given), so a process whose record never landed can still be found in the process table.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import structlog

from updater.task import TaskConfig

log = structlog.get_logger(__name__)
_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
SCOPE_VAR = "PULSEGATE_SCOPE"  # which cluster's driver on this host started it


def boot_id() -> str:
    try:
        return _BOOT_ID_PATH.read_text().strip()
    except OSError:
        return ""


def _live_stat(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on, or None if there is no such live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may contain spaces and parens
    if fields[0] in ("Z", "X"):  # a zombie has exited; it only awaits its parent's wait()
        return None
    return fields


def start_ticks(pid: int) -> int | None:
    """The process's start time since boot, or None if there is no such (live) process."""
    fields = _live_stat(pid)
    return None if fields is None else int(fields[19])


@attrs.frozen
class ProcessId:
    """What identifies a process across scheduler restarts."""

    pid: int
    start_ticks: int
    boot_id: str

    def is_alive(self) -> bool:
        return self.boot_id == boot_id() and start_ticks(self.pid) == self.start_ticks


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _argv(config: TaskConfig, port: int) -> list[str]:
    argv = [arg.replace("{port}", str(port)) for arg in config.command]
    return ["/bin/sh", "-c", argv[0]] if config.shell else argv


def spawn(
    config: TaskConfig,
    port: int,
    log_path: Path,
    base_dir: Path,
    identity: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start an instance; `identity` (which job and instance it is) joins its environment after
    the config's, so a config cannot fake it. Raises OSError (e.g. FileNotFoundError) if it
    cannot be started."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **config.env, **(identity or {}), "PORT": str(port)}
    cwd = base_dir / config.working_dir if config.working_dir else base_dir
    with log_path.open("ab") as log:
        return subprocess.Popen(
            _argv(config, port),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def identify(pid: int) -> ProcessId | None:
    ticks = start_ticks(pid)
    return None if ticks is None else ProcessId(pid, ticks, boot_id())


def is_session_leader(pid: int) -> bool:
    """Whether `pid` leads its own session and group, as every process `spawn` starts does."""
    try:
        return os.getsid(pid) == pid and os.getpgid(pid) == pid
    except OSError:
        return False


def scan_scope(scope: str) -> dict[int, dict[str, str]]:
    """The live session leaders whose environment has `SCOPE_VAR=scope`, pid -> environment:
    the instances this driver's cluster started on this host, recorded or not."""
    needle = f"{SCOPE_VAR}={scope}".encode()
    found: dict[int, dict[str, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        pid = int(entry.name)
        if needle in environ and _live_stat(pid) is not None and is_session_leader(pid):
            pairs = (item.partition(b"=") for item in environ if item)
            found[pid] = {
                k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs
            }
    return found


@attrs.frozen
class GroupScan:
    """The process groups that have a live (not zombie) member, from one pass over /proc."""

    started: float  # time.monotonic() before the pass
    live: frozenset[int]

    @classmethod
    def take(cls) -> GroupScan:
        started = time.monotonic()
        live: set[int] = set()
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and (fields := _live_stat(entry.name)) is not None:
                live.add(int(fields[2]))
        return cls(started, frozenset(live))


class ProcessGroup:
    """An instance's process group, named by the pid of the leader `spawn` started (a session
    leader cannot change its group, so the id stays). While the group has a member the kernel
    cannot reuse its id, so signalling it reaches only processes the instance started; once it
    is found empty it is dropped for good, since the id may then go to someone else's group."""

    def __init__(self, pgid: int) -> None:
        if pgid <= 1:  # 0 and -1 would mean our own group or every process: never
            raise ValueError(f"refusing process group {pgid}")
        self.pgid = pgid
        self.gone = False
        self.killed_at: float | None = None  # the first SIGKILL

    def signal(self, sig: int) -> bool:
        """Signal every member; False, for good, once there is none."""
        if not self.gone:
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                self.gone = True
            except PermissionError:  # every member left changed user: nothing we can do
                log.warning("process_group_not_signalled", pgid=self.pgid)
                self.gone = True
        return not self.gone

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.killed_at is None:
            self.killed_at = time.monotonic()

    def is_empty(self, scan: Callable[[], GroupScan]) -> bool:
        """Whether nothing of it runs. Zombies count as gone once the group was SIGKILLed
        (an init that never reaps would keep them forever); only a scan begun after that
        SIGKILL is trusted, since from then on no member can fork one the scan misses."""
        if self.signal(0) and self.killed_at is not None:
            found = scan()
            if found.started > self.killed_at and self.pgid not in found.live:
                self.gone = True
        return self.gone


def cap_log(path: Path, limit_bytes: int) -> bool:
    """Keep an instance log under `limit_bytes`: copy it to `<name>.1` and truncate it in
    place (the instance appends, so it keeps writing at the new end). True if it was capped."""
    try:
        if path.stat().st_size <= limit_bytes:
            return False
        shutil.copyfile(path, path.with_name(path.name + ".1"))
        with path.open("r+b") as f:
            f.truncate(0)
        return True
    except OSError:
        return False
