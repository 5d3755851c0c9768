"""The scheduler's check of its own API: a node whose API port accepts connections but cannot
answer (a broken codec, a wedged server) must not report ready, so it calls itself, as a client
would, on a timer, and `/ready` reads the verdict."""

from __future__ import annotations

import threading
from collections.abc import Callable

import attrs
import structlog

log = structlog.get_logger(__name__)

PROBE_INTERVAL_S = 5.0
RETRY_S = 1.0  # while failing, probe at least this often: readiness comes back quickly


@attrs.frozen
class Verdict:
    """The last probe's outcome; `error` is "" after a success and before the first probe."""

    ok: bool
    error: str
    probes: int

    def describe(self) -> str:
        if self.ok:
            return "ok"
        return f"failing: {self.error}" if self.probes else "not probed yet"


class SelfProbe:
    """Runs `call` (which raises when the API cannot answer) at once and then every `interval_s`
    (at most `RETRY_S` while it fails), in a thread of its own: the call is network I/O, so it
    never runs under the lock, and `verdict()` (from HTTP threads) never waits for it."""

    def __init__(self, call: Callable[[], None], interval_s: float = PROBE_INTERVAL_S) -> None:
        self.call = call
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._verdict = Verdict(ok=False, error="", probes=0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def verdict(self) -> Verdict:
        with self._lock:
            return self._verdict

    def probe_once(self) -> Verdict:
        try:
            self.call()
        except Exception as e:
            error = f"{type(e).__name__}: {e}".strip()
        else:
            error = ""
        with self._lock:
            was_ok = self._verdict.ok
            self._verdict = Verdict(ok=not error, error=error, probes=self._verdict.probes + 1)
            verdict = self._verdict
        if error and (was_ok or verdict.probes == 1):
            log.warning("api_probe_failed", error=error)
        elif not error and not was_ok and verdict.probes > 1:
            log.info("api_probe_recovered")
        return verdict

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="api-self-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            ok = self.probe_once().ok
            self._stop.wait(self.interval_s if ok else min(self.interval_s, RETRY_S))
