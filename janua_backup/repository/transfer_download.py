"""Parallel, bounded download of a backup's files out of its stored objects.

Each object is fetched from the backup that holds it (an incremental's
manifest names the holder of every object it needs), decoded (stored digest,
authentication and trailer verified against that object's recorded digests)
and cut back into files. Only the files asked for are written: a bundle may
hold bytes of files this manifest does not list (they changed after the
holder was taken) or that a delta restore already has; those bytes stream
through the decoder, which must still verify the whole object, and are
dropped, never written. Every file written is checked for its size and
SHA-256 against the manifest before it counts, so a misplaced offset or a
wrong holder fails loudly instead of restoring someone else's bytes.

A file in parts is created empty first; each part is then an object of its own,
written at its place in the file by whichever job takes it, so a big relation
file is inflated on every job. Each part is checked by the decoder against its
object's digests, and the manifest was checked, when it was read, to be exactly
its parts; once all are written the file's size is checked and its mode, owner
and times are set.

At most ``jobs`` objects are read at once, each in pipeline-sized chunks:
memory stays bounded whatever the size of an object.

An object whose read fails in a way a second read may heal (a GET that died
mid-body, a body that fails its checks) is read again from its start
(``reread``), a few times: the files this read created are removed first, and a
part is simply written again at its place. Only a failure every read repeats
fails the restore, so one dropped connection does not discard the restore.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from janua_backup.confined import Tree
from janua_backup.errors import IntegrityError, ObjectNotFound, RestoreError
from janua_backup.pipeline.ahead import ReadAhead
from janua_backup.pipeline.stream import Digest
from janua_backup.repository import layout
from janua_backup.repository.manifest import FileEntry, Manifest, StoredObject
from janua_backup.repository.objects import Repo
from janua_backup.repository.reread import rereading
from janua_backup.repository.transfer import READ_AHEAD_BYTES, Progress, run_bounded


@dataclass(frozen=True, slots=True)
class Placement:
    """Where restored files go and who owns them: under ``root``, through no link but
    the tablespaces' (``links``: ``pg_tblspc/<oid>`` -> location; ``confined``)."""

    root: Path
    chown: bool
    links: Mapping[str, Path] = field(default_factory=dict)
    pending: Mapping[str, str] = field(default_factory=dict)  # path -> written first as

    @property
    def tree(self) -> Tree:
        return Tree(self.root, self.links)

    def name(self, path: str) -> str:
        """The path a manifest entry is written under (pg_control: a temporary name)."""
        return self.pending.get(path, path)


@dataclass(frozen=True, slots=True)
class Fetched:
    files: int
    bytes_written: int  # plaintext bytes of the files written
    objects: int
    stored_bytes: int  # bytes read from storage (the objects' stored sizes)


@dataclass(frozen=True, slots=True)
class _Job:
    holder: str
    obj: StoredObject
    files: list[FileEntry]  # sorted by offset; a part: its file alone
    at: int | None = None  # a part: where the object's bytes go in its file


def download(
    repo: Repo,
    manifest: Manifest,
    placement: Placement,
    *,
    jobs: int,
    progress: Progress | None = None,
    files: Iterable[FileEntry] | None = None,
) -> Fetched:
    """Restores ``files`` (default: every file of the manifest); objects holding none
    of them are not read at all."""
    wanted = manifest.files if files is None else files
    by_object: dict[tuple[str, str | None], list[FileEntry]] = {}
    in_parts = [e for e in wanted if e.kind == "file" and e.parts]
    for entry in wanted:
        if entry.kind == "file" and entry.object is not None:
            by_object.setdefault((entry.object, entry.backup_id), []).append(entry)
    work_list = [
        _Job(
            manifest.holder(holder),
            manifest.object(name, holder),
            sorted(entries, key=lambda e: e.offset),
        )
        for (name, holder), entries in by_object.items()
    ]
    work_list += [
        _Job(
            manifest.holder(entry.backup_id),
            manifest.object(name, entry.backup_id),
            [entry],
            at=index * entry.part_bytes,
        )
        for entry in in_parts
        for index, name in enumerate(entry.parts)
    ]
    work_list.sort(key=lambda j: -j.obj.plain_size_bytes)
    for entry in in_parts:
        _create(placement, entry.path)

    def work(job: _Job) -> int:
        return _restore_object(repo, manifest.backup_id, job, placement, progress)

    written = run_bounded(work_list, work, jobs)
    for entry in in_parts:
        _finish_parts(entry, placement)
    return Fetched(
        files=sum(len(j.files) for j in work_list if j.at is None) + len(in_parts),
        bytes_written=sum(written),
        objects=len(work_list),
        stored_bytes=sum(j.obj.stored_size_bytes for j in work_list),
    )


