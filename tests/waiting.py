"""Wait on a condition with a deadline, so tests never sleep for a guessed amount of time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.01,
    message: str = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises AssertionError(message) if the deadline passes first. The deadline only bounds a
    failure, so it is generous: a loaded 2-core machine is slow, not wrong.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout:.1f}s")
        time.sleep(interval)


def stays_true(seconds: float, invariant: Callable[[], object], message: str = "") -> None:
    """Keep a fault in place for `seconds` (the scenario's length, not a guess at how long
    something takes), checking `invariant` throughout: it must stay truthy the whole time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not invariant():
            raise AssertionError(message or "invariant broke while it had to stay true")
        time.sleep(0.1)
