"""What an update would change: the job's current desired configs against a requested config and
instance count, optionally scoped to some instance ids (a canary). As in Aurora, a current
instance outside the scope is listed as unchanged: the update leaves it as it is."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from updater.errors import InvalidRequest
from updater.job import ConfigGroup, group_configs
from updater.ranges import Range, format_ranges, subtract, to_ids, to_ranges
from updater.task import TaskConfig


@attrs.frozen
class JobDiff:
    """Instance ids that an update adds, changes, removes or leaves alone, and the configs that the
    changed and removed ids have now (what a rollback restores)."""

    added: tuple[Range, ...]
    changed: tuple[Range, ...]
    removed: tuple[Range, ...]
    unchanged: tuple[Range, ...]
    old: tuple[ConfigGroup, ...]

    @property
    def is_noop(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def summary(self) -> str:
        parts = [
            f"{name} {format_ranges(ranges)}"
            for name, ranges in (
                ("add", self.added),
                ("update", self.changed),
                ("remove", self.removed),
            )
            if ranges
        ]
        return "; ".join(parts) if parts else "no change"


def diff_job(
    current: Mapping[int, TaskConfig],
    config: TaskConfig,
    instance_count: int,
    scope: tuple[Range, ...] = (),
) -> JobDiff:
    """Compare `current` (id → desired config) with `instance_count` instances of `config`.

    A non-empty `scope` restricts the diff to those ids, each of which must exist in the current
    or the requested job; the current ids outside it are unchanged."""
    proposed = range(instance_count)
    wanted: set[int] | None = None
    if scope:
        # Checked range by range before any id is expanded: the scope comes from the wire.
        known = to_ranges(current) + ((Range(0, instance_count - 1),) if instance_count else ())
        unknown = subtract(scope, known)
        if unknown:
            raise InvalidRequest(
                "settings.updateOnlyTheseInstances",
                f"instances {format_ranges(unknown)} are in neither the current "
                f"nor the requested job",
            )
        wanted = set(to_ids(scope))
    added: list[int] = []
    changed: list[int] = []
    unchanged: list[int] = []
    old: dict[int, TaskConfig] = {}
    for instance_id in proposed:
        if wanted is not None and instance_id not in wanted:
            continue
        existing = current.get(instance_id)
        if existing is None:
            added.append(instance_id)
        elif existing == config:
            unchanged.append(instance_id)
        else:
            changed.append(instance_id)
            old[instance_id] = existing
    removed = [i for i in current if i >= instance_count and (wanted is None or i in wanted)]
    if wanted is not None:  # what the scope leaves out stays as it is
        unchanged += [i for i in current if i not in wanted]
    for instance_id in removed:
        old[instance_id] = current[instance_id]
    return JobDiff(
        added=to_ranges(added),
        changed=to_ranges(changed),
        removed=to_ranges(removed),
        unchanged=to_ranges(unchanged),
        old=group_configs(old),
    )