def _restore_object(
    repo: Repo, backup_id: str, job: _Job, placement: Placement, progress: Progress | None
) -> int:
    obj = job.obj
    where = f"object {obj.name}" + (f" of backup {job.holder}" if job.holder != backup_id else "")
    created: list[str] = []  # names (in placement.tree) of whole files this read created

    def read() -> int:
        try:
            stream = repo.get(
                layout.data_key(job.holder, obj.name),
                expect_stored=Digest(obj.stored_size_bytes, obj.stored_sha256),
                expect_plain=Digest(obj.plain_size_bytes, obj.plain_sha256),
            )
        except ObjectNotFound as exc:
            raise ObjectNotFound(
                f"backup {backup_id} needs {where}, which is missing from the repository: "
                "this backup cannot be restored; restore an older full backup or take a new one"
            ) from exc
        # Decoding runs in a thread of its own, ahead of the writes: a restore's
        # biggest object is carried by one job, and its inflating and its writing
        # (both release the GIL) then go on at once.
        with ReadAhead(stream, READ_AHEAD_BYTES, name=f"decode-{obj.name}") as ahead:
            return _cut_object(ahead, backup_id, where, job, placement, progress, created)

    def start_over() -> None:
        for name in created:  # created with O_EXCL: nobody else's
            with contextlib.suppress(FileNotFoundError):
                placement.tree.remove(name)
        created.clear()

    return rereading(read, what=f"{where} (backup {backup_id})", before_retry=start_over)


def _cut_object(
    stream: Iterator[bytes],
    backup_id: str,
    where: str,
    job: _Job,
    placement: Placement,
    progress: Progress | None,
    created: list[str],
) -> int:
    obj = job.obj
    reader = _Cutter(stream)
    if job.at is not None:  # a part: the decoder checks all of it against the object's digest
        _write_file(job.files[0], reader.take(obj.plain_size_bytes), placement, progress, at=job.at)
        reader.finish()
        return obj.plain_size_bytes
    written = 0
    for entry in job.files:
        if entry.offset < reader.position:
            raise IntegrityError(
                f"backup {backup_id}: {entry.path} overlaps the file before it in {where}; "
                "the manifest is damaged"
            )
        reader.skip(entry.offset - reader.position)  # bytes of files not restored here
        # A file that is the whole object: the decoder checks these very bytes
        # against the same size and SHA-256 (the object's plaintext digest)
        # before the restore counts, so hashing them twice proves nothing more.
        whole = (
            entry.offset == 0
            and entry.size_bytes == obj.plain_size_bytes
            and entry.sha256 == obj.plain_sha256
        )
        _write_file(
            entry, reader.take(entry.size_bytes), placement, progress, hashed=whole, created=created
        )
        written += entry.size_bytes
    reader.finish()  # drains the stream so the trailer and the object's digests are checked
    return written


