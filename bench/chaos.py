"""Fault suite: a ZooKeeper and 3 schedulers (`--driver local`) on 127.0.0.1, coordinated updates
one after the other, heartbeated by a monitor that talks to a random scheduler, and a seeded
random sequence of faults. The checker (bench/chaos_check.py) reads only what a client can see:
the API, the instances' own log of starts and stops, the monitor's log of heartbeats, and the
process table (instances carry a marker in their environment).

    python bench/chaos.py [--seed N] [--faults N] [--time-limit S] [--workdir DIR]

The last line is the headline: `chaos: <F> faults (<by kind>), <V> invariant violations,
<U> updates, takeover p50 <a> s max <b> s (S = <s> s)`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from chaos_check import Beat, Checker, Window  # noqa: E402
from kazoo.client import KazooClient  # noqa: E402

from api.client import PulsegateClient  # noqa: E402
from scheduler.paths import Paths  # noqa: E402
from scheduler.zkserver import EmbeddedZooKeeper  # noqa: E402
from updater.keys import JobKey, UpdateKey  # noqa: E402
from updater.settings import Settings, Strategy  # noqa: E402
from updater.status import UpdateStatus  # noqa: E402
from updater.task import HealthCheck, HealthCheckKind, TaskConfig  # noqa: E402

from procs import SchedulerProcess, kill_marked, leader, marked_processes  # noqa: E402

TICK_MS = 500  # ZooKeeper expires sessions in tick buckets: a short tick keeps expiry near S
KINDS = (
    "kill9_leader",
    "sigstop_leader",
    "sigterm_leader",
    "kill9_follower",
    "zk_restart",
    "monitor_silence",
    "pause_failover",
)
JOB = JobKey("chaos", "test", "web")
NAMES = ("s1", "s2", "s3")
PAUSED = (UpdateStatus.ROLL_FORWARD_PAUSED, UpdateStatus.ROLL_BACK_PAUSED)


class Cluster:
    """ZooKeeper and the schedulers, started, signalled and restarted by name."""

    def __init__(self, workdir: Path, session_s: float) -> None:
        self.workdir = workdir
        self.session_s = session_s
        self.zk = EmbeddedZooKeeper(workdir / "zk", tick_ms=TICK_MS)
        self.zk.start()
        self.paths = Paths("/chaos")
        retry = {"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 1.0}
        self.admin = KazooClient(hosts=self.zk.hosts, connection_retry=retry)
        self.admin.start(timeout=30)
        self.procs: dict[str, SchedulerProcess] = {}
        self._addresses: dict[tuple[str, int], str] = {}
        self._log_start: dict[str, int] = {}
        for name in NAMES:
            self.start(name)

    def start(self, name: str) -> None:
        args = ["--driver", "local"]
        proc = SchedulerProcess(
            name, self.zk.hosts, self.paths, self.workdir, self.session_s, args=args
        )
        # A restart appends to the same log: only what this process writes says where it listens.
        self._log_start[name] = proc.log_path.stat().st_size if proc.log_path.exists() else 0
        self.procs[name] = proc.start()

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.proc is not None and p.proc.poll() is None]

    def leader(self) -> str | None:
        try:
            found = leader(self.admin, self.paths)
        except Exception:  # ZooKeeper away
            return None
        return None if found is None else str(found["id"])

    def wait_leader(self, other_than: str | None = None, timeout: float = 120.0) -> str:
        """The serving leader, once there is one that is not `other_than`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            name = self.leader()
            if name is not None and name != other_than and name in self.alive():
                return name
            time.sleep(0.02)
        raise RuntimeError(f"no leader other than {other_than} within {timeout} s")

    def address(self, name: str) -> str | None:
        proc = self.procs[name]
        key = (name, proc.pid)
        if key not in self._addresses:
            with proc.log_path.open("rb") as log:
                log.seek(self._log_start[name])
                lines = log.read().decode(errors="replace").splitlines()
            for line in lines:
                if '"scheduler_started"' in line:
                    with contextlib.suppress(ValueError, KeyError):
                        self._addresses[key] = str(json.loads(line)["api"])
            if key not in self._addresses:
                return None  # not listening yet
        return self._addresses[key]

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.terminate(timeout=20)
            proc.cleanup()
        self.admin.stop()
        self.admin.close()
        self.zk.stop()


