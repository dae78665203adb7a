"""The repository check: every stored object read back and every backup's WAL chain walked.

No PostgreSQL, no writes: safe to run anywhere, nightly. Each object of a
backup is read to its end through the pipeline (header, authentication and
trailer verified) and compared with the manifest's sizes and SHA-256, and
each file inside it is hashed as it streams by. For each backup the WAL is
followed from its start on every timeline that descends from it, up to the
newest segment archived on that path: the first gap (or a damaged segment)
is what the backup can be restored up to. Which timeline holds each segment,
and which path a restore follows by default, is ``timelines``' answer (the
one list and restore use); a path that splits into two living branches is
reported (a restore needs ``--target-timeline``). Every WAL segment a backup needs is
read and verified too.

Incremental backups: a manifest lists the objects of other backups it
references, each with the backup that holds it. Each object is read once,
from its holder, however many manifests list it; every file any of them
places in it is hashed, and a damaged or missing object counts against every
backup that needs it (the message names them).

A damaged, missing or undecryptable object is a ``Problem`` to report, never
an exception; storage that cannot be reached (or refuses us) raises, because
then the check itself could not run. An object that reads as damaged, or whose
read dies mid-body, is read again from its start a few times (``reread``): only
damage every read shows is reported, never one a flaky network made up. At
most ``jobs`` objects are read at once, each in ~1 MiB pieces, so memory stays
bounded whatever the sizes.
Must not import psycopg, commands or cli.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from janua_backup.errors import (
    DecryptionError,
    FormatError,
    InputError,
    IntegrityError,
    ObjectNotFound,
    RepositoryMismatch,
)
from janua_backup.pg.wal import (
    Lsn,
    TimelineHistory,
    WalFileKind,
    WalSegment,
    checked_segment,
    classify,
)
from janua_backup.pipeline.stream import Digest
from janua_backup.repository import catalog, layout, timelines, wal_archive, window, window_end
from janua_backup.repository.manifest import FileEntry, Manifest, StoredObject
from janua_backup.repository.objects import Repo
from janua_backup.repository.reread import rereading
from janua_backup.repository.transfer import run_bounded
from janua_backup.repository.wal_archive import ArchivedWal
from janua_backup.repository.window import WalIndex, Window
from janua_backup.storage.base import ObjectInfo, Storage

_DAMAGE = (IntegrityError, FormatError)  # DecryptionError is an IntegrityError: caught first


class ProblemKind(enum.StrEnum):
    EMPTY_REPOSITORY = "empty_repository"
    DAMAGED_MANIFEST = "damaged_manifest"
    MISSING_OBJECT = "missing_object"
    DAMAGED_OBJECT = "damaged_object"
    UNDECRYPTABLE_OBJECT = "undecryptable_object"
    FILE_MISMATCH = "file_mismatch"
    WAL_GAP = "wal_gap"
    NOT_RESTORABLE = "not_restorable"
    DAMAGED_WAL = "damaged_wal"
    MISSING_HISTORY = "missing_history"
    TWO_BRANCHES = "two_branches"


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    message: str  # one sentence for a person: what is wrong and what it costs
    backup_id: str | None = None
    key: str | None = None  # the storage key concerned (object, WAL segment, history)


@dataclass(frozen=True, slots=True)
class BackupCheck:
    """One backup's verdict: are its objects intact, and how far can it be restored."""

    backup_id: str
    timeline: int
    stop_time: datetime
    objects_checked: int
    objects_failed: int
    bytes_read: int
    restorable_to_time: datetime | None  # None: the WAL to reach consistency is missing
    restorable_to_lsn: Lsn | None
    restorable_to_timeline: int | None
    last_segment: str | None
    missing_segment: str | None  # the first gap before the newest archived WAL, if any
    timeline_path: str = ""  # the timelines a restore without --target-timeline follows
    branches: str | None = None  # the path splits: why a restore needs --target-timeline

    @property
    def restorable(self) -> bool:
        return self.objects_failed == 0 and self.restorable_to_lsn is not None


@dataclass(frozen=True, slots=True)
class RepoCheck:
    backups: tuple[BackupCheck, ...]
    objects_checked: int
    bytes_read: int
    wal_checked: int
    problems: tuple[Problem, ...]


