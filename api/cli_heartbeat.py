"""`pulsegate heartbeat KEY`: the reference health monitor for coordinated updates.

Every interval it runs a check; while the check passes it heartbeats, naming itself (--monitor,
rule 11), and when it fails it stays silent, so the update blocks once the heartbeat timeout
lapses (DESIGN §3: there is no NACK). With --pause-on-failure it also pauses the update, once per
failure streak, giving the check's output as the reason. With --ack-batches it verifies each
finished batch with its check against the batch's instances (`{instance}` in the check names
each) and then acknowledges it (rule 13). Each heartbeat's answer and the gate's state are
printed on a line (one JSON object per heartbeat with --json). Ticks are scheduled on a monotonic
clock, so the interval stays steady however long a check or a call takes."""

from __future__ import annotations

import argparse
import functools
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import attrs

from api.cli_common import (
    AUTH,
    ERROR,
    KEY_HELP,
    NOT_FOUND,
    OK,
    UsageError,
    add_command,
    client_from,
    parse_key,
    resolve,
)
from api.client import PulsegateClient
from api.gate_text import duration, gate_json
from api.render import iso
from api.views import HeartbeatResult
from updater.errors import AuthError, NotFound, PulsegateError, Unavailable
from updater.keys import UpdateKey
from updater.pulse import HeartbeatAnswer

MAX_REASON = 1000


@attrs.frozen
class CheckResult:
    ok: bool
    output: str  # why it failed (or what it said), for people and for the pause reason


Check = Callable[[], CheckResult]
BatchCheck = Callable[[Sequence[int]], CheckResult]  # verifies the instances a batch names
INSTANCE = "{instance}"


def url_problem(url: str) -> str | None:
    """Why `url` cannot be checked (only http:// and https:// with a host can), or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        given = f"{parts.scheme}://" if parts.scheme else "no scheme"
        return f"must start with http:// or https:// (got {given})"
    if not parts.hostname:
        return "has no host"
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return "has a bad port"
    return None


def http_check(url: str, timeout_s: float) -> Check:
    """GET `url`; passes on a 2xx answer."""

    def check() -> CheckResult:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as answer:
                status = answer.status
                body = answer.read(MAX_REASON).decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            body = e.read(MAX_REASON).decode("utf-8", "replace")
            return CheckResult(False, f"HTTP {e.code} from {url}: {body}".strip())
        except (OSError, ValueError) as e:
            return CheckResult(False, f"GET {url} failed: {getattr(e, 'reason', e)}")
        return CheckResult(200 <= status < 300, f"HTTP {status} from {url}: {body}".strip())

    return check


def command_check(command: str, timeout_s: float) -> Check:
    """Run a shell command; passes on exit status 0. Output is captured, not shown."""

    def check() -> CheckResult:
        try:
            done = subprocess.run(
                command, shell=True, capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            return CheckResult(False, f"check timed out after {timeout_s:g} s: {command}")
        output = (done.stdout + done.stderr).strip()
        if done.returncode == 0:
            return CheckResult(True, output)
        return CheckResult(False, output or f"check exited with status {done.returncode}")

    return check


def always_passing() -> CheckResult:
    return CheckResult(True, "")


def per_instance(make: Callable[[str], Check], template: str) -> BatchCheck:
    """A batch check from a check's text: with `{instance}` in it, one check per instance id
    (failing on the first that fails, naming it); without, the check as given, once."""

    def verify(instances: Sequence[int]) -> CheckResult:
        if INSTANCE not in template:
            return make(template)()
        for instance in instances:
            result = make(template.replace(INSTANCE, str(instance)))()
            if not result.ok:
                return CheckResult(False, f"instance {instance}: {result.output}")
        return CheckResult(True, f"instances {', '.join(map(str, instances)) or 'none'} passed")

    return verify


def beat_text(beat: HeartbeatResult) -> str:
    """One heartbeat's answer with the gate's state and each monitor's age, for people."""
    line = f"heartbeat: {beat.answer.name} (update {beat.status.name})"
    gate = beat.gate
    if gate is None:
        return line
    line += f"; gate {'open' if gate.open else 'closed'}: {gate.why}"
    line += f"; {gate.fresh_monitors} of {gate.quorum} fresh"
    ages = ", ".join(
        f"{m.name} {duration(m.age_ms)} {'fresh' if m.fresh else 'stale'}" for m in gate.monitors
    )
    return line + (f"; ages: {ages}" if ages else "")


