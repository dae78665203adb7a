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