class Monitor(threading.Thread):
    """Heartbeats the current update every `interval_s` through a random live scheduler (a
    follower forwards), and logs each beat: when sent, when answered, and the answer."""

    def __init__(self, cluster: Cluster, interval_s: float, seed: int, log: Path) -> None:
        super().__init__(name="monitor", daemon=True)
        self.cluster = cluster
        self.interval_s = interval_s
        self.rng = random.Random(seed)
        self.log = log.open("a")
        self.key: UpdateKey | None = None
        self.silent_until = 0.0
        self.beats: list[Beat] = []
        self.stopping = threading.Event()
        self._clients: dict[str, PulsegateClient] = {}

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            key = self.key
            if key is None or time.time() < self.silent_until:
                continue
            alive = self.cluster.alive()
            address = self.cluster.address(self.rng.choice(alive)) if alive else None
            if address is None:
                continue
            client = self._clients.get(address)
            if client is None:
                client = self._clients[address] = PulsegateClient(
                    address, retry_for_s=0, timeout_s=2, follow_leader=False
                )
            sent = time.time()
            try:
                answer = client.heartbeat(key).answer.name
            except Exception as e:
                answer = f"error {type(e).__name__}: {str(e)[:120]}"
                self._clients.pop(address, None)  # a fresh connection next time
                with contextlib.suppress(Exception):
                    client.close()
            beat = Beat(str(key), sent, time.time(), answer)
            self.beats.append(beat)
            self.log.write(json.dumps(beat.__dict__) + "\n")
            self.log.flush()


class Operator(threading.Thread):
    """Runs coordinated updates back to back, alternating versions, and keeps what each ended
    with (status and instance events, from the API)."""

    def __init__(
        self, cluster: Cluster, monitor: Monitor, config: Callable[[str], TaskConfig], n: int
    ) -> None:
        super().__init__(name="operator", daemon=True)
        self.client = PulsegateClient(
            zookeeper=cluster.zk.hosts, zk_root=cluster.paths.root, retry_for_s=120
        )
        self.monitor = monitor
        self.config = config
        self.n = n
        self.settings: Settings
        self.version = 1
        self.windows: list[Window] = []
        self.current: UpdateKey | None = None
        self.starting = threading.Event()
        self.starting.set()  # cleared to stop starting new updates
        self.stopping = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stopping.wait(0.3):
            try:
                self._turn()
            except Exception as e:  # the cluster is mid-fault: the next turn retries
                self.errors.append(f"{type(e).__name__}: {e}")

    def _turn(self) -> None:
        if self.current is None:
            if not self.starting.is_set():
                return
            self.version += 1
            started = time.time()
            key = self.client.start_update(
                JOB, self.config(str(self.version)), self.n, settings=self.settings
            )
            self.windows.append(Window(str(key), started, None, str(self.version), "", {}))
            self.current = self.monitor.key = key
            return
        details = self.client.details(self.current)
        if details.status.is_terminal:
            window = self.windows[-1]
            window.end = time.time()
            window.status = details.status.name
            window.events = {
                f"{e.instance_id}:{e.action.name}": 1
                + window.events.get(f"{e.instance_id}:{e.action.name}", 0)
                for e in details.record.instance_events
            }
            self.current = None

    def wait_idle(self, timeout: float) -> bool:
        self.starting.clear()
        deadline = time.monotonic() + timeout
        while self.current is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.current is None


