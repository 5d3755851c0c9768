"""A job's desired state: instance ids grouped by config, so a 10,000-instance job with two
configs is two groups of ranges rather than 10,000 entries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from updater.keys import JobKey
from updater.ranges import Range, to_ids, to_ranges
from updater.task import TaskConfig


@attrs.frozen
class ConfigGroup:
    config: TaskConfig
    ranges: tuple[Range, ...]

    @property
    def ids(self) -> list[int]:
        return to_ids(self.ranges)

    @property
    def count(self) -> int:
        return sum(len(r) for r in self.ranges)


def group_configs(instances: Mapping[int, TaskConfig]) -> tuple[ConfigGroup, ...]:
    """Group instances by config, groups ordered by their lowest id (deterministic)."""
    by_config: dict[TaskConfig, list[int]] = {}
    for instance_id, config in instances.items():
        by_config.setdefault(config, []).append(instance_id)
    groups = [ConfigGroup(config, to_ranges(ids)) for config, ids in by_config.items()]
    groups.sort(key=lambda g: g.ranges[0].first)
    return tuple(groups)


def expand_groups(groups: Iterable[ConfigGroup]) -> dict[int, TaskConfig]:
    out: dict[int, TaskConfig] = {}
    for group in groups:
        for r in group.ranges:
            for instance_id in range(r.first, r.last + 1):
                out[instance_id] = group.config
    return out


@attrs.frozen
class Job:
    """The desired config of every instance of a job. Ids need not be contiguous while an update
    is removing or adding instances."""

    key: JobKey
    groups: tuple[ConfigGroup, ...]

    @classmethod
    def uniform(cls, key: JobKey, config: TaskConfig, count: int) -> Job:
        groups = (ConfigGroup(config, (Range(0, count - 1),)),) if count > 0 else ()
        return cls(key, groups)

    @classmethod
    def from_instances(cls, key: JobKey, instances: Mapping[int, TaskConfig]) -> Job:
        return cls(key, group_configs(instances))

    def instances(self) -> dict[int, TaskConfig]:
        return expand_groups(self.groups)

    @property
    def instance_count(self) -> int:
        return sum(g.count for g in self.groups)

    def with_changes(self, changes: Mapping[int, TaskConfig | None]) -> Job:
        """The job after setting (or, with None, removing) some instances' desired configs."""
        instances = self.instances()
        for instance_id, config in changes.items():
            if config is None:
                instances.pop(instance_id, None)
            else:
                instances[instance_id] = config
        return Job.from_instances(self.key, instances)
