"""Instance processes: start, stop, and tell whether a pid is still the process we started.

Every instance runs in a session of its own (so a Ctrl-C or SIGTERM meant for the scheduler
never reaches it, and it outlives a scheduler restart), with stdout and stderr appended to a
log file. A process is identified by pid *and* its start time in clock ticks since boot (field
22 of /proc/<pid>/stat) *and* the boot id, so a reused pid is never mistaken for our instance.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import attrs

from updater.task import TaskConfig

_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    try:
        return _BOOT_ID_PATH.read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """The process's start time since boot, or None if there is no such (live) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may contain spaces and parens
    if fields[0] in ("Z", "X"):  # a zombie has exited; it only awaits its parent's wait()
        return None
    return int(fields[19])


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


def spawn(config: TaskConfig, port: int, log_path: Path, base_dir: Path) -> subprocess.Popen[bytes]:
    """Start an instance. Raises OSError (e.g. FileNotFoundError) if it cannot be started."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **config.env, "PORT": str(port)}
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


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the instance's process group (it leads its own session), falling back to the
    process alone. A process that is already gone is fine."""
    if pid <= 1:  # 0 and -1 would mean our own group or every process: never
        raise ValueError(f"refusing to signal pid {pid}")
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    except PermissionError:
        pass


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
