"""The pulse record's lease and lapse policy, and the monitor's tracking rules (pure)."""

from updater.keys import JobKey, UpdateKey
from updater.pulse import ANONYMOUS, Gate, MonitorBeat, Pulse, PulseMonitor

KEY = UpdateKey(JobKey("www", "prod", "web"), "u1")
TIMEOUT = 1_000


def test_the_lease_runs_from_since_until_the_first_beat_then_from_the_last() -> None:
    pulse = Pulse(TIMEOUT, since_ms=100)
    assert pulse.lease_end == 1_100 and not pulse.is_fresh(100)
    assert pulse.check(500).gate is Gate.WAIT and pulse.check(1_100).gate is Gate.EXPIRED
    beaten = pulse.beaten(600, rolling_since=None)
    assert beaten.lease_end == 1_600 and beaten.check(1_599).gate is Gate.FRESH
    assert beaten.beaten(500, None).last_ms == 600  # a beat handled late never moves it back


def test_a_late_beat_while_rolling_keeps_the_lease_end_as_a_lapse_to_record() -> None:
    pulse = Pulse(TIMEOUT, since_ms=0).beaten(100, rolling_since=50)
    late = pulse.beaten(5_000, rolling_since=50)
    assert late.is_fresh(5_000)
    assert late.check(5_000, rolling_since=50).lapsed_ms == 1_100
    again = late.beaten(9_000, rolling_since=50)  # the earliest unrecorded lapse wins
    assert again.unrecorded_lapse(50) == 1_100
    # Recorded (the status moved at 1_100) and rolling again since 9_500: nothing to record,
    # and the next lapse of the new period replaces the stale note.
    assert again.unrecorded_lapse(None) is None and again.unrecorded_lapse(9_500) is None
    assert again.beaten(20_000, rolling_since=9_500).unrecorded_lapse(9_500) == 10_000


def test_a_late_beat_while_not_rolling_notes_no_lapse() -> None:
    late = Pulse(TIMEOUT, since_ms=0).beaten(100, None).beaten(5_000, rolling_since=None)
    assert late.lapsed_ms is None


def test_a_beat_never_starts_tracking_and_a_forgotten_update_stays_forgotten() -> None:
    monitor = PulseMonitor()
    assert monitor.beat(KEY, 10) is None and not monitor.is_tracked(KEY)
    monitor.track(KEY, TIMEOUT, 0)
    beaten = monitor.beat(KEY, 10)
    assert beaten == Pulse(TIMEOUT, 0, 10, monitors=(MonitorBeat(ANONYMOUS, 10),))
    monitor.track(KEY, TIMEOUT, 500)  # tracking again keeps what is known
    assert monitor.last_beat(KEY) == 10 and monitor.get(KEY).since_ms == 0
    monitor.forget(KEY)
    assert monitor.beat(KEY, 20) is None and monitor.check(KEY, 20).gate is Gate.EXPIRED
