from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from janua_backup.errors import FormatError, InputError, RepositoryMismatch, TargetOutOfRange
from janua_backup.pg.wal import (
    DEFAULT_SEGMENT_SIZE,
    PAGE_MAGIC,
    HistoryEntry,
    Lsn,
    SegmentHeader,
    TimelineHistory,
    TimelineSpan,
    WalFileKind,
    WalSegment,
    backup_history_file_name,
    check_segment_header,
    check_segment_size,
    checked_segment,
    classify,
    header_segment,
    history_file_name,
    parse_segment_header,
    path_segments,
    segments_between,
    segments_per_log,
    timeline_of,
    wal_needed,
    wal_path,
)

from .builders import SYSID, segment_header

MIB = 1024 * 1024
SIZES = [1 * MIB, 16 * MIB, 64 * MIB]
lsn_values = st.integers(min_value=0, max_value=2**64 - 1)


def lsn(text: str) -> Lsn:
    return Lsn.parse(text)


# --- Lsn ---------------------------------------------------------------------------------


def test_lsn_parses_and_prints_postgresql_form() -> None:
    value = Lsn.parse("16/B374D848")
    assert value.value == 0x16_B374D848
    assert str(value) == "16/B374D848"
    assert repr(value) == "Lsn('16/B374D848')"
    assert str(Lsn.parse("16/b374d848")) == "16/B374D848"  # pg_lsn accepts lowercase
    assert str(Lsn(0)) == "0/0"
    assert str(Lsn.parse("0/00000028")) == "0/28"  # PostgreSQL prints no leading zeros


@pytest.mark.parametrize(
    "text",
    [
        "",
        "16B374D848",
        "16/",
        "/1",
        "1/2/3",
        "123456789/0",
        "0/123456789",
        "G/0",
        " 0/0",
        "0/0\n",
        "-1/0",
        "0x1/0",
    ],
)
def test_lsn_parse_rejects_with_the_expected_form(text: str) -> None:
    with pytest.raises(InputError, match=r"X/Y") as caught:
        Lsn.parse(text)
    assert caught.value.exit_code == 4


@given(lsn_values)
def test_lsn_round_trips_through_text(value: int) -> None:
    text = str(Lsn(value))
    assert re.fullmatch(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}", text)
    assert Lsn.parse(text) == Lsn(value)
    assert Lsn.parse(text.lower()) == Lsn(value)


@given(lsn_values, lsn_values)
def test_lsn_arithmetic_and_order_follow_the_integers(a: int, b: int) -> None:
    assert Lsn(a) - Lsn(b) == a - b
    assert (Lsn(a) < Lsn(b)) == (a < b)
    assert (Lsn(a) == Lsn(b)) == (a == b)
    assert len({Lsn(a), Lsn(b)}) == len({a, b})
    low, high = min(a, b), max(a, b)
    assert Lsn(low) + (high - low) == Lsn(high)
    assert Lsn(high) - (high - low) == Lsn(low)


def test_lsn_rejects_values_outside_64_bits_and_mixed_types() -> None:
    with pytest.raises(InputError):
        Lsn(-1)
    with pytest.raises(InputError):
        Lsn(2**64)
    with pytest.raises(InputError):
        Lsn(2**64 - 1) + 1
    with pytest.raises(InputError):
        Lsn(0) - 1
    with pytest.raises(TypeError):
        Lsn(1) + Lsn(2)  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = Lsn(1) < 2  # type: ignore[operator]
    assert Lsn(5) != 5  # type: ignore[comparison-overlap]


# --- WalSegment --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "name", "start", "end"),
    [
        (16 * MIB, "0000000100000016000000B3", "16/B3000000", "16/B4000000"),
        (1 * MIB, "000000010000001600000B37", "16/B3700000", "16/B3800000"),
        (64 * MIB, "00000001000000160000002C", "16/B0000000", "16/B4000000"),
    ],
)
def test_segment_of_an_lsn_for_each_size(size: int, name: str, start: str, end: str) -> None:
    segment = WalSegment.from_lsn(1, lsn("16/B374D848"), size)
    assert segment.name == name
    assert str(segment) == name
    assert segment.start_lsn == lsn(start)
    assert segment.end_lsn == lsn(end)
    assert segment.contains(lsn("16/B374D848"))
    assert not segment.contains(segment.end_lsn)
    assert WalSegment.parse(name, size) == segment