class _Cutter:
    """Cuts a chunk stream into exact-length pieces without copying it whole."""

    def __init__(self, stream: Iterator[bytes]) -> None:
        self._stream = stream
        self._buffer = memoryview(b"")
        self.position = 0

    def take(self, size: int) -> Iterator[memoryview]:
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
            yield piece

    def skip(self, size: int) -> None:
        for _ in self.take(size):
            pass

    def finish(self) -> None:
        """Reads what is left; the decoder verifies the object's size and SHA-256 at
        its end, so bytes after the last file restored are checked, not trusted."""
        self._buffer = memoryview(b"")
        for chunk in self._stream:
            self.position += len(chunk)


def _write_file(
    entry: FileEntry,
    chunks: Iterator[memoryview],
    placement: Placement,
    progress: Progress | None,
    *,
    hashed: bool = False,
    at: int | None = None,
    created: list[str] | None = None,
) -> None:
    """Write one file; unless the decoder checks its bytes already (``hashed``),
    check its size and SHA-256 against the manifest. With ``at``: write one part
    of a file in parts (created by ``_create``) there; the decoder checks it.
    A file created here is added to ``created`` (a re-read removes it first)."""
    tree, name = placement.tree, placement.name(entry.path)
    digest = None if hashed or at is not None else hashlib.sha256()
    size = 0
    try:
        if at is None:
            fd = tree.create(name)
        else:
            fd = tree.open(name, os.O_WRONLY)
            os.lseek(fd, at, os.SEEK_SET)
    except OSError as exc:
        raise RestoreError(f"cannot create {tree.path(name)}: {exc.strerror}") from exc
    if at is None and created is not None:
        created.append(name)
    with os.fdopen(fd, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
            if digest is not None:
                digest.update(chunk)
            size += len(chunk)
            if progress:
                progress(len(chunk))
        handle.flush()
        if at is not None:
            return  # a part: the whole file is synced once, after its last part
        os.fsync(handle.fileno())
        actual = entry.sha256 if digest is None else digest.hexdigest()
        if size != entry.size_bytes or actual != entry.sha256:
            raise IntegrityError(
                f"{entry.path}: restored {size} bytes with sha256 {actual[:12]}..., "
                f"the manifest says {entry.size_bytes} bytes, {entry.sha256[:12]}...; "
                "the backup is damaged"
            )
        set_metadata(handle.fileno(), entry, chown=placement.chown)


def _create(placement: Placement, path: str) -> None:
    tree, name = placement.tree, placement.name(path)
    try:
        os.close(tree.create(name))
    except OSError as exc:
        raise RestoreError(f"cannot create {tree.path(name)}: {exc.strerror}") from exc


def _finish_parts(entry: FileEntry, placement: Placement) -> None:
    """Every part is written and was checked: the file is synced once (a sync per
    part would wait, each time, for the other jobs' parts of the same file too),
    and its size is the last check."""
    fd = placement.tree.open(placement.name(entry.path), os.O_RDONLY)
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
        if size != entry.size_bytes:
            raise IntegrityError(
                f"{entry.path}: restored {size} bytes from its parts, the manifest says "
                f"{entry.size_bytes}; the backup is damaged"
            )
        set_metadata(fd, entry, chown=placement.chown)
    finally:
        os.close(fd)


def set_metadata(fd: int, entry: FileEntry, *, chown: bool) -> None:
    """Owner, mode and times of the file or directory open as ``fd``: set on the
    descriptor, so no link can send them elsewhere."""
    if chown:
        os.fchown(fd, *owner_ids(entry))
    os.fchmod(fd, entry.mode & 0o7777)
    os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))


def apply_metadata(tree: Tree, path: str, entry: FileEntry, *, chown: bool) -> None:
    """``set_metadata`` on the entry ``path`` of ``tree``; a link gets only its owner."""
    if entry.kind == "symlink":
        if chown:
            tree.lchown(path, *owner_ids(entry))
        return
    fd = tree.open_dir(path) if entry.kind == "dir" else tree.open(path, os.O_RDONLY)
    try:
        set_metadata(fd, entry, chown=chown)
    finally:
        os.close(fd)


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
