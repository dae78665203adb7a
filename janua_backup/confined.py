"""A restore's target, reached only through directory descriptors: no write can leave it.

A restore runs as root and names its files after a manifest that someone with
write access to the bucket may have written; a delta restore also walks a
directory that may hold links someone planted. The manifest's paths are
checked when it is read (``repository.manifest``); here every file and
directory is then opened one component at a time from the data directory's
descriptor, with ``O_NOFOLLOW`` and ``O_DIRECTORY``, so a symbolic link met on
the way is an error, never a detour. The only links followed are the ones the
restore itself names (``links``): each tablespace's ``pg_tblspc/<oid>``, whose
location is opened by its own path, and an ``initdb --waldir`` ``pg_wal`` a
delta restore keeps. Owners, modes and times are set on open descriptors or
with ``follow_symlinks=False``, and removal (``shutil.rmtree`` with ``dir_fd``)
never descends through a link.

Imports only the standard library and ``errors``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from janua_backup.errors import RestoreError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Tree:
    """``root`` and, for each path in ``links``, the directory it leads to."""

    root: Path
    links: Mapping[str, Path] = field(default_factory=dict)

    def path(self, rel: str) -> Path:
        """For messages only: never opened by this name."""
        return self.root / rel

    @contextlib.contextmanager
    def parent(self, rel: str) -> Iterator[tuple[int, str]]:
        """(descriptor of the directory holding ``rel``, ``rel``'s last name)."""
        parts = rel.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise RestoreError(f"{rel!r} is not a path inside {self.root}; nothing written there")
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for depth, part in enumerate(parts[:-1], start=1):
                above = "/".join(parts[:depth])
                location = self.links.get(above)
                if location is not None:
                    nxt = os.open(location, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                else:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
            yield fd, parts[-1]
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def directory(self, rel: str) -> Iterator[int]:
        """A descriptor of the directory ``rel`` ("" for the root)."""
        if rel == "":
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        elif rel in self.links:
            fd = os.open(self.links[rel], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            with self.parent(rel) as (parent, name):
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        try:
            yield fd
        finally:
            os.close(fd)

    def lstat(self, rel: str) -> os.stat_result | None:
        """The entry itself (a link is a link); None if absent, or if a directory on
        the way is missing or is not a directory (then ``rel`` is not in the tree)."""
        try:
            with self.parent(rel) as (parent, name):
                return os.stat(name, dir_fd=parent, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if _is_link_on_the_way(exc):
                return None
            raise

    def listdir(self, rel: str) -> list[str]:
        with self.directory(rel) as fd:
            return os.listdir(fd)

    def readlink(self, rel: str) -> str | None:
        try:
            with self.parent(rel) as (parent, name):
                return os.readlink(name, dir_fd=parent)
        except OSError:
            return None

    def mkdir(self, rel: str, mode: int = 0o700) -> bool:
        """True if this call created it; an existing directory is kept, anything else
        in its place is refused (a delta restore removed what it does not keep)."""
        with self.parent(rel) as (parent, name):
            try:
                os.mkdir(name, mode, dir_fd=parent)
                return True
            except FileExistsError:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    return False
                raise RestoreError(
                    f"{self.path(rel)} is not a directory, and the backup has one there; "
                    "nothing was written through it"
                ) from None

    def symlink(self, rel: str, target: str) -> None:
        """The link, unless this very link is there already (delta)."""
        with self.parent(rel) as (parent, name):
            try:
                os.symlink(target, name, dir_fd=parent)
            except FileExistsError:
                with contextlib.suppress(OSError):
                    if os.readlink(name, dir_fd=parent) == target:
                        return
                raise

    def create(self, rel: str) -> int:
        """A new file, opened for writing; an existing entry of that name is an error."""
        with self.parent(rel) as (parent, name):
            return os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent)

    def open(self, rel: str, flags: int) -> int:
        """An existing regular file (never through a link, never a link)."""
        with self.parent(rel) as (parent, name):
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RestoreError(f"{self.path(rel)} is not a regular file")
        return fd

    def open_dir(self, rel: str) -> int:
        with self.parent(rel) as (parent, name):
            return os.open(name, _DIR_FLAGS, dir_fd=parent)

    def remove(self, rel: str) -> None:
        """The entry: a link or a file is unlinked, a directory removed with all it
        holds, never following a link inside it."""
        with self.parent(rel) as (parent, name):
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)

    def replace(self, src: str, dst: str) -> None:
        with self.parent(src) as (src_fd, src_name), self.parent(dst) as (dst_fd, dst_name):
            os.replace(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)

    def lchown(self, rel: str, uid: int, gid: int) -> None:
        with self.parent(rel) as (parent, name):
            os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)


def _is_link_on_the_way(exc: OSError) -> bool:
    import errno

    return exc.errno == errno.ELOOP