class Suite:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.marker = f"chaos-{args.seed}-{int(time.time())}"
        self.instance_log = workdir / "instances.jsonl"
        self.timeout_ms = args.heartbeat_timeout_ms
        self.cluster = Cluster(workdir, args.session_timeout)
        self.monitor = Monitor(
            self.cluster, self.timeout_ms / 4000, args.seed + 1, workdir / "beats.jsonl"
        )
        self.operator = Operator(self.cluster, self.monitor, self.config, args.instances)
        self.operator.settings = Settings(
            strategy=Strategy.batch(1),
            min_wait_in_instance_running_ms=1000,
            heartbeat_timeout_ms=self.timeout_ms,
            max_per_instance_failures=3,
            rollback_on_failure=False,
        )
        self.checker = Checker(args.instances, self.timeout_ms / 1000)
        self.faults: Counter[str] = Counter()
        self.takeovers: list[float] = []
        self.expected_down: set[str] = set()
        self.pauses: list[tuple[str, float, float]] = []
        self._sampling = threading.Event()

    def config(self, version: str) -> TaskConfig:
        check = HealthCheck(
            HealthCheckKind.HTTP, interval_ms=200, timeout_ms=1000, initial_delay_ms=300,
            unhealthy_threshold=15,
        )  # fmt: skip
        return TaskConfig.make(
            [sys.executable, str(ROOT / "bench" / "chaos_instance.py")],
            environment={
                "VERSION": version,
                "PULSEGATE_MARKER": self.marker,
                "CHAOS_LOG": str(self.instance_log),
            },
            health_check=check,
            stop_grace_ms=3000,
        )

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> str:
        started = time.monotonic()
        self.cluster.wait_leader()
        admin = PulsegateClient(
            zookeeper=self.cluster.zk.hosts, zk_root=self.cluster.paths.root, retry_for_s=120
        )
        admin.create_job(JOB, self.config("1"), self.args.instances)
        wait(lambda: admin.is_settled(JOB, self.args.instances), 120, "the job never settled")
        sampler = threading.Thread(target=self._sample, daemon=True)
        sampler.start()
        self.monitor.start()
        self.operator.start()
        for i in range(self.args.faults):
            if time.monotonic() - started > self.args.time_limit:
                print(f"time limit reached after {i} faults", flush=True)
                break
            time.sleep(self.rng.uniform(1.0, 3.0))
            kind = self.rng.choice(KINDS)
            began = time.monotonic()
            getattr(self, kind)()
            self.faults[kind] += 1
            self.settle()
            print(f"fault {i + 1}: {kind} ({time.monotonic() - began:.1f} s)", flush=True)
        if not self.operator.wait_idle(timeout=180):
            self.checker.violation("update_stuck", f"{self.operator.current} did not finish")
        self.operator.stopping.set()
        self.operator.join(timeout=30)
        self.monitor.stopping.set()
        self.monitor.join(timeout=30)
        self._sampling.set()
        sampler.join(timeout=30)
        self.final_checks(admin)
        admin.close()
        return self.report()

    def settle(self) -> None:
        """Back to three schedulers and a serving leader; an exit nobody caused is a violation."""
        for name in self.cluster.alive():
            self.expected_down.discard(name)
        for name in NAMES:
            if name not in self.cluster.alive():
                if name not in self.expected_down:
                    code = self.cluster.procs[name].proc.returncode  # type: ignore[union-attr]
                    self.checker.violation("scheduler_exit", f"{name} exited with {code}")
                self.cluster.start(name)
        self.expected_down.clear()
        self.cluster.wait_leader()

    def _sample(self) -> None:
        while not self._sampling.wait(0.5):
            self.checker.sample(marked_processes(self.marker))

    def final_checks(self, admin: PulsegateClient) -> None:
        n = self.args.instances
        if not wait_quiet(lambda: admin.is_settled(JOB, n), 120):
            self.checker.violation("not_settled", str(admin.instances(JOB)))
        self.checker.sample(marked_processes(self.marker), final=True)
        admin.kill_job(JOB)
        if not wait_quiet(lambda: not marked_processes(self.marker), 90):
            left = sorted(marked_processes(self.marker))
            self.checker.violation("orphan", f"processes left after the job was killed: {left}")
        kill_marked(self.marker)
        self.checker.check_logs(
            read_jsonl(self.instance_log), self.monitor.beats, self.operator.windows, self.pauses
        )

    def report(self) -> str:
        for line in self.checker.describe():
            print(line)
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        takeovers = self.takeovers or [0.0]
        return (
            f"chaos: {sum(self.faults.values())} faults ({kinds}), "
            f"{len(self.checker.violations)} invariant violations, "
            f"{len(self.operator.windows)} updates, "
            f"takeover p50 {statistics.median(takeovers):.2f} s max {max(takeovers):.2f} s "
            f"(S = {self.args.session_timeout:g} s)"
        )

    # -- faults ----------------------------------------------------------------------------------

    def _leader_fault(self, act: Callable[[SchedulerProcess], None], restart: bool = True) -> str:
        name = self.cluster.wait_leader()
        proc = self.cluster.procs[name]
        began = time.monotonic()
        act(proc)
        self.cluster.wait_leader(other_than=name)
        self.takeovers.append(time.monotonic() - began)
        return name

    def kill9_leader(self) -> None:
        name = self._leader_fault(lambda p: p.signal(signal.SIGKILL))
        self.expected_down.add(name)
        self.cluster.procs[name].proc.wait(timeout=30)  # type: ignore[union-attr]

    def sigterm_leader(self) -> None:
        name = self._leader_fault(lambda p: p.signal(signal.SIGTERM))
        code = self.cluster.procs[name].proc.wait(timeout=60)  # type: ignore[union-attr]
        if code != 0:
            self.checker.violation("scheduler_exit", f"{name} stopped with {code} on SIGTERM")
        self.expected_down.add(name)

    def sigstop_leader(self) -> None:
        name = self._leader_fault(lambda p: p.signal(signal.SIGSTOP))  # held past the session
        self.cluster.procs[name].signal(signal.SIGCONT)

    def kill9_follower(self) -> None:
        leader_name = self.cluster.wait_leader()
        name = self.rng.choice([n for n in self.cluster.alive() if n != leader_name])
        self.expected_down.add(name)
        self.cluster.procs[name].kill()

    def zk_restart(self) -> None:
        self.cluster.zk.stop()
        time.sleep(self.rng.uniform(0.5, 2 * self.args.session_timeout))  # the outage itself
        self.cluster.zk.start()

    def monitor_silence(self) -> None:
        silence = self.timeout_ms / 1000 * 2 + 1.0
        self.monitor.silent_until = time.time() + silence
        time.sleep(silence)  # the fault lasts this long

    def pause_failover(self) -> None:
        key = self.operator.current
        client = self.operator.client
        try:
            if key is None:
                raise LookupError
            client.pause(key, "chaos: pause before a failover")
        except Exception:  # no update, or it just finished: the failover alone
            self.kill9_leader()
            return
        acked = time.time()
        self.kill9_leader()
        status = client.details(key).status
        if status.is_active and status not in PAUSED:
            self.checker.violation("pause_lost", f"{key} is {status.name} after the failover")
        resumed = time.time()
        if status.is_active:
            client.resume(key, "chaos: resume after the failover")
        self.pauses.append((str(key), acked, resumed))


def wait(predicate: Callable[[], object], timeout: float, message: str) -> None:
    if not wait_quiet(predicate, timeout):
        raise RuntimeError(message)


def wait_quiet(predicate: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return True
        time.sleep(0.1)
    return False


def read_jsonl(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", type=int, default=100)
    parser.add_argument("--time-limit", type=float, default=3600.0, help="seconds of faults")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--session-timeout", type=float, default=3.0)
    parser.add_argument("--heartbeat-timeout-ms", type=int, default=3000)
    parser.add_argument("--workdir", type=Path, help="keep logs here (default: a temp dir)")
    args = parser.parse_args()
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)  # its reconnects are the faults
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        else:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        suite = Suite(args, workdir)
        try:
            headline = suite.run()
        finally:
            suite.cluster.close()  # first: a leader would restart what is killed
            kill_marked(suite.marker)
        print(headline, flush=True)


if __name__ == "__main__":
    main()
