"""The gate's state through the real `pulsegate` CLI (`api.cli.main` in-process against a
serving scheduler, sim driver): `update info` and `update wait` say why a coordinated update is
blocked, for how long and what its bound does when, with one line per monitor and the gate in
`--json`."""

from __future__ import annotations

import io
import json
import re
import sys
import threading
from pathlib import Path

import pytest
from test_cli import Cli

from api.cli_heartbeat import always_passing, command_check, per_instance, run_monitor
from scheduler.logs import configure_logging
from scheduler.service import Scheduler
from updater.events import InstanceAction
from updater.keys import UpdateKey
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


ACKED = (
    'strategy = "batch"\nsize = 2\nmin_wait_ms = 100\nheartbeat_timeout_ms = 5000\n'
    "heartbeat_ack_batches = true"
)


def started(cli: Cli, key: UpdateKey) -> list[int]:
    events = cli.client.details(key).record.instance_events
    return sorted({e.instance_id for e in events if e.action is InstanceAction.INSTANCE_UPDATING})


def test_the_monitor_verifies_each_batch_then_acks_it(cli: Cli) -> None:
    key = cli.start("www/prod/acked", cli.file(instances=6, update=ACKED))
    log = cli.tmp / "checked.log"
    check = f"echo checked {{instance}} >> {log}"
    code, out, err = cli(
        "heartbeat", str(key), "--interval", "0.05", "--monitor", "verifier",
        "--ack-batches", "--check-cmd", check, "--json", "--max-beats", "4000",
    )  # fmt: skip
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    acks = [(e["batch"], e["message"]) for e in lines if e["event"] == "acking"]
    assert acks == [
        (1, "batch 1 verified (instances 0, 1): acking"),
        (2, "batch 2 verified (instances 2, 3): acking"),
    ]  # the last batch needs none: the update ends with it
    beats = [e for e in lines if e["event"] == "heartbeat"]
    assert beats[-1]["answer"] == "FINISHED" and beats[-1]["gate"] is None
    gated = [b for b in beats if b["gate"] is not None]
    assert gated and all(b["gate"]["quorum"] == 1 for b in gated)
    assert {b["gate"]["monitors"][0]["name"] for b in gated} == {"verifier"}
    assert any(b["gate"]["awaiting_ack"] == 1 for b in gated)  # what made it verify batch 1
    assert any(b["acked_batch"] == 2 for b in gated)
    checked = log.read_text().split()
    # each batch's instances were checked (every tick checks the current batch, too)
    assert {"0", "1", "2", "3"} <= set(checked[1::2])
    assert cli.status(key) is S.ROLLED_FORWARD


def test_a_batch_that_fails_its_check_is_not_acked(cli: Cli) -> None:
    key = cli.start("www/prod/refused", cli.file(instances=6, update=ACKED))
    verify = per_instance(lambda text: command_check(text, 5.0), "test {instance} != 3")
    stop, out = threading.Event(), io.StringIO()
    # ticks pass (the service is healthy); only the batch verification refuses instance 3
    args = (cli.client, key, 0.05, always_passing, False, stop, out)
    monitor = threading.Thread(
        target=run_monitor, args=args, kwargs={"monitor": "verifier", "verify": verify}
    )
    monitor.start()
    try:
        wait_until(lambda: "batch 2 not verified" in out.getvalue(), 30, 0.02, "no refusal")
    finally:
        stop.set()
        monitor.join(10)
    text = out.getvalue()
    assert "batch 1 verified (instances 0, 1): acking" in text
    assert "batch 2 not verified, not acking: instance 3: check exited with status 1" in text
    assert started(cli, key) == [0, 1, 2, 3]  # batch 3 waits for batch 2's ack
    gate = cli.client.details(key).gate
    assert gate is not None and gate.awaiting_ack == 2 and not gate.open
    assert text.count("heartbeat: OK") >= 1 and "; gate " in text
    cli.client.abort(key)


def test_monitor_flags_are_checked(cli: Cli) -> None:
    plain = cli.start("www/prod/plainbeat", cli.file(update="heartbeat_timeout_ms = 5000"))
    code, _, err = cli("heartbeat", str(plain), "--interval", "1", "--ack-batches")
    assert code == 2 and "takes no batch acknowledgements" in err
    assert "heartbeat_ack_batches = true" in err
    code, _, err = cli("heartbeat", str(plain), "--interval", "1", "--check-cmd", "x {instance}")
    assert code == 2 and "add --ack-batches" in err
    cli.client.abort(plain)


def test_a_bounded_wait_for_the_first_heartbeat_says_when_it_acts(cli: Cli) -> None:
    bounded = 'heartbeat_timeout_ms = 60000\nmax_blocked_ms = 120000\non_blocked = "abort"'
    key = cli.start("www/prod/bounded", cli.file(update=bounded))
    code, out, _ = cli("update", "info", str(key))
    assert code == 0
    assert re.search(r"waiting for the first heartbeat \(for \S+\), abort in 1m\d\ds", out), out
    cli.client.abort(key)
