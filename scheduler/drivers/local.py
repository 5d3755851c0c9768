"""The local driver: instances are child processes of the scheduler's host, kept at their
desired config by a reconciler thread.

The updater acts only by changing desired state (`apply`); the reconciler makes the processes
match: it starts what is missing, restarts what exited (with capped exponential backoff; these
restarts are what `maxPerInstanceFailures` counts), replaces what runs another config, stops
what is no longer wanted (SIGTERM to the process group, SIGKILL after the config's grace), and
health-checks what runs. Only the leader's driver acts; others only observe.

An instance is over only when its process group is empty: whatever its leader leaves behind,
after an exit or a stop, gets SIGTERM and then SIGKILL after the grace, and nothing starts in
its place until then (a leftover would hold the instance's port).

A new leader adopts what runs: every process is recorded durably (pid, start time, boot id,
config digest, port) when it starts, and `takeover` keeps each recorded process that is still
the same process and runs the desired config. A healthy instance is never killed by a restart.
The records, not this driver's memory, are the truth at a takeover: a scheduler that led
before may hold a view another leader has since changed (it replaced our processes with its
own), so the view is rebuilt from the records, and a copy of ours the records do not name is
stopped as a duplicate.

Threads: the reconciler thread steps instances and writes the records; the leader loop calls
the Driver methods. `_lock` guards the instances and is never held across ZooKeeper I/O: record
writes are queued under it and made after it is released.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import structlog

from scheduler.clock import Clock, StepWatch, offset_source
from scheduler.codec import config_digest
from scheduler.drivers.health import Streak, Verdict, run_check
from scheduler.drivers.instance import Instance, backoff_delay
from scheduler.drivers.process import (
    SCOPE_VAR,
    GroupScan,
    ProcessGroup,
    ProcessId,
    cap_log,
    free_port,
    identify,
    spawn,
)
from scheduler.drivers.rebuild import (
    DIGEST_VAR,
    INSTANCE_VAR,
    JOB_VAR,
    Key,
    Rebuild,
    find_processes,
    ident,
    plan,
    still_runs,
)
from scheduler.drivers.records import InstanceRecord, InstanceRecords, RecordQueue
from updater.driver import Action, ActionKind, InstanceState, ObservedInstance
from updater.errors import PulsegateError
from updater.keys import JobKey
from updater.task import TaskConfig

log = structlog.get_logger(__name__)
S = InstanceState
LIVE = (S.STARTING, S.RUNNING, S.HEALTHY)


class LocalDriver:
    """`stable_after_s` (default: the backoff cap) is how long an instance must stay healthy,
    or merely running if it has no health check, before its restart backoff starts over."""

    def __init__(
        self,
        clock: Clock,
        base_dir: Path,
        log_dir: Path,
        records: InstanceRecords | None = None,
        *,
        log_limit_bytes: int = 10 * 1024 * 1024,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        health_workers: int = 16,
        stable_after_s: float | None = None,
    ) -> None:
        self.clock = clock
        # `healthy_since` is a timestamp on the service clock, which follows wall steps; the
        # engine measures min-wait from it, so a step moves every one of them by the same amount
        # (as the pulse's leases and the agenda's timers move): a step is not time passing.
        self._steps = StepWatch(offset_source(clock))
        self.base_dir = base_dir
        self.log_dir = log_dir
        self.records = records
        self._scope = records.scope if records is not None else None
        self.log_limit_bytes = log_limit_bytes
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.stable_after_ms = int(
            1000 * (backoff_cap_s if stable_after_s is None else stable_after_s)
        )
        self.acting = False
        self._instances: dict[Key, Instance] = {}
        self._strays: list[Instance] = []  # copies no record names, being stopped
        self._due: list[tuple[Instance, TaskConfig]] = []  # to start after this tick's lock
        self._writes = RecordQueue(records) if records is not None else None
        # Serialises record I/O (the queue's flush, a takeover's read, a start's leadership
        # check). Taken before `_lock`, never while holding it.
        self._records_io = self._writes.io if self._writes is not None else threading.Lock()
        self._observed: dict[JobKey, dict[int, ObservedInstance]] = {}
        self._listener: Callable[[JobKey, int], None] | None = None
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = False
        self._checks = ThreadPoolExecutor(health_workers, thread_name_prefix="health")
        # One job's checks may fill at most half the pool: a job whose checks hang (timeouts go
        # up to an hour) must not hold back every other job's verdicts.
        self._check_share = max(1, health_workers // 2)
        self._checks_running: dict[JobKey, int] = {}
        self._results: list[tuple[Instance, int, bool, str]] = []
        self._next_log_cap = 0.0
        self._scan: GroupScan | None = None  # at most one pass over /proc per tick
        self._thread = threading.Thread(target=self._run, name="local-driver", daemon=True)
        self._thread.start()

    # -- the Driver protocol -------------------------------------------------------------------

    def instances(self, job: JobKey) -> Mapping[int, ObservedInstance]:
        with self._lock:
            self._follow_step()
            return dict(self._observed.get(job, {}))

    def apply(self, job: JobKey, actions: Sequence[Action]) -> None:
        with self._lock:
            for action in actions:
                inst = self._instance(job, action.instance_id)
                inst.desired = None if action.kind is ActionKind.KILL else action.config
                inst.parked = False
        self._wake.set()

    def reconcile(self, job: JobKey, desired: Mapping[int, TaskConfig]) -> None:
        with self._lock:
            for instance_id, config in desired.items():
                self._instance(job, instance_id).desired = config
            for (j, instance_id), inst in self._instances.items():
                if j == job:
                    inst.parked = False
                    if instance_id not in desired:
                        inst.desired = None
        self._wake.set()

    def takeover(
        self,
        desired: Mapping[JobKey, Mapping[int, TaskConfig]],
        parked: AbstractSet[tuple[JobKey, int]] = frozenset(),
    ) -> None:
        """Rebuild what this driver knows from the records, then reconcile every job; recorded
        processes of jobs that no longer exist are stopped. Raises Unavailable, having changed
        nothing, if the records cannot be read: starting afresh would run every instance twice."""
        with self._records_io:  # an earlier term's write in flight lands before the read
            records = self.records.load() if self.records is not None else {}
            alive = {key: r for key, r in records.items() if still_runs(r)}
            found = find_processes(self._scope, self._log_path) if self._scope else {}
            with self._lock:
                # Dead records are deleted whether acting yet or not: takeover is the new
                # leader's call. What a dead process left behind is not signalled: its group id
                # may be someone else's by now.
                dead = [key for key in records if key not in alive]
                self._apply_rebuild(
                    plan(alive, dead, found, self._instances, self._strays), desired
                )
                for (job, instance_id), inst in self._instances.items():
                    inst.desired = desired.get(job, {}).get(instance_id)
                for job, instances in desired.items():
                    for instance_id, config in instances.items():
                        self._instance(job, instance_id).desired = config
                for job, instance_id in parked:  # as they are until the update acts (rule 8)
                    self._instance(job, instance_id).parked = True
        self._wake.set()

    def set_acting(self, acting: bool) -> None:
        self.acting = acting
        self._wake.set()

    def set_listener(self, listener: Callable[[JobKey, int], None] | None) -> None:
        self._listener = listener

    def stop(self) -> None:
        """Stop reconciling. Running instances are left running (a restart adopts them)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)
        self._checks.shutdown(wait=False, cancel_futures=True)
        if self._writes is not None:  # a record still queued would leave its process to nobody
            self._writes.flush(force=True)

    def pids(self, job: JobKey) -> dict[int, int]:
        """Live instance pids, for tests and tools."""
        with self._lock:
            return {
                i: inst.ident.pid
                for (j, i), inst in self._instances.items()
                if j == job and inst.ident is not None and inst.state in LIVE
            }

    # -- adoption ------------------------------------------------------------------------------

    def _apply_rebuild(
        self, rebuild: Rebuild, desired: Mapping[JobKey, Mapping[int, TaskConfig]]
    ) -> None:
        """Make a takeover's picture this driver's view (under `_lock`)."""
        if self._writes is not None:
            self._writes.clear()  # the last term's; the rebuild says what to record now
        for key in rebuild.forget:
            self._queue(key, None)
        self._observed.clear()
        self._instances = rebuild.keep
        for inst in self._instances.values():
            inst.published = ()  # publish it afresh
        for key, record in rebuild.adopt.items():
            self._adopt(record, desired.get(key[0], {}).get(key[1]))
        for record in rebuild.record:
            self._queue((record.job, record.instance_id), record)
            log.warning(
                "instance_found_unrecorded", job=str(record.job), instance=record.instance_id
            )
        for inst in rebuild.rerecord:
            self._record(inst)
        for inst in rebuild.strays:
            if inst.ident is not None and inst.is_alive():
                log.warning(
                    "instance_duplicate_found",
                    job=str(inst.job),
                    instance=inst.instance_id,
                    pid=inst.ident.pid,
                )
        self._strays += rebuild.strays

    def _adopt(self, record: InstanceRecord, wanted: TaskConfig | None) -> None:
        inst = self._instance(record.job, record.instance_id)
        inst.ident = ident(record)
        inst.group = ProcessGroup(record.pid)
        inst.port = record.port
        inst.log = Path(record.log)
        inst.started_at = time.monotonic()
        if wanted is not None and config_digest(wanted) == record.config_digest:
            inst.config = wanted
        else:  # runs something else: a stand-in config that differs from any desired one
            inst.config = TaskConfig(("<adopted>",), labels=(("digest", record.config_digest),))
        self._arm_health(inst, adopted=True)
        log.info(
            "instance_adopted",
            job=str(record.job),
            instance=record.instance_id,
            pid=record.pid,
            matches=inst.config == wanted,
        )

    def _instance(self, job: JobKey, instance_id: int) -> Instance:
        inst = self._instances.get((job, instance_id))
        if inst is None:
            inst = self._instances[(job, instance_id)] = Instance(job, instance_id)
        return inst

    # -- the reconciler ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(timeout=0.02 if self._busy() else 0.2)
            self._wake.clear()
            try:
                self._tick()
                if self._writes is not None:
                    self._writes.flush()
            except Exception:  # the reconciler must not die
                log.exception("local_driver_tick_failed")

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._strays) or any(
                inst.state is not S.ABSENT or inst.desired is not None
                for inst in self._instances.values()
            )

    def _tick(self) -> None:
        now = time.monotonic()
        self._scan = None
        changed: list[tuple[JobKey, int]] = []
        with self._lock:
            self._follow_step()
            results, self._results = self._results, []
            for inst, generation, passed, reason in results:
                self._checks_running[inst.job] -= 1
                if inst.generation == generation:
                    self._checked(inst, passed, reason)
            for key, inst in list(self._instances.items()):
                self._step(inst, now)
                if self._publish(inst):
                    changed.append(key)
                if inst.state is S.ABSENT and inst.desired is None:
                    del self._instances[key]
            for stray in list(self._strays):
                self._stop_stray(stray, now)
        if now >= self._next_log_cap:
            self._next_log_cap = now + 5.0
            for inst in list(self._instances.values()):
                if inst.log is not None:
                    cap_log(inst.log, self.log_limit_bytes)
        due, self._due = self._due, []
        if due:
            changed += self._start_due(due)
        listener = self._listener
        if listener is not None:
            for job, instance_id in changed:
                listener(job, instance_id)

    def _step(self, inst: Instance, now: float) -> None:
        # Observe, whether acting or not.
        if inst.state in LIVE and not inst.is_alive():
            inst.failures += 1
            inst.message = inst.exit_reason()
            self._exited(inst, now)
            self._terminate(inst, now)  # what it left running
        if inst.state not in LIVE and inst.group is not None:
            self._sweep(inst, now)
        if inst.state is S.KILLING and inst.group is None and not inst.is_alive():
            self._stopped(inst, now)
        if (
            inst.backoff_streak
            and inst.healthy_since is not None
            and self.clock.now() - inst.healthy_since >= self.stable_after_ms
        ):
            inst.backoff_streak = 0  # stable for a while: the next exit restarts quickly
        if inst.state is S.STARTING and inst.next_check is not None and now >= inst.next_check:
            inst.state = S.RUNNING  # the initial delay is over: checks decide from here
        due = inst.next_check is not None and now >= inst.next_check
        if inst.state in LIVE and due and not inst.checking:
            self._submit_check(inst)
        if not self.acting or inst.parked or (inst.state not in LIVE and inst.group is not None):
            return  # not leading, parked at a takeover, or its last processes are still going
        # Act: make it match the desired state.
        if inst.desired is None:
            if inst.state in LIVE:
                self._kill(inst, now, "no longer desired")
            elif inst.state is S.EXITED:
                inst.state, inst.config = S.ABSENT, None
                self._forget(inst.job, inst.instance_id)
        elif inst.config != inst.desired:
            if inst.state in LIVE:
                self._kill(inst, now, "replaced")
            elif inst.state in (S.ABSENT, S.EXITED):
                inst.failures, inst.backoff_streak, inst.message = 0, 0, ""
                self._due.append((inst, inst.desired))
        elif (
            inst.state is S.EXITED and inst.restart_at is not None and now >= inst.restart_at
        ) or inst.state is S.ABSENT:
            self._due.append((inst, inst.desired))

    def _stop_stray(self, inst: Instance, now: float) -> None:
        """Stop a duplicate, leading or not (a follower that kept it would leave it to nobody):
        SIGTERM its group, SIGKILL after the grace, forget it once the group is empty."""
        if inst.state is not S.KILLING:
            self._kill(inst, now, "a duplicate: the records name another process")
        if inst.group is not None:
            self._sweep(inst, now)
        if inst.group is None and not inst.is_alive():
            self._strays.remove(inst)
            log.info("instance_duplicate_stopped", job=str(inst.job), instance=inst.instance_id)

    # -- transitions -----------------------------------------------------------------------------

    def _start_due(self, due: list[tuple[Instance, TaskConfig]]) -> list[Key]:
        """Start what the tick found missing, once a round trip to ZooKeeper has shown that
        this scheduler still leads: a leader whose session ended unnoticed (starved, paused,
        cut off) must not start a copy of what the new leader runs. Off `_lock` for the check;
        under `_records_io`, so no takeover reads the records between the check and the start."""
        with self._records_io:
            if self.records is not None:
                try:
                    self.records.confirm_leading()
                except PulsegateError as e:  # the next tick asks again
                    log.warning("instances_not_started", why=e.message, instances=len(due))
                    return []
            started: list[Key] = []
            with self._lock:
                for inst, config in due:
                    key = (inst.job, inst.instance_id)
                    current = self._instances.get(key) is inst and inst.desired == config
                    if self.acting and current and inst.state in (S.ABSENT, S.EXITED):
                        self._start(inst, config, time.monotonic())
                        if self._publish(inst):
                            started.append(key)
            return started

    def _start(self, inst: Instance, config: TaskConfig, now: float) -> None:
        inst.generation += 1
        inst.config = config
        inst.restart_at = None
        inst.healthy_since = None
        if not inst.port:
            inst.port = free_port()
        job = inst.job
        inst.log = self._log_path(job, inst.instance_id)
        identity = {
            JOB_VAR: str(job),
            INSTANCE_VAR: str(inst.instance_id),
            DIGEST_VAR: config_digest(config),
        }
        if self._scope is not None:
            identity[SCOPE_VAR] = self._scope
        try:
            inst.proc = spawn(config, inst.port, inst.log, self.base_dir, identity)
        except (OSError, ValueError) as e:
            inst.proc, inst.ident = None, None
            inst.failures += 1
            inst.message = f"cannot start {config.command[0]!r}: {e}"
            log.warning(
                "instance_start_failed", job=str(job), instance=inst.instance_id, why=str(e)
            )
            self._exited(inst, now)
            return
        inst.ident = identify(inst.proc.pid) or ProcessId(inst.proc.pid, 0, "")
        inst.group = ProcessGroup(inst.proc.pid)  # spawn made it a session (and group) leader
        inst.started_at = now
        inst.state = S.STARTING
        self._arm_health(inst, adopted=False)
        self._record(inst)

    def _log_path(self, job: JobKey, instance_id: int) -> Path:
        return self.log_dir / job.role / job.environment / job.name / f"{instance_id}.log"

    def _arm_health(self, inst: Instance, adopted: bool) -> None:
        check = inst.config.health_check if inst.config else None
        inst.checking = False
        if check is None:
            inst.streak, inst.next_check = None, None
            inst.state = S.HEALTHY
            inst.healthy_since = self.clock.now()
            return
        inst.streak = Streak(check)
        delay = 0.0 if adopted else check.initial_delay_ms / 1000
        inst.next_check = time.monotonic() + delay
        inst.state = S.RUNNING if adopted else S.STARTING

    def _submit_check(self, inst: Instance) -> None:
        assert inst.config is not None and inst.config.health_check is not None
        check = inst.config.health_check
        running = self._checks_running.get(inst.job, 0)
        if running >= self._check_share:
            inst.next_check = time.monotonic() + check.interval_ms / 1000  # its turn later
            return
        inst.checking = True
        generation = inst.generation
        cwd = self.base_dir / inst.config.working_dir if inst.config.working_dir else self.base_dir

        def run() -> None:
            passed, reason = run_check(check, inst.port, cwd)
            with self._lock:
                self._results.append((inst, generation, passed, reason))
            self._wake.set()

        try:
            self._checks.submit(run)
        except RuntimeError:  # shutting down
            inst.checking = False
            return
        self._checks_running[inst.job] = running + 1

    def _checked(self, inst: Instance, passed: bool, reason: str) -> None:
        inst.checking = False
        if inst.streak is None or inst.config is None or inst.config.health_check is None:
            return
        inst.next_check = time.monotonic() + inst.config.health_check.interval_ms / 1000
        if inst.state not in LIVE:
            return
        verdict = inst.streak.record(passed, reason)
        if verdict is Verdict.HEALTHY:
            inst.state = S.HEALTHY
            inst.healthy_since = self.clock.now()
        elif verdict is Verdict.UNHEALTHY and self.acting:
            inst.failures += 1
            inst.message = f"health check failed {inst.streak.failures} times in a row: {reason}"
            self._kill(inst, time.monotonic(), "unhealthy", restart=True)
        elif not inst.streak.healthy and inst.state is S.HEALTHY:
            inst.state, inst.healthy_since = S.RUNNING, None

    def _kill(self, inst: Instance, now: float, why: str, restart: bool = False) -> None:
        inst.generation += 1
        inst.state = S.KILLING
        inst.healthy_since = None
        inst.restart_after_kill = restart
        self._terminate(inst, now)
        log.info("instance_stopping", job=str(inst.job), instance=inst.instance_id, why=why)

    def _terminate(self, inst: Instance, now: float) -> None:
        """SIGTERM the instance's process group; `_sweep` SIGKILLs it after the grace."""
        grace = (inst.config.stop_grace_ms if inst.config else 5000) / 1000
        inst.kill_deadline = now + grace
        if inst.group is not None:
            inst.group.signal(signal.SIGTERM)

    def _sweep(self, inst: Instance, now: float) -> None:
        """Past the grace, SIGKILL the group of a stopping or exited instance, every tick until
        it is empty; then forget it, never to signal that group id again."""
        assert inst.group is not None
        if inst.kill_deadline is not None and now >= inst.kill_deadline:
            inst.group.kill()
        if not inst.is_alive() and inst.group.is_empty(self._group_scan):
            inst.group = None

    def _group_scan(self) -> GroupScan:
        if self._scan is None:
            self._scan = GroupScan.take()
        return self._scan

    def _stopped(self, inst: Instance, now: float) -> None:
        inst.proc, inst.ident = None, None
        if inst.restart_after_kill:
            inst.restart_after_kill = False
            self._exited(inst, now)
            return
        inst.state = S.ABSENT
        if inst.desired is None:
            inst.config = None
            self._forget(inst.job, inst.instance_id)

    def _exited(self, inst: Instance, now: float) -> None:
        inst.generation += 1
        inst.state = S.EXITED
        inst.healthy_since = None
        inst.backoff_streak += 1
        delay = backoff_delay(inst.backoff_streak, self.backoff_base_s, self.backoff_cap_s)
        inst.restart_at = now + delay
        log.info(
            "instance_exited",
            job=str(inst.job),
            instance=inst.instance_id,
            why=inst.message,
            failures=inst.failures,
            restart_in_s=round(delay, 2),
        )

    # -- records and observation -------------------------------------------------------------------

    def _record(self, inst: Instance) -> None:
        """Queue the instance's record; the reconciler thread writes it after its tick."""
        if self.records is None or inst.ident is None or inst.config is None:
            return
        record = InstanceRecord(
            inst.job,
            inst.instance_id,
            inst.ident.pid,
            inst.ident.start_ticks,
            inst.ident.boot_id,
            config_digest(inst.config),
            inst.port,
            str(inst.log),
            self.clock.now(),
        )
        self._queue((inst.job, inst.instance_id), record)

    def _forget(self, job: JobKey, instance_id: int) -> None:
        if self.acting:
            self._queue((job, instance_id), None)

    def _queue(self, key: Key, record: InstanceRecord | None) -> None:
        if self._writes is not None:
            self._writes.put(key, record)

    def _follow_step(self) -> None:
        """Move every `healthy_since` by the clock's step since the last look (lock held)."""
        delta = self._steps.delta()
        if not delta:
            return
        for inst in self._instances.values():
            if inst.healthy_since is not None:
                inst.healthy_since += delta
        for observed in self._observed.values():
            for instance_id, seen in observed.items():
                if seen.healthy_since_ms is not None:
                    observed[instance_id] = attrs.evolve(
                        seen, healthy_since_ms=seen.healthy_since_ms + delta
                    )

    def _publish(self, inst: Instance) -> bool:
        current = (inst.state, inst.config, inst.healthy_since, inst.failures, inst.message)
        if current == inst.published:
            return False
        inst.published = current
        observed = self._observed.setdefault(inst.job, {})
        if inst.state is S.ABSENT:
            observed.pop(inst.instance_id, None)
        else:
            observed[inst.instance_id] = ObservedInstance(
                inst.instance_id,
                inst.state,
                inst.config,
                inst.healthy_since,
                inst.failures,
                inst.message,
            )
        return True
