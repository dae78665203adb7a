"""Incremental backups on an in-memory repository: real files hashed and uploaded through
the real pipeline, references flattened to the backup holding the bytes, restores that
skip the bytes of files a manifest does not list, and the repository check following
references."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from janua_backup.errors import FormatError, ObjectNotFound
from janua_backup.pg.wal import Lsn, WalSegment
from janua_backup.repository import catalog, integrity, layout, transfer
from janua_backup.repository.integrity import ProblemKind
from janua_backup.repository.manifest import (
    MANIFEST_FORMAT,
    FileEntry,
    Manifest,
    from_json,
    required_format,
    to_json,
)
from janua_backup.repository.objects import Repo
from janua_backup.repository.transfer import SourceFile
from janua_backup.repository.transfer_download import Fetched, Placement, download
from tests.unit.pipeline.objects import KEY
from tests.unit.repository.helpers import manifest, memory_repo

MIB = 1024 * 1024
BIG = 4096  # files this size or larger get an object of their own
IDS = ("20261125T120000Z", "20261125T130000Z", "20261125T140000Z")


def write(root: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)


def sources(root: Path) -> list[SourceFile]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        st = path.stat()
        entry = FileEntry(
            path=str(path.relative_to(root)),
            kind="file",
            mode=0o600,
            mtime_ns=st.st_mtime_ns,
            uid=st.st_uid,
            gid=st.st_gid,
            size_bytes=st.st_size,
        )
        found.append(SourceFile(entry, path))
    return found


def back_up(repo: Repo, backup_id: str, root: Path, parent: Manifest | None = None) -> Manifest:
    """What commands.backup does with the files, without PostgreSQL."""
    files = sources(root)
    reuse = transfer.Reuse(files, [], [])
    if parent is not None:
        reuse = transfer.reuse_unchanged(repo, parent, files, jobs=2)
    stored, objects = transfer.upload(
        repo,
        backup_id,
        reuse.upload,
        jobs=2,
        bundle_limit=BIG,
        bundle_size=3 * 1024,
        part_size=64 * MIB,
    )
    minutes = IDS.index(backup_id)
    m = replace(
        manifest(backup_id, minutes=minutes, start_seg=2 + minutes, stop_seg=2 + minutes),
        backup_type="incr" if parent else "full",
        depends_on=parent.backup_id if parent else None,
        wal_segment_size=MIB,
        start_lsn=Lsn((2 + minutes) * MIB + 0x28),
        stop_lsn=Lsn((2 + minutes) * MIB + 0x100),
        files=tuple(sorted([*stored, *reuse.referenced], key=lambda f: f.path)),
        objects=(*objects, *reuse.objects),
    )
    m = replace(m, format_version=required_format(m))
    catalog.commit(repo, m)
    return m


def restore(repo: Repo, m: Manifest, into: Path) -> Fetched:
    for entry in m.files:
        (into / entry.path).parent.mkdir(parents=True, exist_ok=True)
    return download(repo, m, Placement(into, chown=False), jobs=2)


def contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


Chain = tuple[Repo, Path, list[Manifest], list[dict[str, bytes]]]


@pytest.fixture(params=["plain", "encrypted"])
def chain(tmp_path: Path, request: pytest.FixtureRequest) -> Chain:
    """A full backup and two incrementals; returns the repo, the data dir, the
    manifests and the data as each backup saw it. Encrypted: an incremental reads
    its parents' objects under their keys, which their encryption binds."""
    repo = memory_repo(KEY if request.param == "encrypted" else None)
    root = tmp_path / "data"
    states = [
        {
            "PG_VERSION": b"15\n",
            "base/1/100": b"a" * 1000,  # bundled with the next ones
            "base/1/200": b"b" * 1000,
            "base/1/300": b"c" * 1000,
            "base/1/big": bytes(range(256)) * 40,  # an object of its own
        }
    ]
    write(root, states[0])
    manifests = [back_up(repo, IDS[0], root)]
    states.append({**states[0], "base/1/200": b"B" * 1000, "base/1/400": b"new"})
    write(root, states[1])
    manifests.append(back_up(repo, IDS[1], root, manifests[0]))
    states.append({**states[1], "base/1/300": b"C" * 1000})
    write(root, states[2])
    (root / "base/1/400").unlink()
    del states[2]["base/1/400"]
    manifests.append(back_up(repo, IDS[2], root, manifests[1]))
    return repo, root, manifests, states


