"""Retention: the keep/expire rule and the WAL horizon, by example and by property."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janua_backup.errors import InputError
from janua_backup.pg.wal import (
    DEFAULT_SEGMENT_SIZE,
    Lsn,
    WalSegment,
    backup_history_file_name,
    history_file_name,
)
from janua_backup.retention import (
    BEFORE_WINDOW,
    INSIDE_WINDOW,
    MINIMUM_COUNT,
    PINNED,
    BackupRef,
    Decision,
    decide,
    wal_to_delete,
)

NOW = datetime(2024, 6, 30, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MIB = 1024 * 1024
SEG = DEFAULT_SEGMENT_SIZE


def ref(
    backup_id: str,
    stop: datetime,
    *,
    duration: timedelta = timedelta(minutes=20),
    start_lsn: int = 0,
    timeline: int = 1,
    pinned: bool = False,
    depends_on: str | None = None,
) -> BackupRef:
    return BackupRef(
        backup_id=backup_id,
        start_time=stop - duration,
        stop_time=stop,
        start_lsn=Lsn(start_lsn),
        timeline=timeline,
        pinned=pinned,
        depends_on=depends_on,
    )


def nightly(days: int) -> list[BackupRef]:
    """One backup a night at 02:20 for ``days`` nights up to NOW, named by day number."""
    last = NOW.replace(hour=2, minute=20)
    return [
        ref(f"b{n:02d}", last - (days - 1 - n) * DAY, start_lsn=n * 4 * SEG) for n in range(days)
    ]


# --- decide: examples -----------------------------------------------------------------------------


def test_no_backups_no_decision() -> None:
    assert decide([], NOW, 30 * DAY, 2) == Decision(keep=(), expire=(), reasons={})


def test_forty_nights_with_a_thirty_day_window() -> None:
    backups = nightly(40)
    random.Random(4).shuffle(backups)  # input order does not matter
    decision = decide(backups, NOW, 30 * DAY, 2)
    # NOW - 30 days is 2024-05-31 12:00; b09 stopped 2024-05-31 02:20, just before it.
    assert decision.keep == tuple(f"b{n:02d}" for n in range(9, 40))
    assert decision.expire == tuple(f"b{n:02d}" for n in range(9))
    assert decision.reasons["b09"] == BEFORE_WINDOW
    assert decision.reasons["b10"] == INSIDE_WINDOW
    assert decision.reasons["b39"] == INSIDE_WINDOW
    assert list(decision.reasons) == list(decision.keep)


def test_a_backup_stopping_exactly_at_the_cutoff_is_the_newest_before() -> None:
    cutoff = NOW - 7 * DAY
    backups = [ref("old", cutoff - DAY), ref("edge", cutoff), ref("new", cutoff + DAY)]
    decision = decide(backups, NOW, 7 * DAY, 1)
    assert decision.keep == ("edge", "new")
    assert decision.reasons == {"edge": BEFORE_WINDOW, "new": INSIDE_WINDOW}
    assert decision.expire == ("old",)


def test_the_minimum_count_keeps_old_backups_when_backups_stopped() -> None:
    backups = [ref(f"b{n}", NOW - (100 - n) * DAY) for n in range(5)]
    decision = decide(backups, NOW, 30 * DAY, 3)
    assert decision.keep == ("b2", "b3", "b4")
    assert decision.reasons == {"b2": MINIMUM_COUNT, "b3": MINIMUM_COUNT, "b4": BEFORE_WINDOW}
    assert decision.expire == ("b0", "b1")


def test_a_zero_window_keeps_the_newest_and_the_minimum() -> None:
    backups = nightly(5)
    assert decide(backups, NOW, timedelta(0), 1).keep == ("b04",)
    assert decide(backups, NOW, timedelta(0), 2).keep == ("b03", "b04")
    assert decide(backups, NOW, timedelta(0), 0).keep == ("b04",)


def test_pinned_backups_are_never_expired_and_say_so() -> None:
    backups = nightly(40)
    backups[2] = ref("b02", backups[2].stop_time, pinned=True)
    backups[20] = ref("b20", backups[20].stop_time, pinned=True)
    decision = decide(backups, NOW, 30 * DAY, 2)
    assert "b02" in decision.keep
    assert decision.reasons["b02"] == PINNED
    assert decision.reasons["b20"] == PINNED  # inside the window too; pinned says more
    assert "b01" in decision.expire and "b03" in decision.expire


def test_a_kept_backup_keeps_its_whole_chain() -> None:
    backups = [
        ref("full", NOW - 50 * DAY),
        ref("incr1", NOW - 45 * DAY, depends_on="full"),
        ref("incr2", NOW - 40 * DAY, depends_on="incr1"),
        ref("full2", NOW - 35 * DAY),
        ref("incr3", NOW - 2 * DAY, depends_on="incr2"),
    ]
    decision = decide(backups, NOW, 30 * DAY, 1)
    assert decision.keep == ("full", "incr1", "incr2", "full2", "incr3")
    assert decision.reasons == {
        "full": "needed by incr1",
        "incr1": "needed by incr2",
        "incr2": "needed by incr3",
        "full2": BEFORE_WINDOW,
        "incr3": INSIDE_WINDOW,
    }
    assert decision.expire == ()


def test_an_expired_chain_goes_whole() -> None:
    backups = [
        ref("full", NOW - 50 * DAY),
        ref("incr", NOW - 49 * DAY, depends_on="full"),
        ref("full2", NOW - 40 * DAY),
    ]
    decision = decide(backups, NOW, 30 * DAY, 1)
    assert decision.keep == ("full2",)
    assert decision.expire == ("full", "incr")


def test_times_in_another_zone_compare_as_instants() -> None:
    plus_two = timezone(timedelta(hours=2))
    cutoff = NOW - 7 * DAY
    inside = ref("inside", (cutoff + timedelta(minutes=1)).astimezone(plus_two))
    before = ref("before", (cutoff - timedelta(minutes=1)).astimezone(plus_two))
    older = ref("older", cutoff - DAY)
    decision = decide([inside, before, older], NOW.astimezone(plus_two), 7 * DAY, 1)
    assert decision.keep == ("before", "inside")


@pytest.mark.parametrize(
    ("backups", "now", "message"),
    [
        ([], NOW.replace(tzinfo=None), "now"),
        ([ref("naive", NOW.replace(tzinfo=None))], NOW, "naive"),
        ([ref("a", NOW), ref("a", NOW - DAY)], NOW, "listed twice"),
        ([ref("a", NOW, depends_on="gone")], NOW, "depends on gone"),
        ([ref("a", NOW, depends_on="b"), ref("b", NOW - DAY, depends_on="a")], NOW, "cycle"),
    ],
)
def test_bad_input_is_a_programming_error(
    backups: list[BackupRef], now: datetime, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        decide(backups, now, DAY, 1)


def test_negative_window_or_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        decide(nightly(2), NOW, -DAY, 1)
    with pytest.raises(ValueError, match="negative"):
        decide(nightly(2), NOW, DAY, -1)


# --- decide: properties ---------------------------------------------------------------------------

minutes = st.integers(min_value=0, max_value=60 * 24 * 90)


@st.composite
def backup_sets(draw: st.DrawFn) -> list[BackupRef]:
    """Up to 12 backups in the 90 days before NOW (some after it: a clock ahead), some
    pinned, some incremental on an older one; ids do not follow time order."""
    count = draw(st.integers(min_value=0, max_value=12))
    backups: list[BackupRef] = []
    for index in range(count):
        stop = (
            NOW
            - timedelta(minutes=draw(minutes))
            + timedelta(hours=draw(st.sampled_from([0, 0, 0, 5])))
        )
        duration = timedelta(minutes=draw(st.integers(min_value=0, max_value=600)))
        parent = None
        incremental = draw(st.booleans())
        if backups and incremental:
            parent = draw(st.sampled_from(backups)).backup_id
        backups.append(
            BackupRef(
                backup_id=f"id{draw(st.integers(0, 999)):03d}-{index}",
                start_time=stop - duration,
                stop_time=stop,
                start_lsn=Lsn(draw(st.integers(min_value=0, max_value=2**40))),
                timeline=draw(st.integers(min_value=1, max_value=3)),
                pinned=draw(st.integers(0, 5)) == 0,
                depends_on=parent,
            )
        )
    return backups


windows = st.integers(min_value=0, max_value=60 * 24 * 60).map(lambda m: timedelta(minutes=m))


def check_rule(backups: Sequence[BackupRef], window: timedelta, minimum: int, d: Decision) -> None:
    by_id = {b.backup_id: b for b in backups}
    kept = set(d.keep)
    assert kept | set(d.expire) == set(by_id)
    assert not kept & set(d.expire)
    assert set(d.reasons) == kept
    # Oldest first, both lists.
    for ids in (d.keep, d.expire):
        stops = [(by_id[i].stop_time, by_id[i].start_time, i) for i in ids]
        assert stops == sorted(stops)
    assert all(b.backup_id in kept for b in backups if b.pinned)
    assert len(kept) >= min(minimum, len(backups))
    assert all(by_id[i].depends_on in kept for i in kept if by_id[i].depends_on)
    # Any moment of the window from the first backup's stop on has a kept backup that was
    # consistent by then. The earliest such moment is the hardest to cover.
    cutoff = NOW - window
    if backups:
        earliest = max(cutoff, min(b.stop_time for b in backups))
        if earliest <= NOW:
            assert any(by_id[i].stop_time <= earliest for i in kept)
    # Nothing is kept without a reason: an expired backup has none of them.
    newest = sorted(backups, key=lambda b: (b.stop_time, b.start_time, b.backup_id))
    newest_before = [b for b in newest if b.stop_time <= cutoff][-1:]
    top = newest[len(newest) - min(minimum, len(newest)) :]
    for backup_id in d.expire:
        backup = by_id[backup_id]
        assert not backup.pinned
        assert backup.stop_time <= cutoff
        assert backup not in newest_before
        assert backup not in top


@settings(max_examples=300, deadline=None)
@given(backup_sets(), windows, st.integers(min_value=0, max_value=4), st.randoms())
def test_every_decision_keeps_the_promise(
    backups: list[BackupRef], window: timedelta, minimum: int, rnd: random.Random
) -> None:
    decision = decide(backups, NOW, window, minimum)
    check_rule(backups, window, minimum, decision)
    shuffled = list(backups)
    rnd.shuffle(shuffled)
    assert decide(shuffled, NOW, window, minimum) == decision


# --- wal_to_delete: examples ------------------------------------------------------------------


def seg(timeline: int, number: int, size: int = SEG) -> str:
    return WalSegment.from_number(timeline, number, size).name


def test_nothing_kept_deletes_nothing() -> None:
    names = [seg(1, n) for n in range(10)]
    assert wal_to_delete(names, [], SEG) == []


def test_the_horizon_is_the_oldest_kept_start_on_every_timeline() -> None:
    kept = [
        ref("a", NOW - DAY, start_lsn=0x0A * SEG + 0x28, timeline=1),
        ref("b", NOW, start_lsn=0x20 * SEG + 0x60, timeline=2),
    ]
    names = [
        seg(1, 0x08),
        seg(1, 0x09),
        seg(1, 0x0A),  # a's start segment: kept
        seg(1, 0x0B),
        seg(1, 0x0C) + ".partial",  # timeline 1 ended here; above the horizon
        seg(1, 0x09) + ".partial",
        history_file_name(2),
        history_file_name(3),
        seg(2, 0x05),  # an older timeline 2 that forked long ago: below the horizon
        seg(2, 0x0C),
        seg(3, 0x01),
        backup_history_file_name(1, Lsn(0x09 * SEG + 0x28)),  # an expired backup's label
        backup_history_file_name(1, Lsn(0x0A * SEG + 0x28)),  # a's own label
        "archive_status",
        "000000010000000000000009.tmp",
        "00000000000000000000000A",  # timeline 0 is not a WAL file
    ]
    assert wal_to_delete(names, kept, SEG) == sorted(
        [
            seg(1, 0x08),
            seg(1, 0x09),
            seg(1, 0x09) + ".partial",
            seg(2, 0x05),
            seg(3, 0x01),
            backup_history_file_name(1, Lsn(0x09 * SEG + 0x28)),
        ]
    )


def test_segment_numbers_cross_log_ids() -> None:
    size = 1 * MIB  # 4096 segments per log id: names roll over at ...00000FFF
    kept = [ref("a", NOW, start_lsn=4096 * size + 5)]
    names = [seg(1, 4094, size), seg(1, 4095, size), seg(1, 4096, size), seg(1, 4097, size)]
    assert names[1].endswith("0000000000000FFF") and names[2].endswith("0000000100000000")
    assert wal_to_delete(names, kept, size) == names[:2]


def test_names_that_do_not_fit_the_segment_size_are_an_error() -> None:
    # 000010000 is no 16 MiB segment (256 per log id): the archive has another size.
    with pytest.raises(InputError, match="beyond"):
        wal_to_delete(["000000010000000000001000"], [ref("a", NOW, start_lsn=SEG)], SEG)
    with pytest.raises(InputError, match="power of two"):
        wal_to_delete([], [ref("a", NOW)], 3 * MIB)


# --- wal_to_delete: property ----------------------------------------------------------------------

SIZES = st.sampled_from([1 * MIB, 16 * MIB, 64 * MIB])


@st.composite
def archives(draw: st.DrawFn) -> tuple[int, list[str], list[BackupRef]]:
    size = draw(SIZES)
    numbers = st.integers(min_value=0, max_value=3 * (1 << 32) // size)
    names: list[str] = []
    for _ in range(draw(st.integers(min_value=0, max_value=40))):
        timeline = draw(st.integers(min_value=1, max_value=4))
        name = seg(timeline, draw(numbers), size)
        kind = draw(st.sampled_from(["segment", "segment", "partial", "backup", "history"]))
        if kind == "partial":
            name += ".partial"
        elif kind == "backup":
            name += f".{draw(st.integers(0, size - 1)):08X}.backup"
        elif kind == "history":
            name = history_file_name(timeline)
        names.append(name)
    kept = [
        ref(f"k{i}", NOW, start_lsn=draw(numbers) * size + draw(st.integers(0, size - 1)))
        for i in range(draw(st.integers(min_value=0, max_value=4)))
    ]
    return size, names, kept


@settings(max_examples=300, deadline=None)
@given(archives())
def test_wal_deletions_never_touch_what_a_kept_backup_needs(
    archive: tuple[int, list[str], list[BackupRef]],
) -> None:
    size, names, kept = archive
    deleted = wal_to_delete(names, kept, size)
    assert deleted == sorted(deleted)
    assert set(deleted) <= set(names)
    if not kept:
        assert deleted == []
        return
    starts = [WalSegment.from_lsn(b.timeline, b.start_lsn, size).number for b in kept]
    for name in deleted:
        assert not name.endswith(".history")
        assert WalSegment.parse(name[:24], size).number < min(starts)
    # And everything below the horizon that is not a history file goes.
    for name in set(names) - set(deleted):
        assert name.endswith(".history") or WalSegment.parse(name[:24], size).number >= min(starts)
