"""``backup``: a full base backup through the non-exclusive low-level API.

Order matters and is the safety argument:
1. refuse a cluster without WAL archiving (its backup could never be made consistent);
2. claim the repository for this cluster (marker) and clean backups that never committed;
3. ``pg_backup_start`` on a session held open for the whole copy;
4. copy PGDATA and tablespaces with PostgreSQL's exclusion rules, streaming;
5. ``pg_backup_stop``, which waits until the WAL up to the stop point is archived,
   then confirm that segment really is in the repository;
6. commit the manifest, last. Any failure before 6 leaves no listed backup,
   and the objects already written are removed.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from janua_backup import locks
from janua_backup.commands.common import jobs, open_repo
from janua_backup.config import Settings
from janua_backup.errors import BackupError, JanuaError
from janua_backup.pg import conn as pgconn
from janua_backup.pg import control, datadir
from janua_backup.pg.lowlevel import BackupStop, LowLevelBackup
from janua_backup.pg.wal import WalSegment
from janua_backup.repository import catalog, layout, marker, pins, transfer
from janua_backup.repository.manifest import FileEntry, Manifest
from janua_backup.repository.objects import Repo
from janua_backup.repository.transfer import Progress, SourceFile

log = logging.getLogger(__name__)

LOCK_NAME = "cluster"  # backup and expire of one cluster exclude each other


@dataclass(frozen=True, slots=True)
class BackupResult:
    manifest: Manifest
    duration_s: float
    cleaned: tuple[str, ...]
    pinned: bool = False


def run(
    settings: Settings,
    progress: Progress | None = None,
    *,
    cancel: threading.Event | None = None,
    keep: bool = False,
) -> BackupResult:
    """A full backup under the cluster lock; ``cancel`` abandons it cleanly (the daemon's
    SIGTERM): nothing is committed and what was written is removed."""
    repo = open_repo(settings)
    with locks.hold(repo.storage, LOCK_NAME, purpose="backup") as lock:
        result = _run(settings, repo, _guard(progress, lock, cancel), lock)
    if keep:
        pins.pin(repo, result.manifest.backup_id, "backup --keep")
    return BackupResult(result.manifest, result.duration_s, result.cleaned, keep)


def _guard(
    progress: Progress | None, lock: locks.LockHandle, cancel: threading.Event | None
) -> Progress:
    """Called as data flows: stops the copy when cancelled or when the lock was lost."""

    def tick(n: int) -> None:
        if cancel is not None and cancel.is_set():
            raise BackupError("backup cancelled before it completed; nothing was committed")
        lock.check()
        if progress is not None:
            progress(n)

    return tick


def _run(
    settings: Settings, repo: Repo, progress: Callable[[int], None], lock: locks.LockHandle
) -> BackupResult:
    started = time.monotonic()
    with pgconn.connect(settings.postgres.dsn) as conn:
        facts = pgconn.server_facts(conn)
        _check_server(facts, settings)
        pgdata = Path(settings.postgres.pgdata or facts.data_directory)
        _check_pgdata(pgdata, facts.system_identifier)
        marker.ensure(
            repo,
            system_identifier=facts.system_identifier,
            wal_segment_size=facts.wal_segment_size,
            pg_major=facts.major,
        )
        cleaned = catalog.clean_incomplete(repo)
        backup_id = layout.new_backup_id(datetime.now(UTC))
        log.info("backup begins backup_id=%s pgdata=%s repo=%s", backup_id, pgdata, repo.describe())
        session = LowLevelBackup(conn, facts.version_num)
        try:
            begin = session.start(f"janua-backup {backup_id}")
            sources = _sources(pgdata)
            files, objects = transfer.upload(
                repo,
                backup_id,
                [s for s in sources if s.entry.kind == "file"],
                jobs=jobs(settings),
                bundle_limit=settings.backup.bundle_limit_bytes,
                bundle_size=settings.backup.bundle_size_bytes,
                progress=progress,
            )
            progress(0)  # a cancel or a lost lock before the stop is still clean
            stop = session.stop(wait_for_archive=True, timeout_s=settings.backup.archive_timeout_s)
            _wait_archived(repo, stop, facts.wal_segment_size, settings.backup.archive_timeout_s)
        except OSError as exc:
            # A read error in PGDATA (EIO, a file turned unreadable): one sentence.
            session.abort()
            _discard(repo, backup_id)
            where = f" {exc.filename}" if exc.filename else ""
            raise BackupError(f"cannot read{where}: {exc.strerror or exc}") from exc
        except BaseException:
            session.abort()
            _discard(repo, backup_id)
            raise
    others = [s.entry for s in sources if s.entry.kind != "file"]  # no bytes to store
    manifest = Manifest(
        backup_id=backup_id,
        backup_type="full",
        start_lsn=begin.lsn,
        stop_lsn=stop.lsn,
        start_time=begin.time,
        stop_time=stop.time,
        timeline=stop.timeline,
        pg_version_num=facts.version_num,
        system_identifier=facts.system_identifier,
        wal_segment_size=facts.wal_segment_size,
        compression=repo.spec.codec,
        compression_level=settings.compression.level,
        encrypted=repo.key is not None,
        backup_label=stop.backup_label,
        tablespace_map=stop.tablespace_map,
        files=tuple(sorted([*files, *others], key=lambda f: f.path)),
        objects=tuple(objects),
        host=socket.gethostname(),
    )
    try:
        lock.check()  # never commit a backup another process may be cleaning up
    except JanuaError:
        _discard(repo, backup_id)
        raise
    catalog.commit(repo, manifest)
    duration = time.monotonic() - started
    log.info(
        "backup done backup_id=%s size=%d stored=%d duration_s=%.1f",
        backup_id,
        manifest.original_size_bytes,
        manifest.stored_size_bytes,
        duration,
    )
    return BackupResult(manifest, duration, tuple(cleaned))


def _check_server(facts: pgconn.ServerFacts, settings: Settings) -> None:
    if facts.archive_mode == "off":
        raise BackupError(
            "archive_mode is off, so the WAL that makes a backup consistent is never "
            "archived; set archive_mode = on and archive_command = "
            f"'janua-backup --config {settings.config_path or 'FILE'} wal-push %p', "
            "then restart PostgreSQL"
        )
    if facts.in_recovery:
        raise BackupError(
            "backups from a standby are not supported yet; run backup against the primary"
        )


def _check_pgdata(pgdata: Path, system_identifier: int) -> None:
    try:
        local = control.read_system_identifier(pgdata)
    except (OSError, JanuaError) as exc:
        raise BackupError(
            f"cannot read {pgdata}/global/pg_control ({exc}); janua-backup reads the data "
            "directory directly: run it on the database host, as a user who can read PGDATA, "
            "and set postgres.pgdata / PGDATA"
        ) from exc
    if local != system_identifier:
        raise BackupError(
            f"{pgdata} belongs to cluster {local}, but the server at postgres.dsn is "
            f"{system_identifier}; point PGDATA and the DSN at the same cluster"
        )


def _sources(pgdata: Path) -> list[SourceFile]:
    """Data entries as manifest entries; directories and links carry no bytes."""
    result = []
    for entry in datadir.walk(pgdata):
        meta = FileEntry(
            path=entry.path,
            kind=entry.kind.value,
            mode=entry.mode,
            mtime_ns=entry.mtime_ns,
            uid=entry.uid,
            gid=entry.gid,
            user=entry.user,
            group=entry.group,
            size_bytes=entry.size_bytes if entry.kind.value == "file" else 0,
            link_target=entry.link_target,
        )
        result.append(SourceFile(meta, pgdata / entry.path))
    return result


def _wait_archived(repo: Repo, stop: BackupStop, segment_size: int, timeout_s: float) -> None:
    # The stop LSN is an exclusive end: the last byte needed is in the segment before it.
    name = WalSegment.before_lsn(stop.timeline, stop.lsn, segment_size).name
    deadline = time.monotonic() + timeout_s
    while repo.storage.head(layout.wal_key(name)) is None:
        if time.monotonic() > deadline:
            raise BackupError(
                f"WAL segment {name}, needed to make this backup consistent, did not reach "
                f"{repo.describe()} within {timeout_s:.0f}s; check that archive_command is "
                "'janua-backup ... wal-push %p' with this repository and look at the PostgreSQL log"
            )
        time.sleep(0.5)


def _discard(repo: Repo, backup_id: str) -> None:
    with contextlib.suppress(JanuaError):
        keys = [i.key for i in repo.storage.list(layout.backup_prefix(backup_id))]
        repo.storage.delete(keys)
