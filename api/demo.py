"""`pulsegate demo`: the whole product on one machine, in about half a minute.

It starts an embedded ZooKeeper and a scheduler with the local driver, creates a 5-instance
job of the example service, and then:
1. rolls out version 2 as a coordinated update driven by the reference heartbeat monitor, and
   silences the monitor half-way: the update blocks (no instance is touched) until heartbeats
   come back;
2. rolls out a broken version 3 whose health check fails: the update rolls back by itself.
It prints what happens as it happens, a summary at the end, and leaves no process behind.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO, cast

import attrs
from rich.console import Console
from rich.table import Table

from api.bundled import examples_dir
from api.cli_heartbeat import CheckResult, run_monitor
from api.client import PulsegateClient
from api.jobfile import JobFile, load_job_file
from api.server import attach
from scheduler.config import load_config
from scheduler.logs import configure_logging
from scheduler.service import Scheduler
from updater.events import InstanceAction
from updater.keys import UpdateKey
from updater.status import UpdateStatus

S = UpdateStatus


def register(groups: Any) -> None:
    parser = groups.add_parser("demo", help="run the demo: a gated rollout and a rollback")
    parser.add_argument("--state-dir", type=Path, help="keep state and logs here (default: temp)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        examples = examples_dir()
    except FileNotFoundError as e:
        print(f"pulsegate demo: {e}")
        return 1
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="pulsegate-demo-"))
    demo = Demo(Console(highlight=False), state.resolve(), examples)
    try:
        return demo.run()
    finally:
        demo.cleanup()
        if args.state_dir is None:
            shutil.rmtree(state, ignore_errors=True)


@attrs.define
class Outcome:
    release: str
    status: S
    seconds: float
    note: str


class Demo:
    def __init__(self, console: Console, state: Path, examples: Path) -> None:
        self.console = console
        self.state = state
        self.examples = examples
        # In every instance's environment (PULSEGATE_DEMO=<state dir>): how we find them.
        self.marker = str(state)
        self.started = time.monotonic()
        self.scheduler: Scheduler | None = None
        self.client: PulsegateClient | None = None
        self.monitor_stop = threading.Event()
        self.silent = threading.Event()
        self.outcomes: list[Outcome] = []

    # -- output --------------------------------------------------------------------------------

    def say(self, text: str, style: str = "") -> None:
        elapsed = time.monotonic() - self.started
        self.console.print(f"[dim]{elapsed:6.1f}s[/dim]  {text}", style=style)

    def title(self, text: str) -> None:
        self.console.print()
        self.console.rule(f"[bold]{text}")

    # -- set-up ----------------------------------------------------------------------------------

    def job(self, name: str) -> JobFile:
        found = load_job_file(self.state / "examples" / name)
        env = {**found.task.env, "PULSEGATE_DEMO": self.marker}
        task = attrs.evolve(found.task, environment=tuple(sorted(env.items())))
        return attrs.evolve(found, task=task)

    def start(self) -> PulsegateClient:
        self.state.mkdir(parents=True, exist_ok=True)
        # Job files name examples/service.py relative to where the scheduler runs: a copy in
        # the state dir works the same from a checkout and from an installed wheel.
        shutil.copytree(
            self.examples,
            self.state / "examples",
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        os.chdir(self.state)
        config = load_config(
            None,
            {},
            {
                "scheduler.id": "demo",
                "scheduler.state_dir": str(self.state),
                "zookeeper.hosts": "embedded",
                "zookeeper.embedded_port": 0,
                "api.port": 0,
                "http.port": 0,
                "driver.kind": "local",
                "log.level": "info",
            },
        )
        log = (self.state / "scheduler.log").open("a")
        configure_logging(config.log_level, config.log_format, stream=log)
        self.scheduler = Scheduler(config)
        attach(self.scheduler)
        self.scheduler.start()
        self.wait(lambda: self.scheduler.loop is not None and self.scheduler.loop.is_serving, 60)
        assert self.scheduler.api is not None and self.scheduler.embedded is not None
        self.client = PulsegateClient(f"127.0.0.1:{self.scheduler.api.port}", retry_for_s=10)
        self.say(
            f"ZooKeeper on {self.scheduler.embedded.hosts}, scheduler API on "
            f"127.0.0.1:{self.scheduler.api.port}; logs in {self.state}"
        )
        return self.client

    @staticmethod
    def wait(predicate: Any, timeout: float, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(interval)

    # -- the story -------------------------------------------------------------------------------

    def run(self) -> int:
        self.console.print(
            "[bold]pulsegate demo[/bold]: a heartbeat-gated rollout, then a rollback"
        )
        client = self.start()
        v1, v2, bad = (
            self.job("hello-v1.toml"),
            self.job("hello-v2.toml"),
            self.job("hello-bad.toml"),
        )
        job = v1.job
        assert job is not None

        self.title("1. Create the job: 5 instances of the example service, version 1")
        client.create_job(job, v1.task, v1.instances)
        self.wait(lambda: client.is_settled(job, 5), 60)
        self.say(f"{job}: 5 instances healthy")

        self.title("2. Roll out version 2, gated by a health monitor's heartbeats")
        self.outcomes.append(self.gated_rollout(v2))

        self.title("3. Roll out a broken version 3: its health check fails")
        self.outcomes.append(self.bad_rollout(bad))

        self.title("Summary")
        table = Table(show_header=True, header_style="bold")
        for column in ("release", "result", "seconds", "what happened"):
            table.add_column(column)
        for o in self.outcomes:
            style = "green" if o.status is S.ROLLED_FORWARD else "yellow"
            table.add_row(o.release, f"[{style}]{o.status.name}", f"{o.seconds:.1f}", o.note)
        self.console.print(table)
        forward = sum(o.status is S.ROLLED_FORWARD for o in self.outcomes)
        back = sum(o.status is S.ROLLED_BACK for o in self.outcomes)
        ok = [o.status for o in self.outcomes] == [S.ROLLED_FORWARD, S.ROLLED_BACK]
        self.console.print(f"demo: {forward} update rolled forward, {back} rolled back")
        return 0 if ok else 1

    def gated_rollout(self, release: JobFile) -> Outcome:
        client = self.client
        assert client is not None and release.job is not None
        began = time.monotonic()
        key = self.start_release(release, "demo: version 2")
        timeout_s = release.settings.heartbeat_timeout_ms / 1000
        self.say(f"started {key} (heartbeat timeout {timeout_s:g} s)")
        self.say(f"status {client.details(key).status.name}: nothing moves before a heartbeat")
        monitor = threading.Thread(target=self.monitor, args=(key,), daemon=True)
        monitor.start()
        _, seen = self.follow(key, lambda d: self.updated(d) >= 2)
        self.silent.set()
        self.say("the monitor goes quiet (as if its health check could not tell)", "bold yellow")
        _, seen = self.follow(key, lambda d: d.status is S.ROLL_FORWARD_AWAITING_PULSE, seen)
        actions = len(client.details(key).record.instance_events)
        time.sleep(3.0)  # the demo's pause, to show that nothing moves
        held = len(client.details(key).record.instance_events) - actions
        self.say(f"blocked for 3 s: {held} instance events while heartbeats were missing", "bold")
        self.silent.clear()
        self.say("the monitor heartbeats again", "bold green")
        final, _ = self.follow(key, lambda d: d.status.is_terminal, seen)
        events = final.record.status_events
        stop = next(e for e in events if e.cause.value == "heartbeat_timeout")
        again = next(e for e in events if e.timestamp_ms >= stop.timestamp_ms and e is not stop)
        blocked = (again.timestamp_ms - stop.timestamp_ms) / 1000
        self.monitor_stop.set()
        monitor.join(timeout=10)
        return Outcome(
            "v2",
            final.status,
            time.monotonic() - began,
            f"blocked {blocked:.1f} s without heartbeats (no instance touched), then finished",
        )

    def start_release(self, release: JobFile, message: str) -> UpdateKey:
        assert self.client is not None and release.job is not None
        return self.client.start_update(
            release.job,
            release.task,
            release.instances,
            settings=release.settings,
            metadata=release.metadata,
            message=message,
        )

    def monitor(self, key: UpdateKey) -> None:
        """The reference monitor (`pulsegate heartbeat`), with a check the demo can silence."""

        def check() -> CheckResult:
            if self.silent.is_set():
                return CheckResult(False, "demo: monitor silenced")
            return CheckResult(True, "")

        lines = _Lines(lambda line: self.say(f"monitor: {line}", "cyan"))
        with PulsegateClient(self.client.hosts, retry_for_s=5) as client:  # type: ignore[union-attr]
            run_monitor(client, key, 0.5, check, False, self.monitor_stop, cast(TextIO, lines))

    def bad_rollout(self, release: JobFile) -> Outcome:
        client = self.client
        assert client is not None and release.job is not None
        began = time.monotonic()
        key = self.start_release(release, "demo: version 3")
        self.say(f"started {key}")
        final, _ = self.follow(key, lambda d: d.status.is_terminal)
        reason = next(
            (e.message for e in final.record.status_events if e.status is S.ROLLING_BACK), ""
        )
        self.wait(lambda: client.is_settled(release.job, 5), 60)
        self.say("all 5 instances healthy on version 2 again")
        return Outcome("v3", final.status, time.monotonic() - began, reason or "did not roll back")

    def updated(self, details: Any) -> int:
        return sum(
            e.action is InstanceAction.INSTANCE_UPDATED for e in details.record.instance_events
        )

    def follow(
        self, key: UpdateKey, until: Any, seen: tuple[int, int] = (0, 0)
    ) -> tuple[Any, tuple[int, int]]:
        """Print new status and instance events until `until(details)` holds; return the
        details and how many events of each kind have been printed."""
        client = self.client
        assert client is not None
        statuses, instances = seen
        deadline = time.monotonic() + 120
        while True:
            details = client.details(key)
            record = details.record
            for event in record.status_events[statuses:]:
                note = f": {event.message}" if event.message else ""
                self.say(f"[bold]{event.status.name}[/bold] by {event.user}{note}")
            for change in record.instance_events[instances:]:
                note = f" ({change.message})" if change.message else ""
                self.say(f"  instance {change.instance_id}: {change.action.name}{note}")
            statuses, instances = len(record.status_events), len(record.instance_events)
            if until(details):
                return details, (statuses, instances)
            if time.monotonic() > deadline:
                raise TimeoutError(f"update {key} is stuck in {details.status.name}")
            time.sleep(0.2)

    # -- clean-up --------------------------------------------------------------------------------

    def cleanup(self) -> None:
        self.monitor_stop.set()
        scheduler, client = self.scheduler, self.client
        if client is not None and scheduler is not None:
            with contextlib.suppress(Exception):
                for job in client.list_jobs():
                    client.kill_job(job, "demo over")
            self.wait(lambda: not self.leftovers(instances_only=True), 30)
            client.close()
        if scheduler is not None:
            scheduler.stop()
        left = self.leftovers()
        for pid in left:  # ours (they carry the demo's marker): never leave them running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        if left:
            self.console.print(f"demo: had to kill {len(left)} leftover process(es)")

    def leftovers(self, instances_only: bool = False) -> list[int]:
        """Processes this demo started that still run: instances (by the marker in their
        environment) and the embedded ZooKeeper (by its data directory)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                cmdline = (entry / "cmdline").read_bytes()
                status = (entry / "stat").read_text()
            except OSError:
                continue
            if status.rsplit(")", 1)[1].split()[0] == "Z":
                continue
            ours = f"PULSEGATE_DEMO={self.marker}\0".encode() in environ
            if not instances_only:
                ours = ours or str(self.state).encode() in cmdline
            if ours:
                found.append(int(entry.name))
        return found


class _Lines(io.TextIOBase):
    """A text stream that hands each complete line to a function."""

    def __init__(self, emit: Any) -> None:
        self.emit = emit
        self.buffer = ""

    def write(self, text: str) -> int:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            self.emit(line)
        return len(text)
