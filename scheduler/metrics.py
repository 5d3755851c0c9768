"""Every Prometheus metric pulsegate exports, on one injected registry, so that each test can
read a fresh one and nothing registers globally."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

from scheduler.gate_metrics import GateCollector

ZK_STATES = ("connected", "suspended", "lost")
STORAGE_RESULTS = ("ok", "stale", "not_leader", "error")
CONNECTION_CAPS = ("max_connections", "max_connections_per_peer")
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Count:
    """One label value's count. `inc` is `next` on an itertools.count: a single C call, atomic
    under the GIL, with no lock (prometheus_client's Counter takes one per increment)."""

    __slots__ = ("_count", "inc")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.inc = functools.partial(next, self._count)

    def value(self) -> int:
        return int(self._count.__reduce__()[1][0])


class FastCounter:
    """A counter with one label for the hottest path (heartbeats), exported as a normal
    Prometheus counter through a custom collector."""

    def __init__(self, name: str, doc: str, label: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.doc = doc
        self.label = label
        self._children: dict[str, _Count] = {}
        registry.register(self)

    def labels(self, **labels: str) -> _Count:
        value = labels[self.label]
        child = self._children.get(value)
        if child is None:
            child = self._children.setdefault(value, _Count())
        return child

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for value, child in list(self._children.items()):
            family.add_metric([value], child.value())
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.doc, labels=[self.label])


class Metrics:
    """The scheduler's metrics (prefix `pulsegate_`); the small methods keep label names in
    one place. Each attribute is the metric object named like the metric without the prefix
    (`errors_total`), for anything the methods don't cover."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"pulsegate_{name}", doc, labels, registry=registry)

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(f"pulsegate_{name}", doc, labels, registry=registry)

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(f"pulsegate_{name}", doc, buckets=_SECONDS, registry=registry)

        self.updates_active = gauge("updates_active", "Updates not yet in a terminal status.")
        self.update_transitions_total = counter(
            "update_transitions_total", "Update status changes, by new status.", ("status",)
        )
        self.instance_events_total = counter(
            "instance_events_total", "Instance events recorded, by action.", ("action",)
        )
        self.heartbeats_total = FastCounter(
            "pulsegate_heartbeats_total",
            "Heartbeats received, by the answer given.",
            "answer",
            registry,
        )
        self.leader = gauge("leader", "1 while this node is the acting leader.")
        self.zk_connection_state = gauge(
            "zk_connection_state", "1 for the current ZooKeeper connection state.", ("state",)
        )
        self.storage_writes_total = counter(
            "storage_writes_total", "ZooKeeper writes, by result.", ("result",)
        )
        self.storage_write_seconds = histogram(
            "storage_write_seconds", "Duration of ZooKeeper writes."
        )
        self.step_seconds = histogram("step_seconds", "Duration of one engine step.")
        self.rehydrate_seconds = gauge(
            "rehydrate_seconds", "How long the last leader start took to load state."
        )
        self.driver_actions_total = counter(
            "driver_actions_total", "Actions sent to the driver, by kind.", ("kind",)
        )
        self.errors_total = counter("errors_total", "Errors, by reason.", ("reason",))
        self.api_requests_total = counter(
            "api_requests_total", "API calls, by method and result.", ("method", "result")
        )
        self.api_connections_open = gauge(
            "api_connections_open", "API connections open now (served by a thread each)."
        )
        self.api_connections_refused_total = counter(
            "api_connections_refused_total",
            "API connections closed at accept, by the cap they met.",
            ("reason",),
        )
        for reason in CONNECTION_CAPS:
            self.api_connections_refused_total.labels(reason=reason)
        # Per-update gate gauges and active updates by status, read from the leader at scrape.
        self.gates = GateCollector()
        registry.register(self.gates)
        # Known label values start at 0, so dashboards see the series before the first event.
        for result in STORAGE_RESULTS:
            self.storage_writes_total.labels(result=result)
        for state in ZK_STATES:  # all 0 until the first connection event
            self.zk_connection_state.labels(state=state).set(0)

    def set_leader(self, is_leader: bool) -> None:
        self.leader.set(1 if is_leader else 0)

    def set_zk_state(self, state: str) -> None:
        """Set 1 for `state` and 0 for the others; `state` is one of ZK_STATES."""
        if state not in ZK_STATES:
            raise ValueError(f"unknown ZooKeeper state {state!r}")
        for known in ZK_STATES:
            self.zk_connection_state.labels(state=known).set(1 if known == state else 0)

    def set_updates_active(self, count: int) -> None:
        self.updates_active.set(count)

    def update_transition(self, status: str) -> None:
        self.update_transitions_total.labels(status=status).inc()

    def instance_event(self, action: str) -> None:
        self.instance_events_total.labels(action=action).inc()

    def heartbeat(self, answer: str) -> None:
        self.heartbeats_total.labels(answer=answer).inc()

    def storage_write(self, result: str, seconds: float | None = None) -> None:
        """Count a write (result in STORAGE_RESULTS) and, when timed, observe its duration."""
        self.storage_writes_total.labels(result=result).inc()
        if seconds is not None:
            self.storage_write_seconds.observe(seconds)

    def step(self, seconds: float) -> None:
        self.step_seconds.observe(seconds)

    def set_rehydrate_seconds(self, seconds: float) -> None:
        self.rehydrate_seconds.set(seconds)

    def driver_action(self, kind: str) -> None:
        self.driver_actions_total.labels(kind=kind).inc()

    def error(self, reason: str) -> None:
        self.errors_total.labels(reason=reason).inc()

    def api_request(self, method: str, result: str) -> None:
        self.api_requests_total.labels(method=method, result=result).inc()

    def api_connection_refused(self, reason: str) -> None:
        """Count a connection closed at accept; `reason` is one of CONNECTION_CAPS."""
        self.api_connections_refused_total.labels(reason=reason).inc()
