"""The recoverable window of each backup: from its end to the end of contiguous WAL.

A backup is restorable from its stop point (where it becomes consistent) up
to the last WAL segment that can be reached from its start without a gap,
following timeline switches the way PostgreSQL does with
``recovery_target_timeline = 'latest'``: for each segment number, the newest
timeline on the target's history whose branch point lies at or before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from janua_backup.pg.wal import Lsn, TimelineHistory, WalFileKind, WalSegment, classify
from janua_backup.repository import wal_archive
from janua_backup.repository.manifest import Manifest
from janua_backup.repository.objects import Repo
from janua_backup.repository.wal_archive import ArchivedWal


@dataclass(frozen=True, slots=True)
class Window:
    backup_id: str
    earliest_lsn: Lsn
    earliest_time: datetime
    latest_lsn: Lsn | None  # None: WAL needed to reach consistency is missing
    latest_time: datetime | None  # provisional: window_end.settle sets the last archived commit
    timeline: int  # the timeline recovery ends on
    first_segment: str
    last_segment: str | None
    missing_segment: str | None  # the first gap, if the archive has one before its end

    @property
    def restorable(self) -> bool:
        return self.latest_lsn is not None


@dataclass(frozen=True, slots=True)
class WalIndex:
    """What the archive holds, in a form the window computation can ask quickly."""

    segments: dict[tuple[int, int], ArchivedWal]  # (timeline, segment number) -> object
    histories: dict[int, TimelineHistory]  # timeline -> its history (timelines > 1)
    newest_segno: int

    @classmethod
    def build(
        cls,
        archived: Iterable[ArchivedWal],
        histories: dict[int, TimelineHistory],
        segment_size: int,
    ) -> WalIndex:
        segments: dict[tuple[int, int], ArchivedWal] = {}
        for wal in archived:
            if classify(wal.name) is WalFileKind.SEGMENT:
                seg = WalSegment.parse(wal.name, segment_size)
                segments[(seg.timeline, seg.number)] = wal
        newest = max((n for _, n in segments), default=-1)
        return cls(segments=segments, histories=histories, newest_segno=newest)


def target_timeline(index: WalIndex, backup_timeline: int, requested: int | None) -> int:
    """The timeline recovery will end on: the requested one, else the newest that
    descends from the backup's timeline (PostgreSQL's 'latest')."""
    if requested is not None:
        return requested
    best = backup_timeline
    for tli in sorted(index.histories):
        if tli > best and backup_timeline in _ancestry(index, tli):
            best = tli
    return best


def _ancestry(index: WalIndex, tli: int) -> list[int]:
    history = index.histories.get(tli)
    parents = [e.timeline for e in history.entries] if history else []
    return [*parents, tli]


def _branch_points(index: WalIndex, tli: int, segment_size: int) -> list[tuple[int, int]]:
    """[(timeline, first segment number on it)], newest first, along tli's history."""
    history = index.histories.get(tli)
    points: list[tuple[int, int]] = []
    begin = 0
    for entry in history.entries if history else ():
        points.append((entry.timeline, begin))
        begin = entry.switch_lsn.value // segment_size
    points.append((tli, begin))
    return list(reversed(points))


def compute(
    manifest: Manifest, index: WalIndex, *, requested_timeline: int | None = None
) -> Window:
    size = manifest.wal_segment_size
    tli = target_timeline(index, manifest.timeline, requested_timeline)
    points = _branch_points(index, tli, size)
    start = manifest.start_lsn.value // size
    stop = (manifest.stop_lsn.value - 1) // size  # the stop LSN is an exclusive end
    first = WalSegment.from_lsn(manifest.timeline, manifest.start_lsn, size).name
    last: ArchivedWal | None = None
    last_tli = manifest.timeline
    segno = start
    while True:
        seg_tli = next((t for t, begin in points if begin <= segno), manifest.timeline)
        found = index.segments.get((seg_tli, segno))
        if found is None:
            break
        last, last_tli = found, seg_tli
        segno += 1
    gap = WalSegment.from_number(seg_tli, segno, size).name if segno <= index.newest_segno else None
    if last is None or segno <= stop:
        return Window(
            manifest.backup_id,
            manifest.stop_lsn,
            manifest.stop_time,
            None,
            None,
            manifest.timeline,
            first,
            None,
            WalSegment.from_number(seg_tli, segno, size).name,
        )
    return Window(
        backup_id=manifest.backup_id,
        earliest_lsn=manifest.stop_lsn,
        earliest_time=manifest.stop_time,
        latest_lsn=Lsn(segno * size),
        latest_time=max(_archived_by(last.modified), manifest.stop_time),
        timeline=last_tli,
        first_segment=first,
        last_segment=last.name,
        missing_segment=gap,
    )


def compute_all(
    manifests: Sequence[Manifest], index: WalIndex, requested_timeline: int | None = None
) -> list[Window]:
    return [compute(m, index, requested_timeline=requested_timeline) for m in manifests]


def load_index(repo: Repo, segment_size: int) -> WalIndex:
    """Lists the archive once and reads every timeline history file in it."""
    archived = list(wal_archive.list_archived(repo))
    histories: dict[int, TimelineHistory] = {}
    for wal in archived:
        if classify(wal.name) is WalFileKind.HISTORY:
            tli = int(wal.name.split(".")[0], 16)
            text = wal_archive.read(repo, wal.name).decode("utf-8", "replace")
            histories[tli] = TimelineHistory.parse(text)
    return WalIndex.build(archived, histories, segment_size)


def _archived_by(modified: datetime) -> datetime:
    """S3 keeps Last-Modified to the second (truncated): a commit at 12:00:05.7
    can sit in a segment stamped 12:00:05. Round up so such a commit is inside
    the window; a target past the real end still fails loudly in PostgreSQL
    ("recovery ended before configured recovery target was reached")."""
    if modified.microsecond == 0:
        return modified + timedelta(seconds=1)
    return modified
