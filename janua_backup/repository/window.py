"""The recoverable window of each backup: from its end to the end of contiguous WAL.

A backup is restorable from its stop point (where it becomes consistent) up
to the last WAL segment that can be reached from its start without a gap,
along the timeline path ``timelines.resolve`` gives (the one answer list,
info, restore and verify --repo share).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from janua_backup.pg.wal import Lsn, TimelineHistory, WalFileKind, WalSegment, classify
from janua_backup.repository import timelines, wal_archive
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
    path: timelines.TimelinePath | None = None  # the timelines recovery follows

    @property
    def restorable(self) -> bool:
        return self.latest_lsn is not None

    @property
    def conflict(self) -> timelines.Conflict | None:
        """Two branches continue after a fork: a restore must be told which."""
        return self.path.conflict if self.path is not None else None


@dataclass(frozen=True, slots=True)
class WalIndex:
    """What the archive holds, in a form the window computation can ask quickly."""

    segments: dict[tuple[int, int], ArchivedWal]  # (timeline, segment number) -> object
    histories: dict[int, TimelineHistory]  # timeline -> its history (timelines > 1)
    newest_segno: int
    history_times: dict[int, datetime] = field(default_factory=dict)  # when each was archived

    @classmethod
    def build(
        cls,
        archived: Iterable[ArchivedWal],
        histories: dict[int, TimelineHistory],
        segment_size: int,
    ) -> WalIndex:
        segments: dict[tuple[int, int], ArchivedWal] = {}
        times: dict[int, datetime] = {}
        for wal in archived:
            kind = classify(wal.name)
            if kind is WalFileKind.SEGMENT:
                seg = WalSegment.parse(wal.name, segment_size)
                segments[(seg.timeline, seg.number)] = wal
            elif kind is WalFileKind.HISTORY:
                times[int(wal.name.split(".")[0], 16)] = wal.modified
        newest = max((n for _, n in segments), default=-1)
        return cls(segments, histories, newest, {t: times[t] for t in histories if t in times})


def compute(
    manifest: Manifest, index: WalIndex, *, requested_timeline: int | None = None
) -> Window:
    """The window along the path ``timelines.resolve`` gives (``InputError`` if
    ``requested_timeline`` does not descend from the backup). An ambiguous path
    (``Window.conflict``) is walked up to its fork only: what both branches share."""
    size = manifest.wal_segment_size
    path = timelines.resolve(index, manifest.timeline, manifest.start_lsn, size, requested_timeline)
    start = manifest.start_lsn.value // size
    stop = (manifest.stop_lsn.value - 1) // size  # the stop LSN is an exclusive end
    first = WalSegment.from_lsn(manifest.timeline, manifest.start_lsn, size).name
    walked = timelines.walk(index, path, start, size)
    segno, seg_tli = walked.next_segno, walked.next_timeline
    last_tli, last_segno = walked.found[-1] if walked.found else (manifest.timeline, start)
    last = index.segments[(last_tli, last_segno)] if walked.found else None
    in_archive = segno <= index.newest_segno and not walked.stopped_at_fork
    gap = WalSegment.from_number(seg_tli, segno, size).name if in_archive else None
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
            path=path,
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
        path=path,
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
