"""``restore``: a base backup into an empty directory, set up to replay WAL to a target.

Everything that can refuse runs before anything is written: the target is
parsed and checked against the recoverable window, the directory (and every
tablespace location) must be empty, the key must match. Only then is the
plan printed and the data fetched. If fetching fails half-way (a damaged
object), what was written is removed again: a half-restored data directory
without its backup_label would start as if it were consistent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from janua_backup.commands.common import jobs, open_repo
from janua_backup.config import Settings
from janua_backup.errors import InputError, RestoreError
from janua_backup.localfs import atomic_write
from janua_backup.pg import recovery
from janua_backup.pg.wal import WalSegment
from janua_backup.repository import catalog, marker, transfer, window
from janua_backup.repository.manifest import Manifest
from janua_backup.repository.select import Choice, Target, choose
from janua_backup.repository.transfer import Placement, Progress

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


@dataclass(frozen=True, slots=True)
class RestoreResult:
    plan: RestorePlan
    written_bytes: int
    duration_s: float
    files_written: list[str] = field(default_factory=list)
    start_command: str = ""


def prepare(settings: Settings, request: RestoreRequest) -> tuple[Choice, RestorePlan]:
    """Every check that can refuse, and the plan; writes nothing."""
    _check_empty(request.pgdata, "target directory")
    repo = open_repo(settings)
    found = marker.read(repo)
    if found is None:
        raise InputError(f"{repo.describe()} holds no janua-backup repository (no marker)")
    marker.check_key(repo, found)
    manifests = catalog.list_backups(repo)
    index = window.load_index(repo, found.wal_segment_size)
    pairs = [
        (m, window.compute(m, index, requested_timeline=request.requested_timeline))
        for m in manifests
    ]
    choice = choose(pairs, request.target, request.backup_id)
    for location in _tablespace_locations(choice.manifest, request.tablespace_dir).values():
        _check_empty(Path(location), "tablespace location")
    m = choice.manifest
    plan = RestorePlan(
        backup_id=m.backup_id,
        backup_stop_time=m.stop_time.isoformat(),
        first_wal=WalSegment.from_lsn(m.timeline, m.start_lsn, m.wal_segment_size).name,
        last_wal=choice.window.last_segment,
        timeline=choice.window.timeline,
        fetch_bytes=m.original_size_bytes,
        stored_bytes=m.stored_size_bytes,
        target=describe_target(request.target),
        pgdata=str(request.pgdata),
    )
    return choice, plan


def execute(
    settings: Settings,
    request: RestoreRequest,
    choice: Choice,
    plan: RestorePlan,
    progress: Progress | None = None,
) -> RestoreResult:
    started = time.monotonic()
    repo = open_repo(settings)
    manifest = choice.manifest
    try:
        created = _create_root(request.pgdata)
    except OSError as exc:
        raise RestoreError(f"cannot create {request.pgdata}: {exc.strerror}") from exc
    chown = os.geteuid() == 0
    try:
        _make_tree(request.pgdata, manifest, request.tablespace_dir, chown=chown)
        placement = Placement(resolve=lambda p: request.pgdata / p, chown=chown)
        written = transfer.download(
            repo, manifest, placement, jobs=jobs(settings), progress=progress
        )
        files = _write_recovery(settings, request, manifest, chown=chown)
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
        "restore done backup_id=%s bytes=%d duration_s=%.1f", manifest.backup_id, written, duration
    )
    return RestoreResult(
        plan, written, duration, [str(f) for f in files], _start_command(request.pgdata)
    )


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


def _make_tree(root: Path, manifest: Manifest, relocate_to: Path | None, *, chown: bool) -> None:
    """Directories first, then the tablespace links, so files land where they belong."""
    locations = _tablespace_locations(manifest, relocate_to)
    root_entry = next((e for e in manifest.files if e.path in ("", ".")), None)
    for entry in sorted(manifest.files, key=lambda e: e.path):  # parents sort first
        if entry.kind == "dir" and entry.path not in ("", "."):
            (root / entry.path).mkdir(mode=0o700, exist_ok=True)
        elif entry.kind == "symlink":
            target = Path(locations.get(entry.path) or entry.link_target or "")
            target.mkdir(mode=0o700, parents=True, exist_ok=True)
            if chown:
                os.chown(target, *transfer.owner_ids(entry))
            (root / entry.path).symlink_to(target)
            transfer.apply_metadata(root / entry.path, entry, chown=chown)
    for entry in manifest.files:
        if entry.kind == "dir" and entry.path not in ("", "."):
            transfer.apply_metadata(root / entry.path, entry, chown=chown)
    if root_entry is not None:
        transfer.apply_metadata(root, root_entry, chown=chown)
    elif chown:
        owner = next((e for e in manifest.files if e.kind == "file"), None)
        if owner is not None:
            os.chown(root, *transfer.owner_ids(owner))
    os.chmod(root, 0o700)


def _write_recovery(
    settings: Settings, request: RestoreRequest, manifest: Manifest, *, chown: bool
) -> list[Path]:
    root = request.pgdata
    owner = next((e for e in manifest.files if e.path == "global/pg_control"), None)
    written = [root / "backup_label"]
    atomic_write(root / "backup_label", [manifest.backup_label.encode()], mode=0o600)
    if manifest.tablespace_map:
        ts_map = _tablespace_map(manifest, request.tablespace_dir)
        atomic_write(root / "tablespace_map", [ts_map.encode()], mode=0o600)
        written.append(root / "tablespace_map")
    text = recovery.render_settings(restore_command(settings), request.recovery_target)
    written += recovery.write_recovery(root, text, standby=request.standby)
    if chown and owner is not None:
        for path in written:
            os.chown(path, *transfer.owner_ids(owner))
    return written


def restore_command(settings: Settings) -> str:
    """This tool, with this config file, as PostgreSQL will run it."""
    exe = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "janua-backup" else None
    if exe is None or not exe.exists():
        found = shutil.which("janua-backup")
        exe = Path(found) if found else None
    program = str(exe) if exe else f"{sys.executable} -m janua_backup"
    config = f" --config {_shell_quote(settings.config_path)}" if settings.config_path else ""
    return f"{program}{config} wal-fetch %f %p"


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


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
