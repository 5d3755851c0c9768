"""A short seeded run of the fault suite (bench/chaos.py): a ZooKeeper and three schedulers with
the local driver, coordinated updates heartbeated through random schedulers, and a few faults of
every kind the suite knows. Its checker reads only what a client sees; the run must find nothing.
The long run (100 faults) is the benchmark."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
HEADLINE = re.compile(
    r"^chaos: (\d+) faults \((.*)\), (\d+) invariant violations, (\d+) updates, "
    r"takeover p50 [\d.]+ s max [\d.]+ s \(S = [\d.]+ s\)$"
)


def test_a_short_seeded_fault_run_finds_no_violation(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "chaos.py"),
            "--seed", "7", "--faults", "7", "--time-limit", "90", "--workdir", str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    lines = run.stdout.strip().splitlines()
    assert run.returncode == 0 and lines, run.stdout + run.stderr[-3000:]
    found = HEADLINE.match(lines[-1])
    assert found, f"no headline: {lines[-1]!r}"
    faults, violations, updates = int(found[1]), int(found[3]), int(found[4])
    assert violations == 0, "\n".join(lines)
    assert faults >= 3 and updates >= 2, lines[-1]  # it did run faults during updates
