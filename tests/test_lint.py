"""House checks that belong to the test command: ruff (lint and format) and mypy --strict on
the pure core, the service and the API."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_lint() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_updater_scheduler_and_api() -> None:
    result = run("mypy", "--strict", "updater", "scheduler", "api")
    assert result.returncode == 0, result.stdout + result.stderr
