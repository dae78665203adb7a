"""``transfer.upload`` through the real pipeline into memory: every file's SHA-256 in
the manifest entries (a file alone in its object hashed once, through the object's
digest), objects that read back to the files, and failures that leave no thread."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pytest

from janua_backup.errors import StorageError
from janua_backup.pipeline.crypto import Key
from janua_backup.pipeline.stream import Digest, EncodeSpec
from janua_backup.repository import layout, transfer
from janua_backup.repository.manifest import FileEntry
from janua_backup.repository.objects import Repo
from janua_backup.repository.transfer import SourceFile
from janua_backup.storage.memory import MemoryStorage
from tests.unit.pipeline.objects import KEY, MiB, sample

BACKUP_ID = "20261125T120000Z"
BIG = 64 * 1024
PART = 64 * MiB  # bigger than every file here: parts are test_parts.py's


def source(root: Path, name: str, data: bytes) -> SourceFile:
    path = root / name
    path.write_bytes(data)
    entry = FileEntry(
        path=name, kind="file", mode=0o600, mtime_ns=1, uid=0, gid=0, size_bytes=len(data)
    )
    return SourceFile(entry, path)


def files(root: Path) -> dict[str, bytes]:
    return {
        "big-1": sample(3 * MiB + 4321, seed=1, kind="text"),
        "big-2": sample(BIG, seed=2, kind="random"),
        "empty": b"",
        **{f"small-{i}": sample(1000 + i * 500, seed=10 + i) for i in range(12)},
    }


@pytest.mark.parametrize("codec", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_upload_records_every_files_sha256_and_the_objects_read_back(
    tmp_path: Path, codec: str, key: Key | None
) -> None:
    repo = Repo(MemoryStorage(), EncodeSpec(codec=codec, key=key))
    content = files(tmp_path)
    sources = [source(tmp_path, name, data) for name, data in content.items()]
    progress: list[int] = []
    entries, objects = transfer.upload(
        repo,
        BACKUP_ID,
        sources,
        jobs=2,
        bundle_limit=BIG,
        bundle_size=8 * 1024,
        part_size=PART,
        progress=progress.append,
    )
    assert sum(progress) == sum(len(d) for d in content.values())
    assert {e.path for e in entries} == set(content)
    by_name = {o.name: o for o in objects}
    alone = [e for e in entries if sum(f.object == e.object for f in entries) == 1]
    assert {e.path for e in alone} >= {"big-1", "big-2"}
    for entry in entries:
        data = content[entry.path]
        assert entry.size_bytes == len(data)
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert entry.object is not None
        obj = by_name[entry.object]
        expect = Digest(obj.plain_size_bytes, obj.plain_sha256)
        stored = Digest(obj.stored_size_bytes, obj.stored_sha256)
        key = layout.data_key(BACKUP_ID, obj.name)
        plain = b"".join(repo.get(key, expect_stored=stored, expect_plain=expect))
        assert plain[entry.offset : entry.offset + entry.size_bytes] == data
    for entry in alone:
        assert by_name[entry.object or ""].plain_sha256 == entry.sha256


def test_a_file_gone_before_it_is_read_is_left_out(tmp_path: Path) -> None:
    repo = Repo(MemoryStorage(), EncodeSpec(codec="zstd"))
    kept = source(tmp_path, "kept", sample(2 * BIG))
    gone = source(tmp_path, "gone", sample(2 * BIG, seed=3))
    gone.source.unlink()
    entries, _ = transfer.upload(
        repo, BACKUP_ID, [kept, gone], jobs=2, bundle_limit=BIG, bundle_size=BIG, part_size=PART
    )
    assert [e.path for e in entries] == ["kept"]


def test_a_file_that_grew_is_read_only_to_its_listed_size(tmp_path: Path) -> None:
    repo = Repo(MemoryStorage(), EncodeSpec(codec="gzip"))
    data = sample(3 * MiB, kind="random")
    item = source(tmp_path, "relation", data)
    with item.source.open("ab") as handle:
        handle.write(b"appended during the backup")
    (entry,), _ = transfer.upload(
        repo, BACKUP_ID, [item], jobs=1, bundle_limit=BIG, bundle_size=BIG, part_size=PART
    )
    assert (entry.size_bytes, entry.sha256) == (len(data), hashlib.sha256(data).hexdigest())


class FailingStorage(MemoryStorage):
    """Takes a few chunks of every put, then fails like a store that went away."""

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> None:
        for count, _ in enumerate(chunks):
            if count == 3:
                raise StorageError("the store went away")


def test_a_failed_upload_is_raised_and_stops_the_encoding_threads(tmp_path: Path) -> None:
    before = threading.active_count()
    repo = Repo(FailingStorage(), EncodeSpec(codec="zstd"))
    items = [source(tmp_path, f"big-{i}", sample(4 * MiB, seed=i, kind="random")) for i in range(3)]
    with pytest.raises(StorageError, match="went away"):
        transfer.upload(
            repo, BACKUP_ID, items, jobs=2, bundle_limit=BIG, bundle_size=BIG, part_size=PART
        )
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before


def test_hash_file_hashes_the_listed_size(tmp_path: Path) -> None:
    data = sample(2 * MiB + 5, kind="random")
    path = tmp_path / "f"
    path.write_bytes(data)

    def sized(size: int) -> FileEntry:
        return replace(source(tmp_path, "x", b"").entry, size_bytes=size)

    assert transfer.hash_file(path, sized(len(data))) == hashlib.sha256(data).hexdigest()
    assert transfer.hash_file(path, sized(1000)) == hashlib.sha256(data[:1000]).hexdigest()
    assert transfer.hash_file(path, sized(0)) == hashlib.sha256(b"").hexdigest()
    assert transfer.hash_file(tmp_path / "absent", sized(10)) is None


class _PutLog(MemoryStorage):
    """Memory storage noting when each put began and ended, in one sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []
        self._events_lock = threading.Lock()

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> None:
        with self._events_lock:
            self.events.append(("begin", key))
        super().put(key, chunks, if_absent=if_absent)
        with self._events_lock:
            self.events.append(("end", key))


def test_last_files_are_read_after_every_other_object_is_stored(tmp_path: Path) -> None:
    """pg_control of a standby's backup: its minimum recovery point ends the recovery,
    so it must be read after every page it covers, not in a bundle next to them."""
    storage = _PutLog()
    repo = Repo(storage, EncodeSpec(codec="gzip"))
    content = files(tmp_path)
    sources = [source(tmp_path, name, data) for name, data in content.items()]
    (tmp_path / "global").mkdir()
    control = source(tmp_path, "global/pg_control", sample(8192, seed=5))
    entries, objects = transfer.upload(
        repo, BACKUP_ID, sources, jobs=4, bundle_limit=BIG, bundle_size=8 * 1024,
        part_size=PART, last=[control],
    )  # fmt: skip
    (entry,) = [e for e in entries if e.path == "global/pg_control"]
    assert [e.object for e in entries].count(entry.object) == 1  # an object of its own
    key = layout.data_key(BACKUP_ID, entry.object or "")
    assert storage.events[-2:] == [("begin", key), ("end", key)]
    assert len(objects) == len({e.object for e in entries})
    assert entry.sha256 == hashlib.sha256(control.source.read_bytes()).hexdigest()