@pytest.mark.parametrize("size", SIZES)
@given(data=st.data())
def test_segment_name_number_and_lsn_round_trip(size: int, data: st.DataObject) -> None:
    number = data.draw(st.integers(0, 2**32 * segments_per_log(size) - 1))
    timeline = data.draw(st.integers(1, 0xFFFFFFFF))
    segment = WalSegment.from_number(timeline, number, size)
    assert segment.number == number
    assert WalSegment.parse(segment.name, size) == segment
    assert WalSegment.from_lsn(timeline, segment.start_lsn, size) == segment
    assert WalSegment.from_lsn(timeline, segment.start_lsn + (size - 1), size) == segment
    assert timeline_of(segment.name) == timeline


def test_segments_per_log_follows_the_size() -> None:
    assert segments_per_log(16 * MIB) == 0x100
    assert segments_per_log(1 * MIB) == 0x1000
    assert segments_per_log(64 * MIB) == 0x40
    assert segments_per_log(1024 * MIB) == 4


@pytest.mark.parametrize(
    ("size", "last", "following"),
    [
        (16 * MIB, "0000000100000000000000FF", "000000010000000100000000"),
        (1 * MIB, "000000010000000000000FFF", "000000010000000100000000"),
        (64 * MIB, "00000002000000AB0000003F", "00000002000000AC00000000"),
    ],
)
def test_next_crosses_the_log_boundary(size: int, last: str, following: str) -> None:
    segment = WalSegment.parse(last, size)
    assert segment.next().name == following
    assert segment.next().start_lsn == segment.end_lsn


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("000000010000000000000100", 16 * MIB),  # seg 0x100 does not exist with 16 MiB
        ("000000010000000000000040", 64 * MIB),
        ("00000001000000000000000a", 16 * MIB),  # lowercase
        ("00000001000000000000001", 16 * MIB),  # 23 digits
        ("000000000000000000000001", 16 * MIB),  # timeline 0
        ("000000010000000000000001.partial", 16 * MIB),
    ],
)
def test_segment_parse_rejects(name: str, size: int) -> None:
    with pytest.raises(InputError):
        WalSegment.parse(name, size)


@pytest.mark.parametrize("size", [0, 512 * 1024, 3 * MIB, 2048 * MIB, 16 * MIB + 1])
def test_segment_size_must_be_a_power_of_two_between_1mib_and_1gib(size: int) -> None:
    with pytest.raises(InputError):
        check_segment_size(size)
    with pytest.raises(InputError):
        WalSegment(1, 0, 0, size)


def test_segments_order_by_timeline_then_number_which_is_name_order() -> None:
    names = [
        "000000020000000000000001",
        "000000010000000100000000",
        "0000000100000000000000FF",
        "000000010000000000000002",
    ]
    segments = [WalSegment.parse(name) for name in names]
    assert [s.name for s in sorted(segments)] == sorted(names)
    assert WalSegment.parse("0000000100000000000000FF") < WalSegment.parse(
        "000000010000000100000000"
    )


def test_before_lsn_is_the_segment_holding_the_previous_byte() -> None:
    assert WalSegment.before_lsn(1, lsn("0/3000000")).name == "000000010000000000000002"
    assert WalSegment.before_lsn(1, lsn("0/3000001")).name == "000000010000000000000003"
    with pytest.raises(InputError):
        WalSegment.before_lsn(1, Lsn(0))


def test_segments_between_treats_the_end_as_exclusive() -> None:
    def names(start: str, end: str, size: int = DEFAULT_SEGMENT_SIZE) -> list[str]:
        return [s.name for s in segments_between(1, lsn(start), lsn(end), size)]

    assert names("0/1000028", "0/3000000") == [
        "000000010000000000000001",
        "000000010000000000000002",
    ]
    assert names("0/1000028", "0/3000001")[-1] == "000000010000000000000003"
    assert names("0/2000000", "0/2000000") == []
    assert names("0/FF000000", "1/1000000") == [
        "0000000100000000000000FF",
        "000000010000000100000000",
    ]
    assert len(names("0/0", "1/0", 1 * MIB)) == 0x1000
    with pytest.raises(InputError):
        names("0/3000000", "0/2000000")


# --- file names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "timeline"),
    [
        ("000000010000000000000001", WalFileKind.SEGMENT, 1),
        ("0000000A0000000100000002.partial", WalFileKind.PARTIAL, 10),
        ("00000002.history", WalFileKind.HISTORY, 2),
        ("000000010000000000000002.00000028.backup", WalFileKind.BACKUP_LABEL, 1),
    ],
)
def test_classify_each_kind(name: str, kind: WalFileKind, timeline: int) -> None:
    assert classify(name) is kind
    assert timeline_of(name) == timeline


