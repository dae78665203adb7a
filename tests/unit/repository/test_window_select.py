from __future__ import annotations

from datetime import timedelta

import pytest

from janua_backup.errors import TargetOutOfRange
from janua_backup.pg.wal import Lsn, TimelineHistory, WalSegment
from janua_backup.repository import window
from janua_backup.repository.select import Target, choose
from janua_backup.repository.wal_archive import ArchivedWal
from tests.unit.repository.helpers import SEG, T0, manifest


def archived(tli: int, first: int, last: int, minute: int = 5) -> list[ArchivedWal]:
    return [
        ArchivedWal(
            WalSegment.from_number(tli, n, SEG).name, 100, T0 + timedelta(minutes=minute + n)
        )
        for n in range(first, last + 1)
    ]


def test_window_runs_to_the_first_gap() -> None:
    index = window.WalIndex.build([*archived(1, 2, 5), *archived(1, 7, 8)], {}, SEG)
    w = window.compute(manifest(), index)
    assert w.restorable and w.last_segment == WalSegment.from_number(1, 5, SEG).name
    assert w.latest_lsn == Lsn(6 * SEG)
    assert w.missing_segment == WalSegment.from_number(1, 6, SEG).name


def test_a_backup_without_its_stop_segment_is_not_restorable() -> None:
    index = window.WalIndex.build(archived(1, 2, 2), {}, SEG)
    assert not window.compute(manifest(stop_seg=3), index).restorable


def test_window_follows_a_timeline_switch() -> None:
    history = TimelineHistory.parse(f"1\t0/{4 * SEG + 0x100:X}\tno recovery target\n")
    wal = [*archived(1, 2, 4), *archived(2, 4, 6)]
    index = window.WalIndex.build(wal, {2: history}, SEG)
    w = window.compute(manifest(), index)
    assert w.timeline == 2 and w.last_segment == WalSegment.from_number(2, 6, SEG).name


def test_choose_picks_the_newest_backup_before_the_target_and_refuses_outside() -> None:
    index = window.WalIndex.build(archived(1, 2, 20), {}, SEG)
    old, new = manifest("A", minutes=0), manifest("B", start_seg=10, stop_seg=10, minutes=10)
    pairs = [(m, window.compute(m, index)) for m in (old, new)]
    at = Target("time", time=T0 + timedelta(minutes=5))
    assert choose(pairs, at).manifest.backup_id == "A"
    later = Target("time", time=T0 + timedelta(minutes=20))
    assert choose(pairs, later).manifest.backup_id == "B"
    assert choose(pairs, Target("latest")).manifest.backup_id == "B"
    for outside in (T0 - timedelta(days=1), T0 + timedelta(days=1)):
        with pytest.raises(TargetOutOfRange, match="recoverable window"):
            choose(pairs, Target("time", time=outside))


def test_a_time_target_must_be_strictly_before_the_last_archived_commit() -> None:
    # PostgreSQL stops before the first commit stamped after the target: at the last
    # commit's own time nothing is left to stop at, and recovery would end short.
    index = window.WalIndex.build(archived(1, 2, 20), {}, SEG)
    (m,) = (manifest("A", minutes=0),)
    w = window.compute(m, index)
    assert w.latest_time is not None
    last_commit = w.latest_time
    pairs = [(m, w)]
    just_before = Target("time", time=last_commit - timedelta(microseconds=1))
    assert choose(pairs, just_before).manifest.backup_id == "A"
    for after in (last_commit, last_commit + timedelta(seconds=1)):
        with pytest.raises(TargetOutOfRange, match="--target latest") as refused:
            choose(pairs, Target("time", time=after))
        assert last_commit.strftime("%Y-%m-%dT%H:%M:%S") in refused.value.message
