"""Engine benchmark: a 10,000-instance update, batch(100), sim driver, in-memory storage and a
fake clock, end to end. Reports the scheduler's CPU time per instance updated (planning,
committing, storage writes), excluding the simulated instances' own time, which is printed as
the same-process baseline.

    python bench/engine.py [--instances N] [--batch B] [--runs R]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.drivers.sim import FakeClock, SimBehaviour, SimDriver
from scheduler.simulation import Simulation
from updater.job import Job
from updater.keys import JobKey
from updater.memstore import MemoryStorage
from updater.record import UpdateRequest, plan_update
from updater.settings import Settings, Strategy
from updater.status import UpdateStatus
from updater.task import TaskConfig


class TimedSim(SimDriver):
    """The sim driver with its own CPU time accounted, so it can be subtracted."""

    cpu = 0.0

    def apply(self, job, actions):  # type: ignore[no-untyped-def]
        t = time.process_time()
        super().apply(job, actions)
        self.cpu += time.process_time() - t

    def advance_to(self, ms):  # type: ignore[no-untyped-def]
        t = time.process_time()
        super().advance_to(ms)
        self.cpu += time.process_time() - t


def run_once(count: int, batch: int) -> tuple[float, float, int, int]:
    job = JobKey("bench", "prod", "engine")
    old = TaskConfig.make(["server", "--version=1"])
    new = TaskConfig.make(["server", "--version=2"])
    clock = FakeClock()
    behaviour = SimBehaviour(start_ms=2000, healthy_after_ms=3000, kill_ms=1000)
    sim = TimedSim(clock, lambda config: behaviour)
    store = MemoryStorage()
    store.create_job(Job.uniform(job, old, count))
    sim.seed(job, dict.fromkeys(range(count), old), 0)
    simulation = Simulation(store, sim, clock)
    settings = Settings(strategy=Strategy.batch(batch), min_wait_in_instance_running_ms=30_000)
    started = time.process_time()
    record, _ = plan_update(
        UpdateRequest(job, new, count, settings), store.get_job(job), "b1", "bench", "", clock.now()
    )
    run = simulation.start(record)
    simulation.run_until_idle(run, clock.now() + 10**10)
    total = time.process_time() - started
    assert run.status is UpdateStatus.ROLLED_FORWARD, run.status
    assert set(store.get_job(job).instances().values()) == {new}
    return total - sim.cpu, sim.cpu, simulation.events, simulation.steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = [run_once(args.instances, args.batch) for _ in range(args.runs)]
    scheduler_cpu, sim_cpu, events, steps = min(results)
    n = args.instances
    print(f"steps: {steps}, runs: {args.runs} (best shown)")
    print(f"baseline (sim driver's own work): {sim_cpu * 1e6 / n:.1f} us/instance")
    print(f"ratio scheduler/baseline: {scheduler_cpu / sim_cpu:.2f}")
    print(f"engine: {n} instances, {scheduler_cpu * 1e6 / n:.1f} us/instance, {events} events")


if __name__ == "__main__":
    main()
