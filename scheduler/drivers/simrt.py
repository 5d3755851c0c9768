"""The sim driver run in real time, for `pulsegate scheduler run --driver sim` until real
instances are wanted: a thread moves the simulation to the wall clock. Optionally it appends
every action to a JSON-lines file (with the scheduler's id), which is how the failover tests
prove that a deposed leader acts no more.

The simulation lives in this process's memory: a new leader starts the instances of every job
afresh (reconcile), as a real driver would adopt them."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path

from scheduler.clock import Clock
from scheduler.drivers.sim import SimDriver
from updater.driver import Action, ObservedInstance
from updater.keys import JobKey
from updater.task import TaskConfig


class _WallClock:
    """The sim's clock interface over a real clock: time moves by itself, `set` is a no-op."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def now(self) -> int:
        return self._clock.now()

    def set(self, ms: int) -> None:
        pass


class RealtimeSimDriver:
    def __init__(self, clock: Clock, action_log: str = "", writer: str = "") -> None:
        self._sim = SimDriver(_WallClock(clock))  # type: ignore[arg-type]
        self._clock = clock
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = False
        self._log_path = Path(action_log) if action_log else None
        self._writer = writer
        self._thread = threading.Thread(target=self._run, name="sim-driver", daemon=True)
        self._thread.start()

    def instances(self, job: JobKey) -> Mapping[int, ObservedInstance]:
        with self._lock:
            return dict(self._sim.instances(job))

    def apply(self, job: JobKey, actions: Sequence[Action]) -> None:
        with self._lock:
            self._sim.apply(job, actions)
        self._record(job, actions, "update")
        self._wake.set()

    def reconcile(self, job: JobKey, desired: Mapping[int, TaskConfig]) -> None:
        with self._lock:
            before = len(self._sim.action_log)
            self._sim.reconcile(job, desired)
            actions = [a for _, _, a in self._sim.action_log[before:]]
        self._record(job, actions, "reconcile")
        self._wake.set()

    def takeover(
        self,
        desired: Mapping[JobKey, Mapping[int, TaskConfig]],
        parked: AbstractSet[tuple[JobKey, int]] = frozenset(),
    ) -> None:
        with self._lock:
            before = len(self._sim.action_log)
            self._sim.takeover(desired, parked)
            done = self._sim.action_log[before:]
        for job in {j for _, j, _ in done}:
            self._record(job, [a for _, j, a in done if j == job], "reconcile")
        self._wake.set()

    def set_acting(self, acting: bool) -> None:
        with self._lock:
            self._sim.set_acting(acting)

    def set_listener(self, listener: Callable[[JobKey, int], None] | None) -> None:
        with self._lock:
            self._sim.set_listener(listener)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=5)

    def _record(self, job: JobKey, actions: Sequence[Action], source: str) -> None:
        if self._log_path is None or not actions:
            return
        now = self._clock.now()
        lines = [
            json.dumps(
                {
                    "t": now,
                    "writer": self._writer,
                    "job": str(job),
                    "kind": a.kind.value,
                    "instance": a.instance_id,
                    "source": source,
                }
            )
            for a in actions
        ]
        with self._log_path.open("a") as f:
            f.write("\n".join(lines) + "\n")

    def _run(self) -> None:
        while not self._stopping:
            with self._lock:
                self._sim.advance_to(self._clock.now())
                upcoming = self._sim.next_event_ms()
            delay = 1.0 if upcoming is None else (upcoming - self._clock.now()) / 1000
            self._wake.wait(timeout=min(1.0, max(0.001, delay)))
            self._wake.clear()
