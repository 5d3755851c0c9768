"""ZooKeeper storage benchmark, on an embedded ZooKeeper:

1. writes per instance updated: a 1,000-instance update run through the engine and the real
   ZooKeeper store (fenced, as the leader writes), on the sim driver and a fake clock; counted as
   multi-op transactions (each one ZooKeeper request) and as the znode ops inside them;
2. the cost of one status transition (pause, resume: a fenced multi-op with the CAS on the
   update's state) as a ratio to a bare kazoo `set` of 1 KB, in the same run.

    python bench/zkstore.py [--instances N] [--transitions N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kazoo.client import KazooClient

from scheduler.drivers.sim import FakeClock, SimBehaviour, SimDriver
from scheduler.paths import Paths
from scheduler.simulation import Simulation
from scheduler.zkserver import EmbeddedZooKeeper
from scheduler.zkstore import ZooKeeperStorage
from updater.engine import UpdateRun
from updater.job import Job
from updater.keys import JobKey
from updater.record import UpdateRequest, plan_update
from updater.settings import Settings, Strategy
from updater.status import UpdateStatus
from updater.task import TaskConfig


class Fence:
    def __init__(self, client: KazooClient) -> None:
        self.path = client.create("/bench-fence-", ephemeral=True, sequence=True)

    def node(self) -> str:
        return self.path


class CountingStore(ZooKeeperStorage):
    """Counts znode ops inside the committed multi-ops."""

    ops = 0

    def commit(self, ops, what):  # type: ignore[no-untyped-def]
        self.ops += len(ops) + (self.fence is not None)
        return super().commit(ops, what)


def update_writes(
    client: KazooClient, count: int, strategy: Strategy, tag: str
) -> tuple[float, float]:
    store = CountingStore(client, Paths(f"/bench-{tag}"), Fence(client), writer="bench")
    store.ensure_layout()
    job = JobKey("bench", "prod", tag)
    old = TaskConfig.make(["server", "--version=1"])
    new = TaskConfig.make(["server", "--version=2"])
    store.create_job(Job.uniform(job, old, count))
    clock = FakeClock()
    sim = SimDriver(
        clock, lambda c: SimBehaviour(start_ms=1000, healthy_after_ms=1000, kill_ms=500)
    )
    sim.seed(job, dict.fromkeys(range(count), old), 0)
    simulation = Simulation(store, sim, clock)
    settings = Settings(strategy=strategy, min_wait_in_instance_running_ms=10_000)
    record, _ = plan_update(
        UpdateRequest(job, new, count, settings), store.get_job(job), tag, "bench", "", clock.now()
    )
    before_txn, before_ops = store.transactions, store.ops
    run = simulation.start(record)
    simulation.run_until_idle(run, clock.now() + 10**10)
    assert run.status is UpdateStatus.ROLLED_FORWARD, run.status
    return (store.transactions - before_txn) / count, (store.ops - before_ops) / count


def transition_cost(client: KazooClient, n: int) -> tuple[float, float]:
    store = ZooKeeperStorage(client, Paths("/bench-transitions"), Fence(client), writer="bench")
    store.ensure_layout()
    job = JobKey("bench", "prod", "transitions")
    config = TaskConfig.make(["server"])
    store.create_job(Job.uniform(job, config, 1))
    record, _ = plan_update(
        UpdateRequest(job, TaskConfig.make(["other"]), 1), store.get_job(job), "t", "b", "", 0
    )
    store.start_update(record)
    run = UpdateRun(record)
    from updater.pulse import PulseMonitor
    from updater.storage import UpdateWrite

    pulse = PulseMonitor()
    transitions = []
    for i in range(n):
        step = run.pause("bench", "", i) if i % 2 == 0 else run.resume(pulse, "bench", "", i)
        assert step is not None
        started = time.perf_counter()
        store.write(UpdateWrite.make(record.key, len(run.status_events), step.transition))
        transitions.append(time.perf_counter() - started)
        run.commit(step)
    value = b"x" * 1024
    client.ensure_path("/bench-bare")
    bare = []
    for _ in range(n):
        started = time.perf_counter()
        client.set("/bench-bare", value)
        bare.append(time.perf_counter() - started)
    return statistics.median(transitions), statistics.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--transitions", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedZooKeeper(Path(tmp))
        server.start()
        client = KazooClient(hosts=server.hosts)
        client.start(timeout=15)
        try:
            rows = []
            for label, strategy in (
                ("queue(1)", Strategy.queue(1)),
                ("queue(10)", Strategy.queue(10)),
                ("batch(100)", Strategy.batch(100)),
            ):
                tag = label.replace("(", "").replace(")", "")
                txn, ops = update_writes(client, args.instances, strategy, tag)
                rows.append((label, txn, ops))
                print(f"{label:>10}: {txn:.2f} ZooKeeper writes/instance ({ops:.2f} znode ops)")
            transition, bare = transition_cost(client, args.transitions)
            print(f"status transition: median {transition * 1e3:.2f} ms")
            print(f"baseline bare 1 KB set: median {bare * 1e3:.2f} ms")
            worst = max(rows, key=lambda r: r[1])
            print(
                f"zkstore: {worst[1]:.2f} writes/instance ({args.instances} instances, "
                f"{worst[0]}), status transition {transition / bare:.2f}x a bare set"
            )
        finally:
            client.stop()
            client.close()
            server.stop()


if __name__ == "__main__":
    main()