def beat_json(beat: HeartbeatResult, acked: int | None) -> dict[str, Any]:
    """One heartbeat for machines (`--json`, one object per line)."""
    return {
        "event": "heartbeat",
        "at": iso(int(time.time() * 1000)),
        "answer": beat.answer.name,
        "update_status": beat.status.name,
        "batch": beat.batch,
        "batch_instances": list(beat.batch_instances),
        "acked_batch": acked,
        "gate": gate_json(beat.gate, None),  # no timeout in the answer: this clock
    }


def run_monitor(
    client: PulsegateClient,
    key: UpdateKey,
    interval_s: float,
    check: Check | None,
    pause_on_failure: bool,
    stop_event: threading.Event,
    out: TextIO,
    max_beats: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    monitor: str | None = None,
    verify: BatchCheck | None = None,
    json_lines: bool = False,
) -> int:
    """Check and heartbeat every `interval_s` until the update is over (0), it is not found (5),
    the caller is refused (6), `stop_event` is set or `max_beats` intervals have run (0).
    Sleeping is `stop_event.wait`, so a test's event can advance a fake `clock` instead. Beats
    and pauses are sent in the name of `monitor`, so the gate and the audit trail show who.
    With `verify`, a batch the gate awaits an acknowledgement for is verified with it against
    the batch's instances, then acked; with no `check`, each tick verifies the current batch."""

    def say(line: str, event: str = "message", **fields: Any) -> None:
        if json_lines:
            line = json.dumps({"event": event, "message": line, **fields})
        out.write(line + "\n")
        out.flush()

    def tick_check() -> CheckResult:
        if check is not None:
            return check()
        if verify is not None and current:
            return verify(current)
        return always_passing()

    def send(ack: int | None) -> HeartbeatResult:
        if monitor is None and verify is None:
            return client.heartbeat(key)
        return client.heartbeat(key, monitor=monitor, ack=ack)

    last_shown: list[tuple[Any, ...]] = []

    def report(beat: HeartbeatResult) -> HeartbeatResult:
        """Every heartbeat as JSON; for people, a line when the answer or the gate changes."""
        gate = beat.gate
        shown = (beat.answer, beat.status, gate and (gate.open, gate.why, gate.awaiting_ack))
        if json_lines:
            out.write(json.dumps(beat_json(beat, acked)) + "\n")
            out.flush()
        elif shown not in last_shown:
            say(beat_text(beat))
        last_shown[:] = [shown]
        return beat

    failing = unavailable = pause_due = False
    acked: int | None = None  # the last batch verified, sent with every beat (acks are volatile)
    refused: int | None = None  # the batch whose verification failed, said once
    current: list[int] = []  # the current batch's instances, from the last answer
    next_tick = clock()
    ticks = 0
    while not stop_event.is_set() and (max_beats is None or ticks < max_beats):
        ticks += 1
        try:
            result = tick_check()
            if not result.ok:
                if not failing:
                    failing, pause_due = True, pause_on_failure
                    say(f"check failed, not heartbeating: {result.output}", "check_failed")
                if pause_due:  # once per failure streak; retried only if unavailable
                    pause_due = False
                    try:
                        client.pause(key, message=result.output[:MAX_REASON], monitor=monitor)
                    except Unavailable:
                        pause_due = True
                        raise
                    say(f"paused {key}", "paused")
            else:
                if failing:
                    say("check passing again, heartbeating", "check_passing")
                failing = False
                beat = report(send(acked))
                unavailable = False
                current = list(beat.batch_instances)
                gate = beat.gate
                waiting = None if gate is None else gate.awaiting_ack
                if verify is not None and gate is not None and waiting not in (None, acked):
                    verdict = verify(list(gate.batch_instances))
                    if verdict.ok:
                        acked, refused = waiting, None
                        ids = ", ".join(map(str, gate.batch_instances))
                        say(f"batch {waiting} verified (instances {ids}): acking", "acking",
                            batch=waiting, output=verdict.output)  # fmt: skip
                        beat = report(send(acked))
                    elif refused != waiting:
                        refused = waiting
                        say(f"batch {waiting} not verified, not acking: {verdict.output}",
                            "not_verified", batch=waiting, output=verdict.output)  # fmt: skip
                if beat.answer is HeartbeatAnswer.FINISHED:
                    return OK
        except Unavailable as e:
            if not unavailable:  # once per outage, not once per tick
                say(f"scheduler unavailable, retrying: {e.message}", "unavailable")
            unavailable = True
        except NotFound as e:
            say(f"pulsegate: {e.message}", "error")
            return NOT_FOUND
        except AuthError as e:
            say(f"pulsegate: {e.message}", "error")
            return AUTH
        except PulsegateError as e:
            say(f"pulsegate: {e.message}", "error")
            if not failing:  # a refused heartbeat (e.g. the update is not coordinated)
                return ERROR
            # a refused pause (e.g. the update already ended): keep checking
        next_tick += interval_s
        now = clock()
        if next_tick < now:  # fell behind (a slow check or call): skip the missed ticks
            next_tick += ((now - next_tick) // interval_s + 1) * interval_s
        stop_event.wait(next_tick - now)
    return OK


def register(groups: Any) -> None:
    parser = add_command(
        groups, "heartbeat", heartbeat, "heartbeat an update while a health check passes"
    )
    parser.add_argument("key", metavar="KEY", help=KEY_HELP)
    parser.add_argument(
        "--interval", type=float, required=True, metavar="S", help="seconds between checks"
    )
    parser.add_argument(
        "--monitor",
        metavar="NAME",
        default=f"heartbeat@{socket.gethostname()}"[:64],
        help="this monitor's name, sent with each heartbeat and recorded with its pauses; "
        "counts toward heartbeat_quorum (default heartbeat@<host>)",
    )
    parser.add_argument(
        "--check-http",
        metavar="URL",
        help="passes on a 2xx answer to GET URL ({instance} in it: each of the batch's instances)",
    )
    parser.add_argument(
        "--check-cmd",
        metavar="CMD",
        help="passes when the shell CMD exits 0 ({instance} in it: each of the batch's instances)",
    )
    parser.add_argument(
        "--ack-batches",
        action="store_true",
        help="verify each finished batch with the check against its instances, then ack it "
        "(for updates with heartbeat_ack_batches = true)",
    )
    parser.add_argument(
        "--check-timeout", type=float, default=5.0, metavar="S", help="check timeout (5 s)"
    )
    parser.add_argument(
        "--pause-on-failure",
        action="store_true",
        help="pause the update (reason: the check's output) when the check starts failing",
    )
    parser.add_argument("--max-beats", type=int, metavar="N", help="stop after N intervals")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per heartbeat and event, per line"
    )


