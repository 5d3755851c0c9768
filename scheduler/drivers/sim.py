"""A deterministic simulated driver on a fake clock, for tests and benchmarks at 10,000+
instances. It plays both the reconciler and the instances: actions set desired state, instances
take configurable times to start, become healthy and stop, and crash, flap or never become
healthy as a test scripts them.

Nothing happens until `advance_to` moves the clock; the same inputs always give the same run."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet

import attrs

from updater.driver import Action, ActionKind, InstanceState, ObservedInstance
from updater.keys import JobKey
from updater.task import TaskConfig


@attrs.frozen
class SimBehaviour:
    """How instances of one config behave. Times are in ms."""

    start_ms: int = 1000  # STARTING → RUNNING
    healthy_after_ms: int | None = 1000  # RUNNING → HEALTHY; None: never healthy
    kill_ms: int = 500  # KILLING → gone
    crash_after_ms: int | None = None  # RUNNING this long, then exit (while crashes remain)
    crashes: int = 0  # how many times an incarnation crashes; -1: every time
    restart_delay_ms: int = 1000  # the reconciler's backoff before restarting an exit
    flap_ms: int | None = None  # once healthy, toggle health every flap_ms
    liveness_ms: int | None = None  # not healthy this long after RUNNING: killed and restarted
    exit_message: str = "exited with status 1"


_LABEL_FIELDS = {
    "sim.start_ms": "start_ms",
    "sim.healthy_after_ms": "healthy_after_ms",
    "sim.kill_ms": "kill_ms",
    "sim.crash_after_ms": "crash_after_ms",
    "sim.crashes": "crashes",
    "sim.restart_delay_ms": "restart_delay_ms",
    "sim.flap_ms": "flap_ms",
    "sim.liveness_ms": "liveness_ms",
}


def behaviour_from_labels(config: TaskConfig) -> SimBehaviour:
    """Behaviour from `sim.*` labels (`sim.healthy_after_ms = "never"`), defaults otherwise; so
    a job file can say how its instances behave under the sim driver."""
    values: dict[str, int | None] = {}
    for label, field in _LABEL_FIELDS.items():
        text = config.label(label)
        if text is not None:
            values[field] = None if text in ("never", "none", "") else int(text)
    return SimBehaviour(**values)  # type: ignore[arg-type]


class FakeClock:
    """Milliseconds that move only when told to."""

    def __init__(self, start_ms: int = 1_000_000) -> None:
        self.now_ms = start_ms

    def now(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> int:
        self.now_ms += ms
        return self.now_ms

    def set(self, ms: int) -> None:
        if ms < self.now_ms:
            raise ValueError(f"time cannot go back: {ms} < {self.now_ms}")
        self.now_ms = ms


class _Instance:
    __slots__ = (
        "config",
        "crashes",
        "desired",
        "failures",
        "generation",
        "healthy_since",
        "message",
        "state",
    )

    def __init__(self) -> None:
        self.state = InstanceState.ABSENT
        self.config: TaskConfig | None = None
        self.desired: TaskConfig | None = None
        self.healthy_since: int | None = None
        self.failures = 0
        self.crashes = 0
        self.message = ""
        self.generation = 0


# Timer kinds.
_RUNNING, _HEALTHY, _CRASH, _RESTART, _KILLED, _FLAP, _LIVENESS = range(7)


class SimDriver:
    def __init__(
        self,
        clock: FakeClock,
        behaviour: Callable[[TaskConfig], SimBehaviour]
        | Mapping[TaskConfig, SimBehaviour]
        | None = None,
    ) -> None:
        self.clock = clock
        if behaviour is None:
            self._behaviour: Callable[[TaskConfig], SimBehaviour] = behaviour_from_labels
        elif callable(behaviour):
            self._behaviour = behaviour
        else:
            table = dict(behaviour)
            self._behaviour = lambda config: table.get(config) or behaviour_from_labels(config)
        self._jobs: dict[JobKey, dict[int, _Instance]] = {}
        self._observed: dict[JobKey, dict[int, ObservedInstance]] = {}
        self._timers: list[tuple[int, int, JobKey, int, int, int]] = []
        self._seq = 0
        self._listener: Callable[[JobKey, int], None] | None = None
        self.action_log: list[tuple[int, JobKey, Action]] = []
        self.changes = 0
        self.acting = True

    # -- the Driver protocol ---------------------------------------------------------------

    def instances(self, job: JobKey) -> Mapping[int, ObservedInstance]:
        return self._observed.setdefault(job, {})

    def set_listener(self, listener: Callable[[JobKey, int], None] | None) -> None:
        self._listener = listener

    def apply(self, job: JobKey, actions: Sequence[Action]) -> None:
        now = self.clock.now()
        instances = self._jobs.setdefault(job, {})
        for action in actions:
            self.action_log.append((now, job, action))
            inst = instances.get(action.instance_id)
            if inst is None:
                inst = instances[action.instance_id] = _Instance()
            desired = None if action.kind is ActionKind.KILL else action.config
            inst.desired = desired
            if inst.state is InstanceState.KILLING:
                continue  # the kill finishing starts `desired`
            if inst.state is InstanceState.ABSENT:
                if desired is not None:
                    self._start(job, action.instance_id, inst, desired, now)
            elif inst.config != desired:
                self._kill(job, action.instance_id, inst, now)

    def reconcile(
        self, job: JobKey, desired: Mapping[int, TaskConfig], keep: AbstractSet[int] = frozenset()
    ) -> None:
        """`keep`: ids to leave as they are (parked at a takeover)."""
        instances = self._jobs.setdefault(job, {})
        actions = [
            Action(ActionKind.ADD, i, config)
            for i, config in desired.items()
            if i not in keep and (i not in instances or instances[i].desired != config)
        ]
        actions += [
            Action(ActionKind.KILL, i)
            for i, inst in instances.items()
            if i not in desired and i not in keep and inst.desired is not None
        ]
        if actions:
            self.apply(job, actions)

    def takeover(
        self,
        desired: Mapping[JobKey, Mapping[int, TaskConfig]],
        parked: AbstractSet[tuple[JobKey, int]] = frozenset(),
    ) -> None:
        for job in set(self._jobs) - set(desired):
            self.reconcile(job, {})
        for job, instances in desired.items():
            self.reconcile(job, instances, {i for j, i in parked if j == job})

    def set_acting(self, acting: bool) -> None:
        self.acting = acting  # the simulation acts whenever it is told to

    # -- scripting -------------------------------------------------------------------------

    def seed(self, job: JobKey, instances: Mapping[int, TaskConfig], healthy_since: int) -> None:
        """Instances that already run healthy, as if started long ago."""
        table = self._jobs.setdefault(job, {})
        for instance_id, config in instances.items():
            inst = table[instance_id] = _Instance()
            inst.config = inst.desired = config
            inst.state = InstanceState.HEALTHY
            inst.healthy_since = healthy_since
            self._publish(job, instance_id, inst)

    def crash(self, job: JobKey, instance_id: int, message: str = "killed by test") -> None:
        """Make a running instance exit now; the reconciler restarts it after the delay."""
        inst = self._jobs[job][instance_id]
        if inst.state in (InstanceState.ABSENT, InstanceState.KILLING, InstanceState.EXITED):
            return
        self._exit(job, instance_id, inst, self.clock.now(), message)

    def next_event_ms(self) -> int | None:
        return self._timers[0][0] if self._timers else None

    def advance_to(self, ms: int) -> None:
        """Move the clock to `ms`, firing every timer due by then in time order."""
        while self._timers and self._timers[0][0] <= ms:
            when, _, job, instance_id, generation, kind = heapq.heappop(self._timers)
            self.clock.set(max(self.clock.now(), when))
            inst = self._jobs[job].get(instance_id)
            if inst is None or inst.generation != generation:
                continue  # stale timer of an earlier incarnation
            self._fire(job, instance_id, inst, kind, when)
        self.clock.set(max(self.clock.now(), ms))

    # -- internals -------------------------------------------------------------------------

    def _at(self, when: int, job: JobKey, instance_id: int, inst: _Instance, kind: int) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, job, instance_id, inst.generation, kind))

    def _publish(self, job: JobKey, instance_id: int, inst: _Instance) -> None:
        observed = self._observed.setdefault(job, {})
        if inst.state is InstanceState.ABSENT:
            observed.pop(instance_id, None)
        else:
            observed[instance_id] = ObservedInstance(
                instance_id,
                inst.state,
                inst.config,
                inst.healthy_since if inst.state is InstanceState.HEALTHY else None,
                inst.failures,
                inst.message,
            )
        self.changes += 1
        if self._listener is not None:
            self._listener(job, instance_id)

    def _start(
        self, job: JobKey, instance_id: int, inst: _Instance, config: TaskConfig, now: int
    ) -> None:
        if inst.config != config:
            inst.failures = 0
            inst.crashes = 0
            inst.message = ""
        inst.generation += 1
        inst.config = config
        inst.state = InstanceState.STARTING
        inst.healthy_since = None
        self._at(now + self._behaviour(config).start_ms, job, instance_id, inst, _RUNNING)
        self._publish(job, instance_id, inst)

    def _kill(self, job: JobKey, instance_id: int, inst: _Instance, now: int) -> None:
        inst.generation += 1
        inst.state = InstanceState.KILLING
        inst.healthy_since = None
        assert inst.config is not None
        self._at(now + self._behaviour(inst.config).kill_ms, job, instance_id, inst, _KILLED)
        self._publish(job, instance_id, inst)

    def _exit(self, job: JobKey, instance_id: int, inst: _Instance, now: int, message: str) -> None:
        inst.generation += 1
        inst.state = InstanceState.EXITED
        inst.healthy_since = None
        inst.failures += 1
        inst.message = message
        assert inst.config is not None
        delay = self._behaviour(inst.config).restart_delay_ms
        self._at(now + delay, job, instance_id, inst, _RESTART)
        self._publish(job, instance_id, inst)

    def _fire(self, job: JobKey, instance_id: int, inst: _Instance, kind: int, now: int) -> None:
        config = inst.config
        assert config is not None
        b = self._behaviour(config)
        if kind == _RUNNING:
            inst.state = InstanceState.RUNNING
            crashing = b.crashes < 0 or inst.crashes < b.crashes
            if b.crash_after_ms is not None and crashing:
                self._at(now + b.crash_after_ms, job, instance_id, inst, _CRASH)
            if b.healthy_after_ms is not None:
                self._at(now + b.healthy_after_ms, job, instance_id, inst, _HEALTHY)
            if b.liveness_ms is not None:
                self._at(now + b.liveness_ms, job, instance_id, inst, _LIVENESS)
            self._publish(job, instance_id, inst)
        elif kind == _HEALTHY:
            if inst.state is InstanceState.RUNNING:
                inst.state = InstanceState.HEALTHY
                inst.healthy_since = now
                if b.flap_ms is not None:
                    self._at(now + b.flap_ms, job, instance_id, inst, _FLAP)
                self._publish(job, instance_id, inst)
        elif kind == _FLAP:
            if inst.state is InstanceState.HEALTHY:
                inst.state = InstanceState.RUNNING
                inst.healthy_since = None
            elif inst.state is InstanceState.RUNNING:
                inst.state = InstanceState.HEALTHY
                inst.healthy_since = now
            assert b.flap_ms is not None
            self._at(now + b.flap_ms, job, instance_id, inst, _FLAP)
            self._publish(job, instance_id, inst)
        elif kind == _CRASH:
            inst.crashes += 1
            self._exit(job, instance_id, inst, now, b.exit_message)
        elif kind == _LIVENESS:
            if inst.state is InstanceState.RUNNING:
                self._exit(job, instance_id, inst, now, "health check never passed")
        elif kind == _RESTART:
            desired = inst.desired
            if desired is None:
                inst.state = InstanceState.ABSENT
                inst.config = None
                self._publish(job, instance_id, inst)
            else:
                self._start(job, instance_id, inst, desired, now)
        elif kind == _KILLED:
            desired = inst.desired
            if desired is None:
                inst.state = InstanceState.ABSENT
                inst.config = None
                inst.failures = 0
                self._publish(job, instance_id, inst)
            else:
                self._start(job, instance_id, inst, desired, now)
