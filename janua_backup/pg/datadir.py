"""Walk PGDATA and its tablespaces as a base backup must see them.

Owns PostgreSQL's exclusion rules (``src/backend/backup/basebackup.c``,
``excludeDirContents`` and ``excludeFiles``, plus pgBackRest's additions) and
nothing else: no storage, no pipeline, no psycopg. The caller copies what it
is given; this module only decides what a restore needs.

PostgreSQL runs while we walk: a file that vanishes between the listing and
its ``lstat`` (a dropped table, a finished temp file) is skipped silently, as
``basebackup.c`` does; WAL replay recreates or removes it. Any other OS error
is a ``BackupError`` naming the path. The walk is deterministic: names sorted,
parents before children, and ``global/pg_control`` last, because PostgreSQL
copies it last (it must be at least as new as every data file beside it).
"""

from __future__ import annotations

import enum
import grp
import logging
import os
import pwd
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from janua_backup.errors import BackupError, InputError
from janua_backup.pg.control import read_control, read_major_version

log = logging.getLogger(__name__)

# Directories kept (empty) for their permissions; PostgreSQL recreates or
# ignores what they held. pg_wal comes back from the archive.
EXCLUDE_CONTENTS = frozenset(
    {
        "pg_dynshmem",
        "pg_notify",
        "pg_replslot",
        "pg_serial",
        "pg_snapshots",
        "pg_stat_tmp",
        "pg_subtrans",
    }
)
WAL_SUBDIRS = ("archive_status", "summaries")  # kept empty inside pg_wal (summaries: PG 17)
# Files that must not reach a restore: they describe the running server, an
# earlier backup or an earlier restore, and some would make PostgreSQL misbehave.
EXCLUDE_FILES = frozenset(
    {
        "backup_label",
        "backup_label.old",
        "backup_manifest",
        "current_logfiles.tmp",
        "postgresql.auto.conf.tmp",
        "postmaster.opts",
        "postmaster.pid",
        "recovery.signal",
        "standby.signal",
        "tablespace_map",
        "tablespace_map.old",
    }
)
EXCLUDE_PREFIXES = ("pgsql_tmp", "pg_internal.init")  # temp files/dirs; relcache init files
CONTROL_FILE = "global/pg_control"

_RELATION_RE = re.compile(r"([0-9]+)(?:_(fsm|vm|init))?(?:\.[0-9]+)?")
_TEMP_RELATION_RE = re.compile(r"t[0-9]+_[0-9]+(?:_(?:fsm|vm|init))?(?:\.[0-9]+)?")


class EntryKind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


@dataclass(frozen=True, slots=True)
class DataEntry:
    """One thing to back up; ``path`` is relative to PGDATA, POSIX style."""

    path: str
    kind: EntryKind
    size_bytes: int
    mode: int  # permission bits only
    uid: int
    gid: int
    user: str | None
    group: str | None
    mtime_ns: int
    link_target: str | None = None  # pg_tblspc/<oid> symlinks: the tablespace location


def _is_oid(name: str) -> bool:
    return name.isascii() and name.isdigit()


def is_excluded(name: str, siblings: frozenset[str], in_database_dir: bool) -> bool:
    """Whether ``name`` stays out of the backup (any depth, as basebackup.c matches names).

    In a database directory, temporary relations (``t<backend>_<relfilenode>``)
    and every fork of an unlogged relation except its init fork are skipped:
    PostgreSQL resets unlogged relations from the init fork at the end of recovery.
    """
    if name in EXCLUDE_FILES or name.startswith(EXCLUDE_PREFIXES):
        return True
    if not in_database_dir:
        return False
    if _TEMP_RELATION_RE.fullmatch(name):
        return True
    match = _RELATION_RE.fullmatch(name)
    return match is not None and match[2] != "init" and f"{match[1]}_init" in siblings


def _is_database_dir(rel: tuple[str, ...]) -> bool:
    """``base/<oid>`` or ``pg_tblspc/<oid>/PG_<major>_<catversion>/<oid>``."""
    if len(rel) == 2:
        return rel[0] == "base" and _is_oid(rel[1])
    return len(rel) == 4 and rel[0] == "pg_tblspc" and rel[2].startswith("PG_") and _is_oid(rel[3])


@lru_cache(maxsize=256)
def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@lru_cache(maxsize=256)
def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def _entry(
    rel: tuple[str, ...], st: os.stat_result, kind: EntryKind, link_target: str | None = None
) -> DataEntry:
    return DataEntry(
        path="/".join(rel),
        kind=kind,
        size_bytes=st.st_size if kind is EntryKind.FILE else 0,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        user=_user_name(st.st_uid),
        group=_group_name(st.st_gid),
        mtime_ns=st.st_mtime_ns,
        link_target=link_target,
    )


def _stat(path: Path, *, follow: bool) -> os.stat_result | None:
    """``None`` when the path vanished under us; other failures stop the backup."""
    try:
        return os.stat(path, follow_symlinks=follow)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise BackupError(f"cannot stat {path}: {exc.strerror}") from exc


