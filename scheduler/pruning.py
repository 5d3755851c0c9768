"""History pruning (DESIGN §6): terminal updates beyond the newest N per job or older than D
days are deleted. It reads every update's summary, which on a large history takes seconds of
ZooKeeper calls, so it runs on its own thread: the leader loop only asks whether one is due.

Safe beside the loop: it deletes terminal updates only (the store skips active ones), and a
terminal update never changes again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from scheduler.clock import Clock
from updater.errors import PulsegateError
from updater.storage import Storage, select_prunable

log = structlog.get_logger(__name__)

Runner = Callable[[Callable[[], None]], None]


def run_on_thread(fn: Callable[[], None]) -> None:
    threading.Thread(target=fn, name="history-pruner", daemon=True).start()


class HistoryPruner:
    """`maybe_start` is called on the loop's thread; the pruning runs through `runner` (a new
    thread by default; tests pass one that runs it at once). At most one runs at a time."""

    def __init__(
        self,
        store: Storage,
        clock: Clock,
        keep: int,
        max_age_ms: int,
        interval_ms: int,
        runner: Runner = run_on_thread,
    ) -> None:
        self.store = store
        self.clock = clock
        self.keep = keep
        self.max_age_ms = max_age_ms
        self.interval_ms = interval_ms
        self.runner = runner
        self._next_ms = 0
        self._running = threading.Event()

    def maybe_start(self) -> bool:
        """Start a pruning if one is due and none is running; True if it started."""
        now = self.clock.now()
        if now < self._next_ms or self._running.is_set():
            return False
        self._next_ms = now + self.interval_ms
        self._running.set()
        self.runner(self._prune)
        return True

    @property
    def is_running(self) -> bool:
        return self._running.is_set()

    def _prune(self) -> None:
        try:
            doomed = select_prunable(
                self.store.summaries(), self.clock.now(), self.keep, self.max_age_ms
            )
            if doomed:
                self.store.delete_updates(doomed)
                log.info("history_pruned", updates=len(doomed))
        except PulsegateError as e:
            log.warning("history_prune_failed", why=e.message)
        except Exception:  # a thread that dies silently would never prune again
            log.exception("history_prune_failed")
        finally:
            self._running.clear()
