"""Closed ranges of instance ids, the compact form used for scopes, config groups and diffs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs

from updater.errors import InvalidRequest


@attrs.frozen(order=True)
class Range:
    """Instance ids `first..last`, both included."""

    first: int
    last: int

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.first, self.last + 1))

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __contains__(self, instance_id: object) -> bool:
        return isinstance(instance_id, int) and self.first <= instance_id <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


def checked_range(first: int, last: int, field: str) -> Range:
    """A range from untrusted input: ids are >= 0 and the range is not inverted."""
    if first < 0 or last < 0:
        raise InvalidRequest(field, f"instance ids must be >= 0, got {first}-{last}")
    if first > last:
        raise InvalidRequest(field, f"range is inverted: {first} > {last}")
    return Range(first, last)


def to_ranges(ids: Iterable[int]) -> tuple[Range, ...]:
    """Sorted, merged ranges covering exactly `ids`."""
    out: list[Range] = []
    for i in sorted(set(ids)):
        if out and i == out[-1].last + 1:
            out[-1] = Range(out[-1].first, i)
        else:
            out.append(Range(i, i))
    return tuple(out)


def to_ids(ranges: Iterable[Range]) -> list[int]:
    """Every id in `ranges`, ascending, without duplicates."""
    ids: set[int] = set()
    for r in ranges:
        ids.update(range(r.first, r.last + 1))
    return sorted(ids)


def format_ranges(ranges: Iterable[Range]) -> str:
    """`0-4,7,9-10`, the form the CLI prints and parses."""
    return ",".join(str(r) for r in ranges)


def parse_ranges(text: str, field: str = "instances") -> tuple[Range, ...]:
    """Parse `0-4,7` into merged ranges; every error names the field."""
    ids: list[Range] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise InvalidRequest(field, f"not an instance range: {part!r}") from None
        ids.append(checked_range(first, last, field))
    return merge(ids)


def merge(ranges: Iterable[Range]) -> tuple[Range, ...]:
    """Sorted ranges with overlapping or adjacent ones joined."""
    out: list[Range] = []
    for r in sorted(ranges):
        if out and r.first <= out[-1].last + 1:
            if r.last > out[-1].last:
                out[-1] = Range(out[-1].first, r.last)
        else:
            out.append(r)
    return tuple(out)


def subtract(ranges: Iterable[Range], minus: Iterable[Range]) -> tuple[Range, ...]:
    """The ids of `ranges` that are not in `minus`, as merged ranges, without expanding either:
    a range from the wire may span two billion ids."""
    out: list[Range] = []
    cuts = merge(minus)
    for r in merge(ranges):
        first = r.first
        for c in cuts:
            if c.last < first or c.first > r.last:
                continue
            if c.first > first:
                out.append(Range(first, c.first - 1))
            first = c.last + 1
            if first > r.last:
                break
        if first <= r.last:
            out.append(Range(first, r.last))
    return tuple(out)
