"""The backup manifest: everything a restore needs to know, as JSON.

A manifest lists every file of the base backup (path, size, mode, owner,
SHA-256 and where its bytes live: which stored object, at which offset of its
plaintext), every stored object with its plain and stored digests, the
start/stop LSNs and times, the timeline, the server version and identity, and
the backup_label / tablespace_map PostgreSQL returned. It is itself stored
through the pipeline, so it is checksummed (and encrypted) like any object.

Incremental backups (format 2). A file that did not change since the parent
backup is *referenced*: its entry names the object and the backup that holds
the object (``FileEntry.backup_id``), and the manifest lists that object too,
with the same ``backup_id`` and its digests, so a restore or a check needs this
one manifest and nothing else. References are flattened: they always name the
backup that physically holds the bytes, never an intermediate incremental, so
restoring any backup reads at most one object per stored object and a chain
never has to be walked. ``depends_on`` names the parent; every backup a
reference names is in the ``depends_on`` chain (the parent's references are in
its own chain), which is what retention keeps.

Files in parts (format 3). A file bigger than one part (``[backup]
part_size_bytes``, recorded in each entry: a restore reads any part size) is
stored as several objects, part ``i`` holding its bytes from ``i * part_bytes``
on, so that the jobs of a backup compress, and those of a restore inflate, one
big relation file on every core instead of on one. Its ``sha256`` is then not
the SHA-256 of its bytes but that of its parts' SHA-256 digests back to back
(``parts_sha256``; S3's multipart ETag is built the same way): each part is
read by another job at another moment while PostgreSQL writes to the file, so
only the parts' digests describe the bytes actually stored. Whoever compares a
file on disk with an entry hashes it the same way (``transfer.hash_file``).

Compatibility: a manifest without references or parts is written exactly as
format 1 (no ``backup_id`` keys), so older janua-backup versions still read
full backups. One with references is written as format 2: an older reader would
ignore ``backup_id`` and read the file from the wrong backup's prefix, so it
must refuse the manifest ("newer than this janua-backup understands") instead.
One with parts is format 3, refused by readers of formats 1 and 2 the same way.

Confinement. Whoever can write to the bucket can write a manifest, and a
restore runs as root: so every path is checked here, when the manifest is
read, before anything is written (``_check_paths``). A path is relative and
normalised (no ``..``, ``.``, empty part or NUL) and listed once; no entry lies
under a file; a symbolic link exists only as ``pg_tblspc/<oid>``, pointing at
an absolute location without ``..`` that the ``tablespace_map`` (which PostgreSQL
reads at startup) does not contradict; and the only entries under such a link
are the server version's subdirectory (``PG_15_202209061``) and what it holds,
exactly what a backup of a tablespace has. A restore then needs to follow no
link but those, and the writers never follow any other (``confined``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from janua_backup.errors import FormatError
from janua_backup.pg.wal import Lsn

MANIFEST_FORMAT = 3  # the newest format this version reads and writes
PLAIN_FORMAT = 1  # written when no file is referenced or in parts: readable by every version
REFERENCES_FORMAT = 2  # the oldest format that has references


@dataclass(frozen=True, slots=True)
class StoredObject:
    name: str  # relative to the holding backup's prefix, e.g. "data/000003"
    plain_size_bytes: int
    plain_sha256: str
    stored_size_bytes: int
    stored_sha256: str
    backup_id: str | None = None  # None: stored by this backup; else under that backup's prefix


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str  # relative to PGDATA, POSIX separators
    kind: str  # "file", "dir" or "symlink"
    mode: int
    mtime_ns: int
    uid: int
    gid: int
    user: str | None = None
    group: str | None = None
    size_bytes: int = 0
    sha256: str = ""
    link_target: str | None = None
    object: str | None = None  # StoredObject.name holding the bytes
    offset: int = 0  # where the file starts in that object's plaintext
    backup_id: str | None = None  # the backup holding ``object`` or ``parts``; None: this one
    parts: tuple[str, ...] = ()  # in parts: the objects, part i at i * part_bytes; object=None
    part_bytes: int = 0

    @property
    def referenced(self) -> bool:
        return self.backup_id is not None

    @property
    def object_names(self) -> tuple[str, ...]:
        """The objects holding the file's bytes (none for a directory, a link or no bytes)."""
        if self.kind != "file":
            return ()
        return self.parts or ((self.object,) if self.object is not None else ())


