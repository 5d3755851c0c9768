"""Heartbeat benchmark: heartbeatJobUpdate calls/s and latency against a scheduler process, as
a ratio to the empty method `ping` on the same server in the same run (the baseline).

An embedded ZooKeeper and a scheduler (`pulsegate scheduler run`, sim driver) run as child
processes; one coordinated update is kept active (its new instances never become healthy).
Client load comes from worker processes, each driving its share of persistent thriftpy2
connections from one thread per connection. Client, server and ZooKeeper share the machine's
cores, so the rates are lower bounds; the ratio is what the target is about (>= 0.8).

The scheduler is pinned to the first core and the clients to the others (`--no-pin` lets the
kernel place them): the server is one Python process, bound by its GIL to about one core, and
clients that steal that core made the unpinned ratio swing between runs. The CPU the server
and the clients spent per call is printed too: the server's is what a heartbeat costs.

    python bench/heartbeat.py [--seconds 4] [--clients 1,16,64] [--workers 4] [--no-pin]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from thriftpy2.rpc import make_client  # noqa: E402

from api.idl import Service  # noqa: E402
from api.idl import pulsegate as t  # noqa: E402
from scheduler.zkserver import (  # noqa: E402
    EmbeddedZooKeeper,
    _pdeathsig_preexec,
    find_free_port,
)

HOST = "127.0.0.1"
TIMEOUT_MS = 30_000
HEARTBEAT_TIMEOUT_MS = 600_000
NEVER_HEALTHY = {"sim.start_ms": "50", "sim.healthy_after_ms": "never"}
METHODS = ("heartbeatJobUpdate", "ping")


# -- the scheduler under test ----------------------------------------------------------------------


def spawn_scheduler(
    hosts: str, port: int, workdir: Path, cpus: set[int]
) -> subprocess.Popen[bytes]:
    """The scheduler on `cpus` (all if empty); it gets SIGTERM if we are killed."""
    die_with_us = _pdeathsig_preexec()

    def preexec() -> None:  # in the child before exec, so every thread it starts inherits
        if cpus:
            os.sched_setaffinity(0, cpus)
        die_with_us()

    log = (workdir / "scheduler.log").open("wb")
    try:
        return subprocess.Popen(
            [
                sys.executable, "-m", "api.cli", "scheduler", "run", "--zk", hosts,
                "--zk-root", "/bench", "--api-port", str(port), "--http-port", "0",
                "--driver", "sim", "--state-dir", str(workdir / "state"),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PULSEGATE_LOG_LEVEL": "warning"},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
        )  # fmt: skip
    finally:
        log.close()


def poll(what: str, check: Callable[[], Any], timeout: float, alive: Callable[[], bool]) -> Any:
    """Call `check` until it returns something truthy; give up after `timeout` seconds or as
    soon as the process we wait for has died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except Exception:  # not listening yet, no leader yet
            found = None
        if found:
            return found
        if not alive():
            raise RuntimeError(f"the scheduler exited while waiting for: {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for: {what}")
        time.sleep(0.05)


def serving(port: int) -> bool:
    client = make_client(Service, HOST, port, timeout=2000)
    try:
        return bool(client.getSchedulerInfo().serving)
    finally:
        client.close()


def start_update(port: int, alive: Callable[[], bool]) -> Any:
    """A job and a coordinated update that stays active: its new instances never become
    healthy, and the heartbeat timeout (10 minutes) outlasts the run."""
    client = make_client(Service, HOST, port, timeout=TIMEOUT_MS)
    try:
        job = t.JobKey(role="bench", environment="prod", name="heartbeat")
        config = t.TaskConfig(command=["server", "--version=1"], labels=NEVER_HEALTHY)
        client.createJob(t.JobConfiguration(key=job, taskConfig=config, instanceCount=4), None)
        request = t.JobUpdateRequest(
            job=job,
            taskConfig=t.TaskConfig(command=["server", "--version=2"], labels=NEVER_HEALTHY),
            instanceCount=4,
            settings=t.JobUpdateSettings(heartbeatTimeoutMs=HEARTBEAT_TIMEOUT_MS),
        )
        key = client.startJobUpdate(request, "heartbeat benchmark", None)
        client.heartbeatJobUpdate(key, None)
        poll(
            "the update to roll forward",
            lambda: status(client, key) == t.JobUpdateStatus.ROLLING_FORWARD,
            30,
            alive,
        )
        return key
    finally:
        client.close()


