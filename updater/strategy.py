"""How many instances an update may have in flight, and which start next.

Batches are fixed slices of the instance order, so the same boundaries come out after a failover.
A rollback mirrors the forward batches it has to undo: forward batches [2, 3, 5(partial: 2)] roll
back as [2, 3, 2], each in reverse order."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import attrs

from updater.settings import Strategy


def forward_bounds(strategy: Strategy, count: int) -> tuple[int, ...]:
    """Exclusive end index of each batch over `count` ordered instances."""
    ends: list[int] = []
    position = 0
    while position < count:
        position = min(count, position + strategy.batch_size(len(ends)))
        ends.append(position)
    return tuple(ends)


def mirrored_bounds(forward: Sequence[int], touched: int) -> tuple[int, ...]:
    """Batch ends for rolling back the first `touched` instances of a forward plan."""
    sizes: list[int] = []
    start = 0
    for end in forward:
        if start >= touched:
            break
        sizes.append(min(end, touched) - start)
        start = end
    ends: list[int] = []
    position = 0
    for size in reversed(sizes):
        position += size
        ends.append(position)
    return tuple(ends)


@attrs.frozen
class Schedule:
    """The strategy applied to one direction's instance order. `bounds` is empty for a queue."""

    queue_size: int
    bounds: tuple[int, ...]

    @classmethod
    def forward(cls, strategy: Strategy, count: int) -> Schedule:
        if strategy.is_batched:
            return cls(0, forward_bounds(strategy, count))
        return cls(strategy.sizes[0], ())

    @classmethod
    def rollback(cls, strategy: Strategy, forward: Schedule, touched: int) -> Schedule:
        if strategy.is_batched:
            return cls(0, mirrored_bounds(forward.bounds, touched))
        return cls(strategy.sizes[0], ())

    @property
    def is_batched(self) -> bool:
        return bool(self.bounds)

    def batch_of(self, index: int) -> int:
        """The batch that the `index`-th instance of the order belongs to."""
        return bisect_right(self.bounds, index)

    def batch_end(self, batch: int) -> int:
        return self.bounds[batch]

    def next_starts(self, cursor: int, in_flight: int, count: int) -> range:
        """Indices of the order that may start now. A queue refills free slots; a batch starts
        whole (the rest of the batch holding `cursor`) and only when none are in flight."""
        if cursor >= count:
            return range(0)
        if not self.is_batched:
            return range(cursor, min(count, cursor + max(0, self.queue_size - in_flight)))
        if in_flight:
            return range(0)
        return range(cursor, self.batch_end(self.batch_of(cursor)))

    def allowance(self, cursor: int) -> int:
        """Most instances that may be in flight when the next start is at `cursor` (for the
        invariant checks of tests)."""
        if not self.is_batched:
            return self.queue_size
        batch = self.batch_of(max(0, cursor - 1))
        start = self.bounds[batch - 1] if batch else 0
        return self.bounds[batch] - start if batch < len(self.bounds) else 0
