"""Wait on a condition with a deadline, so tests never sleep for a guessed amount of time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises AssertionError(message) if the deadline passes first.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout:.1f}s")
        time.sleep(interval)
