"""Heartbeat load for bench/scale.py: one worker process drives a few persistent thriftpy2
connections, one thread each, every thread pacing its calls to a fixed rate over the updates it
was given (round robin). Keys arrive while it runs (the bench creates updates in the
background), the main process moves a shared phase number (calls and latencies are kept per
phase) and may silence the updates whose index is below a shared bound (the mass silence).

Open-loop pacing: a thread that falls behind does not burst to catch up by more than a second,
so the rate reported is what the server sustained, not a backlog drained later."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import signal
import threading
import time
from typing import Any

from thriftpy2.rpc import make_client

TIMEOUT_MS = 30_000
MAX_BEHIND_S = 1.0
_PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> None:
    """Ask the kernel to SIGTERM this process when `parent` (the bench) dies."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


class Shared:
    """What the main process steers every worker with (multiprocessing values and events)."""

    def __init__(self, ctx: Any) -> None:
        self.phase = ctx.Value("i", 0, lock=False)
        self.silenced_below = ctx.Value("i", -1, lock=False)
        self.stop = ctx.Event()
        self.throttle = ctx.Value("d", 1.0, lock=False)  # share of the full rate to beat at


def run_worker(
    port: int,
    connections: int,
    rate_per_connection: float,
    keys: Any,
    shared: Shared,
    results: Any,
    parent: int,
    deadline: float,
) -> None:
    """The worker process. `keys` is this worker's queue of (index, role, environment, name, id)
    lists, ended by None; `parent` is the bench's pid; `deadline` is a wall time (time.time())
    after which it stops anyway. It puts one result on `results`: per phase, the latencies
    (seconds) of its calls, plus the counts of answers that were not OK and of failed calls."""
    die_with(parent)
    from api.idl import Service
    from api.idl import pulsegate as t

    owned: list[list[tuple[int, Any]]] = [[] for _ in range(connections)]
    calls: list[dict[int, list[float]]] = [{} for _ in range(connections)]
    not_ok = [0] * connections
    failed = [0] * connections

    def receive() -> None:
        turn = 0
        while not shared.stop.is_set():
            try:
                batch = keys.get(timeout=0.2)
            except queue.Empty:
                continue
            if batch is None:
                return
            for index, role, environment, name, update_id in batch:
                job = t.JobKey(role=role, environment=environment, name=name)
                owned[turn % connections].append((index, t.JobUpdateKey(job=job, id=update_id)))
                turn += 1

    def beat(i: int) -> None:
        client = make_client(Service, "127.0.0.1", port, timeout=TIMEOUT_MS)
        mine, latencies = owned[i], calls[i]
        interval = 1.0 / rate_per_connection
        clock = time.perf_counter
        ok = t.HeartbeatStatus.OK
        position = 0
        next_at = clock()
        try:
            while not shared.stop.is_set() and time.time() < deadline:
                if not mine:
                    time.sleep(0.05)
                    next_at = clock()
                    continue
                skipped, key = pick(mine, position, shared.silenced_below.value)
                position += skipped + 1
                now = clock()
                if next_at > now:
                    time.sleep(next_at - now)
                elif now - next_at > MAX_BEHIND_S:
                    next_at = now
                next_at += interval / max(shared.throttle.value, 1e-3)
                if key is None:
                    continue  # every update of this connection is silenced
                phase = shared.phase.value
                started = clock()
                try:
                    answer = client.heartbeatJobUpdate(key, None)
                except Exception:
                    failed[i] += 1
                    client.close()
                    time.sleep(0.1)
                    client = make_client(Service, "127.0.0.1", port, timeout=TIMEOUT_MS)
                    continue
                latencies.setdefault(phase, []).append(clock() - started)
                if answer.status != ok:
                    not_ok[i] += 1
        finally:
            client.close()

    def pick(mine: list[tuple[int, Any]], position: int, silenced_below: int) -> tuple[int, Any]:
        """The next update to beat from `position` on and how many silenced ones were skipped
        to reach it (their monitor has gone quiet; the others keep the full rate)."""
        for skipped in range(len(mine)):
            index, key = mine[(position + skipped) % len(mine)]
            if index >= silenced_below:
                return skipped, key
        return len(mine), None

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    threads = [threading.Thread(target=beat, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged: dict[int, list[float]] = {}
    for per_phase in calls:
        for phase, found in per_phase.items():
            merged.setdefault(phase, []).extend(found)
    results.put((os.getpid(), merged, sum(not_ok), sum(failed)))
