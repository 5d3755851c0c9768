"""What the local driver knows of one instance: its process, its health, its restarts. Owned
by the reconciler thread; nothing here acts on its own."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from scheduler.drivers.health import Streak
from scheduler.drivers.process import ProcessGroup, ProcessId
from updater.driver import InstanceState
from updater.keys import JobKey
from updater.task import TaskConfig

S = InstanceState
MAX_BACKOFF_EXPONENT = 63  # 2.0 ** 1024 overflows a float; far past any sane cap anyway


def backoff_delay(streak: int, base_s: float, cap_s: float) -> float:
    """The wait before restart number `streak` (1, 2, ...): doubling from `base_s`, at most
    `cap_s`, for any streak."""
    return min(cap_s, base_s * 2.0 ** min(max(streak - 1, 0), MAX_BACKOFF_EXPONENT))


class Instance:
    """One instance's process and what we know about it (reconciler thread only)."""

    def __init__(self, job: JobKey, instance_id: int) -> None:
        self.job = job
        self.instance_id = instance_id
        self.desired: TaskConfig | None = None
        self.parked = False  # left as it is until the update acts on it (takeover, rule 8)
        self.config: TaskConfig | None = None
        self.state = S.ABSENT
        self.proc: subprocess.Popen[bytes] | None = None
        self.ident: ProcessId | None = None
        self.group: ProcessGroup | None = None  # set while anything of it may still run
        self.port = 0
        self.log: Path | None = None
        self.healthy_since: int | None = None
        self.failures = 0
        self.message = ""
        self.streak: Streak | None = None
        self.started_at = 0.0
        self.next_check: float | None = None
        self.checking = False
        self.generation = 0
        self.restart_at: float | None = None
        self.kill_deadline: float | None = None
        self.restart_after_kill = False
        self.backoff_streak = 0
        self.published: tuple[object, ...] = ()

    def is_alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.ident is not None and self.ident.is_alive()

    def exit_reason(self) -> str:
        if self.proc is None:
            return "exited (adopted process, status unknown)"
        code = self.proc.returncode
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"
