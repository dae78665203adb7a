"""window_end.settle on synthetic segments in a memory repository: which commit ends a window.

The reader itself is checked against PostgreSQL and pg_waldump in
tests/integration/test_wal_records.py; here the segments are built by hand to
put commits exactly where each rule needs them.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta

from janua_backup.pg.control import crc32c
from janua_backup.pg.wal import PAGE_MAGIC, WalSegment
from janua_backup.pg.walrecords import POSTGRES_EPOCH
from janua_backup.repository import layout, window, window_end
from janua_backup.repository.objects import Repo
from janua_backup.repository.wal_archive import ArchivedWal
from tests.unit.repository.helpers import SEG, T0, manifest, memory_repo

PAGE = 8192


def commit_record(prev_lsn: int, moment: datetime) -> bytes:
    time_us = (moment - POSTGRES_EPOCH) // timedelta(microseconds=1)
    main = struct.pack("<q", time_us)
    body = bytes([255, len(main)]) + main  # XLR_BLOCK_ID_DATA_SHORT, then xl_xact_commit
    head = struct.pack("<IIQBB2x", 24 + len(body), 700, prev_lsn, 0x00, 1)  # COMMIT, RM_XACT_ID
    return head + struct.pack("<I", crc32c(body + head)) + body


def segment(number: int, commit_at: datetime | None, *, offset: int = 40) -> bytes:
    start = number * SEG
    header = struct.pack(
        "<HHIQI4xQII", PAGE_MAGIC[15], 2, 1, start, 0, 42, SEG, PAGE
    )  # fmt: skip
    data = bytearray(header.ljust(PAGE, b"\0"))
    if commit_at is not None:
        record = commit_record(start - 0x100, commit_at)
        data[offset : offset + len(record)] = record
    return bytes(data) + bytes(SEG - PAGE)


def archive(repo: Repo, commits: dict[int, datetime | None]) -> window.WalIndex:
    listed = []
    for number, commit_at in commits.items():
        name = WalSegment.from_number(1, number, SEG).name
        repo.put_bytes(layout.wal_key(name), segment(number, commit_at))
        listed.append(ArchivedWal(name, SEG, T0 + timedelta(hours=1)))
    return window.WalIndex.build(listed, {}, SEG)


def settled(repo: Repo, index: window.WalIndex) -> window.Window:
    (w,) = window_end.settle(repo, index, [window.compute(manifest(), index)], SEG)
    return w


def test_the_window_ends_at_the_commit_in_the_last_segment_not_its_archive_time() -> None:
    repo = memory_repo()
    commit = T0 + timedelta(minutes=3, microseconds=123457)
    index = archive(repo, {2: None, 3: T0 + timedelta(minutes=1), 4: commit})
    w = settled(repo, index)
    assert w.latest_time == commit
    assert window.compute(manifest(), index).latest_time >= T0 + timedelta(hours=1)  # archived


def test_a_last_segment_without_a_commit_sends_the_reader_one_segment_back() -> None:
    repo = memory_repo()
    commit = T0 + timedelta(minutes=2)
    index = archive(repo, {2: None, 3: commit, 4: None, 5: None})
    assert settled(repo, index).latest_time == commit


def test_commits_before_the_backup_is_consistent_do_not_count() -> None:
    # Segment 2 holds the backup's stop LSN (2/100 in segment terms): a commit at
    # its start is replayed before consistency, so no time target can stop there.
    repo = memory_repo()
    index = archive(repo, {2: T0 + timedelta(hours=2), 3: None})
    w = settled(repo, index)
    assert w.restorable and w.latest_time == w.earliest_time


def test_the_search_back_is_bounded() -> None:
    repo = memory_repo()
    last = 3 + window_end.MAX_SEGMENTS_BACK
    commits: dict[int, datetime | None] = {n: None for n in range(2, last + 1)}
    commits[3] = T0 + timedelta(minutes=2)  # one segment too far back
    w = settled(repo, archive(repo, commits))
    assert w.latest_time == w.earliest_time


def header_bytes(offset: int) -> int:
    """The page header's size at ``offset`` (from a segment boundary)."""
    return 40 if offset % SEG == 0 else 24


