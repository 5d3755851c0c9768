"""`pulsegate demo` end to end: it reports one update rolled forward and one rolled back,
exits 0, and leaves no process behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def running_from(state_dir: Path) -> list[int]:
    """Processes of this demo run: its ZooKeeper (the state directory is in its command line)
    and its instances (marked PULSEGATE_DEMO=<state directory> in their environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        marker = f"PULSEGATE_DEMO={state_dir}\0".encode()
        if str(state_dir).encode() in cmdline or marker in environ:
            found.append(int(entry.name))
    return found


def test_demo(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "demo", "--state-dir", str(state)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "demo: 1 update rolled forward, 1 rolled back" in out
    assert "ROLL_FORWARD_AWAITING_PULSE by pulsegate: heartbeats timed out" in out
    assert "0 instance events while heartbeats were missing" in out
    assert "INSTANCE_UPDATE_FAILED (health check failed" in out
    assert running_from(state) == []
