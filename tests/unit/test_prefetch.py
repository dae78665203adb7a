"""The prefetch spool and the prefetcher, on local files and an in-memory repository.

Segments are 1 MiB (the smallest initdb allows) with real long page headers;
the data directory is a ``global/pg_control`` plus ``recovery.signal``, which
is all ``wal-fetch`` reads of it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from janua_backup import prefetch
from janua_backup.commands import wal_fetch
from janua_backup.commands.common import open_repo
from janua_backup.commands.wal_prefetch import Prefetcher
from janua_backup.config import CompressionSettings, RepoSettings, Settings, WalSettings
from janua_backup.errors import InputError
from janua_backup.pg.control import read_control
from janua_backup.pg.wal import WalSegment
from janua_backup.prefetch import PrefetchSpool
from janua_backup.repository import layout
from janua_backup.repository.objects import Repo
from tests.unit.pg.builders import SYSID, control_bytes, segment_header
from tests.unit.repository.helpers import memory_repo

MIB = 1024 * 1024


def seg(timeline: int, number: int) -> WalSegment:
    return WalSegment.from_number(timeline, number, MIB)


def segment_bytes(segment: WalSegment, *, sysid: int = SYSID, pageaddr: int | None = None) -> bytes:
    """A 1 MiB segment whose first page header says what it is; a marker makes each unique."""
    address = segment.start_lsn.value if pageaddr is None else pageaddr
    header = segment_header(tli=segment.timeline, pageaddr=address, sysid=sysid, seg_size=MIB)
    body = header + segment.name.encode()
    return body.ljust(MIB, b"\0")


@pytest.fixture
def pgdata(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "global").mkdir(parents=True)
    (data / "global" / "pg_control").write_bytes(control_bytes(seg_size=MIB))
    (data / "pg_wal").mkdir()
    (data / "recovery.signal").touch()
    return data


@pytest.fixture
def spool(pgdata: Path) -> PrefetchSpool:
    return PrefetchSpool.open(prefetch.directory(None, pgdata))


def put_spooled(spool: PrefetchSpool, segment: WalSegment, data: bytes | None = None) -> Path:
    path = spool.segment_path(segment.name)
    path.write_bytes(segment_bytes(segment) if data is None else data)
    return path


def archive(repo: Repo, *segments: WalSegment) -> None:
    for segment in segments:
        repo.put_bytes(layout.wal_key(segment.name), segment_bytes(segment))


def eventually(check: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    """Wait for a background outcome (a bound against hangs, not a speed requirement)."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)


# -- names and paths -----------------------------------------------------------------------


def test_window_stays_on_the_timeline_across_a_log_boundary() -> None:
    after = WalSegment.parse("0000000300000001000000FE")
    names = [s.name for s in prefetch.window(after, 3)]
    assert names == [
        "0000000300000001000000FF",
        "000000030000000200000000",
        "000000030000000200000001",
    ]


def test_default_spool_is_under_pg_wal(pgdata: Path) -> None:
    assert prefetch.directory(None, pgdata) == pgdata / "pg_wal" / ".janua-spool" / "prefetch"
    assert prefetch.directory("/var/spool/janua", pgdata) == Path("/var/spool/janua/prefetch")


def test_no_prefetch_outside_archive_recovery(pgdata: Path) -> None:
    assert prefetch.recovery_control(pgdata) is not None
    (pgdata / "recovery.signal").unlink()
    assert prefetch.recovery_control(pgdata) is None
    (pgdata / "standby.signal").touch()
    assert prefetch.recovery_control(pgdata) is not None
    assert prefetch.recovery_control(pgdata / "pg_wal") is None  # not a data directory


# -- hand-over -----------------------------------------------------------------------------


def test_a_spooled_segment_is_handed_over_by_rename(spool: PrefetchSpool, tmp_path: Path) -> None:
    segment = seg(1, 5)
    source = put_spooled(spool, segment)
    inode = source.stat().st_ino
    dest = tmp_path / "RECOVERYXLOG"
    dest.write_bytes(b"the previous segment")
    assert spool.take(segment, dest, SYSID) == MIB
    assert dest.read_bytes() == segment_bytes(segment)
    assert dest.stat().st_ino == inode  # moved, not copied
    assert spool.spooled() == []


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda s: segment_bytes(seg(2, s.number)), id="other-timeline"),
        pytest.param(lambda s: segment_bytes(s, pageaddr=3 * MIB), id="recycled-segment"),
        pytest.param(lambda s: segment_bytes(s, sysid=SYSID + 1), id="other-cluster"),
        pytest.param(lambda s: segment_bytes(s)[: MIB // 2], id="truncated"),
        pytest.param(lambda s: bytes(MIB), id="zero-filled"),
    ],
)
def test_a_spooled_segment_that_fails_the_check_is_deleted(
    spool: PrefetchSpool, tmp_path: Path, damage: Callable[[WalSegment], bytes]
) -> None:
    segment = seg(1, 5)
    put_spooled(spool, segment, damage(segment))
    dest = tmp_path / "RECOVERYXLOG"
    assert spool.take(segment, dest, SYSID) is None
    assert not dest.exists()
    assert spool.spooled() == []