@pytest.mark.parametrize(
    "name",
    [
        "",
        "00000001000000000000000a",
        "00000002.HISTORY",
        "0000002.history",
        "000000010000000000000001.partial.tmp",
        "000000010000000000000001\n",
        "000000010000000000000001.backup",
        "00000000.history",
        "000000000000000000000001",
        "archive_status",
        "RECOVERYHISTORY",
        "RECOVERYXLOG",
        "000000010000000000000001.00000028.backup.gz",
    ],
)
def test_classify_rejects_what_postgresql_never_writes(name: str) -> None:
    with pytest.raises(InputError, match="not a WAL file name"):
        classify(name)
    with pytest.raises(InputError):
        timeline_of(name)


def test_history_and_backup_file_names() -> None:
    assert history_file_name(2) == "00000002.history"
    assert history_file_name(0x1A) == "0000001A.history"
    with pytest.raises(InputError):
        history_file_name(0)
    assert (
        backup_history_file_name(1, lsn("0/2000028")) == "000000010000000000000002.00000028.backup"
    )
    assert classify(backup_history_file_name(3, lsn("5/12345678"))) is WalFileKind.BACKUP_LABEL


# --- timeline history --------------------------------------------------------------------

# As PostgreSQL writes it after two promotions (writeTimeLineHistory: a blank line between).
TWO_SWITCHES = (
    "1\t0/3000000\tno recovery target specified\n"
    "\n"
    "# a comment a person added\n"
    "2\t0/5000158\tbefore 2026-11-25 21:43:00.123456+00\n"
)


def test_history_parses_entries_and_skips_comments_and_blanks() -> None:
    history = TimelineHistory.parse(TWO_SWITCHES)
    assert history.entries == (
        HistoryEntry(1, lsn("0/3000000"), "no recovery target specified"),
        HistoryEntry(2, lsn("0/5000158"), "before 2026-11-25 21:43:00.123456+00"),
    )
    assert history.switch_lsn(1) == lsn("0/3000000")
    assert history.switch_lsn(2) == lsn("0/5000158")
    assert history.switch_lsn(3) is None
    assert TimelineHistory.parse("") == TimelineHistory(())
    assert TimelineHistory.parse("1 0/3000000").entries[0].reason == ""


@pytest.mark.parametrize(
    "text",
    [
        "x\t0/3000000\treason",
        "1\tnot-an-lsn\treason",
        "1\t0/3000000\n1\t0/4000000",  # timelines must increase
        "2\t0/3000000\n1\t0/4000000",
        "1\t0/6000000\n2\t0/5000000",  # switch points must not go backwards
        "0\t0/3000000\treason",
    ],
)
def test_history_rejects_damaged_content(text: str) -> None:
    with pytest.raises(FormatError) as caught:
        TimelineHistory.parse(text)
    assert caught.value.exit_code == 24


def test_wal_path_for_a_two_switch_history() -> None:
    history = TimelineHistory.parse(TWO_SWITCHES)
    assert wal_path(history, 3) == [
        TimelineSpan(1, Lsn(0), lsn("0/3000000")),
        TimelineSpan(2, lsn("0/3000000"), lsn("0/5000158")),
        TimelineSpan(3, lsn("0/5000158"), None),
    ]
    assert wal_path(TimelineHistory(), 1) == [TimelineSpan(1, Lsn(0), None)]
    with pytest.raises(FormatError):
        wal_path(history, 2)  # the history of 3 cannot be the history of 2


def test_timeline_at_and_timeline_of_segment() -> None:
    history = TimelineHistory.parse(TWO_SWITCHES)
    assert history.timeline_at(lsn("0/2FFFFFF"), 3) == 1
    assert history.timeline_at(lsn("0/3000000"), 3) == 2
    assert history.timeline_at(lsn("0/5000157"), 3) == 2
    assert history.timeline_at(lsn("0/5000158"), 3) == 3
    assert history.timeline_at(lsn("FF/0"), 3) == 3
    size = 16 * MIB
    # The segment holding a switch point is read from the newer timeline.
    assert [history.timeline_of_segment(n, size, 3) for n in range(7)] == [1, 1, 1, 2, 2, 3, 3]


