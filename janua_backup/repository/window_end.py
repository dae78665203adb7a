"""Where each recoverable window really ends: the last commit or abort in its archived WAL.

``window.compute`` knows which segments a recovery reads; it cannot know the
time of the last transaction in them. A recovery to a time stops before the
first commit/abort stamped after it (``recovery_target_inclusive``) and, when
the archive holds none, fails with "recovery ended before configured
recovery target was reached". So the window ends at the newest commit/abort
time in the WAL recovery can replay, read from the archived segments here.

Derived when asked (``list``, ``restore``, the drill), not recorded at push
time: reading the newest segment back costs one download and about half a
second of Python per 16 MiB segment, once per listing; recording it would
put that half second on every ``wal-push``. Each distinct last segment is
read once; when it holds no commit, the one before it on the same recovery
path, and so on, at most ``MAX_SEGMENTS_BACK`` segments and never before the
backup's consistency point. When none is found the window holds no time at
all (its end is its start): no time target can be promised.

Imports storage only through ``Repo``; nothing of psycopg or config.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from janua_backup.errors import ObjectNotFound
from janua_backup.pg.wal import Lsn, TimelineHistory, WalSegment
from janua_backup.pg.walrecords import POSTGRES_EPOCH, xact_records
from janua_backup.repository import layout
from janua_backup.repository.objects import Repo
from janua_backup.repository.window import WalIndex, Window

log = logging.getLogger(__name__)

MAX_SEGMENTS_BACK = 8
_HEAD_BYTES = 1 << 20  # kept of each segment read: the end of a record the one before starts


@dataclass(frozen=True, slots=True)
class _Scan:
    """What one segment says: its commit/abort records that no later one in it outdates."""

    maxima: tuple[tuple[int, int], ...]  # (lsn, time_us), lsn increasing, time decreasing
    head: bytes

    def newest_from(self, lsn: int) -> int | None:
        """The newest commit/abort time among the records at or after ``lsn``."""
        return next((time_us for at, time_us in self.maxima if at >= lsn), None)


def settle(
    repo: Repo, index: WalIndex, windows: Sequence[Window], segment_size: int
) -> list[Window]:
    """``windows`` with ``latest_time`` the last archived commit/abort time of each."""
    scans: dict[tuple[str, str], _Scan] = {}
    return [_settled(repo, index, w, segment_size, scans) for w in windows]


def _settled(
    repo: Repo,
    index: WalIndex,
    w: Window,
    size: int,
    scans: dict[tuple[str, str], _Scan],
) -> Window:
    if w.latest_lsn is None or w.last_segment is None:
        return w
    history = index.histories.get(w.timeline, TimelineHistory())
    number = WalSegment.parse(w.last_segment, size).number
    floor = (w.earliest_lsn.value - 1) // size if w.earliest_lsn.value else 0
    following, head = "", b""
    for _ in range(MAX_SEGMENTS_BACK):
        if number < floor:
            break
        # The window's own path (``repository.timelines``) says which timeline holds
        # each segment: the one answer list, restore and verify --repo share.
        tli = (
            w.path.timeline_of(number, size)
            if w.path is not None
            else history.timeline_of_segment(number, size, w.timeline)
        )
        if (tli, number) not in index.segments:
            break
        name = WalSegment.from_number(tli, number, size).name
        if (name, following) not in scans:
            try:
                scans[(name, following)] = _scan(repo, name, head, Lsn((number + 1) * size))
            except ObjectNotFound:
                break  # expired while we looked: nothing older is on this path anyway
        scan = scans[(name, following)]
        newest = scan.newest_from(w.earliest_lsn.value)
        if newest is not None:
            return replace(w, latest_time=max(_time(newest), w.earliest_time))
        following, head = name, scan.head
        number -= 1
    log.warning(
        "no commit found in the last archived WAL backup=%s last_segment=%s: "
        "no time target can be promised",
        w.backup_id,
        w.last_segment,
    )
    return replace(w, latest_time=w.earliest_time)


def _scan(repo: Repo, name: str, following_head: bytes, end: Lsn) -> _Scan:
    """Reads segment ``name`` to its end (its checks complete with the last byte),
    followed by the first bytes of the next one to finish a record crossing into it;
    records starting at ``end`` or later belong to the next segment's own scan."""
    head = bytearray()

    def chunks() -> Iterator[bytes]:
        for chunk in repo.get(layout.wal_key(name)):
            if len(head) < _HEAD_BYTES:
                head.extend(chunk[: _HEAD_BYTES - len(head)])
            yield chunk
        if following_head:
            yield following_head

    source = chunks()
    maxima: list[tuple[int, int]] = []
    for record in xact_records(source, stop_lsn=end):
        while maxima and maxima[-1][1] <= record.time_us:
            maxima.pop()  # commit times can go backwards; only the newest from here on counts
        maxima.append((record.lsn.value, record.time_us))
    for _ in source:
        pass  # valid WAL may end early; the object is still read to its verified end
    log.debug("read the commits of segment=%s found=%d", name, len(maxima))
    return _Scan(tuple(maxima), bytes(head))


def _time(time_us: int) -> datetime:
    return POSTGRES_EPOCH + timedelta(microseconds=time_us)
