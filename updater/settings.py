"""Update settings (DESIGN §4) and their validation. Every error names the field and the rule."""

from __future__ import annotations

import enum

import attrs

from updater.errors import InvalidRequest
from updater.ranges import Range

MAX_GROUP_SIZE = 100_000
MAX_VARIABLE_SIZES = 1_000
MAX_FAILURES = 100_000
MAX_MIN_WAIT_MS = 24 * 3600 * 1000
MAX_HEARTBEAT_TIMEOUT_MS = 24 * 3600 * 1000
MAX_SCOPE_RANGES = 10_000
MAX_MONITORS = 100
MAX_MONITOR_NAME = 128
MAX_BLOCKED_MS = 7 * 24 * 3600 * 1000


class StrategyKind(enum.Enum):
    QUEUE = "queue"
    BATCH = "batch"
    VARIABLE_BATCH = "variableBatch"


@attrs.frozen(cache_hash=True)
class Strategy:
    """`queue(n)`: up to n in flight, refilled as each finishes. `batch(n)`: the next n start
    when none are in flight. `variableBatch([n1, n2, ...])`: batch k has size nk, the last
    repeats."""

    kind: StrategyKind
    sizes: tuple[int, ...]

    @classmethod
    def queue(cls, size: int = 1) -> Strategy:
        return cls(StrategyKind.QUEUE, (size,))

    @classmethod
    def batch(cls, size: int) -> Strategy:
        return cls(StrategyKind.BATCH, (size,))

    @classmethod
    def variable_batch(cls, sizes: list[int] | tuple[int, ...]) -> Strategy:
        return cls(StrategyKind.VARIABLE_BATCH, tuple(sizes))

    @property
    def is_batched(self) -> bool:
        return self.kind is not StrategyKind.QUEUE

    def batch_size(self, index: int) -> int:
        """Size of the `index`-th batch (0-based); the last listed size repeats."""
        return self.sizes[min(index, len(self.sizes) - 1)]

    def __str__(self) -> str:
        if self.kind is StrategyKind.VARIABLE_BATCH:
            return f"variableBatch({list(self.sizes)})"
        return f"{self.kind.value}({self.sizes[0]})"


class HeartbeatResume(enum.Enum):
    """Who may unblock an update that blocked after heartbeats were lost (DESIGN §3 rule 3)."""

    AUTO = "AUTO"
    OPERATOR = "OPERATOR"


class OnBlocked(enum.Enum):
    """What the leader does once an update has awaited pulse for `maxBlockedMs` (rule 14)."""

    PAUSE = "PAUSE"
    ABORT = "ABORT"
    ROLL_BACK = "ROLL_BACK"


@attrs.frozen(cache_hash=True)
class Settings:
    strategy: Strategy = Strategy.queue(1)
    auto_pause_after_batch: bool = False
    max_per_instance_failures: int = 0
    max_failed_instances: int = 0
    min_wait_in_instance_running_ms: int = 30_000
    rollback_on_failure: bool = True
    update_only_these_instances: tuple[Range, ...] = ()
    heartbeat_timeout_ms: int = 0
    heartbeat_resume: HeartbeatResume = HeartbeatResume.AUTO
    heartbeat_quorum: int = 1
    heartbeat_monitors: tuple[str, ...] = ()
    heartbeat_ack_batches: bool = False
    max_blocked_ms: int = 0
    on_blocked: OnBlocked = OnBlocked.PAUSE

    @property
    def is_coordinated(self) -> bool:
        return self.heartbeat_timeout_ms > 0


