"""``expire``: delete the backups and WAL the retention policy no longer needs.

The rule itself is ``janua_backup.retention`` (pure); this module reads the
catalog, asks the rule, and deletes. Order is the safety argument:

1. read the marker (a repository nobody wrote to has nothing to expire) and check the key;
2. take the cluster lock, the one ``backup`` takes, unless ``dry_run`` (which only
   reads): no backup commits and no other expire deletes while we decide and delete;
3. remove incomplete backups: under the lock, none of them can still be in progress;
4. decide on the committed backups, their pins and their incremental chains;
5. per expired backup, oldest first (but after every expired backup built on it, so a
   listed backup never lacks its parent): delete the manifest first, so from that
   instant the backup is no longer listed and never chosen by a restore; then its
   other objects and its drill reports. A crash in between leaves an incomplete
   backup, which the next expire or backup removes;
6. then the WAL below the oldest kept backup's start segment, on every timeline
   (history files always stay), in batches of at most ``WAL_BATCH`` keys, S3
   DeleteObjects' limit. WAL goes only once every expired backup is gone.

The lock is checked before each backup and each WAL batch: a lost lock raises
``LockLost`` and stops the deletions, as another process may be running now.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from janua_backup import locks
from janua_backup.commands.backup import LOCK_NAME
from janua_backup.commands.common import open_repo
from janua_backup.config import Settings
from janua_backup.errors import FormatError, ObjectNotFound
from janua_backup.policy import RetentionPolicy
from janua_backup.repository import catalog, drills, layout, marker, pins, wal_archive
from janua_backup.repository.manifest import Manifest
from janua_backup.repository.objects import Repo
from janua_backup.retention import BackupRef, Decision, decide, wal_to_delete

log = logging.getLogger(__name__)

WAL_BATCH = 1000  # S3 DeleteObjects takes at most 1000 keys per request


@dataclass(frozen=True, slots=True)
class KeptBackup:
    backup_id: str
    reason: str  # one of the reason strings of janua_backup.retention


@dataclass(frozen=True, slots=True)
class ExpiredBackup:
    backup_id: str
    stop_time: datetime
    stored_bytes: int  # every object under backups/<id>/, the manifest included
    objects: int


@dataclass(frozen=True, slots=True)
class ExpireResult:
    """What went (or, with ``dry_run``, would go) and why the rest stays."""

    repository: str
    dry_run: bool
    window_start: datetime  # now - recovery window
    kept: tuple[KeptBackup, ...]  # oldest first
    expired: tuple[ExpiredBackup, ...]  # in deletion order
    wal_deleted: int
    wal_deleted_bytes: int
    wal_first_deleted: str | None
    wal_last_deleted: str | None
    incomplete_removed: tuple[str, ...]
    incomplete_bytes: int
    duration_s: float

    @property
    def freed_bytes(self) -> int:
        backups = sum(b.stored_bytes for b in self.expired)
        return backups + self.wal_deleted_bytes + self.incomplete_bytes


@dataclass(frozen=True, slots=True)
class _Usage:
    stored_bytes: int = 0
    objects: int = 0


def run(
    settings: Settings,
    retention: RetentionPolicy,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> ExpireResult:
    """Apply ``retention`` to the repository; with ``dry_run`` only say what would go."""
    began = time.monotonic()
    moment = now or datetime.now(UTC)
    repo = open_repo(settings)
    log.info(
        "expire begins repository=%s window_days=%g min_backups=%d dry_run=%s",
        repo.describe(), retention.recovery_window_days, retention.min_backups, dry_run,
    )  # fmt: skip
    found = marker.read(repo)
    if found is None:
        result = _nothing(repo, retention, moment, dry_run)
    else:
        marker.check_key(repo, found)
        if dry_run:
            result = _expire(repo, found.wal_segment_size, retention, moment, None)
        else:
            with locks.hold(repo.storage, LOCK_NAME, purpose="expire") as lock:
                result = _expire(repo, found.wal_segment_size, retention, moment, lock)
    duration = time.monotonic() - began
    log.info(
        "expire done dry_run=%s kept=%d expired=%s wal_deleted=%d incomplete=%d "
        "freed_bytes=%d duration_s=%.1f",
        dry_run, len(result.kept), ",".join(b.backup_id for b in result.expired) or "-",
        result.wal_deleted, len(result.incomplete_removed), result.freed_bytes, duration,
    )  # fmt: skip
    return _with_duration(result, duration)


def _expire(
    repo: Repo,
    segment_size: int,
    retention: RetentionPolicy,
    now: datetime,
    lock: locks.LockHandle | None,
) -> ExpireResult:
    """Steps 3-6 of the module docstring; ``lock`` None is a dry run: nothing is deleted."""
    usage = _usage(repo)
    if lock is None:
        _, incomplete = catalog.backup_ids(repo)
    else:
        incomplete = catalog.clean_incomplete(repo)
    manifests = {m.backup_id: m for m in catalog.list_backups(repo)}
    refs = _refs(repo, manifests, pins.pinned(repo))
    decision = _decide(repo, refs, now, retention)
    expired = []
    for backup_id in _deletion_order(decision.expire, manifests):
        if lock is not None:
            lock.check()
            _remove_backup(repo, backup_id)
        used = usage.get(backup_id, _Usage())
        stop_time = manifests[backup_id].stop_time
        expired.append(ExpiredBackup(backup_id, stop_time, used.stored_bytes, used.objects))
    archived = {w.name: w.size_bytes for w in wal_archive.list_archived(repo)}
    kept_refs = [ref for ref in refs if ref.backup_id in decision.reasons]
    doomed = wal_to_delete(archived, kept_refs, segment_size)
    if lock is not None:
        _remove_wal(repo, doomed, lock)
    return ExpireResult(
        repository=repo.describe(),
        dry_run=lock is None,
        window_start=now - retention.window,
        kept=tuple(KeptBackup(i, decision.reasons[i]) for i in decision.keep),
        expired=tuple(expired),
        wal_deleted=len(doomed),
        wal_deleted_bytes=sum(archived[name] for name in doomed),
        wal_first_deleted=doomed[0] if doomed else None,
        wal_last_deleted=doomed[-1] if doomed else None,
        incomplete_removed=tuple(incomplete),
        incomplete_bytes=sum(usage.get(i, _Usage()).stored_bytes for i in incomplete),
        duration_s=0.0,
    )


def _usage(repo: Repo) -> dict[str, _Usage]:
    """Bytes and objects stored per backup id, from one listing of ``backups/``."""
    found: dict[str, _Usage] = {}
    for info in repo.storage.list(layout.BACKUPS_PREFIX):
        backup_id = layout.backup_id_of(info.key)
        if backup_id is not None:
            seen = found.get(backup_id, _Usage())
            found[backup_id] = _Usage(seen.stored_bytes + info.size_bytes, seen.objects + 1)
    return found


def _refs(repo: Repo, manifests: Mapping[str, Manifest], pinned: set[str]) -> list[BackupRef]:
    for m in manifests.values():
        if m.depends_on is not None and m.depends_on not in manifests:
            raise ObjectNotFound(
                f"backup {m.backup_id} is built on backup {m.depends_on}, which is not in "
                f"{repo.describe()}; expire deletes nothing until that is resolved "
                "(`janua-backup verify --repository-only` shows what is damaged)"
            )
    return [
        BackupRef(
            backup_id=m.backup_id,
            start_time=m.start_time,
            stop_time=m.stop_time,
            start_lsn=m.start_lsn,
            timeline=m.timeline,
            pinned=m.backup_id in pinned,
            depends_on=m.depends_on,
        )
        for m in manifests.values()
    ]


def _decide(
    repo: Repo, refs: Sequence[BackupRef], now: datetime, retention: RetentionPolicy
) -> Decision:
    try:
        return decide(refs, now, retention.window, retention.min_backups)
    except ValueError as exc:  # a dependency cycle or a manifest time without a zone
        raise FormatError(f"cannot apply retention to {repo.describe()}: {exc}") from exc


def _deletion_order(expire: Sequence[str], manifests: Mapping[str, Manifest]) -> list[str]:
    """Oldest first, except that a backup goes only after the expired backups built on it.

    Deleting a parent first would leave its incremental dependents listed but
    unrestorable until they went too. ``decide`` never expires a parent of a
    kept backup, so only expired dependents need to go first.
    """
    children: dict[str, list[str]] = {backup_id: [] for backup_id in expire}
    for backup_id in expire:
        parent = manifests[backup_id].depends_on
        if parent is not None and parent in children:
            children[parent].append(backup_id)
    order: list[str] = []
    placed: set[str] = set()
    for root in expire:
        stack = [(root, False)]
        while stack:  # post-order without recursion: incremental chains can be long
            backup_id, expanded = stack.pop()
            if expanded:
                order.append(backup_id)
            elif backup_id not in placed:
                placed.add(backup_id)
                stack.append((backup_id, True))
                stack.extend((child, False) for child in reversed(children[backup_id]))
    return order


def _remove_backup(repo: Repo, backup_id: str) -> None:
    # The manifest first: from here on the backup does not exist for list or restore,
    # and whatever an interruption leaves is an incomplete backup, cleaned next time.
    repo.storage.delete([layout.manifest_key(backup_id)])
    rest = [info.key for info in repo.storage.list(layout.backup_prefix(backup_id))]
    repo.storage.delete(rest)  # the S3 driver splits this into DeleteObjects batches
    drills.remove(repo, backup_id)
    log.debug("removed backup backup_id=%s objects=%d", backup_id, len(rest) + 1)


def _remove_wal(repo: Repo, names: Sequence[str], lock: locks.LockHandle) -> None:
    for first in range(0, len(names), WAL_BATCH):
        lock.check()
        batch = names[first : first + WAL_BATCH]
        repo.storage.delete([layout.wal_key(name) for name in batch])
        log.debug("removed WAL first=%s last=%s count=%d", batch[0], batch[-1], len(batch))


def _nothing(repo: Repo, retention: RetentionPolicy, now: datetime, dry_run: bool) -> ExpireResult:
    """An empty repository (no marker): no backup, no WAL, nothing to delete."""
    return ExpireResult(
        repository=repo.describe(),
        dry_run=dry_run,
        window_start=now - retention.window,
        kept=(),
        expired=(),
        wal_deleted=0,
        wal_deleted_bytes=0,
        wal_first_deleted=None,
        wal_last_deleted=None,
        incomplete_removed=(),
        incomplete_bytes=0,
        duration_s=0.0,
    )


def _with_duration(result: ExpireResult, duration_s: float) -> ExpireResult:
    return replace(result, duration_s=duration_s)
