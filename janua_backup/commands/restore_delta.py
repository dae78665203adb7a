"""``restore --delta``: bring an existing data directory of the same cluster to a backup,
reusing the files that already hold the right bytes.

The safety argument, in the order things happen:

1. Refuse before touching anything unless the directory holds a data directory
   of the backup's cluster (``global/pg_control``'s system identifier, or the
   one a previous interrupted delta restore set aside) and no PostgreSQL runs
   on it (``postmaster.pid`` absent, or naming a process that no longer exists).
2. Make the directory unstartable first: ``global/pg_control`` is renamed to
   ``pg_control.janua-delta``. Without it PostgreSQL refuses to start, so a
   half-done delta restore can never start as if it were consistent. It stays
   that way on any failure; rerunning ``restore --delta`` finishes the job.
3. Remove everything the manifest does not list: files of dropped relations,
   the old ``backup_label``, signal files, and *all* of ``pg_wal``'s contents.
   Old WAL and timeline history files must go: recovery also reads ``pg_wal``,
   and with the default target timeline ``latest`` a history file left there by
   the server that ran on this directory would lead recovery onto a timeline the
   archive does not have. Tablespace locations are cleaned only inside the
   subdirectory of this server version; other versions' subdirectories stay.
4. A listed file is kept only if its size *and* SHA-256 equal the manifest's
   (mtimes prove nothing: a restore sets them from the manifest); its mode, owner
   and mtime are then set as a normal restore would. Everything else is fetched
   (only the objects holding at least one such file are read) and verified.
5. ``backup_label``, ``tablespace_map`` and the recovery settings are written,
   then ``pg_control`` from the backup is moved into place, last, and the set-aside
   copy removed. From that moment the directory starts as a normal restore does.

It also owns the rule both restores follow for ``pg_control``: written under a
temporary name (``placement``) and moved into place last (``install_control``).
Every entry is reached through ``confined.Tree``: a link planted in the directory
(``base/1`` -> elsewhere) is removed as an entry, never followed, by the
cleaning and the comparison alike.
Must not import cli or output.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from janua_backup.confined import Tree
from janua_backup.errors import FormatError, InputError
from janua_backup.pg import control
from janua_backup.repository.manifest import FileEntry, Manifest
from janua_backup.repository.transfer import Progress, hash_handle, run_bounded
from janua_backup.repository.transfer_download import Placement, apply_metadata

CONTROL = "global/pg_control"
CONTROL_SET_ASIDE = "global/pg_control.janua-delta"
CONTROL_PENDING = "global/pg_control.janua-new"  # both restores: moved into place last
PID_FILE = "postmaster.pid"


@dataclass(frozen=True, slots=True)
class Comparison:
    reused: list[FileEntry]  # already right: kept
    fetch: list[FileEntry]  # missing or different: to fetch (stale copies removed)

    @property
    def reused_bytes(self) -> int:
        return sum(e.size_bytes for e in self.reused)


def has_entries(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def check_target(pgdata: Path, manifest: Manifest, locations: dict[str, str]) -> None:
    """Every refusal of a delta restore; writes nothing."""
    sysid = _system_identifier(pgdata)
    if sysid != manifest.system_identifier:
        raise InputError(
            f"{pgdata} holds the data directory of cluster {sysid}, but backup "
            f"{manifest.backup_id} is of cluster {manifest.system_identifier}; restore --delta "
            "only into a data directory of the same cluster, or into an empty directory"
        )
    check_not_running(pgdata)
    for link, location in locations.items():
        if _link_target(pgdata / link) == location:
            continue  # the same tablespace: delta into it
        where = Path(location)
        if where.exists() and (not where.is_dir() or any(where.iterdir())):
            raise InputError(
                f"tablespace location {location} is not empty and {pgdata / link} does not "
                "point to it; empty it (or move it aside) before restore --delta"
            )


def _system_identifier(pgdata: Path) -> int:
    for name in (CONTROL, CONTROL_SET_ASIDE):
        try:
            fd = Tree(pgdata).open(name, os.O_RDONLY)  # global/ a link: refused, not read
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise InputError(f"cannot read {pgdata / name}: {exc.strerror or exc}") from exc
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(8192)
        try:
            return control.parse_control(data).system_identifier
        except FormatError as exc:
            raise InputError(
                f"{pgdata / name} is not a valid control file ({exc}); restore --delta needs "
                "an intact data directory of the same cluster, or an empty directory"
            ) from exc
    raise InputError(
        f"{pgdata} is not empty and holds no PostgreSQL data directory (no {CONTROL}); "
        "restore --delta only into a data directory of the same cluster or an empty directory"
    )


def check_not_running(pgdata: Path) -> None:
    """Refuses while ``postmaster.pid`` names a live process (or cannot be understood)."""
    path = pgdata / PID_FILE
    try:
        first = path.read_text(errors="replace").split("\n", 1)[0].strip()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror}); is PostgreSQL running?") from exc
    if not first.isdigit():
        raise InputError(
            f"{path} exists but names no process; if PostgreSQL is surely not running on "
            f"{pgdata}, remove {path} and run restore --delta again"
        )
    if _alive(int(first)):
        raise InputError(
            f"PostgreSQL is running on {pgdata} (postmaster.pid names live process {first}); "
            f"stop it first (pg_ctl -D {pgdata} stop), or remove a stale {PID_FILE} if that "
            "process is not PostgreSQL, then run restore --delta again"
        )


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # never signal a process group: treat as running, refuse
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _link_target(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def tree(pgdata: Path, locations: Mapping[str, str]) -> Tree:
    """The directory as a delta restore may walk it: the tablespace links it restores,
    and an ``initdb --waldir`` ``pg_wal`` link (the server's own), are the only
    links followed."""
    links = {path: Path(location) for path, location in locations.items()}
    wal = pgdata / "pg_wal"
    if wal.is_symlink() and wal.is_dir():
        links["pg_wal"] = wal
    return Tree(pgdata, links)


def disable_start(pgdata: Path) -> None:
    """Step 2: no pg_control, no start. Durable before anything else changes."""
    where = Tree(pgdata)
    if where.lstat(CONTROL) is not None:
        where.replace(CONTROL, CONTROL_SET_ASIDE)
    _fsync_dir(where, "global")


def finish(pgdata: Path) -> None:
    """After the backup's pg_control is in place: drop the set-aside copy."""
    where = Tree(pgdata)
    if where.lstat(CONTROL_SET_ASIDE) is not None:
        where.remove(CONTROL_SET_ASIDE)
    _fsync_dir(where, "global")


def clean(pgdata: Path, manifest: Manifest, locations: dict[str, str]) -> int:
    """Step 3: removes what the manifest does not list; returns how many entries
    (a removed directory counts once)."""
    listed = {e.path: e for e in manifest.files}
    return _Cleaner(tree(pgdata, locations), listed, locations).visit("")


class _Cleaner:
    def __init__(
        self, where: Tree, listed: dict[str, FileEntry], locations: Mapping[str, str]
    ) -> None:
        self.where = where
        self.listed = listed
        self.locations = locations

    def visit(self, rel: str, *, only_listed: bool = False) -> int:
        removed = 0
        for name in sorted(self.where.listdir(rel)):
            path = f"{rel}/{name}" if rel else name
            if path == CONTROL_SET_ASIDE:
                continue
            entry = self.listed.get(path)
            if entry is None:
                if only_listed:
                    continue  # another server version's part of a shared tablespace location
                self.where.remove(path)
                removed += 1
                continue
            removed += self._listed(path, entry)
        return removed

    def _listed(self, path: str, entry: FileEntry) -> int:
        st = self.where.lstat(path)
        if st is None:
            return 0
        if entry.kind == "dir" and stat.S_ISDIR(st.st_mode):
            return self.visit(path)
        if entry.kind == "dir" and path in self.where.links and stat.S_ISLNK(st.st_mode):
            return self.visit(path)  # initdb --waldir: keep the link, empty its target
        if entry.kind == "file" and stat.S_ISREG(st.st_mode):
            return 0  # compared later
        if entry.kind == "symlink" and self.where.readlink(path) == self.locations.get(path):
            if Path(self.locations[path]).is_dir():
                return self.visit(path, only_listed=True)
            return 0
        self.where.remove(path)  # the wrong kind of thing, or a link elsewhere: made anew
        return 1


def compare(
    manifest: Manifest,
    where: Tree,
    *,
    jobs: int,
    chown: bool,
    progress: Progress | None = None,
) -> Comparison:
    """Step 4: which listed files are already right. pg_control is always fetched:
    it is set aside, and the backup's copy must be the one that lands, last. A link
    where a file belongs is removed, never followed."""
    candidates: list[FileEntry] = []
    fetch: list[FileEntry] = []
    for entry in manifest.files:
        if entry.kind != "file":
            continue
        st = where.lstat(entry.path)
        if st is None:
            fetch.append(entry)
            continue
        if entry.path != CONTROL and stat.S_ISREG(st.st_mode) and st.st_size == entry.size_bytes:
            candidates.append(entry)
        else:
            where.remove(entry.path)
            fetch.append(entry)

    def work(entry: FileEntry) -> tuple[FileEntry, bool]:
        with os.fdopen(where.open(entry.path, os.O_RDONLY), "rb", buffering=0) as handle:
            same = hash_handle(handle, entry) == entry.sha256
        if same:
            apply_metadata(where, entry.path, entry, chown=chown)
            if progress:
                progress(entry.size_bytes)
        else:
            where.remove(entry.path)
        return entry, same

    reused: list[FileEntry] = []
    for entry, same in run_bounded(candidates, work, jobs):
        (reused if same else fetch).append(entry)
    return Comparison(sorted(reused, key=lambda e: e.path), sorted(fetch, key=lambda e: e.path))


def left_unstartable(root: Path) -> str:
    return (
        f"{root} is left unstartable (its pg_control is set aside as "
        f"{CONTROL_SET_ASIDE}); fix the cause and run restore --delta again"
    )


def placement(where: Tree, chown: bool) -> Placement:
    """pg_control lands under a temporary name; ``_install_control`` moves it, last."""
    return Placement(where.root, chown, where.links, {CONTROL: CONTROL_PENDING})


def install_control(root: Path) -> None:
    """The moment the directory becomes startable: backup_label and the recovery
    settings are already durable, so PostgreSQL starts as a recovering restore."""
    where = Tree(root)
    if where.lstat(CONTROL_PENDING) is not None:
        where.replace(CONTROL_PENDING, CONTROL)
        _fsync_dir(where, "global")


def _fsync_dir(where: Tree, rel: str) -> None:
    with where.directory(rel) as fd:
        os.fsync(fd)
