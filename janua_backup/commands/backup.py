"""``backup``: a full or incremental base backup through the non-exclusive low-level API.

Order matters and is the safety argument:
1. refuse a cluster without WAL archiving (its backup could never be made consistent);
2. claim the repository for this cluster (marker) and clean backups that never committed;
3. ``pg_backup_start`` on a session held open for the whole copy;
4. copy PGDATA and tablespaces with PostgreSQL's exclusion rules, streaming;
5. ``pg_backup_stop`` (which switches to a new WAL segment), then wait until the
   segment holding the stop point is in the repository. We poll the repository
   ourselves instead of letting PostgreSQL wait: its wait polls the archiver's
   status once a second, ours sees the segment arrive within ~0.1 s, and it is
   the stronger check anyway (the repository has it, not "archive_command said 0");
6. commit the manifest, last. Any failure before 6 leaves no listed backup,
   and the objects already written are removed.

From a hot standby (``pg_is_in_recovery()``, PostgreSQL 15+) the same steps
copy the standby's files, with PostgreSQL's rules for it: ``global/pg_control``
is read after every other file (recovery of a standby's backup ends at the
minimum recovery point of the pg_control it restores, which must cover every
page copied before it), and ``pg_backup_stop`` switches no segment, so the
segment holding the stop point is complete only once the primary leaves it:
with ``[postgres] primary_dsn`` janua asks the primary for ``pg_switch_wal()``,
else it waits for the primary's archive_timeout or more writes. Either node may
archive that segment (the primary, or the standby with ``archive_mode =
always``); the manifest records ``source = standby`` and the host.

Incremental (``backup_type="incr"``): the parent is the newest committed backup
of any type, as pgBackRest does, provided it is of this cluster, this major
version and this encryption; else (or when there is none) a full backup is
taken and the result says why. Between 3 and 4 every file the parent holds
with the same path and size is read and hashed; an equal SHA-256 makes the new
manifest reference the parent's bytes instead of storing them again
(``transfer.reuse_unchanged`` says why content, not mtime, decides). The
parent and every backup its references name cannot disappear meanwhile: expire
takes the same cluster lock, and retention keeps the ``depends_on`` chain of
every backup it keeps. Only this backup's own objects are ever removed on failure.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from janua_backup import locks
from janua_backup.commands import backup_standby
from janua_backup.commands.common import jobs, open_repo
from janua_backup.config import Settings
from janua_backup.errors import (
    BackupError,
    FormatError,
    InputError,
    IntegrityError,
    JanuaError,
)
from janua_backup.pg import conn as pgconn
from janua_backup.pg import control, datadir, lowlevel
from janua_backup.pg.lowlevel import BackupStop, LowLevelBackup
from janua_backup.pg.wal import WalSegment
from janua_backup.repository import catalog, layout, marker, pins, transfer
from janua_backup.repository.manifest import FileEntry, Manifest, required_format
from janua_backup.repository.objects import Repo
from janua_backup.repository.transfer import Progress, SourceFile

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)
CONTROL = datadir.CONTROL_FILE  # read after every other file (see the module docstring)

LOCK_NAME = "cluster"  # backup and expire of one cluster exclude each other
BACKUP_TYPES = ("full", "incr")
ARCHIVE_POLL_FIRST_S = 0.05  # a segment push takes a few tenths of a second: look often
ARCHIVE_POLL_MAX_S = 0.5  # then less often (each look is one HEAD request)
STANDBY_MIN_VERSION = 150000  # non-exclusive backups in recovery: tested on 15 and later


@dataclass(frozen=True, slots=True)
class BackupResult:
    manifest: Manifest
    duration_s: float
    cleaned: tuple[str, ...]
    pinned: bool = False
    requested_type: str = "full"
    note: str = ""  # why an incremental was taken as a full backup, if it was

    @property
    def referenced_bytes(self) -> int:
        return sum(f.size_bytes for f in self.manifest.referenced_files)

    @property
    def stored_files(self) -> int:
        """Files whose bytes this backup stored itself."""
        return sum(1 for f in self.manifest.files if f.kind == "file" and not f.referenced)


def run(
    settings: Settings,
    progress: Progress | None = None,
    *,
    cancel: threading.Event | None = None,
    keep: bool = False,
    backup_type: str = "full",
    expect: Callable[[int], None] | None = None,
) -> BackupResult:
    """A full or incremental (``backup_type="incr"``) backup under the cluster lock;
    ``cancel`` abandons it cleanly (the daemon's SIGTERM): nothing is committed and
    what was written is removed. ``expect`` learns how many bytes ``progress`` will
    count, once the files are listed (a meter's total, %, ETA)."""
    if backup_type not in BACKUP_TYPES:
        raise InputError(f"backup type {backup_type!r} is not one of {', '.join(BACKUP_TYPES)}")
    repo = open_repo(settings, quick_start=True)
    with locks.hold(repo.storage, LOCK_NAME, purpose="backup") as lock:
        result = _run(
            settings, repo, _guard(progress, lock, cancel), lock, backup_type, expect or _nothing
        )
    if keep:
        pins.pin(repo, result.manifest.backup_id, "backup --keep")
    return BackupResult(
        result.manifest, result.duration_s, result.cleaned, keep, backup_type, result.note
    )


def locked(
    settings: Settings,
    repo: Repo,
    lock: locks.LockHandle,
    *,
    cancel: threading.Event | None = None,
    backup_type: str = "full",
) -> BackupResult:
    """The backup, under the cluster ``lock`` the caller took (the daemon's turn waits
    for it and looks in the repository first: ``commands.backup_turn``)."""
    result = _run(settings, repo, _guard(None, lock, cancel), lock, backup_type, _nothing)
    return replace(result, requested_type=backup_type)


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


def _nothing(size_bytes: int) -> None:
    """No meter to tell the total to (the daemon)."""


def _run(
    settings: Settings,
    repo: Repo,
    progress: Callable[[int], None],
    lock: locks.LockHandle,
    backup_type: str,
    expect: Callable[[int], None],
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
        parent, note = _parent(repo, facts) if backup_type == "incr" else (None, "")
        backup_id = _new_backup_id(repo)
        log.info("backup begins backup_id=%s pgdata=%s repo=%s", backup_id, pgdata, repo.describe())
        session = LowLevelBackup(conn, facts.version_num)
        try:
            begin = session.start(f"janua-backup {backup_id}")
            copying = time.monotonic()
            sources = _sources(pgdata)
            to_store = [s for s in sources if s.entry.kind == "file" and s.entry.path != CONTROL]
            control_file = [s for s in sources if s.entry.path == CONTROL]
            expect(sum(s.entry.size_bytes for s in [*to_store, *control_file]))
            reuse = transfer.Reuse(to_store, [], [])
            if parent is not None:
                reuse = transfer.reuse_unchanged(
                    repo, parent, to_store, jobs=jobs(settings), progress=progress
                )
                expect(sum(s.entry.size_bytes for s in reuse.upload))  # read, then stored
            files, objects = transfer.upload(
                repo,
                backup_id,
                reuse.upload,
                jobs=jobs(settings),
                bundle_limit=settings.backup.bundle_limit_bytes,
                bundle_size=settings.backup.bundle_size_bytes,
                part_size=settings.backup.part_size_bytes,
                progress=progress,
                last=control_file,
            )
            progress(0)  # a cancel or a lost lock before the stop is still clean
            copied = time.monotonic()
            stop = session.stop(wait_for_archive=False, timeout_s=settings.backup.archive_timeout_s)
            if facts.in_recovery:
                stop = backup_standby.stop_point(conn, stop)
                backup_standby.close_stop_segment(settings, facts, stop)
            _wait_archived(
                repo, stop, facts.wal_segment_size, settings.backup.archive_timeout_s,
                standby=facts.in_recovery,
                archiver=None if facts.in_recovery else _ArchiverWatch(conn),
            )  # fmt: skip
            archived = time.monotonic()
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
    if parent is not None and not reuse.referenced:
        note = f"no file was unchanged since backup {parent.backup_id}: stored as a full backup"
        parent = None
    manifest = Manifest(
        backup_id=backup_id,
        backup_type="full" if parent is None else "incr",
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
        encrypted=repo.encrypted,
        backup_label=stop.backup_label,
        tablespace_map=stop.tablespace_map,
        files=tuple(sorted([*files, *reuse.referenced, *others], key=lambda f: f.path)),
        objects=(*objects, *reuse.objects),
        host=socket.gethostname(),
        depends_on=parent.backup_id if parent is not None else None,
        extra={"source": "standby" if facts.in_recovery else "primary"},
    )
    manifest = replace(manifest, format_version=required_format(manifest))
    try:
        lock.check()  # never commit a backup another process may be cleaning up
    except JanuaError:
        _discard(repo, backup_id)
        raise
    catalog.commit(repo, manifest)
    duration = time.monotonic() - started
    log.info(
        "backup done backup_id=%s type=%s source=%s depends_on=%s size=%d stored=%d "
        "referenced=%d duration_s=%.1f start_s=%.1f copy_s=%.1f stop_s=%.1f",
        backup_id,
        manifest.backup_type,
        manifest.source,
        manifest.depends_on,
        manifest.original_size_bytes,
        manifest.stored_size_bytes,
        len(reuse.referenced),
        duration,
        copying - started,  # connection, checks, checkpoint
        copied - copying,
        archived - copied,  # pg_backup_stop and its last WAL segment reaching the repository
    )
    return BackupResult(manifest, duration, tuple(cleaned), note=note)


def _new_backup_id(repo: Repo) -> str:
    """An id no backup has: ids have one-second resolution, and a small incremental
    can follow its parent within the same second. Reusing an id would write into a
    committed backup's prefix, and the clean-up of the failed backup would then
    remove that backup's objects."""
    taken = set(catalog.backup_ids(repo)[0])
    while (backup_id := layout.new_backup_id(datetime.now(UTC))) in taken:
        time.sleep(0.2)
    return backup_id


def _parent(repo: Repo, facts: pgconn.ServerFacts) -> tuple[Manifest | None, str]:
    """The backup an incremental builds on, or None and why a full backup is taken."""
    done, _ = catalog.backup_ids(repo)
    if not done:
        return None, "no earlier backup to build an incremental on: took a full backup"
    try:
        parent = catalog.load(repo, done[-1])
    except (FormatError, IntegrityError, InputError) as exc:  # damaged: build on nothing
        return None, f"the newest backup {done[-1]} cannot be read ({exc}): took a full backup"
    why = ""
    if parent.system_identifier != facts.system_identifier:
        why = f"is of cluster {parent.system_identifier}"
    elif parent.pg_version_num // 10000 != facts.version_num // 10000:
        why = f"is of PostgreSQL {parent.pg_version_num // 10000}"
    elif parent.encrypted != repo.encrypted:
        why = "is " + ("encrypted" if parent.encrypted else "not encrypted")
    if why:
        return None, f"the newest backup {parent.backup_id} {why}: took a full backup"
    return parent, ""


def _check_server(facts: pgconn.ServerFacts, settings: Settings) -> None:
    # A standby's own archive_mode may be off: the primary archives (its archive_mode
    # is checked when primary_dsn reaches it; else the wait for the stop segment tells).
    if facts.archive_mode == "off" and not facts.in_recovery:
        raise BackupError(
            "archive_mode is off, so the WAL that makes a backup consistent is never "
            "archived; set archive_mode = on and archive_command = "
            f"'janua-backup --config {settings.config_path or 'FILE'} wal-push %p', "
            "then restart PostgreSQL"
        )
    if facts.in_recovery and facts.version_num < STANDBY_MIN_VERSION:
        raise BackupError(
            f"backups from a standby need PostgreSQL 15 or later (this is {facts.major}); "
            "run backup against the primary"
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


class _ArchiverWatch:
    """Fails the wait early when PostgreSQL's archiver keeps failing on the awaited segment.

    Without it a backup on a cluster whose archive_command fails waits its whole
    archive_timeout_s (300 s) for a segment that cannot come. Evidence is a rise of
    ``failed_count`` with ``last_failed_wal`` at or before the awaited segment (the
    archiver goes in order: a failure there blocks it), seen twice, so one transient
    failure the archiver then retries successfully does not fail the backup.
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._count, _ = lowlevel.archiver_failures(conn)
        self._seen = 0

    def check(self, awaited: str) -> None:
        count, last = lowlevel.archiver_failures(self._conn)
        grew, self._count = count > self._count, count
        # Same-length names of one timeline order as the segments do; .history,
        # .partial and .backup files are not the awaited segment's blockers.
        if grew and last is not None and len(last) == len(awaited) and last <= awaited:
            self._seen += 1
        if self._seen >= 2:
            raise BackupError(
                f"PostgreSQL's archive_command keeps failing (pg_stat_archiver: "
                f"last_failed_wal {last}, {count} failures), so WAL segment {awaited} that "
                "this backup needs cannot be archived; run 'janua-backup check' and read the "
                "PostgreSQL log"
            )


def _wait_archived(
    repo: Repo,
    stop: BackupStop,
    segment_size: int,
    timeout_s: float,
    *,
    standby: bool = False,
    archiver: _ArchiverWatch | None = None,
) -> None:
    # The stop LSN is an exclusive end: the last byte needed is in the segment before it.
    name = WalSegment.before_lsn(stop.timeline, stop.lsn, segment_size).name
    deadline = time.monotonic() + timeout_s
    delay_s = ARCHIVE_POLL_FIRST_S
    while repo.storage.head(layout.wal_key(name)) is None:
        if archiver is not None:
            archiver.check(name)
        if time.monotonic() > deadline:
            hint = (
                "; from a standby the primary must complete that segment first: set "
                "[postgres] primary_dsn, or an archive_timeout on the primary shorter than "
                "[backup] archive_timeout_s"
                if standby
                else ""
            )
            raise BackupError(
                f"WAL segment {name}, needed to make this backup consistent, did not reach "
                f"{repo.describe()} within {timeout_s:.0f}s; check that archive_command is "
                "'janua-backup ... wal-push %p' with this repository and look at the "
                f"PostgreSQL log{hint}"
            )
        time.sleep(delay_s)
        delay_s = min(ARCHIVE_POLL_MAX_S, delay_s * 1.5)


def _discard(repo: Repo, backup_id: str) -> None:
    with contextlib.suppress(JanuaError):
        keys = [i.key for i in repo.storage.list(layout.backup_prefix(backup_id))]
        repo.storage.delete(keys)