@dataclass(frozen=True, slots=True)
class _Read:
    """The outcome of reading one object (``holder``: the backup storing it; None: WAL)."""

    holder: str | None
    name: str
    bytes_read: int
    problems: tuple[Problem, ...] = ()
    key: _ObjectKey | None = None


_ObjectKey = tuple[str, StoredObject]  # (holder, the object as listed, without its holder)


@dataclass
class _ObjectJob:
    """One stored object to read, and what every manifest listing it says it holds."""

    holder: str
    obj: StoredObject
    files: dict[tuple[str, int, int, str], FileEntry]  # deduplicated across manifests
    needed_by: list[str]


@dataclass(frozen=True, slots=True)
class _Path:
    """The WAL a backup replays towards one timeline, as far as the archive goes."""

    timeline: int
    window: Window
    needed: tuple[ArchivedWal, ...]  # what the walk found, from the backup's start on
    gap: str | None  # first segment missing before the newest one on this path
    beyond: int  # archived segments on the path after the gap: what the gap costs


def check(
    repo: Repo,
    segment_size: int,
    *,
    jobs: int,
    backup_id: str | None = None,
    system_identifier: int | None = None,
    pg_major: int | None = None,
) -> RepoCheck:
    """Checks every committed backup (or only ``backup_id``) and the WAL they need.

    Each segment's first page header must be the one its name gives, of the
    cluster ``system_identifier`` (the marker's): ``wal.check_segment_header``.
    """
    problems: list[Problem] = []
    manifests = _manifests(repo, backup_id, problems)
    if not manifests and backup_id is None and not problems:
        problems.append(
            Problem(
                ProblemKind.EMPTY_REPOSITORY,
                f"{repo.describe()} holds no backup: nothing could be restored from it; "
                "run `janua-backup backup`",
            )
        )
    index, archive_problems = _load_index(repo, segment_size)
    problems += archive_problems
    paths = {m.backup_id: _paths(m, index) for m in manifests}
    defaults = {m.backup_id: window.compute(m, index) for m in manifests}
    needed = {w.name: w for ps in paths.values() for p in ps for w in p.needed}
    objects = _object_jobs(manifests)
    tasks = [_object_task(repo, key, job) for key, job in _big_first(objects)]
    cluster = _Cluster(segment_size, system_identifier, pg_major)
    tasks += [_wal_task(repo, wal, cluster) for _, wal in sorted(needed.items())]
    reads = run_bounded(tasks, lambda task: task(), jobs)
    problems += [p for r in reads for p in r.problems]
    by_object = {r.key: r for r in reads if r.key is not None}
    damaged_wal = {r.name for r in reads if r.holder is None and r.problems}
    if damaged_wal:  # a damaged segment is a gap: walk again without it
        index = _without(index, damaged_wal)
        paths = {m.backup_id: _paths(m, index) for m in manifests}
        defaults = {m.backup_id: window.compute(m, index) for m in manifests}
    paths, defaults = _settled(repo, index, paths, defaults, segment_size)
    for m in manifests:
        problems += _wal_problems(m, paths[m.backup_id], damaged_wal)
        conflict = defaults[m.backup_id].conflict
        if conflict is not None:
            message = conflict.message(m.backup_id)
            problems.append(Problem(ProblemKind.TWO_BRANCHES, message, m.backup_id))
    return RepoCheck(
        backups=tuple(
            _verdict(
                m,
                defaults[m.backup_id],
                paths[m.backup_id],
                [by_object[k] for k in _object_keys(m)],
            )
            for m in manifests
        ),
        objects_checked=len(objects),
        bytes_read=sum(r.bytes_read for r in reads),
        wal_checked=len(needed),
        problems=tuple(_ordered(problems)),
    )


