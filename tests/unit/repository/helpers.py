"""Builders for repository unit tests: an in-memory repository and manifests."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from janua_backup.errors import StorageError
from janua_backup.pg.wal import PAGE_MAGIC, Lsn, WalSegment
from janua_backup.pipeline.crypto import Key
from janua_backup.pipeline.stream import EncodeSpec
from janua_backup.repository.manifest import FileEntry, Manifest, StoredObject
from janua_backup.repository.objects import Repo
from janua_backup.storage.memory import MemoryStorage

SEG = 16 * 1024 * 1024
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def memory_repo(key: Key | None = None, codec: str = "gzip") -> Repo:
    return Repo(storage=MemoryStorage(), spec=EncodeSpec(codec=codec, key=key))


def segment_bytes(name: str, size: int, *, sysid: int = 42) -> bytes:
    """A WAL segment of ``size`` bytes whose first page header is the one its name gives."""
    seg = WalSegment.parse(name, size)
    header = struct.pack(
        "<HHIQI4xQII", PAGE_MAGIC[15], 2, seg.timeline, seg.start_lsn.value, 0, sysid, size, 8192
    )
    return header.ljust(size, b"\0")


def manifest(
    backup_id: str = "20261125T120000Z",
    *,
    start_seg: int = 2,
    stop_seg: int = 2,
    timeline: int = 1,
    minutes: int = 0,
) -> Manifest:
    start = T0 + timedelta(minutes=minutes)
    return Manifest(
        backup_id=backup_id,
        backup_type="full",
        start_lsn=Lsn(start_seg * SEG + 0x28),
        stop_lsn=Lsn(stop_seg * SEG + 0x100),
        start_time=start,
        stop_time=start + timedelta(seconds=30),
        timeline=timeline,
        pg_version_num=150018,
        system_identifier=42,
        wal_segment_size=SEG,
        compression="gzip",
        compression_level=6,
        encrypted=False,
        backup_label="START WAL LOCATION: 0/2000028\nSTART TIMELINE: 1\n",
        tablespace_map="",
        files=(
            FileEntry(
                path="PG_VERSION",
                kind="file",
                mode=0o600,
                mtime_ns=1,
                uid=101,
                gid=104,
                user="postgres",
                group="postgres",
                size_bytes=3,
                sha256="ab" * 32,
                object="data/000001",
                offset=0,
            ),
            FileEntry(path="base", kind="dir", mode=0o700, mtime_ns=1, uid=101, gid=104),
        ),
        objects=(StoredObject("data/000001", 3, "ab" * 32, 40, "cd" * 32),),
    )


class Flaky(MemoryStorage):
    """A memory store whose reads of chosen keys go wrong a given number of times, the
    way a network does: ``"reset"`` dies mid-body, ``"cut"`` ends the body early,
    ``"flip"`` changes one byte. Later reads of that key are sound."""

    def __init__(self, fault: str, times: int = 1) -> None:
        super().__init__()
        self.fault, self.times = fault, times
        self.faults: dict[str, int] = {}  # key -> faults served
        self.targets: set[str] | None = None  # None: every key with "/data/" or "wal/"

    def get(self, key: str) -> Iterator[bytes]:
        data = b"".join(super().get(key))
        aimed = (
            ("/data/" in key or key.startswith("wal/"))
            if self.targets is None
            else (key in self.targets)
        )
        if not aimed or self.faults.get(key, 0) >= self.times or len(data) < 64:
            return iter([data])
        self.faults[key] = self.faults.get(key, 0) + 1
        half = len(data) // 2
        if self.fault == "flip":
            return iter([data[:half] + bytes([data[half] ^ 1]) + data[half + 1 :]])
        if self.fault == "cut":
            return iter([data[:half]])
        return _dying(data[:half], f"{self.describe()}/{key}")


def _dying(head: bytes, where: str) -> Iterator[bytes]:
    yield head
    raise StorageError(f"reading {where} failed mid-stream: connection reset by peer")
