"""Small worlds for engine tests: a job on the sim driver, in-memory storage and a fake clock."""

from __future__ import annotations

from collections.abc import Mapping

from scheduler.drivers.sim import FakeClock, SimBehaviour, SimDriver
from scheduler.simulation import Monitor, Simulation, Trace
from updater.engine import UpdateRun
from updater.events import InstanceAction, InstanceEvent
from updater.job import Job
from updater.keys import JobKey
from updater.memstore import MemoryStorage
from updater.record import UpdateRequest, plan_update
from updater.settings import Settings
from updater.status import UpdateStatus
from updater.task import TaskConfig

JOB = JobKey("www", "prod", "web")
OLD = TaskConfig.make(["server", "--version=1"])
NEW = TaskConfig.make(["server", "--version=2"])
FAST = SimBehaviour(start_ms=100, healthy_after_ms=100, kill_ms=50, restart_delay_ms=100)
START_MS = 1_000_000


def fast_settings(**overrides: object) -> Settings:
    """Settings with a short minWait so that tests read well."""
    values: dict[str, object] = {"min_wait_in_instance_running_ms": 1000}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


class World:
    def __init__(
        self,
        old_count: int = 5,
        behaviours: Mapping[TaskConfig, SimBehaviour] | None = None,
        old: TaskConfig = OLD,
        heartbeat_interval_ms: int = 0,
        monitor: Monitor | None = None,
    ) -> None:
        self.clock = FakeClock(START_MS)
        self.store = MemoryStorage()
        table = {OLD: FAST, NEW: FAST}
        table.update(behaviours or {})
        self.sim = SimDriver(self.clock, table)
        self.old = old
        if old_count:
            self.store.create_job(Job.uniform(JOB, old, old_count))
            self.sim.seed(JOB, {i: old for i in range(old_count)}, 0)
        self.trace = Trace()
        self.simulation = Simulation(
            self.store,
            self.sim,
            self.clock,
            heartbeat_interval_ms=heartbeat_interval_ms,
            monitor=monitor,
            trace=self.trace,
        )

    @property
    def pulse(self):  # type: ignore[no-untyped-def]
        return self.simulation.pulse

    def start(
        self,
        count: int,
        settings: Settings | None = None,
        config: TaskConfig = NEW,
        update_id: str = "u1",
    ) -> UpdateRun:
        record, _ = plan_update(
            UpdateRequest(JOB, config, count, settings or fast_settings()),
            self.store.get_job(JOB),
            update_id,
            "alice",
            "",
            self.clock.now(),
        )
        return self.simulation.start(record)

    def run(self, run: UpdateRun, for_ms: int = 10_000_000) -> UpdateRun:
        self.simulation.run_until_idle(run, self.clock.now() + for_ms)
        return run

    def step(self, run: UpdateRun):  # type: ignore[no-untyped-def]
        return self.simulation.step(run)

    def advance(self, ms: int) -> None:
        self.sim.advance_to(self.clock.now() + ms)

    def instance_events(self, run: UpdateRun) -> list[InstanceEvent]:
        return list(self.store.get_update(run.key).instance_events)

    def actions(self, run: UpdateRun) -> list[tuple[int, InstanceAction]]:
        return [(e.instance_id, e.action) for e in self.instance_events(run)]

    def statuses(self, run: UpdateRun) -> list[UpdateStatus]:
        return [e.status for e in self.store.get_update(run.key).status_events]

    def desired(self) -> dict[int, TaskConfig]:
        job = self.store.get_job(JOB)
        return job.instances() if job else {}

    def touched(self, run: UpdateRun, action: InstanceAction) -> list[int]:
        return [e.instance_id for e in self.instance_events(run) if e.action is action]