@dataclass(frozen=True, slots=True)
class Manifest:
    backup_id: str
    backup_type: str  # "full" or "incr"
    start_lsn: Lsn
    stop_lsn: Lsn
    start_time: datetime
    stop_time: datetime
    timeline: int
    pg_version_num: int
    system_identifier: int
    wal_segment_size: int
    compression: str
    compression_level: int
    encrypted: bool
    backup_label: str
    tablespace_map: str
    files: tuple[FileEntry, ...]
    objects: tuple[StoredObject, ...]
    host: str = ""
    depends_on: str | None = None  # incremental: the parent backup (retention keeps the chain)
    format_version: int = PLAIN_FORMAT  # as read; to_json writes the lowest format that fits
    extra: dict[str, str] = field(default_factory=dict)  # "source": "primary" or "standby"

    @property
    def source(self) -> str:
        """Where the files were copied: "primary" or "standby". Kept in ``extra``, which
        every format has, so readers of any version still read the manifest; a manifest
        without it is from a version that refused standbys: a primary's."""
        return self.extra.get("source", "primary")

    @property
    def original_size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @property
    def stored_size_bytes(self) -> int:
        """What this backup itself stored (and what expiring it alone would free)."""
        return sum(o.stored_size_bytes for o in self.objects if o.backup_id is None)

    @property
    def fetch_stored_bytes(self) -> int:
        """What a restore of this backup reads: its objects and the ones it references."""
        return sum(o.stored_size_bytes for o in self.objects)

    @property
    def referenced_files(self) -> tuple[FileEntry, ...]:
        return tuple(f for f in self.files if f.referenced)

    @property
    def references(self) -> frozenset[str]:
        """The backups holding objects this one needs (besides itself)."""
        return frozenset(o.backup_id for o in self.objects if o.backup_id is not None)

    def holder(self, backup_id: str | None) -> str:
        """The backup whose prefix holds an object or file with this ``backup_id``."""
        return backup_id or self.backup_id

    def object(self, name: str, backup_id: str | None = None) -> StoredObject:
        for obj in self.objects:
            if obj.name == name and obj.backup_id == backup_id:
                return obj
        where = f" of backup {backup_id}" if backup_id else ""
        raise FormatError(f"manifest of backup {self.backup_id} names no object {name!r}{where}")


def reference(
    parent: Manifest, old: FileEntry, new: FileEntry
) -> tuple[FileEntry, list[StoredObject]]:
    """``new`` (this backup's view of a file: mode, owner, mtime) pointing at the bytes
    ``old`` (the parent's entry of the same unchanged file) points at, flattened to the
    backup that holds them, and those objects as this manifest must list them."""
    objects = [parent.object(name, old.backup_id) for name in old.object_names]
    holder = parent.holder(old.backup_id)
    entry = replace(
        new,
        size_bytes=old.size_bytes,
        sha256=old.sha256,
        object=old.object,
        offset=old.offset,
        parts=old.parts,
        part_bytes=old.part_bytes,
        backup_id=holder,
    )
    return entry, [replace(obj, backup_id=holder) for obj in objects]


def parts_sha256(part_digests: Iterable[str]) -> str:
    """A file in parts: the SHA-256 of its parts' binary SHA-256 digests, in order."""
    outer = hashlib.sha256()
    for digest in part_digests:
        outer.update(bytes.fromhex(digest))
    return outer.hexdigest()


def required_format(manifest: Manifest) -> int:
    if any(f.parts for f in manifest.files):
        return MANIFEST_FORMAT
    has_refs = any(o.backup_id for o in manifest.objects) or any(
        f.backup_id for f in manifest.files
    )
    return REFERENCES_FORMAT if has_refs else PLAIN_FORMAT


def _without_empty_holder(item: dict[str, Any]) -> dict[str, Any]:
    """Keys at their defaults are left out: older readers refuse keys they do not know."""
    for key, empty in (("backup_id", None), ("parts", []), ("part_bytes", 0)):
        if key in item and item[key] == empty:
            del item[key]
    return item


