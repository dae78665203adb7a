"""``list`` and ``info``: what the repository holds and what it can restore.

One read of the repository serves the three views: ``list`` (a line per
backup), ``info`` (the repository summary, then the list) and ``info ID``
(everything about one backup: its parent chain, drills and pin reason, which
cost a read each and are fetched only there and for pinned backups).
"""

from __future__ import annotations

from dataclasses import dataclass

from janua_backup.commands.common import open_repo
from janua_backup.config import Settings
from janua_backup.errors import InputError
from janua_backup.pg.wal import Lsn, WalSegment
from janua_backup.repository import catalog, drills, marker, pins, window, window_end
from janua_backup.repository.drills import DrillReport
from janua_backup.repository.manifest import Manifest
from janua_backup.repository.objects import Repo
from janua_backup.repository.window import Window


@dataclass(frozen=True, slots=True)
class BackupInfo:
    manifest: Manifest
    window: Window
    last_drill: DrillReport | None = None
    pinned: bool = False
    pin_reason: str | None = None  # None: not pinned; "" pinned without a reason
    chain: tuple[str, ...] = ()  # the full backup first, this backup last
    drills: tuple[DrillReport, ...] = ()  # every drill, oldest first (info ID only)

    @property
    def parent(self) -> str | None:
        return self.manifest.depends_on

    @property
    def wal_needed(self) -> tuple[str, str]:
        """The first and last segment a restore needs to reach consistency."""
        m = self.manifest
        last = Lsn(max(m.stop_lsn.value - 1, m.start_lsn.value))  # the stop LSN is an exclusive end
        return (
            WalSegment.from_lsn(m.timeline, m.start_lsn, m.wal_segment_size).name,
            WalSegment.from_lsn(m.timeline, last, m.wal_segment_size).name,
        )

    @property
    def referenced_bytes(self) -> int:
        """What this backup lists but an earlier backup of its chain stores."""
        return sum(f.size_bytes for f in self.manifest.referenced_files)


@dataclass(frozen=True, slots=True)
class InfoResult:
    repository: str
    system_identifier: int | None
    encrypted: bool
    backups: list[BackupInfo]
    wal_segments: int
    newest_wal: str | None
    incomplete: list[str]
    oldest_wal: str | None = None
    pg_major: int | None = None
    wal_segment_size: int | None = None
    key_id: str | None = None
    timelines: tuple[int, ...] = ()
    backup_id: str | None = None  # the one backup asked for (info ID)
    backup_count: int = 0  # in the repository, whichever were asked for


def run(settings: Settings, backup_id: str | None = None) -> InfoResult:
    repo = open_repo(settings)
    found = marker.read(repo)
    if found is None:
        return InfoResult(repo.describe(), None, repo.encrypted, [], 0, None, [])
    marker.check_key(repo, found)
    done, incomplete = catalog.backup_ids(repo)
    asked = done if backup_id is None else [catalog.load(repo, backup_id).backup_id]
    manifests = {i: catalog.load(repo, i) for i in asked}
    index = window.load_index(repo, found.wal_segment_size)
    reports = drills.latest(repo)
    kept = pins.pinned(repo)
    windows = [window.compute(m, index) for m in manifests.values()]
    windows = window_end.settle(repo, index, windows, found.wal_segment_size)
    backups = [
        BackupInfo(
            m,
            w,
            reports.get(m.backup_id),
            m.backup_id in kept,
            pins.reason(repo, m.backup_id) if m.backup_id in kept else None,
            _chain(repo, m, manifests),
            tuple(drills.history(repo, m.backup_id)) if backup_id is not None else (),
        )
        for m, w in zip(manifests.values(), windows, strict=True)
    ]
    names = sorted(w.name for w in index.segments.values())
    tlis = {tli for tli, _ in index.segments} | set(index.histories)
    return InfoResult(
        repository=repo.describe(),
        system_identifier=found.system_identifier,
        encrypted=found.key_id is not None,
        backups=backups,
        wal_segments=len(index.segments),
        newest_wal=max(names, key=lambda n: (n[8:], n[:8]), default=None),
        incomplete=incomplete,
        oldest_wal=min(names, key=lambda n: (n[8:], n[:8]), default=None),
        pg_major=found.pg_major,
        wal_segment_size=found.wal_segment_size,
        key_id=found.key_id,
        timelines=tuple(sorted(tlis)),
        backup_id=backup_id,
        backup_count=len(done),
    )


def _chain(repo: Repo, manifest: Manifest, known: dict[str, Manifest]) -> tuple[str, ...]:
    """The ids from the full backup to ``manifest``; a parent that cannot be
    read ends the chain (retention keeps parents, so that means damage)."""
    chain = [manifest.backup_id]
    current = manifest
    while current.depends_on is not None and current.depends_on not in chain:
        parent = current.depends_on
        chain.append(parent)
        loaded = known.get(parent) or _load(repo, parent)
        if loaded is None:
            break
        current = loaded
    return tuple(reversed(chain))


def _load(repo: Repo, backup_id: str) -> Manifest | None:
    try:
        return catalog.load(repo, backup_id)
    except InputError:  # no such manifest; a damaged one still says so
        return None