def holders(m: Manifest) -> dict[str, str]:
    return {f.path: m.holder(f.backup_id) for f in m.files if f.kind == "file"}


def test_unchanged_files_are_referenced_flattened_to_their_holder(chain: Chain) -> None:
    _, _, (full, incr1, incr2), _ = chain
    assert holders(incr1) == {
        "PG_VERSION": full.backup_id,
        "base/1/100": full.backup_id,
        "base/1/200": incr1.backup_id,
        "base/1/300": full.backup_id,
        "base/1/400": incr1.backup_id,
        "base/1/big": full.backup_id,
    }
    # Never through incr1 for what full holds: a chain is never walked.
    assert holders(incr2) == {
        "PG_VERSION": full.backup_id,
        "base/1/100": full.backup_id,
        "base/1/200": incr1.backup_id,
        "base/1/300": incr2.backup_id,
        "base/1/big": full.backup_id,
    }
    assert incr2.depends_on == incr1.backup_id
    assert incr2.references == {full.backup_id, incr1.backup_id}
    # Each referenced object is listed once, with its holder and digests.
    for obj in incr2.objects:
        if obj.backup_id is not None:
            holder = {full.backup_id: full, incr1.backup_id: incr1}[obj.backup_id]
            assert replace(obj, backup_id=None) == holder.object(obj.name)
    assert incr2.stored_size_bytes < full.stored_size_bytes
    assert incr2.fetch_stored_bytes > incr2.stored_size_bytes
    assert (full.format_version, incr1.format_version) == (1, 2)


def test_restoring_an_incremental_skips_bytes_of_files_it_does_not_list(
    chain: Chain, tmp_path: Path
) -> None:
    repo, _, manifests, states = chain
    for m, state in zip(manifests, states, strict=True):
        into = tmp_path / f"restore-{m.backup_id}"
        fetched = restore(repo, m, into)
        assert contents(into) == state
        assert fetched.files == len(state)
        assert fetched.bytes_written == sum(len(d) for d in state.values())
    # incr2 reads full's bundle (for 100) but writes neither the old 200 nor the old 300.
    assert (tmp_path / f"restore-{IDS[2]}/base/1/300").read_bytes() == b"C" * 1000


def test_download_reads_only_objects_holding_wanted_files(chain: Chain, tmp_path: Path) -> None:
    repo, _, (_, _, incr2), _ = chain
    wanted = [f for f in incr2.files if f.path == "base/1/big"]
    out = tmp_path / "out"
    (out / "base/1").mkdir(parents=True)
    fetched = download(repo, incr2, Placement(out, chown=False), jobs=2, files=wanted)
    assert (fetched.files, fetched.objects) == (1, 1)
    assert contents(out) == {"base/1/big": bytes(range(256)) * 40}


def test_same_size_and_mtime_but_other_bytes_is_stored_again(tmp_path: Path) -> None:
    repo, root = memory_repo(), tmp_path / "data"
    write(root, {"base/1/100": b"x" * 8192})
    full = back_up(repo, IDS[0], root)
    before = (root / "base/1/100").stat()
    write(root, {"base/1/100": b"y" * 8192})
    os.utime(root / "base/1/100", ns=(before.st_atime_ns, before.st_mtime_ns))
    reuse = transfer.reuse_unchanged(repo, full, sources(root), jobs=1)
    assert [s.entry.path for s in reuse.upload] == ["base/1/100"]
    assert reuse.referenced == []


def test_a_parent_object_gone_from_the_repository_is_not_referenced(chain: Chain) -> None:
    repo, root, (full, _, _), _ = chain
    big = next(f for f in full.files if f.path == "base/1/big")
    repo.storage.delete([layout.data_key(full.backup_id, big.object or "")])
    write(root, {"base/1/big": bytes(range(256)) * 40})
    reuse = transfer.reuse_unchanged(repo, full, sources(root), jobs=2)
    assert "base/1/big" in [s.entry.path for s in reuse.upload]
    assert "base/1/big" not in [e.path for e in reuse.referenced]


