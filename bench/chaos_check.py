"""The invariants of bench/chaos.py, checked from what a client sees: the instances' own log of
starts and stops, the monitor's log of heartbeats, the update results from the API, and the
process table.

- an update's action (the stop of an instance about to get another version, the start of a new
  version) happens only while a heartbeat younger than the timeout was acknowledged, and never
  while the update is paused;
- a pause survives a failover;
- every update ends ROLLED_FORWARD with each instance updated exactly once;
- no instance ever runs twice (also: no copy finds its port held), none is left after the job is
  killed, and at the end each instance runs once, at the last version;
- no scheduler exits on its own (a ZooKeeper outage included).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

ACKED = ("OK", "PAUSED")


@dataclasses.dataclass
class Beat:
    key: str
    sent: float
    answered: float
    answer: str  # a HeartbeatAnswer name, or "error <type>"


@dataclasses.dataclass
class Window:
    """One update, from the call that started it to the poll that saw it terminal."""

    key: str
    start: float
    end: float | None
    version: str
    status: str
    events: dict[str, int]  # "<instance>:<action>" -> count


class Checker:
    """`slack_s` is how long after the leader's decision an instance may log it (the driver's
    tick, a spawn on a loaded machine); the gate must have been fresh that much earlier."""

    def __init__(self, instances: int, timeout_s: float, slack_s: float = 1.5) -> None:
        self.instances = instances
        self.timeout_s = timeout_s
        self.slack_s = slack_s
        self.violations: list[tuple[str, str]] = []
        self._seen: set[object] = set()
        self.gated = 0  # update actions checked against the gate

    def violation(self, kind: str, detail: str) -> None:
        self.violations.append((kind, detail))

    def sample(self, procs: dict[int, dict[str, str]], final: bool = False) -> None:
        """One look at the process table: no instance id twice; at the end, each once."""
        by_id: dict[str, list[int]] = defaultdict(list)
        for pid, env in procs.items():
            by_id[env.get("PULSEGATE_INSTANCE_ID", "?")].append(pid)
        for instance, pids in by_id.items():
            seen = ("duplicate", instance, tuple(sorted(pids)))
            if len(pids) > 1 and seen not in self._seen:
                self._seen.add(seen)
                self.violation("duplicate", f"instance {instance} runs as pids {sorted(pids)}")
        if final:
            expected = [str(i) for i in range(self.instances)]
            versions = {env.get("VERSION") for env in procs.values()}
            if sorted(by_id) != expected or len(versions) != 1:
                found = sorted(
                    (env.get("PULSEGATE_INSTANCE_ID"), env.get("VERSION")) for env in procs.values()
                )
                self.violation("not_converged", f"running (id, version): {found}")

    def check_logs(
        self,
        lines: list[dict[str, Any]],
        beats: list[Beat],
        windows: list[Window],
        pauses: list[tuple[str, float, float]],
    ) -> None:
        for window in windows:
            self._check_result(window)
        acks: dict[str, list[float]] = defaultdict(list)
        for beat in beats:
            if beat.answer in ACKED:
                acks[beat.key].append(beat.answered)
        for t, what in self._gated(lines):
            self.gated += 1
            window = next((w for w in reversed(windows) if w.start <= t), None)
            if window is None or (window.end is not None and t > window.end + self.slack_s):
                self.violation("action_outside_update", f"{what} at {t:.2f}")
                continue
            fresh = [a for a in acks[window.key] if a <= t]
            if not fresh or t - max(fresh) > self.timeout_s + self.slack_s:
                age = "never" if not fresh else f"{t - max(fresh):.2f} s before"
                self.violation("stale_heartbeat_action", f"{what} at {t:.2f}; last ack {age}")
            for key, acked, resumed in pauses:
                if key == window.key and acked + self.slack_s < t < resumed:
                    self.violation("action_while_paused", f"{what} at {t:.2f} ({key})")

    def _check_result(self, window: Window) -> None:
        if window.end is None:
            return  # still running at the end: reported as update_stuck
        if window.status != "ROLLED_FORWARD":
            self.violation("update_not_clean", f"{window.key} ended {window.status}")
        counts = [window.events.get(f"{i}:INSTANCE_UPDATING", 0) for i in range(self.instances)]
        if counts != [1] * self.instances:
            self.violation("update_not_clean", f"{window.key} updated instances {counts} times")

    def _gated(self, lines: list[dict[str, Any]]) -> list[tuple[float, str]]:
        """The update's actions as the instances logged them: a stop followed by a start of
        another version, and that start. A restart at the same version is the reconciler's."""
        by_id: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for line in sorted(lines, key=lambda e: float(e["t"])):
            if line["event"] == "port_in_use":
                self.violation("duplicate", f"instance {line['id']} found its port held: {line}")
            by_id[int(line["id"])].append(line)
        out: list[tuple[float, str]] = []
        for instance, events in by_id.items():
            starts = [e for e in events if e["event"] == "start"]
            for i, start in enumerate(starts[1:], 1):
                if start["version"] != starts[i - 1]["version"]:
                    out.append(
                        (float(start["t"]), f"instance {instance} start v{start['version']}")
                    )
            for stop in (e for e in events if e["event"] == "stop"):
                after = next((s for s in starts if s["t"] > stop["t"]), None)
                if after is not None and after["version"] != stop["version"]:
                    out.append((float(stop["t"]), f"instance {instance} stop v{stop['version']}"))
        return sorted(out)

    def describe(self) -> list[str]:
        lines = [f"checked {self.gated} update actions against the heartbeat gate"]
        lines += [f"violation {kind}: {detail}" for kind, detail in self.violations]
        return lines
