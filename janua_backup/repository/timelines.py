"""The ONE answer to "which timeline holds each segment of a recovery path".

``list``, ``info``, ``restore`` (``select``) and ``verify --repo``
(``integrity``) all ask ``resolve`` which timelines a recovery from a backup
follows, and ``walk`` which archived segment it reads at each step, so they
can never disagree about a repository.

Why not PostgreSQL's ``recovery_target_timeline = 'latest'`` (the newest
timeline descending from the backup's)? Because anyone who restores a copy
and lets it archive into the same repository (a side copy "to have a look")
creates a newer timeline, and 'latest' would then bring back the copy's rows
instead of production's. The rule here, from the backup's timeline at its
start LSN:

- a timeline whose history file says it forked from the path being restored,
  at or after the point the path reached that timeline (for the backup's own
  timeline: at or after the backup's start), is a branch of this path; one
  that forked earlier is not on this backup's path at all;
- a branch is followed only when it is the newest activity there: every
  other way on (the parent past the fork segment, any other branch) was last
  archived strictly before the branch's history file (a tie counts as going
  on: stores keep Last-Modified to the second). That is a failover (the
  old primary stops, the new one carries on) or an in-place incident restore
  (the damaged timeline's WAL past the target was all archived before the
  restore promoted);
- when two branches both continue after a fork (the parent, or another
  branch, still archived after the branch began: a side copy archiving while
  production goes on), the path is ambiguous: a restore refuses and names
  both (``Conflict``); ``--target-timeline N`` picks one
  (``resolve(..., requested=N)``). Where the archive does not say when a
  history file was stored, any WAL of another way on past the fork counts as
  continuing (the cautious reading).

Restore then writes the chosen timeline number into
``recovery_target_timeline``, so PostgreSQL follows exactly this path.
Pure: reads the WAL index only (segments per timeline with their archive times,
history files and when each was archived).
Must not import storage, psycopg, commands or cli.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from janua_backup.errors import InputError
from janua_backup.pg.wal import Lsn, TimelineHistory, WalSegment


class Stamped(Protocol):
    """An archived object, as far as the rule needs it: when the store took it."""

    @property
    def modified(self) -> datetime: ...


class Archive(Protocol):
    """What the archive holds (``window.WalIndex``): archived segments by
    (timeline, segment number), each timeline's history (timelines > 1) and
    when each history file was archived (its timeline's first sign of life)."""

    @property
    def segments(self) -> Mapping[tuple[int, int], Stamped]: ...

    @property
    def histories(self) -> Mapping[int, TimelineHistory]: ...

    @property
    def history_times(self) -> Mapping[int, datetime]: ...


@dataclass(frozen=True, slots=True)
class Switch:
    """Recovery moves to ``timeline`` at ``at`` (where its parent ended, per its history)."""

    timeline: int
    at: Lsn


@dataclass(frozen=True, slots=True)
class Branch:
    """One way a path goes on after a fork; ``fork`` None: the parent carrying on."""

    timeline: int
    fork: Lsn | None
    newest_segment: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two (or more) branches that both continue after the path's last shared point."""

    parent: int
    fork: Lsn  # where the shared path ends (the earliest fork)
    branches: tuple[Branch, ...]

    def message(self, backup_id: str) -> str:
        named = " and ".join(
            f"timeline {b.timeline} ("
            + (f"forked at {b.fork}, " if b.fork is not None else "carries on, ")
            + f"newest segment {b.newest_segment})"
            for b in self.branches
        )
        picks = " or ".join(f"--target-timeline {b.timeline}" for b in self.branches)
        count = "two" if len(self.branches) == 2 else str(len(self.branches))
        return (
            f"the WAL after backup {backup_id} splits into {count} branches at {self.fork} on "
            f"timeline {self.parent}: {named}; restoring without a target timeline could "
            f"bring back the wrong one, so pick one with {picks}"
        )


@dataclass(frozen=True, slots=True)
class TimelinePath:
    """The timelines a recovery from one backup follows, in order."""

    start: int  # the backup's timeline
    switches: tuple[Switch, ...] = ()
    conflict: Conflict | None = None  # the path is ambiguous from conflict.fork on

    @property
    def target(self) -> int:
        """The timeline recovery ends on: ``recovery_target_timeline``."""
        return self.switches[-1].timeline if self.switches else self.start

    @property
    def timelines(self) -> tuple[int, ...]:
        return (self.start, *(s.timeline for s in self.switches))

    def timeline_of(self, segno: int, segment_size: int) -> int:
        """Which timeline segment ``segno`` is read from. A segment holding a switch
        point exists on both timelines; recovery (XLogFileReadAnyTLI) reads the newer."""
        tli = self.start
        for switch in self.switches:
            if segno >= switch.at.value // segment_size:
                tli = switch.timeline
        return tli

    def describe(self) -> str:
        """``1 -> 3 (switch at 0/5000028)``; the conflict, if any, is said elsewhere."""
        if not self.switches:
            return str(self.start)
        chain = " -> ".join(str(t) for t in self.timelines)
        at = ", ".join(str(s.at) for s in self.switches)
        return f"{chain} (switch{'es' if len(self.switches) > 1 else ''} at {at})"


@dataclass(frozen=True, slots=True)
class Walk:
    """The segments a recovery along a path finds, contiguous from the backup's start."""

    found: tuple[tuple[int, int], ...]  # (timeline, segment number), in replay order
    next_segno: int  # the first segment number not found (or not walked: a conflict)
    next_timeline: int  # the timeline that segment would be read from
    stopped_at_fork: bool  # the walk ended at a conflict, not at a missing segment


def resolve(
    archive: Archive,
    backup_timeline: int,
    start_lsn: Lsn,
    segment_size: int,
    requested: int | None = None,
) -> TimelinePath:
    """The path a recovery from a backup (``backup_timeline`` at ``start_lsn``) follows:
    towards ``requested`` if given (``InputError`` unless it descends from the backup),
    else by the rule in the module docstring (a ``Conflict`` when it is ambiguous)."""
    if requested is not None:
        return _requested(archive, backup_timeline, start_lsn, requested)
    current, begin = backup_timeline, start_lsn
    switches: list[Switch] = []
    while True:
        living = [
            (tli, fork)
            for tli, fork in _children(archive, backup_timeline, current, begin, switches)
            if _newest(archive, tli, fork.value // segment_size) is not None
        ]
        if not living:
            return TimelinePath(backup_timeline, tuple(switches))
        living.sort(key=lambda c: (c[1], c[0]))
        followed = _newest_activity(archive, current, living, segment_size)
        if followed is not None:
            switches.append(Switch(*followed))
            current, begin = followed
            continue
        fork = living[0][1]
        fork_seg = fork.value // segment_size
        parent_newest = _newest(archive, current, fork_seg + 1)
        branches = [
            Branch(c, f, _name(c, _newest(archive, c, f.value // segment_size), segment_size))
            for c, f in living
        ]
        if parent_newest is not None:
            branches.insert(0, Branch(current, None, _name(current, parent_newest, segment_size)))
        conflict = Conflict(current, fork, tuple(branches))
        return TimelinePath(backup_timeline, tuple(switches), conflict)


def descends(archive: Archive, backup_timeline: int, start_lsn: Lsn, requested: int) -> bool:
    """Whether timeline ``requested`` is on a path from this backup (its own timeline, or
    one whose history leaves the backup's timeline at or after the backup's start)."""
    if requested == backup_timeline:
        return True
    history = archive.histories.get(requested)
    switch = history.switch_lsn(backup_timeline) if history else None
    return switch is not None and switch >= start_lsn


def reachable(archive: Archive, backup_timeline: int, start_lsn: Lsn) -> list[int]:
    """The backup's timeline and every archived one a recovery from it could be told to
    follow (``--target-timeline``), oldest first: what ``verify --repo`` walks."""
    return [backup_timeline] + [
        tli
        for tli in sorted(archive.histories)
        if tli != backup_timeline and descends(archive, backup_timeline, start_lsn, tli)
    ]


def walk(archive: Archive, path: TimelinePath, start_segno: int, segment_size: int) -> Walk:
    """Segments from ``start_segno`` on along ``path`` until the first one missing; an
    ambiguous path is walked only up to its fork segment (both branches share it)."""
    end = path.conflict.fork.value // segment_size if path.conflict else None
    found: list[tuple[int, int]] = []
    segno = start_segno
    while end is None or segno <= end:
        tli = path.timeline_of(segno, segment_size)
        if (tli, segno) not in archive.segments:
            return Walk(tuple(found), segno, tli, stopped_at_fork=False)
        found.append((tli, segno))
        segno += 1
    return Walk(tuple(found), segno, path.timeline_of(segno, segment_size), stopped_at_fork=True)


def _requested(
    archive: Archive, backup_timeline: int, start_lsn: Lsn, requested: int
) -> TimelinePath:
    if not descends(archive, backup_timeline, start_lsn, requested):
        raise InputError(
            f"timeline {requested} does not descend from timeline {backup_timeline} after the "
            f"backup's start ({start_lsn}); `janua-backup list` shows each backup's timelines, "
            "pick a backup on the path to it or another --target-timeline"
        )
    history = archive.histories.get(requested)
    entries = history.entries if history else ()
    first = next((i for i, e in enumerate(entries) if e.timeline == backup_timeline), len(entries))
    switches = []
    for i in range(first, len(entries)):
        after = entries[i + 1].timeline if i + 1 < len(entries) else requested
        switches.append(Switch(after, entries[i].switch_lsn))
    return TimelinePath(backup_timeline, tuple(switches))


def _children(
    archive: Archive, start: int, parent: int, begin: Lsn, switches: list[Switch]
) -> list[tuple[int, Lsn]]:
    """Timelines whose history says they left ``parent`` at or after ``begin``, on the
    same path so far (each switch in ``switches`` is in their history too)."""
    parents = [start, *(s.timeline for s in switches[:-1])]
    found = []
    for tli, history in archive.histories.items():
        if not history.entries or history.entries[-1].timeline != parent:
            continue
        fork = history.entries[-1].switch_lsn
        earlier = {e.timeline: e.switch_lsn for e in history.entries[:-1]}
        shared = all(earlier.get(p) == s.at for p, s in zip(parents, switches, strict=False))
        if fork >= begin and shared:
            found.append((tli, fork))
    return found


def _newest_activity(
    archive: Archive, parent: int, living: list[tuple[int, Lsn]], segment_size: int
) -> tuple[int, Lsn] | None:
    """The branch to follow from ``parent``, if one is the newest activity: it began
    (its history file was archived) no earlier than every other way on (the parent
    past this branch's fork segment, the other branches) was last archived."""
    began = {tli: archive.history_times.get(tli) for tli, _ in living}
    known = [(t, tli, fork) for (tli, fork) in living if (t := began[tli]) is not None]
    if len(known) < len(living):
        return _only_branch(archive, parent, living, segment_size)
    _, tli, fork = max(known, key=lambda k: (k[0], k[1]))
    start = began[tli]
    assert start is not None
    others = [(parent, fork.value // segment_size + 1)]
    others += [(t, f.value // segment_size) for t, f in living if t != tli]
    for other, from_segno in others:
        # A tie is "still going": S3 keeps Last-Modified to the second, so an equal stamp
        # may be later; refusing (exit 4, pick with --target-timeline) is the safe side.
        last = _last_archived(archive, other, from_segno)
        if last is not None and last >= start:
            return None
    return tli, fork


def _only_branch(
    archive: Archive, parent: int, living: list[tuple[int, Lsn]], segment_size: int
) -> tuple[int, Lsn] | None:
    """Without archive times: follow a branch only if it is the one way on (the parent
    has no segment past its fork segment)."""
    if len(living) != 1:
        return None
    tli, fork = living[0]
    if _newest(archive, parent, fork.value // segment_size + 1) is not None:
        return None
    return tli, fork


def _last_archived(archive: Archive, tli: int, from_segno: int) -> datetime | None:
    """When the newest-stored segment of ``tli`` at or after ``from_segno`` was archived."""
    return max(
        (w.modified for (t, n), w in archive.segments.items() if t == tli and n >= from_segno),
        default=None,
    )


def _newest(archive: Archive, tli: int, from_segno: int) -> int | None:
    """The newest archived segment number on ``tli`` at or after ``from_segno``."""
    return max((n for t, n in archive.segments if t == tli and n >= from_segno), default=None)


def _name(tli: int, segno: int | None, segment_size: int) -> str:
    return WalSegment.from_number(tli, segno or 0, segment_size).name