def heartbeat(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise UsageError("--interval must be > 0")
    if args.check_http and args.check_cmd:
        raise UsageError("give --check-http or --check-cmd, not both")
    if not 0 < len(args.monitor) <= 64:
        raise UsageError("--monitor must be 1 to 64 characters")
    make: Callable[[str], Check] | None = None
    template: str = args.check_http or args.check_cmd or ""
    if args.check_http:
        problem = url_problem(args.check_http.replace(INSTANCE, "0"))
        if problem is not None:
            raise UsageError(
                f"--check-http {args.check_http!r} {problem}, e.g. http://127.0.0.1:8080/health"
            )
        make = functools.partial(http_check, timeout_s=args.check_timeout)
    elif args.check_cmd:
        make = functools.partial(command_check, timeout_s=args.check_timeout)
    per_batch = INSTANCE in template
    if per_batch and not args.ack_batches:
        raise UsageError(
            f"{INSTANCE} in the check names a batch's instances: add --ack-batches, or give a "
            "check without it"
        )
    check = make(template) if make is not None and not per_batch else None
    verify: BatchCheck | None = None
    if args.ack_batches:
        verify = per_instance(make or (lambda _text: always_passing), template)
    # Retry an unavailable scheduler for about one interval, then try again next tick.
    retry = args.retry_for if getattr(args, "retry_for", None) is not None else args.interval
    with client_from(args, retry_for_s=retry, on_retry=None) as client:
        key = _key(client, args.key)
        if (
            args.ack_batches
            and not client.details(key).record.definition.settings.heartbeat_ack_batches
        ):
            raise UsageError(
                f"--ack-batches: update {key} takes no batch acknowledgements "
                "(start it with heartbeat_ack_batches = true)"
            )
        return run_monitor(
            client,
            key,
            args.interval,
            check,
            args.pause_on_failure,
            threading.Event(),
            sys.stdout,
            args.max_beats,
            monitor=args.monitor,
            verify=verify,
            json_lines=args.json,
        )


def _key(client: PulsegateClient, text: str) -> UpdateKey:
    """KEY, or the job's active update, resolved once: a monitor follows one update."""
    return parse_key(text) if text.count("/") == 3 else resolve(client, text)
