"""Encrypted objects are bound to the key they are stored under (object format version 2).

Anyone with write access to the bucket can copy a genuine object of the repository
over another: a WAL segment under the next segment's name, one backup's data object
or manifest over another's. Each such object decrypts fine with the key, so only
the binding of its name into the AAD tells it is not the one stored there.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from janua_backup.errors import DecryptionError, IntegrityError
from janua_backup.pipeline.crypto import Key
from janua_backup.pipeline.header import read_header
from janua_backup.repository import catalog, layout, transfer, wal_archive
from janua_backup.repository.manifest import Manifest
from janua_backup.repository.objects import Repo
from janua_backup.repository.transfer_download import Placement, download
from tests.unit.pipeline.objects import KEY, MiB, sample
from tests.unit.pipeline.test_zstd_frames import DATA, OLD_ZSTD_ENCRYPTED
from tests.unit.repository.helpers import manifest, memory_repo
from tests.unit.repository.test_transfer import PART, source

SEG_3 = "000000010000000000000003"
SEG_4 = "000000010000000000000004"
FIRST, SECOND = "20261125T120000Z", "20261126T120000Z"


def moved(repo: Repo, source_key: str, target_key: str) -> None:
    """Copy the stored bytes of ``source_key`` over ``target_key``, as a bucket writer can."""
    repo.storage.put(target_key, [b"".join(repo.storage.get(source_key))])


def not_stored_here(key: str) -> str:
    return f"object {key} is not the object stored under this name"


def test_a_wal_segment_copied_under_another_segments_name_is_refused(tmp_path: Path) -> None:
    repo = memory_repo(KEY)
    for name in (SEG_3, SEG_4):
        path = tmp_path / name
        path.write_bytes(sample(MiB, seed=int(name, 16), kind="text"))
        wal_archive.push(repo, name, path)
    assert read_header(b"".join(repo.storage.get(layout.wal_key(SEG_4)))).version == 2

    moved(repo, layout.wal_key(SEG_3), layout.wal_key(SEG_4))
    with pytest.raises(IntegrityError, match=not_stored_here(layout.wal_key(SEG_4))) as caught:
        wal_archive.fetch(repo, SEG_4, tmp_path / "fetched")
    assert caught.value.exit_code == 20
    assert not (tmp_path / "fetched").exists()
    assert wal_archive.read(repo, SEG_3) == (tmp_path / SEG_3).read_bytes()


def backed_up(tmp_path: Path, repo: Repo, backup_id: str, seed: int) -> Manifest:
    src = tmp_path / f"src-{backup_id}"
    src.mkdir()
    # The same sizes in every backup: the manifest's sizes cannot tell the objects apart.
    data = {"big": sample(2 * MiB, seed, kind="random"), "small": sample(900, seed, "random")}
    sources = [source(src, name, content) for name, content in data.items()]
    entries, objects = transfer.upload(
        repo, backup_id, sources, jobs=1, bundle_limit=4096, bundle_size=4096, part_size=PART
    )
    m = replace(manifest(backup_id), files=tuple(entries), objects=tuple(objects), encrypted=True)
    catalog.commit(repo, m)
    return m


def test_a_data_object_of_one_backup_copied_over_anothers_is_refused(tmp_path: Path) -> None:
    repo = memory_repo(KEY, codec="none")
    backed_up(tmp_path, repo, FIRST, seed=1)
    second = backed_up(tmp_path, repo, SECOND, seed=2)
    big = next(e for e in second.files if e.path == "big")
    assert big.object is not None
    # Same object name in both backups: the copy is a genuine, well-formed object.
    target = layout.data_key(SECOND, big.object)
    moved(repo, layout.data_key(FIRST, big.object), target)

    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(IntegrityError, match=not_stored_here(target)):
        download(repo, second, Placement(dest, chown=False), jobs=1)


def test_a_manifest_copied_over_another_backups_is_refused(tmp_path: Path) -> None:
    repo = memory_repo(KEY)
    backed_up(tmp_path, repo, FIRST, seed=1)
    backed_up(tmp_path, repo, SECOND, seed=2)
    moved(repo, layout.manifest_key(FIRST), layout.manifest_key(SECOND))
    with pytest.raises(IntegrityError, match=not_stored_here(layout.manifest_key(SECOND))):
        catalog.load(repo, SECOND)


def test_objects_written_before_the_binding_are_still_read_under_any_name() -> None:
    # Format version 1 (encrypted, git d885d3e and before) bound no name: a repository
    # full of them must stay readable.
    repo = memory_repo(KEY)
    key = layout.wal_key(SEG_3)
    repo.storage.put(key, [OLD_ZSTD_ENCRYPTED])
    assert read_header(OLD_ZSTD_ENCRYPTED).version == 1
    assert repo.get_bytes(key) == DATA


def test_unencrypted_objects_keep_format_version_1() -> None:
    repo = memory_repo()
    repo.put_bytes("pins/x", b"plain")
    assert read_header(b"".join(repo.storage.get("pins/x"))).version == 1
    moved(repo, "pins/x", "pins/y")
    assert repo.get_bytes("pins/y") == b"plain"  # nothing authenticates plaintext


def test_another_key_is_still_named_as_such() -> None:
    repo = memory_repo(KEY)
    repo.put_bytes("pins/x", b"secret")
    other = Repo(repo.storage, replace(repo.spec, key=Key(hashlib.sha256(b"other").digest())))
    with pytest.raises(DecryptionError, match="different key"):
        other.get_bytes("pins/x")