def _int_in(value: object, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(field, "must be an integer")
    if value < low:
        raise InvalidRequest(field, f"must be >= {low}, got {value}")
    if value > high:
        raise InvalidRequest(field, f"must be <= {high}, got {value}")
    return value


def validate_settings(settings: Settings, field: str = "settings") -> Settings:
    """Check settings from untrusted input. The instance scope is checked against the job by the
    diff, which knows which ids exist."""
    strategy = settings.strategy
    if not isinstance(strategy.kind, StrategyKind):
        raise InvalidRequest(f"{field}.strategy", "unknown strategy")
    if not strategy.sizes:
        raise InvalidRequest(f"{field}.strategy.sizes", "must list at least one size")
    if strategy.kind is not StrategyKind.VARIABLE_BATCH and len(strategy.sizes) != 1:
        raise InvalidRequest(f"{field}.strategy.sizes", f"{strategy.kind.value} takes one size")
    if len(strategy.sizes) > MAX_VARIABLE_SIZES:
        raise InvalidRequest(
            f"{field}.strategy.sizes", f"must list at most {MAX_VARIABLE_SIZES} sizes"
        )
    for i, size in enumerate(strategy.sizes):
        _int_in(size, f"{field}.strategy.sizes[{i}]", 1, MAX_GROUP_SIZE)
    if settings.auto_pause_after_batch and not strategy.is_batched:
        raise InvalidRequest(
            f"{field}.autoPauseAfterBatch", "needs a batch or variableBatch strategy"
        )
    _int_in(settings.max_per_instance_failures, f"{field}.maxPerInstanceFailures", 0, MAX_FAILURES)
    _int_in(settings.max_failed_instances, f"{field}.maxFailedInstances", 0, MAX_FAILURES)
    _int_in(
        settings.min_wait_in_instance_running_ms,
        f"{field}.minWaitInInstanceRunningMs",
        0,
        MAX_MIN_WAIT_MS,
    )
    _int_in(
        settings.heartbeat_timeout_ms, f"{field}.heartbeatTimeoutMs", 0, MAX_HEARTBEAT_TIMEOUT_MS
    )
    if not isinstance(settings.heartbeat_resume, HeartbeatResume):
        raise InvalidRequest(f"{field}.heartbeatResume", "must be AUTO or OPERATOR")
    _validate_gates(settings, field)
    if len(settings.update_only_these_instances) > MAX_SCOPE_RANGES:
        raise InvalidRequest(
            f"{field}.updateOnlyTheseInstances", f"must have at most {MAX_SCOPE_RANGES} ranges"
        )
    for r in settings.update_only_these_instances:
        if r.first < 0 or r.first > r.last:
            raise InvalidRequest(
                f"{field}.updateOnlyTheseInstances", f"invalid range {r.first}-{r.last}"
            )
    return settings


def _validate_gates(settings: Settings, field: str) -> None:
    """Rules 12-14: each gate needs a coordinated update, and the quorum must be reachable."""
    quorum = _int_in(settings.heartbeat_quorum, f"{field}.heartbeatQuorum", 1, MAX_MONITORS)
    monitors = settings.heartbeat_monitors
    if len(monitors) > MAX_MONITORS:
        raise InvalidRequest(f"{field}.heartbeatMonitors", f"must list at most {MAX_MONITORS}")
    for i, name in enumerate(monitors):
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_MONITOR_NAME:
            raise InvalidRequest(
                f"{field}.heartbeatMonitors[{i}]",
                f"must be a non-blank name of at most {MAX_MONITOR_NAME} characters",
            )
        if name in monitors[:i]:
            raise InvalidRequest(f"{field}.heartbeatMonitors[{i}]", f"{name!r} is listed twice")
    if monitors and quorum > len(monitors):
        raise InvalidRequest(
            f"{field}.heartbeatQuorum",
            f"must be at most the {len(monitors)} name(s) in heartbeatMonitors, got {quorum}",
        )
    if not isinstance(settings.heartbeat_ack_batches, bool):
        raise InvalidRequest(f"{field}.heartbeatAckBatches", "must be true or false")
    if settings.heartbeat_ack_batches and not settings.strategy.is_batched:
        raise InvalidRequest(
            f"{field}.heartbeatAckBatches", "needs a batch or variableBatch strategy"
        )
    _int_in(settings.max_blocked_ms, f"{field}.maxBlockedMs", 0, MAX_BLOCKED_MS)
    if not isinstance(settings.on_blocked, OnBlocked):
        raise InvalidRequest(f"{field}.onBlocked", "must be PAUSE, ABORT or ROLL_BACK")
    if settings.is_coordinated:
        return
    used = [
        ("heartbeatQuorum", quorum != 1),
        ("heartbeatMonitors", bool(monitors)),
        ("heartbeatAckBatches", settings.heartbeat_ack_batches),
        ("maxBlockedMs", settings.max_blocked_ms != 0),
    ]
    for name, is_set in used:
        if is_set:
            raise InvalidRequest(
                f"{field}.{name}", "needs heartbeatTimeoutMs > 0 (a coordinated update)"
            )
