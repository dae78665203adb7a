"""``list`` and ``info``: what the repository holds and what it can restore."""

from __future__ import annotations

from dataclasses import dataclass

from janua_backup.commands.common import open_repo
from janua_backup.config import Settings
from janua_backup.repository import catalog, drills, marker, pins, window, window_end
from janua_backup.repository.drills import DrillReport
from janua_backup.repository.manifest import Manifest
from janua_backup.repository.window import Window


@dataclass(frozen=True, slots=True)
class BackupInfo:
    manifest: Manifest
    window: Window
    last_drill: DrillReport | None = None
    pinned: bool = False


@dataclass(frozen=True, slots=True)
class InfoResult:
    repository: str
    system_identifier: int | None
    encrypted: bool
    backups: list[BackupInfo]
    wal_segments: int
    newest_wal: str | None
    incomplete: list[str]


def run(settings: Settings, backup_id: str | None = None) -> InfoResult:
    repo = open_repo(settings)
    found = marker.read(repo)
    if found is None:
        return InfoResult(repo.describe(), None, repo.encrypted, [], 0, None, [])
    marker.check_key(repo, found)
    done, incomplete = catalog.backup_ids(repo)
    if backup_id is not None:
        done = [catalog.load(repo, backup_id).backup_id]
    manifests = [catalog.load(repo, i) for i in done]
    index = window.load_index(repo, found.wal_segment_size)
    reports = drills.latest(repo)
    kept = pins.pinned(repo)
    windows = [window.compute(m, index) for m in manifests]
    windows = window_end.settle(repo, index, windows, found.wal_segment_size)
    backups = [
        BackupInfo(m, w, reports.get(m.backup_id), m.backup_id in kept)
        for m, w in zip(manifests, windows, strict=True)
    ]
    newest = max((w.name for w in index.segments.values()), default=None)
    return InfoResult(
        repository=repo.describe(),
        system_identifier=found.system_identifier,
        encrypted=found.key_id is not None,
        backups=backups,
        wal_segments=len(index.segments),
        newest_wal=newest,
        incomplete=incomplete,
    )
