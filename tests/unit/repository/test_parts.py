"""Files in parts: a big file stored as several objects, restored whole, every part
checked, the manifest refusing parts that do not add up to the file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from janua_backup.errors import FormatError, IntegrityError
from janua_backup.pipeline.crypto import Key
from janua_backup.pipeline.stream import encode_bytes
from janua_backup.repository import layout, transfer
from janua_backup.repository.manifest import (
    FileEntry,
    Manifest,
    from_json,
    parts_sha256,
    required_format,
    to_json,
)
from janua_backup.repository.objects import Repo
from janua_backup.repository.transfer import SourceFile
from janua_backup.repository.transfer_download import Placement, download
from tests.unit.pipeline.objects import KEY, MiB, sample
from tests.unit.repository.helpers import manifest, memory_repo
from tests.unit.repository.test_transfer import BACKUP_ID, source

PART = MiB
BIG = sample(3 * PART + PART // 2 + 11, seed=7, kind="text")  # four parts, the last short


def back_up(
    root: Path, repo: Repo, items: list[SourceFile], backup_id: str = BACKUP_ID
) -> Manifest:
    entries, objects = transfer.upload(
        repo, backup_id, items, jobs=2, bundle_limit=64 * 1024, bundle_size=8 * 1024, part_size=PART
    )
    m = replace(manifest(backup_id), files=tuple(entries), objects=tuple(objects))
    return from_json(to_json(m))  # what a restore reads: checked for consistency


def restore(dest: Path, m: Manifest, repo: Repo, files: list[FileEntry] | None = None) -> None:
    dest.mkdir(exist_ok=True)
    download(repo, m, Placement(dest, chown=False), jobs=2, files=files)


def entry_of(m: Manifest, path: str) -> FileEntry:
    return next(e for e in m.files if e.path == path)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_a_big_file_is_stored_in_parts_and_restored_whole(
    tmp_path: Path, codec: str, key: Key | None
) -> None:
    repo = memory_repo(key, codec)
    (tmp_path / "src").mkdir()
    small = sample(5000, seed=3)
    items = [source(tmp_path / "src", "big", BIG), source(tmp_path / "src", "small", small)]
    m = back_up(tmp_path, repo, items)
    big = entry_of(m, "big")
    objects = [m.object(name) for name in big.parts]
    assert (big.object, big.part_bytes, len(big.parts)) == (None, PART, 4)
    assert [o.plain_size_bytes for o in objects] == [PART, PART, PART, PART // 2 + 11]
    assert big.sha256 == parts_sha256(o.plain_sha256 for o in objects)
    assert big.size_bytes == len(BIG)
    assert json.loads(to_json(m))["format_version"] == required_format(m) == 3
    restore(tmp_path / "dest", m, repo)
    assert (tmp_path / "dest" / "big").read_bytes() == BIG
    assert (tmp_path / "dest" / "small").read_bytes() == small
    assert (tmp_path / "dest" / "big").stat().st_mtime_ns == big.mtime_ns
    assert transfer.hash_file(tmp_path / "dest" / "big", big) == big.sha256


def test_a_file_of_exactly_one_part_is_not_split(tmp_path: Path) -> None:
    repo = memory_repo()
    m = back_up(tmp_path, repo, [source(tmp_path, "one", BIG[:PART])])
    one = entry_of(m, "one")
    assert one.parts == () and one.sha256 == hashlib.sha256(BIG[:PART]).hexdigest()
    assert json.loads(to_json(m))["format_version"] == 1


def test_hash_file_hashes_part_by_part_and_sees_a_changed_part(tmp_path: Path) -> None:
    repo = memory_repo()
    m = back_up(tmp_path, repo, [source(tmp_path, "big", BIG)])
    big = entry_of(m, "big")
    path = tmp_path / "big"
    assert transfer.hash_file(path, big) == big.sha256
    changed = bytearray(BIG)
    changed[2 * PART + 5] ^= 1
    path.write_bytes(bytes(changed))
    assert transfer.hash_file(path, big) != big.sha256


def test_a_file_that_shrank_while_read_keeps_what_its_parts_read(tmp_path: Path) -> None:
    # Listed at four parts, 1.5 parts long when read (PostgreSQL truncated it; WAL
    # replay truncates it again): the two last parts are empty, the file is what was read.
    item = source(tmp_path, "big", BIG)
    shrunk = BIG[: PART + PART // 2]
    item.source.write_bytes(shrunk)
    repo = memory_repo()
    m = back_up(tmp_path, repo, [item])
    big = entry_of(m, "big")
    assert len(big.parts) == 4 and big.size_bytes == len(shrunk)
    restore(tmp_path / "dest", m, repo)
    assert (tmp_path / "dest" / "big").read_bytes() == shrunk
    assert transfer.hash_file(tmp_path / "dest" / "big", big) == big.sha256


def test_a_file_gone_before_its_parts_are_read_is_left_out(tmp_path: Path) -> None:
    item = source(tmp_path, "big", BIG)
    item.source.unlink()
    kept = source(tmp_path, "kept", b"kept")
    m = back_up(tmp_path, memory_repo(), [item, kept])
    assert [e.path for e in m.files if e.path != "PG_VERSION"] == ["kept"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda e: replace(e, sha256="00" * 32),
        lambda e: replace(e, size_bytes=e.size_bytes + 1),
        lambda e: replace(e, part_bytes=e.part_bytes * 2),
        lambda e: replace(e, parts=e.parts[:-1]),
        lambda e: replace(e, parts=(e.parts[1], e.parts[0], *e.parts[2:])),
        lambda e: replace(e, object=e.parts[0]),
    ],
    ids=["digest", "size", "part size", "part missing", "parts swapped", "object too"],
)
def test_a_manifest_whose_parts_do_not_add_up_is_refused(tmp_path: Path, damage: object) -> None:
    m = back_up(tmp_path, memory_repo(), [source(tmp_path, "big", BIG)])
    assert callable(damage)
    files = tuple(damage(e) if e.path == "big" else e for e in m.files)
    with pytest.raises(FormatError, match="big does not match the parts it lists"):
        from_json(to_json(replace(m, files=files)))


def test_a_swapped_part_is_refused_on_restore(tmp_path: Path) -> None:
    # A well-formed object with other bytes in place of part 2, its stored digest made
    # to match: the part's plaintext digest is what refuses it.
    repo = memory_repo()
    m = back_up(tmp_path, repo, [source(tmp_path, "big", BIG)])
    name = entry_of(m, "big").parts[2]
    key = layout.data_key(BACKUP_ID, name)
    stored, _, digest = encode_bytes(b"x" * PART, repo.spec, bind=key)
    repo.storage.put(key, [stored])
    objects = tuple(
        replace(o, stored_size_bytes=digest.size_bytes, stored_sha256=digest.sha256)
        if o.name == name
        else o
        for o in m.objects
    )
    with pytest.raises(IntegrityError, match="plaintext"):
        restore(tmp_path / "dest", replace(m, objects=objects), repo)


def test_an_unchanged_file_in_parts_is_referenced_with_all_its_parts(tmp_path: Path) -> None:
    repo = memory_repo()
    item = source(tmp_path, "big", BIG)
    full = back_up(tmp_path, repo, [item])
    reuse = transfer.reuse_unchanged(repo, full, [item], jobs=2)
    assert reuse.upload == [] and len(reuse.referenced) == 1
    ref = reuse.referenced[0]
    assert (ref.parts, ref.backup_id) == (entry_of(full, "big").parts, BACKUP_ID)
    assert sorted(o.name for o in reuse.objects) == sorted(ref.parts)
    incr_id = "20261125T130000Z"
    incr = replace(
        manifest(incr_id),
        backup_type="incr",
        depends_on=BACKUP_ID,
        files=tuple(reuse.referenced),
        objects=tuple(reuse.objects),
    )
    incr = from_json(to_json(incr))
    restore(tmp_path / "dest", incr, repo)
    assert (tmp_path / "dest" / "big").read_bytes() == BIG


def test_a_changed_file_in_parts_is_stored_again(tmp_path: Path) -> None:
    repo = memory_repo()
    item = source(tmp_path, "big", BIG)
    full = back_up(tmp_path, repo, [item])
    changed = bytearray(BIG)
    changed[-1] ^= 1
    item.source.write_bytes(bytes(changed))
    reuse = transfer.reuse_unchanged(repo, full, [item], jobs=2)
    assert [s.entry.path for s in reuse.upload] == ["big"] and reuse.referenced == []