def test_wal_needed_starts_at_the_backup_and_follows_the_switches() -> None:
    history = TimelineHistory.parse(TWO_SWITCHES)
    spans = wal_needed(history, 3, backup_tli=1, backup_start_lsn=lsn("0/2000028"))
    assert spans == [
        TimelineSpan(1, lsn("0/2000028"), lsn("0/3000000")),
        TimelineSpan(2, lsn("0/3000000"), lsn("0/5000158")),
        TimelineSpan(3, lsn("0/5000158"), None),
    ]
    assert wal_needed(history, 3, backup_tli=2, backup_start_lsn=lsn("0/4000028")) == [
        TimelineSpan(2, lsn("0/4000028"), lsn("0/5000158")),
        TimelineSpan(3, lsn("0/5000158"), None),
    ]
    assert [s.timeline for s in path_segments(spans, lsn("0/6000010"))] == [1, 2, 2, 3, 3]
    assert [s.name for s in path_segments(spans, lsn("0/6000010"))] == [
        "000000010000000000000002",
        "000000020000000000000003",
        "000000020000000000000004",
        "000000030000000000000005",
        "000000030000000000000006",
    ]
    # Stopping on the first timeline reads nothing of the later ones.
    assert [s.name for s in path_segments(spans, lsn("0/2800000"))] == ["000000010000000000000002"]
    with pytest.raises(InputError):
        list(path_segments(spans, lsn("0/1000000")))


def test_wal_needed_refuses_a_backup_the_target_timeline_does_not_descend_from() -> None:
    history = TimelineHistory.parse(TWO_SWITCHES)
    with pytest.raises(TargetOutOfRange, match="forked off timeline 1 at 0/3000000") as caught:
        wal_needed(history, 3, backup_tli=1, backup_start_lsn=lsn("0/4000000"))
    assert caught.value.exit_code == 5
    with pytest.raises(TargetOutOfRange, match="forked off"):
        wal_needed(
            history,
            3,
            backup_tli=1,
            backup_start_lsn=lsn("0/2FFF000"),
            backup_checkpoint_lsn=lsn("0/3000100"),
        )
    with pytest.raises(TargetOutOfRange, match="does not descend"):
        wal_needed(history, 3, backup_tli=4, backup_start_lsn=lsn("0/6000000"))
    # A sibling branch: timeline 2 forked off 1 elsewhere and is not an ancestor of 5.
    branch = TimelineHistory.parse("1\t0/3000000\treason\n3\t0/6000000\treason\n")
    assert [s.timeline for s in wal_path(branch, 5)] == [1, 3, 5]
    with pytest.raises(TargetOutOfRange, match="path is 1, 3, 5"):
        wal_needed(branch, 5, backup_tli=2, backup_start_lsn=lsn("0/3500000"))


# --- the first page header of a segment --------------------------------------------------


def test_parse_segment_header_of_synthetic_bytes() -> None:
    header = parse_segment_header(segment_header(pageaddr=0x5_03000000, tli=3) + bytes(100))
    assert header == SegmentHeader(
        magic=0xD110,
        info=2,
        timeline=3,
        page_address=Lsn.parse("5/3000000"),
        rem_len=0,
        system_identifier=SYSID,
        segment_size=16 * MIB,
        block_size=8192,
    )
    assert header.segment.name == "000000030000000500000003"
    assert parse_segment_header(segment_header(magic=0xD116)).pg_major == 17
    assert parse_segment_header(segment_header(magic=0xD118)).pg_major == 18
    assert parse_segment_header(segment_header(magic=0xD11B)).pg_major is None


@pytest.mark.parametrize(
    ("major", "magic"),
    # XLOG_PAGE_MAGIC in each major's src/include/access/xlog_internal.h; 14 to 18 also
    # read from the first segment initdb writes (the CI matrix's server binaries).
    [(13, 0xD106), (14, 0xD10D), (15, 0xD110), (16, 0xD113), (17, 0xD116), (18, 0xD118)],
)
def test_page_magic_of_each_supported_major(major: int, magic: int) -> None:
    assert PAGE_MAGIC[major] == magic
    assert parse_segment_header(segment_header(magic=magic)).pg_major == major


def test_a_segment_of_postgresql_18_in_a_17_repository_is_named_as_such() -> None:
    head = segment_header(tli=2, pageaddr=0x3000000, magic=0xD118)
    with pytest.raises(FormatError, match="written by PostgreSQL 18, not by PostgreSQL 17"):
        check_segment_header(head, SEG_3, SYSID, pg_major=17)
    assert check_segment_header(head, SEG_3, SYSID, pg_major=18).pg_major == 18


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (segment_header()[:39], "40-byte header"),
        (bytes(8192), "magic 0x0000"),
        (segment_header(magic=0x1234), "magic"),
        (segment_header(info=0x0001), "long-header"),
        (segment_header(info=0x0012), "long-header"),
        (segment_header(tli=0), "timeline 0"),
        (segment_header(seg_size=3 * MIB), "segment size"),
        (segment_header(block_size=1000), "block size"),
        (segment_header(pageaddr=0x3002000), "segment boundary"),
    ],
)
def test_parse_segment_header_rejects(raw: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason) as caught:
        parse_segment_header(raw)
    assert caught.value.exit_code == 24


