"""Parallel, bounded transfer of data files through the pipeline.

Upload: small files are bundled (one stored object holds many files back to
back, each with its offset), big files get an object each. Each worker reads
its files in 1 MiB chunks, hashing every file on the way, and streams the
object to storage; at most ``jobs`` objects are in flight, so memory is
bounded by ``jobs`` x (one storage part + pipeline buffers), whatever the
size of the database. zlib, zstd, hashlib and AES-GCM release the GIL on
large buffers, so threads compress on every core.

Download: each object is decoded (stored digest and trailer verified) and cut
back into files; every file's size and SHA-256 is checked against the
manifest before the restore counts it as written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from janua_backup.errors import BackupError, IntegrityError, RestoreError
from janua_backup.pipeline.stream import Digest
from janua_backup.repository import layout
from janua_backup.repository.manifest import FileEntry, Manifest, StoredObject
from janua_backup.repository.objects import Repo

CHUNK_BYTES = 1024 * 1024
T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class SourceFile:
    entry: FileEntry  # metadata; sha256/object/offset are filled in by upload
    source: Path


def plan_objects(
    files: Sequence[SourceFile], bundle_limit: int, bundle_size: int
) -> list[list[SourceFile]]:
    """Groups files into objects: one per big file, bundles of small ones."""
    groups: list[list[SourceFile]] = []
    bundle: list[SourceFile] = []
    bundle_bytes = 0
    for item in files:
        if item.entry.size_bytes >= bundle_limit:
            groups.append([item])
            continue
        if bundle and bundle_bytes + item.entry.size_bytes > bundle_size:
            groups.append(bundle)
            bundle, bundle_bytes = [], 0
        bundle.append(item)
        bundle_bytes += item.entry.size_bytes
    if bundle:
        groups.append(bundle)
    groups.sort(key=lambda g: -sum(f.entry.size_bytes for f in g))  # big first: better balance
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

    def upload(self, group: list[SourceFile]) -> tuple[list[FileEntry], StoredObject]:
        with self._lock:
            self._counter += 1
            name = layout.data_name(self._counter)
        written: list[FileEntry] = []
        result = self.repo.put(
            layout.data_key(self.backup_id, name), self._read(group, name, written), if_absent=True
        )
        obj = StoredObject(
            name,
            result.plain.size_bytes,
            result.plain.sha256,
            result.stored.size_bytes,
            result.stored.sha256,
        )
        return written, obj

    def _read(self, group: list[SourceFile], name: str, out: list[FileEntry]) -> Iterator[bytes]:
        offset = 0
        for item in group:
            try:
                handle = item.source.open("rb")
            except FileNotFoundError:
                continue  # dropped while we ran; WAL replay recreates nothing of it
            except OSError as exc:
                raise BackupError(f"cannot read {item.source}: {exc.strerror}") from exc
            digest, size = hashlib.sha256(), 0
            with handle:
                # Read only what the file had when listed: a relation that grows
                # during the backup is replayed from WAL, and a bound keeps bundles exact.
                while size < item.entry.size_bytes:
                    chunk = handle.read(min(CHUNK_BYTES, item.entry.size_bytes - size))
                    if not chunk:
                        break
                    digest.update(chunk)
                    size += len(chunk)
                    if self.progress:
                        self.progress(len(chunk))
                    yield chunk
            out.append(
                replace(
                    item.entry,
                    size_bytes=size,
                    sha256=digest.hexdigest(),
                    object=name,
                    offset=offset,
                )
            )
            offset += size


def upload(
    repo: Repo,
    backup_id: str,
    files: Sequence[SourceFile],
    *,
    jobs: int,
    bundle_limit: int,
    bundle_size: int,
    progress: Progress | None = None,
) -> tuple[list[FileEntry], list[StoredObject]]:
    uploader = _Uploader(repo, backup_id, progress)
    groups = plan_objects(files, bundle_limit, bundle_size)
    results = run_bounded(groups, uploader.upload, jobs)
    entries = sorted((e for written, _ in results for e in written), key=lambda e: e.path)
    objects = sorted((obj for _, obj in results), key=lambda o: o.name)
    return entries, objects


@dataclass(frozen=True, slots=True)
class Placement:
    """Where restored files go and who owns them."""

    resolve: Callable[[str], Path]  # manifest path -> absolute destination
    chown: bool


def download(
    repo: Repo,
    manifest: Manifest,
    placement: Placement,
    *,
    jobs: int,
    progress: Progress | None = None,
) -> int:
    """Restores every file of the manifest; returns the bytes written."""
    by_object: dict[str, list[FileEntry]] = {}
    for entry in manifest.files:
        if entry.kind == "file" and entry.object is not None:
            by_object.setdefault(entry.object, []).append(entry)
    jobs_list = [
        (manifest.object(name), sorted(files, key=lambda e: e.offset))
        for name, files in by_object.items()
    ]
    jobs_list.sort(key=lambda j: -j[0].plain_size_bytes)

    def work(job: tuple[StoredObject, list[FileEntry]]) -> int:
        return _restore_object(repo, manifest.backup_id, job[0], job[1], placement, progress)

    return sum(run_bounded(jobs_list, work, jobs))


def _restore_object(
    repo: Repo,
    backup_id: str,
    obj: StoredObject,
    files: list[FileEntry],
    placement: Placement,
    progress: Progress | None,
) -> int:
    stream = repo.get(
        layout.data_key(backup_id, obj.name),
        expect_stored=Digest(obj.stored_size_bytes, obj.stored_sha256),
        expect_plain=Digest(obj.plain_size_bytes, obj.plain_sha256),
    )
    reader = _Cutter(stream)
    for entry in files:
        if entry.offset != reader.position:
            raise IntegrityError(
                f"backup {backup_id}: object {obj.name} has a hole before {entry.path}"
            )
        _write_file(entry, reader.take(entry.size_bytes), placement, progress)
    reader.finish()  # drains the stream so the trailer and stored digest are checked
    return obj.plain_size_bytes


class _Cutter:
    """Cuts a chunk stream into exact-length pieces without copying it whole."""

    def __init__(self, stream: Iterator[bytes]) -> None:
        self._stream = stream
        self._buffer = memoryview(b"")
        self.position = 0

    def take(self, size: int) -> Iterator[bytes]:
        remaining = size
        while remaining > 0:
            if not self._buffer:
                nxt = next(self._stream, None)
                if nxt is None:
                    raise IntegrityError("a stored object ended before the files it should hold")
                self._buffer = memoryview(nxt)
            piece = self._buffer[:remaining]
            self._buffer = self._buffer[len(piece) :]
            remaining -= len(piece)
            self.position += len(piece)
            yield bytes(piece)

    def finish(self) -> None:
        if self._buffer or any(True for chunk in self._stream if chunk):
            raise IntegrityError("a stored object holds more bytes than its files")


def _write_file(
    entry: FileEntry, chunks: Iterator[bytes], placement: Placement, progress: Progress | None
) -> None:
    path = placement.resolve(entry.path)
    digest, size = hashlib.sha256(), 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise RestoreError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            if progress:
                progress(len(chunk))
        handle.flush()
        os.fsync(handle.fileno())
    if size != entry.size_bytes or digest.hexdigest() != entry.sha256:
        raise IntegrityError(
            f"{entry.path}: restored {size} bytes with sha256 {digest.hexdigest()[:12]}..., "
            f"the manifest says {entry.size_bytes} bytes, {entry.sha256[:12]}...; "
            "the backup is damaged"
        )
    apply_metadata(path, entry, chown=placement.chown)


def apply_metadata(path: Path, entry: FileEntry, *, chown: bool) -> None:
    if chown:
        os.chown(path, *owner_ids(entry), follow_symlinks=False)
    if entry.kind != "symlink":
        os.chmod(path, entry.mode & 0o7777)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))


def owner_ids(entry: FileEntry) -> tuple[int, int]:
    """The recorded owner by name if this host knows it, else by number."""
    import grp
    import pwd

    uid, gid = entry.uid, entry.gid
    if entry.user:
        with contextlib.suppress(KeyError):
            uid = pwd.getpwnam(entry.user).pw_uid
    if entry.group:
        with contextlib.suppress(KeyError):
            gid = grp.getgrnam(entry.group).gr_gid
    return uid, gid
