"""The planner: for one update, given what the driver observes, the pulse's verdict and `now`,
decide the actions to take, the events to persist and the status transition, if any.

`plan` and the command methods return a `Step` and change nothing; the service persists the
step and then calls `commit`, so memory never runs ahead of storage. If the write fails (the
leader was deposed, storage is down) the step is dropped and nothing happened.

State transitions made here (all others come from operators through the command methods):
- ROLLING_X → X_AWAITING_PULSE when the heartbeat lease ends (coordinated updates);
- X_AWAITING_PULSE → ROLLING_X on a heartbeat (unless held for an operator, DESIGN §3 rule 3);
- ROLLING_FORWARD → ROLL_FORWARD_PAUSED before each batch after the first (autoPauseAfterBatch);
- ROLLING_FORWARD → ROLL_FORWARD_AWAITING_PULSE before batch b+1 until batch b is acknowledged
  by a quorum of fresh monitors (heartbeatAckBatches, rule 13), and back on the ack;
- X_AWAITING_PULSE → X_PAUSED, ABORTED or ROLLING_BACK once blocked for maxBlockedMs, counted
  from the persisted event that blocked it (onBlocked, rule 14; during a rollback ROLL_BACK
  pauses, since the update is already going back);
- ROLLING_FORWARD → ROLLING_BACK or FAILED, ROLLING_BACK → FAILED on too many failed instances;
- ROLLING_X → ROLLED_FORWARD / ROLLED_BACK when every instance is done.

Bounded lapses: an update records its first LAPSES_KEPT heartbeat lapses one by one. After that,
while a monitor flaps (lapse, heartbeat, lapse, ...), each lapse or heartbeat resume is recorded
in place of the event before the last, which moves down one: the update keeps one pair for all
later lapses, the latest lapse and the latest resume, and the lapse event carries their count.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from updater.driver import Action, ObservedInstance
from updater.errors import InvalidRequest, TransitionError, Unavailable
from updater.evaluation import Outcome, evaluate_instance
from updater.events import (
    LAPSES_KEPT,
    SYSTEM_USER,
    Cause,
    InstanceEvent,
    StatusEvent,
    clip_message,
    failed_action,
    succeeded_action,
    working_action,
)
from updater.gate import (
    ack_needed,
    ack_wait,
    checked_ack,
    current_batch,
    lapse_message,
    on_blocked_event,
)
from updater.keys import UpdateKey
from updater.progress import Progress, Stage
from updater.pulse import ANONYMOUS, Gate, HeartbeatAnswer, PulseMonitor
from updater.record import UpdateDefinition, UpdateRecord
from updater.settings import HeartbeatResume, Settings
from updater.status import (
    AWAITING_PULSE,
    PAUSED,
    ROLLING,
    TERMINAL,
    UpdateStatus,
    awaiting_pulse,
    check_transition,
    paused,
    rolling,
)
from updater.step import EMPTY_STEP, Counts, Step, start_action
from updater.strategy import Schedule
from updater.task import TaskConfig

__all__ = ["EMPTY_STEP", "Counts", "Step", "UpdateRun"]  # steps live in updater.step

S = UpdateStatus


class UpdateRun:
    """One active update in the leader's memory, rebuilt from its record."""

    def __init__(self, record: UpdateRecord) -> None:
        definition = record.definition
        self.definition: UpdateDefinition = definition
        self.key: UpdateKey = definition.key
        self.settings: Settings = definition.settings
        self._timeout_ms = definition.settings.heartbeat_timeout_ms
        self.status_events: list[StatusEvent] = list(record.status_events)
        self.instance_event_count = len(record.instance_events)
        self._initial = definition.initial_configs()
        self._desired = definition.desired_ids()
        order = definition.forward_order()
        self.forward = Progress(order, Schedule.forward(self.settings.strategy, len(order)), False)
        self.forward.replay(record.instance_events)
        self.backward: Progress | None = None
        self.auto_pauses = sum(1 for e in self.status_events if e.cause is Cause.AUTO_PAUSE)
        self.lapses = sum(e.count for e in self.status_events if e.cause is Cause.HEARTBEAT_TIMEOUT)
        # Past the initial wait: it has moved on a heartbeat (or an operator) at least once.
        self._has_rolled = any(e.status.is_rolling for e in self.status_events)
        if any(e.status.is_backward for e in self.status_events):
            self._start_backward()
            assert self.backward is not None
            self.backward.replay(record.instance_events)

    # -- queries ---------------------------------------------------------------------------

    @property
    def status(self) -> UpdateStatus:
        return self.status_events[-1].status

    @property
    def is_coordinated(self) -> bool:
        return self.settings.is_coordinated

    @property
    def progress(self) -> Progress:
        """The progress of the current direction."""
        return self.backward if self.backward is not None else self.forward

    @property
    def is_held_for_operator(self) -> bool:
        """Blocked after heartbeats were lost, with `heartbeatResume = OPERATOR`: awaiting pulse
        after the initial wait, however it got there (a timeout, or a pause resumed while the
        monitor was silent), so pause-then-resume cannot launder a lost monitor back in."""
        last = self.status_events[-1]
        return (
            self.settings.heartbeat_resume is HeartbeatResume.OPERATOR
            and self._has_rolled
            and last.status.is_awaiting_pulse
            and last.cause is not Cause.ACK_WAIT
        )

    def current_batch(self) -> tuple[int, list[int]] | None:
        """The batch a monitor should verify, numbered from 1, and its instance ids."""
        return current_batch(self.progress)

    def ack_needed(self) -> int | None:
        """The batch whose acknowledgement the next batch waits for, if it is due (rule 13)."""
        return ack_needed(self.progress, self.settings)

    def is_ack_pending(self, pulse: PulseMonitor, now: int) -> bool:
        batch = self.ack_needed()
        if batch is None:
            return False
        found = pulse.get(self.key)
        return found is None or not found.is_acked(batch, now)

    def blocked_since(self) -> int | None:
        """When the persisted event that blocked the update was recorded, if it awaits pulse."""
        last = self.status_events[-1]
        return last.timestamp_ms if last.status.is_awaiting_pulse else None

    def on_blocked_at(self) -> int | None:
        """When onBlocked fires (rule 14): None if the update is not blocked or has no bound.
        Counted from storage, so a failover neither resets nor extends it."""
        since = self.blocked_since()
        if since is None or not self.settings.max_blocked_ms:
            return None
        return since + self.settings.max_blocked_ms

    def target(self, instance_id: int, backward: bool) -> TaskConfig | None:
        """The config an instance should end up with in a direction (None: removed)."""
        if backward:
            return self._initial.get(instance_id)
        return self.definition.config if instance_id in self._desired else None

    def counts(self) -> Counts:
        p = self.progress
        return Counts(len(p.order), p.succeeded + len(p.failed), p.in_flight, len(p.failed))

    def in_flight(self) -> list[int]:
        return list(self.progress.working)

    # -- the planner -----------------------------------------------------------------------

    def plan(self, observed: Mapping[int, ObservedInstance], pulse: PulseMonitor, now: int) -> Step:
        """The next step of a rolling update; an empty step for any other status."""
        status = self.status
        if status.is_awaiting_pulse:
            return self._bounded_block(now)
        if not status.is_rolling:
            return EMPTY_STEP
        backward = status.is_backward
        progress = self.progress
        if progress.is_done:  # nothing left to act on, so no heartbeat is needed to finish
            return Step(transition=self._completion(progress, backward, now))
        wake: int | None = None
        if self.is_coordinated:
            if not pulse.is_tracked(self.key):
                pulse.track(self.key, self._timeout_ms, now, self.settings.heartbeat_quorum)
            check = pulse.check(self.key, now, self._rolling_since())
            if check.lapsed_ms is not None:  # a late heartbeat renewed a lease that had ended
                return Step(transition=self._timed_out(backward, check.lapsed_ms, pulse))
            if check.gate is Gate.EXPIRED:
                return Step(transition=self._timed_out(backward, now, pulse))
            if check.gate is Gate.WAIT:
                return Step(wake_at_ms=check.until_ms)
            wake = check.until_ms

        settings = self.settings
        events: list[InstanceEvent] = []
        actions: list[Action] = []
        stages: list[tuple[int, Stage]] = []
        new_failures: list[tuple[int, str]] = []
        finished = 0
        for instance_id in progress.working:
            result = evaluate_instance(
                instance_id,
                self.target(instance_id, backward),
                observed.get(instance_id),
                settings.min_wait_in_instance_running_ms,
                settings.max_per_instance_failures,
                now,
            )
            if result.outcome is Outcome.SUCCEEDED:
                events.append(InstanceEvent(instance_id, now, succeeded_action(backward)))
                stages.append((instance_id, Stage.SUCCEEDED))
                finished += 1
            elif result.outcome is Outcome.FAILED:
                message = clip_message(result.message)
                events.append(InstanceEvent(instance_id, now, failed_action(backward), message))
                stages.append((instance_id, Stage.FAILED))
                new_failures.append((instance_id, message))
                finished += 1
            else:
                if result.action is not None:
                    actions.append(result.action)
                if result.wait_until_ms is not None and (
                    wake is None or result.wait_until_ms < wake
                ):
                    wake = result.wait_until_ms

        failed = len(progress.failed) + len(new_failures)
        if new_failures and failed > settings.max_failed_instances:
            instance_id, message = new_failures[-1]
            target = S.ROLLING_BACK if not backward and settings.rollback_on_failure else S.FAILED
            summary = (
                f"instance {instance_id} failed: {message}; {failed} failed instance(s), "
                f"more than maxFailedInstances={settings.max_failed_instances}"
            )
            return Step(
                transition=StatusEvent(target, now, SYSTEM_USER, summary, Cause.FAILURE),
                instance_events=tuple(events),
                stages=tuple(stages),
            )

        in_flight = progress.in_flight - finished
        count = len(progress.order)
        if progress.cursor >= count and in_flight == 0:
            return Step(
                transition=self._completion(progress, backward, now, failed),
                instance_events=tuple(events),
                stages=tuple(stages),
            )

        schedule = progress.schedule
        starts = schedule.next_starts(progress.cursor, in_flight, count)
        if starts and schedule.is_batched and not backward and settings.auto_pause_after_batch:
            batch = schedule.batch_of(progress.cursor)
            if batch >= 1 and batch > self.auto_pauses:
                return Step(
                    transition=StatusEvent(
                        S.ROLL_FORWARD_PAUSED,
                        now,
                        SYSTEM_USER,
                        f"auto-paused before batch {batch + 1} of {len(schedule.bounds)}",
                        Cause.AUTO_PAUSE,
                    ),
                    instance_events=tuple(events),
                    stages=tuple(stages),
                )
        if starts and not backward and settings.heartbeat_ack_batches:
            wait = ack_wait(schedule, progress.cursor, pulse.get(self.key), now)
            if wait is not None:
                return Step(transition=wait, instance_events=tuple(events), stages=tuple(stages))
        started = working_action(backward)
        for index in starts:
            instance_id = progress.order[index]
            actions.append(
                start_action(
                    instance_id, self.target(instance_id, backward), observed.get(instance_id)
                )
            )
            events.append(InstanceEvent(instance_id, now, started))
            stages.append((instance_id, Stage.WORKING))
        return Step(
            instance_events=tuple(events),
            actions=tuple(actions),
            wake_at_ms=wake,
            stages=tuple(stages),
            cursor=starts.stop if starts else None,
        )

    def _rolling_since(self) -> int | None:
        """When the current ROLLING_* status began (None if not rolling): a lapse counts only
        within this period, so one recorded or overtaken since is never recorded again."""
        last = self.status_events[-1]
        return last.timestamp_ms if last.status in ROLLING else None

    def _timed_out(self, backward: bool, at_ms: int, pulse: PulseMonitor) -> StatusEvent:
        message = lapse_message(self.settings, pulse.get(self.key), at_ms)
        return self._bounded(
            StatusEvent(
                awaiting_pulse(backward), at_ms, SYSTEM_USER, message, Cause.HEARTBEAT_TIMEOUT
            )
        )

    def _bounded_block(self, now: int) -> Step:
        """Rule 14: a wake-up at the bound, or, once it has passed, onBlocked."""
        deadline = self.on_blocked_at()
        if deadline is None:
            return EMPTY_STEP
        if now < deadline:
            return Step(wake_at_ms=deadline)
        return Step(transition=on_blocked_event(self.status_events[-1], self.settings, now))

    def _bounded(self, event: StatusEvent) -> StatusEvent:
        """A lapse or a heartbeat resume, coalesced once the update has recorded LAPSES_KEPT
        lapses and its last two events are a lapse and a resume (see "Bounded lapses")."""
        events = self.status_events
        if self.lapses < LAPSES_KEPT or len(events) < 2:
            return event
        before, last = events[-2].cause, events[-1].cause
        if event.cause is Cause.HEARTBEAT_TIMEOUT and (before, last) == (
            Cause.HEARTBEAT_TIMEOUT,
            Cause.HEARTBEAT,
        ):
            count = events[-2].count + 1
            message = (
                f"{event.message}; lapse {self.lapses + 1} of this update, "
                f"the last {count} coalesced into this event"
            )
            return attrs.evolve(event, message=message, count=count, coalesce=True)
        if event.cause is Cause.HEARTBEAT and (before, last) == (
            Cause.HEARTBEAT,
            Cause.HEARTBEAT_TIMEOUT,
        ):
            return attrs.evolve(event, coalesce=True)
        return event

    def _completion(
        self, progress: Progress, backward: bool, now: int, failed: int | None = None
    ) -> StatusEvent:
        count = len(progress.order)
        failed = len(progress.failed) if failed is None else failed
        message = f"{count - failed} of {count} instance(s) "
        message += "rolled back" if backward else "updated"
        if failed:
            message += f", {failed} failed (tolerated)"
        final = S.ROLLED_BACK if backward else S.ROLLED_FORWARD
        return StatusEvent(final, now, SYSTEM_USER, message, Cause.COMPLETE)

    def commit(self, step: Step) -> None:
        """Apply a step that has been persisted."""
        progress = self.progress
        for instance_id, stage in step.stages:
            progress.set_stage(instance_id, stage)
        if step.cursor is not None:
            progress.cursor = step.cursor
        self.instance_event_count += len(step.instance_events)
        if step.transition is not None:
            if step.transition.coalesce:  # the last event moves down one, over the one before
                self.status_events[-2:] = [self.status_events[-1], step.transition]
            else:
                self.status_events.append(step.transition)
            if step.transition.cause is Cause.AUTO_PAUSE:
                self.auto_pauses += 1
            if step.transition.cause is Cause.HEARTBEAT_TIMEOUT:
                self.lapses += 1
            if step.transition.status.is_rolling:
                self._has_rolled = True
            if step.transition.status.is_backward and self.backward is None:
                self._start_backward()

    def _start_backward(self) -> None:
        touched = self.forward.cursor
        order = list(reversed(self.forward.order[:touched]))
        schedule = Schedule.rollback(self.settings.strategy, self.forward.schedule, touched)
        self.backward = Progress(order, schedule, True)

    # -- commands --------------------------------------------------------------------------

    def _move(
        self, target: UpdateStatus, user: str, message: str, cause: Cause, now: int
    ) -> Step | None:
        if not check_transition(self.status, target):
            return None
        return Step(transition=StatusEvent(target, now, user, message, cause))

    def pause(self, user: str, message: str, now: int) -> Step | None:
        """Persisted pause with who and why; only an explicit resume ends it."""
        status = self.status
        if status.is_paused:
            return None
        return self._move(
            paused(status.is_backward), user, message or "paused", Cause.OPERATOR, now
        )

    def resume(self, pulse: PulseMonitor, user: str, message: str, now: int) -> Step | None:
        """To ROLLING_* if heartbeats are fresh (or the update is not coordinated), else to
        *_AWAITING_PULSE. Resuming a rolling update is a no-op."""
        status = self.status
        if status.is_terminal:
            check_transition(status, S.ROLLING_FORWARD)
        if status.is_rolling:
            return None
        backward = status.is_backward
        fresh = not self.is_coordinated or pulse.is_fresh(self.key, now)
        if status.is_awaiting_pulse:
            if fresh and self.is_ack_pending(pulse, now):
                return None  # only the monitors' acknowledgement moves it on (rule 13)
            if not fresh:
                if self.is_held_for_operator:
                    raise TransitionError(
                        "cannot resume: heartbeats are not fresh; resume once the monitor is "
                        "heartbeating again"
                    )
                return None
            target = rolling(backward)
        else:
            target = rolling(backward) if fresh else awaiting_pulse(backward)
        return self._move(target, user, message or "resumed", Cause.OPERATOR, now)

    def abort(self, user: str, message: str, now: int) -> Step | None:
        """Stop for good; the job stays as it is (no rollback)."""
        return self._move(S.ABORTED, user, message or "aborted", Cause.OPERATOR, now)

    def rollback(self, user: str, message: str, now: int) -> Step | None:
        """Restore the initial configs, newest change first. Allowed without rollbackOnFailure."""
        return self._move(
            S.ROLLING_BACK, user, message or "rollback requested", Cause.OPERATOR, now
        )

    def error(self, message: str, now: int) -> Step | None:
        """The scheduler cannot run this update (a bug or corrupt state)."""
        if self.status.is_terminal:
            return None
        return self._move(S.ERROR, SYSTEM_USER, clip_message(message), Cause.ERROR, now)

    def heartbeat(
        self,
        pulse: PulseMonitor,
        user: str,
        now: int,
        monitor: str = ANONYMOUS,
        ack_batch: int | None = None,
    ) -> tuple[HeartbeatAnswer, bool]:
        """Record `monitor`'s heartbeat (DESIGN §3 rules 5, 11-13), acknowledging `ack_batch`
        if given, on the caller's thread. True when the leader loop has something to record:
        the update may now leave *_AWAITING_PULSE, or this beat arrived after a lease that
        ended unrecorded (see `pulse_step`)."""
        # The hot path of the whole product: plain lookups, no property chains.
        last = self.status_events[-1]
        status = last.status
        if status in TERMINAL:
            return HeartbeatAnswer.FINISHED, False
        if not self._timeout_ms:
            raise InvalidRequest(
                "key", f"update {self.key} is not coordinated (heartbeatTimeoutMs is 0)"
            )
        settings = self.settings
        if settings.heartbeat_monitors and monitor not in settings.heartbeat_monitors:
            raise InvalidRequest(
                "details.monitor",
                f"monitor {monitor!r} does not count for update {self.key}; expected one of: "
                + ", ".join(settings.heartbeat_monitors),
            )
        if ack_batch is not None:
            ack_batch = checked_ack(self, ack_batch)
        rolling_since = last.timestamp_ms if status in ROLLING else None
        beaten = pulse.beat(self.key, now, rolling_since, monitor, ack_batch)
        if beaten is None:  # no longer watched: it finished, or the leader dropped its memory
            if self.status_events[-1].status in TERMINAL:
                return HeartbeatAnswer.FINISHED, False
            raise Unavailable(f"update {self.key} is not tracked by this leader now; retry")
        if status in PAUSED:
            return HeartbeatAnswer.PAUSED, False
        return HeartbeatAnswer.OK, beaten.unrecorded_lapse(rolling_since) is not None or (
            status in AWAITING_PULSE and not self.is_held_for_operator
        )

    def pulse_step(self, pulse: PulseMonitor, user: str, now: int) -> Step | None:
        """What heartbeats mean for the status, on the leader loop; call until it returns None.
        A lease that ended unrecorded is recorded first, at the time it ended; then a fresh
        heartbeat moves *_AWAITING_PULSE back to ROLLING_* (unless held for an operator). It
        looks at the monitor now rather than at one beat, so a beat handled late cannot stretch
        the lease (rule 2)."""
        status = self.status
        if not self.is_coordinated or status.is_terminal:
            return None
        backward = status.is_backward
        check = pulse.check(self.key, now, self._rolling_since())
        if check.lapsed_ms is not None:
            return Step(transition=self._timed_out(backward, check.lapsed_ms, pulse))
        if status.is_awaiting_pulse and not self.is_held_for_operator and check.gate is Gate.FRESH:
            waited = self.ack_needed()
            if waited is not None and self.is_ack_pending(pulse, now):
                return None
            message = "heartbeat received"
            if waited is not None and self.status_events[-1].cause is Cause.ACK_WAIT:
                message = f"batch {waited} acknowledged"
            step = self._move(rolling(backward), user, message, Cause.HEARTBEAT, now)
            if step is not None and step.transition is not None:
                return Step(transition=self._bounded(step.transition))
            return step
        return None
