"""Which timelines a recovery follows (``repository.timelines``), over a pure WAL index:
a failover is followed, a side copy's branch never silently is."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from janua_backup.errors import InputError
from janua_backup.pg.wal import Lsn, TimelineHistory, WalSegment
from janua_backup.repository import timelines, window
from janua_backup.repository.select import Target, choose
from janua_backup.repository.wal_archive import ArchivedWal
from tests.unit.repository.helpers import SEG, T0, manifest


def archived(tli: int, first: int, last: int) -> list[ArchivedWal]:
    return [
        ArchivedWal(WalSegment.from_number(tli, n, SEG).name, 100, T0 + timedelta(minutes=n))
        for n in range(first, last + 1)
    ]


def fork(parent: int, seg: int, *earlier: str) -> TimelineHistory:
    """A history leaving ``parent`` inside segment ``seg`` (after ``earlier`` lines)."""
    return TimelineHistory.parse("".join([*earlier, f"{parent}\t0/{seg * SEG + 0x100:X}\tx\n"]))


def name(tli: int, n: int) -> str:
    return WalSegment.from_number(tli, n, SEG).name


def resolve(index: window.WalIndex, requested: int | None = None) -> timelines.TimelinePath:
    m = manifest()  # timeline 1, starts in segment 2
    return timelines.resolve(index, m.timeline, m.start_lsn, SEG, requested)


def test_a_single_timeline_is_followed_to_its_end() -> None:
    index = window.WalIndex.build(archived(1, 2, 9), {}, SEG)
    path = resolve(index)
    assert path.timelines == (1,) and path.conflict is None and path.describe() == "1"
    w = window.compute(manifest(), index)
    assert w.last_segment == name(1, 9) and w.conflict is None


def test_a_failover_is_followed_the_old_timeline_stops_at_the_fork() -> None:
    index = window.WalIndex.build([*archived(1, 2, 4), *archived(2, 4, 8)], {2: fork(1, 4)}, SEG)
    path = resolve(index)
    assert path.timelines == (1, 2) and path.conflict is None
    assert path.describe() == f"1 -> 2 (switch at {Lsn(4 * SEG + 0x100)})"
    assert [path.timeline_of(n, SEG) for n in (3, 4, 5)] == [1, 2, 2]
    w = window.compute(manifest(), index)
    assert w.timeline == 2 and w.last_segment == name(2, 8) and w.missing_segment is None


def test_two_failovers_in_a_row_are_followed() -> None:
    wal = [*archived(1, 2, 4), *archived(2, 4, 6), *archived(3, 6, 9)]
    histories = {2: fork(1, 4), 3: fork(2, 6, f"1\t0/{4 * SEG + 0x100:X}\tx\n")}
    index = window.WalIndex.build(wal, histories, SEG)
    assert resolve(index).timelines == (1, 2, 3)
    assert window.compute(manifest(), index).last_segment == name(3, 9)


def test_a_side_copy_forked_before_the_backup_started_is_not_on_its_path() -> None:
    # The side copy left timeline 1 in segment 1; the backup started in segment 2.
    index = window.WalIndex.build([*archived(1, 1, 9), *archived(2, 1, 12)], {2: fork(1, 1)}, SEG)
    path = resolve(index)
    assert path.timelines == (1,) and path.conflict is None
    w = window.compute(manifest(), index)
    assert w.timeline == 1 and w.last_segment == name(1, 9)
    pairs = [(manifest(), w)]
    assert choose(pairs, Target("latest")).window.timeline == 1


def side_copy_after_start() -> window.WalIndex:
    """Production carries on on timeline 1 (to segment 9); a side copy restored to a
    time inside segment 4 archived timeline 2 (segments 4..6) into the same repository."""
    return window.WalIndex.build([*archived(1, 2, 9), *archived(2, 4, 6)], {2: fork(1, 4)}, SEG)


def test_a_side_copy_forked_after_the_start_while_production_continues_is_refused() -> None:
    index = side_copy_after_start()
    path = resolve(index)
    assert path.conflict is not None and path.timelines == (1,)
    assert [(b.timeline, b.newest_segment) for b in path.conflict.branches] == [
        (1, name(1, 9)),
        (2, name(2, 6)),
    ]
    w = window.compute(manifest(), index)
    assert w.conflict == path.conflict and w.missing_segment is None
    with pytest.raises(InputError) as refused:
        choose([(manifest(), w)], Target("latest"))
    message = refused.value.message
    assert type(refused.value) is InputError and refused.value.exit_code == 4
    for needed in (
        "two branches",
        f"at {Lsn(4 * SEG + 0x100)}",
        f"timeline 1 (carries on, newest segment {name(1, 9)})",
        f"timeline 2 (forked at {Lsn(4 * SEG + 0x100)}, newest segment {name(2, 6)})",
        "--target-timeline 1 or --target-timeline 2",
    ):
        assert needed in message


@pytest.mark.parametrize(("requested", "last"), [(1, name(1, 9)), (2, name(2, 6))])
def test_target_timeline_picks_either_branch(requested: int, last: str) -> None:
    index = side_copy_after_start()
    path = resolve(index, requested)
    assert path.target == requested and path.conflict is None
    w = window.compute(manifest(), index, requested_timeline=requested)
    assert w.last_segment == last and w.timeline == requested
    assert choose([(manifest(), w)], Target("latest")).window.timeline == requested


def test_a_target_timeline_that_does_not_descend_from_the_backup_is_refused() -> None:
    index = window.WalIndex.build([*archived(1, 1, 9), *archived(2, 1, 12)], {2: fork(1, 1)}, SEG)
    with pytest.raises(InputError, match="timeline 2 does not descend from timeline 1"):
        resolve(index, 2)
    with pytest.raises(InputError, match="timeline 7 does not descend"):
        resolve(index, 7)


def test_a_newer_backup_after_the_fork_restores_production_without_a_target() -> None:
    index = side_copy_after_start()
    old, new = manifest("A"), manifest("B", start_seg=7, stop_seg=7, minutes=10)
    pairs = [(m, window.compute(m, index)) for m in (old, new)]
    chosen = choose(pairs, Target("latest"))
    assert chosen.manifest.backup_id == "B" and chosen.window.last_segment == name(1, 9)
    assert chosen.window.path is not None and chosen.window.path.timelines == (1,)


def test_a_branch_with_only_a_history_file_is_not_followed() -> None:
    index = window.WalIndex.build(archived(1, 2, 4), {2: fork(1, 4)}, SEG)
    assert resolve(index).timelines == (1,)


def test_two_new_timelines_from_one_stopped_parent_are_refused() -> None:
    # Production stopped in segment 4 (failover: timeline 2); a side copy forked in
    # segment 3 (timeline 3). Timeline 1 goes on past 3 too: three living branches.
    wal = [*archived(1, 2, 4), *archived(2, 4, 8), *archived(3, 3, 5)]
    index = window.WalIndex.build(wal, {2: fork(1, 4), 3: fork(1, 3)}, SEG)
    path = resolve(index)
    assert path.conflict is not None and path.conflict.fork == Lsn(3 * SEG + 0x100)
    assert [b.timeline for b in path.conflict.branches] == [1, 3, 2]
    message = path.conflict.message("A")
    assert "splits into 3 branches" in message
    assert "--target-timeline 1 or --target-timeline 3 or --target-timeline 2" in message


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def stamped(index: window.WalIndex, **history_minutes: int) -> window.WalIndex:
    """``index`` with its history files archived at the given minutes (``tl2=20``)."""
    times = {int(k[2:]): at(m) for k, m in history_minutes.items()}
    return replace(index, history_times=times)


def test_an_in_place_incident_restore_is_followed_its_damaged_tail_was_archived_before() -> None:
    # Timeline 1 archived segments 2..9 (minutes 2..9, the last ones holding the damage);
    # at minute 20 production was restored in place to a time in segment 4: timeline 2.
    wal = [
        *archived(1, 2, 9),
        *[replace(w, modified=at(20 + i)) for i, w in enumerate(archived(2, 4, 8))],
    ]
    index = stamped(window.WalIndex.build(wal, {2: fork(1, 4)}, SEG), tl2=20)
    path = resolve(index)
    assert path.timelines == (1, 2) and path.conflict is None
    assert window.compute(manifest(), index).last_segment == name(2, 8)


def test_a_side_copy_archiving_while_production_goes_on_is_refused_with_times_known() -> None:
    # The side copy promoted at minute 5 (timeline 2, forked in segment 4); production
    # archived segments 5..9 at minutes 5..9: still going after the branch began.
    index = stamped(side_copy_after_start(), tl2=5)
    path = resolve(index)
    assert path.conflict is not None
    assert [b.timeline for b in path.conflict.branches] == [1, 2]


def test_of_two_branches_the_newest_is_followed_when_the_other_had_ended() -> None:
    # A first in-place restore (timeline 2, minute 20) was abandoned; a second one from the
    # same backup (timeline 3, forked in segment 3, minute 40) is what runs now.
    tl2 = [replace(w, modified=at(20 + i)) for i, w in enumerate(archived(2, 4, 6))]
    tl3 = [replace(w, modified=at(40 + i)) for i, w in enumerate(archived(3, 3, 7))]
    histories = {2: fork(1, 4), 3: fork(1, 3)}
    index = window.WalIndex.build([*archived(1, 2, 9), *tl2, *tl3], histories, SEG)
    path = resolve(stamped(index, tl2=20, tl3=40))
    assert path.timelines == (1, 3) and path.conflict is None
    # Had timeline 2 still archived after timeline 3 began, neither would be chosen.
    late = replace(archived(2, 6, 6)[0], modified=at(50))
    index = window.WalIndex.build([*archived(1, 2, 9), *tl2, late, *tl3], histories, SEG)
    assert resolve(stamped(index, tl2=20, tl3=40)).conflict is not None


def test_a_parent_segment_stamped_in_the_same_second_as_the_branch_counts_as_going_on() -> None:
    # S3 keeps Last-Modified to the second: production's segment 5, stored in the second
    # the side copy's history file was, may be later; refused rather than guessed.
    wal = [*archived(1, 2, 4), replace(archived(1, 5, 5)[0], modified=at(20))]
    wal += [replace(w, modified=at(20)) for w in archived(2, 4, 6)]
    index = stamped(window.WalIndex.build(wal, {2: fork(1, 4)}, SEG), tl2=20)
    assert resolve(index).conflict is not None
