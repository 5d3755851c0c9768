"""What a takeover makes of the local driver's view: the records, the process table and what the
driver remembers, reconciled into one picture before it acts.

The records decide, not memory: a scheduler that led before may remember processes another
leader has since replaced with its own. The process table fills the records' gaps: every
instance carries its identity in its environment, so one whose record never landed (ZooKeeper was
away when it started, and its leader went) is found, adopted and recorded. Whatever the plan does
not keep or adopt and may still run is a copy, to be stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs

from scheduler.drivers.instance import Instance
from scheduler.drivers.process import (
    ProcessGroup,
    ProcessId,
    identify,
    is_session_leader,
    scan_scope,
)
from scheduler.drivers.records import InstanceRecord
from updater.errors import PulsegateError
from updater.keys import JobKey

Key = tuple[JobKey, int]
DIGEST_VAR = "PULSEGATE_CONFIG_DIGEST"
JOB_VAR = "PULSEGATE_JOB"
INSTANCE_VAR = "PULSEGATE_INSTANCE_ID"


@attrs.frozen
class Rebuild:
    keep: dict[Key, Instance]  # known, and the very process the records (or the table) name
    adopt: dict[Key, InstanceRecord]  # running, to adopt
    record: list[InstanceRecord]  # found running without a record
    rerecord: list[Instance]  # known, alive, and lost by the records
    strays: list[Instance]  # copies of an instance another process is, to stop
    forget: list[Key]  # records of processes that are gone


def ident(record: InstanceRecord) -> ProcessId:
    return ProcessId(record.pid, record.start_ticks, record.boot_id)


def still_runs(record: InstanceRecord) -> bool:
    """Whether the recorded process is still that process (pid, start time since boot, boot
    id) and leads its own group, as every process `spawn` starts does."""
    return ident(record).is_alive() and is_session_leader(record.pid)


def find_processes(
    scope: str, log_path: Callable[[JobKey, int], Path]
) -> dict[Key, list[InstanceRecord]]:
    """The cluster's instances in the process table, recorded or not, as records built from
    the identity in their environment, newest first."""
    found: dict[Key, list[InstanceRecord]] = {}
    for pid, env in scan_scope(scope).items():
        process = identify(pid)
        try:
            job = JobKey.parse(env[JOB_VAR])
            instance_id = int(env[INSTANCE_VAR])
            port = int(env.get("PORT", "0"))
        except (KeyError, ValueError, PulsegateError):
            continue
        if process is None:
            continue
        record = InstanceRecord(
            job,
            instance_id,
            pid,
            process.start_ticks,
            process.boot_id,
            env.get(DIGEST_VAR, ""),
            port,
            str(log_path(job, instance_id)),
            0,
        )
        found.setdefault((job, instance_id), []).append(record)
    for records in found.values():
        records.sort(key=lambda r: r.start_ticks, reverse=True)
    return found


def plan(
    alive: Mapping[Key, InstanceRecord],
    dead: Sequence[Key],
    found: Mapping[Key, Sequence[InstanceRecord]],
    known: Mapping[Key, Instance],
    stopping: Sequence[Instance] = (),
) -> Rebuild:
    """`alive`: the records whose process still runs; `dead`: the others; `found`: the process
    table's; `known`: what the driver remembers; `stopping`: copies it is stopping already."""
    out = Rebuild({}, {}, [], [], [], list(dead))
    named = dict(alive)
    known_pids = {i.ident.pid for i in (*known.values(), *stopping) if i.ident is not None}
    for key, records in found.items():
        for record in records:
            if key in named and named[key].pid == record.pid:
                continue
            if key not in named:
                named[key] = record
                out.record.append(record)
            elif record.pid not in known_pids:  # the driver's own copies are handled below
                stray = Instance(*key)
                stray.ident = ident(record)
                stray.group = ProcessGroup(record.pid)
                out.strays.append(stray)
    left = dict(known)
    for key, record in named.items():
        inst = left.pop(key, None)
        if inst is not None and inst.ident == ident(record):
            out.keep[key] = inst
            continue
        if inst is not None:
            _discard(inst, out)
        out.adopt[key] = record
    for key, inst in left.items():
        if inst.ident is not None and inst.is_alive():  # found by no scan (no scope): keep it
            out.keep[key] = inst
            out.rerecord.append(inst)
        else:
            _discard(inst, out)
    return out


def _discard(inst: Instance, out: Rebuild) -> None:
    """Forget an instance the records contradict; what of it may still run is stopped."""
    if inst.group is not None or (inst.ident is not None and inst.is_alive()):
        out.strays.append(inst)