def status(client: Any, key: Any) -> int:
    return int(client.getJobUpdateDetails(key, None).summary.status)


# -- load ------------------------------------------------------------------------------------------


def drive(
    port: int,
    method: str,
    key: Any,
    connections: int,
    ready: Any,
    go: Any,
    end_at: Any,
    results: Any,
    cpus: set[int],
) -> None:
    """One worker process: `connections` persistent connections, a thread each, calling
    `method` back to back until `end_at` (a monotonic time, the same clock in every process)."""
    clients = [make_client(Service, HOST, port, timeout=TIMEOUT_MS) for _ in range(connections)]
    args = (key, None) if method == "heartbeatJobUpdate" else ()
    latencies: list[list[float]] = [[] for _ in clients]
    unexpected = [0] * len(clients)
    ok = t.HeartbeatStatus.OK

    def run(i: int) -> None:
        call = getattr(clients[i], method)
        mine = latencies[i]
        clock = time.perf_counter
        end = end_at.value
        while True:
            started = clock()
            answer = call(*args)
            done = clock()
            mine.append(done - started)
            if answer is not None and answer.status != ok:
                unexpected[i] += 1
            if time.monotonic() >= end:
                return

    if cpus:
        os.sched_setaffinity(0, cpus)
    ready.put(os.getpid())
    go.wait()
    cpu = time.process_time()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu = time.process_time() - cpu
    for client in clients:
        client.close()
    results.put(([x for mine in latencies for x in mine], sum(unexpected), cpu))


def cpu_list(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Measurement:
    def __init__(
        self,
        method: str,
        clients: int,
        seconds: float,
        latencies: list[float],
        server_cpu: float,
        client_cpu: float,
    ) -> None:
        self.method = method
        self.clients = clients
        self.calls = len(latencies)
        self.rate = self.calls / seconds
        self.server_us = 1e6 * server_cpu / max(1, self.calls)
        self.client_us = 1e6 * client_cpu / max(1, self.calls)
        ordered = sorted(latencies)
        self.p50_ms = 1000 * statistics.median(ordered) if ordered else float("nan")
        self.p99_ms = 1000 * ordered[int(0.99 * (len(ordered) - 1))] if ordered else float("nan")


def measure(
    port: int,
    server_pid: int,
    method: str,
    key: Any,
    clients: int,
    workers: int,
    seconds: float,
    cpus: set[int],
) -> Measurement:
    """`clients` persistent connections spread over min(clients, workers) processes; also
    the CPU time the server and the clients spent, per call."""
    count = min(clients, workers)
    shares = [clients // count + (i < clients % count) for i in range(count)]
    ctx = mp.get_context("fork")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    end_at = ctx.Value("d", 0.0, lock=False)
    procs = [
        ctx.Process(
            target=drive,
            args=(port, method, key, share, ready, go, end_at, results, cpus),
            daemon=True,
        )
        for share in shares
    ]
    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=60)
        server_cpu = cpu_seconds(server_pid)
        end_at.value = time.monotonic() + seconds
        go.set()
        latencies: list[float] = []
        unexpected = 0
        client_cpu = 0.0
        for _ in procs:
            found, bad, cpu = results.get(timeout=seconds + 120)
            latencies.extend(found)
            unexpected += bad
            client_cpu += cpu
        server_cpu = cpu_seconds(server_pid) - server_cpu
        for proc in procs:
            proc.join(timeout=30)
        if unexpected:
            raise RuntimeError(f"{unexpected} heartbeats were not answered OK")
        return Measurement(method, clients, seconds, latencies, server_cpu, client_cpu)
    finally:
        for proc in procs:  # only on errors: a worker that is still running
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)