def test_restore_of_an_incremental_whose_holder_lost_an_object_fails_loudly(
    chain: Chain, tmp_path: Path
) -> None:
    repo, _, (full, _, incr2), _ = chain
    big = next(f for f in full.files if f.path == "base/1/big")
    repo.storage.delete([layout.data_key(full.backup_id, big.object or "")])
    with pytest.raises(ObjectNotFound, match=f"of backup {full.backup_id}, which is missing"):
        restore(repo, incr2, tmp_path / "out")


def test_manifest_v2_round_trips_and_format_1_stays_plain(chain: Chain) -> None:
    _, _, (full, incr1, _), _ = chain
    assert from_json(to_json(incr1)) == incr1
    assert from_json(to_json(full)) == full
    plain = json.loads(to_json(full))
    assert plain["format_version"] == 1
    assert all("backup_id" not in f for f in plain["files"])
    assert all("backup_id" not in o for o in plain["objects"])
    assert json.loads(to_json(incr1))["format_version"] == 2


def test_a_format_1_manifest_of_an_earlier_version_is_read() -> None:
    legacy = json.loads(to_json(manifest()))
    legacy["format_version"] = 1
    for entry in legacy["files"]:
        entry.pop("backup_id", None)
    m = from_json(json.dumps(legacy).encode())
    assert m.files[0].backup_id is None and m.objects[0].backup_id is None
    assert m.stored_size_bytes == m.fetch_stored_bytes == 40


def test_inconsistent_references_are_refused(chain: Chain) -> None:
    _, _, (_, incr1, _), _ = chain
    data = json.loads(to_json(incr1))
    data["objects"] = [o for o in data["objects"] if "backup_id" not in o]
    with pytest.raises(FormatError, match="does not list"):
        from_json(json.dumps(data).encode())
    orphan = json.loads(to_json(incr1))
    orphan["depends_on"] = None
    with pytest.raises(FormatError, match="names no parent"):
        from_json(json.dumps(orphan).encode())
    newer = json.loads(to_json(incr1))
    newer["format_version"] = MANIFEST_FORMAT + 1
    with pytest.raises(FormatError, match="newer"):
        from_json(json.dumps(newer).encode())


def archive_wal(repo: Repo, last: int) -> None:
    for number in range(2, last + 1):
        name = WalSegment.from_number(1, number, MIB).name
        repo.put_bytes(layout.wal_key(name), bytes(MIB))


def test_repository_check_reads_each_object_once_from_its_holder(chain: Chain) -> None:
    repo, _, manifests, _ = chain
    archive_wal(repo, 4)
    result = integrity.check(repo, MIB, jobs=2)
    assert result.problems == ()
    unique = {(m.holder(o.backup_id), o.name) for m in manifests for o in m.objects}
    assert result.objects_checked == len(unique)
    assert [b.objects_checked for b in result.backups] == [len(m.objects) for m in manifests]
    only = integrity.check(repo, MIB, jobs=2, backup_id=IDS[2])
    assert only.problems == () and only.objects_checked == len(manifests[2].objects)


def test_repository_check_blames_every_backup_needing_a_lost_object(chain: Chain) -> None:
    repo, _, (full, incr1, incr2), _ = chain
    archive_wal(repo, 4)
    big = next(f for f in full.files if f.path == "base/1/big")
    repo.storage.delete([layout.data_key(full.backup_id, big.object or "")])
    result = integrity.check(repo, MIB, jobs=2)
    assert [p.kind for p in result.problems] == [ProblemKind.MISSING_OBJECT]
    message = result.problems[0].message
    assert all(b in message for b in (full.backup_id, incr1.backup_id, incr2.backup_id))
    assert [b.objects_failed for b in result.backups] == [1, 1, 1]
    assert not any(b.restorable for b in result.backups)