def test_verified_refuses_a_segment_before_it_gets_its_name(spool: PrefetchSpool) -> None:
    from janua_backup.errors import FormatError
    from janua_backup.localfs import atomic_write

    segment = seg(1, 5)
    wrong = segment_bytes(seg(1, 6))
    with pytest.raises(FormatError, match="not the segment its name says"):
        atomic_write(spool.segment_path(segment.name), prefetch.verified([wrong], segment, SYSID))
    short = [segment_bytes(segment)[:1000]]
    with pytest.raises(FormatError, match="not the segment size"):
        atomic_write(spool.segment_path(segment.name), prefetch.verified(short, segment, SYSID))
    assert os.listdir(spool.path) == []  # neither the segment nor a temp file


# -- wal-fetch with prefetch on ------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "repo").mkdir()
    return Settings(
        repository=RepoSettings(url=f"file://{tmp_path / 'repo'}"),
        compression=CompressionSettings(codec="gzip"),
        wal=WalSettings(prefetch_segments=4),
    )


@pytest.fixture
def held_lock(spool: PrefetchSpool) -> Iterator[int]:
    """The spool lock, as a running prefetcher holds it: wal-fetch starts no process."""
    fd = spool.try_lock()
    assert fd is not None
    yield fd
    os.close(fd)


def test_wal_fetch_takes_a_prefetched_segment_without_asking_the_archive(
    settings: Settings, pgdata: Path, spool: PrefetchSpool, held_lock: int
) -> None:
    segment = seg(1, 5)
    put_spooled(spool, segment)
    dest = pgdata / "pg_wal" / "RECOVERYXLOG"
    result = wal_fetch.run(settings, segment.name, str(dest), pgdata=pgdata)  # empty archive
    assert (result.found, result.prefetched, result.size_bytes) == (True, True, MIB)
    assert dest.read_bytes() == segment_bytes(segment)
    request = spool.request()
    assert request is not None and request.name == segment.name


def test_wal_fetch_refetches_a_rejected_segment_from_the_archive(
    settings: Settings, pgdata: Path, spool: PrefetchSpool, held_lock: int
) -> None:
    segment = seg(1, 5)
    archive(open_repo(settings), segment)
    put_spooled(spool, segment, segment_bytes(segment, sysid=SYSID + 1))
    dest = pgdata / "pg_wal" / "RECOVERYXLOG"
    result = wal_fetch.run(settings, segment.name, str(dest), pgdata=pgdata)
    assert (result.found, result.prefetched) == (True, False)
    assert dest.read_bytes() == segment_bytes(segment)
    assert spool.spooled() == []


def test_wal_fetch_waits_for_the_segment_the_prefetcher_is_writing(
    settings: Settings, pgdata: Path, spool: PrefetchSpool, held_lock: int
) -> None:
    segment = seg(1, 5)
    temp = spool.temp_path(segment.name)
    temp.write_bytes(b"partial")

    def finish() -> None:
        time.sleep(0.2)
        temp.write_bytes(segment_bytes(segment))
        os.replace(temp, spool.segment_path(segment.name))

    writer = threading.Thread(target=finish)
    writer.start()
    dest = pgdata / "pg_wal" / "RECOVERYXLOG"
    result = wal_fetch.run(settings, segment.name, str(dest), pgdata=pgdata)  # empty archive
    writer.join()
    assert (result.found, result.prefetched) == (True, True)


def test_not_found_still_means_the_archive_said_so(
    settings: Settings, pgdata: Path, spool: PrefetchSpool, held_lock: int
) -> None:
    dest = pgdata / "pg_wal" / "RECOVERYXLOG"
    result = wal_fetch.run(settings, seg(1, 5).name, str(dest), pgdata=pgdata)
    assert (result.found, result.attempts) == (False, 1)


