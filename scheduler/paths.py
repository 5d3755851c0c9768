"""Every znode path pulsegate uses, built in one place under a configurable root.

    <root>/election/<uuid>_n_<seq>    ephemeral sequential: one per scheduler (identity JSON);
                                      the uuid lets a contender find its node after ConnectionLoss
    <root>/leader                     ephemeral: the acting leader, once it serves
    <root>/jobs/<job>                 a job's desired state (config groups with ranges)
    <root>/locks/<job>                the job's active-update lock (holds the update id)
    <root>/updates/<job>:<id>         an update's definition
        .../state                     summary and counters; its version is the CAS token
        .../status/s_<seq>            one status event each
        .../events/e_<seq>            a chunk of instance events per write
    <root>/hosts/<host>/<job>:<id>    a local instance's process (pid, start time, config)

`<job>` is `role:environment:name`. Names never contain `:` (see updater.keys), so the flat
form is unambiguous, and a new job or update needs no parent znodes: every create fits in one
fenced transaction.
"""

from __future__ import annotations

import attrs

from updater.keys import JobKey, UpdateKey


def job_node(key: JobKey) -> str:
    return f"{key.role}:{key.environment}:{key.name}"


def parse_job_node(name: str) -> JobKey | None:
    parts = name.split(":")
    return JobKey(*parts) if len(parts) == 3 else None


def update_node(key: UpdateKey) -> str:
    return f"{job_node(key.job)}:{key.id}"


def parse_update_node(name: str) -> UpdateKey | None:
    parts = name.split(":")
    return UpdateKey(JobKey(*parts[:3]), parts[3]) if len(parts) == 4 else None


def election_sequence(name: str) -> int:
    """The sequence number of an election node's name (ZooKeeper's 10 digits at the end): the
    order of contenders, whatever their prefix."""
    return int(name[-10:])


@attrs.frozen
class Paths:
    root: str = "/pulsegate"

    def __attrs_post_init__(self) -> None:
        if (
            not self.root.startswith("/")
            or self.root.endswith("/")
            or "//" in self.root
            or len(self.root) < 2
        ):
            raise ValueError(f"bad ZooKeeper root {self.root!r}")

    @property
    def election(self) -> str:
        return f"{self.root}/election"

    def contender_prefix(self, contender: str) -> str:
        """A contender's election node, before ZooKeeper appends the sequence number."""
        return f"{self.root}/election/{contender}_n_"

    @property
    def leader(self) -> str:
        return f"{self.root}/leader"

    @property
    def jobs(self) -> str:
        return f"{self.root}/jobs"

    @property
    def locks(self) -> str:
        return f"{self.root}/locks"

    @property
    def updates(self) -> str:
        return f"{self.root}/updates"

    @property
    def hosts(self) -> str:
        return f"{self.root}/hosts"

    def host(self, name: str) -> str:
        return f"{self.hosts}/{name}"

    def instance_record(self, host: str, job: JobKey, instance_id: int) -> str:
        return f"{self.host(host)}/{job_node(job)}:{instance_id}"

    def job(self, key: JobKey) -> str:
        return f"{self.jobs}/{job_node(key)}"

    def lock(self, key: JobKey) -> str:
        return f"{self.locks}/{job_node(key)}"

    def update(self, key: UpdateKey) -> str:
        return f"{self.updates}/{update_node(key)}"

    def state(self, key: UpdateKey) -> str:
        return f"{self.update(key)}/state"

    def status(self, key: UpdateKey) -> str:
        return f"{self.update(key)}/status"

    def status_prefix(self, key: UpdateKey) -> str:
        return f"{self.update(key)}/status/s_"

    def events(self, key: UpdateKey) -> str:
        return f"{self.update(key)}/events"

    def events_prefix(self, key: UpdateKey) -> str:
        return f"{self.update(key)}/events/e_"

    def containers(self) -> tuple[str, ...]:
        """Created once at start-up."""
        return (self.election, self.jobs, self.locks, self.updates, self.hosts)
