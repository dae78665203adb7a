"""The backup manifest: everything a restore needs to know, as JSON.

A manifest lists every file of the base backup (path, size, mode, owner,
SHA-256 and where its bytes live: which stored object, at which offset of its
plaintext), every stored object with its plain and stored digests, the
start/stop LSNs and times, the timeline, the server version and identity, and
the backup_label / tablespace_map PostgreSQL returned. It is itself stored
through the pipeline, so it is checksummed (and encrypted) like any object.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from janua_backup.errors import FormatError
from janua_backup.pg.wal import Lsn

MANIFEST_FORMAT = 1


@dataclass(frozen=True, slots=True)
class StoredObject:
    name: str  # relative to the backup's prefix, e.g. "data/000003"
    plain_size_bytes: int
    plain_sha256: str
    stored_size_bytes: int
    stored_sha256: str


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


@dataclass(frozen=True, slots=True)
class Manifest:
    backup_id: str
    backup_type: str
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
    depends_on: str | None = None  # incremental: the backup whose objects files may reference
    format_version: int = MANIFEST_FORMAT
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def original_size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @property
    def stored_size_bytes(self) -> int:
        return sum(o.stored_size_bytes for o in self.objects)

    def object(self, name: str) -> StoredObject:
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise FormatError(f"manifest of backup {self.backup_id} names no object {name!r}")


def to_json(manifest: Manifest) -> bytes:
    data = asdict(manifest)
    data["start_lsn"] = str(manifest.start_lsn)
    data["stop_lsn"] = str(manifest.stop_lsn)
    data["start_time"] = manifest.start_time.isoformat()
    data["stop_time"] = manifest.stop_time.isoformat()
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
        data["files"] = tuple(FileEntry(**f) for f in data["files"])
        data["objects"] = tuple(StoredObject(**o) for o in data["objects"])
        return Manifest(**data)
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"backup manifest is malformed: {exc}") from exc
