"""The service clock follows wall-clock steps for timestamps, while heartbeat leases measure
real durations across the step (DESIGN §3 rule 2). Wall and monotonic sources are injected."""

from __future__ import annotations

from scheduler.clock import STEP_MS, WALL_CHECK_MS, SystemClock, offset_source
from scheduler.drivers.sim import FakeClock
from scheduler.memory import RunTable
from updater.keys import UpdateKey
from updater.pulse import Gate

from builders import JOB

MS = 1_000_000  # ns
HOUR = 3_600_000
KEY = UpdateKey(JOB, "stepped")
TIMEOUT = 2_000


class Sources:
    """A wall clock that an operator (or NTP) can step, and a monotonic one that only runs."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000_000 * MS
        self.mono = 5_000 * MS

    def run(self, ms: int) -> None:
        self.wall += ms * MS
        self.mono += ms * MS

    def step(self, ms: int) -> None:
        self.wall += ms * MS

    def clock(self) -> SystemClock:
        return SystemClock(wall_ns=lambda: self.wall, monotonic_ns=lambda: self.mono)


def test_timestamps_follow_a_step_and_run_at_the_monotonic_rate_between_steps() -> None:
    time = Sources()
    clock = time.clock()
    start = clock.now()
    assert start == time.wall // MS
    time.run(250)
    time.step(STEP_MS // 2)  # slew or jitter: absorbed, no jump
    assert clock.now() == start + 250
    time.step(-HOUR)  # a real step back...
    time.run(WALL_CHECK_MS)  # ...shows at the next look at the wall clock
    assert clock.now() == time.wall // MS
    time.step(HOUR)  # and forward again
    time.run(WALL_CHECK_MS)
    assert clock.now() == time.wall // MS
    assert clock.monotonic_ms() == time.mono // MS


def test_a_step_back_does_not_make_an_old_heartbeat_fresh() -> None:
    time = Sources()
    clock = time.clock()
    pulse = RunTable(offset_source(clock)).pulse
    pulse.track(KEY, TIMEOUT, clock.now())
    pulse.beat(KEY, clock.now())
    time.run(TIMEOUT + 1)  # the lease is over...
    time.step(-HOUR)  # ...and the wall clock goes back an hour
    now = clock.now()
    assert not pulse.is_fresh(KEY, now)
    assert pulse.check(KEY, now).gate is Gate.EXPIRED
    assert pulse.age_ms(KEY, now) == TIMEOUT + 1
    assert pulse.lease_end(KEY) == now - 1  # on the clock the events are stamped with


def test_a_step_forward_does_not_make_a_fresh_heartbeat_stale() -> None:
    time = Sources()
    clock = time.clock()
    pulse = RunTable(offset_source(clock)).pulse
    pulse.track(KEY, TIMEOUT, clock.now())
    pulse.beat(KEY, clock.now())
    time.run(1_000)
    time.step(HOUR)
    now = clock.now()
    assert pulse.is_fresh(KEY, now) and pulse.age_ms(KEY, now) == 1_000
    assert pulse.check(KEY, now).gate is Gate.FRESH


def test_clocks_that_never_step_have_no_offset_to_follow() -> None:
    assert offset_source(FakeClock()) is None


def test_a_lapse_timer_fires_when_its_lease_ends_across_a_step_back() -> None:
    """The agenda's due times move with the clock's steps, as the pulse's leases do: a step back
    must not hold a lapse timer for an extra hour (nor a step forward fire it early)."""
    from scheduler.agenda import Agenda

    time = Sources()
    clock = time.clock()
    agenda = Agenda(offset_source(clock))
    agenda.schedule(clock.now() + TIMEOUT, KEY)
    time.run(WALL_CHECK_MS)
    time.step(-HOUR)
    time.run(TIMEOUT - WALL_CHECK_MS)  # the lease's real length has passed
    assert KEY in agenda.take(clock.now()).dirty
    agenda.schedule(clock.now() + TIMEOUT, KEY)
    time.step(HOUR)
    time.run(WALL_CHECK_MS)
    assert KEY not in agenda.take(clock.now()).dirty  # a step forward is not time passing
    time.run(TIMEOUT - WALL_CHECK_MS)
    assert KEY in agenda.take(clock.now()).dirty
