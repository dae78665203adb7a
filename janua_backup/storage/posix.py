"""A ``Storage`` on a local or NFS directory (``file:///path`` repositories).

Must not import: ``janua_backup.pg``, ``janua_backup.pipeline``,
``janua_backup.repository``. A key ``a/b/c`` is the file ``ROOT/a/b/c``, so the
repository can be read, copied and rsynced with ordinary tools.

Durability follows the rule every crash-safe writer uses: write a temp file in
the target directory, fsync it, rename it into place, fsync the directory. The
rename is what makes a put atomic, and the directory fsync is what makes the
rename itself survive a power cut. Temp files start with ``.tmp-``; listings
skip them, and a crashed writer leaves only such files behind.

Limits of the mapping: a key cannot also be a "directory" of other keys (``a``
and ``a/b`` cannot both exist, unlike S3), and ``if_absent`` needs hard links
(``os.link`` fails atomically when the target exists; local filesystems and
NFS support it). Empty directories left by ``delete`` are kept: removing them
would race with a concurrent ``put`` that has just created one.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from janua_backup.errors import (
    AccessDenied,
    BucketNotFound,
    ObjectExists,
    ObjectNotFound,
    StorageError,
)
from janua_backup.storage.base import ObjectInfo

__all__ = ["PosixStorage"]

_CHUNK_BYTES = 1024 * 1024
_TMP_PREFIX = ".tmp-"
_FILE_MODE = 0o640
_DIR_MODE = 0o750


class PosixStorage:
    """Objects as files under ``root``; ``root`` must exist and is never created."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).absolute()

    def _adopt_owner(self, path: Path) -> None:
        """Run as root (a backup), new files take the repository directory's owner:
        archive_command runs as postgres and must still read and add to them."""
        if os.geteuid() != 0:
            return
        st = os.stat(self._root)
        if (st.st_uid, st.st_gid) != (0, 0):
            os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)

    def describe(self) -> str:
        return f"file://{self._root}"

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> None:
        path = self._path(key)
        with self._translated("write", path):
            self._require_root()
            self._make_dirs(path.parent)
        tmp = path.parent / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
        try:
            self._write_synced(tmp, chunks)
            with self._translated("rename into", path):
                if if_absent:
                    self._link_new(tmp, path)
                    os.unlink(tmp)
                else:
                    os.replace(tmp, path)
                _fsync_dir(path.parent)
        except BaseException:
            # Whatever failed (our I/O or the caller's stream), the temp file
            # must go; an error removing it must not hide the first error.
            with suppress(OSError):
                os.unlink(tmp)
            raise

    def get(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            # Absent key, a key that is really a "directory", or a file where
            # a directory should be: the store confirms the object is not there.
            self._require_root()
            raise ObjectNotFound(f"{self.describe()}/{key} does not exist") from exc
        except OSError as exc:
            raise self._error(exc, "read", path) from exc
        return _FileChunks(handle, path, self)

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            self._require_root()
            return None
        except OSError as exc:
            raise self._error(exc, "stat", path) from exc
        if not stat.S_ISREG(st.st_mode):
            return None
        return _info(key, st)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._translated("list", self._root):
            self._require_root()
        # Start from the deepest directory the prefix names in full.
        start = prefix.rpartition("/")[0]
        start_rel = f"{start}/" if start else ""
        return self._walk(self._root / start if start else self._root, start_rel, prefix)

    def delete(self, keys: Iterable[str]) -> None:
        with self._translated("delete in", self._root):
            self._require_root()
        touched: set[Path] = set()
        for key in keys:
            path = self._path(key)
            with self._translated("delete", path):
                try:
                    path.unlink()
                except (FileNotFoundError, NotADirectoryError):
                    continue
            touched.add(path.parent)
        for directory in sorted(touched):
            with self._translated("sync", directory):
                _fsync_dir(directory)

    # -- internals ---------------------------------------------------------

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if (
            not key
            or "\x00" in key
            or any(part in ("", ".", "..") for part in parts)
            or parts[-1].startswith(_TMP_PREFIX)
        ):
            raise ValueError(f"invalid storage key {key!r}")
        return self._root.joinpath(*parts)

    def _require_root(self) -> None:
        """Raise ``BucketNotFound`` unless ``root`` is a directory (it is never created).

        Creating it would hide a typo in ``repository.url`` or an unmounted
        NFS share behind an empty, local, wrong repository.
        """
        if not self._root.is_dir():
            raise BucketNotFound(
                f"repository directory {self._root} does not exist or is not a directory; "
                "create it (and mount it, if it is a network share) or fix repository.url"
            )

    def _make_dirs(self, directory: Path) -> None:
        missing: list[Path] = []
        while not directory.is_dir():
            if directory == self._root:
                self._require_root()
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            try:
                new.mkdir(mode=_DIR_MODE)
                self._adopt_owner(new)
            except FileExistsError:
                if not new.is_dir():
                    raise
            # The new entry lives in its parent: sync the parent, or a crash
            # may forget the directory along with the file about to go in it.
            _fsync_dir(new.parent)

    def _write_synced(self, tmp: Path, chunks: Iterable[bytes]) -> None:
        with self._translated("write", tmp):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
            self._adopt_owner(tmp)
        with os.fdopen(fd, "wb") as handle:
            # The caller's stream is iterated outside _translated: its own
            # errors (an OSError reading PGDATA, say) must reach it unchanged.
            for chunk in chunks:
                with self._translated("write", tmp):
                    handle.write(chunk)
            with self._translated("write", tmp):
                handle.flush()
                os.fsync(handle.fileno())

    def _link_new(self, tmp: Path, path: Path) -> None:
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            if path.is_dir():
                raise StorageError(
                    f"cannot store {path}: a directory of other keys has that name"
                ) from exc
            if _same_content(tmp, path):
                return  # idempotent: the same bytes are already there (the caller drops tmp)
            raise ObjectExists(f"{self.describe()}/{self._key_of(path)} already exists") from exc
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise StorageError(
                    f"the filesystem holding {self._root} does not support hard links, "
                    "which conditional writes need; use a local or NFS filesystem"
                ) from exc
            raise

    def _walk(self, directory: Path, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        with self._translated("list", directory):
            try:
                with os.scandir(directory) as scan:
                    entries = [
                        (
                            entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name,
                            entry,
                        )
                        for entry in scan
                    ]
            except (FileNotFoundError, NotADirectoryError):
                return
        # Sorting a directory's names with "/" appended to subdirectories makes
        # this depth-first walk yield keys in plain lexicographic order
        # ("a-b" < "a/b" < "a0", because "-" < "/" < "0").
        entries.sort(key=lambda pair: pair[0])
        for name, entry in entries:
            key = rel + name
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(Path(entry.path), key, prefix)
            elif key.startswith(prefix) and not name.startswith(_TMP_PREFIX):
                with self._translated("stat", Path(entry.path)):
                    try:
                        st = entry.stat()
                    except FileNotFoundError:  # deleted while we walked
                        continue
                if stat.S_ISREG(st.st_mode):
                    yield _info(key, st)

    def _key_of(self, path: Path) -> str:
        return path.relative_to(self._root).as_posix()

    @contextmanager
    def _translated(self, action: str, path: Path) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise self._error(exc, action, path) from exc

    def _error(self, exc: OSError, action: str, path: Path) -> StorageError:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return AccessDenied(
                f"permission denied to {action} {path}; the repository directory must be "
                "writable by the user janua-backup runs as"
            )
        if exc.errno == errno.ENOENT and not self._root.is_dir():
            return BucketNotFound(f"repository directory {self._root} disappeared")
        return StorageError(f"cannot {action} {path}: {exc.strerror or exc}")


class _FileChunks(Iterator[bytes]):
    """Reads an open file in 1 MiB chunks; closing it (or exhausting it) closes the file.

    A class rather than a generator: an unstarted generator's ``finally`` never
    runs on ``close()``, which would leak the file a caller opened but never read.
    """

    def __init__(self, handle: BinaryIO, path: Path, storage: PosixStorage) -> None:
        self._handle = handle
        self._path = path
        self._storage = storage

    def __next__(self) -> bytes:
        if self._handle.closed:
            raise StopIteration
        try:
            chunk = self._handle.read(_CHUNK_BYTES)
        except OSError as exc:
            self.close()
            raise self._storage._error(exc, "read", self._path) from exc
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        self._handle.close()

    def __del__(self) -> None:
        self.close()


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        key=key, size_bytes=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC)
    )


def _same_content(ours: Path, theirs: Path) -> bool:
    """Whether two files hold the same bytes, read a chunk at a time (memory stays bounded)."""
    with ours.open("rb") as mine, theirs.open("rb") as other:
        if os.fstat(mine.fileno()).st_size != os.fstat(other.fileno()).st_size:
            return False
        while chunk := mine.read(_CHUNK_BYTES):
            if other.read(len(chunk)) != chunk:
                return False
        return other.read(1) == b""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
