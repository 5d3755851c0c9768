"""Measuring helpers for bench/scale.py: the leader loop's turns timed from outside, the bare
read a takeover is compared with, and small readings (RSS, counters, percentiles)."""

from __future__ import annotations

import time
from typing import Any

from kazoo.client import KazooClient
from prometheus_client import CollectorRegistry

from scheduler.leader import LeaderLoop
from scheduler.paths import Paths, parse_job_node
from updater.engine import UpdateRun
from updater.keys import UpdateKey


class TurnProbe:
    """Times every turn of a running leader loop by wrapping its `_turn` and `_advance` on
    the instance (the loop looks both up on `self` each time, so leader.py stays as it is).

    A turn's work is what it was handed: commands, heartbeats that unblock an update, and
    updates planned (`_advance`, dirty ones and timers due). Idle turns (no work: the loop's
    one-second wake-up) are not kept. Samples go to the current `phase`."""

    def __init__(self, loop: LeaderLoop) -> None:
        self.phase = 0
        self.turns: dict[int, list[tuple[float, int]]] = {}
        self._work = 0
        turn, advance = loop._turn, loop._advance

        def counted_advance(run: UpdateRun) -> None:
            self._work += 1
            advance(run)

        def timed_turn() -> None:
            with loop._cv:
                self._work = len(loop._commands) + len(loop._unblock)
            started = time.perf_counter()
            try:
                turn()
            finally:
                elapsed = time.perf_counter() - started
                if self._work and loop.is_serving:
                    self.turns.setdefault(self.phase, []).append((elapsed, self._work))

        loop._turn = timed_turn  # type: ignore[method-assign]
        loop._advance = counted_advance  # type: ignore[method-assign]

    def samples(self, phase: int) -> list[tuple[float, int]]:
        return self.turns.get(phase, [])


def p99(values: list[float]) -> float:
    """The 99th percentile (nearest rank); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def rss_kb() -> int:
    """This process's resident set size, in KB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def counter_total(registry: CollectorRegistry, name: str) -> float:
    """The sum of a counter's samples over all its labels."""
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == f"{name}" or sample.name == f"{name}_total":
                total += sample.value
    return total


def bare_read(client: KazooClient, root: str) -> tuple[float, int]:
    """The floor for a takeover's reads: every znode it reads (active-update locks, each active
    update's definition, status and event child lists and children, every job), found first
    and then read in one pipelined round of async gets, timed. Returns (seconds, znodes)."""
    paths = Paths(root)
    locks = client.get_children(paths.locks)
    lock_paths = [f"{paths.locks}/{name}" for name in locks]
    keys = []
    pending = [client.get_async(p) for p in lock_paths]
    for name, result in zip(locks, pending, strict=True):
        job = parse_job_node(name)
        if job is not None:
            keys.append(UpdateKey(job, result.get()[0].decode()))
    lists = [paths.status(k) for k in keys] + [paths.events(k) for k in keys]
    children = [client.get_children_async(p) for p in lists]
    leaves = [f"{p}/{c}" for p, r in zip(lists, children, strict=True) for c in r.get()]
    jobs = [f"{paths.jobs}/{name}" for name in client.get_children(paths.jobs)]
    gets = lock_paths + [paths.update(k) for k in keys] + leaves + jobs
    started = time.perf_counter()
    results: list[Any] = [client.get_children_async(p) for p in [paths.locks, paths.jobs, *lists]]
    results += [client.get_async(p) for p in gets]
    for result in results:
        result.get()
    return time.perf_counter() - started, len(results)
