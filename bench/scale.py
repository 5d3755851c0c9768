"""Scale benchmark: N active coordinated updates (10 instances each) on one leader, real
ZooKeeper, real Thrift clients; heartbeats at a target rate while the updates progress.

One embedded ZooKeeper (a child process) and one scheduler in this process (sim driver, its
Thrift API on 127.0.0.1), so the leader loop can be timed from outside: its `_turn` and
`_advance` are wrapped on the instance (leader.py is untouched). Heartbeats come from worker
processes (bench/scaleload.py), each with a few persistent connections paced to the target rate.

Phases, in one run:
1. `--baseline` updates (100) active and heartbeated: loop turns timed, RSS read.
2. The rest created (N in all); every update heartbeated: heartbeat rate and latency, turns
   timed, RSS read. Turn ratio = p99 of (turn time / work items in the turn) at N over the same
   at the baseline: the work a turn does (updates planned, commands, unblocks) grows with the
   updates that changed, so a turn that costs O(changed) keeps the ratio near 1 and one that
   touches every active update shows it as the ratio of N to the baseline. Raw turn p99 is
   printed too.
3. Mass silence: the monitors of `--silence` updates (1,000) stop at once; lag = the timestamp
   of each AWAITING_PULSE event minus its lease end (last heartbeat + timeout).
4. Rehydrate: a bare pipelined read of every znode a takeover reads (one round of async
   gets), then this scheduler stops and a second one takes over the same root; its
   `rehydrate_seconds` is compared with the bare read.

KB/update is the leader's RSS growth from the baseline to N over the active updates added.
Everything it started stops at the end, on an error, on SIGTERM and at `--time-limit`.

    python bench/scale.py [--updates 10000] [--rate 10000] [--time-limit 1200]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kazoo.client import KazooClient  # noqa: E402
from thriftpy2.rpc import make_client  # noqa: E402

from api.idl import Service  # noqa: E402
from api.idl import pulsegate as t  # noqa: E402
from api.server import attach  # noqa: E402
from bench.scaleload import Shared, run_worker  # noqa: E402
from bench.scaleprobe import TurnProbe, bare_read, counter_total, p99, rss_kb  # noqa: E402
from scheduler.config import load_config  # noqa: E402
from scheduler.logs import configure_logging  # noqa: E402
from scheduler.service import Scheduler  # noqa: E402
from scheduler.zkserver import EmbeddedZooKeeper  # noqa: E402
from updater.events import Cause  # noqa: E402

INSTANCES = 10
ROOT_ZNODE = "/scale"
BASELINE, IN_SETUP, FULL, SILENCE = 1, 2, 3, 4  # heartbeat phases (0: baseline setup)


class BenchStopped(Exception):
    """The run cannot go on (time limit, a wait that timed out, the leader lost its session)."""


# -- the scheduler ---------------------------------------------------------------------------


def start_scheduler(hosts: str, state_dir: Path, name: str) -> Scheduler:
    config = load_config(
        None,
        {},
        {
            "scheduler.id": name,
            "scheduler.state_dir": str(state_dir),
            "zookeeper.hosts": hosts,
            "zookeeper.root": ROOT_ZNODE,
            "zookeeper.session_timeout_s": 10.0,
            "api.port": 0,
            "http.port": 0,
            "driver.kind": "sim",
            "log.format": "console",
            "log.level": "warning",
        },
    )
    scheduler = Scheduler(config)
    attach(scheduler)
    scheduler.start()
    return scheduler


def serving(scheduler: Scheduler) -> bool:
    return scheduler.loop is not None and scheduler.loop.is_serving


def wait_for(what: str, check: Callable[[], Any], deadline: float) -> Any:
    """Poll `check` until truthy; BenchStopped once `deadline` (monotonic) has passed."""
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise BenchStopped(f"timed out waiting for {what} ({found!r})")
        time.sleep(0.05)


# -- updates ---------------------------------------------------------------------------------


class Creator:
    """Creates jobs and their coordinated updates through the Thrift API (a few connections
    in parallel, so the loop, not the client round trips, sets the pace), heartbeats each
    once (it leaves AWAITING_PULSE) and hands its key to the heartbeat workers."""

    def __init__(self, port: int, args: argparse.Namespace, queues: list[Any]) -> None:
        self.port = port
        self.args = args
        self.queues = queues
        self.keys: list[Any] = []
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        labels_new = {
            "sim.start_ms": "500",
            "sim.kill_ms": "200",
            "sim.healthy_after_ms": str(int(args.instance_seconds * 1000)),
        }
        self.old = t.TaskConfig(command=["server", "--version=1"], labels={"sim.start_ms": "200"})
        self.new = t.TaskConfig(command=["server", "--version=2"], labels=labels_new)
        self.settings = t.JobUpdateSettings(
            heartbeatTimeoutMs=args.heartbeat_timeout_ms, minWaitInInstanceRunningMs=1000
        )

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = make_client(Service, "127.0.0.1", self.port, timeout=60_000)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _one(self, i: int) -> tuple[int, Any]:
        client = self._client()
        job = t.JobKey(role="scale", environment="prod", name=f"job{i:05d}")
        client.createJob(
            t.JobConfiguration(key=job, taskConfig=self.old, instanceCount=INSTANCES), None
        )
        request = t.JobUpdateRequest(
            job=job, taskConfig=self.new, instanceCount=INSTANCES, settings=self.settings
        )
        key = client.startJobUpdate(request, "scale benchmark", None)
        client.heartbeatJobUpdate(key, None)
        return i, key

    def create(self, start: int, stop: int, deadline: float) -> None:
        chunk: list[tuple[int, str, str, str, str]] = []
        pool = ThreadPoolExecutor(max_workers=4)
        try:
            for i, key in pool.map(self._one, range(start, stop)):
                if time.monotonic() > deadline:
                    raise BenchStopped(f"timed out creating updates ({i} of {stop})")
                self.keys.append(key)
                if (i + 1) % 1000 == 0:
                    print(f"  {i + 1} updates created", flush=True)
                j = key.job
                chunk.append((i, j.role, j.environment, j.name, key.id))
                if len(chunk) >= 50 or i == stop - 1:
                    self.queues[(i // 50) % len(self.queues)].put(chunk)
                    chunk = []
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on an error, drop what is queued

    def close(self) -> None:
        for client in self._clients:
            client.close()


# -- heartbeat workers -------------------------------------------------------------------------


class Load:
    def __init__(self, port: int, args: argparse.Namespace, deadline_wall: float) -> None:
        self.ctx = mp.get_context("spawn")  # this process has threads: never fork it
        self.shared = Shared(self.ctx)
        self.results = self.ctx.Queue()
        self.queues = [self.ctx.Queue() for _ in range(args.workers)]
        per_connection = args.rate / (args.workers * args.connections)
        self.procs = [
            self.ctx.Process(
                target=run_worker,
                args=(port, args.connections, per_connection, q, self.shared, self.results),
                kwargs={"parent": os.getpid(), "deadline": deadline_wall},
                daemon=True,
            )
            for q in self.queues
        ]
        self.windows: dict[int, float] = {}
        self._phase_started = time.monotonic()

    def start(self) -> None:
        for proc in self.procs:
            proc.start()

    def phase(self, phase: int) -> None:
        """Calls from now on count for `phase`; the time spent in the previous one is kept."""
        now = time.monotonic()
        previous = self.shared.phase.value
        self.windows[previous] = self.windows.get(previous, 0.0) + now - self._phase_started
        self._phase_started = now
        self.shared.phase.value = phase

    def silence(self, below: int) -> None:
        self.shared.silenced_below.value = below

    def finish(self) -> tuple[dict[int, list[float]], int, int]:
        self.phase(-1)
        self.shared.stop.set()
        merged: dict[int, list[float]] = {}
        not_ok = failed = 0
        for _ in self.procs:
            _, found, bad, errors = self.results.get(timeout=60)
            for phase, latencies in found.items():
                merged.setdefault(phase, []).extend(latencies)
            not_ok += bad
            failed += errors
        for proc in self.procs:
            proc.join(timeout=10)
        return merged, not_ok, failed

    def stop(self) -> None:
        self.shared.stop.set()
        for proc in self.procs:
            if proc.pid is not None and proc.is_alive():
                proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)


# -- the run ---------------------------------------------------------------------------------


def awaiting(scheduler: Scheduler) -> int:
    assert scheduler.loop is not None
    return sum(1 for run in list(scheduler.loop.runs.values()) if run.status.is_awaiting_pulse)


def lapse_lags_ms(scheduler: Scheduler, silenced: list[Any], deadline: float) -> list[int]:
    """Wait until every silenced update that is still active has recorded its lapse; the lag of
    each: AWAITING_PULSE timestamp minus lease end."""
    loop = scheduler.loop
    assert loop is not None
    from api.convert import update_key_in

    keys = [update_key_in(k) for k in silenced]

    def pending() -> list[Any]:
        if not loop.is_serving:  # memory was dropped: what lapsed is no longer known
            raise BenchStopped("the leader stopped serving (its ZooKeeper session was lost)")
        return [
            k
            for k in keys
            if (run := loop.runs.get(k)) is not None and not run.status.is_awaiting_pulse
        ]

    wait_for("the silenced updates to lapse", lambda: not pending(), deadline)
    lags = []
    for k in keys:
        run = loop.runs.get(k)
        end = loop.pulse.lease_end(k)
        if run is None or end is None:
            continue
        event = run.status_events[-1]
        if event.cause is Cause.HEARTBEAT_TIMEOUT:
            lags.append(event.timestamp_ms - end)
    return lags


def run(args: argparse.Namespace, workdir: Path) -> None:
    started = time.monotonic()
    deadline = started + args.time_limit
    wall_deadline = time.time() + args.time_limit
    n, base = args.updates, min(args.baseline, args.updates)
    silence = min(args.silence, n // 2)
    zk = EmbeddedZooKeeper(workdir / "zk", die_with_parent=True)
    first: Scheduler | None = None
    second: Scheduler | None = None
    load: Load | None = None
    creator: Creator | None = None
    try:
        zk.start()
        first = start_scheduler(zk.hosts, workdir / "a", "scale-a")
        wait_for("the scheduler to serve", lambda: serving(first), deadline)
        assert first.loop is not None
        loop = first.loop
        probe = TurnProbe(loop)
        port = first.api.port
        load = Load(port, args, wall_deadline)
        load.start()
        creator = Creator(port, args, load.queues)
        windows = load.windows  # seconds spent in each heartbeat phase, filled as phases end

        def enter(phase: int) -> None:
            assert load is not None
            load.phase(phase)
            probe.phase = phase

        print(
            f"scale: ZooKeeper pid {zk.pid}, leader in this process on 127.0.0.1:{port}; "
            f"{args.workers} heartbeat processes x {args.connections} connections at "
            f"{args.rate}/s in all; heartbeat timeout {args.heartbeat_timeout_ms} ms",
            flush=True,
        )

        # Creating updates goes through the loop, which the full heartbeat rate starves: beat
        # meanwhile only as often as keeps every created update fresh (4 per timeout).
        setup_throttle = min(1.0, max(0.05, 4 * n / (args.heartbeat_timeout_ms / 1000) / args.rate))

        # 1. the baseline
        load.shared.throttle.value = setup_throttle
        creator.create(0, base, deadline)
        load.shared.throttle.value = 1.0
        wait_for("the baseline to roll", lambda: awaiting(first) == 0, deadline)
        time.sleep(args.settle)
        events_before = counter_total(first.registry, "pulsegate_instance_events_total")
        enter(BASELINE)
        time.sleep(args.seconds)
        enter(IN_SETUP)
        events_base = counter_total(first.registry, "pulsegate_instance_events_total")
        rss_base, active_base = rss_kb(), len(loop.runs)
        print(f"baseline: {active_base} active, RSS {rss_base / 1024:.0f} MB", flush=True)

        # 2. every update
        t0 = time.monotonic()
        load.shared.throttle.value = setup_throttle
        creator.create(base, n, deadline)
        created_s = time.monotonic() - t0
        load.shared.throttle.value = 1.0
        wait_for("every update to roll", lambda: awaiting(first) == 0, deadline)
        print(f"created {n - base} more updates in {created_s:.1f} s", flush=True)
        time.sleep(args.settle)
        events_mid = counter_total(first.registry, "pulsegate_instance_events_total")
        enter(FULL)
        time.sleep(args.seconds)
        enter(SILENCE)
        events_full = counter_total(first.registry, "pulsegate_instance_events_total")
        rss_full, active_full = rss_kb(), len(loop.runs)
        per_update_kb = (rss_full - rss_base) / max(1, active_full - active_base)

        # 3. the mass silence
        load.silence(silence)
        lags = lapse_lags_ms(
            first, creator.keys[:silence], time.monotonic() + args.heartbeat_timeout_ms / 1000 + 60
        )
        beats, not_ok, failed = load.finish()
        load = None

        # 4. rehydrate, against a bare read of the same znodes
        reader = KazooClient(hosts=zk.hosts)
        reader.start(timeout=15)
        try:
            bare_s, znodes = bare_read(reader, ROOT_ZNODE)
        finally:
            reader.stop()
            reader.close()
        active_stored = len(loop.runs)
        creator.close()
        creator = None
        first.stop()
        first = None
        second = start_scheduler(zk.hosts, workdir / "b", "scale-b")
        wait_for("the second scheduler to take over", lambda: serving(second), deadline)
        rehydrate_s = second.registry.get_sample_value("pulsegate_rehydrate_seconds") or 0.0
        rehydrated = len(second.loop.runs) if second.loop else 0

        report(
            args=args,
            n=n,
            active=(active_base, active_full),
            beats=beats,
            windows=windows,
            not_ok=not_ok,
            failed=failed,
            probe=probe,
            events=(events_base - events_before, events_full - events_mid),
            lags=lags,
            silenced=silence,
            per_update_kb=per_update_kb,
            rss=(rss_base, rss_full),
            rehydrate=(rehydrate_s, rehydrated, active_stored),
            bare=(bare_s, znodes),
            elapsed=time.monotonic() - started,
        )
    finally:
        if load is not None:
            load.stop()
        if creator is not None:
            creator.close()
        for scheduler in (first, second):
            if scheduler is not None:
                scheduler.stop()
        zk.stop()


# -- the report ------------------------------------------------------------------------------


def turn_figures(samples: list[tuple[float, int]]) -> tuple[float, float, float]:
    """(raw turn p99 ms, p99 of turn time per work item in µs, mean work items per turn)."""
    if not samples:
        return float("nan"), float("nan"), float("nan")
    raw = p99([s for s, _ in samples]) * 1000
    per_item = p99([s / w for s, w in samples]) * 1e6
    return raw, per_item, sum(w for _, w in samples) / len(samples)


def report(**r: Any) -> None:
    args, n = r["args"], r["n"]
    windows, beats, probe = r["windows"], r["beats"], r["probe"]
    active_base, active_full = r["active"]
    rate = {ph: len(beats.get(ph, [])) / max(1e-9, windows.get(ph, 0.0)) for ph in windows}
    beat_p99 = {ph: p99(beats.get(ph, [])) * 1000 for ph in windows}
    print(
        f"\n{'phase':<10} {'active':>7} {'beats/s':>9} {'p99 ms':>8} {'turns':>7} "
        f"{'work/turn':>9} {'turn p99 ms':>11} {'p99 us/item':>11} {'inst. ev/s':>10}"
    )
    figures = {}
    for ph, label, active, events in (
        (BASELINE, "baseline", active_base, r["events"][0]),
        (FULL, "full", active_full, r["events"][1]),
    ):
        figures[ph] = turn_figures(probe.samples(ph))
        raw, per_item, work = figures[ph]
        print(
            f"{label:<10} {active:>7} {rate.get(ph, 0):>9.0f} {beat_p99.get(ph, 0):>8.2f} "
            f"{len(probe.samples(ph)):>7} {work:>9.1f} {raw:>11.2f} {per_item:>11.0f} "
            f"{events / max(1e-9, windows.get(ph, 0.0)):>10.0f}"
        )
    ratio = figures[FULL][1] / figures[BASELINE][1]
    raw_ratio = figures[FULL][0] / figures[BASELINE][0]
    print(f"turn ratio (p99 per work item) {ratio:.2f}; raw turn p99 ratio {raw_ratio:.2f}")
    print(f"heartbeats not answered OK: {r['not_ok']}, failed calls: {r['failed']}")
    lags = r["lags"]
    lapse_p99 = p99([float(x) for x in lags])
    print(
        f"mass silence: {r['silenced']} monitors stopped, {len(lags)} lapses recorded, lag p50 "
        f"{sorted(lags)[len(lags) // 2] if lags else float('nan')} ms, p99 {lapse_p99:.0f} ms, "
        f"max {max(lags) if lags else float('nan')} ms"
    )
    rss_base, rss_full = r["rss"]
    print(
        f"leader RSS {rss_base / 1024:.0f} MB at {active_base} active, {rss_full / 1024:.0f} MB "
        f"at {active_full}: {r['per_update_kb']:.1f} KB per active update"
    )
    rehydrate_s, rehydrated, stored = r["rehydrate"]
    bare_s, znodes = r["bare"]
    print(
        f"rehydrate: {rehydrate_s:.2f} s for {rehydrated} active updates ({stored} stored); bare "
        f"pipelined read of the same {znodes} znodes {bare_s:.2f} s ({rehydrate_s / bare_s:.1f}x)"
    )
    goals = [
        (f"heartbeats/s >= {args.rate}", rate.get(FULL, 0) >= 0.95 * args.rate),
        ("turn ratio <= 2", ratio <= 2),
        ("lapse p99 <= 100 ms", lapse_p99 <= 100),
        ("rehydrate <= 10 s", rehydrate_s <= 10),
    ]
    print("goals: " + "; ".join(f"{g} {'met' if ok else 'MISSED'}" for g, ok in goals))
    print(f"run took {r['elapsed']:.0f} s")
    print(
        f"scale: {n} updates, {rate.get(FULL, 0):.0f} heartbeats/s p99 {beat_p99.get(FULL, 0):.1f} "
        f"ms, turn ratio {ratio:.2f}, lapse p99 {lapse_p99:.0f} ms, {r['per_update_kb']:.1f} "
        f"KB/update, rehydrate {rehydrate_s:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=10_000, help="active updates (N)")
    parser.add_argument("--baseline", type=int, default=100, help="active updates at baseline")
    parser.add_argument("--rate", type=int, default=10_000, help="heartbeats/s in all")
    parser.add_argument("--workers", type=int, default=4, help="heartbeat processes")
    parser.add_argument("--connections", type=int, default=8, help="connections per process")
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="per measurement window; at least the heartbeat timeout, or the lease re-plans of "
        "updates created together can all fall outside it",
    )
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before a window")
    parser.add_argument("--silence", type=int, default=1000, help="monitors silenced at once")
    parser.add_argument("--heartbeat-timeout-ms", type=int, default=20_000)
    parser.add_argument(
        "--instance-seconds", type=float, default=40.0, help="until a new instance is healthy"
    )
    parser.add_argument("--time-limit", type=float, default=1200.0, help="seconds, then stop")
    args = parser.parse_args()
    if args.updates < 2 or args.baseline < 1 or args.rate < 1:
        parser.error("--updates must be at least 2, --baseline and --rate at least 1")
    configure_logging("warning", "console", stream=sys.stderr)

    def stop(*_: Any) -> None:  # unwinds like Ctrl-C, so every finally stops what it started
        raise SystemExit(143)

    def out_of_time(*_: Any) -> None:
        raise BenchStopped(f"--time-limit {args.time_limit:g} s reached")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(args.time_limit) + 60)  # the waits check the limit; this is the backstop
    with tempfile.TemporaryDirectory(prefix=f"pulsegate-scale-{uuid.uuid4().hex[:6]}-") as tmp:
        try:
            run(args, Path(tmp))
        except BenchStopped as e:
            raise SystemExit(f"scale: stopped: {e}") from None


if __name__ == "__main__":
    main()