def _manifests(repo: Repo, backup_id: str | None, problems: list[Problem]) -> list[Manifest]:
    ids = [backup_id] if backup_id is not None else catalog.backup_ids(repo)[0]
    found = []
    for wanted in ids:
        key = layout.manifest_key(wanted)
        try:
            found.append(catalog.bound(repo.get_bytes(key), wanted))
        except ObjectNotFound:
            if backup_id is not None:
                raise InputError(
                    f"no backup {backup_id} in {repo.describe()}; "
                    "`janua-backup list` shows the backups"
                ) from None
            continue  # expired while we listed
        except (*_DAMAGE, InputError) as exc:  # InputError: an LSN that does not parse
            problems.append(
                Problem(
                    ProblemKind.DAMAGED_MANIFEST,
                    f"backup {wanted} cannot be restored: its manifest is unreadable ({exc})",
                    wanted,
                    key,
                )
            )
    return found


def _load_index(repo: Repo, segment_size: int) -> tuple[WalIndex, list[Problem]]:
    """``window.load_index`` that reports a damaged history file instead of raising,
    and a timeline with segments but no history file."""
    archived: list[ArchivedWal] = []
    histories: dict[int, TimelineHistory] = {}
    listed: set[int] = set()  # timelines with a history file, readable or not
    problems: list[Problem] = []
    for wal in wal_archive.list_archived(repo):
        try:
            kind = classify(wal.name)
        except InputError:
            continue  # not a WAL file name: nothing recovery would ask for
        archived.append(wal)
        if kind is not WalFileKind.HISTORY:
            continue
        key, tli = layout.wal_key(wal.name), int(wal.name[:8], 16)
        listed.add(tli)
        try:
            text = wal_archive.read(repo, wal.name).decode("utf-8", "replace")
            histories[tli] = TimelineHistory.parse(text)
        except ObjectNotFound:
            continue
        except (*_DAMAGE, DecryptionError) as exc:
            problems.append(
                Problem(
                    ProblemKind.DAMAGED_WAL,
                    f"timeline history {wal.name} is damaged ({exc}): recovery cannot "
                    "follow the switch to that timeline",
                    key=key,
                )
            )
    index = WalIndex.build(archived, histories, segment_size)
    problems += _missing_histories(index, listed, segment_size)
    return index, problems


def _missing_histories(index: WalIndex, listed: set[int], segment_size: int) -> list[Problem]:
    first: dict[int, int] = {}
    for tli, segno in index.segments:
        first[tli] = min(segno, first.get(tli, segno))
    problems = []
    for tli in sorted(first):
        if tli == 1 or tli in listed:
            continue
        name = f"{tli:08X}.history"
        seg = WalSegment.from_number(tli, first[tli], segment_size).name
        problems.append(
            Problem(
                ProblemKind.MISSING_HISTORY,
                f"timeline {tli} has archived WAL (from {seg}) but no {name}: recovery "
                f"cannot follow the switch to timeline {tli}; archive pg_wal/{name} of the "
                "server that created it again with `janua-backup wal-push`",
                key=layout.wal_key(name),
            )
        )
    return problems


def _without(index: WalIndex, names: set[str]) -> WalIndex:
    kept = {k: w for k, w in index.segments.items() if w.name not in names}
    return WalIndex(kept, index.histories, index.newest_segno, index.history_times)


def _paths(manifest: Manifest, index: WalIndex) -> list[_Path]:
    """One walk per timeline a restore of this backup could follow (``--target-timeline``),
    each along the path ``timelines.resolve`` gives for it: what restore would read."""
    size = manifest.wal_segment_size
    start = manifest.start_lsn.value // size
    paths = []
    for tli in timelines.reachable(index, manifest.timeline, manifest.start_lsn):
        path = timelines.resolve(index, manifest.timeline, manifest.start_lsn, size, tli)
        on_path = sorted(
            n for t, n in index.segments if n >= start and t == path.timeline_of(n, size)
        )
        walked = timelines.walk(index, path, start, size)
        segno = walked.next_segno
        w = window.compute(manifest, index, requested_timeline=tli)
        ends_early = bool(on_path) and segno <= on_path[-1]
        gap = WalSegment.from_number(walked.next_timeline, segno, size).name
        paths.append(
            _Path(
                timeline=tli,
                window=w,
                needed=tuple(index.segments[k] for k in walked.found),
                gap=gap if ends_early or not w.restorable else None,
                beyond=sum(1 for n in on_path if n > segno),
            )
        )
    return paths