# -- report ----------------------------------------------------------------------------------------


def report(results: dict[tuple[str, int], Measurement], client_counts: list[int]) -> None:
    print(
        f"{'clients':>7}  {'method':<18} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'server CPU us/call':>19} {'client CPU us/call':>19}"
    )
    for n in client_counts:
        for method in METHODS:
            m = results[(method, n)]
            print(
                f"{n:>7}  {method:<18} {m.rate:>9.0f} {m.p50_ms:>8.2f} {m.p99_ms:>8.2f} "
                f"{m.server_us:>19.1f} {m.client_us:>19.1f}"
            )
    print()
    print(f"{'clients':>7}  heartbeat / ping")
    for n in client_counts:
        ratio = results[("heartbeatJobUpdate", n)].rate / results[("ping", n)].rate
        print(f"{n:>7}  {ratio:.2f}")
    top = client_counts[-1]
    beat, empty = results[("heartbeatJobUpdate", top)], results[("ping", top)]
    print(
        f"heartbeat: {beat.rate:.0f}/s at {top} clients, {beat.rate / empty.rate:.2f} of "
        f"empty-call rate, p99 {beat.p99_ms:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--clients", default="1,16,64", help="concurrent clients, ascending")
    parser.add_argument("--workers", type=int, default=4, help="client processes at most")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give the scheduler the first core and the clients the others (default on)",
    )
    args = parser.parse_args()
    client_counts = sorted(int(n) for n in args.clients.split(","))

    # SIGTERM unwinds like Ctrl-C, so the finally blocks below stop what we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="pulsegate-bench-") as tmp:
        workdir = Path(tmp)
        zk = EmbeddedZooKeeper(workdir / "zk", die_with_parent=True)
        scheduler: subprocess.Popen[bytes] | None = None
        try:
            zk.start()
            cores = sorted(os.sched_getaffinity(0))
            server_cpus: set[int] = set()
            client_cpus: set[int] = set()
            if args.pin and len(cores) >= 2:
                server_cpus, client_cpus = set(cores[:1]), set(cores[1:])
            port = find_free_port()
            scheduler = spawn_scheduler(zk.hosts, port, workdir, server_cpus)
            proc = scheduler

            def alive() -> bool:
                return proc.poll() is None

            poll("the scheduler to serve", lambda: serving(port), 60, alive)
            key = start_update(port, alive)
            placement = (
                f"scheduler on core {cpu_list(server_cpus)}, clients on {cpu_list(client_cpus)}"
                if server_cpus
                else f"{len(cores)} cores shared"
            )
            print(
                f"scheduler pid {scheduler.pid} on {HOST}:{port}, ZooKeeper pid {zk.pid}; "
                f"{args.seconds:g} s per measurement, up to {args.workers} client processes; "
                f"{placement}"
            )
            pid = scheduler.pid
            measure(port, pid, "ping", key, 1, 1, min(1.0, args.seconds), client_cpus)  # warm-up
            results = {}
            for n in client_counts:
                for method in METHODS:
                    results[(method, n)] = measure(
                        port, pid, method, key, n, args.workers, args.seconds, client_cpus
                    )
            check = make_client(Service, HOST, port, timeout=TIMEOUT_MS)
            try:
                final = status(check, key)
            finally:
                check.close()
            if final != t.JobUpdateStatus.ROLLING_FORWARD:
                raise RuntimeError(f"the update left ROLLING_FORWARD during the run ({final})")
            report(results, client_counts)
        except Exception:
            log = workdir / "scheduler.log"
            tail = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else []
            if tail:
                print("scheduler log ends with:", *tail, sep="\n", file=sys.stderr)
            raise
        finally:
            if scheduler is not None and scheduler.poll() is None:
                scheduler.send_signal(signal.SIGTERM)
                try:
                    scheduler.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    scheduler.kill()
                    scheduler.wait()
            zk.stop()


if __name__ == "__main__":
    main()
