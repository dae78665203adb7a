"""Restoring files out of stored objects: every byte checked, once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from janua_backup.errors import IntegrityError
from janua_backup.pipeline.stream import encode_bytes
from janua_backup.repository import layout, reread, transfer
from janua_backup.repository.manifest import Manifest
from janua_backup.repository.objects import Repo
from janua_backup.repository.transfer_download import Placement, download
from tests.unit.pipeline.objects import MiB, sample
from tests.unit.repository.helpers import Flaky, manifest, memory_repo
from tests.unit.repository.test_transfer import BACKUP_ID, PART, source

CONTENT = {
    "big": sample(3 * MiB + 17, seed=1, kind="text"),  # alone in its object
    **{f"small-{i}": sample(2000 + 300 * i, seed=i) for i in range(5)},  # bundled
}


def backed_up(tmp_path: Path) -> tuple[Manifest, Repo]:
    repo = memory_repo()
    src = tmp_path / "src"
    src.mkdir()
    sources = [source(src, name, data) for name, data in CONTENT.items()]
    entries, objects = transfer.upload(
        repo,
        BACKUP_ID,
        sources,
        jobs=2,
        bundle_limit=64 * 1024,
        bundle_size=8 * 1024,
        part_size=PART,
    )
    return replace(manifest(BACKUP_ID), files=tuple(entries), objects=tuple(objects)), repo


def restore_into(dest: Path, m: Manifest, repo: Repo) -> None:
    dest.mkdir()
    download(repo, m, Placement(dest, chown=False), jobs=2)


def test_every_file_comes_back(tmp_path: Path) -> None:
    m, repo = backed_up(tmp_path)
    restore_into(tmp_path / "dest", m, repo)
    assert {p.name: p.read_bytes() for p in (tmp_path / "dest").iterdir()} == CONTENT


def test_a_file_alone_in_a_swapped_object_is_refused(tmp_path: Path) -> None:
    # Other bytes, well-formed, with the manifest's stored digest made to match:
    # only the plaintext check stands between them and the restored file.
    m, repo = backed_up(tmp_path)
    big = next(e for e in m.files if e.path == "big")
    assert big.object is not None
    key = layout.data_key(BACKUP_ID, big.object)
    stored, _, digest = encode_bytes(b"x" * big.size_bytes, repo.spec, bind=key)
    repo.storage.put(key, [stored])
    objects = tuple(
        replace(o, stored_size_bytes=digest.size_bytes, stored_sha256=digest.sha256)
        if o.name == big.object
        else o
        for o in m.objects
    )
    with pytest.raises(IntegrityError, match="plaintext"):
        restore_into(tmp_path / "dest", replace(m, objects=objects), repo)


@pytest.mark.parametrize("fault", ["reset", "cut", "flip"])
def test_an_object_that_fails_once_in_transit_is_read_again(tmp_path: Path, fault: str) -> None:
    # One GET dying mid-body (or a body cut short, or a flipped bit) must not
    # discard the restore: the object is read again, its files rewritten.
    m, repo = backed_up(tmp_path)
    flaky = Flaky(fault, times=reread.ATTEMPTS - 1)
    for info in repo.storage.list():
        flaky.put(info.key, repo.storage.get(info.key))
    restore_into(tmp_path / "dest", m, Repo(flaky, repo.spec))
    assert {p.name: p.read_bytes() for p in (tmp_path / "dest").iterdir()} == CONTENT
    assert sorted(flaky.faults.values()) == [reread.ATTEMPTS - 1] * len(m.objects)


def test_damage_every_read_repeats_fails_the_restore_as_before(tmp_path: Path) -> None:
    m, repo = backed_up(tmp_path)
    flaky = Flaky("flip", times=reread.ATTEMPTS)
    for info in repo.storage.list():
        flaky.put(info.key, repo.storage.get(info.key))
    with pytest.raises(IntegrityError):
        restore_into(tmp_path / "dest", m, Repo(flaky, repo.spec))
    assert max(flaky.faults.values()) == reread.ATTEMPTS  # read 3 times, then given up