@pytest.mark.parametrize("suffix", ["", ".partial", ".00000028.backup"])
def test_history_partial_and_backup_files_are_fetched_never_prefetched(
    settings: Settings, pgdata: Path, spool: PrefetchSpool, suffix: str
) -> None:
    """Only segments come from the spool; the others do not even count as a request."""
    segment = seg(1, 5)
    name = "00000002.history" if not suffix else segment.name + suffix
    put_spooled(spool, segment)
    # A .partial file has its segment's page header (checked), and may be short.
    stored = segment_bytes(segment)[:4096] if suffix == ".partial" else b"from the archive"
    open_repo(settings).put_bytes(layout.wal_key(name), stored)
    dest = pgdata / "pg_wal" / "RECOVERYXLOG"
    result = wal_fetch.run(settings, name, str(dest), pgdata=pgdata)
    assert (result.found, result.prefetched) == (True, False)
    assert dest.read_bytes() == stored
    assert spool.request() is None
    assert spool.spooled() == [segment.name]
    assert not (spool.path / prefetch.LOCK_FILE).exists()  # no prefetcher was started


# -- cleaning, requests, the lock ----------------------------------------------------------


def test_clean_keeps_only_segments_ahead_on_the_same_timeline(spool: PrefetchSpool) -> None:
    for segment in (seg(1, 4), seg(1, 5), seg(1, 6), seg(1, 7), seg(2, 6), seg(2, 9)):
        put_spooled(spool, segment, b"x")
    spool.temp_path(seg(1, 8).name).write_bytes(b"left by a killed prefetcher")
    spool.note_request(seg(1, 5).name)
    spool.log_path.write_text("log\n")
    spool.clean(seg(1, 5))
    assert spool.spooled() == [seg(1, 6).name, seg(1, 7).name]
    assert sorted(os.listdir(spool.path)) == sorted(
        [seg(1, 6).name, seg(1, 7).name, prefetch.REQUEST_FILE, prefetch.LOG_FILE]
    )


def test_each_request_is_new_even_for_the_same_name(spool: PrefetchSpool) -> None:
    assert spool.request() is None
    spool.note_request(seg(1, 5).name)
    first = spool.request()
    spool.note_request(seg(1, 5).name)
    second = spool.request()
    assert first is not None and second is not None
    assert first.name == second.name == seg(1, 5).name
    assert first != second  # a standby asking again makes the prefetcher look again


def test_the_lock_is_exclusive_and_checked_when_inherited(spool: PrefetchSpool) -> None:
    fd = spool.try_lock()
    assert fd is not None
    assert spool.try_lock() is None
    assert spool.adopt_lock(fd) == fd
    other = os.open(spool.path / "other", os.O_RDWR | os.O_CREAT)
    with pytest.raises(InputError, match="lock-fd"):
        spool.adopt_lock(other)
    os.close(other)
    os.close(fd)
    again = spool.try_lock()
    assert again is not None
    os.close(again)


def test_the_started_process_inherits_the_lock_and_logs_to_the_spool(
    spool: PrefetchSpool,
) -> None:
    fd = spool.try_lock()
    assert fd is not None
    code = "import sys, time; print('prefetcher here', file=sys.stderr, flush=True); time.sleep(60)"
    pid = spool.start([sys.executable, "-c", code], fd)
    os.close(fd)  # wal-fetch exits: the lock stays with the child
    try:
        assert spool.try_lock() is None
        eventually(lambda: "prefetcher here" in spool.log_path.read_text(), "the child's stderr")
        assert os.getsid(pid) == pid  # its own session: PostgreSQL's signals do not reach it
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    fd = spool.try_lock()
    assert fd is not None  # released by the kernel when the child died
    os.close(fd)


# -- the prefetcher ------------------------------------------------------------------------


def prefetcher(
    repo: Repo, spool: PrefetchSpool, pgdata: Path, *, count: int, jobs: int
) -> Prefetcher:
    return Prefetcher(repo, spool, read_control(pgdata), pgdata, count, jobs)


def test_prefetcher_fills_the_window_stops_where_the_archive_ends_and_cleans_up(
    spool: PrefetchSpool, pgdata: Path
) -> None:
    repo = memory_repo()
    archive(repo, *(seg(1, n) for n in range(2, 7)))
    worker = prefetcher(repo, spool, pgdata, count=8, jobs=2)
    assert worker.run(seg(1, 1), idle_s=0.2) == "idle"
    assert sorted(worker.downloaded) == [seg(1, n).name for n in range(2, 7)]
    assert worker.size_bytes == 5 * MIB
    assert os.listdir(spool.path) == []  # nothing left once nobody asks


