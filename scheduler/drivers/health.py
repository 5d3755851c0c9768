"""Health checks for local instances: an HTTP GET answering 2xx, a TCP connect, or a command
exiting 0, each with a timeout; and the thresholds that turn single results into a verdict."""

from __future__ import annotations

import enum
import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from updater.task import HealthCheck, HealthCheckKind


def run_check(check: HealthCheck, port: int, cwd: Path) -> tuple[bool, str]:
    """One check. Returns (passed, a short reason when it did not)."""
    timeout = check.timeout_ms / 1000
    try:
        if check.kind is HealthCheckKind.HTTP:
            url = f"http://127.0.0.1:{port}{check.path}"
            with urllib.request.urlopen(url, timeout=timeout) as response:
                code = response.status
            return (200 <= code < 300), f"HTTP {code} from {check.path}"
        if check.kind is HealthCheckKind.TCP:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                return True, ""
        result = subprocess.run(
            [arg.replace("{port}", str(port)) for arg in check.command],
            cwd=cwd,
            env={**os.environ, "PORT": str(port)},
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode == 0:
            return True, ""
        output = (result.stdout + result.stderr).decode(errors="replace").strip()[-200:]
        return False, f"exit status {result.returncode}: {output}".strip(": ")
    except urllib.error.HTTPError as e:
        return False, f"HTTP {e.code} from {check.path}"
    except subprocess.TimeoutExpired:
        return False, f"check command timed out after {timeout:g} s"
    except (OSError, urllib.error.URLError, ValueError) as e:
        reason = getattr(e, "reason", e)
        name = "" if isinstance(reason, str) else type(reason).__name__
        return False, f"{name} {reason}".strip()


class Verdict(enum.Enum):
    NONE = "none"  # nothing changed
    HEALTHY = "healthy"  # passed `healthy_threshold` times in a row
    UNHEALTHY = "unhealthy"  # failed `unhealthy_threshold` times in a row: restart it


class Streak:
    """Consecutive results for one instance incarnation."""

    def __init__(self, check: HealthCheck) -> None:
        self.check = check
        self.passes = 0
        self.failures = 0
        self.healthy = False
        self.last_reason = ""

    def record(self, passed: bool, reason: str) -> Verdict:
        if passed:
            self.passes += 1
            self.failures = 0
            if not self.healthy and self.passes >= self.check.healthy_threshold:
                self.healthy = True
                return Verdict.HEALTHY
            return Verdict.NONE
        self.failures += 1
        self.passes = 0
        self.last_reason = reason
        if self.failures >= self.check.unhealthy_threshold:
            self.healthy = False
            return Verdict.UNHEALTHY
        return Verdict.NONE  # fewer misses than the threshold: still as it was
