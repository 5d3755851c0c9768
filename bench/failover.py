"""Failover benchmark: 1,000 active updates stored (a third each rolling, paused, and
coordinated with a monitor that heartbeated the old leader), two scheduler processes, kill -9 of
the leader. Measures the takeover (kill → the standby serves as leader) and the standby's
rehydration of every update. The baseline, in the same run, is a bare pipelined read of as many
znodes as the rehydration reads.

    python bench/failover.py [--updates N] [--session-timeout S]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kazoo.client import KazooClient  # noqa: E402

from scheduler.paths import Paths  # noqa: E402
from scheduler.zkserver import EmbeddedZooKeeper  # noqa: E402
from scheduler.zkstore import ZooKeeperStorage  # noqa: E402
from updater.events import Cause, StatusEvent  # noqa: E402
from updater.job import Job  # noqa: E402
from updater.keys import JobKey  # noqa: E402
from updater.record import UpdateRequest, plan_update  # noqa: E402
from updater.settings import Settings  # noqa: E402
from updater.status import UpdateStatus  # noqa: E402
from updater.storage import UpdateWrite  # noqa: E402
from updater.task import TaskConfig  # noqa: E402

TICK_MS = 500


def seed(store: ZooKeeperStorage, n: int) -> None:
    old = TaskConfig.make(["server", "--version=1"])
    new = TaskConfig.make(["server", "--version=2"], labels={"sim.healthy_after_ms": "never"})
    now = int(time.time() * 1000)
    for i in range(n):
        job = JobKey("bench", "prod", f"job{i}")
        store.create_job(Job.uniform(job, old, 2))
        kind = i % 3
        settings = Settings(heartbeat_timeout_ms=600_000 if kind == 2 else 0)
        record, _ = plan_update(
            UpdateRequest(job, new, 2, settings), store.get_job(job), f"u{i}", "b", "", now
        )
        store.start_update(record)
        if kind == 1:
            event = StatusEvent(UpdateStatus.ROLL_FORWARD_PAUSED, now, "op", "", Cause.OPERATOR)
        elif kind == 2:
            event = StatusEvent(UpdateStatus.ROLLING_FORWARD, now, "mon", "", Cause.HEARTBEAT)
        else:
            continue
        store.write(UpdateWrite.make(record.key, 1, event))


def spawn(
    name: str, hosts: str, paths: Paths, workdir: Path, session_s: float
) -> subprocess.Popen[bytes]:
    log = (workdir / f"{name}.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable, "-m", "api.cli", "scheduler", "run", "--id", name, "--zk", hosts,
            "--zk-root", paths.root, "--session-timeout", str(session_s), "--api-port", "0",
            "--http-port", "0", "--state-dir", str(workdir / name), "--driver", "sim",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PULSEGATE_LOG_FORMAT": "json"},
        stdout=log,
        stderr=log,
    )  # fmt: skip


def serving_leader(client: KazooClient, paths: Paths) -> str | None:
    try:
        data, _ = client.get(paths.leader)
    except Exception:
        return None
    return str(json.loads(data)["id"])


def wait(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.005)
    return time.monotonic()


def rehydrate_seconds(log: Path) -> float:
    for line in reversed(log.read_text().splitlines()):
        if '"leader_rehydrated"' in line:
            return float(json.loads(line)["seconds"])
    raise SystemExit(f"no rehydration logged in {log}")


def bare_read(client: KazooClient, paths: Paths) -> float:
    """Pipelined gets of as many znodes as a rehydration reads (definition, 2 child lists,
    status events, event chunks per update; every job)."""
    names = client.get_children(paths.updates)
    jobs = client.get_children(paths.jobs)
    started = time.perf_counter()
    results = [client.get_async(f"{paths.updates}/{n}") for n in names]
    results += [client.get_children_async(f"{paths.updates}/{n}/status") for n in names] * 2
    results += [client.get_async(f"{paths.updates}/{n}/state") for n in names] * 2
    results += [client.get_async(f"{paths.jobs}/{j}") for j in jobs]
    for r in results:
        r.get()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--session-timeout", type=float, default=6.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # ZooKeeper expires sessions in tickTime buckets: a 500 ms tick keeps expiry near S.
        server = EmbeddedZooKeeper(workdir / "zk", tick_ms=TICK_MS)
        server.start()
        client = KazooClient(hosts=server.hosts)
        client.start(timeout=15)
        paths = Paths("/bench-failover")
        procs: list[subprocess.Popen[bytes]] = []
        try:
            store = ZooKeeperStorage(client, paths)
            store.ensure_layout()
            seed(store, args.updates)
            procs.append(spawn("a", server.hosts, paths, workdir, args.session_timeout))
            wait(lambda: serving_leader(client, paths) == "a", 60)
            procs.append(spawn("b", server.hosts, paths, workdir, args.session_timeout))
            wait(lambda: len(client.get_children(paths.election)) == 2, 60)
            baseline = bare_read(client, paths)
            killed = time.monotonic()
            os.kill(procs[0].pid, signal.SIGKILL)
            procs[0].wait()
            served = wait(lambda: serving_leader(client, paths) == "b", args.session_timeout + 60)
            takeover = served - killed
            rehydrate = rehydrate_seconds(workdir / "b.log")
            print(f"updates stored: {args.updates} (rolling, paused, coordinated: a third each)")
            print(f"ZooKeeper tickTime {TICK_MS} ms (session expiry lands within one tick of S)")
            print(f"baseline: bare pipelined read of the same znodes {baseline:.3f} s")
            print(f"rehydrate / baseline: {rehydrate / baseline:.2f}")
            print(
                f"failover: {takeover:.2f} s takeover, {rehydrate:.2f} s rehydrate "
                f"{args.updates} updates, session timeout {args.session_timeout:g} s"
            )
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=30)
            client.stop()
            client.close()
            server.stop()


if __name__ == "__main__":
    main()
