"""The gate's state through the real `pulsegate` CLI (`api.cli.main` in-process against a
serving scheduler, sim driver): `update info` and `update wait` say why a coordinated update is
blocked, for how long and what its bound does when, with one line per monitor and the gate in
`--json`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from test_cli import Cli

from scheduler.logs import configure_logging
from scheduler.service import Scheduler
from updater.status import UpdateStatus as S

from waiting import wait_until

QUORUM = (
    "min_wait_ms = 100\nheartbeat_timeout_ms = 60000\nheartbeat_quorum = 2\n"
    'heartbeat_monitors = ["canary", "slo"]\nmax_blocked_ms = 600000\non_blocked = "pause"'
)


@pytest.fixture(autouse=True)
def logs_to_stderr(restore_logging: None) -> None:
    configure_logging("warning", "console", stream=sys.stderr)


@pytest.fixture
def cli(scheduler: Scheduler, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    return Cli(scheduler, capsys, tmp_path)


def test_info_and_wait_say_why_it_is_blocked_and_what_happens_when(cli: Cli) -> None:
    key = cli.start("www/prod/gated", cli.file(update=QUORUM))
    cli.client.heartbeat(key, monitor="canary")  # one of the two: the quorum is not met
    assert cli.status(key) is S.ROLL_FORWARD_AWAITING_PULSE

    code, out, err = cli("update", "info", str(key))
    assert code == 0, err
    blocked = re.search(r"blocked: quorum 1 of 2 for (\S+), pause in (\S+)", out)
    assert blocked is not None, out
    assert re.fullmatch(r"\d+(ms|s)", blocked[1]) and re.fullmatch(r"9m\d\ds", blocked[2])
    assert re.search(r"monitor canary\s+age \d+(ms|s), fresh", out)
    assert "monitor slo" not in out  # never heard from: the gate lists monitors it has seen

    data = cli.json("update", "info", str(key))
    gate = data["gate"]
    assert (gate["open"], gate["reason"], gate["why"], gate["quorum"]) == (
        False,
        "quorum",
        "quorum 1 of 2",
        2,
    )
    assert gate["on_blocked"] == "PAUSE" and gate["on_blocked_at_ms"] > gate["since_ms"]
    assert [m["name"] for m in gate["monitors"]] == ["canary"]
    assert data["why"].startswith("blocked: quorum 1 of 2 for ")
    assert gate["blocked"].startswith("blocked: quorum 1 of 2 for ")

    code, out, _ = cli("update", "wait", str(key), "--interval", "0.05", "--timeout", "0.2")
    assert code == 9  # the timeout passed first
    assert "blocked: quorum 1 of 2 for " in out and ", pause in 9m" in out
    assert re.search(r"monitor canary: age \d+(ms|s), fresh", out)
    lines = cli("update", "wait", str(key), "--interval", "0.05", "--timeout", "0.2", "--json")[1]
    first = json.loads(lines.splitlines()[0])
    assert first["gate"]["reason"] == "quorum" and first["why"].startswith("blocked: quorum 1")

    answer = cli.client.heartbeat(key, monitor="slo")  # the quorum is met: nothing blocks
    assert answer.gate is not None
    assert (answer.gate.reason, answer.gate.fresh_monitors) == (None, 2)
    cli.wait_status(key, S.ROLLED_FORWARD)
    assert cli.json("update", "info", str(key))["gate"] is None  # over: no gate


def test_an_uncoordinated_update_shows_no_gate(cli: Cli) -> None:
    key = cli.start("www/prod/plain", cli.file())
    wait_until(lambda: cli.status(key).is_terminal, 15, 0.02, f"{key} did not finish")
    data = cli.json("update", "info", str(key))
    assert data["gate"] is None
    code, out, _ = cli("update", "info", str(key))
    assert code == 0 and "blocked:" not in out and "monitor " not in out