def to_json(manifest: Manifest) -> bytes:
    data = asdict(manifest)
    data["start_lsn"] = str(manifest.start_lsn)
    data["stop_lsn"] = str(manifest.stop_lsn)
    data["start_time"] = manifest.start_time.isoformat()
    data["stop_time"] = manifest.stop_time.isoformat()
    data["format_version"] = required_format(manifest)
    data["files"] = [_without_empty_holder(f) for f in data["files"]]
    data["objects"] = [_without_empty_holder(o) for o in data["objects"]]
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def from_json(raw: bytes) -> Manifest:
    try:
        data: dict[str, Any] = json.loads(raw)
        if data.get("format_version", 0) > MANIFEST_FORMAT:
            raise FormatError(
                f"manifest format {data['format_version']} is newer than this janua-backup "
                f"understands ({MANIFEST_FORMAT}); upgrade janua-backup"
            )
        data["start_lsn"] = Lsn.parse(data["start_lsn"])
        data["stop_lsn"] = Lsn.parse(data["stop_lsn"])
        data["start_time"] = datetime.fromisoformat(data["start_time"])
        data["stop_time"] = datetime.fromisoformat(data["stop_time"])
        data["files"] = tuple(
            FileEntry(**{**f, "parts": tuple(f.get("parts", ()))}) for f in data["files"]
        )
        data["objects"] = tuple(StoredObject(**o) for o in data["objects"])
        manifest = Manifest(**data)
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"backup manifest is malformed: {exc}") from exc
    _check_consistent(manifest)
    return manifest


def _check_consistent(manifest: Manifest) -> None:
    """Every file's bytes are in an object the manifest lists, and references only
    appear with a parent: a restore must never guess where a file lives."""
    listed = {(o.name, o.backup_id): o for o in manifest.objects}
    for entry in manifest.files:
        for name in entry.object_names:
            if (name, entry.backup_id) not in listed:
                where = f" of backup {entry.backup_id}" if entry.backup_id else ""
                raise FormatError(
                    f"manifest of backup {manifest.backup_id} is inconsistent: {entry.path} "
                    f"lives in object {name}{where}, which it does not list"
                )
        if entry.parts:
            _check_parts(manifest, entry, [listed[(n, entry.backup_id)] for n in entry.parts])
    _check_paths(manifest)
    holders = manifest.references
    if manifest.backup_id in holders:
        raise FormatError(
            f"manifest of backup {manifest.backup_id} references itself as another backup"
        )
    if holders and manifest.depends_on is None:
        raise FormatError(
            f"manifest of backup {manifest.backup_id} references backups "
            f"{', '.join(sorted(holders))} but names no parent backup"
        )


def _check_parts(manifest: Manifest, entry: FileEntry, parts: list[StoredObject]) -> None:
    """A file in parts is exactly its parts: each (but an empty tail) fills its range,
    and the file's digest is theirs. Checked here, every object's digest checked
    when it is read, a restored file is what was stored, with no extra pass."""
    ends = [i * entry.part_bytes + p.plain_size_bytes for i, p in enumerate(parts)]
    ends = [end for end, p in zip(ends, parts, strict=True) if p.plain_size_bytes]
    fits = entry.part_bytes > 0 and entry.object is None and entry.offset == 0
    fits = fits and all(p.plain_size_bytes <= entry.part_bytes for p in parts)
    if (
        not fits
        or entry.size_bytes != max(ends, default=0)
        or entry.sha256 != parts_sha256(p.plain_sha256 for p in parts)
    ):
        raise FormatError(
            f"manifest of backup {manifest.backup_id} is inconsistent: {entry.path} does not "
            "match the parts it lists"
        )


ROOT_PATHS = ("", ".")  # the data directory itself (older manifests listed it)
_TABLESPACE_LINK = re.compile(r"pg_tblspc/[0-9]+")
_VERSION_DIR = re.compile(r"PG_[0-9.]+_[0-9]+")  # PG_15_202209061, PG_9.6_201608131


def path_problem(path: object) -> str | None:
    """Why ``path`` cannot name an entry under a directory, or None if it can."""
    if not isinstance(path, str) or not path:
        return "is not a path"
    if "\x00" in path:
        return "holds a NUL byte"
    if path.startswith("/"):
        return "is absolute"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "is not a normalised relative path"
    return None


def _check_paths(manifest: Manifest) -> None:
    """See "Confinement" in the module docstring; nothing is written before this passes."""
    kinds: dict[str, str] = {}
    for entry in manifest.files:
        problem = _entry_problem(entry, kinds)
        if problem is not None:
            raise FormatError(
                f"manifest of backup {manifest.backup_id} is refused: the {str(entry.kind)[:20]} "
                f"entry {str(entry.path)[:200]!r} {problem}; nothing was written"
            )
        kinds[entry.path] = entry.kind
    links = {e.path: e for e in manifest.files if e.kind == "symlink"}
    for entry in manifest.files:
        problem = _placement_problem(entry, kinds, links)
        if problem is not None:
            raise FormatError(
                f"manifest of backup {manifest.backup_id} is refused: the {entry.kind} entry "
                f"{entry.path[:200]!r} {problem}; nothing was written"
            )
    _check_tablespaces(manifest, links)