def _settled(
    repo: Repo,
    index: WalIndex,
    paths: dict[str, list[_Path]],
    defaults: dict[str, Window],
    segment_size: int,
) -> tuple[dict[str, list[_Path]], dict[str, Window]]:
    """Each window up to its last archived commit, as `list` and `restore` say: every
    path's and each backup's default one, settled together (each last segment read once)."""
    flat = [p.window for ps in paths.values() for p in ps] + list(defaults.values())
    ends = iter(window_end.settle(repo, index, flat, segment_size))
    settled = {k: [replace(p, window=next(ends)) for p in ps] for k, ps in paths.items()}
    return settled, {k: next(ends) for k in defaults}


def _wal_problems(manifest: Manifest, paths: Sequence[_Path], damaged: set[str]) -> list[Problem]:
    problems, seen = [], set()
    for path in paths:
        if path.gap is None or path.gap in seen:
            continue
        seen.add(path.gap)
        what = "is damaged" if path.gap in damaged else "is missing"
        key = layout.wal_key(path.gap)
        if not path.window.restorable:
            message = (
                f"backup {manifest.backup_id} cannot be restored: WAL {path.gap}, needed to "
                f"make it consistent, {what}"
            )
            problems.append(Problem(ProblemKind.NOT_RESTORABLE, message, manifest.backup_id, key))
            continue
        on = f" on timeline {path.timeline}" if path.timeline != manifest.timeline else ""
        message = (
            f"backup {manifest.backup_id} can be restored only up to "
            f"{_utc(path.window.latest_time)}{on}: WAL {path.gap} {what}"
            f" ({path.beyond} later archived segment{'' if path.beyond == 1 else 's'} "
            "cannot be replayed)"
        )
        problems.append(Problem(ProblemKind.WAL_GAP, message, manifest.backup_id, key))
    return problems


def _verdict(
    manifest: Manifest, w: Window, paths: Sequence[_Path], reads: Sequence[_Read]
) -> BackupCheck:
    """``w``: the window a restore without a target timeline gets (``window.compute``,
    as list and restore): the verdict is that one's, so the three never disagree."""
    target = w.path.target if w.path is not None else manifest.timeline
    on_default = [p.gap for p in paths if p.gap and p.timeline == target]
    gap = next(iter(on_default), None) or next((p.gap for p in reversed(paths) if p.gap), None)
    return BackupCheck(
        backup_id=manifest.backup_id,
        timeline=manifest.timeline,
        stop_time=manifest.stop_time,
        objects_checked=len(reads),
        objects_failed=sum(1 for r in reads if r.problems),
        bytes_read=sum(r.bytes_read for r in reads),
        restorable_to_time=w.latest_time,
        restorable_to_lsn=w.latest_lsn,
        restorable_to_timeline=w.timeline if w.restorable else None,
        last_segment=w.last_segment,
        missing_segment=gap,
        timeline_path=w.path.describe() if w.path is not None else str(manifest.timeline),
        branches=w.conflict.message(manifest.backup_id) if w.conflict is not None else None,
    )


def _ordered(problems: Iterable[Problem]) -> list[Problem]:
    """Backups' problems first (oldest backup first), then the archive's."""
    return sorted(problems, key=lambda p: (p.backup_id is None, p.backup_id or "", p.key or ""))


