"""Fencing: every leader write carries a check of the leader's own election znode, so a deposed
leader's write fails instead of landing (DESIGN §6)."""

from __future__ import annotations

from typing import Protocol

from updater.errors import Unavailable


class NotLeader(Unavailable):
    """This scheduler is not (or no longer) the acting leader; nothing was written."""

    reason = "not_leader"


class UnknownOutcome(Unavailable):
    """The connection broke or timed out during a write: it may or may not have been applied.
    Whoever holds state derived from the write must reload it from storage."""

    reason = "unknown_outcome"


class Fence(Protocol):
    def node(self) -> str:
        """The election znode to check in each write. Raises NotLeader unless this scheduler is
        the acting leader."""
        ...