def advance(pos: int, n: int) -> int:
    """Where ``n`` record bytes written from ``pos`` end, page headers skipped."""
    while n:
        if pos % PAGE == 0:
            pos += header_bytes(pos)
        step = min(n, PAGE - pos % PAGE)
        pos, n = pos + step, n - step
    return pos


def filler(prev_lsn: int, length: int) -> bytes:
    """A record of ``length`` bytes that is no transaction's end (XLOG, checkpoint info)."""
    return struct.pack("<IIQBB2xI", length, 0, prev_lsn, 0x10, 0, 0).ljust(length, b"\0")


def lay_out(first: int, count: int, records: list[tuple[int, bytes]]) -> list[bytes]:
    """Segments ``first``.. holding ``records`` (offset from the first segment's start,
    bytes) with every page header PostgreSQL writes, contrecord flags included."""
    buf = bytearray(count * SEG)
    spans: list[tuple[int, int]] = []  # (start, end) of each record's bytes, headers skipped
    for offset, data in records:
        pos, left = offset, data
        while left:
            if pos % PAGE == 0:
                pos += header_bytes(pos)
            step = min(len(left), PAGE - pos % PAGE)
            buf[pos : pos + step] = left[:step]
            pos, left = pos + step, left[step:]
        spans.append((offset, pos))
    for page in range(count * SEG // PAGE):
        base = page * PAGE
        crossing = [s for s in spans if s[0] < base < s[1]]
        rem = advance_back(base, crossing[0][1]) if crossing else 0
        info = (0x0002 if base % SEG == 0 else 0) | (0x0001 if rem else 0)
        addr = first * SEG + base
        if base % SEG == 0:
            head = struct.pack("<HHIQI4xQII", PAGE_MAGIC[15], info, 1, addr, rem, 42, SEG, PAGE)
        else:
            head = struct.pack("<HHIQI4x", PAGE_MAGIC[15], info, 1, addr, rem)
        buf[base : base + len(head)] = head
    return [bytes(buf[i * SEG : (i + 1) * SEG]) for i in range(count)]


def advance_back(page_start: int, end: int) -> int:
    """Record bytes from ``page_start``'s payload up to ``end``: its xlp_rem_len."""
    total, pos = 0, page_start
    while pos < end:
        pos += header_bytes(pos) if pos % PAGE == 0 else 0
        step = min(end - pos, PAGE - pos % PAGE)
        total, pos = total + step, pos + step
    return total


def test_a_commit_crossing_into_the_last_segment_is_found_from_the_one_before() -> None:
    repo = memory_repo()
    commit = T0 + timedelta(minutes=4, microseconds=5)
    # One record fills segment 3 up to 16 bytes before its end; the commit after it
    # (34 bytes) starts there and ends in segment 4, which holds nothing else.
    length = (SEG - 16 - 40) - (SEG // PAGE - 1) * 24  # less every short page header
    assert advance(40, length) == SEG - 16
    base = 3 * SEG
    records = [(40, filler(base - 0x100, length)), (SEG - 16, commit_record(base + 40, commit))]
    three, four = lay_out(3, 2, records)
    assert struct.unpack_from("<H", four, 2)[0] & 0x0001  # segment 4 opens with its tail
    listed = [ArchivedWal(WalSegment.from_number(1, 2, SEG).name, SEG, T0)]
    repo.put_bytes(layout.wal_key(listed[0].name), segment(2, None))
    for number, data in ((3, three), (4, four)):
        name = WalSegment.from_number(1, number, SEG).name
        repo.put_bytes(layout.wal_key(name), data)
        listed.append(ArchivedWal(name, SEG, T0 + timedelta(hours=1)))
    index = window.WalIndex.build(listed, {}, SEG)
    assert settled(repo, index).latest_time == commit
