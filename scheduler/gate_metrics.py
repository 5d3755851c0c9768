"""Per-update gate gauges (issue 10, rule 15), computed at scrape time from the leader's
memory, so a series exists exactly while its coordinated update is active here: an update that
ends drops out of the next scrape, and cardinality stays bounded by the active updates. The
leader loop's turns pay nothing for them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import GaugeMetricFamily, Metric

from updater.gate import gate_state
from updater.status import ACTIVE

if TYPE_CHECKING:
    from scheduler.clock import Clock
    from updater.engine import UpdateRun
    from updater.keys import UpdateKey
    from updater.pulse import PulseMonitor

LABELS = ["job", "update"]
_FAMILIES = (
    ("pulsegate_update_heartbeat_age_seconds",
     "Seconds since a coordinated update's last heartbeat (absent before the first)."),
    ("pulsegate_update_gate_open", "1 while a coordinated update's gate lets it act, else 0."),
    ("pulsegate_update_blocked_seconds",
     "Seconds a coordinated update's gate has been closed (0 while open)."),
)  # fmt: skip
BY_STATUS = ("pulsegate_updates_by_status", "Active updates on this leader, by status.")


class GateSource(Protocol):
    """What the collector reads of the leader loop (`scheduler.leader.LeaderLoop`)."""

    runs: dict[UpdateKey, UpdateRun]
    pulse: PulseMonitor
    clock: Clock

    @property
    def is_serving(self) -> bool: ...


class GateCollector:
    """A custom collector; `source` is set by the leader loop once it exists."""

    def __init__(self) -> None:
        self.source: GateSource | None = None

    def describe(self) -> Iterator[Metric]:
        for name, doc in _FAMILIES:
            yield GaugeMetricFamily(name, doc, labels=LABELS)
        yield GaugeMetricFamily(*BY_STATUS, labels=["status"])

    def collect(self) -> Iterator[Metric]:
        age, gate_open, blocked = (GaugeMetricFamily(n, d, labels=LABELS) for n, d in _FAMILIES)
        by_status = GaugeMetricFamily(*BY_STATUS, labels=["status"])
        source = self.source
        counts = dict.fromkeys(sorted(ACTIVE), 0)  # every active status, 0 included
        if source is not None and source.is_serving:
            now = source.clock.now()
            for key, run in list(source.runs.items()):  # a copy: the loop thread changes it
                status = run.status
                if status in counts:
                    counts[status] += 1
                state = gate_state(run, source.pulse.get(key), now)
                if state is None:
                    continue
                labels = [str(key.job), key.id]
                beat_age = source.pulse.age_ms(key, now)
                if beat_age is not None:
                    age.add_metric(labels, beat_age / 1000)
                gate_open.add_metric(labels, 1 if state.open else 0)
                closed = 0 if state.open else max(0, now - state.since_ms)
                blocked.add_metric(labels, closed / 1000)
        for status, count in counts.items():
            by_status.add_metric([status.name], count)
        yield from (age, gate_open, blocked, by_status)
