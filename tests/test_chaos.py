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
    assert faults >= 3 and updates >= 1, lines[-1]  # it did run faults during updates


# -- the checker can fail: each invariant, broken on purpose -------------------------------------

sys.path.insert(0, str(ROOT / "bench"))
from chaos_check import Beat, Checker, Window  # noqa: E402

KEY = "chaos/test/web/u1"
CLEAN = {"0:INSTANCE_UPDATING": 1, "1:INSTANCE_UPDATING": 1}


def line(event: str, t: float, instance: int, version: str) -> dict[str, object]:
    return {"event": event, "t": t, "id": instance, "version": version, "pid": 1, "port": 1}


def replace(instance: int, t: float) -> list[dict[str, object]]:
    """Instance `instance` at v1 from t=0, replaced by v2 at `t`."""
    return [line("start", 0, instance, "1"), line("stop", t, instance, "1"),
            line("start", t + 0.2, instance, "2")]  # fmt: skip


def kinds(checker: Checker) -> list[str]:
    return [kind for kind, _ in checker.violations]


def test_the_checker_flags_an_action_without_a_fresh_acknowledged_heartbeat() -> None:
    window = Window(KEY, 1.0, 60.0, "2", "ROLLED_FORWARD", CLEAN)
    fresh = Checker(2, timeout_s=3.0, slack_s=1.0)
    fresh.check_logs(replace(0, 20.0), [Beat(KEY, 19.0, 19.1, "OK")], [window], [])
    assert fresh.violations == [] and fresh.gated == 2
    stale = Checker(2, timeout_s=3.0, slack_s=1.0)
    beats = [Beat(KEY, 10.0, 10.1, "OK"), Beat(KEY, 19.0, 19.1, "error Unavailable")]
    stale.check_logs(replace(0, 20.0), beats, [window], [])
    assert kinds(stale) == ["stale_heartbeat_action"] * 2


def test_the_checker_flags_an_action_while_paused_and_an_unclean_update() -> None:
    checker = Checker(2, timeout_s=3.0, slack_s=1.0)
    windows = [Window(KEY, 1.0, 60.0, "2", "FAILED", {"0:INSTANCE_UPDATING": 2})]
    checker.check_logs(replace(1, 20.0), [Beat(KEY, 19.5, 19.6, "PAUSED")], windows,
                       [(KEY, 15.0, 30.0)])  # fmt: skip
    assert sorted(set(kinds(checker))) == ["action_while_paused", "update_not_clean"]


def test_the_checker_flags_duplicates_and_a_job_that_did_not_converge() -> None:
    checker = Checker(2, timeout_s=3.0)
    env = {"PULSEGATE_INSTANCE_ID": "0", "VERSION": "2"}
    checker.sample({10: env, 11: env})
    checker.sample({10: env}, final=True)
    checker.check_logs([line("port_in_use", 5.0, 1, "2")], [], [], [])
    assert kinds(checker) == ["duplicate", "not_converged", "duplicate"]
