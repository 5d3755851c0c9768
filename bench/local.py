"""Local driver benchmark: a 50-instance update of the example service, batch(10), on a
scheduler process with the local driver and an embedded ZooKeeper.

Reaction is the delay between an instance meeting its success condition (healthy at the new
config for minWait: healthy_since + minWait, both on the scheduler's clock) and the updater
acting on it (its INSTANCE_UPDATED event, written in the same step as the next batch's
starts). The same-process baseline is creating the job: starting 50 instances until healthy.

    python bench/local.py [--instances N] [--batch B] [--min-wait-ms W]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.client import PulsegateClient  # noqa: E402
from scheduler.zkserver import EmbeddedZooKeeper  # noqa: E402
from updater.events import InstanceAction  # noqa: E402
from updater.keys import JobKey  # noqa: E402
from updater.settings import Settings, Strategy  # noqa: E402
from updater.status import UpdateStatus  # noqa: E402
from updater.task import HealthCheck, HealthCheckKind, TaskConfig  # noqa: E402

JOB = JobKey("bench", "local", "hello")
CHECK = HealthCheck(
    HealthCheckKind.HTTP,
    interval_ms=200,
    timeout_ms=2000,
    initial_delay_ms=300,
    unhealthy_threshold=10,
)


def service(version: str) -> TaskConfig:
    return TaskConfig.make(
        [sys.executable, str(ROOT / "examples" / "service.py")],
        environment={"VERSION": version},
        health_check=CHECK,
        stop_grace_ms=3000,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(predicate, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)
    return value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--min-wait-ms", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        zk = EmbeddedZooKeeper(Path(tmp) / "zk")
        zk.start()
        port = free_port()
        log = (Path(tmp) / "scheduler.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "api.cli", "scheduler", "run", "--zk", zk.hosts,
                "--api-port", str(port), "--http-port", "0", "--driver", "local",
                "--state-dir", str(Path(tmp) / "state"),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PULSEGATE_LOG_LEVEL": "warning"},
            stdout=log,
            stderr=log,
        )  # fmt: skip
        client = PulsegateClient(f"127.0.0.1:{port}", retry_for_s=30)
        try:
            wait(lambda: client.info().serving, 60)
            started = time.monotonic()
            client.create_job(JOB, service("1"), args.instances)
            wait(lambda: client.is_settled(JOB, args.instances), 120)
            baseline = time.monotonic() - started

            settings = Settings(
                strategy=Strategy.batch(args.batch),
                min_wait_in_instance_running_ms=args.min_wait_ms,
            )
            started = time.monotonic()
            key = client.start_update(JOB, service("2"), args.instances, settings=settings)
            done = client.wait(key, interval_s=0.2, timeout_s=600)
            took = time.monotonic() - started
            if done.status is not UpdateStatus.ROLLED_FORWARD:
                why = done.record.status_events[-1].message
                raise SystemExit(f"update ended {done.status.name}: {why}")
            since = {i.instance_id: i.healthy_since_ms for i in client.instances(JOB)}
            reactions = [
                e.timestamp_ms - (since[e.instance_id] + args.min_wait_ms)
                for e in done.record.instance_events
                if e.action is InstanceAction.INSTANCE_UPDATED
            ]
            reactions.sort()
            p50 = statistics.median(reactions)
            p99 = reactions[min(len(reactions) - 1, int(len(reactions) * 0.99))]
        finally:
            try:  # instances outlive a stopped scheduler by design: kill them first
                client.kill_job(JOB)
                wait(lambda: not client.has_instances(JOB), 60)
            except Exception as e:
                print(f"cleanup: {e}", file=sys.stderr)
            client.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            zk.stop()
        batches = -(-args.instances // args.batch)
        print(f"baseline: {args.instances} instances started and healthy in {baseline:.2f} s")
        print(
            f"update: {batches} batches of {args.batch}, minWait {args.min_wait_ms} ms; "
            f"{took / batches:.2f} s per batch"
        )
        print(f"reaction: min {reactions[0]} ms, max {reactions[-1]} ms over {len(reactions)}")
        print(
            f"local: {args.instances} instances in {took:.1f} s, "
            f"reaction p50 {p50:.0f} ms p99 {p99:.0f} ms"
        )


if __name__ == "__main__":
    main()
