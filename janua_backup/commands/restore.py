"""``restore``: a base backup into an empty directory, set up to replay WAL to a target.

Everything that can refuse runs before anything is written: the target is
parsed and checked against the recoverable window, the directory (and every
tablespace location) must be empty, the key must match. Only then is the
plan printed and the data fetched. If fetching fails half-way (a damaged
object), what was written is removed again: a half-restored data directory
without its backup_label would start as if it were consistent. For the same
reason ``global/pg_control`` is written under a temporary name and moved into
place last, after ``backup_label`` and the recovery settings: a restore killed
at any earlier moment (SIGKILL, power loss) leaves a directory PostgreSQL
refuses to start, never one it would start as if it were consistent.

An incremental backup restores like a full one: its manifest lists every file
and the backup holding each file's bytes. With ``delta`` a non-empty directory
of the same cluster is brought to the backup instead (``restore_delta``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from janua_backup.commands import restore_delta
from janua_backup.commands.common import invocation, jobs, open_repo
from janua_backup.config import Settings
from janua_backup.confined import Tree
from janua_backup.errors import ConfigError, InputError, JanuaError, RestoreError
from janua_backup.localfs import atomic_write
from janua_backup.pg import recovery
from janua_backup.pg.command_line import check_fits
from janua_backup.pg.wal import WalSegment
from janua_backup.repository import catalog, marker, timelines, window, window_end
from janua_backup.repository.manifest import ROOT_PATHS, Manifest
from janua_backup.repository.select import Choice, Target, choose
from janua_backup.repository.transfer import Progress
from janua_backup.repository.transfer_download import (
    Fetched,
    apply_metadata,
    download,
    owner_ids,
    set_metadata,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RestoreRequest:
    pgdata: Path
    target: Target
    recovery_target: recovery.RecoveryTarget
    backup_id: str | None = None
    standby: bool = False
    requested_timeline: int | None = None
    tablespace_dir: Path | None = None  # relocate every tablespace under it, by OID (drills)
    delta: bool = False  # a non-empty directory of the same cluster: reuse matching files
    archive_mode: recovery.ArchiveMode | None = None  # None: by where (``archive_choice``)


@dataclass(frozen=True, slots=True)
class RestorePlan:
    backup_id: str
    backup_stop_time: str
    first_wal: str
    last_wal: str | None
    timeline: int
    fetch_bytes: int
    stored_bytes: int
    target: str
    pgdata: str
    delta: bool = False  # into a non-empty directory, reusing what matches
    backup_type: str = "full"
    depends_on: str | None = None
    archive_mode: recovery.ArchiveMode = "preserve"
    archive_reason: str = ""
    timeline_path: str = ""  # "1 -> 3 (switch at 0/5000028)": timelines.TimelinePath.describe
    target_timeline: int | None = None  # written as recovery_target_timeline, never 'latest'


@dataclass(frozen=True, slots=True)
class RestoreResult:
    plan: RestorePlan
    written_bytes: int
    duration_s: float
    files_written: list[str] = field(default_factory=list)
    start_command: str = ""
    fetched_files: int = 0
    fetched_bytes: int = 0
    reused_files: int = 0
    reused_bytes: int = 0
    removed_entries: int = 0  # delta: files and directories the backup does not have


def prepare(settings: Settings, request: RestoreRequest) -> tuple[Choice, RestorePlan]:
    """Every check that can refuse, and the plan; writes nothing."""
    delta = request.delta and restore_delta.has_entries(request.pgdata)
    if delta and request.tablespace_dir is not None:
        raise InputError("restore --delta cannot relocate tablespaces; restore into an empty dir")
    if not delta:
        _check_empty(request.pgdata, "target directory")
    restore_command(settings)  # refuses a line PostgreSQL would cut short
    archive_mode, archive_reason = archive_choice(settings, request)
    repo = open_repo(settings, quick_start=True)
    found = marker.read(repo)
    if found is None:
        raise InputError(f"{repo.describe()} holds no janua-backup repository (no marker)")
    marker.check_key(repo, found)
    manifests = catalog.list_backups(repo)
    index = window.load_index(repo, found.wal_segment_size)
    on_path = _on_path(manifests, index, request)
    windows = [
        window.compute(m, index, requested_timeline=_requested(request, m)) for m in on_path
    ]
    windows = window_end.settle(repo, index, windows, found.wal_segment_size)
    pairs = list(zip(on_path, windows, strict=True))
    choice = choose(pairs, request.target, request.backup_id)
    m = choice.manifest
    locations = _tablespace_locations(m, request.tablespace_dir)
    if delta:
        restore_delta.check_target(request.pgdata, m, locations)
    else:
        for location in locations.values():
            _check_empty(Path(location), "tablespace location")
    plan = RestorePlan(
        backup_id=m.backup_id,
        backup_stop_time=m.stop_time.isoformat(),
        first_wal=WalSegment.from_lsn(m.timeline, m.start_lsn, m.wal_segment_size).name,
        last_wal=choice.window.last_segment,
        timeline=choice.window.timeline,
        timeline_path=_path_text(choice),
        target_timeline=_target_timeline(choice),
        fetch_bytes=m.original_size_bytes,
        stored_bytes=m.fetch_stored_bytes,
        target=describe_target(request.target),
        pgdata=str(request.pgdata),
        delta=delta,
        backup_type=m.backup_type,
        depends_on=m.depends_on,
        archive_mode=archive_mode,
        archive_reason=archive_reason,
    )
    return choice, plan


def archive_choice(settings: Settings, request: RestoreRequest) -> tuple[recovery.ArchiveMode, str]:
    """Whether the restored cluster archives, and why, in one line.

    A restore into ``postgres.pgdata`` (same directory after resolving links)
    is the incident runbook's: it becomes the primary and archives as before.
    Anywhere else it is a copy: started as restore left it, it would promote
    and archive a new timeline's history file and segments into this
    repository, where a later plain restore could follow them instead of
    production's. So archiving is off there unless asked for.
    """
    if request.archive_mode is not None:
        return request.archive_mode, "as asked with --archive-mode"
    configured = settings.postgres.pgdata
    if configured and Path(configured).resolve() == request.pgdata.resolve():
        return "preserve", "into postgres.pgdata: archives as its configuration says"
    return "off", (
        "not postgres.pgdata: a copy must not archive into this repository "
        "(--archive-mode on or preserve lets it)"
    )


def execute(
    settings: Settings,
    request: RestoreRequest,
    choice: Choice,
    plan: RestorePlan,
    progress: Progress | None = None,
) -> RestoreResult:
    if plan.delta:
        return _execute_delta(settings, request, choice, plan, progress)
    started = time.monotonic()
    repo = open_repo(settings, quick_start=True)
    manifest = choice.manifest
    try:
        created = _create_root(request.pgdata)
    except OSError as exc:
        raise RestoreError(f"cannot create {request.pgdata}: {exc.strerror}") from exc
    chown = os.geteuid() == 0
    locations = _tablespace_locations(manifest, request.tablespace_dir)
    dest = restore_delta.tree(request.pgdata, locations)
    try:
        _make_tree(dest, manifest, locations, chown=chown)
        fetched = download(
            repo,
            manifest,
            restore_delta.placement(dest, chown),
            jobs=jobs(settings),
            progress=progress,
        )
        files = _write_recovery(settings, request, plan, manifest, chown=chown)
        restore_delta.install_control(request.pgdata)
    except OSError as exc:
        # A full disk or a lost mount mid-restore: one sentence, not a traceback.
        _undo(request.pgdata, manifest, request.tablespace_dir, created)
        where = f" ({exc.filename})" if exc.filename else ""
        raise RestoreError(
            f"restore into {request.pgdata} failed{where}: {exc.strerror or exc}; "
            "what was written has been removed"
        ) from exc
    except BaseException:
        _undo(request.pgdata, manifest, request.tablespace_dir, created)
        raise
    duration = time.monotonic() - started
    log.info(
        "restore done backup_id=%s bytes=%d duration_s=%.1f",
        manifest.backup_id,
        fetched.bytes_written,
        duration,
    )
    return _result(plan, fetched, duration, files, request.pgdata)


def _result(
    plan: RestorePlan,
    fetched: Fetched,
    duration: float,
    files: list[Path],
    pgdata: Path,
    comparison: restore_delta.Comparison | None = None,
    removed: int = 0,
) -> RestoreResult:
    return RestoreResult(
        plan,
        fetched.bytes_written,
        duration,
        [str(f) for f in files],
        _start_command(pgdata),
        fetched_files=fetched.files,
        fetched_bytes=fetched.bytes_written,
        reused_files=len(comparison.reused) if comparison else 0,
        reused_bytes=comparison.reused_bytes if comparison else 0,
        removed_entries=removed,
    )


def _execute_delta(
    settings: Settings,
    request: RestoreRequest,
    choice: Choice,
    plan: RestorePlan,
    progress: Progress | None,
) -> RestoreResult:
    """See ``restore_delta`` for the order and why. A failure leaves the directory
    unstartable, and the message says so: nothing is undone, a rerun finishes it."""
    started = time.monotonic()
    repo = open_repo(settings, quick_start=True)
    manifest, root = choice.manifest, request.pgdata
    chown = os.geteuid() == 0
    locations = _tablespace_locations(manifest, None)
    log.info("delta restore begins backup_id=%s pgdata=%s", manifest.backup_id, root)
    restore_delta.check_not_running(root)  # again: the plan was shown since the first check
    try:
        restore_delta.disable_start(root)
    except OSError as exc:
        raise RestoreError(f"cannot set {root}/global/pg_control aside: {exc.strerror}") from exc
    try:
        removed = restore_delta.clean(root, manifest, locations)
        dest = restore_delta.tree(root, locations)
        _make_tree(dest, manifest, locations, chown=chown)
        comparison = restore_delta.compare(
            manifest, dest, jobs=jobs(settings), chown=chown, progress=progress
        )
        fetched = download(
            repo,
            manifest,
            restore_delta.placement(dest, chown),
            jobs=jobs(settings),
            progress=progress,
            files=comparison.fetch,
        )
        files = _write_recovery(settings, request, plan, manifest, chown=chown)
        restore_delta.install_control(root)
        restore_delta.finish(root)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise RestoreError(
            f"delta restore into {root} failed{where}: {exc.strerror or exc}; "
            + restore_delta.left_unstartable(root)
        ) from exc
    except JanuaError as exc:
        raise type(exc)(f"{exc.message}; {restore_delta.left_unstartable(root)}") from exc
    duration = time.monotonic() - started
    log.info(
        "delta restore done backup_id=%s reused=%d fetched=%d removed=%d duration_s=%.1f",
        manifest.backup_id,
        len(comparison.reused),
        fetched.files,
        removed,
        duration,
    )
    return _result(plan, fetched, duration, files, root, comparison, removed)


def _requested(request: RestoreRequest, manifest: Manifest) -> int | None:
    """The timeline asked for: a number, the backup's own ('current'), or None (the
    rule of ``repository.timelines``; PostgreSQL's 'latest' is not what is followed)."""
    if request.recovery_target.timeline == "current":
        return manifest.timeline
    return request.requested_timeline