SEG_3 = WalSegment.parse("000000020000000000000003")  # 16 MiB segments: starts at 0/3000000


def test_check_segment_header_accepts_the_segment_its_name_gives() -> None:
    head = segment_header(tli=2, pageaddr=0x3000000)
    header = check_segment_header(head + bytes(8152), SEG_3, SYSID, pg_major=15)
    assert header.segment == SEG_3
    assert check_segment_header(head, SEG_3, None) == header  # cluster unknown: name only
    assert check_segment_header(head, SEG_3, SYSID, pg_major=19) == header  # a major we lack


def test_check_segment_header_accepts_the_segment_of_a_timeline_switch() -> None:
    """Timeline 2 began inside segment 3: PostgreSQL copied timeline 1's segment 3 to
    000000020000000000000003, first page header (timeline 1) included, and replays it."""
    check_segment_header(segment_header(tli=1, pageaddr=0x3000000), SEG_3, SYSID)


@pytest.mark.parametrize(
    ("head", "error", "says"),
    [
        (
            segment_header(tli=2, pageaddr=0x4000000),
            FormatError,
            "holds segment 0000000200000000"
            "00000004 (its header says page address 0/4000000 on timeline 2)",
        ),
        (
            segment_header(tli=3, pageaddr=0x3000000),
            FormatError,
            "page address 0/3000000 on timeline 3",
        ),
        (
            segment_header(tli=2, pageaddr=0x1_03000000),
            FormatError,
            "holds segment 000000020000000100000003",
        ),
        (
            segment_header(tli=2, pageaddr=0x3000000, sysid=SYSID + 1),
            RepositoryMismatch,
            f"system identifier {SYSID + 1}, but this repository holds cluster {SYSID}",
        ),
        (
            segment_header(tli=2, pageaddr=0x3000000, seg_size=MIB),
            FormatError,
            "segments are 1048576 bytes, not 16777216",
        ),
        (
            segment_header(tli=2, pageaddr=0x3000000, magic=0xD113),
            FormatError,
            "written by PostgreSQL 16, not by PostgreSQL 15",
        ),
        (
            segment_header(tli=2, pageaddr=0x3000000)[:39],
            FormatError,
            "000000020000000000000003 is 39 bytes long",
        ),
        (b"", FormatError, "000000020000000000000003 is 0 bytes long"),
        (bytes(40), FormatError, "000000020000000000000003 is damaged: .*magic 0x0000"),
    ],
)
def test_check_segment_header_refuses(head: bytes, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=re.escape(says) if ".*" not in says else says):
        check_segment_header(head, SEG_3, SYSID, pg_major=15)


def test_checked_segment_checks_the_header_before_the_rest_is_read() -> None:
    seg = WalSegment.parse("000000010000000000000003", MIB)
    good = segment_header(pageaddr=0x300000, seg_size=MIB).ljust(MIB, b"\0")
    assert b"".join(checked_segment([good[:7], good[7:100], good[100:]], seg, SYSID)) == good
    wrong = segment_header(pageaddr=0x400000, seg_size=MIB).ljust(MIB, b"\0")
    served: list[bytes] = []
    with pytest.raises(FormatError, match="not the segment its name says"):
        for chunk in checked_segment([wrong[:64], wrong[64:]], seg, SYSID):
            served.append(chunk)
    assert served == []  # refused with the first chunk, before anything was passed on
    with pytest.raises(FormatError, match="is 1000 bytes long, not the segment size"):
        b"".join(checked_segment([good[:1000]], seg, SYSID))
    assert b"".join(checked_segment([good[:1000]], seg, SYSID, whole=False)) == good[:1000]
    with pytest.raises(FormatError, match="is 10 bytes long, shorter than"):
        b"".join(checked_segment([good[:10]], seg, SYSID, whole=False))


def test_header_segment_of_each_kind_of_wal_file() -> None:
    assert header_segment("000000010000000000000003", MIB) == WalSegment(1, 0, 3, MIB)
    assert header_segment("000000010000000000000003.partial", MIB) == WalSegment(1, 0, 3, MIB)
    assert header_segment("00000002.history", MIB) is None
    assert header_segment("000000010000000000000003.00000028.backup", MIB) is None