def test_prefetcher_never_spools_a_segment_that_fails_verification(
    spool: PrefetchSpool, pgdata: Path
) -> None:
    repo = memory_repo()
    archive(repo, seg(1, 2), seg(1, 3), seg(1, 5))
    repo.put_bytes(layout.wal_key(seg(1, 4).name), segment_bytes(seg(1, 4), sysid=SYSID + 1))
    worker = prefetcher(repo, spool, pgdata, count=8, jobs=1)
    assert worker.run(seg(1, 1), idle_s=0.2) == "idle"
    assert worker.downloaded == [seg(1, 2).name, seg(1, 3).name]


def test_a_prefetcher_keeps_only_leftovers_of_this_cluster(
    spool: PrefetchSpool, pgdata: Path
) -> None:
    # The shell hand-over trusts what the spool holds: a segment of another cluster
    # left there (a killed prefetcher of another recovery) must go before it could.
    repo = memory_repo()
    archive(repo, seg(1, 2))
    put_spooled(spool, seg(1, 2), segment_bytes(seg(1, 2), sysid=SYSID + 1))
    put_spooled(spool, seg(1, 3))
    worker = prefetcher(repo, spool, pgdata, count=8, jobs=1)
    assert worker.run(seg(1, 1), idle_s=0.2) == "idle"
    assert worker.downloaded == [seg(1, 2).name]  # fetched again; 3 was this cluster's


def spooled(spool: PrefetchSpool, segment: WalSegment) -> Callable[[], bool]:
    return lambda: segment.name in spool.spooled()


def test_prefetcher_follows_requests_across_a_timeline_switch(
    spool: PrefetchSpool, pgdata: Path, tmp_path: Path
) -> None:
    """PostgreSQL replays 1..6 on timeline 1, then asks for 7 on timeline 2 (the switch)."""
    repo = memory_repo()
    archive(repo, *(seg(1, n) for n in range(1, 13)), *(seg(2, n) for n in range(7, 15)))
    worker = prefetcher(repo, spool, pgdata, count=3, jobs=2)
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(worker.run(seg(1, 1), idle_s=60)))
    thread.start()
    dest = tmp_path / "RECOVERYXLOG"
    try:
        for segment in (
            [seg(1, n) for n in range(2, 7)] + [None] + [seg(2, n) for n in range(8, 12)]
        ):
            if segment is None:  # the switch: wal-fetch gets 7 on timeline 2 from the archive
                spool.note_request(seg(2, 7).name)
                eventually(spooled(spool, seg(2, 8)), "the window moved to timeline 2")
                continue
            eventually(spooled(spool, segment), f"{segment} spooled")
            spool.note_request(segment.name)  # what wal-fetch does: request, then take
            assert spool.take(segment, dest, SYSID) == MIB
            assert dest.read_bytes() == segment_bytes(segment)
            assert len(spool.spooled()) <= 3 + 1  # the window, and the requested one
        eventually(lambda: spool.spooled() == [seg(2, n).name for n in (12, 13, 14)], "window")
    finally:
        (pgdata / "recovery.signal").unlink()
        thread.join(timeout=60)
    assert outcome == ["recovery over"]
    assert os.listdir(spool.path) == [prefetch.REQUEST_FILE]


def test_a_history_lookup_starts_the_prefetcher_at_the_backups_first_segment(
    pgdata: Path, spool: PrefetchSpool, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    monkeypatch.setattr(
        wal_fetch,
        "_ensure_prefetcher",
        lambda settings, sp, segment, data: started.append(segment.name),
    )
    settings = Settings(wal=WalSettings(prefetch_segments=4))
    wal_fetch._start_early(settings, pgdata)
    assert started == []  # no backup_label: no head start
    first = seg(1, 7)
    (pgdata / "backup_label").write_text(
        f"START WAL LOCATION: 0/7000028 (file {first.name})\nCHECKPOINT LOCATION: 0/7000060\n"
    )
    wal_fetch._start_early(settings, pgdata)
    assert started == [first.name]
    assert spool.request() is not None and spool.request().name == first.name  # type: ignore[union-attr]
    wal_fetch._start_early(settings, pgdata)  # once segments are requested, never again
    assert started == [first.name]