def _list(directory: Path) -> list[str] | None:
    try:
        return sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise BackupError(f"cannot list directory {directory}: {exc.strerror}") from exc


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BackupError(f"cannot read symbolic link {path}: {exc.strerror}") from exc


class _Walk:
    """The per-walk state: where PGDATA is and, once needed, the tablespace subdirectory."""

    __slots__ = ("_version_dir", "pgdata")

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._version_dir: str | None = None

    def version_dir(self) -> str:
        if self._version_dir is None:
            self._version_dir = tablespace_version_dir(self.pgdata)
        return self._version_dir


def tablespace_version_dir(pgdata: Path) -> str:
    """``PG_15_202209061``: the subdirectory of a tablespace this server version owns.

    Only this one is backed up: during ``pg_upgrade --link`` the old and new
    versions share the tablespace location, each in its own subdirectory.
    """
    return f"PG_{read_major_version(pgdata)}_{read_control(pgdata).catalog_version_no}"


def tablespace_locations(pgdata: Path) -> dict[int, Path]:
    """Tablespace OID -> location, from the ``pg_tblspc/<oid>`` symlinks.

    In-place tablespaces (directories, PostgreSQL 15+) live inside PGDATA and
    have no separate location, so they are not listed.
    """
    links = pgdata / "pg_tblspc"
    locations: dict[int, Path] = {}
    for name in _list(links) or []:
        st = _stat(links / name, follow=False)
        if _is_oid(name) and st is not None and stat.S_ISLNK(st.st_mode):
            target = _readlink(links / name)
            if target is not None:
                locations[int(name)] = Path(target)
    return locations


def walk(pgdata: Path) -> Iterator[DataEntry]:
    """Everything a base backup of ``pgdata`` holds, tablespaces included, in a stable order.

    PGDATA itself is not an entry (a restore creates it with mode 0700).
    """
    if not pgdata.is_dir():
        raise InputError(f"{pgdata} is not a directory; check the PostgreSQL data directory")
    yield from _walk_dir(pgdata, (), _Walk(pgdata))
    st = _stat(pgdata / CONTROL_FILE, follow=False)
    if st is not None and stat.S_ISREG(st.st_mode):
        yield _entry(tuple(CONTROL_FILE.split("/")), st, EntryKind.FILE)


def _walk_dir(directory: Path, rel: tuple[str, ...], walk: _Walk) -> Iterator[DataEntry]:
    names = _list(directory)
    if names is None:
        return  # the directory went away (a dropped database)
    siblings = frozenset(names)
    in_database_dir = _is_database_dir(rel)
    for name in names:
        if is_excluded(name, siblings, in_database_dir):
            continue
        child = directory / name
        st = _stat(child, follow=False)
        if st is not None:
            yield from _walk_child(child, (*rel, name), st, walk)


def _walk_child(
    path: Path, rel: tuple[str, ...], st: os.stat_result, walk: _Walk
) -> Iterator[DataEntry]:
    if rel == ("pg_wal",) or rel[-1] in EXCLUDE_CONTENTS:
        # Kept as an empty directory even if it is a symlink (pg_wal moved by
        # initdb --waldir, pg_stat_tmp on tmpfs), as basebackup.c does.
        target = _stat(path, follow=True)
        if target is not None and stat.S_ISDIR(target.st_mode):
            yield _entry(rel, target, EntryKind.DIR)
            if rel == ("pg_wal",):
                yield from _wal_subdirs(path, rel)
        return
    if stat.S_ISLNK(st.st_mode):
        if len(rel) == 2 and rel[0] == "pg_tblspc" and _is_oid(rel[1]):
            yield from _tablespace(path, rel, st, walk)
        else:
            log.warning("skipping symbolic link outside pg_tblspc path=%s", "/".join(rel))
    elif stat.S_ISDIR(st.st_mode):
        yield _entry(rel, st, EntryKind.DIR)
        yield from _walk_dir(path, rel, walk)
    elif stat.S_ISREG(st.st_mode):
        if "/".join(rel) != CONTROL_FILE:  # yielded last by walk()
            yield _entry(rel, st, EntryKind.FILE)
    else:
        log.warning("skipping special file path=%s", "/".join(rel))


def _wal_subdirs(pg_wal: Path, rel: tuple[str, ...]) -> Iterator[DataEntry]:
    for name in WAL_SUBDIRS:
        st = _stat(pg_wal / name, follow=True)
        if st is not None and stat.S_ISDIR(st.st_mode):
            yield _entry((*rel, name), st, EntryKind.DIR)


def _tablespace(
    link: Path, rel: tuple[str, ...], st: os.stat_result, walk: _Walk
) -> Iterator[DataEntry]:
    target = _readlink(link)
    if target is None:
        return  # dropped while we walked
    yield _entry(rel, st, EntryKind.SYMLINK, link_target=target)
    version_dir = walk.version_dir()
    inner = link / version_dir
    inner_st = _stat(inner, follow=True)
    if inner_st is None or not stat.S_ISDIR(inner_st.st_mode):
        return  # nothing of this server version there yet
    yield _entry((*rel, version_dir), inner_st, EntryKind.DIR)
    yield from _walk_dir(inner, (*rel, version_dir), walk)
