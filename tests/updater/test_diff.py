"""Job diff: added, changed, removed, unchanged; scoped; no-op."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from updater.diff import diff_job
from updater.errors import InvalidRequest, NoopUpdate
from updater.job import Job
from updater.ranges import Range, subtract, to_ids, to_ranges
from updater.record import UpdateRequest, plan_update
from updater.settings import Settings
from updater.status import UpdateStatus

from builders import JOB, NEW, OLD


def current(n: int, config=OLD) -> dict:
    return dict.fromkeys(range(n), config)


def test_change_grow_and_shrink() -> None:
    d = diff_job(current(5), NEW, 7)
    assert (d.added, d.changed, d.removed, d.unchanged) == ((Range(5, 6),), (Range(0, 4),), (), ())
    d = diff_job(current(5), NEW, 3)
    assert (d.added, d.changed, d.removed) == ((), (Range(0, 2),), (Range(3, 4),))
    assert d.old[0].config == OLD and d.old[0].ranges == (Range(0, 4),)


def test_add_only_and_remove_only() -> None:
    d = diff_job(current(3), OLD, 5)
    assert (d.added, d.changed, d.removed, d.unchanged) == ((Range(3, 4),), (), (), (Range(0, 2),))
    d = diff_job(current(5), OLD, 2)
    assert (d.added, d.changed, d.removed) == ((), (), (Range(2, 4),))


def test_mixed_configs_keep_each_old_config() -> None:
    mixed = {0: OLD, 1: NEW, 2: OLD}
    d = diff_job(mixed, NEW, 3)
    assert d.changed == (Range(0, 0), Range(2, 2)) and d.unchanged == (Range(1, 1),)


def test_noop() -> None:
    assert diff_job(current(3), OLD, 3).is_noop
    assert diff_job({}, OLD, 0).is_noop


def test_scope_restricts_the_diff() -> None:
    d = diff_job(current(5), NEW, 8, (Range(1, 2), Range(6, 6)))
    assert (d.added, d.changed, d.removed) == ((Range(6, 6),), (Range(1, 2),), ())
    # As in Aurora (and docs/api.md): current instances outside the scope are unchanged.
    assert d.unchanged == (Range(0, 0), Range(3, 4))
    assert [(g.config, g.ranges) for g in d.old] == [(OLD, (Range(1, 2),))]  # replaced: 1-2


def test_a_scoped_shrink_leaves_the_instances_outside_it_unchanged() -> None:
    d = diff_job(current(6), NEW, 2, (Range(4, 4),))
    assert (d.added, d.changed, d.removed, d.unchanged) == (
        (),
        (),
        (Range(4, 4),),
        (
            Range(0, 3),
            Range(5, 5),
        ),
    )


def test_scope_with_unknown_ids_is_refused() -> None:
    with pytest.raises(InvalidRequest) as raised:
        diff_job(current(5), NEW, 5, (Range(3, 9),))
    assert raised.value.field == "settings.updateOnlyTheseInstances"
    assert "5-9" in raised.value.rule


def test_a_scope_spanning_every_possible_id_is_refused_without_expanding_it() -> None:
    # One range from the wire may cover 2^31 ids; expanding it would take the leader's memory.
    with pytest.raises(InvalidRequest) as raised:
        diff_job(current(3), NEW, 3, (Range(0, 2**31 - 1), Range(5, 2**31 - 1)))
    assert "3-2147483647" in raised.value.rule


ids = st.lists(st.integers(0, 40), max_size=25)


@given(ids, ids)
def test_subtract_matches_set_difference(a: list[int], b: list[int]) -> None:
    assert subtract(to_ranges(a), to_ranges(b)) == to_ranges(set(a) - set(b))
    assert to_ids(subtract(to_ranges(a), ())) == sorted(set(a))


def test_plan_update_refuses_noop_and_starts_awaiting_pulse_when_coordinated() -> None:
    job = Job.uniform(JOB, OLD, 3)
    with pytest.raises(NoopUpdate):
        plan_update(UpdateRequest(JOB, OLD, 3), job, "u1", "alice", "", 0)
    record, _ = plan_update(
        UpdateRequest(JOB, NEW, 3, Settings(heartbeat_timeout_ms=5000)), job, "u1", "al", "", 7
    )
    assert record.status is UpdateStatus.ROLL_FORWARD_AWAITING_PULSE
    assert record.status_events[0].timestamp_ms == 7
    record, _ = plan_update(UpdateRequest(JOB, NEW, 3), job, "u2", "alice", "go", 7)
    assert record.status is UpdateStatus.ROLLING_FORWARD


def test_plan_update_checks_the_instance_count() -> None:
    with pytest.raises(InvalidRequest) as raised:
        plan_update(UpdateRequest(JOB, NEW, 10_001), None, "u1", "a", "", 0)
    assert raised.value.field == "instanceCount"
    with pytest.raises(InvalidRequest):
        plan_update(UpdateRequest(JOB, NEW, -1), None, "u1", "a", "", 0)


def test_forward_order_is_added_changed_removed() -> None:
    job = Job.from_instances(JOB, {0: OLD, 1: OLD, 2: OLD, 3: OLD, 5: OLD})
    record, _ = plan_update(
        UpdateRequest(JOB, NEW, 5, Settings(update_only_these_instances=(Range(1, 5),))),
        job,
        "u1",
        "a",
        "",
        0,
    )
    # 4 is added, 1-3 changed, 5 removed; 0 out of scope.
    assert record.definition.forward_order() == [4, 1, 2, 3, 5]


@given(st.integers(0, 12), st.integers(0, 12), st.lists(st.integers(0, 12), max_size=6))
def test_every_current_instance_is_in_exactly_one_list(have: int, want: int, scope) -> None:
    known = set(range(have)) | set(range(want))
    ranges = to_ranges(i for i in scope if i in known)
    d = diff_job(current(have), NEW, want, ranges)
    lists = [set(to_ids(r)) for r in (d.added, d.changed, d.removed, d.unchanged)]
    assert sum(len(ids) for ids in lists) == len(set().union(*lists))  # disjoint
    assert set().union(*lists[1:]) == set(range(have))  # every current id, once
