"""Rules 12-14's settings on the wire and in job files: they round-trip, a client that leaves
them out gets the defaults, and a bad value names the field (or the file's key and line)."""

from pathlib import Path

import pytest

from api import convert
from api.idl import pulsegate as t
from api.jobfile import load_job_file
from scheduler.tomlfile import TomlError
from updater.errors import InvalidRequest
from updater.settings import OnBlocked, Settings, Strategy

MINIMAL = """
[job]
instances = 4

[task]
command = "sleep 100"
"""


def test_wire_round_trip_and_absent_fields_take_the_defaults() -> None:
    s = Settings(
        strategy=Strategy.batch(2),
        heartbeat_timeout_ms=5_000,
        heartbeat_quorum=2,
        heartbeat_monitors=("a", "b"),
        heartbeat_ack_batches=True,
        max_blocked_ms=600_000,
        on_blocked=OnBlocked.ROLL_BACK,
    )
    assert convert.settings_in(convert.settings_out(s)) == s
    assert convert.settings_in(t.JobUpdateSettings(heartbeatTimeoutMs=5_000)) == Settings(
        heartbeat_timeout_ms=5_000
    )


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        (t.JobUpdateSettings(onBlocked=9), "settings.onBlocked"),
        (t.JobUpdateSettings(heartbeatMonitors=["a", ""]), "settings.heartbeatMonitors[1]"),
        (t.JobUpdateSettings(heartbeatQuorum="2"), "settings.heartbeatQuorum"),
        (t.JobUpdateSettings(maxBlockedMs=-1), "settings.maxBlockedMs"),
    ],
)
def test_bad_wire_values_name_the_field(wire, field) -> None:
    with pytest.raises(InvalidRequest) as caught:
        convert.settings_in(wire)
    assert caught.value.field == field


def test_job_file_keys(tmp_path: Path) -> None:
    path = tmp_path / "web.toml"
    path.write_text(
        MINIMAL
        + """
[update]
strategy = "batch"
size = 2
heartbeat_timeout_ms = 5000
heartbeat_quorum = 2
heartbeat_monitors = ["canary-checker", "slo-watch"]
heartbeat_ack_batches = true
max_blocked_ms = 600000
on_blocked = "roll_back"
"""
    )
    s = load_job_file(path).settings
    assert (s.heartbeat_quorum, s.heartbeat_monitors) == (2, ("canary-checker", "slo-watch"))
    assert (s.heartbeat_ack_batches, s.max_blocked_ms, s.on_blocked) == (
        True,
        600_000,
        OnBlocked.ROLL_BACK,
    )


@pytest.mark.parametrize(
    ("update", "key", "rule"),
    [
        (
            'heartbeat_quorum = 3\nheartbeat_monitors = ["a", "b"]',
            "update.heartbeat_quorum",
            "at most the 2 name(s)",
        ),
        ("heartbeat_ack_batches = true", "update.heartbeat_ack_batches", "batch"),
        ('heartbeat_monitors = ["a", "a"]', "update.heartbeat_monitors[1]", "listed twice"),
        ('on_blocked = "later"', "update.on_blocked", ""),
    ],
)
def test_job_file_errors_name_the_key_and_rule(tmp_path: Path, update, key, rule) -> None:
    path = tmp_path / "web.toml"
    path.write_text(MINIMAL + f"\n[update]\nheartbeat_timeout_ms = 5000\n{update}\n")
    with pytest.raises(TomlError) as caught:
        load_job_file(path)
    assert f": {key}: " in str(caught.value)
    assert rule in str(caught.value)