def _on_path(
    manifests: list[Manifest], index: window.WalIndex, request: RestoreRequest
) -> list[Manifest]:
    """The backups from which ``--target-timeline N`` can be reached; ``InputError`` if
    none (or not the one asked for) can."""
    wanted = request.requested_timeline
    if wanted is None:
        return manifests
    usable = [m for m in manifests if timelines.descends(index, m.timeline, m.start_lsn, wanted)]
    named = [m for m in manifests if m.backup_id == request.backup_id]
    if named and named[0] not in usable:
        m = named[0]
        timelines.resolve(index, m.timeline, m.start_lsn, m.wal_segment_size, wanted)  # raises
    if manifests and not usable:
        raise InputError(
            f"--target-timeline {wanted} is not on the path of any backup (no backup's "
            "timeline leads to it after the backup's start); `janua-backup list` shows "
            "each backup's timelines"
        )
    return usable


def _target_timeline(choice: Choice) -> int:
    path = choice.window.path
    return path.target if path is not None else choice.manifest.timeline


def _path_text(choice: Choice) -> str:
    path = choice.window.path
    return path.describe() if path is not None else str(choice.manifest.timeline)


def _check_empty(path: Path, what: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError(
            f"{what} {path} is not empty; restore only into an empty or new directory "
            "(move the old data aside first)"
        )


def _tablespace_locations(manifest: Manifest, relocate_to: Path | None) -> dict[str, str]:
    """pg_tblspc/<oid> -> where its files go: where they were, or relocate_to/<oid>."""
    return {
        e.path: str(relocate_to / e.path.split("/")[1]) if relocate_to else e.link_target
        for e in manifest.files
        if e.kind == "symlink" and e.path.startswith("pg_tblspc/") and e.link_target
    }


def _tablespace_map(manifest: Manifest, relocate_to: Path | None) -> str:
    """PostgreSQL recreates the pg_tblspc links from this file at startup, so a
    relocated tablespace must be relocated here too."""
    if relocate_to is None or not manifest.tablespace_map:
        return manifest.tablespace_map
    lines = []
    for line in manifest.tablespace_map.splitlines():
        oid, _, _ = line.partition(" ")
        lines.append(f"{oid} {relocate_to / oid}" if oid.isdigit() else line)
    return "\n".join(lines) + "\n"


def describe_target(target: Target) -> str:
    if target.kind == "time" and target.time is not None:
        return f"time {recovery.format_pg_time(target.time)}"
    if target.kind in ("latest", "immediate"):
        return {"latest": "end of the archive", "immediate": "consistency (immediate)"}[target.kind]
    return f"{target.kind} {target.text or target.lsn}"


def _create_root(pgdata: Path) -> bool:
    existed = pgdata.exists()
    pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
    return not existed


def _make_tree(where: Tree, manifest: Manifest, locations: dict[str, str], *, chown: bool) -> None:
    """Directories first, then the tablespace links, so files land where they belong;
    all through ``where`` (``confined``): no link on the way is followed but the
    tablespaces'. A tablespace location this restore did not create (one that was
    there, empty) keeps its owner and mode."""
    root = where.root
    root_entry = next((e for e in manifest.files if e.path in ROOT_PATHS), None)
    for entry in sorted(manifest.files, key=lambda e: e.path):  # parents sort first
        if entry.kind == "dir" and entry.path not in ROOT_PATHS:
            where.mkdir(entry.path)
        elif entry.kind == "symlink":
            target = Path(locations[entry.path])
            if not target.exists():
                target.mkdir(mode=0o700, parents=True)
                if chown:
                    os.chown(target, *owner_ids(entry))
            where.symlink(entry.path, str(target))
            apply_metadata(where, entry.path, entry, chown=chown)
    for entry in manifest.files:
        if entry.kind == "dir" and entry.path not in ROOT_PATHS:
            apply_metadata(where, entry.path, entry, chown=chown)
    if root_entry is not None:
        with where.directory("") as fd:
            set_metadata(fd, root_entry, chown=chown)
    elif chown:
        owner = next((e for e in manifest.files if e.kind == "file"), None)
        if owner is not None:
            os.chown(root, *owner_ids(owner))
    os.chmod(root, 0o700)


def _write_recovery(
    settings: Settings,
    request: RestoreRequest,
    plan: RestorePlan,
    manifest: Manifest,
    *,
    chown: bool,
) -> list[Path]:
    root = request.pgdata
    owner = next((e for e in manifest.files if e.path == "global/pg_control"), None)
    written = [root / "backup_label"]
    atomic_write(root / "backup_label", [manifest.backup_label.encode()], mode=0o600)
    if manifest.tablespace_map:
        ts_map = _tablespace_map(manifest, request.tablespace_dir)
        atomic_write(root / "tablespace_map", [ts_map.encode()], mode=0o600)
        written.append(root / "tablespace_map")
    _clear_spool(root, settings.wal.spool_dir)
    # The timeline number janua checked, never 'latest': a branch archived later (a
    # side copy) must not change the path PostgreSQL follows (``repository.timelines``).
    # A standby keeps what it was given: it must follow its primary's future failovers.
    target = request.recovery_target
    if plan.target_timeline is not None and not request.standby:
        target = replace(target, timeline=str(plan.target_timeline))
    text = recovery.render_settings(
        restore_command(settings),
        target,
        archive_mode=archive_choice(settings, request)[0],
    )
    written += recovery.write_recovery(root, text, standby=request.standby)
    if chown and owner is not None:
        for path in written:
            os.chown(path, *owner_ids(owner))
    return written


def restore_command(settings: Settings) -> str:
    """This tool, with this config file, as PostgreSQL will run it.

    ``ConfigError`` if PostgreSQL could cut it short (``pg.command_line``):
    ``prepare`` asks first, so nothing is written then.
    """
    command = f'{invocation(settings)} wal-fetch %f "%p"'
    if settings.wal.prefetch_segments > 0:
        from janua_backup.prefetch import shell_hand_over

        command = shell_hand_over(settings.wal.spool_dir) + command
    check_fits("restore_command", command)
    return command


def require_config(settings: Settings) -> None:
    """``ConfigError`` unless settings come from a file: PostgreSQL runs restore_command
    without the environment of whoever ran restore, so nothing else reaches it."""
    if settings.config_path is None:
        raise ConfigError(
            "restore needs --config (or JANUA_BACKUP_CONFIG): PostgreSQL runs "
            "restore_command without your environment, so its settings must come from a file"
        )


def _clear_spool(root: Path, spool_dir: str | None) -> None:
    """Remove the default spool under the restored ``pg_wal`` if there is one, and
    what a configured ``wal.spool_dir`` holds prefetched.

    janua-backup never backs up ``pg_wal``'s contents, so a spool there came from
    somewhere else (a manifest that names it, a data directory reused by
    ``--delta``): its scripts would run as restore_command and its segments go
    to PostgreSQL as WAL. A restore starts a new recovery, so nothing prefetched
    before (perhaps for another cluster) belongs to it. The first wal-fetch
    makes a new spool.
    """
    from janua_backup.prefetch import LOCK_FILE, LOG_FILE, SUBDIR
    from janua_backup.spool import DEFAULT_SUBDIR

    kept = (LOCK_FILE, LOG_FILE)  # the lock a prefetcher may hold, its log

    spool_root = root / "pg_wal" / DEFAULT_SUBDIR
    if spool_root.is_symlink() or spool_root.is_file():
        spool_root.unlink()
    elif spool_root.exists():
        shutil.rmtree(spool_root)
    prefetched = Path(spool_dir) / SUBDIR if spool_dir else None
    if prefetched is None or prefetched.is_symlink() or not prefetched.is_dir():
        return
    for entry in os.listdir(prefetched):
        path = prefetched / entry
        if not entry.startswith(kept) and (path.is_symlink() or not path.is_dir()):
            path.unlink(missing_ok=True)  # segments, temp files, the last request


def _start_command(pgdata: Path) -> str:
    prefix = "runuser -u postgres -- " if os.geteuid() == 0 else ""
    return f"{prefix}pg_ctl -D {pgdata} start"


def _undo(root: Path, manifest: Manifest, relocate_to: Path | None, created: bool) -> None:
    """Removes what this restore wrote; the directory was empty before."""
    with contextlib.suppress(OSError):
        for location in _tablespace_locations(manifest, relocate_to).values():
            _empty(Path(location))
        if created:
            shutil.rmtree(root)
        else:
            _empty(root)


def _empty(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
