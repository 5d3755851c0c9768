"""`pulsegate heartbeat KEY`: the reference health monitor for coordinated updates.

Every interval it runs a check; while the check passes it heartbeats, and when it fails it stays
silent, so the update blocks once the heartbeat timeout lapses (DESIGN §3: there is no NACK).
With --pause-on-failure it also pauses the update, once per failure streak, giving the check's
output as the reason. Ticks are scheduled on a monotonic clock, so the interval stays steady
however long a check or a call takes."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
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
from updater.errors import AuthError, NotFound, PulsegateError, Unavailable
from updater.keys import UpdateKey
from updater.pulse import HeartbeatAnswer

MAX_REASON = 1000


@attrs.frozen
class CheckResult:
    ok: bool
    output: str  # why it failed (or what it said), for people and for the pause reason


Check = Callable[[], CheckResult]


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
) -> int:
    """Check and heartbeat every `interval_s` until the update is over (0), it is not found (5),
    the caller is refused (6), `stop_event` is set or `max_beats` intervals have run (0).
    Sleeping is `stop_event.wait`, so a test's event can advance a fake `clock` instead. A
    pause is sent in the name of `monitor`, so the audit trail shows who paused."""
    check = check or always_passing

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    last_answer: tuple[HeartbeatAnswer, str] | None = None
    failing = unavailable = pause_due = False
    next_tick = clock()
    ticks = 0
    while not stop_event.is_set() and (max_beats is None or ticks < max_beats):
        ticks += 1
        try:
            result = check()
            if not result.ok:
                if not failing:
                    failing, pause_due = True, pause_on_failure
                    say(f"check failed, not heartbeating: {result.output}")
                if pause_due:  # once per failure streak; retried only if unavailable
                    pause_due = False
                    try:
                        client.pause(key, message=result.output[:MAX_REASON], monitor=monitor)
                    except Unavailable:
                        pause_due = True
                        raise
                    say(f"paused {key}")
            else:
                if failing:
                    say("check passing again, heartbeating")
                failing = False
                beat = client.heartbeat(key)
                unavailable = False
                answer = (beat.answer, beat.status.name)
                if answer != last_answer:
                    say(f"heartbeat: {beat.answer.name} (update {beat.status.name})")
                    last_answer = answer
                if beat.answer is HeartbeatAnswer.FINISHED:
                    return OK
        except Unavailable as e:
            if not unavailable:  # once per outage, not once per tick
                say(f"scheduler unavailable, retrying: {e.message}")
            unavailable = True
        except NotFound as e:
            say(f"pulsegate: {e.message}")
            return NOT_FOUND
        except AuthError as e:
            say(f"pulsegate: {e.message}")
            return AUTH
        except PulsegateError as e:
            say(f"pulsegate: {e.message}")
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
        help="this monitor's name, recorded with its pauses (default heartbeat@<host>)",
    )
    parser.add_argument("--check-http", metavar="URL", help="passes on a 2xx answer to GET URL")
    parser.add_argument("--check-cmd", metavar="CMD", help="passes when the shell CMD exits 0")
    parser.add_argument(
        "--check-timeout", type=float, default=5.0, metavar="S", help="check timeout (5 s)"
    )
    parser.add_argument(
        "--pause-on-failure",
        action="store_true",
        help="pause the update (reason: the check's output) when the check starts failing",
    )
    parser.add_argument("--max-beats", type=int, metavar="N", help="stop after N intervals")


def heartbeat(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise UsageError("--interval must be > 0")
    if args.check_http and args.check_cmd:
        raise UsageError("give --check-http or --check-cmd, not both")
    if not 0 < len(args.monitor) <= 64:
        raise UsageError("--monitor must be 1 to 64 characters")
    check: Check | None = None
    if args.check_http:
        problem = url_problem(args.check_http)
        if problem is not None:
            raise UsageError(
                f"--check-http {args.check_http!r} {problem}, e.g. http://127.0.0.1:8080/health"
            )
        check = http_check(args.check_http, args.check_timeout)
    elif args.check_cmd:
        check = command_check(args.check_cmd, args.check_timeout)
    # Retry an unavailable scheduler for about one interval, then try again next tick.
    retry = args.retry_for if getattr(args, "retry_for", None) is not None else args.interval
    with client_from(args, retry_for_s=retry, on_retry=None) as client:
        key = _key(client, args.key)
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
        )


def _key(client: PulsegateClient, text: str) -> UpdateKey:
    """KEY, or the job's active update, resolved once: a monitor follows one update."""
    return parse_key(text) if text.count("/") == 3 else resolve(client, text)
