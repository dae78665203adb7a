"""Durable local file writes: temp file, fsync, rename, fsync the directory.

PostgreSQL must never see a half-written WAL file or data file under its
final name: a crash between write and rename leaves only a temp file behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

CHUNK_BYTES = 1024 * 1024


def read_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            yield chunk


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path, chunks: Iterable[bytes], *, mode: int = 0o600, sync_dir: bool = True
) -> int:
    """Writes ``chunks`` to ``path`` atomically; returns the bytes written.

    If ``chunks`` raises (a failed checksum, a lost connection) the temp file
    is removed and ``path`` is left as it was.
    """
    tmp = path.with_name(f".{path.name}.janua-tmp")
    written = 0
    # O_EXCL | O_NOFOLLOW: a temp file a killed writer left, or a link planted under
    # the temp name, is removed (the link itself) and never written through.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, mode)
    except FileExistsError:
        tmp.unlink()
        fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                written += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(path.parent)
    return written