def _entry_problem(entry: FileEntry, kinds: dict[str, str]) -> str | None:
    if entry.kind not in ("file", "dir", "symlink"):
        return "has an unknown kind"
    if entry.path in ROOT_PATHS and entry.kind == "dir" and not any(p in kinds for p in ROOT_PATHS):
        return None
    problem = path_problem(entry.path)
    if problem is not None:
        return problem
    if entry.path in kinds:
        return "is listed twice"
    if entry.kind == "symlink":
        if not _TABLESPACE_LINK.fullmatch(entry.path):
            return "is a symbolic link outside pg_tblspc/<oid>"
        target = entry.link_target
        if not isinstance(target, str) or not _is_location(target):
            return f"points to {str(target)[:200]!r}, not to an absolute location without '..'"
    return None


def _is_location(path: str) -> bool:
    """Absolute (a relative one would resolve against wherever the restore runs),
    without ``..``, and not ``/`` itself. A trailing or doubled ``/`` (a link made
    by hand) is harmless: the location must be empty or new in any case."""
    parts = path.split("/")
    return (
        path.startswith("/") and "\x00" not in path and ".." not in parts and path.strip("/") != ""
    )


def _placement_problem(
    entry: FileEntry, kinds: dict[str, str], links: dict[str, FileEntry]
) -> str | None:
    """Nothing under a file; under a tablespace link only the version subdirectory."""
    if entry.path in ROOT_PATHS:
        return None
    parts = entry.path.split("/")
    for depth in range(1, len(parts)):
        above = "/".join(parts[:depth])
        if kinds.get(above) == "file":
            return f"lies under the file {above!r}"
        if above in links and not _VERSION_DIR.fullmatch(parts[depth]):
            return f"lies under the tablespace link {above!r} outside its version subdirectory"
    return None


def tablespace_map_locations(text: str) -> dict[str, str]:
    """OID -> location, as PostgreSQL reads ``tablespace_map``: ``<oid> <path>`` per
    line, a backslash escaping the next character (a newline in a path)."""
    found: dict[str, str] = {}
    line: list[str] = []
    escaped = False
    for char in text + "\n":
        if escaped:
            line.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "\n":
            oid, sep, path = "".join(line).partition(" ")
            if line and (not sep or not oid.isdigit() or not path or oid in found):
                raise ValueError(f"line {''.join(line)[:200]!r} is not '<oid> <location>'")
            if line:
                found[oid] = path
            line = []
        else:
            line.append(char)
    return found


def _check_tablespaces(manifest: Manifest, links: dict[str, FileEntry]) -> None:
    """The links and ``tablespace_map`` agree where both name a tablespace (a tablespace
    created or dropped during the backup is in only one of them: WAL replay fixes it),
    and every location is absolute, or in place (``pg_tblspc/<oid>``, PostgreSQL 15+),
    and distinct."""
    refused = f"manifest of backup {manifest.backup_id} is refused: its tablespace_map"
    try:
        mapped = tablespace_map_locations(manifest.tablespace_map)
    except ValueError as exc:
        raise FormatError(f"{refused} {exc}; nothing was written") from exc
    for oid, location in mapped.items():
        in_place = location == f"pg_tblspc/{oid}"
        if not in_place and not _is_location(location):
            raise FormatError(
                f"{refused} names {location[:200]!r} for tablespace {oid}, which is not "
                "an absolute location without '..'; nothing was written"
            )
        link = links.get(f"pg_tblspc/{oid}")
        if link is not None and link.link_target != location:
            raise FormatError(
                f"{refused} puts tablespace {oid} at {location[:200]!r} but its link points to "
                f"{str(link.link_target)[:200]!r}; nothing was written"
            )
    targets = [str(e.link_target) for e in links.values()]
    for index, first in enumerate(targets):
        for second in targets[index + 1 :]:
            if os.path.commonpath([first, second]) in (first, second):
                raise FormatError(
                    f"manifest of backup {manifest.backup_id} is refused: the tablespace "
                    f"locations {first[:200]!r} and {second[:200]!r} overlap; nothing was written"
                )