def _utc(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _big_first(objects: dict[_ObjectKey, _ObjectJob]) -> list[tuple[_ObjectKey, _ObjectJob]]:
    return sorted(objects.items(), key=lambda item: -item[1].obj.stored_size_bytes)


def _object_keys(manifest: Manifest) -> list[_ObjectKey]:
    return [(manifest.holder(o.backup_id), replace(o, backup_id=None)) for o in manifest.objects]


def _object_jobs(manifests: Sequence[Manifest]) -> dict[_ObjectKey, _ObjectJob]:
    """Every object any manifest lists, once per holder and recorded digests (two
    manifests disagreeing on an object's digests get a read each, so each is judged)."""
    jobs: dict[_ObjectKey, _ObjectJob] = {}
    for m in manifests:
        keys = dict(zip(((o.name, o.backup_id) for o in m.objects), _object_keys(m), strict=True))
        for key in keys.values():
            job = jobs.setdefault(key, _ObjectJob(key[0], key[1], {}, []))
            job.needed_by.append(m.backup_id)
        for f in m.files:
            if f.kind == "file" and f.object is not None and (f.object, f.backup_id) in keys:
                files = jobs[keys[(f.object, f.backup_id)]].files
                files.setdefault((f.path, f.offset, f.size_bytes, f.sha256), f)
    return jobs


def _object_task(repo: Repo, key: _ObjectKey, job: _ObjectJob) -> Callable[[], _Read]:
    files = sorted(job.files.values(), key=lambda f: (f.offset, f.size_bytes))
    what = f"backup {job.holder} object {job.obj.name}"
    return lambda: rereading(lambda: _check_object(repo, key, job, files), what=what, sound=_sound)


def _check_object(
    repo: Repo, object_key: _ObjectKey, job: _ObjectJob, files: list[FileEntry]
) -> _Read:
    backup_id, obj = job.holder, job.obj
    key = layout.data_key(backup_id, obj.name)
    counted = _Counted(repo.storage)
    taps = _Views(files)
    where = f"backup {backup_id} object {obj.name}"
    try:
        for chunk in Repo(counted, repo.spec).get(
            key,
            expect_stored=Digest(obj.stored_size_bytes, obj.stored_sha256),
            expect_plain=Digest(obj.plain_size_bytes, obj.plain_sha256),
        ):
            taps.feed(chunk)
        taps.finish()
    except ObjectNotFound:
        message = f"{where} is missing: {_cost(job)}; take a new backup"
        problem = Problem(ProblemKind.MISSING_OBJECT, message, backup_id, key)
        return _Read(backup_id, obj.name, counted.bytes_read, (problem,), object_key)
    except DecryptionError as exc:
        problem = Problem(ProblemKind.UNDECRYPTABLE_OBJECT, f"{where}: {exc}", backup_id, key)
        return _Read(backup_id, obj.name, counted.bytes_read, (problem,), object_key)
    except _DAMAGE as exc:
        message = f"{where} is damaged ({exc}): {_cost(job)}; take a new backup"
        problem = Problem(ProblemKind.DAMAGED_OBJECT, message, backup_id, key)
        return _Read(backup_id, obj.name, counted.bytes_read, (problem,), object_key)
    finally:
        counted.close()
    mismatches = tuple(
        Problem(ProblemKind.FILE_MISMATCH, f"{where}: {text}", backup_id, key)
        for text in taps.mismatches
    )
    return _Read(backup_id, obj.name, counted.bytes_read, mismatches, object_key)


@dataclass(frozen=True, slots=True)
class _Cluster:
    """What every segment's first page header must say (``wal.check_segment_header``)."""

    segment_size: int
    system_identifier: int | None
    pg_major: int | None


def _sound(read: _Read) -> bool:
    """A read no second read could change: no problem, or only ones not made in transit
    (the store confirmed the object missing; the object passed its checks but a file
    in it differs from the manifest)."""
    return all(p.kind in _SETTLED for p in read.problems)


_SETTLED = frozenset({ProblemKind.MISSING_OBJECT, ProblemKind.FILE_MISMATCH})


def _wal_task(repo: Repo, wal: ArchivedWal, cluster: _Cluster) -> Callable[[], _Read]:
    what = f"WAL {wal.name}"
    return lambda: rereading(lambda: _check_wal(repo, wal, cluster), what=what, sound=_sound)


def _check_wal(repo: Repo, wal: ArchivedWal, cluster: _Cluster) -> _Read:
    key = layout.wal_key(wal.name)
    counted = _Counted(repo.storage)
    plain = 0
    segment_size = cluster.segment_size
    segment = WalSegment.parse(wal.name, segment_size)
    try:
        chunks = Repo(counted, repo.spec).get(key)
        for chunk in checked_segment(
            chunks, segment, cluster.system_identifier, pg_major=cluster.pg_major, whole=False
        ):
            plain += len(chunk)
        if plain != segment_size:
            raise IntegrityError(f"it decodes to {plain} bytes, a WAL segment has {segment_size}")
    except ObjectNotFound:
        problem = Problem(
            ProblemKind.DAMAGED_WAL, f"WAL {wal.name} vanished while it was checked", key=key
        )
        return _Read(None, wal.name, counted.bytes_read, (problem,))
    except (*_DAMAGE, DecryptionError, RepositoryMismatch) as exc:
        problem = Problem(ProblemKind.DAMAGED_WAL, f"WAL {wal.name} is damaged ({exc})", key=key)
        return _Read(None, wal.name, counted.bytes_read, (problem,))
    finally:
        counted.close()
    return _Read(None, wal.name, counted.bytes_read)


def _cost(job: _ObjectJob) -> str:
    if len(job.needed_by) <= 1:
        return "the backup cannot be restored"
    return f"backups {', '.join(job.needed_by)} cannot be restored"


class _Views:
    """Files of one object as several manifests see it, split into lists whose files do
    not overlap (one, unless manifests disagree), each hashed by its own ``_FileTaps``."""

    def __init__(self, files: list[FileEntry]) -> None:
        views: list[list[FileEntry]] = []
        for entry in files:  # sorted by offset
            view = next((v for v in views if v[-1].offset + v[-1].size_bytes <= entry.offset), None)
            if view is None:
                views.append([entry])
            else:
                view.append(entry)
        self._taps = [_FileTaps(v) for v in views] or [_FileTaps([])]

    def feed(self, chunk: bytes) -> None:
        for taps in self._taps:
            taps.feed(chunk)

    def finish(self) -> None:
        for taps in self._taps:
            taps.finish()

    @property
    def mismatches(self) -> list[str]:
        return [m for taps in self._taps for m in taps.mismatches]


class _FileTaps:
    """Hashes each file of an object as the object's plaintext streams by, so no
    object is ever held in memory; compares each with its manifest entry."""

    def __init__(self, files: list[FileEntry]) -> None:
        self._files = files  # sorted by offset
        self._next = 0
        self._position = 0
        self._hash = hashlib.sha256()
        self._taken = 0
        self.mismatches: list[str] = []

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while self._next < len(self._files):
            entry = self._files[self._next]
            if self._position < entry.offset:  # bytes no file claims
                skip = min(len(view), entry.offset - self._position)
                if not skip:
                    return
                view, self._position = view[skip:], self._position + skip
                continue
            piece = view[: entry.size_bytes - self._taken]
            self._hash.update(piece)
            self._taken += len(piece)
            self._position += len(piece)
            view = view[len(piece) :]
            if self._taken < entry.size_bytes:
                return  # the chunk is used up inside this file
            self._close_file()

    def finish(self) -> None:
        """Files the object ended before are mismatches (of the bytes they got)."""
        while self._next < len(self._files):
            self._close_file()

    def _close_file(self) -> None:
        entry = self._files[self._next]
        actual = self._hash.hexdigest()
        if self._taken != entry.size_bytes or actual != entry.sha256.lower():
            self.mismatches.append(
                f"file {entry.path} is {self._taken} bytes with sha256 {actual[:12]}..., the "
                f"manifest says {entry.size_bytes} bytes, {entry.sha256[:12]}...: "
                "a restore would refuse it"
            )
        self._next += 1
        self._hash, self._taken = hashlib.sha256(), 0


class _Counted:
    """A storage view for one read: counts the stored bytes fetched, and closes the
    stream when the read stops early (an error) so the connection is released."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self._streams: list[Iterator[bytes]] = []
        self.bytes_read = 0

    def get(self, key: str) -> Iterator[bytes]:
        stream = self._inner.get(key)
        self._streams.append(stream)
        return self._count(stream)

    def _count(self, stream: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in stream:
            self.bytes_read += len(chunk)
            yield chunk

    def close(self) -> None:
        for stream in self._streams:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> None:
        raise NotImplementedError("the repository check never writes")

    def head(self, key: str) -> ObjectInfo | None:
        return self._inner.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self._inner.list(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        raise NotImplementedError("the repository check never deletes")

    def describe(self) -> str:
        return self._inner.describe()
