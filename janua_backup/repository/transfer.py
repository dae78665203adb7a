"""Parallel, bounded upload of data files through the pipeline (download: transfer_download).

Upload: small files are bundled (one stored object holds many files back to
back, each with its offset), big files get an object each, and files bigger
than a part (``[backup] part_size_bytes``) an object per part, so that one big
relation file is compressed on every job, not on one. Each worker reads
its files in 1 MiB chunks into one buffer and streams the object to storage;
at most ``jobs`` objects are in flight, so memory is bounded by ``jobs`` x
(one storage part + pipeline buffers), whatever the size of the database.
zlib, zstd, hashlib and AES-GCM release the GIL on large buffers, so threads
compress on every core.

Per byte, the work is what integrity needs and no more: a file alone in its
object is hashed once (the object's plaintext digest is the file's), only
bundled files are hashed apart. Within each job the object's encoding runs
ahead of its upload in threads of its own (``Encoder``'s read-ahead), so one
big relation file, which a single job must carry alone, is not also slowed
by every round trip to the store.

Incremental: before uploading, ``reuse_unchanged`` reads each file that the
parent backup holds with the same path and size, hashes it, and references
the parent's copy when the SHA-256 is equal (see its docstring for why the
content, never the mtime, decides).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from io import FileIO
from pathlib import Path
from typing import TypeVar

from janua_backup.errors import BackupError
from janua_backup.repository import layout
from janua_backup.repository.manifest import (
    FileEntry,
    Manifest,
    StoredObject,
    parts_sha256,
    reference,
)
from janua_backup.repository.objects import Repo

CHUNK_BYTES = 1024 * 1024
READ_AHEAD_BYTES = 2 * 1024 * 1024
"""Codec output an object's encoding may run ahead of its upload, per job: enough to
keep compressing through most of a part's round trip, small next to the S3 part
(peak RSS must stay under 100 MiB with 2 jobs: measured 93-96 MiB; 4 MiB reached 99)."""
_Written = tuple["SourceFile", FileEntry]  # what an object's upload wrote of an item
T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class SourceFile:
    entry: FileEntry  # metadata; sha256/object/offset are filled in by upload
    source: Path
    part: int | None = None  # one part of a file in parts: its bytes from part * part_bytes
    part_bytes: int = 0

    @property
    def read_range(self) -> tuple[int, int]:
        """(start, most bytes) of the file this item reads."""
        if self.part is None:
            return 0, self.entry.size_bytes
        start = self.part * self.part_bytes
        return start, max(0, min(self.part_bytes, self.entry.size_bytes - start))


def plan_objects(
    files: Sequence[SourceFile], bundle_limit: int, bundle_size: int, part_bytes: int
) -> list[list[SourceFile]]:
    """Groups files into objects: one per part of a file bigger than ``part_bytes``,
    one per big file, bundles of small ones."""
    groups: list[list[SourceFile]] = []
    bundle: list[SourceFile] = []
    bundle_bytes = 0
    for item in files:
        size = item.entry.size_bytes
        if size > part_bytes:
            count = -(-size // part_bytes)
            groups.extend([replace(item, part=i, part_bytes=part_bytes)] for i in range(count))
            continue
        if size >= bundle_limit:
            groups.append([item])
            continue
        if bundle and bundle_bytes + item.entry.size_bytes > bundle_size:
            groups.append(bundle)
            bundle, bundle_bytes = [], 0
        bundle.append(item)
        bundle_bytes += item.entry.size_bytes
    if bundle:
        groups.append(bundle)
    groups.sort(key=lambda g: -sum(f.read_range[1] for f in g))  # big first: better balance
    return groups


def run_bounded(items: Sequence[T], work: Callable[[T], R], jobs: int) -> list[R]:
    """Runs ``work`` on every item, at most ``jobs`` at once and ``2 * jobs``
    queued; the first error cancels what has not started and is raised."""
    results: list[R] = []
    jobs = max(1, jobs)
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="janua") as pool:
        pending: set[Future[R]] = set()
        for item in items:
            while len(pending) >= 2 * jobs:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                results.extend(_collect(done, pending))
            pending.add(pool.submit(work, item))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            results.extend(_collect(done, pending))
    return results


def _collect(done: set[Future[R]], pending: set[Future[R]]) -> list[R]:
    for future in done:
        error = future.exception()
        if error is not None:
            for other in pending:
                other.cancel()
            raise error
    return [f.result() for f in done]


class _Uploader:
    def __init__(self, repo: Repo, backup_id: str, progress: Progress | None) -> None:
        self.repo = repo
        self.backup_id = backup_id
        self.progress = progress
        self._lock = threading.Lock()
        self._counter = 0

    def upload(self, group: list[SourceFile]) -> tuple[list[_Written], StoredObject]:
        with self._lock:
            self._counter += 1
            name = layout.data_name(self._counter)
        written: list[_Written] = []
        # An object of one file: the object's plaintext *is* the file, so the
        # encoder's plaintext digest is the file's and the file is hashed once.
        single = len(group) == 1
        result = self.repo.put(
            layout.data_key(self.backup_id, name),
            self._read(group, name, written, hash_files=not single),
            if_absent=True,
            read_ahead_bytes=READ_AHEAD_BYTES,
        )
        if single and written:
            item, entry = written[0]
            written = [(item, replace(entry, sha256=result.plain.sha256))]
        obj = StoredObject(
            name,
            result.plain.size_bytes,
            result.plain.sha256,
            result.stored.size_bytes,
            result.stored.sha256,
        )
        return written, obj

    def _read(
        self, group: list[SourceFile], name: str, out: list[_Written], *, hash_files: bool
    ) -> Iterator[memoryview]:
        """The files' bytes, back to back, as views of one buffer refilled in place
        (the encoder uses each view up before asking for the next; a new 1 MiB
        buffer per read would cost page faults as dear as the hashing)."""
        offset = 0
        buffer = memoryview(bytearray(CHUNK_BYTES))
        for item in group:
            try:
                handle = item.source.open("rb", buffering=0)
            except FileNotFoundError:
                continue  # dropped while we ran; WAL replay recreates nothing of it
            except OSError as exc:
                raise BackupError(f"cannot read {item.source}: {exc.strerror}") from exc
            digest = hashlib.sha256() if hash_files else None
            size = 0
            start, most = item.read_range
            with handle:
                if start:
                    handle.seek(start)
                # Read only what the file had when listed: a relation that grows
                # during the backup is replayed from WAL, and a bound keeps bundles exact.
                while size < most:
                    want = min(CHUNK_BYTES, most - size)
                    count = handle.readinto(buffer[:want])
                    if not count:
                        break
                    chunk = buffer[:count]
                    if digest is not None:
                        digest.update(chunk)
                    size += count
                    if self.progress:
                        self.progress(count)
                    yield chunk
            entry = replace(
                item.entry,
                size_bytes=size,
                sha256=digest.hexdigest() if digest is not None else "",
                object=name,
                offset=offset,
            )
            out.append((item, entry))
            offset += size


def upload(
    repo: Repo,
    backup_id: str,
    files: Sequence[SourceFile],
    *,
    jobs: int,
    bundle_limit: int,
    bundle_size: int,
    part_size: int,
    progress: Progress | None = None,
    last: Sequence[SourceFile] = (),
) -> tuple[list[FileEntry], list[StoredObject]]:
    """Stores ``files``, then ``last`` once every one of ``files`` has been read:
    ``global/pg_control``, whose minimum recovery point is where the recovery of a
    backup taken on a standby ends, so it must be read after every page it covers."""
    uploader = _Uploader(repo, backup_id, progress)
    groups = plan_objects(files, bundle_limit, bundle_size, part_size)
    results = run_bounded(groups, uploader.upload, jobs)
    if last:
        groups = plan_objects(last, bundle_limit, bundle_size, part_size)
        results += run_bounded(groups, uploader.upload, jobs)
    written = [w for done, _ in results for w in done]
    entries = [entry for item, entry in written if item.part is None]
    entries += _join_parts([w for w in written if w[0].part is not None])
    objects = sorted((obj for _, obj in results), key=lambda o: o.name)
    return sorted(entries, key=lambda e: e.path), objects


def _join_parts(written: list[_Written]) -> list[FileEntry]:
    """One entry per file in parts, from its parts' entries. A file missing a part
    was dropped while the backup ran (WAL replay removes it too): it is left out,
    as a dropped file that is not in parts is; its parts' objects stay listed."""
    by_path: dict[str, list[_Written]] = {}
    for item, entry in written:
        by_path.setdefault(item.entry.path, []).append((item, entry))
    joined = []
    for pieces in by_path.values():
        pieces.sort(key=lambda w: w[0].part or 0)
        first = pieces[0][0]
        if len(pieces) != -(-first.entry.size_bytes // first.part_bytes):
            continue
        ends = [item.read_range[0] + e.size_bytes for item, e in pieces if e.size_bytes]
        joined.append(
            replace(
                first.entry,
                size_bytes=max(ends, default=0),
                sha256=parts_sha256(e.sha256 for _, e in pieces),
                object=None,
                offset=0,
                parts=tuple(e.object or "" for _, e in pieces),
                part_bytes=first.part_bytes,
            )
        )
    return joined


@dataclass(frozen=True, slots=True)
class Reuse:
    """The outcome of comparing a data directory with the parent backup."""

    upload: list[SourceFile]  # changed, new, or not comparable: store them
    referenced: list[FileEntry]  # unchanged: entries pointing at the holder's bytes
    objects: list[StoredObject]  # the objects those entries need, flattened, deduplicated


def reuse_unchanged(
    repo: Repo,
    parent: Manifest,
    files: Sequence[SourceFile],
    *,
    jobs: int,
    progress: Progress | None = None,
) -> Reuse:
    """Splits ``files`` into what must be uploaded and what the parent already holds.

    A file is referenced only when the parent holds the same path with the same
    size *and* the file read now has the parent's SHA-256. Size and mtime alone
    are never enough to skip reading it:
    - a write in the same clock tick as the parent's read leaves size and mtime
      unchanged (coarse timestamps, or a page rewritten within the second);
    - the parent may have read a page while PostgreSQL was writing it (a torn
      copy, made whole by replaying the parent's own WAL from the parent's
      start). A reference is replayed only from *this* backup's start, after
      the full-page image that would mend it, so referencing a torn copy would
      restore a corrupt page silently;
    - restores reset mtimes to the manifest's, so equal mtimes prove nothing.
    With equal hashes the referenced bytes are exactly the bytes this backup
    read from disk between its start and stop, which is what a full backup
    stores: the incremental is as consistent as a full one.

    An object of the parent that is no longer in the repository (or has another
    size) is never referenced: its files are uploaded again, so one lost object
    does not spread into every later backup. Reading is bounded like upload:
    ``jobs`` files at once, 1 MiB at a time.
    """
    old_by_path = {e.path: e for e in parent.files if e.object_names}
    present = _present_objects(repo, parent)
    candidates: list[tuple[SourceFile, FileEntry]] = []
    upload: list[SourceFile] = []
    for item in files:
        old = old_by_path.get(item.entry.path)
        if (
            old is not None
            and old.size_bytes == item.entry.size_bytes
            and all((name, old.backup_id) in present for name in old.object_names)
        ):
            candidates.append((item, old))
        else:
            upload.append(item)

    def work(pair: tuple[SourceFile, FileEntry]) -> tuple[SourceFile, FileEntry, str | None]:
        return pair[0], pair[1], hash_file(pair[0].source, pair[1], progress)

    referenced: list[FileEntry] = []
    objects: dict[tuple[str, str | None], StoredObject] = {}
    for item, old, sha256 in run_bounded(candidates, work, jobs):
        if sha256 is None:
            continue  # dropped while we ran: nothing to store, as in upload
        if sha256 != old.sha256:
            upload.append(item)
            continue
        entry, needed = reference(parent, old, item.entry)
        referenced.append(entry)
        objects.update(((obj.name, obj.backup_id), obj) for obj in needed)
    upload.sort(key=lambda s: s.entry.path)
    referenced.sort(key=lambda e: e.path)
    return Reuse(upload, referenced, sorted(objects.values(), key=_object_order))


def _object_order(obj: StoredObject) -> tuple[str, str]:
    return obj.backup_id or "", obj.name


def _present_objects(repo: Repo, parent: Manifest) -> set[tuple[str, str | None]]:
    """(name, backup_id as the parent writes it) of the parent's objects that are in
    the repository with their recorded stored size: one listing per holding backup."""
    sizes: dict[str, int] = {}
    for holder in {parent.holder(o.backup_id) for o in parent.objects}:
        for info in repo.storage.list(layout.backup_prefix(holder)):
            sizes[info.key] = info.size_bytes
    return {
        (o.name, o.backup_id)
        for o in parent.objects
        if sizes.get(layout.data_key(parent.holder(o.backup_id), o.name)) == o.stored_size_bytes
    }


def hash_file(path: Path, entry: FileEntry, progress: Progress | None = None) -> str | None:
    """The file at ``path`` now, hashed as ``entry`` records it (whole, or part by part:
    ``manifest.parts_sha256``) over its first ``entry.size_bytes`` bytes; None if the
    file is gone. A file that is now shorter hashes to something else, so it counts
    as changed. Other OS errors propagate: the command says what could not be read."""
    try:
        handle = path.open("rb", buffering=0)
    except FileNotFoundError:
        return None
    with handle:
        return hash_handle(handle, entry, progress)


def hash_handle(handle: FileIO, entry: FileEntry, progress: Progress | None = None) -> str:
    """``hash_file`` of a file already open (a restore opens it without following links)."""
    if not entry.parts:
        return _hash_range(handle, entry.size_bytes, progress)
    digests = []
    for index in range(len(entry.parts)):
        start = index * entry.part_bytes
        handle.seek(start)
        most = max(0, min(entry.part_bytes, entry.size_bytes - start))
        digests.append(_hash_range(handle, most, progress))
    return parts_sha256(digests)


def _hash_range(handle: FileIO, size_bytes: int, progress: Progress | None) -> str:
    """SHA-256 of the next ``size_bytes`` bytes (fewer at the end of the file)."""
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(min(CHUNK_BYTES, max(size_bytes, 1))))
    remaining = size_bytes
    while remaining > 0:
        count = handle.readinto(buffer[: min(CHUNK_BYTES, remaining)])
        if not count:
            break
        digest.update(buffer[:count])
        remaining -= count
        if progress:
            progress(count)
    return digest.hexdigest()
