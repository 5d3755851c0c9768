"""Rules 12-14's settings: validation names the field and the rule, and old stored updates,
written before these settings existed, load with the defaults."""

import pytest

from scheduler.codec import settings_from_json, settings_to_json
from updater.errors import InvalidRequest
from updater.settings import OnBlocked, Settings, Strategy, validate_settings

COORDINATED = {"heartbeat_timeout_ms": 5_000}


def test_defaults_are_one_monitor_of_any_name_and_no_bound() -> None:
    s = Settings()
    assert (s.heartbeat_quorum, s.heartbeat_monitors, s.heartbeat_ack_batches) == (1, (), False)
    assert (s.max_blocked_ms, s.on_blocked) == (0, OnBlocked.PAUSE)
    validate_settings(s)


def test_every_gate_validates_when_coordinated() -> None:
    s = Settings(
        strategy=Strategy.batch(2),
        heartbeat_quorum=2,
        heartbeat_monitors=("canary-checker", "slo-watch"),
        heartbeat_ack_batches=True,
        max_blocked_ms=600_000,
        on_blocked=OnBlocked.ROLL_BACK,
        **COORDINATED,
    )
    assert validate_settings(s) is s


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"heartbeat_quorum": 0}, "settings.heartbeatQuorum", ">= 1"),
        (
            {"heartbeat_quorum": 3, "heartbeat_monitors": ("a", "b")},
            "settings.heartbeatQuorum",
            "at most the 2 name(s) in heartbeatMonitors, got 3",
        ),
        ({"heartbeat_monitors": ("a", "a")}, "settings.heartbeatMonitors[1]", "listed twice"),
        ({"heartbeat_monitors": ("a", " ")}, "settings.heartbeatMonitors[1]", "non-blank"),
        ({"heartbeat_monitors": ("x" * 200,)}, "settings.heartbeatMonitors[0]", "at most 128"),
        ({"heartbeat_ack_batches": True}, "settings.heartbeatAckBatches", "batch or variableBatch"),
        ({"max_blocked_ms": -1}, "settings.maxBlockedMs", ">= 0"),
        ({"max_blocked_ms": 10**12}, "settings.maxBlockedMs", "<="),
        ({"on_blocked": "LATER"}, "settings.onBlocked", "PAUSE, ABORT or ROLL_BACK"),
    ],
)
def test_bad_gate_settings_name_the_field_and_rule(overrides, field, rule) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_settings(Settings(**{**COORDINATED, **overrides}))
    assert caught.value.field == field
    assert rule in caught.value.rule


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"heartbeat_quorum": 2}, "settings.heartbeatQuorum"),
        ({"heartbeat_monitors": ("a",)}, "settings.heartbeatMonitors"),
        (
            {"heartbeat_ack_batches": True, "strategy": Strategy.batch(1)},
            "settings.heartbeatAckBatches",
        ),
        ({"max_blocked_ms": 1000}, "settings.maxBlockedMs"),
    ],
)
def test_gates_need_a_coordinated_update(overrides, field) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_settings(Settings(**overrides))
    assert caught.value.field == field
    assert "heartbeatTimeoutMs > 0" in caught.value.rule


def test_stored_form_round_trips_and_old_stored_settings_take_the_defaults() -> None:
    s = Settings(
        strategy=Strategy.batch(3),
        heartbeat_quorum=2,
        heartbeat_monitors=("a", "b"),
        heartbeat_ack_batches=True,
        max_blocked_ms=60_000,
        on_blocked=OnBlocked.ABORT,
        **COORDINATED,
    )
    assert settings_from_json(settings_to_json(s)) == s
    old = settings_to_json(Settings(**COORDINATED))
    for key in (
        "heartbeat_quorum",
        "heartbeat_monitors",
        "heartbeat_ack_batches",
        "max_blocked_ms",
        "on_blocked",
    ):
        del old[key]
    assert settings_from_json(old) == Settings(**COORDINATED)
